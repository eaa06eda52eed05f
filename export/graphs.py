"""Deploy-time torch modules built FROM an ``RMPSAM`` model: the three graphs of a bundle.

Every restructuring keeps the math of ``rmpsam_edge.modeling`` exact (rounding aside); parity against the
original modules is checked on every export (``rmpsam_edge.export.parity``).

    EncoderGraph          image (B,3,H,W)                         -> features (B,256,H/4,W/4)
    PromptDecoderGraph    features (1,256,h,w), boxes (Np,4)      -> mask_logits (Np,h,w), iou (Np,1)
    ObjectDecoderGraph    features (1,256,h,w), class_embed (K,P,768)
                                                                  -> class_logits (1,100,K+1),
                                                                     mask_logits (1,100,h,w),
                                                                     query_embed (1,100,256)

Encoder: BatchNorm folded into every conv, the DCN projection and the ConvTranspose; DCNv2 as GridSample with
the offset channels permuted to [dy x9, dx x9, mask x9] (no interleave gather); by default the DCN projection is
applied per tap BEFORE sampling (bilinear sampling is linear, so sum_k m_k * sample_k(W_k x) is exact and samples
Cout instead of Cin channels); CoordConv from ``arange`` and folded into ``loc_conv`` as two broadcast terms.

Decoders (batch 1): features flattened once to (256, hw); every einsum is a MatMul over flattened pixels; mask
pooling is ``(M > 0).float() @ F^T``; the stage class/IoU branches (unused by the outputs) are pruned; the
prompt self-attention (diagonal-only mask) is one folded Linear; the prompt cross-attention is either folded on
the query side (``cross="fold"``: cost ~ Np*8*hw*256, no per-pixel key/value projection) or computed with
projected keys/values (``cross="kv"``: fixed 2*hw*256*256 + Np*hw*256, better for many prompts).
"""
import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from rmpsam_edge.modeling.classifier import LOGIT_SCALE
from rmpsam_edge.modeling.prompt_encoding import sine_encoding

DIM = 256
HEADS = 8


# ---------------------------------------------------------------------------------------------- helpers
def _bn_scale_shift(bn: nn.BatchNorm2d) -> Tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    shift = bn.bias.double() - bn.running_mean.double() * scale
    return scale, shift


def _f32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float32).contiguous()


