"""``RapSAMVideoHead`` (inference part): shared 3-stage cascade + object adapter + prompt adapter.

Parameter names follow the official head (prefix ``panoptic_head.`` in checkpoints). The classifier buffer
``fc_cls`` (768, K+1, P) is non-persistent: it comes from a vocabulary file, never from the checkpoint.
"""
from typing import Dict, Optional

import torch
from torch import nn

from .adapters import PromptCrossAttention, object_adapter, prompt_adapter
from .classifier import with_background
from .decoder_stage import CrossAttenHead, mask_logits
from .kernel_updator import KernelUpdator
from .prompt_encoding import sine_encoding

TEMPERATURE = 0.1


class RapSAMHead(nn.Module):
    def __init__(self, num_queries: int = 100, dim: int = 256, num_stages: int = 3, clip_dim: int = 768):
        super().__init__()
        self.kernels = nn.Embedding(num_queries, dim)
        self.mask_tokens = nn.Embedding(1, dim)
        self.pb_embedding = nn.Embedding(2, dim)
        self.pos_linear = nn.Linear(2 * dim, dim)
        self.mask_heads = nn.ModuleList([CrossAttenHead(dim, 8, clip_dim) for _ in range(num_stages)])
        self.panoptic_attn = KernelUpdator(dim)
        self.panoptic_cls = nn.Sequential(nn.Linear(dim, clip_dim))
        self.prompt_attn = PromptCrossAttention(dim, 8)
        self.prompt_norm = nn.LayerNorm(dim)
        self.prompt_iou = nn.Linear(dim, 1)
        self.clip_dim = clip_dim
        self.register_buffer("fc_cls", None, persistent=False)

    # ------------------------------------------------------------------ vocabulary
    def set_vocabulary(self, class_embed: torch.Tensor) -> None:
        """class_embed (K, P, clip_dim) unit rows -> buffer (clip_dim, K+1, P), zero background last."""
        if class_embed.dim() != 3 or class_embed.shape[-1] != self.clip_dim:
            raise ValueError("vocabulary must be (K, P, %d), got %s" % (self.clip_dim, tuple(class_embed.shape)))
        self.fc_cls = with_background(class_embed.float()).to(self.kernels.weight.device)

    @property
    def num_classes(self) -> int:
        return 0 if self.fc_cls is None else self.fc_cls.shape[1] - 1

    def _require_vocab(self, fc_cls):
        fc = self.fc_cls if fc_cls is None else fc_cls
        if fc is None:
            raise RuntimeError("no vocabulary loaded: pass a class-embedding file (--vocab) for panoptic/instances")
        return fc

    # ------------------------------------------------------------------ paths
    def forward_objects(self, feats: torch.Tensor, fc_cls: Optional[torch.Tensor] = None,
                        return_stages: bool = False) -> Dict[str, torch.Tensor]:
        """Panoptic / VIS pass. feats (B, C, h, w) -> cls (B, 100, K+1), masks (B, 100, h, w),
        query (B, 100, C), iou (B, 100, 1) (stage-3 IoU), and optionally per-stage outputs."""
        fc = self._require_vocab(fc_cls)
        b = feats.shape[0]
        k = self.kernels.weight.unsqueeze(0).expand(b, -1, -1)
        m = mask_logits(k, feats)
        stages = []
        iou = None
        for stage in self.mask_heads:
            cls, m, iou, k = stage(feats, k, m, fc)
            stages.append({"cls": cls / TEMPERATURE, "masks": m, "iou": iou, "obj": k})
        cls, masks, query = object_adapter(self.panoptic_attn, self.panoptic_cls, feats, k, m, fc)
        out = {"cls": cls, "masks": masks, "query": query, "iou": iou}
        if return_stages:
            out["stages"] = stages
        return out

    def prompt_queries(self, boxes_cxcywh: torch.Tensor) -> torch.Tensor:
        """(B, Np, 4) normalised cx, cy, w, h -> initial prompt queries (B, Np, C)."""
        content = self.pb_embedding.weight[1] + self.mask_tokens.weight[0]
        return content + self.pos_linear(sine_encoding(boxes_cxcywh))

    def forward_prompts(self, feats: torch.Tensor, boxes_cxcywh: torch.Tensor,
                        return_stages: bool = False) -> Dict[str, torch.Tensor]:
        """Prompt pass, all prompts at once (they are independent). feats (B, C, h, w),
        boxes (B, Np, 4) normalised (cx, cy, w, h) -> masks (B, Np, h, w), iou (B, Np, 1), query (B, Np, C)."""
        k = self.prompt_queries(boxes_cxcywh)
        m = mask_logits(k, feats)
        stages = []
        for stage in self.mask_heads:
            _, m, _, k = stage(feats, k, m, None, independent=True, with_cls=False)
            stages.append({"masks": m})
        masks, iou, query = prompt_adapter(self.prompt_attn, self.prompt_norm, self.prompt_iou, feats, k)
        out = {"masks": masks, "iou": iou, "query": query}
        if return_stages:
            out["stages"] = stages
        return out
