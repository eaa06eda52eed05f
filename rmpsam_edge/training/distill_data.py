"""Frames for distillation: read from the user's media, augmented into square training views, with the teacher's
outputs on each view cached (bounded) so repeating views cost the teacher nothing.

* ``load_frames(sources, count, holdout, long_side, val)`` -> (train, held_out): lists of (name, RGB uint8).
  Each source is a folder (its images and videos), a video (its frames), an image file or a quoted glob
  (``rmpsam_edge.media``, the one frame reader; the pixel limit applies to images and videos). Frames are sampled evenly over all the
  sources together, the held-out ones spread evenly among them (or taken from ``val``). Each frame is shrunk to
  ``long_side`` pixels at most when read, so memory stays bounded (count x long_side^2 x 3 bytes).
* ``make_view(frame, rng, size)`` -> (size, size, 3) uint8: a random crop (35-100 % of the area, aspect 3:4-4:3),
  resized, flipped half the time, brightness / contrast / saturation jittered (camera footage: exposure, white
  balance, framing). numpy + OpenCV only.
* ``random_prompts(rng, size, num)`` -> (num, 4) normalised (cx, cy, w, h): clicks (6-px boxes, the official
  click encoding) and boxes of 10-70 % of the side, half each.
* ``TeacherCache``: LRU of the teacher's outputs per view key, bounded in megabytes.
"""
from collections import OrderedDict
from typing import Dict, Optional, Sequence

import cv2
import numpy as np

from ..errors import UserError
from ..media import even_indices, read_units, source_units
from ..preprocess import normalize_boxes, points_to_boxes


def load_frames(sources: Sequence[str], count: int, holdout: int, long_side: int,
                val: Optional[Sequence[str]] = None):
    """-> (train frames, held-out frames, number of frames the sources offer); see the module docstring."""
    units = [u for s in sources for u in source_units(s, "--images")]
    if val:
        val_units = [u for s in val for u in source_units(s, "--val")]
        held = [val_units[i] for i in even_indices(len(val_units), min(holdout, len(val_units)))]
        train = [units[i] for i in even_indices(len(units), min(count, len(units)))]
    else:
        if len(units) < holdout + 1:
            raise UserError("--images offers %d frame(s); at least %d are needed (%d held out for the report + 1): "
                            "add frames, lower --holdout or pass --val" % (len(units), holdout + 1, holdout))
        chosen = [units[i] for i in even_indices(len(units), min(count + holdout, len(units)))]
        hold_pos = set(even_indices(len(chosen), holdout)) if holdout else set()
        held = [u for i, u in enumerate(chosen) if i in hold_pos]
        train = [u for i, u in enumerate(chosen) if i not in hold_pos]
    return (read_units(train, "--images", long_side),
            read_units(held, "--val" if val else "--images", long_side), len(units))


# ------------------------------------------------------------------------------------------------ views
def make_view(frame: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> augmented square view (size, size, 3) uint8."""
    h, w = frame.shape[:2]
    area = rng.uniform(0.35, 1.0) * h * w
    ar = float(np.exp(rng.uniform(np.log(3 / 4.0), np.log(4 / 3.0))))
    cw = int(min(w, max(8, round(np.sqrt(area * ar)))))
    ch = int(min(h, max(8, round(np.sqrt(area / ar)))))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    crop = frame[y0:y0 + ch, x0:x0 + cw]
    interp = cv2.INTER_AREA if max(cw, ch) > size else cv2.INTER_LINEAR
    v = cv2.resize(crop, (size, size), interpolation=interp).astype(np.float32)
    if rng.random() < 0.5:
        v = v[:, ::-1]
    gray = v.mean(-1, keepdims=True)
    v = gray + rng.uniform(0.7, 1.3) * (v - gray)                      # saturation
    m = float(v.mean())
    v = (v - m) * rng.uniform(0.75, 1.25) + m + rng.uniform(-0.15, 0.15) * 255  # contrast, brightness
    v = v * rng.uniform(0.92, 1.08, 3).astype(np.float32)               # white balance
    return np.ascontiguousarray(np.clip(v, 0, 255).astype(np.uint8))


def random_prompts(rng: np.random.Generator, size: int, num: int) -> np.ndarray:
    """-> (num, 4) float32 normalised (cx, cy, w, h) of a size x size view: clicks first, then boxes."""
    n_pts = (num + 1) // 2
    pts = rng.uniform(0, size, (n_pts, 2)).astype(np.float32)
    c = rng.uniform(0, size, (num - n_pts, 2))
    wh = rng.uniform(0.1, 0.7, (num - n_pts, 2)) * size
    boxes = np.clip(np.concatenate([c - wh / 2, c + wh / 2], 1), 0, size).astype(np.float32)
    return normalize_boxes(np.concatenate([points_to_boxes(pts), boxes.reshape(-1, 4)]), (size, size))


# ------------------------------------------------------------------------------------------------ cache
class TeacherCache(object):
    """Least-recently-used {key: {name: CPU tensor}}, at most ``max_mb`` megabytes (0: no caching)."""

    def __init__(self, max_mb: float):
        self.max_bytes = int(max_mb * 1e6)
        self.items: "OrderedDict" = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _size(entry: Dict) -> int:
        return sum(t.numel() * t.element_size() for t in entry.values())

    def get(self, key):
        entry = self.items.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self.items.move_to_end(key)
        return entry

    def put(self, key, entry: Dict) -> None:
        size = self._size(entry)
        if size > self.max_bytes:
            return
        self.items[key] = entry
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, old = self.items.popitem(last=False)
            self.bytes -= self._size(old)

    def stats(self) -> Dict:
        return {"entries": len(self.items), "megabytes": round(self.bytes / 1e6, 1), "hits": self.hits,
                "misses": self.misses, "limit_mb": self.max_bytes / 1e6}
