"""Calibration and held-out images for quantization: from a folder, a video, a glob, or the shipped samples.

``load_frames(source, count, holdout)`` returns a ``FrameSet``: RGB uint8 frames for calibration and a disjoint
set of held-out frames for the fidelity report. Frames are sampled evenly over what the source offers (a
video's frames, a folder's images in name order), and the held-out frames are spread evenly among them.

* folder  -> its image files (.jpg .jpeg .png .bmp .tif .tiff .webp), sorted by name (videos in it are ignored)
* video   -> frames sampled evenly over the whole clip
* glob    -> the image files it matches (``"frames/*.png"``, quoted so the shell does not expand it)
* None    -> the sample media shipped with rmpsam_edge (4 photos + 12 frames of a street clip), with a warning
             that this is a tiny set and deployments should calibrate on their own frames.

The number of frames used is always printed. Bad sources raise ``UserError`` (one line).
"""
import glob
import os
import sys
from typing import List, Optional, Tuple

import numpy as np

from rmpsam_edge.errors import UserError, warn
from rmpsam_edge.media import IMAGE_EXTS, VIDEO_EXTS, asset_path, is_image, is_video, list_media

DEFAULT_HOLDOUT = 4        # held-out frames for the fidelity report
DEFAULT_MAX_FRAMES = 64    # calibration frames used when --calib-count is not given (and the source has more)
DEFAULT_VIDEO_FRAMES = 12  # frames of the shipped clip in the default set
SOURCE_HINT = "give --calib a folder of images, a video file or a quoted glob such as 'frames/*.jpg'"


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


# --------------------------------------------------------------------------------------------- units
# A "unit" is one frame the source can give: ("image", path) or ("video", path, frame_index).
def _video_frame_count(path: str) -> int:
    import cv2
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise UserError("cannot read calibration video %s: OpenCV cannot open it; %s" % (path, SOURCE_HINT))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if n <= 0:  # some containers do not store the count: count by grabbing
            n = 0
            while cap.grab():
                n += 1
    finally:
        cap.release()
    if n <= 0:
        raise UserError("cannot read calibration video %s: it has no readable frames; %s" % (path, SOURCE_HINT))
    return n


def _video_units(path: str, limit: Optional[int] = None) -> list:
    n = _video_frame_count(path)
    idx = range(n) if limit is None or limit >= n else even_indices(n, limit)
    return [("video", path, int(i)) for i in idx]


def _folder_units(folder: str) -> list:
    try:
        images = list_media(folder)[0]
    except OSError as exc:
        raise UserError("cannot read calibration folder %s: %s" % (folder, exc.strerror or exc))
    if not images:
        raise UserError("calibration folder %s has no images (%s); %s"
                        % (folder, " ".join(IMAGE_EXTS), SOURCE_HINT))
    return [("image", p) for p in images]


def _glob_units(pattern: str) -> list:
    images, videos = list_media(pattern)
    if images:
        return [("image", p) for p in images]
    if len(videos) == 1:
        return _video_units(videos[0])
    n = len([p for p in glob.glob(pattern) if os.path.isfile(p)])
    if not n:
        raise UserError("calibration glob %r matches no files; %s" % (pattern, SOURCE_HINT))
    raise UserError("calibration glob %r matches %d files but no images (%s); %s"
                    % (pattern, n, " ".join(IMAGE_EXTS), SOURCE_HINT))


def default_units() -> list:
    """The shipped sample media: every photo + DEFAULT_VIDEO_FRAMES frames of the clip, sampled evenly."""
    assets = asset_path()
    images = sorted(glob.glob(os.path.join(assets, "images", "*")))
    units = [("image", p) for p in images if is_image(p)]
    for video in sorted(glob.glob(os.path.join(assets, "video", "*"))):
        if is_video(video):
            units.extend(_video_units(video, DEFAULT_VIDEO_FRAMES))
    if not units:
        raise UserError("the sample media shipped with rmpsam_edge is missing (%s); pass --calib" % assets)
    return units


def source_units(source: Optional[str]) -> list:
    if source is None:
        return default_units()
    source = os.path.expanduser(str(source))
    if os.path.isdir(source):
        return _folder_units(source)
    if os.path.isfile(source):
        if is_video(source):
            return _video_units(source)
        if is_image(source):
            return [("image", source)]
        raise UserError("calibration source %s is neither an image nor a video (%s %s); %s"
                        % (source, " ".join(IMAGE_EXTS), " ".join(VIDEO_EXTS), SOURCE_HINT))
    if any(c in source for c in "*?["):
        return _glob_units(source)
    raise UserError("calibration source %s does not exist; %s" % (source, SOURCE_HINT))


# --------------------------------------------------------------------------------------------- sampling
def even_indices(n: int, k: int) -> List[int]:
    """k indices spread evenly over range(n) (k <= n), centred in their strata."""
    return [int((i + 0.5) * n / k) for i in range(k)]


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


def _read_units(units: list, desc: str, stream) -> List[Tuple[str, np.ndarray]]:
    """Decode the chosen units (videos read sequentially, once) -> [(name, RGB uint8)] in unit order."""
    import cv2
    from rmpsam_edge.preprocess import load_image

    from rmpsam_edge.progress import progress
    out = [None] * len(units)
    by_video = {}
    for pos, u in enumerate(units):
        if u[0] == "video":
            by_video.setdefault(u[1], []).append((u[2], pos))
    bar = progress(range(len(units)), len(units), desc, stream)
    ticks = iter(bar)
    for pos, u in enumerate(units):
        if u[0] == "image":
            out[pos] = (u[1], load_image(u[1]))
            next(ticks, None)
    for path, wanted in by_video.items():
        wanted = sorted(wanted)
        cap = cv2.VideoCapture(path)
        frame_no, k = 0, 0
        try:
            while k < len(wanted):
                if not cap.grab():
                    raise UserError("cannot read calibration video %s: frame %d is unreadable; %s"
                                    % (path, wanted[k][0], SOURCE_HINT))
                while k < len(wanted) and wanted[k][0] == frame_no:
                    ok, bgr = cap.retrieve()
                    if not ok or bgr is None:
                        raise UserError("cannot read calibration video %s: frame %d does not decode"
                                        % (path, frame_no))
                    out[wanted[k][1]] = ("%s#%d" % (path, frame_no), np.ascontiguousarray(bgr[:, :, ::-1]))
                    k += 1
                    next(ticks, None)
                frame_no += 1
        finally:
            cap.release()
    for _ in ticks:  # close the bar
        pass
    return out


def load_frames(source: Optional[str] = None, count: Optional[int] = None, holdout: int = DEFAULT_HOLDOUT,
                stream=None, calibrating: bool = True) -> FrameSet:
    """Read the calibration and held-out frames of ``source`` (see the module docstring); prints the counts.
    ``calibrating=False``: only the held-out frames will be used (FP16): no tiny-set warning."""
    stream = sys.stderr if stream is None else stream
    units = source_units(source)
    what = "(the shipped samples)" if source is None else str(source)
    n_calib, n_hold = split_counts(len(units), count, holdout, what)
    chosen = [units[i] for i in even_indices(len(units), n_calib + n_hold)]
    hold_pos = set(even_indices(len(chosen), n_hold)) if n_hold else set()
    frames = _read_units(chosen, "reading calibration frames", stream)
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
