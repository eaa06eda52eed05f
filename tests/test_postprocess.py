"""Mask upsampling, panoptic fusion and instance results (rmpsam_edge.postprocess) on hand-made logits."""
import os

import numpy as np
import pytest

from rmpsam_edge.postprocess import (INSTANCE_OFFSET, instance_results, mask_to_box, panoptic_fusion, rle_decode,
                                     rle_encode, select_instances, sigmoid, softmax, upsample_masks)
from rmpsam_edge.preprocess import ImageMeta

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def meta_for(ori, img, pad):
    return ImageMeta(ori, img, pad, (img[0] / float(ori[0]), img[1] / float(ori[1])))


# ---------------------------------------------------------------------------------------------------------------
# upsampling
@pytest.mark.parametrize("ori, img, pad", [
    ((100, 150), (133, 200), (160, 224)),  # upscale, not multiples of 32
    ((300, 450), (213, 320), (224, 320)),  # downscale
    ((37, 1000), (27, 720), (32, 736)),    # extreme aspect ratio
    ((64, 64), (64, 64), (64, 64)),        # no resize, no pad
])
def test_upsample_matches_torch_interpolate(ori, img, pad):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(5, pad[0] // 4, pad[1] // 4)) * 4).astype(np.float32)
    meta = meta_for(ori, img, pad)
    t = F.interpolate(torch.from_numpy(x)[None], size=pad, mode="bilinear", align_corners=False)
    t = t[:, :, :img[0], :img[1]]
    if img != ori:
        t = F.interpolate(t, size=ori, mode="bilinear", align_corners=False)
    t = t[0].numpy()
    up = upsample_masks(x, meta)
    assert up.shape == (5,) + ori and up.dtype == np.float32
    np.testing.assert_allclose(up, t, atol=1e-4 * float(np.abs(x).max()), rtol=0)
    binary = upsample_masks(x, meta, binary=True)
    assert binary.dtype == bool
    assert (binary != (t > 0)).sum() <= 2  # only pixels within float rounding of 0 may differ


def test_upsample_shape_checks_and_empty():
    meta = meta_for((40, 40), (40, 40), (64, 64))
    assert upsample_masks(np.zeros((0, 16, 16), np.float32), meta).shape == (0, 40, 40)
    with pytest.raises(ValueError, match="do not match"):
        upsample_masks(np.zeros((2, 10, 16), np.float32), meta)
    with pytest.raises(ValueError):
        upsample_masks(np.zeros((16, 16), np.float32), meta)


def test_upsample_constant_and_crop():
    # left half positive in the low-res map of the valid area; padding region strongly negative
    meta = meta_for((48, 80), (48, 80), (64, 96))
    x = np.full((1, 16, 24), -8.0, np.float32)
    x[0, :12, :10] = 8.0  # valid area is 12 x 20 at stride 4
    m = upsample_masks(x, meta, binary=True)[0]
    assert m.shape == (48, 80)
    assert m[:, :38].all() and not m[:, 42:].any()


def test_upsample_matches_the_official_binarised_prompt_masks():
    """The official code's 512x512 binarised prompt masks from its own 128x128 logits (tests/data/ref_r50_small.npz,
    the reference run of test_reference_parity.py, which also checks the panoptic fusion against the official map)."""
    ref = np.load(os.path.join(DATA, "ref_r50_small.npz"))
    meta = meta_for((512, 512), (512, 512), (512, 512))
    official = np.unpackbits(ref["prompt_masks_bin_512"], axis=-1, count=512).astype(bool)
    ours = upsample_masks(ref["prompt_masks"][0], meta, binary=True)
    assert official.shape == ours.shape == (6, 512, 512) and official.any()
    assert (ours != official).sum() == 0


# ---------------------------------------------------------------------------------------------------------------
# boxes and RLE
def test_mask_to_box():
    m = np.zeros((3, 5, 6), bool)
    m[0, 1:3, 2:5] = True
    m[1, 4, 0] = True
    boxes = mask_to_box(m)
    np.testing.assert_array_equal(boxes, np.float32([[2, 1, 5, 3], [0, 4, 1, 5], [0, 0, 0, 0]]))
    np.testing.assert_array_equal(mask_to_box(m[0]), [2, 1, 5, 3])
    assert mask_to_box(np.zeros((0, 4, 4), bool)).shape == (0, 4)


def test_rle_hand_examples_and_round_trip():
    assert rle_encode(np.array([[0, 1], [1, 1]])) == {"size": [2, 2], "counts": [1, 3]}
    assert rle_encode(np.array([[1, 0], [0, 0]])) == {"size": [2, 2], "counts": [0, 1, 3]}
    assert rle_encode(np.zeros((2, 3), bool))["counts"] == [6]
    rng = np.random.default_rng(0)
    m = rng.random((17, 23)) > 0.6
    r = rle_encode(m)
    assert all(type(c) is int for c in r["counts"]) and sum(r["counts"]) == 17 * 23
    np.testing.assert_array_equal(rle_decode(r), m)


# ---------------------------------------------------------------------------------------------------------------
# panoptic fusion on hand-made logits: K = 3 classes (0, 1 things; 2 stuff), void = 3, image 4 x 8
def _panoptic_case():
    H, W = 4, 8
    hi = [10.0, 0.0, 0.0, 0.0]
    cls = np.array([
        hi,                        # q0: thing 0
        hi,                        # q1: thing 0 (second instance)
        [0.0, 0.0, 10.0, 0.0],     # q2: stuff 2
        [0.0, 0.0, 9.0, 0.0],      # q3: stuff 2 again (merged with q2)
        [0.0, 0.0, 0.0, 10.0],     # q4: background -> never kept
        [0.0, 2.0, 0.0, 0.0],      # q5: thing 1, score 0.71 < 0.8
        [0.0, 10.0, 0.0, 0.0],     # q6: thing 1, mostly hidden by q0 -> iou filter
    ], np.float32)
    m = np.full((7, H, W), -5.0, np.float32)
    m[0, :, 0:2] = 5
    m[1, :, 2:4] = 5
    m[2, 0:2, 4:6] = 5
    m[2, :, 7] = -1.0        # q2 is the argmax in column 7 but with sigmoid < 0.5
    m[3, 2:4, 4:6] = 5
    m[4] = 8                 # background query covers everything
    m[5, :, 7] = 3
    m[6, :, 0:2] = 2         # 8 pixels under q0 (which wins there)
    m[6, :, 6] = 2           # 4 pixels where q6 wins -> 4 / 12 < 0.8
    return cls, m


def test_panoptic_fusion_hand_made_defaults():
    cls, m = _panoptic_case()
    pan, segs = panoptic_fusion(cls, m, num_things=2)
    want = np.full((4, 8), 3, np.int32)
    want[:, 0:2] = 0 + 1 * INSTANCE_OFFSET
    want[:, 2:4] = 0 + 2 * INSTANCE_OFFSET
    want[:, 4:6] = 2          # q2 and q3 merged, instance id 0
    # column 6: q6 dropped by iou_thr -> void; column 7: filter_low_score keeps it void
    assert pan.dtype == np.int32
    np.testing.assert_array_equal(pan, want)
    assert [(s["id"], s["label"], s["area"], s["isthing"]) for s in segs] == [
        (1000, 0, 8, True), (2000, 0, 8, True), (2, 2, 8, False)]
    p = softmax(cls)
    assert segs[0]["score"] == pytest.approx(float(p[0].max()), rel=1e-6)
    assert segs[2]["score"] == pytest.approx(float(p[2].max()), rel=1e-6)  # the higher of the merged stuff


def test_panoptic_fusion_hand_made_options():
    cls, m = _panoptic_case()
    # iou_thr 0.3 keeps q6 (4/12 = 0.33): third thing instance, painted where it wins (column 6)
    pan, segs = panoptic_fusion(cls, m, num_things=2, iou_thr=0.3)
    assert np.all(pan[:, 6] == 1 + 3 * INSTANCE_OFFSET)
    assert segs[-1]["id"] == 3001 and segs[-1]["area"] == 4 and segs[-1]["label"] == 1
    # without filter_low_score column 7 goes to its argmax (stuff q2) instead of void
    pan, _ = panoptic_fusion(cls, m, num_things=2, filter_low_score=False)
    assert np.all(pan[:, 7] == 2) and np.all(pan[:, 6] == 3)
    # object_mask_thr 0.5 keeps q5 (score 0.71): thing 1 on column 7, instance id 3 (q6 still dropped)
    pan, segs = panoptic_fusion(cls, m, num_things=2, object_mask_thr=0.5)
    assert np.all(pan[:, 7] == 1 + 3 * INSTANCE_OFFSET) and np.all(pan[:, 6] == 3)
    # every class a stuff class: q0 and q1 merge into one segment of class 0
    pan, segs = panoptic_fusion(cls, m, num_things=0)
    assert np.all(pan[:, 0:4] == 0) and [s["id"] for s in segs] == [0, 2]


def test_panoptic_fusion_nothing_kept_is_void():
    cls = np.tile(np.float32([0, 0, 0, 5]), (3, 1))
    pan, segs = panoptic_fusion(cls, np.ones((3, 5, 6), np.float32), num_things=2)
    assert segs == [] and np.all(pan == 3) and pan.shape == (5, 6)


# ---------------------------------------------------------------------------------------------------------------
# instances on hand-made logits: K = 3 (0, 1 things; 2 stuff)
def test_instance_results_hand_made():
    cls = np.array([[4.0, 0, 0, 0],      # q0: thing 0
                    [0, 3.0, 2.5, 0],    # q1: thing 1 / stuff 2
                    [0, 0, 0, 6.0]], np.float32)  # q2: background
    m = np.full((3, 4, 5), -3.0, np.float32)
    m[0, 1:3, 1:3] = 2.0
    m[1] = -1.0  # empty mask
    m[2, 0, 0] = 1.0
    res = instance_results(cls, m, num_things=2, max_per_image=3)
    # top-3 pairs: (q0, 0), (q1, 1), (q1, 2) -> the stuff pair is dropped
    np.testing.assert_array_equal(res["query_index"], [0, 1])
    np.testing.assert_array_equal(res["labels"], [0, 1])
    s00 = np.exp(4) / (np.exp(4) + 3)
    np.testing.assert_allclose(res["scores"], [s00 * (1 / (1 + np.exp(-2))), 0.0], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(res["boxes"], np.float32([[1, 1, 3, 3], [0, 0, 0, 0]]))
    assert res["masks"].dtype == bool and res["masks"].shape == (2, 4, 5)
    assert res["masks"][0].sum() == 4 and not res["masks"][1].any()
    # max_per_image 1 keeps only (q0, 0); score_thr drops low scores
    assert instance_results(cls, m, 2, max_per_image=1)["query_index"].tolist() == [0]
    assert instance_results(cls, m, 2, max_per_image=3, score_thr=0.5)["labels"].tolist() == [0]
    assert instance_results(cls, m, 2, score_thr=0.99)["masks"].shape == (0, 4, 5)


def test_instance_results_same_query_two_labels_and_sorting():
    cls = np.array([[3.0, 3.0, 0.0], [5.0, 0.0, 0.0]], np.float32)  # K = 2, both things
    m = np.full((2, 3, 3), 2.0, np.float32)
    m[1, 0] = -2.0
    res = instance_results(cls, m, num_things=2, max_per_image=4)
    assert len(res["scores"]) == 4 and np.all(np.diff(res["scores"]) <= 0)
    pairs = sorted(zip(res["query_index"].tolist(), res["labels"].tolist()))
    assert pairs == [(0, 0), (0, 1), (1, 0), (1, 1)]
    q, l, s = select_instances(cls, 2, 2)
    assert q.tolist() == [1, 0] and l.tolist() == [0, 0]  # stable order on ties: lower flat index first


def test_sigmoid_softmax_stable():
    x = np.array([-1000.0, 0.0, 1000.0], np.float32)
    np.testing.assert_array_equal(sigmoid(x), np.float32([0.0, 0.5, 1.0]))
    np.testing.assert_allclose(softmax(np.float32([[1000, 1000]])), [[0.5, 0.5]])
