"""Prompt encoding against hand-computed values, and batched prompts equal one-by-one prompts."""
import math

import numpy as np
import torch

from rmpsam_edge.modeling import build_model
from rmpsam_edge.modeling.prompt_encoding import sine_encoding


def test_sine_encoding_hand_computed():
    box = torch.tensor([[0.5, 0.25, 0.1, 0.2]])  # cx, cy, w, h
    e = sine_encoding(box)[0].double().numpy()
    assert e.shape == (512,)
    # block order [cy, cx, w, h]; inside a block: sin at even, cos at odd index, t_i = 10000^(2*(i//2)/128)
    assert math.isclose(e[0], math.sin(0.25 * 2 * math.pi), abs_tol=1e-6)        # cy, i=0 -> 1
    assert math.isclose(e[1], math.cos(0.25 * 2 * math.pi), abs_tol=1e-6)        # cy, i=1 -> 0
    t2 = 10000 ** (2 / 128)
    assert math.isclose(e[2], math.sin(0.25 * 2 * math.pi / t2), abs_tol=1e-6)
    assert math.isclose(e[3], math.cos(0.25 * 2 * math.pi / t2), abs_tol=1e-6)
    assert math.isclose(e[128], math.sin(0.5 * 2 * math.pi), abs_tol=1e-6)        # cx block starts at 128
    assert math.isclose(e[129], math.cos(0.5 * 2 * math.pi), abs_tol=1e-6)        # -1
    assert math.isclose(e[256], math.sin(0.1 * 2 * math.pi), abs_tol=1e-6)        # w
    assert math.isclose(e[385], math.cos(0.2 * 2 * math.pi), abs_tol=1e-6)        # h, odd -> cos
    t126 = 10000 ** (126 / 128)
    assert math.isclose(e[127], math.cos(0.25 * 2 * math.pi / t126), abs_tol=1e-6)


def test_batched_prompts_equal_one_by_one():
    torch.manual_seed(0)
    model = build_model("r18")
    with torch.no_grad():
        feats = model.encode(torch.randn(1, 3, 96, 128))
        boxes = torch.tensor([[0.5, 0.5, 0.05, 0.06], [0.2, 0.7, 0.3, 0.4], [0.9, 0.1, 0.1, 0.1],
                              [0.4, 0.4, 0.8, 0.8], [0.5, 0.5, 0.05, 0.06]])
        masks, iou = model.decode_prompts(feats, boxes)
        assert masks.shape == (5, 24, 32) and iou.shape == (5, 1)
        for i in range(len(boxes)):
            m1, s1 = model.decode_prompts(feats, boxes[i:i + 1])
            assert torch.allclose(m1[0], masks[i], atol=1e-4, rtol=1e-4)
            assert torch.allclose(s1[0], iou[i], atol=1e-5)
    assert torch.allclose(masks[0], masks[4], atol=1e-4)  # identical prompts give the same outputs
    assert not torch.allclose(masks[0], masks[1])
