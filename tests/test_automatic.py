"""Automatic mask generation (everything mode): grid prompts, mask NMS, the generator on a Predictor."""
import numpy as np
import pytest

from rmpsam_edge.automatic import grid_points, mask_iou_matrix, mask_nms


def _rect(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_grid_points_are_cell_centres():
    p = grid_points(100, 200, 4)
    assert p.shape == (16, 2) and p.dtype == np.float32
    assert sorted(set(p[:, 0].tolist())) == [25.0, 75.0, 125.0, 175.0]
    assert sorted(set(p[:, 1].tolist())) == [12.5, 37.5, 62.5, 87.5]
    with pytest.raises(ValueError):
        grid_points(10, 10, 0)


def test_mask_iou_matrix_exact():
    a = _rect(10, 10, 0, 10, 0, 5)   # 50 px
    b = _rect(10, 10, 0, 10, 0, 10)  # 100 px, contains a
    c = _rect(10, 10, 0, 0, 0, 0)    # empty
    iou = mask_iou_matrix(np.stack([a, b, c]))
    assert iou[0, 1] == pytest.approx(0.5) and iou[1, 0] == pytest.approx(0.5)
    assert iou[0, 0] == pytest.approx(1.0) and iou[2, 2] == 0.0 and iou[0, 2] == 0.0


def test_nms_removes_duplicates_keeps_distinct_best_first():
    h, w = 64, 64
    big = _rect(h, w, 0, 32, 0, 32)
    big_dup = _rect(h, w, 0, 32, 0, 30)      # IoU 0.94 with big
    other = _rect(h, w, 40, 60, 40, 60)
    overlap = _rect(h, w, 0, 32, 16, 48)     # IoU 1/3 with big: a different object
    tiny = _rect(h, w, 62, 63, 0, 2)         # 2 px
    everything = np.ones((h, w), bool)       # the whole image
    masks = np.stack([big_dup, big, other, overlap, tiny, everything])
    scores = np.array([0.8, 0.9, 0.7, 0.6, 0.99, 0.95])
    keep = mask_nms(masks, scores, iou_threshold=0.7, min_area=4, max_area_fraction=0.9)
    assert keep.tolist() == [1, 2, 3]
    # the duplicate survives when its twin is gone, and a higher threshold keeps both
    assert mask_nms(masks[[0, 2]], scores[[0, 2]]).tolist() == [0, 1]
    assert mask_nms(masks[:2], scores[:2], iou_threshold=0.95).tolist() == [1, 0]
    # score threshold and max_masks
    assert mask_nms(masks, scores, score_threshold=0.75, max_area_fraction=0.9, min_area=4).tolist() == [1]
    assert mask_nms(masks, scores, max_masks=2, min_area=4, max_area_fraction=0.9).tolist() == [1, 2]


def test_nms_large_masks_downsampled_and_empty_input():
    h, w = 600, 800
    a = _rect(h, w, 0, 300, 0, 400)
    b = _rect(h, w, 0, 300, 0, 396)
    keep = mask_nms(np.stack([a, b]), np.array([0.5, 0.6]), max_side=128)
    assert keep.tolist() == [1]
    assert mask_nms(np.zeros((0, 5, 5), bool), np.zeros(0)).shape == (0,)
    with pytest.raises(ValueError):
        mask_nms(np.stack([a, b]), np.array([0.5]))


def test_generator_decodes_the_grid_in_one_call_and_keeps_distinct_masks():
    from rmpsam_edge.automatic import AutomaticMaskGenerator
    from rmpsam_edge.predictor import Predictor
    from rmpsam_edge.spec import ModelSpec
    from test_predictor import FakeRunner  # each click's mask is its 6-pixel box: 16 distinct masks

    runner = FakeRunner()
    image = np.full((96, 160, 3), 128, np.uint8)
    out = AutomaticMaskGenerator(Predictor(runner, ModelSpec("r18", input_size=160)), points_per_side=4,
                                 min_area_fraction=0.0).generate(image)
    assert runner.calls["prompt_decoder"] == 1 and runner.last_num_prompts == 16
    assert out["masks"].shape == (16, 96, 160) and out["masks"].dtype == bool
    assert out["scores"].shape == (16,) and (np.diff(out["scores"]) <= 0).all()  # best first
    for m, (x, y) in zip(out["masks"], out["points"]):
        assert m[int(y), int(x)]  # each mask covers the click behind it
    assert {"encoder", "decoder", "postprocess"} <= set(out["timings"])
