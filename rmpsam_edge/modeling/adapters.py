"""The two adapters at the end of the decoder (after the 3rd cascade stage).

* object adapter (panoptic / video instances, 100 learned queries): one more mask sum-pooling and a
  KernelUpdator; its output is used directly as mask kernel and as the tracking embedding; class logits
  100 * max_p cos (NOT divided by the stage temperature).
* prompt adapter (points / boxes, one query per prompt): cross-attention from each query to all stride-4
  pixels (mmcv ``MultiheadAttention``, residual), LayerNorm, IoU head, mask logits.
"""
import torch
from torch import nn

from .classifier import cosine_logits
from .decoder_stage import mask_logits, mask_pool


class PromptCrossAttention(nn.Module):
    """mmcv ``MultiheadAttention`` wrapper (keys ``attn.*``): query + MHA(query, pixels, pixels)."""

    def __init__(self, dim: int = 256, num_heads: int = 8):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=0.0, batch_first=True)

    def forward(self, query: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        keys = feats.flatten(2).transpose(1, 2)
        return query + self.attn(query, keys, keys, need_weights=False)[0]


def object_adapter(updator: nn.Module, cls_proj: nn.Module, feats, kernels, masks, fc_cls):
    """-> class logits (B, N, K+1), mask logits (B, N, h, w), query embeddings (B, N, C)."""
    query = updator(mask_pool(masks, feats), kernels)
    return cosine_logits(cls_proj(query), fc_cls), mask_logits(query, feats), query


def prompt_adapter(attn: PromptCrossAttention, norm: nn.Module, iou_head: nn.Module, feats, kernels):
    """-> mask logits (B, Np, h, w), IoU (B, Np, 1), query embeddings (B, Np, C)."""
    query = norm(attn(kernels, feats))
    return mask_logits(query, feats), iou_head(query), query