class FusedConv(nn.Module):
    """Conv2d (+ folded BatchNorm) (+ ReLU). Weights are buffers (the graphs are inference-only)."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d = None, relu: bool = False):
        super().__init__()
        w = conv.weight.double()
        b = conv.bias.double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
        if bn is not None:
            scale, shift = _bn_scale_shift(bn)
            w = w * scale.view(-1, 1, 1, 1)
            b = b * scale + shift
        self.register_buffer("weight", _f32(w))
        self.register_buffer("bias", _f32(b))
        self.stride, self.padding, self.relu = conv.stride, conv.padding, relu

    def forward(self, x):
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        return F.relu(y) if self.relu else y


class FusedBlock(nn.Module):
    """ResNet BasicBlock / Bottleneck with folded BN."""

    def __init__(self, block: nn.Module):
        super().__init__()
        convs = [FusedConv(block.conv1, block.bn1, True), FusedConv(block.conv2, block.bn2, hasattr(block, "conv3"))]
        if hasattr(block, "conv3"):
            convs.append(FusedConv(block.conv3, block.bn3, False))
        self.convs = nn.Sequential(*convs)
        self.downsample = None if block.downsample is None else FusedConv(block.downsample[0], block.downsample[1])

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(self.convs(x) + identity)


class FusedDeformLayer(nn.Module):
    """DCNv2 3x3 (+BN+ReLU) -> ConvTranspose x2 (+BN+ReLU), exact restructuring of ``neck.DeformLayer``.

    x (B, Cin, H, W) -> (B, Cout, 2H, 2W). ``per_tap``: project each tap with W_k (Cout, Cin) first, then
    sample the (B*9, Cout, H, W) projections; otherwise sample x (B, Cin, 9H, W) and apply a 1x1 conv over 9*Cin.
    """

    def __init__(self, layer: nn.Module, per_tap: bool = True):
        super().__init__()
        perm = torch.cat((torch.arange(0, 18, 2), torch.arange(1, 18, 2), torch.arange(18, 27)))
        off = layer.dcn_offset
        self.register_buffer("off_weight", _f32(off.weight[perm]))
        self.register_buffer("off_bias", _f32(off.bias[perm]))
        scale, shift = _bn_scale_shift(layer.dcn_bn)
        w = layer.dcn.weight.double() * scale.view(-1, 1, 1, 1)        # (Co, Ci, 3, 3)
        co, ci = w.shape[:2]
        self.co, self.ci, self.per_tap = co, ci, per_tap
        if per_tap:  # (9*Co, Ci, 1, 1), tap-major, taps row-major over the 3x3 window
            self.register_buffer("dcn_weight", _f32(w.permute(2, 3, 0, 1).reshape(9 * co, ci, 1, 1)))
        else:        # (Co, Ci*9, 1, 1), channel order (c, tap) as deform_sample produces
            self.register_buffer("dcn_weight", _f32(w.reshape(co, ci * 9, 1, 1)))
        self.register_buffer("dcn_bias", _f32(shift))
        k = torch.arange(9)
        self.register_buffer("ky", (k // 3 - 1).float().view(1, 9, 1, 1))
        self.register_buffer("kx", (k % 3 - 1).float().view(1, 9, 1, 1))
        uscale, ushift = _bn_scale_shift(layer.up_bn)
        self.register_buffer("up_weight", _f32(layer.up_sample.weight.double() * uscale.view(1, -1, 1, 1)))
        self.register_buffer("up_bias", _f32(ushift))

    def _grid(self, off: torch.Tensor, h, w) -> torch.Tensor:
        """off (B, 18, H, W) [dy x9, dx x9] -> grid (B, 9, H, W, 2) in align_corners=False units."""
        ys = torch.arange(h, dtype=off.dtype).view(1, 1, -1, 1) + self.ky
        xs = torch.arange(w, dtype=off.dtype).view(1, 1, 1, -1) + self.kx
        gy = (2.0 * (ys + off[:, :9]) + 1.0) / h - 1.0
        gx = (2.0 * (xs + off[:, 9:18]) + 1.0) / w - 1.0
        return torch.stack((gx, gy), dim=-1)

    def forward(self, x):
        b, _, h, w = x.shape
        o = F.conv2d(x, self.off_weight, self.off_bias, 1, 1)
        grid = self._grid(o[:, :18], h, w)
        mask = torch.sigmoid(o[:, 18:])                                   # (B, 9, H, W)
        if self.per_tap:
            proj = F.conv2d(x, self.dcn_weight).reshape(-1, self.co, h, w)  # (B*9, Co, H, W)
            s = F.grid_sample(proj, grid.reshape(-1, h, w, 2), mode="bilinear", padding_mode="zeros",
                              align_corners=False)
            y = (s.reshape(-1, 9, self.co, h, w) * mask.unsqueeze(2)).sum(1) + self.dcn_bias.view(1, -1, 1, 1)
        else:
            s = F.grid_sample(x, grid.reshape(-1, 9 * h, w, 2), mode="bilinear", padding_mode="zeros",
                              align_corners=False)                      # (B, Ci, 9H, W)
            cols = (s.reshape(-1, self.ci, 9, h, w) * mask.unsqueeze(1)).reshape(-1, self.ci * 9, h, w)
            y = F.conv2d(cols, self.dcn_weight, self.dcn_bias)
        y = F.relu(y)
        return F.relu(F.conv_transpose2d(y, self.up_weight, self.up_bias, stride=2, padding=1))


# ---------------------------------------------------------------------------------------------- encoder
class EncoderGraph(nn.Module):
    """image (B, 3, H, W) normalised, H and W multiples of 32 -> features (B, 256, H/4, W/4)."""

    def __init__(self, model: nn.Module, per_tap: bool = True):
        super().__init__()
        bb, neck = model.backbone, model.neck
        self.stem = FusedConv(bb.conv1, bb.bn1, True)
        self.layers = nn.ModuleList([nn.Sequential(*[FusedBlock(b) for b in layer])
                                     for layer in (bb.layer1, bb.layer2, bb.layer3, bb.layer4)])
        d = neck.deconv
        self.lateral = nn.ModuleList([FusedConv(c) for c in (d.lateral_conv0, d.lateral_conv1, d.lateral_conv2,
                                                              d.lateral_conv3)])
        self.deform = nn.ModuleList([FusedDeformLayer(l, per_tap) for l in (d.deform_conv1, d.deform_conv2,
                                                                            d.deform_conv3)])
        self.register_buffer("a5", _f32(d.conv_a5.weight))
        self.register_buffer("a4", _f32(d.conv_a4.weight))
        self.register_buffer("a3", _f32(d.conv_a3.weight))
        self.register_buffer("a2", _f32(d.conv_a2.weight))
        self.register_buffer("agg_bias", _f32(d.bias.reshape(-1)))
        self.output_conv = FusedConv(d.output_conv)
        lw = neck.loc_conv.weight.detach()                                # (256, agg+2, 1, 1)
        agg = lw.shape[1] - 2
        self.register_buffer("loc_weight", _f32(lw[:, :agg]))
        self.register_buffer("loc_bias", _f32(neck.loc_conv.bias))
        self.register_buffer("loc_x", _f32(lw[:, agg].reshape(1, -1, 1, 1)))
        self.register_buffer("loc_y", _f32(lw[:, agg + 1].reshape(1, -1, 1, 1)))

    @staticmethod
    def _unit_range(n) -> torch.Tensor:
        """arange(n) mapped to [-1, 1] (a single position maps to -1, as ``coord_channels``)."""
        r = torch.arange(n, dtype=torch.float32)
        return r * (2.0 / r[-1:].clamp(min=1.0)) - 1.0

    def forward(self, image):
        x = F.max_pool2d(self.stem(image), 3, 2, 1)
        c = []
        for layer in self.layers:
            x = layer(x)
            c.append(x)
        c2, c3, c4, c5 = c
        x5 = self.lateral[0](c5)
        x4 = self.deform[0](x5) + self.lateral[1](c4)
        x3 = self.deform[1](x4) + self.lateral[2](c3)
        x2 = self.deform[2](x3) + self.lateral[3](c2)
        h, w = x2.shape[-2:]

        def up(t, weight):
            return F.interpolate(F.conv2d(t, weight), size=(h, w), mode="bilinear", align_corners=False)

        y = (up(x5, self.a5) + up(x4, self.a4) + up(x3, self.a3) + F.conv2d(x2, self.a2)
             + self.agg_bias.view(1, -1, 1, 1))
        y = self.output_conv(y)
        xs = self._unit_range(w).view(1, 1, 1, -1)
        ys = self._unit_range(h).view(1, 1, -1, 1)
        return F.conv2d(y, self.loc_weight, self.loc_bias) + self.loc_x * xs + self.loc_y * ys


# ---------------------------------------------------------------------------------------------- decoders
def _flat(features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """features (1, C, h, w) -> F (C, hw), F^T (hw, C). A reshape (free), not ``[0]`` indexing, which would
    export as a Gather that copies all of F on every call."""
    f = features.reshape(features.shape[1], -1)
    return f, f.t()


def _pool(masks: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """Hard mask sum pooling: masks (N, hw) logits, F^T (hw, C) -> (N, C)."""
    return torch.matmul((masks > 0).float(), ft)


class _Linear(nn.Module):
    """A folded linear map y = x W^T + b from float64 parts."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", _f32(weight))
        self.register_buffer("bias", _f32(bias))

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


