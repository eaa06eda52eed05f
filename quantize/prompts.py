"""Prompts sampled on an image for decoder calibration and the fidelity report: a grid of clicks + boxes.

Everything is in pixels of the resized, un-padded image (``meta.img_shape``) and normalised with
``rmpsam_edge.preprocess.normalize_boxes``, the same path the runtime uses for user prompts.
"""
import numpy as np

from rmpsam_edge.automatic import grid_points
from rmpsam_edge.preprocess import normalize_boxes, points_to_boxes


def random_boxes(img_shape, count: int, rng: np.random.RandomState, min_frac: float = 0.15,
                 max_frac: float = 0.7) -> np.ndarray:
    """``count`` boxes (x1, y1, x2, y2) inside the image, each side min_frac..max_frac of the image side."""
    h, w = float(img_shape[0]), float(img_shape[1])
    bw = rng.uniform(min_frac, max_frac, count) * w
    bh = rng.uniform(min_frac, max_frac, count) * h
    x1 = rng.uniform(0, 1, count) * (w - bw)
    y1 = rng.uniform(0, 1, count) * (h - bh)
    return np.stack([x1, y1, x1 + bw, y1 + bh], axis=1).astype(np.float32)


def sample_prompts(img_shape, grid: int = 4, boxes: int = 8, seed: int = 0):
    """-> (normalised (N, 4) cx, cy, w, h float32 for the prompt decoder, kinds list 'point'/'box').
    The same image shape and seed always give the same prompts (the FP32 and quantized runs must agree)."""
    parts, kinds = [], []
    if grid > 0:
        parts.append(points_to_boxes(grid_points(img_shape[0], img_shape[1], grid)))
        kinds += ["point"] * (grid * grid)
    if boxes > 0:
        parts.append(random_boxes(img_shape, boxes, np.random.RandomState(seed)))
        kinds += ["box"] * boxes
    if not parts:
        raise ValueError("no prompts requested")
    return normalize_boxes(np.concatenate(parts, axis=0), img_shape), kinds
