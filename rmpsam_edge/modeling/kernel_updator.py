"""K-Net style gated kernel update (``KernelUpdator``), used in every cascade stage and as the object adapter."""
import torch
from torch import nn


class KernelUpdator(nn.Module):
    """update_feature U (B, N, C) = mask-pooled features, input_feature X (B, N, C) = current kernels."""

    def __init__(self, channels: int = 256):
        super().__init__()
        c = channels
        self.channels = c
        self.dynamic_layer = nn.Linear(c, 2 * c)
        self.input_layer = nn.Linear(c, 2 * c)
        self.input_gate = nn.Linear(c, c)
        self.update_gate = nn.Linear(c, c)
        self.norm_in = nn.LayerNorm(c)
        self.norm_out = nn.LayerNorm(c)
        self.input_norm_in = nn.LayerNorm(c)
        self.input_norm_out = nn.LayerNorm(c)
        self.fc_layer = nn.Linear(c, c)
        self.fc_norm = nn.LayerNorm(c)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, update_feature: torch.Tensor, input_feature: torch.Tensor) -> torch.Tensor:
        c = self.channels
        p = self.dynamic_layer(update_feature)
        p_in, p_out = p[..., :c], p[..., c:]
        q = self.input_layer(input_feature)
        x_in, x_out = q[..., :c], q[..., c:]
        g = x_in * p_in
        ig = self.input_norm_in(self.input_gate(g)).sigmoid()
        ug = self.norm_in(self.update_gate(g)).sigmoid()
        out = ug * self.norm_out(p_out) + ig * self.input_norm_out(x_out)
        return self.activation(self.fc_norm(self.fc_layer(out)))
