"""Hungarian matching of object queries to ground-truth segments (Mask2Former / official recipe costs).

cost = w_cls * (-softmax prob of the GT class) + w_bce * pixel-mean BCE + w_dice * Dice, solved with scipy.
"""
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


def bce_cost(pred_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """pred (Q, P) logits, targets (G, P) in [0, 1] -> (Q, G) mean binary cross-entropy."""
    p = pred_logits.shape[1]
    pos = F.binary_cross_entropy_with_logits(pred_logits, torch.ones_like(pred_logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(pred_logits, torch.zeros_like(pred_logits), reduction="none")
    return (pos @ targets.t() + neg @ (1 - targets).t()) / p


def dice_cost(pred_logits: torch.Tensor, targets: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """(Q, P), (G, P) -> (Q, G) 1 - Dice (naive dice, eps 1 as the official DiceLoss)."""
    s = pred_logits.sigmoid()
    num = 2 * s @ targets.t()
    den = s.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (num + eps) / (den + eps)


@torch.no_grad()
def hungarian_match(cls_logits: torch.Tensor, mask_logits: torch.Tensor, gt_classes: torch.Tensor,
                    gt_masks: torch.Tensor, w_cls: float = 2.0, w_bce: float = 5.0, w_dice: float = 5.0
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """cls (Q, K+1), masks (Q, P) logits, gt_classes (G,), gt_masks (G, P) -> (query idx, gt idx)."""
    if gt_classes.numel() == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    prob = cls_logits.float().softmax(-1)[:, gt_classes]
    cost = -w_cls * prob + w_bce * bce_cost(mask_logits.float(), gt_masks.float()) \
        + w_dice * dice_cost(mask_logits.float(), gt_masks.float())
    q, g = linear_sum_assignment(cost.cpu().numpy())
    return q.astype(np.int64), g.astype(np.int64)
