"""Prompt encoding: points and boxes -> queries (DN-DETR style, as the official ``prepare_for_dn_mo``).

A click (x, y) is the 6-pixel box (x-3, y-3, x+3, y+3). Boxes are in pixels of the resized, un-padded image;
they are normalised by that size (w, h, w, h), turned into (cx, cy, w, h), clamped through the
inverse-sigmoid/sigmoid round trip, and sine-encoded in the order [cy, cx, w, h] (4 x 128 = 512 values).
The normalisation is done on the host (numpy, ``rmpsam_edge.preprocess.normalize_boxes``); this module
holds the in-graph part: the sine encoding.
"""
import math

import torch


def sine_encoding(boxes_cxcywh: torch.Tensor, num_feats: int = 128, temperature: float = 10000.0) -> torch.Tensor:
    """mmdet ``coordinate_to_encoding``: (..., 4) normalised (cx, cy, w, h) -> (..., 512) [cy, cx, w, h].

    Each coordinate v gives sin(v*2pi/t_i) for even i and cos(v*2pi/t_i) for odd i, t_i = T^(2*(i//2)/128).
    """
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=boxes_cxcywh.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    parts = []
    for idx in (1, 0, 2, 3):  # cy, cx, w, h
        v = boxes_cxcywh[..., idx:idx + 1] * (2 * math.pi) / dim_t
        parts.append(torch.stack((v[..., 0::2].sin(), v[..., 1::2].cos()), dim=-1).flatten(-2))
    return torch.cat(parts, dim=-1)
