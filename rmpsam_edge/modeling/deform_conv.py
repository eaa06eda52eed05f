"""Modulated deformable convolution (DCNv2) written with ``grid_sample`` + a 1x1 convolution.

Semantics of mmcv ``ModulatedDeformConv2d`` (3x3, stride 1, pad 1, dilation 1, 1 group, 1 deform group):
``offset`` (B, 18, H, W) holds (dy, dx) interleaved per kernel tap k (taps row-major over the 3x3 window),
``mask`` (B, 9, H, W) is already sigmoid-ed; samples outside the image read zeros (bilinear).
No custom op: ONNX export gives one GridSample (opset 16) per layer, which ONNX Runtime, OpenVINO and
TensorRT >= 8.5 all run.
"""
import torch
import torch.nn.functional as F
from torch import nn


def deform_sample(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sample x at the 9 deformed taps, weighted by mask.

    x (B, C, H, W), offset (B, 18, H, W), mask (B, 9, H, W) -> (B, C * 9, H, W), channel order (c, tap).
    """
    b, c, h, w = x.shape
    off = offset.view(b, 9, 2, h, w)
    ys = torch.arange(h, dtype=x.dtype, device=x.device).view(1, 1, h, 1)
    xs = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, 1, w)
    k = torch.arange(9, device=x.device)
    ky = (k // 3 - 1).to(x.dtype).view(1, 9, 1, 1)
    kx = (k % 3 - 1).to(x.dtype).view(1, 9, 1, 1)
    py = ys + ky + off[:, :, 0]                      # (B, 9, H, W) sample rows in pixels
    px = xs + kx + off[:, :, 1]
    # align_corners=False maps pixel p to (2p + 1) / size - 1; this stays valid for size 1.
    gx = (2.0 * px + 1.0) / w - 1.0
    gy = (2.0 * py + 1.0) / h - 1.0
    grid = torch.stack((gx, gy), dim=-1).view(b, 9 * h, w, 2)
    sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.view(b, c, 9, h, w) * mask.view(b, 1, 9, h, w)
    return sampled.view(b, c * 9, h, w)


class ModulatedDeformConv2d(nn.Module):
    """3x3 DCNv2 without bias (the neck's ``dcn``); parameter ``weight`` (Cout, Cin, 3, 3)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=1)

    def forward(self, x, offset, mask):
        cols = deform_sample(x, offset, mask)
        w = self.weight.reshape(self.out_channels, self.in_channels * 9, 1, 1)
        return F.conv2d(cols, w)
