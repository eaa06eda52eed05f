"""YOSO lite neck (``YOSONeck`` / ``LiteDeformConv``): C2..C5 -> one stride-4 map F (B, 256, H/4, W/4)."""
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from .deform_conv import ModulatedDeformConv2d


class DeformLayer(nn.Module):
    """DCNv2 3x3 -> BN -> ReLU -> ConvTranspose x2 -> BN -> ReLU."""

    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        self.dcn_offset = nn.Conv2d(in_planes, 27, 3, 1, 1)
        self.dcn = ModulatedDeformConv2d(in_planes, out_planes)
        self.dcn_bn = nn.BatchNorm2d(out_planes)
        self.up_sample = nn.ConvTranspose2d(out_planes, out_planes, 4, 2, 1, bias=False)
        self.up_bn = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.dcn_offset(x)
        o1, o2, m = torch.chunk(out, 3, dim=1)
        x = self.dcn(x, torch.cat((o1, o2), dim=1), m.sigmoid())
        x = self.relu(self.dcn_bn(x))
        return self.relu(self.up_bn(self.up_sample(x)))


class LiteDeformConv(nn.Module):
    """Top-down path with three deformable layers, then CFA fusion (learnable bias) and a 3x3 output conv."""

    def __init__(self, in_channels: List[int], agg_dim: int = 128):
        super().__init__()
        c2, c3, c4, c5 = in_channels
        m2, m3, m4, m5 = c2 // 2, c3 // 2, c4 // 2, c5 // 2
        self.lateral_conv0 = nn.Conv2d(c5, m5, 1)
        self.deform_conv1 = DeformLayer(m5, m4)
        self.lateral_conv1 = nn.Conv2d(c4, m4, 1)
        self.deform_conv2 = DeformLayer(m4, m3)
        self.lateral_conv2 = nn.Conv2d(c3, m3, 1)
        self.deform_conv3 = DeformLayer(m3, m2)
        self.lateral_conv3 = nn.Conv2d(c2, m2, 1)
        self.output_conv = nn.Conv2d(agg_dim, agg_dim, 3, 1, 1)
        self.bias = nn.Parameter(torch.zeros(1, agg_dim, 1, 1))
        self.conv_a5 = nn.Conv2d(m5, agg_dim, 1, bias=False)
        self.conv_a4 = nn.Conv2d(m4, agg_dim, 1, bias=False)
        self.conv_a3 = nn.Conv2d(m3, agg_dim, 1, bias=False)
        self.conv_a2 = nn.Conv2d(m2, agg_dim, 1, bias=False)

    def forward(self, feats: List[torch.Tensor]) -> torch.Tensor:
        c2, c3, c4, c5 = feats
        x5 = self.lateral_conv0(c5)
        x4 = self.deform_conv1(x5) + self.lateral_conv1(c4)
        x3 = self.deform_conv2(x4) + self.lateral_conv2(c3)
        x2 = self.deform_conv3(x3) + self.lateral_conv3(c2)
        size = x2.shape[-2:]

        def up(t):
            return F.interpolate(t, size=size, mode="bilinear", align_corners=False)

        y = up(self.conv_a5(x5)) + up(self.conv_a4(x4)) + up(self.conv_a3(x3)) + self.conv_a2(x2) + self.bias
        return self.output_conv(y)


def coord_channels(x: torch.Tensor) -> torch.Tensor:
    """CoordConv channels [x, y] in [-1, 1] (x varies along width), shape (B, 2, H, W)."""
    b, _, h, w = x.shape
    xs = torch.arange(w, dtype=x.dtype, device=x.device) * (2.0 / max(w - 1, 1)) - 1.0
    ys = torch.arange(h, dtype=x.dtype, device=x.device) * (2.0 / max(h - 1, 1)) - 1.0
    gx = xs.view(1, 1, 1, w).expand(b, 1, h, w)
    gy = ys.view(1, 1, h, 1).expand(b, 1, h, w)
    return torch.cat((gx, gy), dim=1)


class YOSONeck(nn.Module):
    """C2..C5 -> F (B, hidden_dim, H/4, W/4): LiteDeformConv, CoordConv [x, y], 1x1 ``loc_conv``."""

    def __init__(self, backbone_shape: List[int], agg_dim: int = 128, hidden_dim: int = 256):
        super().__init__()
        self.deconv = LiteDeformConv(backbone_shape, agg_dim)
        self.loc_conv = nn.Conv2d(agg_dim + 2, hidden_dim, 1)

    def forward(self, feats: List[torch.Tensor]) -> torch.Tensor:
        y = self.deconv(feats)
        return self.loc_conv(torch.cat((y, coord_channels(y)), dim=1))
