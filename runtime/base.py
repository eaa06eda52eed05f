"""The one small backend interface (polygraphy-style runner): activate / infer / deactivate.

A runner holds the three graphs of a model bundle and answers ``infer(graph, feeds)``. Graph and tensor
names (shared by the PyTorch runner, ONNX Runtime, OpenVINO and TensorRT):

    encoder         image (B,3,H,W) f32                         -> features (B,256,H/4,W/4)
    prompt_decoder  features (1,256,h,w), boxes (Np,4) f32      -> mask_logits (Np,h,w), iou (Np,1)
    object_decoder  features (1,256,h,w), class_embed (K,P,768) -> class_logits (1,100,K+1),
                                                                   mask_logits (1,100,h,w),
                                                                   query_embed (1,100,256)

``boxes`` are normalised (cx, cy, w, h) of the resized, un-padded image, as made by
``rmpsam_edge.preprocess.normalize_boxes``. H and W are multiples of 32. Python 3.8, numpy only.
"""
from typing import Dict, Tuple

import numpy as np

GRAPHS = {
    "encoder": (("image",), ("features",)),
    "prompt_decoder": (("features", "boxes"), ("mask_logits", "iou")),
    "object_decoder": (("features", "class_embed"), ("class_logits", "mask_logits", "query_embed")),
}


class Runner(object):
    """Base class. Subclasses implement ``activate``, ``infer`` and ``deactivate``; ``describe`` says
    which backend, device and precision run (the one line printed when a bundle is loaded)."""

    name = "base"

    def activate(self) -> None:
        pass

    def deactivate(self) -> None:
        pass

    def infer(self, graph: str, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    def __enter__(self):
        self.activate()
        return self

    def __exit__(self, *exc):
        self.deactivate()

    # -- the three calls the Predictor makes ------------------------------------------------------
    def encode(self, image: np.ndarray) -> np.ndarray:
        return self.infer("encoder", {"image": np.ascontiguousarray(image, dtype=np.float32)})["features"]

    def decode_prompts(self, features: np.ndarray, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        out = self.infer("prompt_decoder", {"features": features,
                                            "boxes": np.ascontiguousarray(boxes, dtype=np.float32)})
        return out["mask_logits"], out["iou"]

    def decode_objects(self, features: np.ndarray, class_embed: np.ndarray):
        out = self.infer("object_decoder", {"features": features,
                                            "class_embed": np.ascontiguousarray(class_embed, dtype=np.float32)})
        return out["class_logits"], out["mask_logits"], out["query_embed"]
