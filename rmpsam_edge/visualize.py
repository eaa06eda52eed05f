"""Overlays for masks, tracks and panoptic maps (OpenCV only, no torch, Python 3.8).

Every function takes an RGB uint8 image and returns a new RGB uint8 image (the input is not modified).
Colours are stable: a mask with an ``id`` (a track id, a panoptic segment id) always gets the same colour,
from a hash palette, so an object keeps its colour across the frames of a video.
"""
import colorsys
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from .preprocess import as_rgb

_GOLDEN = 0.618033988749895


def color_for(key: int) -> Tuple[int, int, int]:
    """A bright RGB colour for an integer key, the same on every run (hash palette: golden-ratio hue steps,
    so consecutive keys get far-apart hues; saturation/value from a multiplicative hash)."""
    k = int(key) & 0xFFFFFFFF
    h = (k * 2654435761) & 0xFFFFFFFF
    hue = (k * _GOLDEN + 0.05) % 1.0
    sat = 0.65 + 0.3 * (((h >> 8) & 0xFF) / 255.0)
    val = 0.8 + 0.2 * (((h >> 16) & 0xFF) / 255.0)
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return int(r * 255), int(g * 255), int(b * 255)


def _font_scale(shape) -> Tuple[float, int]:
    s = max(0.4, min(shape[0], shape[1]) / 900.0)
    return s, max(1, int(round(s * 2)))


def draw_text(img: np.ndarray, text: str, org: Tuple[int, int], color=(255, 255, 255),
              bg=(0, 0, 0), scale: Optional[float] = None) -> None:
    """Text with a filled background box, top-left corner at ``org`` (x, y), clipped into the image. In place."""
    fs, th = _font_scale(img.shape)
    if scale is not None:
        fs = scale
    (tw, tht), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fs, th)
    x = int(min(max(org[0], 0), max(img.shape[1] - tw - 4, 0)))
    y = int(min(max(org[1], 0), max(img.shape[0] - tht - base - 4, 0)))
    cv2.rectangle(img, (x, y), (x + tw + 4, y + tht + base + 4), tuple(int(c) for c in bg), -1)
    cv2.putText(img, text, (x + 2, y + tht + 2), cv2.FONT_HERSHEY_SIMPLEX, fs, tuple(int(c) for c in color), th,
                cv2.LINE_AA)


def draw_banner(img: np.ndarray, text: str, position: str = "top") -> None:
    """A dark strip across the top (or bottom) with ``text`` (e.g. "random weights"). In place."""
    if position not in ("top", "bottom"):
        raise ValueError("position must be 'top' or 'bottom', not %r" % (position,))
    fs, th = _font_scale(img.shape)
    (tw, tht), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fs, th)
    bar = min(img.shape[0], tht + base + 10)
    y0 = 0 if position == "top" else img.shape[0] - bar
    img[y0:y0 + bar] = (img[y0:y0 + bar].astype(np.float32) * 0.35).astype(np.uint8)
    cv2.putText(img, text, (6, y0 + tht + 4), cv2.FONT_HERSHEY_SIMPLEX, fs, (255, 220, 60), th, cv2.LINE_AA)


def banner(image_rgb, text: str, position: str = "top") -> np.ndarray:
    """A copy of the image with ``text`` on a dark strip at the top or bottom -> RGB uint8 (H, W, 3)."""
    img = as_rgb(image_rgb).copy()
    if text:
        draw_banner(img, text, position)
    return img


