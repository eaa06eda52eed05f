"""Mask and detection post-processing shared by every backend (numpy + OpenCV, no torch, Python 3.8).

* ``upsample_masks``: stride-4 mask logits -> original image size, exactly as the official code
  (bilinear x4 to the padded size, crop to the resized image, bilinear to the original size; bilinear =
  ``F.interpolate(align_corners=False)`` = ``cv2.INTER_LINEAR``).
* ``panoptic_fusion`` / ``instance_results``: numpy re-implementations of mmdet 3.x
  ``MaskFormerFusionHead.panoptic_postprocess`` / ``instance_postprocess`` (the RMP-SAM test config:
  object_mask_thr 0.8, iou_thr 0.8, filter_low_score True, max_per_image 100).
* ``mask_to_box``, ``rle_encode`` / ``rle_decode`` for JSON outputs.
"""
from typing import Dict, List, Tuple

import cv2
import numpy as np

INSTANCE_OFFSET = 1000  # panoptic id = label + instance_id * INSTANCE_OFFSET (mmdet)


# ---------------------------------------------------------------------------------------------------------------
# small numeric helpers
def sigmoid(x: np.ndarray) -> np.ndarray:
    """float32 logistic function, accurate for large |x| and without overflow warnings."""
    x = np.asarray(x, dtype=np.float32)
    e = np.exp(-np.abs(x))
    return (np.where(x >= 0, np.float32(1.0), e) / (np.float32(1.0) + e)).astype(np.float32)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """float32 softmax along ``axis`` (max-subtracted, as torch)."""
    x = np.asarray(x, dtype=np.float32)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---------------------------------------------------------------------------------------------------------------
# masks to image size
def _resize(a: np.ndarray, size_hw: Tuple[int, int]) -> np.ndarray:
    """(H, W) float32 -> (h, w) bilinear with half-pixel centres (= F.interpolate(align_corners=False))."""
    h, w = size_hw
    if a.shape == (h, w):
        return a
    return cv2.resize(a, (w, h), interpolation=cv2.INTER_LINEAR)


