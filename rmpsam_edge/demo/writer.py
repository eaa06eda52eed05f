"""Demo outputs: the annotated video (MJPG .avi or mp4v .mp4) and per-frame JSON Lines (one object per frame:
segments with RLE masks, boxes, ids, labels, scores). Both are flushed frame by frame, so a run that stops early
(Ctrl-C, a stream that drops) keeps everything written so far. Existing files are never overwritten without
``force``; default names are numbered instead. Python 3.8, numpy + OpenCV.
"""
import json
import os
from typing import Optional, Tuple

import cv2
import numpy as np

from rmpsam_edge.atomic import disk_error
from rmpsam_edge.errors import UserError

FOURCC = {".avi": "MJPG", ".mp4": "mp4v", ".mkv": "MJPG"}
DEFAULT_DIR = os.path.join("runs", "demo")


def output_paths(out: Optional[str], source_name: str, mode: str, force: bool = False) -> Tuple[str, str]:
    """(video_path, jsonl_path). ``out`` given: it must end in .avi/.mp4/.mkv and, with its .jsonl, not exist
    (unless force). ``out`` None: runs/demo/<source>_<mode>.avi, numbered _2, _3 ... when taken."""
    if out:
        root, ext = os.path.splitext(out)
        if ext.lower() not in FOURCC:
            raise UserError("--out %s: use a .avi (MJPG), .mp4 (mp4v) or .mkv file name" % out)
        jsonl = root + ".jsonl"
        for path in (out, jsonl):
            if os.path.exists(path) and not force:
                raise UserError("%s exists; pass --force to overwrite it or choose another --out" % path)
        parent = os.path.dirname(os.path.abspath(out))
        if not os.path.isdir(parent):
            raise UserError("--out %s: folder %s does not exist" % (out, parent))
        return out, jsonl
    base = os.path.basename(os.path.normpath(str(source_name))) or "source"
    base = os.path.splitext(base)[0]
    base = "".join(c if (c.isalnum() or c in "-_") else "_" for c in base).strip("_") or "source"
    os.makedirs(DEFAULT_DIR, exist_ok=True)
    n = 1
    while True:
        stem = os.path.join(DEFAULT_DIR, "%s_%s%s" % (base, mode, "" if n == 1 else "_%d" % n))
        if not os.path.exists(stem + ".avi") and not os.path.exists(stem + ".jsonl"):
            return stem + ".avi", stem + ".jsonl"
        n += 1


class VideoOut(object):
    """cv2.VideoWriter opened on the first frame (its size is not known before). ``write(frame_bgr)``."""

    def __init__(self, path: str, fps: float):
        self.path = path
        self.fps = float(fps) if fps and fps > 0 else 10.0
        self._writer = None
        self.frames = 0
        self.size = None  # type: Optional[Tuple[int, int]]

    def write(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        if self._writer is None:
            ext = os.path.splitext(self.path)[1].lower()
            fourcc = cv2.VideoWriter_fourcc(*FOURCC.get(ext, "MJPG"))
            self._writer = cv2.VideoWriter(self.path, fourcc, self.fps, (w, h))
            if not self._writer.isOpened():
                self._writer = None
                raise UserError("cannot write video %s (codec %s unavailable in this OpenCV); try a .avi name"
                                % (self.path, FOURCC.get(ext, "MJPG")))
            self.size = (w, h)
        if (w, h) != self.size:  # image folders with mixed sizes: fit into the first frame's size
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        try:
            self._writer.write(np.ascontiguousarray(frame))
        except OSError as exc:  # OpenCV reports most write failures only as a warning; some backends raise
            raise disk_error(self.path, exc)
        self.frames += 1

    def close(self) -> None:
        """Release the writer, then check the file holds every frame written: OpenCV only warns when a frame
        cannot be written (a full disk, a lost mount), so the count is read back from the file."""
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        cap = cv2.VideoCapture(self.path)
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
        cap.release()
        if n < self.frames:
            raise UserError("only %d of %d frames reached %s (disk full or not writable?); free space or choose "
                            "another --out" % (n, self.frames, self.path))


class JsonlOut(object):
    """One JSON object per line, flushed after each frame; a first line ``{"header": {...}}`` describes the
    run (model, backend, mode, weights note)."""

    def __init__(self, path: str, header: dict):
        self.path = path
        try:
            self._f = open(path, "w")
        except OSError as exc:
            raise disk_error(path, exc)
        self.frames = 0
        self._good = 0  # bytes of complete lines on disk
        self._write({"header": header})

    def _write(self, obj: dict) -> None:
        """Append one line; on a disk error (ENOSPC, EROFS...) cut the file back to its last complete line,
        so what was written stays valid JSON Lines, and raise one line naming the path."""
        if self._f is None:
            return
        try:
            self._f.write(json.dumps(obj, separators=(",", ":")) + "\n")
            self._f.flush()
            self._good = self._f.tell()
        except OSError as exc:
            self._abandon()
            raise disk_error(self.path, exc)

    def _abandon(self) -> None:
        f, self._f = self._f, None
        try:
            f.close()
        except OSError:
            pass  # the buffered tail could not be flushed either
        try:
            os.truncate(self.path, self._good)
        except OSError:
            pass

    def write(self, record: dict) -> None:
        self._write(record)
        self.frames += 1

    def write_summary(self, summary: dict) -> None:
        """The last line: ``{"summary": {...}}`` (frames, FPS, per-stage ms, dropped frames)."""
        self._write({"summary": summary})

    def close(self) -> None:
        if self._f is not None:
            try:
                self._f.close()
            except OSError as exc:
                self._f = None
                os.truncate(self.path, self._good)
                raise disk_error(self.path, exc)
            self._f = None
