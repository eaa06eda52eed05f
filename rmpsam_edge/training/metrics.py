"""Metrics of the synthetic evaluation (numpy only): mask IoU, panoptic quality, track identity.

* PQ follows the COCO panopticapi rules: a prediction matches a ground-truth segment of the same class when
  IoU > 0.5 (unique); void pixels (no ground-truth segment) are removed from the union, and unmatched
  predictions lying more than half in void are not counted as false positives. PQ = mean over classes seen.
* Track identity: every ground-truth object-frame is matched to the predicted track with the highest mask IoU
  (if >= 0.5); it counts as "kept" when that track is the one the object is matched to most often over the
  clip. Unmatched object-frames count as not kept.
"""
from collections import Counter, defaultdict
from typing import Dict, List, Sequence

import numpy as np


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


class PanopticQuality(object):
    """Accumulate PQ over images. Segments are given as (masks (N, H, W) bool, classes (N,))."""

    def __init__(self, num_classes: int, num_things: int):
        self.num_classes = num_classes
        self.num_things = num_things
        self.iou = np.zeros(num_classes)
        self.tp = np.zeros(num_classes)
        self.fp = np.zeros(num_classes)
        self.fn = np.zeros(num_classes)

    def update(self, pred_masks: np.ndarray, pred_classes: Sequence[int], gt_masks: np.ndarray,
               gt_classes: Sequence[int]) -> None:
        pred_masks = np.asarray(pred_masks, bool)
        gt_masks = np.asarray(gt_masks, bool)
        void = ~gt_masks.any(0) if len(gt_masks) else None
        matched_p, matched_g = set(), set()
        for g, gc in enumerate(gt_classes):
            for p, pc in enumerate(pred_classes):
                if p in matched_p or int(pc) != int(gc):
                    continue
                inter = np.logical_and(pred_masks[p], gt_masks[g]).sum()
                if inter == 0:
                    continue
                pv = np.logical_and(pred_masks[p], void).sum() if void is not None else 0
                union = pred_masks[p].sum() + gt_masks[g].sum() - inter - pv
                iou = inter / float(union)
                if iou > 0.5:
                    self.tp[gc] += 1
                    self.iou[gc] += iou
                    matched_p.add(p)
                    matched_g.add(g)
                    break
        for g, gc in enumerate(gt_classes):
            if g not in matched_g:
                self.fn[gc] += 1
        for p, pc in enumerate(pred_classes):
            if p in matched_p:
                continue
            area = pred_masks[p].sum()
            if area == 0:
                continue
            if void is not None and np.logical_and(pred_masks[p], void).sum() > 0.5 * area:
                continue
            self.fp[int(pc)] += 1

    def result(self) -> Dict[str, float]:
        seen = (self.tp + self.fp + self.fn) > 0
        denom = np.maximum(self.tp + 0.5 * self.fp + 0.5 * self.fn, 1e-9)
        pq = np.where(seen, self.iou / denom, 0.0)
        sq = np.where(self.tp > 0, self.iou / np.maximum(self.tp, 1e-9), 0.0)
        rq = np.where(seen, self.tp / denom, 0.0)
        things = seen.copy()
        things[self.num_things:] = False
        stuff = seen.copy()
        stuff[:self.num_things] = False

        def mean(x, m):
            return float(x[m].mean()) if m.any() else float("nan")
        return {"PQ": mean(pq, seen), "SQ": mean(sq, seen), "RQ": mean(rq, seen), "PQ_things": mean(pq, things),
                "PQ_stuff": mean(pq, stuff)}


def track_identity(gt_frames: List[Dict[int, np.ndarray]], pred_frames: List[Dict[int, np.ndarray]],
                   iou_thr: float = 0.5) -> Dict[str, float]:
    """gt_frames / pred_frames: per frame {track id: mask (H, W) bool}. -> kept fraction and counts."""
    assign = defaultdict(list)  # gt id -> [pred id or None per object-frame]
    for gt, pred in zip(gt_frames, pred_frames):
        for gid, gm in gt.items():
            best, best_iou = None, iou_thr
            for pid, pm in pred.items():
                iou = mask_iou(gm, pm)
                if iou >= best_iou:
                    best, best_iou = pid, iou
            assign[gid].append(best)
    total = kept = matched = 0
    for seq in assign.values():
        total += len(seq)
        ids = [s for s in seq if s is not None]
        matched += len(ids)
        if ids:
            kept += Counter(ids).most_common(1)[0][1]
    return {"identity_kept": kept / float(total) if total else float("nan"),
            "detected": matched / float(total) if total else float("nan"), "object_frames": total}
