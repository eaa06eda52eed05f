"""Classifier from CLIP text embeddings (``sphere_cls``): cosine similarity, max over synonyms (prototypes).

A vocabulary file holds a tensor (K, P, 768): K classes, P prototypes (synonyms), unit rows. A zero
background row is appended, so the background logit is exactly 0 and the class axis has K + 1 entries.
"""
import math

import torch
import torch.nn.functional as F

LOGIT_SCALE = math.log(1 / 0.01)  # exp() = 100


def with_background(class_embed: torch.Tensor) -> torch.Tensor:
    """(K, P, D) -> (D, K+1, P): the buffer layout of the official code, zero background appended last."""
    k, p, d = class_embed.shape
    full = torch.cat((class_embed, class_embed.new_zeros(1, p, d)), dim=0)
    return full.permute(2, 0, 1).contiguous()


def cosine_logits(embed: torch.Tensor, fc_cls: torch.Tensor) -> torch.Tensor:
    """embed (B, N, D), fc_cls (D, K+1, P) -> (B, N, K+1) = 100 * max_p cos(embed, class_p)."""
    e = F.normalize(embed, dim=-1)
    b, n, d = e.shape
    _, k1, p = fc_cls.shape
    sims = torch.matmul(e.reshape(b * n, d), fc_cls.reshape(d, k1 * p)).view(b, n, k1, p)
    return math.exp(LOGIT_SCALE) * sims.max(dim=-1).values
