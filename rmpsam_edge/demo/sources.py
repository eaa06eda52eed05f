"""Frame sources for the demo: camera index, video file, image glob / folder / single image, RTSP/HTTP URL,
Jetson CSI camera (``csi://N`` -> nvarguscamerasrc GStreamer pipeline).

``open_source(text) -> Source``. A Source yields BGR uint8 frames (H,W,3) from ``read()`` (None at the end),
says whether it is ``live`` (camera/stream: frames may be dropped to stay real-time) and, for finite sources,
how many frames it has. Problems opening a source raise ``UserError`` with one line naming the fix.
Python 3.8, numpy + OpenCV only.
"""
import contextlib
import os
import re
import sys
import time
from typing import List, Optional

import cv2
import numpy as np

from rmpsam_edge.errors import UserError, warn
from rmpsam_edge.image_header import DEFAULT_MAX_PIXELS, check_pixels
from rmpsam_edge.media import IMAGE_EXTS, asset_path, is_image as _is_image, list_media

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
CSI_RE = re.compile(r"^csi://(\d+)(?:\?(.*))?$")


def default_source() -> str:
    """The shipped street clip: what the demo runs when no --source is given."""
    return asset_path("video", "vtest_clip.avi")


@contextlib.contextmanager
def quiet_opencv():
    """Silence OpenCV's own WARN/ERROR lines (e.g. "can't open camera by index") while probing a source:
    the demo reports the problem itself in one line."""
    log = getattr(getattr(cv2, "utils", None), "logging", None)  # OpenCV >= 4.12 / 5
    if log is not None:
        get, set_, level = log.getLogLevel, log.setLogLevel, log.LOG_LEVEL_FATAL
    elif hasattr(cv2, "setLogLevel") and hasattr(cv2, "getLogLevel"):  # older wheels
        get, set_, level = cv2.getLogLevel, cv2.setLogLevel, 1  # 1 = LOG_LEVEL_FATAL
    else:
        yield
        return
    old = get()
    set_(level)
    try:
        yield
    finally:
        set_(old)


