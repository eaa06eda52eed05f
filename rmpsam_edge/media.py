"""Media files: which endings count as images and videos, how a folder or a glob lists them, the one frame
reader (folder, video, image, glob -> frames sampled evenly; used by the demo sources, quantize calibration and
distillation), and where the sample media shipped with rmpsam_edge live. numpy and OpenCV only inside the
reader's functions; no torch, Python 3.8.

A "unit" is one frame a source can give: ``("image", path)`` or ``("video", path, frame_index)``. Errors name
the flag the source came from (``flag``, such as ``--calib``) and are one line (``UserError``)."""
import glob
import os
from typing import Callable, List, Optional, Sequence, Tuple

from .errors import UserError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


def is_image(path: str) -> bool:
    return str(path).lower().endswith(IMAGE_EXTS)


def is_video(path: str) -> bool:
    return str(path).lower().endswith(VIDEO_EXTS)


def repo_path(path: str) -> str:
    """``path`` relative to the source checkout rmpsam_edge runs from (the folder with pyproject.toml above the
    package) when it lies inside it, else unchanged: results files name no machine's checkout folder."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    full = os.path.abspath(str(path))
    if os.path.isfile(os.path.join(root, "pyproject.toml")) and full.startswith(root + os.sep):
        return os.path.relpath(full, root)
    return path


def list_media(source: str) -> Tuple[List[str], List[str]]:
    """A folder (its entries) or a glob pattern (its matches) -> (images, videos): sorted paths of plain files
    (anything else is left out). OSError when the folder cannot be read."""
    if os.path.isdir(source):
        paths = [os.path.join(source, n) for n in os.listdir(source)]
    else:
        paths = glob.glob(source)
    files = sorted(p for p in paths if os.path.isfile(p))
    return [p for p in files if is_image(p)], [p for p in files if is_video(p)]


def asset_path(*parts: str) -> str:
    """A path inside the package's ``assets`` folder: ``asset_path("images", "astronaut.jpg")``; no parts:
    the folder itself."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", *parts)


def source_hint(flag: str) -> str:
    return "give %s a folder of images, a video file, an image or a quoted glob such as 'frames/*.jpg'" % flag


def even_indices(n: int, k: int) -> List[int]:
    """k indices spread evenly over range(n) (k <= n), centred in their strata."""
    return [int((i + 0.5) * n / k) for i in range(k)]


def video_frame_count(path: str, flag: str) -> int:
    """Frames in a video (counted by grabbing when the container does not store it); UserError when OpenCV
    cannot open it, it has no frames, or its frame size is over the pixel limit images have."""
    import cv2
    from .image_header import DEFAULT_MAX_PIXELS
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise UserError("cannot read video %s given to %s: OpenCV cannot open it; %s"
                            % (path, flag, source_hint(flag)))
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        if w * h >= DEFAULT_MAX_PIXELS:
            raise UserError("video %s given to %s has %dx%d frames, over the limit of %d pixels; downscale it"
                            % (path, flag, w, h, DEFAULT_MAX_PIXELS))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if n <= 0:
            while cap.grab():
                n += 1
    finally:
        cap.release()
    if n <= 0:
        raise UserError("cannot read video %s given to %s: it has no readable frames; %s"
                        % (path, flag, source_hint(flag)))
    return n


def source_units(source: str, flag: str) -> List[tuple]:
    """One source given to ``flag`` -> its units: a folder's or a glob's images (sorted), then every frame of its
    videos; an image file; a video's frames."""
    source = os.path.expanduser(str(source))
    if os.path.isdir(source):
        try:
            images, videos = list_media(source)
        except OSError as exc:
            raise UserError("cannot read folder %s given to %s: %s" % (source, flag, exc.strerror or exc))
    elif os.path.isfile(source):
        if not (is_image(source) or is_video(source)):
            raise UserError("%s given to %s is neither an image nor a video (%s %s); %s"
                            % (source, flag, " ".join(IMAGE_EXTS), " ".join(VIDEO_EXTS), source_hint(flag)))
        images, videos = ([source], []) if is_image(source) else ([], [source])
    elif any(c in source for c in "*?["):
        images, videos = list_media(source)
        if not images and not videos and not any(os.path.isfile(p) for p in glob.glob(source)):
            raise UserError("glob %r given to %s matches no files; %s" % (source, flag, source_hint(flag)))
    else:
        raise UserError("%s given to %s does not exist; %s" % (source, flag, source_hint(flag)))
    units = [("image", p) for p in images]  # type: List[tuple]
    for v in videos:
        units += [("video", v, i) for i in range(video_frame_count(v, flag))]
    if not units:
        raise UserError("%s given to %s has no images or videos (%s %s); %s"
                        % (source, flag, " ".join(IMAGE_EXTS), " ".join(VIDEO_EXTS), source_hint(flag)))
    return units


def read_units(units: Sequence[tuple], flag: str, long_side: Optional[int] = None,
               tick: Callable[[], object] = lambda: None) -> list:
    """Decode units (images through ``preprocess.load_image`` and its pixel limit; each video read once,
    sequentially) -> [(name, RGB uint8 (H, W, 3))] in unit order, a video frame named ``path#index``; each frame
    shrunk to ``long_side`` pixels at most when given. ``tick()`` is called once per frame decoded."""
    import cv2
    import numpy as np
    from .preprocess import load_image

    def shrink(img):
        h, w = img.shape[:2]
        s = float(long_side) / max(h, w) if long_side else 1.0
        if s >= 1:
            return img
        return cv2.resize(img, (max(1, int(w * s + 0.5)), max(1, int(h * s + 0.5))), interpolation=cv2.INTER_AREA)

    out = [None] * len(units)  # type: list
    by_video = {}  # type: dict
    for pos, u in enumerate(units):
        if u[0] == "image":
            out[pos] = (u[1], shrink(load_image(u[1])))
            tick()
        else:
            by_video.setdefault(u[1], []).append((u[2], pos))
    for path, wanted in by_video.items():
        wanted = sorted(wanted)
        cap = cv2.VideoCapture(path)
        frame_no, k = 0, 0
        try:
            while k < len(wanted):
                if not cap.grab():
                    raise UserError("cannot read video %s given to %s: frame %d is unreadable; %s"
                                    % (path, flag, wanted[k][0], source_hint(flag)))
                while k < len(wanted) and wanted[k][0] == frame_no:
                    ok, bgr = cap.retrieve()
                    if not ok or bgr is None:
                        raise UserError("cannot read video %s given to %s: frame %d does not decode"
                                        % (path, flag, frame_no))
                    out[wanted[k][1]] = ("%s#%d" % (path, frame_no), shrink(np.ascontiguousarray(bgr[:, :, ::-1])))
                    k += 1
                    tick()
                frame_no += 1
        finally:
            cap.release()
    return out
