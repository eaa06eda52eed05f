"""Synthetic scenes for the demo weights: real photos as backgrounds, textured shapes as objects (numpy + OpenCV).

No torch here, so calibration / fidelity code can reuse the scenes. Everything is deterministic by seed.

A scene (``Scene``) is a dict-like record:
    image   (H, W, 3) uint8 RGB
    masks   (N, H, W) bool, visible pixels of each segment (disjoint; things occlude stuff and each other)
    classes (N,) int64, index into CLASS_NAMES (the first NUM_THINGS are things, the rest stuff)
    ids     (N,) int64, instance id, stable over the frames of a clip (stuff: 1000 + class)
A clip is a list of scenes whose things move, rotate and occlude each other; ``ids`` give the tracks.

Photos: the shipped sample images plus the photos that scikit-image ships (read from its data folder if it
is installed; never downloaded). The ``eval`` split uses photos that the ``train`` split never sees, both as
backgrounds and as object textures.
"""
import os
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from rmpsam_edge.media import asset_path

THING_NAMES = ["ellipse", "rectangle", "triangle", "star", "ring"]
STUFF_NAMES = ["band", "ground"]
CLASS_NAMES = THING_NAMES + STUFF_NAMES
NUM_THINGS = len(THING_NAMES)
STUFF_ID_BASE = 1000

_ASSETS = asset_path("images")
TRAIN_PHOTOS = ["asset:astronaut.jpg", "asset:coffee.jpg", "asset:chelsea.jpg", "skimage:brick.png",
                "skimage:grass.png", "skimage:ihc.png", "skimage:hubble_deep_field.jpg",
                "skimage:motorcycle_left.png", "skimage:color.png", "skimage:camera.png", "skimage:coins.png",
                "skimage:page.png", "skimage:moon.png"]
EVAL_PHOTOS = ["asset:rocket.jpg", "skimage:gravel.png", "skimage:retina.jpg"]
_LOCAL = 128  # canonical canvas of one object (pixels)


def _skimage_dir() -> Optional[str]:
    try:
        import importlib.util
        spec = importlib.util.find_spec("skimage")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    d = os.path.join(list(spec.submodule_search_locations)[0], "data")
    return d if os.path.isdir(d) else None


def _read_photo(name: str, max_side: int = 512) -> Optional[np.ndarray]:
    kind, fname = name.split(":", 1)
    folder = _ASSETS if kind == "asset" else _skimage_dir()
    if folder is None:
        return None
    path = os.path.join(folder, fname)
    if not os.path.isfile(path):
        return None
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        return None
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    s = max_side / float(max(img.shape[:2]))
    if s < 1:
        img = cv2.resize(img, (int(round(img.shape[1] * s)), int(round(img.shape[0] * s))),
                         interpolation=cv2.INTER_AREA)
    return img


def load_photos(split: str = "train") -> List[np.ndarray]:
    """RGB uint8 photos of a split ('train' or 'eval'); the shipped sample images are always there."""
    if split not in ("train", "eval"):
        raise ValueError("split must be 'train' or 'eval'")
    names = TRAIN_PHOTOS if split == "train" else EVAL_PHOTOS
    photos = [p for p in (_read_photo(n) for n in names) if p is not None]
    if not photos:
        raise RuntimeError("no background photos found in %s" % _ASSETS)
    return photos


