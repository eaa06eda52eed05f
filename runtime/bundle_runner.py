"""What every backend that runs a bundle shares (no torch, Python 3.8): which prompt graph answers a call,
fixed-size padding/cropping and prompt chunking, empty prompt batches. A backend subclasses ``BundleRunner``
and implements only ``_load(graph, path)`` (in ``activate``) and ``_run(graph, feeds) -> outputs``; it may
narrow ``_max_prompts(graph)`` and ``_image_size()`` to what its engines take.

An encoder of one fixed H x W (a bundle exported with --static, or an engine built for one size such as
TensorRT on DLA) gets images smaller than H x W zero-padded (bottom/right, like the /32 padding); the decoders
get the full padded features and their mask logits are cropped back, so callers see the shapes of a dynamic
bundle. Prompts run in chunks of at most ``_max_prompts`` (a static bundle's fixed batch, padded): prompts are
independent, so chunking is exact.
"""
from typing import Dict, Optional, Tuple

import numpy as np

from rmpsam_edge.errors import UserError

from .base import GRAPHS, Runner
from .bundle import Bundle


class BackendUnavailable(Exception):
    """A backend cannot serve the request on this machine (no GPU, no such device): ``auto`` moves on
    without counting it as a failure. The message says why, in a few words."""


class BundleRunner(Runner):
    name = "bundle"

    @property
    def precision(self) -> str:
        return str(self.bundle.manifest.get("precision", "fp32"))

    def __init__(self, bundle, threads: Optional[int] = None):
        self.bundle = Bundle.open(bundle)
        self.threads = threads
        self.active = False

    # ------------------------------------------------------------------ backend hooks
    def _load(self, graph: str, path: str) -> None:
        raise NotImplementedError

    def _run(self, graph: str, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def _unload(self) -> None:
        pass

    # ------------------------------------------------------------------ Runner
    def activate(self) -> None:
        """Load every graph of the bundle (sha256-checked), so a backend that cannot run it fails here."""
        if self.active:
            return
        for graph in self.bundle.graph_names():
            self._load(graph, self.bundle.graph_path(graph))
        self.active = True

    def deactivate(self) -> None:
        self._unload()
        self.active = False

    def infer(self, graph: str, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if not self.active:
            self.activate()
        if graph == "encoder":
            return self._encode(feeds["image"])
        if graph == "prompt_decoder":
            return self._prompts(feeds["features"], feeds["boxes"])
        if graph == "object_decoder":
            return self._objects(feeds["features"], feeds["class_embed"])
        raise KeyError("unknown graph %r; graphs are %s" % (graph, ", ".join(GRAPHS)))

    def _max_prompts(self, graph: str) -> int:
        """Most prompts one call of ``graph`` takes: the declared range (larger batches: memory ~ Np * 8 * h * w
        floats), a static bundle's fixed batch."""
        st = self.bundle.static
        return int(st["prompts"]) if st else self.bundle.max_prompts

    def _image_size(self) -> Optional[Tuple[int, int, str]]:
        """(H, W, what to do with a larger image) when the encoder takes one size only; None: any /32 size."""
        st = self.bundle.static
        if not st:
            return None
        hs, ws = st["height"], st["width"]
        return hs, ws, "this static bundle's %dx%d; use an input size <= %d or a bundle exported without " \
                       "--static" % (ws, hs, max(hs, ws))

    # ------------------------------------------------------------------ the three graphs
    def _encode(self, image: np.ndarray) -> Dict[str, np.ndarray]:
        image = np.ascontiguousarray(image, dtype=np.float32)
        fixed = self._image_size()
        if fixed is None:
            return self._run("encoder", {"image": image})
        b, c, h, w = image.shape
        hs, ws, larger = fixed
        if h > hs or w > ws:
            raise UserError("input %dx%d is larger than %s" % (w, h, larger))
        full_in = image
        if (h, w) != (hs, ws):
            full_in = np.zeros((b, c, hs, ws), dtype=np.float32)
            full_in[:, :, :h, :w] = image
        full = self._run("encoder", {"image": full_in})["features"]
        if full.base is not None:  # own the buffer, so the view below leads back to exactly this array
            full = full.copy()
        return {"features": full[:, :, :h // 4, :w // 4]}

    def _full_features(self, features: np.ndarray, fixed: Tuple[int, int, str]) -> np.ndarray:
        """The full fixed-size features behind ``features``: the array the encoder's view was cut from
        (``features.base``, carried by the features themselves, so any number of images may be encoded in
        between), else ``features`` zero-padded (other features: results change slightly near the padding)."""
        hs, ws = fixed[0] // 4, fixed[1] // 4
        b, c, h, w = features.shape
        base = features.base
        if isinstance(base, np.ndarray) and base.shape == (b, c, hs, ws) and base.dtype == np.float32 and \
                base.__array_interface__["data"][0] == features.__array_interface__["data"][0]:
            return base
        if h > hs or w > ws:
            raise UserError("features %dx%d are larger than %s" % (w, h, fixed[2].partition(";")[0]))
        full = np.zeros((b, c, hs, ws), dtype=np.float32)
        full[:, :, :h, :w] = features
        return full

    def _prompts(self, features: np.ndarray, boxes: np.ndarray) -> Dict[str, np.ndarray]:
        boxes = np.ascontiguousarray(boxes, dtype=np.float32).reshape(-1, 4)
        h, w = features.shape[-2:]
        n = boxes.shape[0]
        if n == 0:
            return {"mask_logits": np.zeros((0, h, w), np.float32), "iou": np.zeros((0, 1), np.float32)}
        fixed, st = self._image_size(), self.bundle.static
        feats = self._full_features(features, fixed) if fixed else np.ascontiguousarray(features, dtype=np.float32)
        outs, i = [], 0
        while i < n:  # chunks, each on the graph that answers its prompt count
            graph = "prompt_decoder" if st else self.bundle.prompt_graph(n - i)
            most = self._max_prompts(graph)
            part = boxes[i:i + most]
            k = part.shape[0]
            if st and k < most:  # pad with copies of the first box (prompts are independent); dropped below
                part = np.concatenate([part, np.repeat(part[:1], most - k, axis=0)])
            out = self._run(graph, {"features": feats, "boxes": part})
            outs.append({name: out[name][:k] for name in ("mask_logits", "iou")})
            i += k
        res = outs[0] if len(outs) == 1 else {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
        if fixed:
            res["mask_logits"] = np.ascontiguousarray(res["mask_logits"][:, :h, :w])
        return res

    def _objects(self, features: np.ndarray, class_embed: np.ndarray) -> Dict[str, np.ndarray]:
        class_embed = np.ascontiguousarray(class_embed, dtype=np.float32)
        fixed, st = self._image_size(), self.bundle.static
        if not fixed:
            return self._run("object_decoder", {"features": np.ascontiguousarray(features, dtype=np.float32),
                                                "class_embed": class_embed})
        k = (st or {}).get("classes")
        if k is not None and tuple(class_embed.shape[:2]) != (k, st.get("prototypes")):
            raise UserError("this static bundle is fixed to a vocabulary of %d classes x %d prototypes, got %s; "
                            "re-export without --static to change the vocabulary"
                            % (k, st.get("prototypes"), tuple(class_embed.shape[:2])))
        h, w = features.shape[-2:]
        out = self._run("object_decoder", {"features": self._full_features(features, fixed),
                                           "class_embed": class_embed})
        out["mask_logits"] = np.ascontiguousarray(out["mask_logits"][:, :, :h, :w])
        return out
