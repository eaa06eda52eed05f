"""One cascade stage (``CrossAttenHead``): mask sum-pooling, kernel update, self-attention, FFN, branches.

Inputs F (B, C, h, w), kernels K (B, N, C), mask logits M (B, N, h, w).
Returns (class logits (B, N, K+1) before temperature, new mask logits (B, N, h, w), IoU (B, N, 1),
obj (B, N, C)); the next stage's kernels are ``obj``, not the mask-branch output.
"""
import torch
from torch import nn

from .classifier import cosine_logits
from .kernel_updator import KernelUpdator


def mask_pool(masks: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """Hard mask SUM pooling: (M > 0) masks (B, N, h, w), F (B, C, h, w) -> (B, N, C). No area normalisation."""
    b, n = masks.shape[:2]
    c = feats.shape[1]
    hard = (masks > 0).to(feats.dtype).reshape(b, n, -1)
    return torch.matmul(hard, feats.reshape(b, c, -1).transpose(1, 2))


def mask_logits(kernels: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """einsum('bnc,bchw->bnhw') as a matmul over flattened pixels."""
    b, c, h, w = feats.shape
    return torch.matmul(kernels, feats.reshape(b, c, h * w)).view(b, kernels.shape[1], h, w)


class FFN(nn.Module):
    """mmcv FFN with identity: x + Linear(ReLU(Linear(x))); keys ``layers.0.0`` and ``layers.1``."""

    def __init__(self, dim: int = 256, hidden: int = 2048):
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Dropout(0.0)),
                                    nn.Linear(hidden, dim), nn.Dropout(0.0))

    def forward(self, x):
        return x + self.layers(x)


def _mlp3(dim: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim), nn.ReLU(inplace=True),
                         nn.Linear(dim, out))


class CrossAttenHead(nn.Module):
    def __init__(self, dim: int = 256, num_heads: int = 8, clip_dim: int = 768):
        super().__init__()
        self.kernel_update = KernelUpdator(dim)
        self.s_atten = nn.MultiheadAttention(dim, num_heads, dropout=0.0)
        self.s_atten_norm = nn.LayerNorm(dim)
        self.ffn = FFN(dim, 2048)
        self.ffn_norm = nn.LayerNorm(dim)
        self.cls_fcs = nn.Sequential(nn.Linear(dim, dim, bias=False), nn.LayerNorm(dim), nn.ReLU(inplace=True))
        self.cls_proj = _mlp3(dim, clip_dim)
        self.mask_fcs = nn.Sequential(nn.Linear(dim, dim, bias=False), nn.LayerNorm(dim), nn.ReLU(inplace=True))
        self.fc_mask = nn.Linear(dim, dim)
        self.iou_embed = _mlp3(dim, 1)

    def self_attention(self, k: torch.Tensor, independent: bool) -> torch.Tensor:
        """Self-attention between queries. ``independent`` (prompt queries): the official diagonal-only
        mask makes each query attend to itself alone, i.e. exactly out_proj(v_proj(k))."""
        if independent:
            dim = k.shape[-1]
            a = self.s_atten
            v = torch.nn.functional.linear(k, a.in_proj_weight[2 * dim:], a.in_proj_bias[2 * dim:])
            return a.out_proj(v)
        kt = k.transpose(0, 1)
        return self.s_atten(kt, kt, kt, need_weights=False)[0].transpose(0, 1)

    def forward(self, feats, kernels, masks, fc_cls, independent: bool = False, with_cls: bool = True):
        pooled = mask_pool(masks, feats)
        k = self.kernel_update(pooled, kernels)
        k = self.s_atten_norm(k + self.self_attention(k, independent))
        obj = self.ffn_norm(self.ffn(k))
        cls = cosine_logits(self.cls_proj(self.cls_fcs(obj)), fc_cls) if with_cls else None
        mask_feat = self.mask_fcs(obj)
        new_masks = mask_logits(self.fc_mask(mask_feat), feats)
        iou = self.iou_embed(mask_feat)
        return cls, new_masks, iou, obj
