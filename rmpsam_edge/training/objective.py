"""The training objective on one batch: prompt masks + IoU head, and matched object queries (deep supervision).

* Prompt pass: every prompt query predicts the mask of the segment it was sampled on; BCE (w 5) + Dice (w 5)
  on the three cascade stages and the prompt adapter; the IoU head is regressed (MSE, w ``iou_weight``) to the
  IoU of its own binarised mask.
* Object pass (100 learned queries): per output (3 stages + object adapter) Hungarian matching with costs
  class 2 / BCE 5 / Dice 5; CE over K+1 classes (w 2, no-object 0.1) and BCE + Dice (w 5 each) on matches.
  Video tubes: the frames' features are stacked along the height (as the official MinVIS-style inference)
  and each ground-truth track is one target spanning all frames.
Matching uses stride-4 masks; mask losses use the logits upsampled x2 against stride-2 targets.
"""
from typing import Dict

import torch
import torch.nn.functional as F

from .losses import bce_loss, class_loss, dice_loss, mask_iou
from .matching import hungarian_match

W_CLS, W_BCE, W_DICE = 2.0, 5.0, 5.0


def _up2(m: torch.Tensor) -> torch.Tensor:
    return F.interpolate(m, scale_factor=2, mode="bilinear", align_corners=False)


def prompt_losses(head, feats, boxes, targets, iou_weight: float = 1.0) -> Dict[str, torch.Tensor]:
    out = head.forward_prompts(feats, boxes, return_stages=True)
    preds = [s["masks"] for s in out["stages"]] + [out["masks"]]
    t = targets.flatten(2).flatten(0, 1)
    loss_m = 0
    for p in preds:
        p = _up2(p).flatten(2).flatten(0, 1)
        loss_m = loss_m + W_BCE * bce_loss(p, t) + W_DICE * dice_loss(p, t)
    final = _up2(out["masks"]).flatten(2).flatten(0, 1)
    iou_t = mask_iou(final, t)
    loss_iou = iou_weight * F.mse_loss(out["iou"].reshape(-1), iou_t)
    return {"prompt_mask": loss_m, "prompt_iou": loss_iou, "prompt_miou": iou_t.mean().detach()}


def _object_output_losses(cls, masks, targets, num_classes):
    """cls (Q, K+1), masks (Q, h, w) at stride 4, one target dict -> (class loss, mask loss)."""
    q, g = hungarian_match(cls, masks.flatten(1), targets["classes"], targets["m4"].flatten(1),
                           W_CLS, W_BCE, W_DICE)
    tcls = torch.full((cls.shape[0],), num_classes, dtype=torch.int64)
    tcls[q] = targets["classes"][g]
    lc = W_CLS * class_loss(cls, tcls, num_classes)
    if len(q) == 0:
        return lc, masks.sum() * 0, 0
    p = _up2(masks[q][None])[0].flatten(1)
    t = targets["m2"][g].flatten(1)
    return lc, W_BCE * bce_loss(p, t) + W_DICE * dice_loss(p, t), len(q)


def object_losses(head, feats, targets_list) -> Dict[str, torch.Tensor]:
    """feats (B, C, h, w) with one target dict per item (images, or tubes stacked along the height)."""
    out = head.forward_objects(feats, return_stages=True)
    k = head.num_classes
    outputs = [(s["cls"], s["masks"]) for s in out["stages"]] + [(out["cls"], out["masks"])]
    lc_tot, lm_tot = 0, 0
    for cls, masks in outputs:
        for b, tg in enumerate(targets_list):
            lc, lm, _ = _object_output_losses(cls[b], masks[b], tg, k)
            lc_tot = lc_tot + lc / len(targets_list)
            lm_tot = lm_tot + lm / len(targets_list)
    return {"object_cls": lc_tot, "object_mask": lm_tot}


def batch_losses(model, batch, iou_weight: float = 1.0, object_weight: float = 1.0,
                 prompt_weight: float = 1.0) -> Dict[str, torch.Tensor]:
    feats = model.encode(batch["x"])
    head = model.panoptic_head
    losses = prompt_losses(head, feats, batch["boxes"], batch["prompt_targets"], iou_weight)
    n = batch["num_images"]
    total = prompt_weight * losses["prompt_mask"] + losses["prompt_iou"]
    if n:
        o = object_losses(head, feats[:n], batch["objects"])
        losses.update(o)
        total = total + object_weight * (o["object_cls"] + o["object_mask"])
    start = n
    for tube in batch["tubes"]:
        t = tube["frames"]
        tall = torch.cat(list(feats[start:start + t]), dim=1)[None]  # (1, C, t*h, w)
        start += t
        o = object_losses(head, tall, [tube])
        losses["video_cls"] = losses.get("video_cls", 0) + o["object_cls"]
        losses["video_mask"] = losses.get("video_mask", 0) + o["object_mask"]
        total = total + object_weight * (o["object_cls"] + o["object_mask"]) / max(1, len(batch["tubes"]))
    losses["total"] = total
    return losses
