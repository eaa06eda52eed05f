"""Calibration and held-out images for quantization: from a folder, a video, a glob, or the shipped samples.

``load_frames(source, count, holdout)`` returns a ``FrameSet``: RGB uint8 frames for calibration and a disjoint
set of held-out frames for the fidelity report. Frames are sampled evenly over what the source offers (a
video's frames, a folder's images in name order), and the held-out frames are spread evenly among them.

* folder  -> its image files sorted by name, then the frames of its videos (``rmpsam_edge.media``, the one reader)
* video   -> frames sampled evenly over the whole clip
* glob    -> the images and videos it matches (``"frames/*.png"``, quoted so the shell does not expand it)
* None    -> the sample media shipped with rmpsam_edge (4 photos + 12 frames of a street clip), with a warning
             that this is a tiny set and deployments should calibrate on their own frames.

The number of frames used is always printed. Bad sources raise ``UserError`` (one line).
"""
import os
import sys
from typing import List, Optional, Tuple

import numpy as np

from rmpsam_edge.errors import UserError, warn
from rmpsam_edge.media import asset_path, even_indices, read_units, source_units
from rmpsam_edge.progress import progress

DEFAULT_HOLDOUT = 4        # held-out frames for the fidelity report
DEFAULT_MAX_FRAMES = 64    # calibration frames used when --calib-count is not given (and the source has more)
DEFAULT_VIDEO_FRAMES = 12  # frames of the shipped clip in the default set


class FrameSet(object):
    """calib / holdout: lists of (name, RGB uint8 (H, W, 3)); ``source``: what was read (for the report)."""

    def __init__(self, source: str, calib: List[Tuple[str, np.ndarray]], holdout: List[Tuple[str, np.ndarray]],
                 available: int, is_default: bool):
        self.source = source
        self.calib = calib
        self.holdout = holdout
        self.available = available
        self.is_default = is_default

    def describe(self) -> dict:
        return {"source": self.source, "available": self.available, "default_samples": self.is_default,
                "calibration": [n for n, _ in self.calib], "held_out": [n for n, _ in self.holdout]}


def default_units() -> list:
    """The shipped sample media: every photo + DEFAULT_VIDEO_FRAMES frames of the clip, sampled evenly."""
    units = []
    for folder in (asset_path("images"), asset_path("video")):
        if os.path.isdir(folder):
            found = source_units(folder, "--calib")
            videos = [u for u in found if u[0] == "video"]
            units += [u for u in found if u[0] == "image"]
            if len(videos) > DEFAULT_VIDEO_FRAMES:
                videos = [videos[i] for i in even_indices(len(videos), DEFAULT_VIDEO_FRAMES)]
            units += videos
    if not units:
        raise UserError("the sample media shipped with rmpsam_edge is missing (%s); pass --calib" % asset_path())
    return units


def split_counts(available: int, count: Optional[int], holdout: int, what: str) -> Tuple[int, int]:
    """(calibration count, held-out count) for a source with ``available`` frames."""
    if holdout < 0:
        raise UserError("--holdout must be >= 0, got %d" % holdout)
    if count is not None:
        if count < 1:
            raise UserError("--calib-count must be >= 1, got %d" % count)
        if available < count:
            raise UserError("calibration source %s has %d image(s), fewer than --calib-count %d; add images or "
                            "lower --calib-count" % (what, available, count))
        if available < count + holdout:
            raise UserError("calibration source %s has %d image(s): --calib-count %d plus %d held out for the "
                            "fidelity report need %d; lower --calib-count or --holdout"
                            % (what, available, count, holdout, count + holdout))
        return count, holdout
    if available < holdout + 1:
        raise UserError("calibration source %s has %d image(s); at least %d are needed (%d held out for the "
                        "fidelity report + 1); add images or lower --holdout" % (what, available, holdout + 1, holdout))
    return min(available - holdout, DEFAULT_MAX_FRAMES), holdout


def load_frames(source: Optional[str] = None, count: Optional[int] = None, holdout: int = DEFAULT_HOLDOUT,
                stream=None, calibrating: bool = True) -> FrameSet:
    """Read the calibration and held-out frames of ``source`` (see the module docstring); prints the counts.
    ``calibrating=False``: only the held-out frames will be used (FP16): no tiny-set warning."""
    stream = sys.stderr if stream is None else stream
    units = default_units() if source is None else source_units(source, "--calib")
    what = "(the shipped samples)" if source is None else str(source)
    n_calib, n_hold = split_counts(len(units), count, holdout, what)
    chosen = [units[i] for i in even_indices(len(units), n_calib + n_hold)]
    hold_pos = set(even_indices(len(chosen), n_hold)) if n_hold else set()
    ticks = iter(progress(range(len(chosen)), len(chosen), "reading calibration frames", stream))
    frames = read_units(chosen, "--calib", tick=lambda: next(ticks, None))
    for _ in ticks:  # close the bar
        pass
    calib = [f for i, f in enumerate(frames) if i not in hold_pos]
    held = [f for i, f in enumerate(frames) if i in hold_pos]
    if source is None and calibrating:
        warn("no --calib given: calibrating on the %d sample images shipped with rmpsam_edge. This is a tiny set; "
             "for a deployment calibrate on a few hundred of its own frames (--calib DIR|VIDEO|GLOB)" % len(calib))
    if calibrating:
        stream.write("calibration: %d image(s) from %s (of %d available), %d more held out for the fidelity report\n"
                     % (len(calib), what, len(units), len(held)))
    else:
        stream.write("fidelity report on %d held-out image(s) from %s (no calibration needed)\n" % (len(held), what))
    stream.flush()
    return FrameSet(what, calib, held, len(units), source is None)
