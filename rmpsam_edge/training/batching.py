"""Turn synthetic scenes into training tensors: normalised images, prompt boxes and their target masks.

Prompts follow the official encoding: a point click is the 6-pixel box (x-3, y-3, x+3, y+3), a box prompt is
the object's tight box (jittered in training); both are normalised (cx, cy, w, h) of the un-padded image,
clamped to [1e-5, 1 - 1e-5].
"""
from typing import Dict, List, Optional

import cv2
import numpy as np
import torch

from rmpsam_edge.preprocess import normalize, normalize_boxes, points_to_boxes
from rmpsam_edge.spec import IMAGENET_MEAN, IMAGENET_STD

def normalise_images(images: List[np.ndarray]) -> torch.Tensor:
    """RGB uint8 (H, W, 3) list (sizes multiple of 32) -> (B, 3, H, W) float32 (the runtime's normalisation)."""
    return torch.from_numpy(np.stack([normalize(im, IMAGENET_MEAN, IMAGENET_STD) for im in images]))


def tight_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def click_point(mask: np.ndarray) -> np.ndarray:
    """The pixel farthest from the mask boundary (the official 1-click protocol), as (x + 0.5, y + 0.5)."""
    d = cv2.distanceTransform(np.pad(mask.astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(d)), d.shape)
    return np.array([x + 0.5, y + 0.5], np.float32)


def sample_prompts(rng: np.random.Generator, masks: np.ndarray, num: int, p_point: float = 0.5):
    """Pick ``num`` prompts on the segments of one scene (with repetition if fewer segments).
    -> boxes xyxy (num, 4) pixels, target index (num,), is_point (num,) bool."""
    n, h, w = masks.shape
    order = rng.permutation(n)
    idx = np.concatenate([order, rng.integers(0, n, max(0, num - n))])[:num] if n else np.zeros(0, np.int64)
    boxes, pts = [], []
    for i in idx:
        m = masks[i]
        if rng.random() < p_point:
            if rng.random() < 0.3:
                pt = click_point(m)
            else:
                d = cv2.distanceTransform(np.pad(m.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1].ravel()
                p = d / d.sum()
                j = int(rng.choice(d.size, p=p))
                pt = np.array([j % w + rng.random(), j // w + rng.random()], np.float32)
            boxes.append(points_to_boxes(pt)[0])
            pts.append(True)
        else:
            b = tight_box(m)
            bw, bh = b[2] - b[0], b[3] - b[1]
            b = b + rng.normal(0, 0.04, 4).astype(np.float32) * np.array([bw, bh, bw, bh], np.float32)
            boxes.append(np.clip(b, 0, [w, h, w, h]).astype(np.float32))
            pts.append(False)
    return (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(idx, np.int64),
            np.asarray(pts, bool))


def downsample_masks(masks: np.ndarray, stride: int) -> torch.Tensor:
    """(N, H, W) bool -> (N, H/stride, W/stride) float32 area fractions."""
    t = torch.from_numpy(masks.astype(np.float32))
    if t.shape[0] == 0:
        return t[:, ::stride, ::stride]
    return torch.nn.functional.avg_pool2d(t[:, None], stride)[:, 0]


def make_batch(images: List[Dict], clips: List[List[Dict]], rng: np.random.Generator, num_prompts: int,
               p_point: float = 0.5) -> Dict:
    """images: scenes; clips: lists of scenes (each clip is one tube). Frames are encoded together:
    index order = images, then clip frames in order."""
    frames = list(images) + [f for c in clips for f in c]
    h, w = frames[0]["image"].shape[:2]
    boxes, ptargets = [], []
    for f in frames:
        b, idx, _ = sample_prompts(rng, f["masks"], num_prompts, p_point)
        boxes.append(normalize_boxes(b, (h, w)))
        ptargets.append(downsample_masks(f["masks"][idx], 2))
    objs = [{"classes": torch.from_numpy(s["classes"]), "m4": downsample_masks(s["masks"], 4),
             "m2": downsample_masks(s["masks"], 2)} for s in images]
    tubes = []
    for c in clips:
        ids = sorted(set(int(i) for f in c for i in f["ids"]))
        cls, m = [], []
        for k in ids:
            per = []
            for f in c:
                j = np.nonzero(f["ids"] == k)[0]
                per.append(f["masks"][j[0]] if len(j) else np.zeros((h, w), bool))
                if len(j):
                    c_k = int(f["classes"][j[0]])
            cls.append(c_k)
            m.append(np.concatenate(per, 0))  # frames stacked along height, like the tall feature map
        m = np.stack(m) if m else np.zeros((0, h * len(c), w), bool)
        tubes.append({"classes": torch.as_tensor(cls, dtype=torch.int64), "m4": downsample_masks(m, 4),
                      "m2": downsample_masks(m, 2), "frames": len(c)})
    return {"x": normalise_images([f["image"] for f in frames]),
            "boxes": torch.from_numpy(np.stack(boxes)), "prompt_targets": torch.stack(ptargets),
            "objects": objs, "tubes": tubes, "num_images": len(images)}
