"""Image and prompt pre-processing shared by every backend (numpy + OpenCV, no torch, Python 3.8).

The official RMP-SAM eval pipeline (mmdet 3.x) is reproduced exactly:

1. the image is decoded as cv2 does (BGR, EXIF orientation applied) and turned into RGB uint8;
2. it is resized with ``cv2.resize(..., INTER_LINEAR)`` keeping its aspect ratio (``resize_shape``);
3. it is normalised ``(x - mean) / std`` with RGB mean/std on the 0-255 scale (from the ``ModelSpec``);
4. it is zero-padded at the bottom/right to multiples of 32 AFTER normalisation (padded pixels are 0).

Prompts are given in pixels of the ORIGINAL image: a point (x, y) or a box (x1, y1, x2, y2). They are scaled
to the resized image, a point becomes the 6-pixel box (x-3, y-3, x+3, y+3) there (as in the official code), and
all boxes are normalised by the resized, UN-padded size (``img_shape``) into (cx, cy, w, h) in [1e-5, 1-1e-5].
"""
import os
from typing import Optional, Tuple

import cv2
import numpy as np

from .errors import UserError, warn
from .image_header import DEFAULT_MAX_PIXELS, check_pixels

SIZE_DIVISOR = 32
OFFICIAL_SCALE = (1333, 800)  # mmdet Resize(scale=(1333, 800), keep_ratio=True): long side <= 1333, short <= 800
POINT_HALF_SIZE = 3.0  # a click (x, y) is the box (x-3, y-3, x+3, y+3) in resized pixels
BOX_EPS = 1e-5  # mmdet inverse_sigmoid eps
IMAGE_HINT = "give a JPEG/PNG/BMP/TIFF file"


class ImageMeta(object):
    """Geometry of one pre-processed image (all shapes are (height, width) in pixels).

    ori_shape: the image as given; img_shape: after the keep-ratio resize (un-padded);
    pad_shape: the network input, img_shape padded up to multiples of 32; scale: (sy, sx) =
    img_shape / ori_shape per axis (original pixel coordinates times scale = resized coordinates)."""

    __slots__ = ("ori_shape", "img_shape", "pad_shape", "scale")

    def __init__(self, ori_shape, img_shape, pad_shape, scale):
        self.ori_shape = (int(ori_shape[0]), int(ori_shape[1]))
        self.img_shape = (int(img_shape[0]), int(img_shape[1]))
        self.pad_shape = (int(pad_shape[0]), int(pad_shape[1]))
        self.scale = (float(scale[0]), float(scale[1]))

    @property
    def feat_shape(self) -> Tuple[int, int]:
        """(h, w) of the stride-4 feature map and of the low-resolution mask logits."""
        return self.pad_shape[0] // 4, self.pad_shape[1] // 4

    def to_dict(self) -> dict:
        return {"ori_shape": list(self.ori_shape), "img_shape": list(self.img_shape),
                "pad_shape": list(self.pad_shape), "scale": list(self.scale)}

    def __eq__(self, other):
        return isinstance(other, ImageMeta) and self.to_dict() == other.to_dict()

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return "ImageMeta(ori_shape=%s, img_shape=%s, pad_shape=%s, scale=(%.6g, %.6g))" % (
            self.ori_shape, self.img_shape, self.pad_shape, self.scale[0], self.scale[1])


