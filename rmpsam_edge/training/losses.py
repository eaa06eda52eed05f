"""Losses of the recipe: cross-entropy over K+1 classes (no-object weight 0.1), mask BCE and Dice."""
import torch
import torch.nn.functional as F


def dice_loss(pred_logits: torch.Tensor, targets: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """(N, P) logits, (N, P) targets -> mean over N of 1 - Dice."""
    if pred_logits.shape[0] == 0:
        return pred_logits.sum() * 0
    s = pred_logits.sigmoid()
    num = 2 * (s * targets).sum(-1)
    den = s.sum(-1) + targets.sum(-1)
    return (1 - (num + eps) / (den + eps)).mean()


def bce_loss(pred_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if pred_logits.shape[0] == 0:
        return pred_logits.sum() * 0
    return F.binary_cross_entropy_with_logits(pred_logits, targets, reduction="mean")


def class_loss(cls_logits: torch.Tensor, targets: torch.Tensor, num_classes: int,
               no_object_weight: float = 0.1) -> torch.Tensor:
    """cls (Q, K+1), targets (Q,) in [0, K] with K = no object."""
    w = cls_logits.new_ones(num_classes + 1)
    w[num_classes] = no_object_weight
    return F.cross_entropy(cls_logits.float(), targets, weight=w)


def mask_iou(pred_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, P), (N, P) -> (N,) IoU of (logits > 0) with (targets > 0.5), no gradient."""
    with torch.no_grad():
        p = pred_logits > 0
        t = targets > 0.5
        inter = (p & t).sum(-1).float()
        union = (p | t).sum(-1).float()
        return inter / union.clamp(min=1)
