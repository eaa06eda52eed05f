"""Evaluation on the held-out synthetic set (photos the training split never sees, other seeds).

* prompts: for every ground-truth segment (things and stuff) one click at the point farthest from its boundary
  (the official 1-click protocol) and one box (its tight box); mIoU over segments.
* panoptic: object pass + ``rmpsam_edge.postprocess.panoptic_fusion`` (mmdet rules), PQ (``metrics``).
* video: clips cut into tubes of 3 frames stacked along the height (as the official VIS inference); tubes
  chained by Hungarian matching on the cosine of the object-adapter query embeddings; per frame, queries whose
  video-level thing score passes ``vis_score_thr`` paint the pixels they win (score x sigmoid argmax, sigmoid
  >= 0.5); track identity from ``metrics.track_identity``.
Images are square at the training size, so no resizing or padding is involved.
"""
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from ..postprocess import panoptic_fusion, softmax
from .batching import click_point, normalise_boxes, normalise_images, point_box, tight_box
from .metrics import PanopticQuality, mask_iou, track_identity
from .synthetic import NUM_THINGS, SceneGenerator

EVAL_SEED_BASE = 900_000_000


def _up(logits: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)


@torch.no_grad()
def eval_image(model, scene: Dict) -> Dict:
    size = scene["image"].shape[0]
    feats = model.encode(normalise_images([scene["image"]]))
    masks = scene["masks"]
    out = {"click": [], "box": []}
    if len(masks):
        clicks = np.stack([point_box(click_point(m)) for m in masks])
        boxes = np.stack([tight_box(m) for m in masks])
        for name, b in (("click", clicks), ("box", boxes)):
            q = torch.from_numpy(normalise_boxes(b, size, size))[None]
            pred = _up(model.panoptic_head.forward_prompts(feats, q)["masks"], size)[0].numpy() > 0
            out[name] = [mask_iou(p, g) for p, g in zip(pred, masks)]
    o = model.panoptic_head.forward_objects(feats)
    logits = _up(o["masks"], size)[0].numpy()
    pan, segs = panoptic_fusion(o["cls"][0].numpy(), logits, NUM_THINGS)
    out["pan_masks"] = np.stack([pan == s["id"] for s in segs]) if segs else np.zeros((0, size, size), bool)
    out["pan_classes"] = [int(s["label"]) for s in segs]
    return out


@torch.no_grad()
def track_clip(model, frames: List[Dict], tube: int = 3, score_thr: float = 0.5) -> List[Dict[int, np.ndarray]]:
    """-> per frame {track id: mask} (track id = aligned query index)."""
    size = frames[0]["image"].shape[0]
    feats = model.encode(normalise_images([f["image"] for f in frames]))
    prev_q = None
    cls_sum, masks_all = 0, []
    for s in range(0, len(frames), tube):
        f = feats[s:s + tube]
        t = f.shape[0]
        tall = torch.cat(list(f), dim=1)[None]
        o = model.panoptic_head.forward_objects(tall)
        q = F.normalize(o["query"][0], dim=-1)
        cls = o["cls"][0]
        m = o["masks"][0].reshape(-1, t, f.shape[2], f.shape[3]).transpose(0, 1)  # (t, N, h, w)
        if prev_q is not None:
            _, col = linear_sum_assignment((1 - prev_q @ q.t()).numpy())
            q, cls, m = q[col], cls[col], m[:, col]
        prev_q = q
        cls_sum = cls_sum + cls
        masks_all.append(m)
    cls_video = (cls_sum / len(masks_all)).numpy()
    prob = softmax(cls_video, axis=-1)[:, :-1]
    labels = prob.argmax(-1)
    scores = prob.max(-1)
    keep = np.flatnonzero((labels < NUM_THINGS) & (scores > score_thr))
    out = []
    for m in torch.cat(masks_all, 0):
        sig = torch.sigmoid(_up(m[None], size)[0]).numpy()
        frame = {}
        if len(keep):
            win = (scores[keep, None, None] * sig[keep]).argmax(0)
            for j, qi in enumerate(keep):
                pm = (win == j) & (sig[qi] >= 0.5)
                if pm.any():
                    frame[int(qi)] = pm
        out.append(frame)
    return out


def evaluate(model, imgsz: int, num_images: int = 100, num_clips: int = 20, clip_frames: int = 9,
             split: str = "eval", photos=None, seed_base: int = EVAL_SEED_BASE, progress=None) -> Dict:
    model.eval()
    gen = SceneGenerator(imgsz, split, photos=photos)
    clicks, boxes = [], []
    pq = PanopticQuality(len(gen_classes()), NUM_THINGS)
    for i in range(num_images):
        scene = gen.image(seed_base + i)
        r = eval_image(model, scene)
        clicks += r["click"]
        boxes += r["box"]
        pq.update(r["pan_masks"], r["pan_classes"], scene["masks"], scene["classes"])
        if progress:
            progress("image", i)
    gt_all, pred_all = [], []
    for c in range(num_clips):
        frames = gen.clip(seed_base + 100_000 + c, clip_frames)
        pred = track_clip(model, frames)
        for f, p in zip(frames, pred):
            gt_all.append({int(c) * 10000 + int(k): m for k, m, cl in zip(f["ids"], f["masks"], f["classes"])
                           if cl < NUM_THINGS})
            pred_all.append({int(c) * 10000 + k: m for k, m in p.items()})
        if progress:
            progress("clip", c)
    res = {"click_mIoU": float(np.mean(clicks)) if clicks else float("nan"),
           "box_mIoU": float(np.mean(boxes)) if boxes else float("nan"), "prompts": len(clicks)}
    res.update(pq.result())
    res.update(track_identity(gt_all, pred_all))
    res.update({"images": num_images, "clips": num_clips, "clip_frames": clip_frames, "imgsz": imgsz})
    return res


def gen_classes():
    from .synthetic import CLASS_NAMES
    return CLASS_NAMES