# ---------------------------------------------------------------------------------------------------------------
# images
def load_image(path, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file -> RGB uint8 (H, W, 3).

    A header that declares ``max_pixels`` or more (default 8192x8192) is refused before decoding (a 2.6 MB PNG
    can declare 30000x30000 and take 12 GB to decode); ``max_pixels=None`` lifts the limit.

    Decoded like the official pipeline (cv2, EXIF orientation applied, alpha channel dropped); grayscale is
    replicated to 3 channels and 16-bit images are scaled to 8 bits (v / 257, rounded). Anything that cannot
    be read as an image raises ``UserError`` naming the file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise UserError("cannot read image %s: no such file; %s" % (path, IMAGE_HINT))
    if os.path.isdir(path):
        raise UserError("cannot read image %s: it is a directory; %s" % (path, IMAGE_HINT))
    try:
        data = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode also handles non-ASCII paths
    except (OSError, IOError) as exc:
        raise UserError("cannot read image %s: %s; %s" % (path, exc, IMAGE_HINT))
    if data.size == 0:
        raise UserError("cannot read image %s: the file is empty; %s" % (path, IMAGE_HINT))
    check_pixels(path, data[:65536].tobytes(), max_pixels)
    # ANYDEPTH keeps 16-bit data, ANYCOLOR keeps grayscale as one channel and (like the official IMREAD_COLOR)
    # drops alpha and applies the EXIF orientation, which IMREAD_UNCHANGED would not.
    try:
        img = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    except cv2.error as exc:  # some corrupt files make the decoder throw instead of returning None
        raise UserError("cannot read image %s: %s; %s" % (path, str(exc).strip().splitlines()[-1], IMAGE_HINT))
    if img is None:
        raise UserError("cannot read image %s: not an image OpenCV can decode; %s" % (path, IMAGE_HINT))
    try:
        return as_rgb(img, assume="bgr")
    except UserError as exc:
        raise UserError("cannot read image %s: %s; %s" % (path, exc, IMAGE_HINT))


def as_rgb(image, assume: str = "rgb") -> np.ndarray:
    """Validate an in-memory image and convert it to RGB uint8 (H, W, 3), C-contiguous.

    Accepts (H, W) or (H, W, 1) grayscale, (H, W, 3) colour and (H, W, 4) colour + alpha (alpha dropped);
    dtypes uint8, uint16 (scaled by 1/257), other integers within 0..255, bool, and floats within 0..1.
    ``assume`` is the channel order of 3/4-channel input: "rgb" (default) or "bgr" (OpenCV)."""
    if assume not in ("rgb", "bgr"):
        raise ValueError("assume must be 'rgb' or 'bgr', not %r" % (assume,))
    if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
        raise UserError("expected an image array, got a path %r; use load_image() for files" % (image,))
    arr = np.asarray(image)
    if arr.dtype == object or arr.ndim == 0:
        raise UserError("expected an image array (H, W, 3), got %s" % type(image).__name__)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] > 4:
        raise UserError("image of shape %s looks channels-first; give it as (H, W, 3) (e.g. x.transpose(1, 2, 0))"
                        % (arr.shape,))
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise UserError("image of shape %s is not (H, W), (H, W, 3) or (H, W, 4)" % (arr.shape,))
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise UserError("image of shape %s is empty" % (arr.shape,))
    arr = _to_uint8(arr)
    if arr.ndim == 2:
        return np.ascontiguousarray(np.repeat(arr[:, :, None], 3, axis=2))
    arr = arr[:, :, :3]
    if assume == "bgr":
        arr = arr[:, :, ::-1]
    return np.ascontiguousarray(arr)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return ((arr.astype(np.uint32) * 2 + 257) // 514).astype(np.uint8)  # round(v / 257): 65535 -> 255
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise UserError("image of dtype %s has values %d..%d; integer images must be within 0..255 "
                            "(or uint16)" % (arr.dtype, lo, hi))
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise UserError("image of dtype %s contains NaN or infinite values" % arr.dtype)
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise UserError("float image has values %.4g..%.4g; float images must be within 0..1 "
                            "(or give uint8 0..255)" % (lo, hi))
        return np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    raise UserError("image dtype %s is not supported; give uint8 RGB" % arr.dtype)


# ---------------------------------------------------------------------------------------------------------------
# resize / normalise / pad
def resize_shape(h: int, w: int, input_size: Optional[int] = None) -> Tuple[int, int]:
    """Resized (h_r, w_r) for an (h, w) image, keeping the aspect ratio.

    input_size None: the official rule, mmdet ``Resize(scale=(1333, 800), keep_ratio=True)``:
    s = min(1333 / long side, 800 / short side); int input_size S: s = S / long side (long side = S).
    New sizes are ``int(x * s + 0.5)`` (mmcv rounding), at least 1 pixel."""
    h, w = int(h), int(w)
    if h < 1 or w < 1:
        raise UserError("image size %dx%d is empty" % (w, h))
    if input_size is None:
        long_max, short_max = OFFICIAL_SCALE
        s = min(float(long_max) / max(h, w), float(short_max) / min(h, w))
    else:
        size = int(input_size)
        if size < SIZE_DIVISOR:
            raise UserError("input size %d is too small; use at least %d (e.g. 512)" % (size, SIZE_DIVISOR))
        s = float(size) / max(h, w)
    return max(1, int(h * s + 0.5)), max(1, int(w * s + 0.5))


def padded_shape(h: int, w: int, divisor: int = SIZE_DIVISOR) -> Tuple[int, int]:
    """(h, w) rounded up to multiples of ``divisor``."""
    return -(-int(h) // divisor) * divisor, -(-int(w) // divisor) * divisor


def normalize(img_rgb: np.ndarray, mean, std, out: Optional[np.ndarray] = None) -> np.ndarray:
    """RGB (H, W, 3) (uint8 or float, 0-255 scale) -> (3, H, W) float32 ``(x - mean) / std`` per channel.

    out: a (3, H2, W2) float32 array with H2 >= H and W2 >= W; the result is written into its top-left corner
    (the rest is left as it is, e.g. the zero padding of the network input) and ``out`` is returned."""
    h, w = img_rgb.shape[:2]
    if out is None:
        out = np.empty((3, h, w), dtype=np.float32)
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    for c in range(3):  # per channel, in place: same values as ((img - mean) / std).transpose, ~5x faster
        plane = out[c, :h, :w]
        np.subtract(img_rgb[:, :, c], mean[c], out=plane, dtype=np.float32)
        np.divide(plane, std[c], out=plane)
    return out


def preprocess(image_rgb, spec) -> Tuple[np.ndarray, ImageMeta]:
    """RGB image (H, W, 3) -> network input x (1, 3, H_pad, W_pad) float32 and its ``ImageMeta``.

    cv2 bilinear resize (``resize_shape(H, W, spec.input_size)``), then ``(x - spec.mean) / spec.std`` per RGB
    channel (0-255 scale), then zero padding at the bottom/right up to multiples of 32."""
    img = as_rgb(image_rgb)
    h, w = img.shape[:2]
    h_r, w_r = resize_shape(h, w, spec.input_size)
    if (h_r, w_r) != (h, w):
        img = cv2.resize(img, (w_r, h_r), interpolation=cv2.INTER_LINEAR)
    H, W = padded_shape(h_r, w_r)
    x = np.zeros((1, 3, H, W), dtype=np.float32)
    normalize(img, spec.mean, spec.std, out=x[0])
    meta = ImageMeta((h, w), (h_r, w_r), (H, W), (float(h_r) / h, float(w_r) / w))
    return x, meta


# ---------------------------------------------------------------------------------------------------------------
# prompts
def points_to_boxes(points) -> np.ndarray:
    """Points (N, 2) as (x, y) -> (N, 4) boxes (x-3, y-3, x+3, y+3), float32, same pixel frame as the input
    (the official click encoding: apply it to points already in RESIZED-image pixels)."""
    p = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    d = np.float32(POINT_HALF_SIZE)
    return np.concatenate([p - d, p + d], axis=1).astype(np.float32)


def normalize_boxes(boxes_xyxy, img_shape) -> np.ndarray:
    """Boxes (N, 4) (x1, y1, x2, y2) in pixels of the RESIZED, un-padded image -> (N, 4) float32 normalised
    (cx, cy, w, h), exactly as the official prompt encoding: divide by (w, h, w, h) of ``img_shape`` (not the
    padded size), convert to centre/size, then the inverse_sigmoid/sigmoid round trip of mmdet (eps 1e-5),
    i.e. clamp to [0, 1] and then to [1e-5, 1 - 1e-5] (up to float rounding)."""
    b = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    h, w = float(img_shape[0]), float(img_shape[1])
    b = b / np.asarray([w, h, w, h], dtype=np.float32)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    c = np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1).astype(np.float32)
    c = np.clip(c, 0.0, 1.0)
    eps = np.float32(BOX_EPS)
    logit = np.log(np.maximum(c, eps) / np.maximum(np.float32(1.0) - c, eps))
    return (np.float32(1.0) / (np.float32(1.0) + np.exp(-logit))).astype(np.float32)


def _as_prompt_array(values, width: int, what: str) -> np.ndarray:
    if values is None:
        return np.zeros((0, width), dtype=np.float64)
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError("%s must be numbers, got %r" % (what, values))
    if arr.size == 0:
        return np.zeros((0, width), dtype=np.float64)
    if arr.ndim == 1 and arr.shape[0] == width:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != width:
        raise UserError("%s must be a list of %d numbers each, got shape %s" % (what, width, arr.shape))
    if not np.all(np.isfinite(arr)):
        raise UserError("%s contain NaN or infinite values" % what)
    return arr


def _fmt(values) -> str:
    return "(" + ", ".join("%g" % v for v in values) + ")"


def check_prompts(points, boxes, ori_shape) -> Tuple[np.ndarray, np.ndarray]:
    """Validate prompts in ORIGINAL-image pixels -> (points (Np, 2), boxes (Nb, 4)) float64.

    No prompt -> UserError; a point outside the image -> UserError; a box with x2 <= x1 or y2 <= y1, or
    entirely outside the image -> UserError; a box partly outside -> clipped to the image + one warning."""
    H, W = int(ori_shape[0]), int(ori_shape[1])
    pts = _as_prompt_array(points, 2, "points")
    bxs = _as_prompt_array(boxes, 4, "boxes")
    if len(pts) + len(bxs) == 0:
        raise UserError("no prompt given: pass at least one point (x, y) or box (x1, y1, x2, y2) in image pixels")
    for x, y in pts:
        if not (0.0 <= x < W and 0.0 <= y < H):
            raise UserError("point %s is outside the image (%d x %d pixels): x must be in [0, %d), y in [0, %d)"
                            % (_fmt((x, y)), W, H, W, H))
    clipped = []
    out = bxs.copy()
    for i, b in enumerate(bxs):
        x1, y1, x2, y2 = b
        if x2 <= x1 or y2 <= y1:
            raise UserError("box %s is empty or inverted: give (x1, y1, x2, y2) with x2 > x1 and y2 > y1"
                            % _fmt(b))
        if x2 <= 0 or y2 <= 0 or x1 >= W or y1 >= H:
            raise UserError("box %s is entirely outside the image (%d x %d pixels)" % (_fmt(b), W, H))
        if x1 < 0 or y1 < 0 or x2 > W or y2 > H:
            out[i] = (max(x1, 0.0), max(y1, 0.0), min(x2, float(W)), min(y2, float(H)))
            clipped.append("%s -> %s" % (_fmt(b), _fmt(out[i])))
    if clipped:
        warn("%d box(es) partly outside the %d x %d image were clipped: %s"
             % (len(clipped), W, H, "; ".join(clipped)))
    return pts, out


def prompts_to_model(points, boxes, meta: ImageMeta) -> np.ndarray:
    """Points (Np, 2) (x, y) and boxes (Nb, 4) (x1, y1, x2, y2), both in ORIGINAL-image pixels (either may be
    None) -> (Np + Nb, 4) float32 normalised (cx, cy, w, h) for the prompt decoder. Order: all points first,
    then all boxes. Points become 6-pixel boxes in the resized image; see ``check_prompts`` for validation."""
    pts, bxs = check_prompts(points, boxes, meta.ori_shape)
    sy, sx = meta.scale
    parts = []
    if len(pts):
        parts.append(points_to_boxes(pts * np.asarray([sx, sy])))
    if len(bxs):
        parts.append((bxs * np.asarray([sx, sy, sx, sy])).astype(np.float32))
    return normalize_boxes(np.concatenate(parts, axis=0), meta.img_shape)


def denormalize_boxes(boxes_cxcywh, meta: ImageMeta) -> np.ndarray:
    """Inverse of the mapping above for display: normalised (cx, cy, w, h) -> (x1, y1, x2, y2) in
    ORIGINAL-image pixels (float32)."""
    c = np.asarray(boxes_cxcywh, dtype=np.float64).reshape(-1, 4)
    h_r, w_r = meta.img_shape
    sy, sx = meta.scale
    x1 = (c[:, 0] - c[:, 2] / 2) * w_r / sx
    x2 = (c[:, 0] + c[:, 2] / 2) * w_r / sx
    y1 = (c[:, 1] - c[:, 3] / 2) * h_r / sy
    y2 = (c[:, 1] + c[:, 3] / 2) * h_r / sy
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)


__all__ = ["ImageMeta", "load_image", "as_rgb", "resize_shape", "padded_shape", "preprocess", "points_to_boxes",
           "normalize_boxes", "check_prompts", "prompts_to_model", "denormalize_boxes"]