def _mha_parts(mha: nn.MultiheadAttention):
    w, b = mha.in_proj_weight.double(), mha.in_proj_bias.double()
    d = mha.embed_dim
    return (w[:d], w[d:2 * d], w[2 * d:], b[:d], b[d:2 * d], b[2 * d:],
            mha.out_proj.weight.double(), mha.out_proj.bias.double())


class StageCore(nn.Module):
    """Cascade stage without the class/IoU branches: pooled -> kernel update -> self-attention -> FFN.

    ``self_attn``: 'independent' (prompt queries: the diagonal-only mask = out_proj(v_proj(k)), one folded
    Linear) or 'full' (object queries, 8-head attention written as matmuls). ``with_mask``: also return the
    stage's new mask logits (N, hw).
    """

    def __init__(self, stage: nn.Module, self_attn: str, with_mask: bool = True):
        super().__init__()
        self.kernel_update = stage.kernel_update
        self.s_atten_norm = stage.s_atten_norm
        self.ffn, self.ffn_norm = stage.ffn, stage.ffn_norm
        self.with_mask = with_mask
        if with_mask:
            self.mask_fcs, self.fc_mask = stage.mask_fcs, stage.fc_mask
        wq, wk, wv, bq, bk, bv, wo, bo = _mha_parts(stage.s_atten)
        self.independent = self_attn == "independent"
        if self.independent:
            self.attn = _Linear(wo @ wv, wo @ bv + bo)
        else:
            s = 1.0 / math.sqrt(DIM // HEADS)
            self.qkv = _Linear(torch.cat((wq * s, wk, wv)), torch.cat((bq * s, bk, bv)))
            self.out = _Linear(wo, bo)

    def _full_attn(self, k):
        n = k.shape[0]
        qkv = self.qkv(k).reshape(n, 3, HEADS, DIM // HEADS).permute(1, 2, 0, 3)   # (3, 8, N, 32)
        a = torch.softmax(torch.matmul(qkv[0], qkv[1].transpose(1, 2)), dim=-1)
        o = torch.matmul(a, qkv[2]).permute(1, 0, 2).reshape(n, DIM)
        return self.out(o)

    def forward(self, f, ft, kernels, masks):
        k = self.kernel_update(_pool(masks, ft), kernels)
        k = self.s_atten_norm(k + (self.attn(k) if self.independent else self._full_attn(k)))
        obj = self.ffn_norm(self.ffn(k))
        if not self.with_mask:
            return obj, None
        return obj, torch.matmul(self.fc_mask(self.mask_fcs(obj)), f)


class FoldedCrossAttention(nn.Module):
    """Prompt adapter attention folded on the query side: never projects pixels to keys/values.

    scores_h = (q_h W_k,h) F (the key bias adds a per-row constant: cancels in the softmax);
    out = sum_h (softmax_h F^T) (W_o,h W_v,h)^T + (W_o b_v + b_o) (softmax rows sum to 1).
    x (Np, 256), F (256, hw), F^T (hw, 256) -> (Np, 256).
    """

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        wq, wk, wv, bq, bk, bv, wo, bo = _mha_parts(mha)
        d, s = DIM // HEADS, 1.0 / math.sqrt(DIM // HEADS)
        m = [wq[h * d:(h + 1) * d].t() @ wk[h * d:(h + 1) * d] * s for h in range(HEADS)]      # (256, 256) each
        c = [bq[h * d:(h + 1) * d] @ wk[h * d:(h + 1) * d] * s for h in range(HEADS)]
        self.query = _Linear(torch.cat(m, dim=1).t(), torch.cat(c))                             # 256 -> 8*256
        u = [wv[h * d:(h + 1) * d].t() @ wo[:, h * d:(h + 1) * d].t() for h in range(HEADS)]   # (256, 256) each
        self.out = _Linear(torch.cat(u, dim=0).t(), wo @ bv + bo)                               # 8*256 -> 256

    def forward(self, x, f, ft):
        n = x.shape[0]
        a = self.query(x).reshape(n * HEADS, DIM)
        p = torch.softmax(torch.matmul(a, f), dim=-1)                     # (Np*8, hw)
        return self.out(torch.matmul(p, ft).reshape(n, HEADS * DIM))


class ProjectedCrossAttention(nn.Module):
    """Prompt adapter attention with keys/values projected once per call (for many prompts).

    x (Np, 256), F (256, hw), F^T (hw, 256) -> (Np, 256). The key bias cancels in the softmax; the value
    bias passes through (rows sum to 1) and is folded into the output bias.
    """

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        wq, wk, wv, bq, bk, bv, wo, bo = _mha_parts(mha)
        s = 1.0 / math.sqrt(DIM // HEADS)
        self.q = _Linear(wq * s, bq * s)
        self.register_buffer("wk", _f32(wk))
        self.register_buffer("wv_t", _f32(wv.t()))
        self.out = _Linear(wo, wo @ bv + bo)

    def forward(self, x, f, ft):
        n, d = x.shape[0], DIM // HEADS
        q = self.q(x).reshape(n, HEADS, d).transpose(0, 1)                # (8, Np, 32)
        k = torch.matmul(self.wk, f).reshape(HEADS, d, -1)                # (8, 32, hw)
        v = torch.matmul(ft, self.wv_t).reshape(-1, HEADS, d).transpose(0, 1)  # (8, hw, 32)
        p = torch.softmax(torch.matmul(q, k), dim=-1)                     # (8, Np, hw)
        return self.out(torch.matmul(p, v).transpose(0, 1).reshape(n, DIM))


class PromptDecoderGraph(nn.Module):
    """features (1, 256, h, w), boxes (Np, 4) normalised (cx, cy, w, h) -> mask_logits (Np, h, w), iou (Np, 1).

    ``cross``: 'fold' (query-side fold, cheaper for few prompts) or 'kv' (projected keys/values, many prompts).
    """

    def __init__(self, model: nn.Module, cross: str = "fold"):
        super().__init__()
        head = model.panoptic_head
        content = (head.pb_embedding.weight[1] + head.mask_tokens.weight[0]).double()
        self.pos = _Linear(head.pos_linear.weight.double(), head.pos_linear.bias.double() + content)
        n = len(head.mask_heads)
        self.stages = nn.ModuleList([StageCore(s, "independent", with_mask=i < n - 1)
                                     for i, s in enumerate(head.mask_heads)])
        if cross not in ("fold", "kv"):
            raise ValueError("cross must be 'fold' or 'kv', got %r" % (cross,))
        self.cross = FoldedCrossAttention(head.prompt_attn.attn) if cross == "fold" else \
            ProjectedCrossAttention(head.prompt_attn.attn)
        self.norm = head.prompt_norm
        self.iou = head.prompt_iou

    def forward(self, features, boxes):
        h, w = features.shape[-2:]
        f, ft = _flat(features)
        k = self.pos(sine_encoding(boxes))                                # (Np, 256)
        m = torch.matmul(k, f)
        for stage in self.stages:
            k, m = stage(f, ft, k, m)
        q = self.norm(k + self.cross(k, f, ft))
        return torch.matmul(q, f).reshape(-1, h, w), self.iou(q)


class ObjectDecoderGraph(nn.Module):
    """features (1, 256, h, w), class_embed (K, P, 768) unit rows -> class_logits (1, 100, K+1) (zero
    background last, 100 * max_p cos), mask_logits (1, 100, h, w), query_embed (1, 100, 256)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        head = model.panoptic_head
        self.register_buffer("kernels", _f32(head.kernels.weight))
        self.num_queries = int(head.kernels.weight.shape[0])  # a constant, so output shapes say 100
        self.stages = nn.ModuleList([StageCore(s, "full") for s in head.mask_heads])
        self.adapter = head.panoptic_attn
        self.cls_proj = head.panoptic_cls
        self.scale = math.exp(LOGIT_SCALE)

    def forward(self, features, class_embed):
        h, w = features.shape[-2:]
        f, ft = _flat(features)
        k = self.kernels
        m = torch.matmul(k, f)
        for stage in self.stages:
            k, m = stage(f, ft, k, m)
        q = self.adapter(_pool(m, ft), k)                                 # (100, 256)
        e = self.cls_proj(q)
        e = e / e.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        kk, p, d = class_embed.shape
        n = self.num_queries
        sims = torch.matmul(e, class_embed.reshape(-1, d).t()).reshape(n, kk, p).max(dim=-1)[0]
        logits = torch.cat((sims, torch.zeros_like(sims[:, :1])), dim=1) * self.scale
        return logits.unsqueeze(0), torch.matmul(q, f).reshape(1, n, h, w), q.unsqueeze(0)


def build_graphs(model: nn.Module, per_tap: bool = True):
    """-> dict name -> eval-mode deploy module (encoder, prompt_decoder, prompt_decoder_many, object_decoder)."""
    model = model.eval()
    graphs = {"encoder": EncoderGraph(model, per_tap), "prompt_decoder": PromptDecoderGraph(model, "fold"),
              "prompt_decoder_many": PromptDecoderGraph(model, "kv"), "object_decoder": ObjectDecoderGraph(model)}
    return {k: v.eval() for k, v in graphs.items()}
