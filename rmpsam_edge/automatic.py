"""Automatic mask generation ("segment everything", segment-anything's automatic mask generator): a grid of
point prompts decoded in ONE batched prompt-decoder call, then duplicates removed by mask NMS. numpy only,
Python 3.8, works on any ``Predictor`` (PyTorch or any runtime backend).

    gen = AutomaticMaskGenerator(predictor, points_per_side=8)
    out = gen.generate(image)            # masks (M,H,W) bool, scores (M,) float32, points (M,2), timings ms

    grid_points(h, w, per_side)                          -> (per_side**2, 2) float32 (x, y) pixel centres
    mask_iou_matrix(masks (N,H,W) bool)                  -> (N,N) float64
    mask_nms(masks, scores, iou_threshold, ...)          -> kept indices, best score first
    segment_everything(predictor, per_side, ...)         -> the same on the predictor's current image

H, W = the original image size; M = masks kept (at most per_side**2).
"""
from typing import Optional

import numpy as np


def grid_points(height: int, width: int, per_side: int) -> np.ndarray:
    """Cell centres of a per_side x per_side grid over an image of (height, width): (per_side**2, 2) (x, y)."""
    if per_side < 1:
        raise ValueError("per_side must be >= 1")
    xs = (np.arange(per_side, dtype=np.float32) + 0.5) * (float(width) / per_side)
    ys = (np.arange(per_side, dtype=np.float32) + 0.5) * (float(height) / per_side)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def _downsample(masks: np.ndarray, max_side: int) -> np.ndarray:
    """Strided subsampling so IoUs are computed on at most ~max_side x max_side pixels (fast, and exact
    enough for duplicate removal)."""
    h, w = masks.shape[-2:]
    step = max(1, int(np.ceil(max(h, w) / float(max_side))))
    return masks[:, ::step, ::step] if step > 1 else masks


def _flat(masks: np.ndarray, max_side: int) -> np.ndarray:
    m = _downsample(np.asarray(masks, dtype=bool), max_side)
    return np.ascontiguousarray(m.reshape(m.shape[0], -1))


def _intersections(flat: np.ndarray, i: int, rows: np.ndarray) -> np.ndarray:
    """Pixels shared by mask i and each mask in ``rows``. Boolean AND + count, deliberately not a float
    matmul: a small BLAS call right after the model's threads ran waits 10-50 ms for OpenBLAS's workers on a
    busy CPU (measured here), far more than counting bits."""
    return np.count_nonzero(flat[rows] & flat[i], axis=1)


def mask_iou_matrix(masks: np.ndarray, max_side: int = 256) -> np.ndarray:
    """Pairwise IoU of N binary masks (N,H,W) -> (N,N); two empty masks have IoU 0."""
    flat = _flat(masks, max_side)
    n = flat.shape[0]
    area = np.count_nonzero(flat, axis=1).astype(np.float64)
    iou = np.zeros((n, n), dtype=np.float64)
    everyone = np.arange(n)
    for i in range(n):
        inter = _intersections(flat, i, everyone).astype(np.float64)
        union = area[i] + area - inter
        iou[i] = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
    return iou


