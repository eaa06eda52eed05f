"""INT8 entropy calibration of the encoder (TensorRT 8.6 / 10.x), with a keyed cache: the file is named after
sha256(graph sha256 + data fingerprint), so new data or a new graph never reads a stale one. Frames go through
``rmpsam_edge.preprocess``, fitted into the profile's opt shape."""
import hashlib
import os
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from rmpsam_edge.errors import UserError
from rmpsam_edge.media import IMAGE_EXTS, is_video, list_media
from rmpsam_edge.preprocess import preprocess
from rmpsam_edge.spec import ModelSpec

from .profiles import ALIGN


def list_calibration_files(source: str) -> List[str]:
    """Folder -> its images (sorted); glob -> its images and videos; a single image or video -> itself."""
    if os.path.isfile(source):
        files = [source]
    elif os.path.isdir(source) or any(c in source for c in "*?["):
        images, videos = list_media(source)
        files = images if os.path.isdir(source) else sorted(images + videos)
    else:
        raise UserError("--calib %s: no such folder, file or glob" % source)
    if not files:
        raise UserError("--calib %s: no images found (%s)" % (source, ", ".join(IMAGE_EXTS)))
    return files


def data_fingerprint(files: Sequence[str], count: int, shape: Sequence[int], extra: str = "") -> str:
    """sha256 over the files' contents (in order), the image count, the calibration shape and ``extra``."""
    h = hashlib.sha256()
    for path in files:
        h.update(os.path.basename(path).encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    h.update(("|%d|%s|%s" % (count, list(shape), extra)).encode())
    return h.hexdigest()


def cache_path(engine_dir: str, onnx_sha256: str, fingerprint: str) -> Tuple[str, str]:
    """-> (calibration cache path, calibration key). The key goes into the engine sidecar too."""
    key = hashlib.sha256((onnx_sha256 + fingerprint).encode()).hexdigest()
    return os.path.join(engine_dir, "calib-%s.cache" % key[:16]), key


def _fit(rgb: np.ndarray, hw: Tuple[int, int], mean, std) -> np.ndarray:
    """rmpsam_edge.preprocess with the long side chosen so the frame fits (H, W), zero-padded (bottom/right)
    to exactly (1, 3, H, W); padding past (H, W) is cropped."""
    h, w = rgb.shape[:2]
    s = min(hw[0] / float(h), hw[1] / float(w))
    x, _ = preprocess(rgb, ModelSpec("r18", max(ALIGN, int(max(h, w) * s)), mean, std))
    x = x[..., :hw[0], :hw[1]]
    out = np.zeros((1, 3) + tuple(hw), np.float32)
    out[..., :x.shape[-2], :x.shape[-1]] = x
    return out


def images_from_paths(files: Sequence[str], hw: Tuple[int, int], mean, std, count: int) -> Iterator[np.ndarray]:
    """Up to ``count`` calibration inputs (1, 3, H, W): the images, and frames spread over any video."""
    import cv2
    done = 0
    for path in files:
        if done >= count:
            return
        if is_video(path):
            cap = cv2.VideoCapture(path)
            total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            step = max(1, total // max(1, count - done)) if total else 1
            idx = 0
            while done < count:
                ok, frame = cap.read()
                if not ok:
                    break
                if idx % step == 0:
                    done += 1
                    yield _fit(frame[:, :, ::-1], hw, mean, std)
                idx += 1
            cap.release()
            continue
        frame = cv2.imread(path, cv2.IMREAD_COLOR)
        if frame is None:
            raise UserError("--calib: cannot read image %s" % path)
        done += 1
        yield _fit(frame[:, :, ::-1], hw, mean, std)


def make_calibrator(trt, cuda, batches: Iterable[np.ndarray], shape: Sequence[int], cache_file: str,
                    limit: Optional[int] = None):
    """An ``IInt8EntropyCalibrator2`` feeding ``batches`` one at a time at ``shape`` (1, 3, H, W). ``get_batch``
    never raises into TensorRT: a problem is kept in ``.error`` (re-raised by the builder); ``.used`` counts."""
    shape = tuple(int(d) for d in shape)

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = iter(batches)
            self.cache_file = cache_file
            self.used = 0
            self.cache_read = False
            self.error = None  # type: Optional[BaseException]
            self.device = cuda.mem_alloc(int(np.prod(shape)) * 4)

        def get_batch_size(self):
            return shape[0]  # explicit batch: the batch axis of the calibration profile

        def get_batch(self, names):
            if self.error is not None or (limit is not None and self.used >= limit):
                return None
            try:
                arr = next(self.batches, None)
                if arr is None:
                    return None
                arr = np.asarray(arr, dtype=np.float32)
                if arr.ndim == 3:
                    arr = arr[None]
                if tuple(arr.shape) != shape:
                    raise UserError("calibration image %d has shape %s, expected %s (the profile's opt shape)"
                                    % (self.used, list(arr.shape), list(shape)))
                cuda.memcpy_htod(self.device, np.ascontiguousarray(arr))
                self.used += 1
                return [int(self.device)]
            except BaseException as exc:  # noqa: B902 - never let an exception cross into TensorRT
                self.error = exc
                return None

        def read_calibration_cache(self):
            if self.cache_file and os.path.isfile(self.cache_file):
                with open(self.cache_file, "rb") as f:
                    self.cache_read = True
                    return f.read()
            return None

        def write_calibration_cache(self, cache):
            if self.cache_file:
                os.makedirs(os.path.dirname(self.cache_file) or ".", exist_ok=True)
                with open(self.cache_file, "wb") as f:
                    f.write(bytes(cache))

        def free(self):
            if self.device is not None:
                self.device.free()
                self.device = None

    return EntropyCalibrator()
