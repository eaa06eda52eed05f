"""The four demo modes. Each splits its work in two: ``process(rgb)`` runs the model (inference thread) and
returns a result dict; ``draw(rgb, result)`` and ``records(result)`` run in the sink thread (drawing, RLE), so
neither stalls the model.

A result dict holds ``masks`` (M,H,W) bool, ``scores`` (M,), ``ids`` (M,) int, ``names`` (M strings or None),
``timings`` (stage -> ms) and mode-specific extras (``pan_seg``/``segments``, ``points``/``boxes``).
Python 3.8, no torch.
"""
import threading
from typing import List, Optional

import numpy as np

from rmpsam_edge.errors import UserError

from rmpsam_edge.automatic import AutomaticMaskGenerator

MODES = ("panoptic", "track", "points", "boxes", "everything")


def _records(result: dict) -> List[dict]:
    from rmpsam_edge.postprocess import mask_to_box, rle_encode
    masks = result["masks"]
    boxes = mask_to_box(masks) if len(masks) else np.zeros((0, 4), np.float32)
    names = result.get("names")
    out = []
    for i in range(len(masks)):
        rec = {"id": int(result["ids"][i]), "score": round(float(result["scores"][i]), 4),
               "box": [round(float(v), 1) for v in boxes[i]], "area": int(masks[i].sum()),
               "rle": rle_encode(masks[i])}
        if names is not None:
            rec["name"] = names[i]
        if result.get("labels") is not None:
            rec["label"] = int(result["labels"][i])
        out.append(rec)
    return out


class PromptMode(object):
    """points / boxes: the given prompts (and clicks added with the mouse) decoded in one call per frame."""

    name = "points"

    def __init__(self, predictor, points=None, boxes=None):
        self.predictor = predictor
        self._lock = threading.Lock()
        self._points = [list(map(float, p)) for p in (points if points is not None else [])]
        self.boxes = np.asarray(boxes if boxes is not None else np.zeros((0, 4)), dtype=np.float64).reshape(-1, 4)
        self._warned = False

    def add_point(self, x: float, y: float) -> None:
        """Thread-safe: called by the mouse callback while the model runs."""
        with self._lock:
            self._points.append([float(x), float(y)])

    def points(self) -> np.ndarray:
        with self._lock:
            return np.asarray(self._points, dtype=np.float64).reshape(-1, 2)

    def clip_boxes(self, h: int, w: int) -> np.ndarray:
        """Boxes clipped to this frame, with ONE warning for the whole run (not one per frame)."""
        b = self.boxes.copy()
        if len(b):
            b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, w)
            b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, h)
            if not np.array_equal(b, self.boxes) and not self._warned:
                from rmpsam_edge.errors import warn
                warn("box prompts partly outside the %dx%d frame are clipped to it" % (w, h))
                self._warned = True
        return b

    def process(self, rgb: np.ndarray) -> dict:
        p = self.predictor
        p.set_image(rgb)
        pts, bxs = self.points(), self.clip_boxes(rgb.shape[0], rgb.shape[1])
        if len(pts) or len(bxs):
            # a point outside the frame is a one-line UserError from the prompt validation
            masks, scores = p.predict(points=pts if len(pts) else None, boxes=bxs if len(bxs) else None)
        else:
            masks, scores = np.zeros((0,) + rgb.shape[:2], bool), np.zeros((0,), np.float32)
        return {"masks": masks, "scores": scores, "ids": np.arange(len(masks)), "names": None,
                "points": pts, "boxes": bxs, "timings": dict(p.timings)}

    def draw(self, rgb: np.ndarray, result: dict, banner: Optional[str]) -> np.ndarray:
        from rmpsam_edge import visualize
        pts, bxs = result["points"], result["boxes"]
        return visualize.overlay_masks(rgb, result["masks"], points=pts if len(pts) else None,
                                       boxes=bxs if len(bxs) else None, banner=banner)

    def records(self, result: dict) -> List[dict]:
        return _records(result)


class EverythingMode(object):
    """A grid of clicks decoded in one batch, duplicates removed by mask NMS (automatic mask generator)."""

    name = "everything"

    def __init__(self, predictor, per_side: int = 8, iou_threshold: float = 0.7, score_threshold: float = 0.0):
        if per_side < 1 or per_side > 32:
            raise UserError("--grid %d: use 1..32 points per side (8 = 64 prompts)" % per_side)
        self.predictor = predictor
        self.per_side = per_side
        self.generator = AutomaticMaskGenerator(predictor, per_side, iou_threshold, score_threshold)

    def process(self, rgb: np.ndarray) -> dict:
        out = self.generator.generate(rgb)
        out.update({"ids": np.arange(len(out["masks"])), "names": None, "prompts": self.per_side ** 2})
        return out

    def draw(self, rgb: np.ndarray, result: dict, banner: Optional[str]) -> np.ndarray:
        from rmpsam_edge import visualize
        return visualize.overlay_masks(rgb, result["masks"], points=result["points"], banner=banner)

    def records(self, result: dict) -> List[dict]:
        return _records(result)


