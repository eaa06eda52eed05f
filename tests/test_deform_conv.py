"""DCNv2 via grid_sample against a slow, obviously-correct loop implementation of mmcv's semantics."""
import numpy as np
import torch

from rmpsam_edge.modeling.deform_conv import ModulatedDeformConv2d
from rmpsam_edge.modeling.neck import DeformLayer


def bilinear_zero_pad(img, y, x):
    """img (H, W); value at real (y, x); neighbours outside the image count as 0; far outside -> 0."""
    h, w = img.shape
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return 0.0
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    val = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                val += wy * wx * img[yy, xx]
    return val


def dcn_reference(x, offset, mask, weight):
    """x (C,H,W), offset (18,H,W) as (dy, dx) per tap k = 3*i + j, mask (9,H,W), weight (O,C,3,3) -> (O,H,W)."""
    c, h, w = x.shape
    o = weight.shape[0]
    out = np.zeros((o, h, w))
    for yo in range(h):
        for xo in range(w):
            for i in range(3):
                for j in range(3):
                    k = 3 * i + j
                    py = yo + i - 1 + offset[2 * k, yo, xo]
                    px = xo + j - 1 + offset[2 * k + 1, yo, xo]
                    for ci in range(c):
                        v = bilinear_zero_pad(x[ci], py, px) * mask[k, yo, xo]
                        out[:, yo, xo] += weight[:, ci, i, j] * v
    return out


def test_modulated_deform_conv_matches_reference():
    rng = np.random.default_rng(0)
    c, o, h, w = 3, 4, 5, 6
    x = rng.normal(size=(c, h, w))
    offset = rng.uniform(-2.5, 2.5, size=(18, h, w))  # many samples fall (partly) outside the image
    offset[:, 0, 0] = 0.0                             # one pixel with plain conv taps
    mask = rng.uniform(0, 1, size=(9, h, w))
    conv = ModulatedDeformConv2d(c, o)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(rng.normal(size=(o, c, 3, 3))))
        got = conv(torch.from_numpy(x).float()[None], torch.from_numpy(offset).float()[None],
                   torch.from_numpy(mask).float()[None])[0].double().numpy()
    ref = dcn_reference(x, offset, mask, conv.weight.detach().double().numpy())
    assert np.abs(got - ref).max() < 1e-4, np.abs(got - ref).max()


def test_zero_offsets_unit_mask_is_a_plain_conv():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 7, 9)
    conv = ModulatedDeformConv2d(5, 3)
    got = conv(x, torch.zeros(2, 18, 7, 9), torch.ones(2, 9, 7, 9))
    ref = torch.nn.functional.conv2d(x, conv.weight, padding=1)
    assert torch.allclose(got, ref, atol=1e-5)


def test_one_pixel_wide_maps():
    """Size-1 maps (stride-32 features of a 32-px image) must not divide by zero."""
    conv = ModulatedDeformConv2d(2, 2)
    x = torch.randn(1, 2, 1, 1)
    got = conv(x, torch.zeros(1, 18, 1, 1), torch.ones(1, 9, 1, 1))
    ref = torch.nn.functional.conv2d(x, conv.weight, padding=1)
    assert torch.allclose(got, ref, atol=1e-6)


def test_deform_layer_offset_layout_and_upsampling():
    """DeformLayer concatenates the first two offset chunks as the interleaved (dy, dx) tensor and
    sigmoid-s the third; output is x2 in size."""
    torch.manual_seed(1)
    layer = DeformLayer(4, 3).eval()
    x = torch.randn(1, 4, 6, 5)
    off = layer.dcn_offset(x)
    o1, o2, m = torch.chunk(off, 3, dim=1)
    expect = layer.dcn(x, torch.cat((o1, o2), 1), m.sigmoid())
    expect = torch.relu(layer.up_bn(layer.up_sample(torch.relu(layer.dcn_bn(expect)))))
    got = layer(x)
    assert got.shape == (1, 3, 12, 10)
    assert torch.allclose(got, expect)
