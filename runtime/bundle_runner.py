"""What every backend that runs a bundle shares (no torch, Python 3.8): which prompt graph answers a call,
static-shape padding/cropping and prompt chunking, empty prompt batches. A backend subclasses ``BundleRunner``
and implements only ``_load(graph, path)`` (in ``activate``) and ``_run(graph, feeds) -> outputs``.

Static bundles (exported with --static) have fixed H x W, a fixed prompt batch and a fixed class count:
images smaller than H x W are zero-padded (bottom/right, like the /32 padding) before the encoder and the
decoders' mask logits are cropped back, so callers see the shapes of a dynamic bundle; prompts run in chunks
of the fixed batch (prompts are independent, so chunking is exact).
"""
from typing import Dict, Optional

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

    # ------------------------------------------------------------------ the three graphs
    def _encode(self, image: np.ndarray) -> Dict[str, np.ndarray]:
        image = np.ascontiguousarray(image, dtype=np.float32)
        st = self.bundle.static
        if not st:
            return self._run("encoder", {"image": image})
        b, c, h, w = image.shape
        hs, ws = st["height"], st["width"]
        if h > hs or w > ws:
            raise UserError("input %dx%d is larger than this static bundle's %dx%d; use an input size <= %d or "
                            "a bundle exported without --static" % (w, h, ws, hs, max(hs, ws)))
        full_in = np.zeros((b, c, hs, ws), dtype=np.float32)
        full_in[:, :, :h, :w] = image
        full = self._run("encoder", {"image": full_in})["features"]
        if full.base is not None:  # own the buffer, so the view below leads back to exactly this array
            full = full.copy()
        return {"features": full[:, :, :h // 4, :w // 4]}

    def _static_features(self, features: np.ndarray) -> np.ndarray:
        """The full static-size features behind ``features``: the array the encoder's view was cut from
        (``features.base``, carried by the features themselves, so any number of images may be encoded in
        between), else ``features`` zero-padded (other features: results change slightly near the padding)."""
        st = self.bundle.static
        hs, ws = st["height"] // 4, st["width"] // 4
        b, c, h, w = features.shape
        base = features.base
        if isinstance(base, np.ndarray) and base.shape == (b, c, hs, ws) and base.dtype == np.float32 and \
                base.__array_interface__["data"][0] == features.__array_interface__["data"][0]:
            return base
        if h > hs or w > ws:
            raise UserError("features %dx%d are larger than this static bundle's %dx%d" % (w, h, ws, hs))
        full = np.zeros((b, c, hs, ws), dtype=np.float32)
        full[:, :, :h, :w] = features
        return full

    def _prompts(self, features: np.ndarray, boxes: np.ndarray) -> Dict[str, np.ndarray]:
        boxes = np.ascontiguousarray(boxes, dtype=np.float32).reshape(-1, 4)
        h, w = features.shape[-2:]
        n = boxes.shape[0]
        if n == 0:
            return {"mask_logits": np.zeros((0, h, w), np.float32), "iou": np.zeros((0, 1), np.float32)}
        st = self.bundle.static
        if not st:
            feats = np.ascontiguousarray(features, dtype=np.float32)
            most = self.bundle.max_prompts
            if n <= most:
                return self._run(self.bundle.prompt_graph(n), {"features": feats, "boxes": boxes})
            # beyond the declared range (memory ~ Np * 8 * h * w floats): chunks, exact since prompts are independent
            outs = [self._run(self.bundle.prompt_graph(len(boxes[i:i + most])),
                              {"features": feats, "boxes": boxes[i:i + most]}) for i in range(0, n, most)]
            return {k: np.concatenate([o[k] for o in outs]) for k in ("mask_logits", "iou")}
        feats = self._static_features(features)
        chunk = int(st["prompts"])
        masks, ious = [], []
        for i in range(0, n, chunk):
            part = boxes[i:i + chunk]
            k = part.shape[0]
            if k < chunk:  # pad with copies of the first box (prompts are independent); dropped below
                part = np.concatenate([part, np.repeat(part[:1], chunk - k, axis=0)])
            out = self._run("prompt_decoder", {"features": feats, "boxes": part})
            masks.append(out["mask_logits"][:k, :h, :w])
            ious.append(out["iou"][:k])
        return {"mask_logits": np.ascontiguousarray(np.concatenate(masks)), "iou": np.concatenate(ious)}

    def _objects(self, features: np.ndarray, class_embed: np.ndarray) -> Dict[str, np.ndarray]:
        class_embed = np.ascontiguousarray(class_embed, dtype=np.float32)
        st = self.bundle.static
        if not st:
            return self._run("object_decoder", {"features": np.ascontiguousarray(features, dtype=np.float32),
                                                "class_embed": class_embed})
        k = st.get("classes")
        if k is not None and tuple(class_embed.shape[:2]) != (k, st.get("prototypes")):
            raise UserError("this static bundle is fixed to a vocabulary of %d classes x %d prototypes, got %s; "
                            "re-export without --static to change the vocabulary"
                            % (k, st.get("prototypes"), tuple(class_embed.shape[:2])))
        h, w = features.shape[-2:]
        out = self._run("object_decoder", {"features": self._static_features(features), "class_embed": class_embed})
        out["mask_logits"] = np.ascontiguousarray(out["mask_logits"][:, :, :h, :w])
        return out