def _upsampled(logits, meta):
    """Yield (i, (H_ori, W_ori) float32 logits) per mask; see ``upsample_masks``."""
    x = np.asarray(logits, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError("mask logits must be (N, h, w), got shape %s" % (x.shape,))
    H_pad, W_pad = meta.pad_shape
    h_r, w_r = meta.img_shape
    if x.shape[1:] != (H_pad // 4, W_pad // 4):
        raise ValueError("mask logits of size %s do not match the padded input %s (expected %s)"
                         % (x.shape[1:], meta.pad_shape, (H_pad // 4, W_pad // 4)))
    for i in range(x.shape[0]):
        yield i, _resize(_resize(x[i], (H_pad, W_pad))[:h_r, :w_r], meta.ori_shape)


def upsample_masks(logits, meta, binary: bool = False) -> np.ndarray:
    """Low-resolution mask logits (N, h, w) (stride 4 of the padded input, h = H_pad / 4) -> (N, H_ori, W_ori).

    Bilinear x4 to ``meta.pad_shape``, crop to ``meta.img_shape``, bilinear to ``meta.ori_shape`` (skipped when
    the sizes already match, as ``F.interpolate`` to the same size is the identity). Returns float32 logits,
    or ``logits > 0`` (bool) when ``binary`` (no full-size float copy: far less memory for many masks).
    One OpenCV call per mask and step: measured faster than resizing stacks of masks as multi-channel images
    (100 masks to 800x1067: ~30-60 ms vs ~90-280 ms with 4-16 channels per call, 2 cores)."""
    n = np.shape(logits)[0]
    out = np.empty((n,) + tuple(meta.ori_shape), dtype=bool if binary else np.float32)
    for i, a in _upsampled(logits, meta):
        if binary:
            np.greater(a, 0, out=out[i])
        else:
            out[i] = a
    return out


def upsample_and_score_masks(logits, meta) -> Tuple[np.ndarray, np.ndarray]:
    """``score_masks(upsample_masks(logits, meta))`` mask by mask, without the full-size float array:
    (N, h, w) logits -> (binary (N, H_ori, W_ori) bool, mask scores (N,) float32)."""
    n = np.shape(logits)[0]
    binary = np.empty((n,) + tuple(meta.ori_shape), dtype=bool)
    scores = np.zeros((n,), dtype=np.float32)
    for i, a in _upsampled(logits, meta):
        b, sc = score_masks(a[None])
        binary[i] = b[0]
        scores[i] = sc[0]
    return binary, scores


# ---------------------------------------------------------------------------------------------------------------
# boxes and RLE
def mask_to_box(masks) -> np.ndarray:
    """Tight boxes of binary masks, as mmdet ``mask2bbox``: (N, H, W) -> (N, 4) float32 (x1, y1, x2, y2) with
    x2/y2 one past the last pixel; all zeros for an empty mask. A single (H, W) mask gives (4,)."""
    m = np.asarray(masks).astype(bool)
    single = m.ndim == 2
    if single:
        m = m[None]
    n = m.shape[0]
    boxes = np.zeros((n, 4), dtype=np.float32)
    if n == 0:
        return boxes
    cols = m.any(axis=1)  # (N, W)
    rows = m.any(axis=2)  # (N, H)
    ok = cols.any(axis=1)
    W, H = cols.shape[1], rows.shape[1]
    boxes[:, 0] = cols.argmax(axis=1)
    boxes[:, 1] = rows.argmax(axis=1)
    boxes[:, 2] = W - cols[:, ::-1].argmax(axis=1)
    boxes[:, 3] = H - rows[:, ::-1].argmax(axis=1)
    boxes[~ok] = 0
    return boxes[0] if single else boxes


def rle_encode(mask) -> dict:
    """Binary mask (H, W) -> COCO uncompressed RLE ``{"size": [H, W], "counts": [...]}`` (column-major runs,
    starting with the number of 0 pixels, which may be 0). JSON-serialisable (plain ints)."""
    m = np.asarray(mask).astype(bool)
    if m.ndim != 2:
        raise ValueError("rle_encode takes one (H, W) mask, got shape %s" % (m.shape,))
    flat = m.T.reshape(-1)  # column-major order
    if flat.size == 0:
        return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": []}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": [int(c) for c in counts]}


def rle_decode(rle: dict) -> np.ndarray:
    """Inverse of ``rle_encode``: uncompressed COCO RLE -> bool (H, W)."""
    h, w = int(rle["size"][0]), int(rle["size"][1])
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.sum() != h * w:
        raise ValueError("RLE counts sum to %d, expected %d for size %dx%d" % (counts.sum(), h * w, h, w))
    values = (np.arange(len(counts)) % 2).astype(bool)
    return np.repeat(values, counts).reshape(w, h).T.copy()


# ---------------------------------------------------------------------------------------------------------------
# panoptic
def panoptic_keep(cls_logits, object_mask_thr: float = 0.8) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Queries that take part in panoptic fusion: (keep (N,) bool, scores (N,), labels (N,)) with
    scores, labels = max / argmax of softmax over the K+1 classes; keep = label != K and score > thr.
    Fusion results depend only on the kept queries, so callers may upsample only those masks."""
    probs = softmax(cls_logits, axis=-1)
    labels = probs.argmax(axis=-1)
    scores = probs.max(axis=-1)
    keep = (labels != probs.shape[-1] - 1) & (scores > object_mask_thr)
    return keep, scores, labels


def panoptic_fusion(cls_logits, mask_logits, num_things: int, object_mask_thr: float = 0.8,
                    iou_thr: float = 0.8, filter_low_score: bool = True) -> Tuple[np.ndarray, List[dict]]:
    """mmdet 3.x ``MaskFormerFusionHead.panoptic_postprocess`` in numpy.

    cls_logits (N, K+1) (background last), mask_logits (N, H, W) at the output size -> (pan_seg, segments):
    pan_seg (H, W) int32 with ``label`` for stuff (label >= num_things; all queries of one stuff class merged),
    ``label + instance_id * 1000`` for things (instance ids from 1 in query order) and K for void;
    segments: one dict per id present in pan_seg, in query order:
    ``{"id", "label", "score", "area", "isthing"}`` (score: the query's class score; for merged stuff the
    highest one). As mmdet: a kept query whose argmax area / own area (sigmoid >= 0.5) < iou_thr is dropped,
    and with filter_low_score its painted pixels are further limited to sigmoid >= 0.5."""
    cls_logits = np.asarray(cls_logits, dtype=np.float32)
    mask_logits = np.asarray(mask_logits, dtype=np.float32)
    if cls_logits.ndim != 2 or mask_logits.ndim != 3 or cls_logits.shape[0] != mask_logits.shape[0]:
        raise ValueError("expected cls_logits (N, K+1) and mask_logits (N, H, W), got %s and %s"
                         % (cls_logits.shape, mask_logits.shape))
    num_classes = cls_logits.shape[1] - 1
    if num_classes >= INSTANCE_OFFSET:
        raise ValueError("at most %d classes are supported by the panoptic id encoding" % (INSTANCE_OFFSET - 1))
    H, W = mask_logits.shape[1:]
    pan_seg = np.full((H, W), num_classes, dtype=np.int32)
    keep, scores, labels = panoptic_keep(cls_logits, object_mask_thr)
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        return pan_seg, []
    cur_scores = scores[idx]
    cur_classes = labels[idx]
    cur_masks = sigmoid(mask_logits[idx])  # (n, H, W)
    cur_mask_ids = (cur_scores[:, None, None] * cur_masks).argmax(axis=0)
    seg_order = []  # segment ids in the order they are first painted
    seg_info = {}
    instance_id = 1
    for k in range(idx.size):
        pred_class = int(cur_classes[k])
        isthing = pred_class < num_things
        mask = cur_mask_ids == k
        mask_area = int(mask.sum())
        own = cur_masks[k] >= 0.5
        original_area = int(own.sum())
        if filter_low_score:
            mask &= own
        if mask_area > 0 and original_area > 0:
            if float(mask_area) / original_area < iou_thr:
                continue
            if isthing:
                seg_id = pred_class + instance_id * INSTANCE_OFFSET
                instance_id += 1
            else:
                seg_id = pred_class
            pan_seg[mask] = seg_id
            if seg_id not in seg_info:
                seg_order.append(seg_id)
                seg_info[seg_id] = {"id": int(seg_id), "label": pred_class, "score": float(cur_scores[k]),
                                    "area": 0, "isthing": bool(isthing)}
            else:  # stuff merged per class
                seg_info[seg_id]["score"] = max(seg_info[seg_id]["score"], float(cur_scores[k]))
    ids, counts = np.unique(pan_seg, return_counts=True)
    areas = dict(zip(ids.tolist(), counts.tolist()))
    segments = []
    for seg_id in seg_order:
        area = areas.get(seg_id, 0)
        if area > 0:
            seg_info[seg_id]["area"] = int(area)
            segments.append(seg_info[seg_id])
    return pan_seg, segments


# ---------------------------------------------------------------------------------------------------------------
# instances
def select_instances(cls_logits, num_things: int, max_per_image: int = 100) -> Tuple[np.ndarray, np.ndarray,
                                                                                       np.ndarray]:
    """The (query, class) pairs of mmdet ``instance_postprocess``: top ``max_per_image`` of the flattened
    softmax[:, :-1] scores (N*K), query = idx // K, label = idx % K, things only.
    Returns (query_index (M,) int64, labels (M,) int64, class scores (M,) float32), sorted by class score
    (descending; mmdet's order is unspecified: topk(sorted=False))."""
    probs = softmax(cls_logits, axis=-1)[:, :-1]
    n, k = probs.shape
    flat = probs.reshape(-1)
    top = min(int(max_per_image), flat.size)
    order = np.argsort(-flat, kind="stable")[:top]
    query = order // k
    labels = order % k
    things = labels < num_things
    return query[things].astype(np.int64), labels[things].astype(np.int64), flat[order][things].astype(np.float32)


def score_masks(mask_logits) -> Tuple[np.ndarray, np.ndarray]:
    """mask_logits (M, H, W) -> (binary masks (M, H, W) bool = logits > 0, mask scores (M,) float32 = mean
    sigmoid inside the binary mask, as mmdet: sum / (area + 1e-6)). The sigmoid is evaluated only on the
    mask's own (positive) pixels."""
    x = np.asarray(mask_logits, dtype=np.float32)
    binary = x > 0
    scores = np.zeros((x.shape[0],), dtype=np.float32)
    for i in range(x.shape[0]):
        inside = x[i][binary[i]]
        total = (np.float32(1.0) / (np.float32(1.0) + np.exp(-inside))).sum(dtype=np.float32)
        scores[i] = total / (np.float32(inside.size) + np.float32(1e-6))
    return binary, scores


def assemble_instances(query, labels, cls_scores, unique_binary, unique_scores, inverse) -> Dict[str, np.ndarray]:
    """Combine a selection with per-query masks (``unique_*`` indexed by ``inverse``) into the result dict
    (sorted by final score, descending). See ``instance_results``."""
    scores = (cls_scores * unique_scores[inverse]).astype(np.float32)
    order = np.argsort(-scores, kind="stable")
    masks = unique_binary[inverse[order]]
    return {"scores": scores[order], "labels": labels[order].astype(np.int64), "masks": masks,
            "boxes": mask_to_box(masks),
            "query_index": query[order].astype(np.int64)}


def instance_results(cls_logits, mask_logits, num_things: int, max_per_image: int = 100,
                     score_thr: float = 0.0) -> Dict[str, np.ndarray]:
    """mmdet 3.x ``MaskFormerFusionHead.instance_postprocess`` in numpy.

    cls_logits (N, K+1), mask_logits (N, H, W) at the output size -> dict of numpy arrays (M results):
    ``scores`` (M,) float32 = class score * mask score, ``labels`` (M,) int64, ``masks`` (M, H, W) bool
    (logits > 0), ``boxes`` (M, 4) float32 tight (x1, y1, x2, y2) (zeros for an empty mask), ``query_index``
    (M,) int64. Sorted by score (descending); results below ``score_thr`` are dropped (0 keeps all, as mmdet).
    A query can appear with several labels, as in mmdet."""
    mask_logits = np.asarray(mask_logits, dtype=np.float32)
    query, labels, cls_scores = select_instances(cls_logits, num_things, max_per_image)
    if score_thr > 0:  # final score = class score * mask score <= class score
        ok = cls_scores >= score_thr
        query, labels, cls_scores = query[ok], labels[ok], cls_scores[ok]
    uq, inverse = np.unique(query, return_inverse=True)
    binary, mscores = score_masks(mask_logits[uq])
    res = assemble_instances(query, labels, cls_scores, binary, mscores, inverse.reshape(-1))
    return filter_instances(res, score_thr)


def filter_instances(res: Dict[str, np.ndarray], score_thr: float) -> Dict[str, np.ndarray]:
    """Keep the results with score >= score_thr (no-op for score_thr <= 0)."""
    if score_thr <= 0:
        return res
    ok = res["scores"] >= score_thr
    return {k: v[ok] for k, v in res.items()}


def empty_instances(shape_hw: Tuple[int, int]) -> Dict[str, np.ndarray]:
    return {"scores": np.zeros((0,), np.float32), "labels": np.zeros((0,), np.int64),
            "masks": np.zeros((0,) + tuple(shape_hw), bool), "boxes": np.zeros((0, 4), np.float32),
            "query_index": np.zeros((0,), np.int64)}


__all__ = ["INSTANCE_OFFSET", "sigmoid", "softmax", "upsample_masks", "upsample_and_score_masks", "mask_to_box", "rle_encode", "rle_decode",
           "panoptic_keep", "panoptic_fusion", "select_instances", "score_masks", "assemble_instances",
           "instance_results", "filter_instances", "empty_instances"]
