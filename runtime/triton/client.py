"""``TritonRunner``: a bundle served by Triton (``rmpsam-edge serve`` / ``export-triton``) behind the Runner and
Predictor interface, over tritonclient gRPC or HTTP. ``load("grpc://127.0.0.1:8001")`` returns a
``TritonPredictor``: the same prompts / panoptic / instances / object queries (tracking) as a local bundle.

Frames go to the server as RGB uint8 (any size); the server pre-processes them and keeps the features, keyed
by a random per-frame id (``protocol.py``). The post-processing runs here, with the same code as locally.
A server that goes away: bounded retries, then one ``UserError`` line within ``timeout`` seconds per try.
"""
import random
import time
from typing import Optional, Tuple

import numpy as np

from rmpsam_edge.errors import UserError
from rmpsam_edge.predictor import Predictor
from rmpsam_edge.preprocess import ImageMeta

from . import protocol as P
from ..base import Runner
from ..bundle import Bundle

CLIENT_HINT = "pip install 'tritonclient[http,grpc]' (or pip install rmpsam-edge[triton])"
GONE = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED")
GOING = ("no available versions", "server is stopping", "connect", "socket closed")  # a server shutting down


class FrameFeatures(np.ndarray):
    """Stands for a frame's features on the server: the shape (1, C, h, w) of the real ones, no data (zero
    strides); ``frame_id`` names them there, ``rgb`` lets the client send the frame again after a cache miss."""
    frame_id = 0
    rgb = None


class RemoteBundle(Bundle):
    """The served bundle's manifest and vocabulary, fetched from the server (``spec()`` works as locally)."""

    def __init__(self, url: str, manifest: dict, class_embed: np.ndarray):
        super(RemoteBundle, self).__init__(url, manifest)
        self._embed = class_embed if class_embed.shape[0] else None

    def class_embed(self) -> Optional[np.ndarray]:
        return self._embed


def parse_url(url: str) -> Tuple[str, str]:
    scheme, _, rest = url.partition("://")
    address = rest.rstrip("/")
    if not address or "/" in address:
        raise UserError("model URL %r: use grpc://HOST:PORT or http://HOST:PORT (e.g. grpc://127.0.0.1:8001)" % url)
    if ":" not in address.rsplit("]", 1)[-1]:
        address += ":8001" if scheme.lower() == "grpc" else ":8000"
    return scheme.lower(), address


