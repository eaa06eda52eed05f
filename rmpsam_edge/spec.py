"""What the pre/post-processing needs to know about a model, whatever runs it (no torch, Python 3.8).

A ``ModelSpec`` is built from a checkpoint + vocabulary (PyTorch path) or read from a bundle manifest
(runtime path), so both paths share one Predictor and one set of pre/post-processing functions.
"""
import copy
from typing import List, Optional

import numpy as np

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0-255
IMAGENET_STD = (58.395, 57.12, 57.375)
RANDOM_WEIGHTS_NOTE = "random weights"
DEMO_WEIGHTS_NOTE = "demo weights trained on synthetic shapes"


class ModelSpec(object):
    """variant: 'r18' | 'r50'. input_size: None = the official keep-ratio rule (short side 800, long side
    <= 1333), or an int = long side resized to that many pixels. class_embed (K, P, 768) float32 or None;
    class_names K strings; num_things = how many of the K classes are things (the rest are stuff).
    weights_note: a line every output carries (e.g. 'random weights'), or None for real weights."""

    def __init__(self, variant: str, input_size: Optional[int] = None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 class_embed: Optional[np.ndarray] = None, class_names: Optional[List[str]] = None,
                 num_things: Optional[int] = None, weights_note: Optional[str] = None):
        self.variant = variant
        self.input_size = input_size
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.class_embed = None if class_embed is None else np.asarray(class_embed, dtype=np.float32)
        k = 0 if self.class_embed is None else self.class_embed.shape[0]
        self.class_names = list(class_names) if class_names is not None else ["class_%d" % i for i in range(k)]
        self.num_things = k if num_things is None else int(num_things)
        self.weights_note = weights_note

    def with_input_size(self, input_size: Optional[int]) -> "ModelSpec":
        """A copy with another input size (this spec, which a runner or predictor may share, is unchanged)."""
        other = copy.copy(self)
        other.input_size = input_size
        return other

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict:
        return {"variant": self.variant, "input_size": self.input_size, "mean": list(self.mean),
                "std": list(self.std), "class_names": self.class_names, "num_things": self.num_things,
                "weights_note": self.weights_note}