def has_gstreamer() -> bool:
    """True when this OpenCV build can open GStreamer pipelines (``GStreamer: YES`` in the build info)."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line.split(":", 1)[1].upper()
    return False


def csi_pipeline(sensor_id: int, width: int = 1280, height: int = 720, fps: int = 30, flip: int = 0) -> str:
    """The nvarguscamerasrc -> appsink pipeline for a Jetson CSI camera (BGR frames, latest frame only)."""
    return ("nvarguscamerasrc sensor-id=%d ! video/x-raw(memory:NVMM), width=(int)%d, height=(int)%d, "
            "framerate=(fraction)%d/1 ! nvvidconv flip-method=%d ! video/x-raw, format=(string)BGRx ! "
            "videoconvert ! video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1 sync=false"
            % (sensor_id, width, height, fps, flip))


class Source(object):
    """Base class. ``read() -> frame or None``; ``live``; ``name``; ``fps`` (None if unknown);
    ``frame_count`` (None for live / unknown); ``ended_early`` (a message) is set when a stream stopped early."""

    live = False
    fps = None  # type: Optional[float]
    frame_count = None  # type: Optional[int]

    def __init__(self, name: str):
        self.name = name
        self.ended_early = None  # type: Optional[str]

    def read(self) -> Optional[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class CaptureSource(Source):
    """A cv2.VideoCapture (camera, file, URL, GStreamer pipeline). The first frame is read at open time so a
    source that opens but yields nothing is reported immediately. A read failure before the known frame
    count marks ``ended_early``: the run stops and keeps its output. A live source (camera, stream) that drops
    is reopened with ``reopen()`` up to ``retries`` times, waiting ``backoff`` s, doubling up to 8 s (one line
    per attempt through ``log``); frames flow again when it is back, ``ended_early`` says so after the last
    retry. A stop signal (``rmpsam_edge.signals``) ends the waiting at once. Files are never retried."""

    def __init__(self, cap, name: str, live: bool, reopen=None, retries: int = 5, backoff: float = 0.5,
                 log=None):
        Source.__init__(self, name)
        self.cap = cap
        self.live = live
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 and fps < 1000 else None
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = n if (n > 0 and not live) else None
        ok, frame = cap.read()
        self._first = frame if ok and frame is not None and frame.size else None
        self._count = 0
        self.reopen = reopen if live else None
        self.retries = max(0, int(retries))
        self.backoff = float(backoff)
        self.reconnects = 0
        self._log = log or (lambda line: (sys.stderr.write(line + "\n"), sys.stderr.flush()))

    def _grab(self) -> Optional[np.ndarray]:
        if self.cap is None:
            return None
        ok, frame = self.cap.read()
        return frame if ok and frame is not None and frame.size else None

    def read(self) -> Optional[np.ndarray]:
        if self._first is not None:
            frame, self._first = self._first, None
            self._count += 1
            return frame
        if self.cap is None:
            return None
        frame = self._grab()
        if frame is None and self.reopen is not None:
            frame = self._reconnect()
        if frame is None:
            if self.live and not self.ended_early:
                self.ended_early = "stream %s stopped after %d frames" % (self.name, self._count)
            elif self.frame_count is not None and self._count < self.frame_count - max(2, self.frame_count // 50):
                # Container frame counts can be estimates (a few frames off); far short = truncated/broken.
                self.ended_early = "%s ended after %d of %d frames" % (self.name, self._count, self.frame_count)
            return None
        self._count += 1
        return frame

    def _reconnect(self) -> Optional[np.ndarray]:
        from rmpsam_edge.signals import stop_requested
        delay = self.backoff
        for attempt in range(1, self.retries + 1):
            self._log("demo: %s dropped after %d frames; reconnecting in %.1f s (attempt %d of %d)"
                      % (self.name, self._count, delay, attempt, self.retries))
            t_end = time.monotonic() + delay
            while time.monotonic() < t_end:
                if stop_requested() is not None or self.cap is None:
                    return None
                time.sleep(min(0.05, max(0.0, t_end - time.monotonic())))
            if self.cap is not None:
                self.cap.release()
            with quiet_opencv():
                try:
                    cap = self.reopen()
                except cv2.error:
                    cap = None
            if cap is not None and cap.isOpened():
                self.cap = cap
                frame = self._grab()
                if frame is not None:
                    self.reconnects += 1
                    self._log("demo: %s is back (attempt %d)" % (self.name, attempt))
                    return frame
            delay = min(delay * 2.0, 8.0)
        self.cap = None
        self.ended_early = ("stream %s lost after %d frames; %d reconnect attempts failed"
                            % (self.name, self._count, self.retries))
        self._log("demo: " + self.ended_early + "; finishing the outputs")
        return None

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class ImageListSource(Source):
    """Images read one by one (sorted). An unreadable file in the list is skipped with a warning."""

    def __init__(self, paths: List[str], name: str, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS):
        Source.__init__(self, name)
        self.paths = list(paths)
        self.max_pixels = max_pixels
        self.frame_count = len(self.paths)
        self.skipped = []  # type: List[str]
        self._i = 0

    def read(self) -> Optional[np.ndarray]:
        while self._i < len(self.paths):
            path = self.paths[self._i]
            self._i += 1
            try:  # a header over the pixel limit (decompression bomb) is skipped before decoding
                with open(path, "rb") as f:
                    check_pixels(path, f.read(65536), self.max_pixels)
            except (OSError, UserError) as exc:
                warn("skipped %s: %s" % (path, exc))
                self.skipped.append(path)
                continue
            frame = cv2.imread(path, cv2.IMREAD_COLOR)
            if frame is not None and frame.size:
                return frame
            self.skipped.append(path)
        return None


def _open_capture(target, name: str, live: bool, api=None, retries: int = 5) -> CaptureSource:
    def reopen():
        return cv2.VideoCapture(target) if api is None else cv2.VideoCapture(target, api)

    with quiet_opencv():
        cap = reopen()
        opened = cap.isOpened()
        src = CaptureSource(cap, name, live, reopen=reopen, retries=retries) if opened else None
    if src is None or src._first is None:
        if src is not None:
            src.close()
        return None
    return src


def open_camera(index: int, retries: int = 5) -> Source:
    src = _open_capture(index, "camera %d" % index, live=True, retries=retries)
    if src is None:
        hint = "" if os.path.exists("/dev/video%d" % index) else " (no /dev/video%d on this machine)" % index
        raise UserError("camera %d could not be opened%s; check the cable/permissions or use "
                        "--source <video file | image folder | rtsp://...>" % (index, hint))
    return src


def open_csi(text: str, retries: int = 5) -> Source:
    m = CSI_RE.match(text)
    if not m:
        raise UserError("bad CSI source %r; use csi://N, e.g. csi://0 or csi://0?width=1920&height=1080&fps=30"
                        % text)
    sensor = int(m.group(1))
    opts = {"width": 1280, "height": 720, "fps": 30, "flip": 0}
    for part in (m.group(2) or "").split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        if key not in opts or not value.isdigit():
            raise UserError("bad CSI option %r in %r; allowed: width, height, fps, flip (integers)" % (part, text))
        opts[key] = int(value)
    if not has_gstreamer():
        from rmpsam_edge.runtime.platform_facts import OPENCV_RESTORE
        raise UserError("%s needs OpenCV built with GStreamer, and this OpenCV (%s) has GStreamer: NO; on a "
                        "Jetson restore JetPack's: %s; or use --source 0 for a USB camera"
                        % (text, cv2.__version__, OPENCV_RESTORE))
    pipe = csi_pipeline(sensor, opts["width"], opts["height"], opts["fps"], opts["flip"])
    src = _open_capture(pipe, text, live=True, api=cv2.CAP_GSTREAMER, retries=retries)
    if src is None:
        raise UserError("CSI camera %d did not start (GStreamer pipeline: %s); check `nvgstcapture-1.0` and "
                        "that no other process holds the camera" % (sensor, pipe))
    return src


def open_stream(url: str, retries: int = 5) -> Source:
    src = _open_capture(url, url, live=not url.startswith("file://"), retries=retries)
    if src is None:
        raise UserError("stream %s could not be opened (no frame received); check the URL, the network and "
                        "that this OpenCV has FFMPEG" % url)
    return src


def open_glob(pattern: str, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> Source:
    paths = list_media(pattern)[0]
    if not paths:
        raise UserError("no images match %r (extensions %s); check the pattern and quote it so the shell "
                        "does not expand it" % (pattern, ", ".join(IMAGE_EXTS)))
    return ImageListSource(paths, pattern, max_pixels)


def open_folder(folder: str, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> Source:
    paths = list_media(folder)[0]
    if not paths:
        raise UserError("folder %s has no images (%s); give a video file or an image glob instead"
                        % (folder, ", ".join(IMAGE_EXTS)))
    return ImageListSource(paths, folder, max_pixels)


def open_video(path: str) -> Source:
    src = _open_capture(path, path, live=False)
    if src is None:
        raise UserError("%s is not a readable video (OpenCV/FFMPEG could not decode a frame); give a video "
                        "file, an image, a folder, a glob or a camera index" % path)
    return src


def open_source(text: str, retries: int = 5, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> Source:
    """Open a ``--source``: '0' (camera index), 'csi://0', 'rtsp://...' / 'http://...' / 'file://...',
    'frames/*.jpg' (glob), a folder of images, an image file or a video file. ``retries``: reconnect attempts
    of a live source that drops (files are not retried). ``max_pixels``: images over it are refused from their
    header, video/camera frames from the size the capture reports (None: no limit)."""
    text = str(text).strip()
    if not text:
        raise UserError("empty --source; give a camera index, a video, an image folder/glob or a URL")
    if text.isdigit():
        return open_camera(int(text), retries)
    if text.startswith("csi://"):
        return open_csi(text, retries)
    if text.lower().startswith(STREAM_SCHEMES + ("file://",)):
        return open_stream(text, retries)
    if any(c in text for c in "*?["):
        return open_glob(text, max_pixels)
    if os.path.isdir(text):
        return open_folder(text, max_pixels)
    if not os.path.exists(text):
        raise UserError("source %s does not exist; give a camera index, a video, an image folder/glob or a URL"
                        % text)
    if _is_image(text):
        with open(text, "rb") as f:
            check_pixels(text, f.read(65536), max_pixels)  # refuse a decompression bomb before decoding it
        if cv2.imread(text, cv2.IMREAD_COLOR) is None:
            raise UserError("%s is not a readable image" % text)
        return ImageListSource([text], text, max_pixels)
    return _frame_size_checked(open_video(text), max_pixels)


def _frame_size_checked(src: Source, max_pixels: Optional[int]) -> Source:
    """Refuse a video whose frames (as the capture reports them) reach ``max_pixels``."""
    cap = getattr(src, "cap", None)
    if max_pixels and cap is not None:
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        if w * h >= max_pixels:
            src.close()
            raise UserError("%s has %dx%d frames (%d pixels), over the limit of %d; pass --max-pixels N to "
                            "allow it (0 = no limit)" % (src.name, w, h, w * h, max_pixels))
    return src