class TritonRunner(Runner):
    name = "triton"

    def __init__(self, url: str, timeout: float = 30.0, retries: int = 3, model: str = P.COMPOSER):
        self.url = url
        self.scheme, self.address = parse_url(url)
        self.timeout, self.retries, self.model = float(timeout), int(retries), model
        self.client = None
        self.mod = None
        self.bundle = None  # type: Optional[RemoteBundle]

    # ------------------------------------------------------------------ connection
    def activate(self) -> None:
        if self.client is not None:
            return
        try:
            if self.scheme == "grpc":
                import tritonclient.grpc as mod
                self.client = mod.InferenceServerClient(url=self.address)
            else:
                import tritonclient.http as mod
                self.client = mod.InferenceServerClient(url=self.address, connection_timeout=self.timeout,
                                                        network_timeout=self.timeout)
        except ImportError:
            raise UserError("%s needs tritonclient: %s" % (self.url, CLIENT_HINT))
        self.mod = mod
        out = self._infer(P.SPEC, 0)
        manifest_text = out["MANIFEST"].reshape(-1)[0]
        import json
        manifest = json.loads(manifest_text.decode("utf-8") if isinstance(manifest_text, bytes) else manifest_text)
        self.bundle = RemoteBundle(self.url, manifest, out["CLASS_EMBED"][0].astype(np.float32))

    def deactivate(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # noqa: BLE001
                pass
        self.client = None

    def describe(self) -> str:
        prec = self.bundle.manifest.get("precision", "fp32") if self.bundle else "?"
        return "triton %s (%s %s model %r, %s)" % (self.url, self.scheme, self.address, self.model, prec)

    def _request(self, task, frame, image, boxes):
        mod = self.mod
        feeds = [("TASK", np.array([[task]], np.int32), "INT32"), ("FRAME_ID", np.array([[frame]], np.uint64), "UINT64"),
                 ("IMAGE", image[None], "UINT8"), ("BOXES", boxes[None], "FP32")]
        inputs = []
        for name, arr, dtype in feeds:
            t = mod.InferInput(name, list(arr.shape), dtype)
            t.set_data_from_numpy(np.ascontiguousarray(arr))
            inputs.append(t)
        outputs = [mod.InferRequestedOutput(n) for n in P.OUTPUTS[task]]
        kw = {"client_timeout": self.timeout} if self.scheme == "grpc" else {}
        res = self.client.infer(self.model, inputs, outputs=outputs, **kw)
        return dict((n, res.as_numpy(n)) for n in P.OUTPUTS[task])

    def _infer(self, task, frame, image=None, boxes=None):
        image = np.zeros((0, 0, 3), np.uint8) if image is None else image
        boxes = np.zeros((0, 4), np.float32) if boxes is None else np.ascontiguousarray(boxes, np.float32)
        last = ""
        for attempt in range(self.retries + 1):
            try:
                return self._request(task, frame, image, boxes)
            except Exception as exc:  # noqa: BLE001 - sorted below: request errors vs. a server that is gone
                status = str(exc.status()) if hasattr(exc, "status") and callable(exc.status) else ""
                text = (exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)) or \
                    type(exc).__name__
                if hasattr(exc, "status") and status not in GONE and not any(g in text.lower() for g in GOING):
                    if P.UNKNOWN_FRAME in text:
                        raise _UnknownFrame(text)
                    raise UserError("triton server %s rejected the request: %s" % (self.url, text.splitlines()[0]))
                last = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
                if attempt < self.retries:
                    time.sleep(min(2.0, 0.25 * 2 ** attempt))
        raise UserError("triton server %s is not answering (%s) after %d tries; start it with rmpsam-edge serve"
                        % (self.url, last[:160], self.retries + 1))

    # ------------------------------------------------------------------ frames and decoders
    def encode_frame(self, rgb: np.ndarray) -> Tuple[FrameFeatures, ImageMeta]:
        """Send one RGB uint8 frame -> (a FrameFeatures handle, its ImageMeta as the server computed it)."""
        if self.client is None:
            self.activate()
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        frame = random.getrandbits(63)
        m = self._infer(P.ENCODE, frame, image=rgb)["META"].reshape(6)
        ori, img, pad = (int(m[0]), int(m[1])), (int(m[2]), int(m[3])), (int(m[4]), int(m[5]))
        meta = ImageMeta(ori, img, pad, (float(img[0]) / ori[0], float(img[1]) / ori[1]))
        handle = np.broadcast_to(np.zeros((), np.float32), (1, 256) + meta.feat_shape).view(FrameFeatures)
        handle.frame_id, handle.rgb = frame, rgb
        return handle, meta

    def _on_frame(self, features, task, boxes=None):
        if not isinstance(features, FrameFeatures):
            raise UserError("a Triton runner decodes frames it sent (TritonPredictor.set_image), not local features")
        try:
            return self._infer(task, features.frame_id, boxes=boxes)
        except _UnknownFrame:  # evicted from the server's cache (or the server restarted): send the frame again
            features.frame_id = self.encode_frame(features.rgb)[0].frame_id
            return self._infer(task, features.frame_id, boxes=boxes)

    def decode_prompts(self, features, boxes):
        out = self._on_frame(features, P.PROMPTS, boxes=np.asarray(boxes, np.float32).reshape(-1, 4))
        return out["MASK_LOGITS"][0], out["IOU"].reshape(-1, 1)

    def decode_objects(self, features, class_embed):
        out = self._on_frame(features, P.OBJECTS)
        return out["CLASS_LOGITS"], out["OBJ_MASK_LOGITS"], out["QUERY_EMBED"]

    def encode(self, image):
        raise UserError("a Triton runner takes RGB frames, not network inputs: use TritonPredictor.set_image "
                        "(rmpsam_edge.runtime.load(URL) returns one)")

    def infer(self, graph, feeds):
        raise UserError("a Triton runner runs the server's %r composition, not single graphs" % self.model)


class _UnknownFrame(Exception):
    pass


class TritonPredictor(Predictor):
    """``Predictor`` whose ``set_image`` sends the RGB uint8 frame to the server (pre-processing happens there)."""

    def _encode(self, rgb):
        features, meta = self.runner.encode_frame(rgb)
        return features, meta, 0.0

def load_runner(url: str, verbose: bool = True, timeout: float = 30.0, retries: int = 3):
    """-> (activated TritonRunner, RemoteBundle, the choice line)."""
    runner = TritonRunner(url, timeout=timeout, retries=retries)
    runner.activate()
    return runner, runner.bundle, "%s (remote)" % runner.describe()


def load(url: str, verbose: bool = True, timeout: float = 30.0, retries: int = 3) -> TritonPredictor:
    runner, bundle, line = load_runner(url, verbose, timeout, retries)
    if verbose:
        import sys
        sys.stderr.write("rmpsam-edge: %s\n" % line)
    return TritonPredictor(runner, bundle.spec())
