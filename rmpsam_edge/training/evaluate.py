"""Evaluation on the held-out synthetic set (photos the training split never sees, other seeds).

* prompts: for every ground-truth segment (things and stuff) one click at the point farthest from its boundary
  (the official 1-click protocol) and one box (its tight box); mIoU over segments.
* panoptic: object pass + ``rmpsam_edge.postprocess.panoptic_fusion`` (mmdet rules), PQ (``metrics``).
* video: ``rmpsam_edge.tracking.VideoTracker`` in offline mode (tubes of 3 frames stacked along the height, as
  the official VIS inference; tubes chained by Hungarian matching of the object-adapter query embeddings);
  track identity from ``metrics.track_identity``.
Images are square at the training size, so no resizing or padding is involved.
"""
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F

from ..postprocess import panoptic_fusion, softmax
from ..preprocess import normalize_boxes, points_to_boxes
from .batching import click_point, normalise_images, tight_box
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
        clicks = points_to_boxes(np.stack([click_point(m) for m in masks]))
        boxes = np.stack([tight_box(m) for m in masks])
        for name, b in (("click", clicks), ("box", boxes)):
            q = torch.from_numpy(normalize_boxes(b, (size, size)))[None]
            pred = _up(model.panoptic_head.forward_prompts(feats, q)["masks"], size)[0].numpy() > 0
            out[name] = [mask_iou(p, g) for p, g in zip(pred, masks)]
    o = model.panoptic_head.forward_objects(feats)
    logits = _up(o["masks"], size)[0].numpy()
    pan, segs = panoptic_fusion(o["cls"][0].numpy(), logits, NUM_THINGS)
    out["pan_masks"] = np.stack([pan == s["id"] for s in segs]) if segs else np.zeros((0, size, size), bool)
    out["pan_classes"] = [int(s["label"]) for s in segs]
    return out


def track_clip(model, frames: List[Dict], tube: int = 3, score_thr: float = 0.5) -> List[Dict[int, np.ndarray]]:
    """-> per frame {track id: mask}, from the project's own ``VideoTracker`` (offline tubes of ``tube`` frames,
    as the official VIS inference) running the model through ``TorchRunner``: the eval measures exactly the
    tracker users get."""
    from ..predictor import Predictor
    from ..spec import ModelSpec
    from ..torch_runner import TorchRunner
    from ..tracking import VideoTracker
    fc = model.panoptic_head.fc_cls  # (768, K+1, P): the vocabulary the model was given
    class_embed = fc[:, :-1].permute(1, 2, 0).contiguous().numpy()
    spec = ModelSpec("r18", input_size=frames[0]["image"].shape[0], class_embed=class_embed,
                     num_things=NUM_THINGS)
    tracker = VideoTracker(Predictor(TorchRunner(model), spec), tube_length=tube, score_thr=score_thr)
    tracks = tracker.track_video([f["image"] for f in frames])
    return [{int(t.id): t.mask for t in frame} for frame in tracks]


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