# ----------------------------------------------------------------------------------------- drawing helpers
def _crop(rng: np.random.Generator, photo: np.ndarray, h: int, w: int, zoom=(0.3, 1.0)) -> np.ndarray:
    ph, pw = photo.shape[:2]
    frac = rng.uniform(*zoom)
    ch = max(8, int(min(ph, pw * h / float(w)) * frac))
    cw = max(8, int(ch * w / float(h)))
    cw = min(cw, pw)
    ch = min(ch, ph)
    y = int(rng.integers(0, ph - ch + 1))
    x = int(rng.integers(0, pw - cw + 1))
    out = cv2.resize(photo[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def _jitter_colour(rng: np.random.Generator, img: np.ndarray, strength: float = 1.0) -> np.ndarray:
    f = img.astype(np.float32)
    gain = rng.uniform(1 - 0.4 * strength, 1 + 0.4 * strength, size=3)
    bias = rng.uniform(-40 * strength, 40 * strength, size=3)
    contrast = rng.uniform(1 - 0.3 * strength, 1 + 0.3 * strength)
    mean = f.mean()
    f = (f - mean) * contrast + mean
    return np.clip(f * gain + bias, 0, 255).astype(np.uint8)


def _class_colour(rng: np.random.Generator, cls: int) -> np.ndarray:
    """A colour of the class's hue family (hue 360 * cls / NUM_THINGS +- 15 degrees), varied saturation and
    brightness: like real object classes, each shape kind has a typical (not unique) appearance."""
    hue = (180.0 * cls / NUM_THINGS + rng.uniform(-7.5, 7.5)) % 180  # OpenCV hue range 0..180
    hsv = np.array([[[hue, rng.uniform(140, 255), rng.uniform(110, 255)]]], np.float32).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _texture(rng: np.random.Generator, photos: Sequence[np.ndarray], size: int, cls: Optional[int] = None
             ) -> np.ndarray:
    """A patch cut from a photo, tinted towards a colour (of the class's hue family for things, random for
    stuff) so objects differ from the background."""
    tex = _crop(rng, photos[int(rng.integers(len(photos)))], size, size, zoom=(0.1, 0.6))
    tex = _jitter_colour(rng, tex, 1.0).astype(np.float32)
    colour = rng.uniform(0, 255, size=3).astype(np.float32) if cls is None else _class_colour(rng, cls)
    a = rng.uniform(0.25, 0.8)
    return np.clip(a * colour + (1 - a) * tex, 0, 255).astype(np.uint8)


def _star(rng, c, r):
    k = int(rng.integers(4, 8))
    inner = rng.uniform(0.35, 0.6)
    ang = np.arange(2 * k) * np.pi / k
    rad = np.where(np.arange(2 * k) % 2 == 0, r, r * inner)
    return np.stack([c + rad * np.cos(ang), c + rad * np.sin(ang)], 1)


def _shape_mask(rng: np.random.Generator, cls: int) -> np.ndarray:
    """Canonical mask (LOCAL, LOCAL) uint8 of a thing class, centred, radius ~ 0.45 * LOCAL."""
    m = np.zeros((_LOCAL, _LOCAL), np.uint8)
    c = _LOCAL / 2.0
    r = _LOCAL * 0.45
    name = THING_NAMES[cls]
    if name == "ellipse":
        cv2.ellipse(m, (int(c), int(c)), (int(r), int(r * rng.uniform(0.45, 1.0))), 0, 0, 360, 1, -1)
    elif name == "rectangle":
        a = rng.uniform(0.4, 1.0)
        pts = np.array([[-1, -a], [1, -a], [1, a], [-1, a]]) * r * 0.95 + c
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
    elif name == "triangle":
        ang = np.array([-np.pi / 2, np.pi / 6, 5 * np.pi / 6]) + rng.uniform(-0.3, 0.3, 3)
        pts = np.stack([c + r * np.cos(ang), c + r * np.sin(ang) * rng.uniform(0.7, 1.0)], 1)
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
    elif name == "star":
        cv2.fillPoly(m, [np.round(_star(rng, c, r)).astype(np.int32)], 1)
    elif name == "ring":
        ry = r * rng.uniform(0.7, 1.0)
        cv2.ellipse(m, (int(c), int(c)), (int(r), int(ry)), 0, 0, 360, 1, -1)
        t = rng.uniform(0.45, 0.65)
        cv2.ellipse(m, (int(c), int(c)), (int(r * t), int(ry * t)), 0, 0, 360, 0, -1)
    return m


def _stuff_mask(rng_params: Dict, h: int, w: int, shift: float) -> np.ndarray:
    """Wavy horizontal band, or 'ground' (everything below a wavy line). ``shift`` moves the wave (clips)."""
    xs = np.arange(w, dtype=np.float32)
    p = rng_params
    wave = p["y0"] * h + p["amp"] * h * np.sin(2 * np.pi * (xs / w * p["freq"] + p["phase"] + shift))
    ys = np.arange(h, dtype=np.float32)[:, None]
    if p["kind"] == "ground":
        return ys >= wave[None, :]
    return np.abs(ys - wave[None, :]) <= p["thick"] * h / 2


def _affine(cx, cy, angle, scale):
    m = cv2.getRotationMatrix2D((_LOCAL / 2.0, _LOCAL / 2.0), angle, scale)
    m[0, 2] += cx - _LOCAL / 2.0
    m[1, 2] += cy - _LOCAL / 2.0
    return m


# ----------------------------------------------------------------------------------------- scenes
class SceneGenerator(object):
    """Makes images and clips at ``size`` x ``size``. ``photos`` defaults to ``load_photos(split)``."""

    def __init__(self, size: int = 256, split: str = "train", photos: Optional[List[np.ndarray]] = None,
                 max_things: int = 6, min_area: float = 0.004):
        self.size = int(size)
        self.photos = photos if photos is not None else load_photos(split)
        self.max_things = max_things
        self.min_area = min_area

    def _objects(self, rng):
        n = int(rng.integers(1, self.max_things + 1))
        objs = []
        for _ in range(n):
            cls = int(rng.integers(NUM_THINGS))
            radius = self.size * rng.uniform(0.07, 0.26)
            objs.append({"cls": cls, "mask": _shape_mask(rng, cls), "tex": _texture(rng, self.photos, _LOCAL, cls),
                         "cx": rng.uniform(0.1, 0.9) * self.size, "cy": rng.uniform(0.1, 0.9) * self.size,
                         "angle": rng.uniform(0, 360), "scale": radius / (_LOCAL * 0.45),
                         "v": rng.normal(0, self.size * 0.025, 2), "va": rng.normal(0, 6),
                         "vs": rng.uniform(-0.03, 0.03)})
        return objs

    def _stuff(self, rng):
        out = []
        if rng.random() < 0.55:
            out.append({"kind": "ground", "cls": CLASS_NAMES.index("ground"), "y0": rng.uniform(0.5, 0.85),
                        "amp": rng.uniform(0.0, 0.08), "freq": rng.uniform(0.3, 2.0), "phase": rng.random(),
                        "thick": 0.0, "tex": _texture(rng, self.photos, self.size)})
        if rng.random() < 0.45:
            out.append({"kind": "band", "cls": CLASS_NAMES.index("band"), "y0": rng.uniform(0.15, 0.6),
                        "amp": rng.uniform(0.0, 0.12), "freq": rng.uniform(0.3, 2.5), "phase": rng.random(),
                        "thick": rng.uniform(0.12, 0.3), "tex": _texture(rng, self.photos, self.size)})
        return out

    def _render(self, bg, stuff, objs, shift):
        s = self.size
        img = bg.copy()
        layers = []  # (mask, cls, id) in paint order
        for st in stuff:
            m = _stuff_mask(st, s, s, shift * 0.05)
            img[m] = st["tex"][m]
            layers.append((m, st["cls"], STUFF_ID_BASE + st["cls"]))
        for i, o in enumerate(objs):
            a = _affine(o["cx"], o["cy"], o["angle"], o["scale"])
            m = cv2.warpAffine(o["mask"], a, (s, s), flags=cv2.INTER_NEAREST).astype(bool)
            tex = cv2.warpAffine(o["tex"], a, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            img[m] = tex[m]
            layers.append((m, o["cls"], i + 1))
        # visible parts: later layers occlude earlier ones
        covered = np.zeros((s, s), bool)
        masks, classes, ids = [], [], []
        for m, c, k in reversed(layers):
            vis = m & ~covered
            covered |= m
            if vis.sum() >= self.min_area * s * s and (c >= NUM_THINGS or vis.sum() >= 0.2 * max(1, m.sum())):
                masks.append(vis)
                classes.append(c)
                ids.append(k)
        order = np.argsort(ids, kind="stable")
        masks = np.stack([masks[i] for i in order]) if masks else np.zeros((0, s, s), bool)
        return {"image": img, "masks": masks, "classes": np.asarray([classes[i] for i in order], np.int64),
                "ids": np.asarray([ids[i] for i in order], np.int64)}

    def _background(self, rng):
        bg = _crop(rng, self.photos[int(rng.integers(len(self.photos)))], self.size, self.size)
        return _jitter_colour(rng, bg, 0.5)

    def image(self, seed: int) -> Dict[str, np.ndarray]:
        """One scene, deterministic by seed."""
        rng = np.random.default_rng([int(seed), 0])
        bg = self._background(rng)
        return self._render(bg, self._stuff(rng), self._objects(rng), 0.0)

    def clip(self, seed: int, frames: int = 3) -> List[Dict[str, np.ndarray]]:
        """A short clip: things move / rotate / scale a little per frame and occlude each other; ``ids`` are
        the tracks. The background pans slowly."""
        rng = np.random.default_rng([int(seed), 1])
        s = self.size
        big = _crop(rng, self.photos[int(rng.integers(len(self.photos)))], int(s * 1.25), int(s * 1.25))
        big = _jitter_colour(rng, big, 0.5)
        pan = rng.normal(0, s * 0.01, 2)
        stuff = self._stuff(rng)
        objs = self._objects(rng)
        out = []
        for t in range(frames):
            ox = int(np.clip(s * 0.125 + pan[0] * t, 0, s * 0.25))
            oy = int(np.clip(s * 0.125 + pan[1] * t, 0, s * 0.25))
            out.append(self._render(big[oy:oy + s, ox:ox + s], stuff, objs, float(t)))
            for o in objs:
                o["cx"] = float(np.clip(o["cx"] + o["v"][0], 0, s))
                o["cy"] = float(np.clip(o["cy"] + o["v"][1], 0, s))
                o["angle"] += o["va"]
                o["scale"] *= 1 + o["vs"]
        return out