def _label_anchor(mask: np.ndarray) -> Tuple[int, int]:
    """A point well inside the mask (max of the distance transform, computed at <= 256 px), as (x, y)."""
    h, w = mask.shape
    f = min(1.0, 256.0 / max(h, w))
    small = mask.astype(np.uint8)
    if f < 1.0:
        small = cv2.resize(small, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_NEAREST)
    if not small.any():
        ys, xs = np.nonzero(mask)
        return int(xs[0]), int(ys[0])
    dist = cv2.distanceTransform(np.pad(small, 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(dist.argmax()), dist.shape)
    return int(x / f), int(y / f)


def overlay_masks(image_rgb, masks, labels: Optional[Sequence] = None, ids: Optional[Sequence[int]] = None,
                  boxes=None, points=None, banner: Optional[str] = None, alpha: float = 0.5,
                  contours: bool = True, color_keys: Optional[Sequence[int]] = None) -> np.ndarray:
    """Draw binary masks (N, H, W) over an RGB image (H, W, 3) -> RGB uint8 (H, W, 3).

    labels: N strings (or numbers) written inside each mask; ids: N integers that choose the colours, e.g.
    track ids, so an object keeps its colour across frames (default: the mask index), written as "#id" when
    no labels are given;
    boxes: (N, 4) (x1, y1, x2, y2) drawn in the mask colour; points: (P, 2) prompt clicks (drawn as markers);
    banner: one line drawn on a dark strip at the top (e.g. "random weights"); color_keys: N integers that
    choose the colours without being written (overrides ids for the colour). Later masks are drawn on top."""
    img = as_rgb(image_rgb).copy()
    H, W = img.shape[:2]
    m = np.asarray(masks, dtype=bool) if masks is not None else np.zeros((0, H, W), bool)
    if m.ndim == 2:
        m = m[None]
    if m.shape[1:] != (H, W):
        raise ValueError("masks of shape %s do not match the image %dx%d" % (m.shape, W, H))
    n = m.shape[0]
    keys = [int(i) for i in ids] if ids is not None else list(range(n))
    ckeys = [int(i) for i in color_keys] if color_keys is not None else keys
    colors = np.array([color_for(k) for k in ckeys] or [(0, 0, 0)], dtype=np.float32)
    if n:
        # the last mask covering a pixel wins: index map, then one blend
        top = np.full((H, W), -1, np.int32)
        for i in range(n):
            top[m[i]] = i
        cover = top >= 0
        blended = img[cover].astype(np.float32) * (1.0 - alpha) + colors[top[cover]] * alpha
        img[cover] = np.clip(blended, 0, 255).astype(np.uint8)
    _, th = _font_scale(img.shape)
    for i in range(n):
        col = tuple(int(c) for c in colors[i])
        if contours and m[i].any():
            res = cv2.findContours(m[i].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(img, res[-2], -1, col, th)
    if boxes is not None:
        for i, b in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)):
            col = tuple(int(c) for c in colors[i % len(colors)]) if n else (60, 220, 60)
            cv2.rectangle(img, (int(round(b[0])), int(round(b[1]))), (int(round(b[2])), int(round(b[3]))), col, th)
    for i in range(n):
        text = ""
        if labels is not None:
            text = "" if i >= len(labels) or labels[i] is None else str(labels[i])
        elif ids is not None:
            text = "#%d" % keys[i]
        if text and m[i].any():
            x, y = _label_anchor(m[i])
            draw_text(img, text, (x - 10, y - 8), bg=tuple(int(c * 0.5) for c in colors[i]))
    if points is not None:
        for x, y in np.asarray(points, dtype=np.float64).reshape(-1, 2):
            c = (int(round(x)), int(round(y)))
            r = max(4, th * 4)
            cv2.circle(img, c, r + th, (0, 0, 0), -1, cv2.LINE_AA)
            cv2.circle(img, c, r, (60, 255, 60), -1, cv2.LINE_AA)
    if banner:
        draw_banner(img, banner)
    return img


def panoptic_overlay(image_rgb, pan_seg, segments, class_names: Sequence[str], num_classes: int,
                     banner: Optional[str] = None, alpha: float = 0.55) -> np.ndarray:
    """Draw a panoptic map over an RGB image -> RGB uint8 (H, W, 3).

    pan_seg (H, W) int: ``label`` for stuff, ``label + 1000 * instance`` for things, ``num_classes`` for void
    (left undrawn); segments: the dicts from ``Predictor.panoptic`` / ``postprocess.panoptic_fusion``
    (``id``, ``label``, optional ``score``). Things get a colour per segment id, stuff a colour per class."""
    img = as_rgb(image_rgb).copy()
    pan = np.asarray(pan_seg)
    if pan.shape != img.shape[:2]:
        raise ValueError("pan_seg of shape %s does not match the image %s" % (pan.shape, img.shape[:2]))
    segs = [s for s in segments if int(s["id"]) != int(num_classes)]
    if segs:
        masks = np.stack([pan == int(s["id"]) for s in segs])
        labels = []
        for s in segs:
            lab = int(s["label"])
            name = class_names[lab] if lab < len(class_names) else "class_%d" % lab
            score = s.get("score")
            labels.append(name if score is None else "%s %.2f" % (name, float(score)))
        keys = [int(s["id"]) if s.get("isthing", True) else 100000 + int(s["label"]) for s in segs]
        img = overlay_masks(img, masks, labels=labels, alpha=alpha, color_keys=keys)
    if banner:
        draw_banner(img, banner)
    return img