class PanopticMode(object):
    """Panoptic segmentation per frame: a colour per segment, class names."""

    name = "panoptic"

    def __init__(self, predictor):
        self.predictor = predictor
        if predictor.spec.class_embed is None:
            raise UserError("panoptic mode needs a class vocabulary (--vocab FILE, or a bundle/weights that ship "
                            "one); without one use --mode points, boxes or everything")

    def process(self, rgb: np.ndarray) -> dict:
        p = self.predictor
        p.set_image(rgb)
        pan_seg, segments = p.panoptic()
        masks = np.stack([pan_seg == s["id"] for s in segments]) if segments else \
            np.zeros((0,) + pan_seg.shape, bool)
        return {"masks": masks, "scores": np.asarray([s.get("score", 1.0) for s in segments], np.float32),
                "ids": np.asarray([s["id"] for s in segments], np.int64), "names": [s["name"] for s in segments],
                "labels": np.asarray([s["label"] for s in segments], np.int64), "pan_seg": pan_seg,
                "segments": segments, "timings": dict(p.timings)}

    def draw(self, rgb: np.ndarray, result: dict, banner: Optional[str]) -> np.ndarray:
        from rmpsam_edge import visualize
        spec = self.predictor.spec
        return visualize.panoptic_overlay(rgb, result["pan_seg"], result["segments"], spec.class_names,
                                          spec.num_classes, banner=banner)

    def records(self, result: dict) -> List[dict]:
        return _records(result)


class TrackMode(object):
    """Video instance segmentation: instances linked across frames, colour and id stable per track."""

    name = "track"

    def __init__(self, predictor, score_threshold: float = 0.3):
        from rmpsam_edge.tracking import VideoTracker
        if predictor.spec.class_embed is None:
            raise UserError("track mode needs a class vocabulary (--vocab FILE, or a bundle/weights that ship "
                            "one); without one use --mode points, boxes or everything")
        # live tracking: every frame is its own tube, queries matched to the previous frame's
        self.predictor = predictor
        self.tracker = VideoTracker(predictor, tube_length=1, score_thr=score_threshold)

    def process(self, rgb: np.ndarray) -> dict:
        tracks = self.tracker.update(rgb)
        return tracks_to_result(tracks, rgb.shape[:2], dict(self.tracker.timings))

    def draw(self, rgb: np.ndarray, result: dict, banner: Optional[str]) -> np.ndarray:
        from rmpsam_edge import visualize
        labels = ["#%d %s %.2f" % (i, n, s) for i, n, s in zip(result["ids"], result["names"], result["scores"])]
        return visualize.overlay_masks(rgb, result["masks"], labels=labels, ids=result["ids"], banner=banner)

    def records(self, result: dict) -> List[dict]:
        return _records(result)


def tracks_to_result(tracks, shape_hw, timings: dict) -> dict:
    """The tracker's per-frame tracks (``rmpsam_edge.tracking.Track``) -> the common result dict."""
    keep = list(tracks)
    masks = np.stack([np.asarray(t["mask"], bool) for t in keep]) if keep else np.zeros((0,) + tuple(shape_hw), bool)
    return {"masks": masks, "scores": np.asarray([t["score"] for t in keep], np.float32),
            "ids": np.asarray([t["id"] for t in keep], np.int64), "names": [t["name"] for t in keep],
            "labels": np.asarray([t["label"] for t in keep], np.int64), "timings": timings}


def build_mode(name: str, predictor, points=None, boxes=None, per_side: int = 8, nms: float = 0.7,
               score_threshold: float = 0.3):
    if name in ("points", "boxes"):
        mode = PromptMode(predictor, points, boxes)
        mode.name = name
        return mode
    if name == "everything":
        return EverythingMode(predictor, per_side, nms)
    if name == "panoptic":
        return PanopticMode(predictor)
    if name == "track":
        return TrackMode(predictor, score_threshold)
    raise UserError("unknown --mode %r; use one of %s" % (name, ", ".join(MODES)))