def mask_nms(masks: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.7, score_threshold: float = 0.0,
             min_area: int = 0, max_area_fraction: float = 1.0, max_side: int = 256,
             max_masks: Optional[int] = None) -> np.ndarray:
    """Greedy mask NMS. masks (N,H,W) bool, scores (N,). A mask is dropped when its score is below
    ``score_threshold``, its area is below ``min_area`` or above ``max_area_fraction`` of the image, or its
    IoU with an already kept (higher-scoring) mask exceeds ``iou_threshold``. IoUs are computed only against
    the kept masks. Returns kept indices (int64), highest score first."""
    masks = np.asarray(masks, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = masks.shape[0]
    if n == 0:
        return np.zeros((0,), dtype=np.int64)
    if scores.shape[0] != n:
        raise ValueError("masks and scores disagree: %d vs %d" % (n, scores.shape[0]))
    area = masks.reshape(n, -1).sum(axis=1)
    total = float(masks.shape[1] * masks.shape[2])
    valid = (scores >= score_threshold) & (area >= max(1, min_area)) & (area <= max_area_fraction * total)
    order = np.asarray([i for i in np.argsort(-scores, kind="stable") if valid[i]], dtype=np.int64)
    if not len(order):
        return np.zeros((0,), dtype=np.int64)
    flat = _flat(masks[order], max_side)
    small_area = np.count_nonzero(flat, axis=1).astype(np.float64)
    alive = np.ones(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if not alive[i]:
            continue
        keep.append(int(order[i]))
        alive[i] = False
        if max_masks is not None and len(keep) >= max_masks:
            break
        rest = np.flatnonzero(alive)
        if not len(rest):
            break
        inter = _intersections(flat, i, rest).astype(np.float64)
        union = small_area[i] + small_area[rest] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
        alive[rest[iou > iou_threshold]] = False
    return np.asarray(keep, dtype=np.int64)


class AutomaticMaskGenerator(object):
    """Masks for everything in an image through a ``rmpsam_edge.predictor.Predictor``.

    points_per_side: the click grid (8 -> 64 prompts, one decoder call); iou_threshold: mask IoU above which
    the lower-scoring mask is a duplicate; score_threshold: minimum predicted IoU; min/max_area_fraction: mask
    area limits as fractions of the image."""

    def __init__(self, predictor, points_per_side: int = 8, iou_threshold: float = 0.7,
                 score_threshold: float = 0.0, min_area_fraction: float = 0.0005, max_area_fraction: float = 0.95):
        if points_per_side < 1:
            raise ValueError("points_per_side must be >= 1")
        self.predictor = predictor
        self.points_per_side = points_per_side
        self.options = {"iou_threshold": iou_threshold, "score_threshold": score_threshold,
                        "min_area_fraction": min_area_fraction, "max_area_fraction": max_area_fraction}

    def generate(self, image) -> dict:
        """image: a path or an (H, W, 3) RGB array (anything ``Predictor.set_image`` takes). Returns
        {"masks": (M,H,W) bool, "scores": (M,) float32, "points": (M,2) float32 the click behind each mask,
        "timings": ms per stage (preprocess, encoder, decoder, postprocess)}, best score first."""
        self.predictor.set_image(image)
        timings = dict(self.predictor.timings)
        masks, scores, points, t = segment_everything(self.predictor, self.points_per_side, **self.options)
        timings.update(t)
        return {"masks": masks, "scores": scores, "points": points, "timings": timings}


def segment_everything(predictor, per_side: int = 8, iou_threshold: float = 0.7, score_threshold: float = 0.0,
                       min_area_fraction: float = 0.0005, max_area_fraction: float = 0.95):
    """Automatic masks for the predictor's current image (``set_image`` done): a per_side x per_side grid of
    clicks decoded in ONE prompt-decoder call, duplicates removed by mask NMS on the low-resolution masks, and
    only the kept masks upsampled to image size.

    Returns (masks (M,H,W) bool, scores (M,) float32, points (M,2) the click behind each mask, timings ms:
    'decoder' and 'postprocess')."""
    import math
    import time

    from rmpsam_edge.postprocess import upsample_masks
    from rmpsam_edge.preprocess import prompts_to_model

    meta = predictor.meta
    if meta is None or predictor.features is None:
        raise RuntimeError("no image set: call predictor.set_image(image) first")
    h, w = meta.ori_shape
    points = grid_points(h, w, per_side)
    t0 = time.perf_counter()
    boxes = prompts_to_model(points, None, meta)
    logits, iou = predictor.runner.decode_prompts(predictor.features, boxes)
    t1 = time.perf_counter()
    logits = np.asarray(logits, dtype=np.float32).reshape((len(points),) + meta.feat_shape)
    scores = np.asarray(iou, dtype=np.float32).reshape(len(points))
    # NMS on the un-padded part of the stride-4 masks: same duplicates, 16x fewer pixels than full size
    lh, lw = int(math.ceil(meta.img_shape[0] / 4.0)), int(math.ceil(meta.img_shape[1] / 4.0))
    low = logits[:, :lh, :lw] > 0
    keep = mask_nms(low, scores, iou_threshold=iou_threshold, score_threshold=score_threshold,
                    min_area=int(min_area_fraction * lh * lw), max_area_fraction=max_area_fraction, max_side=128)
    masks = upsample_masks(logits[keep], meta, binary=True) if len(keep) else np.zeros((0, h, w), bool)
    t2 = time.perf_counter()
    return masks, scores[keep], points[keep], {"decoder": (t1 - t0) * 1e3, "postprocess": (t2 - t1) * 1e3}
