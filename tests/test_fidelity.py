"""Fidelity metrics and verdicts on hand-made arrays."""
import numpy as np
import pytest

from rmpsam_edge.quantize import fidelity as fd
from rmpsam_edge.runtime import compare as cm


def test_feature_metrics():
    a = np.arange(1, 13, dtype=np.float32).reshape(1, 3, 2, 2)
    m = cm.feature_metrics(a, a)
    assert m["cosine"] == pytest.approx(1.0) and m["max_abs_error"] == 0.0
    b = a.copy()
    b[0, 0, 0, 0] += 3.0
    m = cm.feature_metrics(a, b)
    assert m["max_abs_error"] == pytest.approx(3.0) and m["max_abs_error_rel"] == pytest.approx(3.0 / 12)
    assert m["cosine"] < 1.0
    assert cm.feature_metrics(a, -a)["cosine"] == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        cm.feature_metrics(a, a[..., :1])


def test_mask_ious_and_worst_decile():
    ref = np.zeros((3, 4, 4), bool)
    test = np.zeros((3, 4, 4), bool)
    ref[0, :2] = True             # 8 px
    test[0, 1:3] = True           # 8 px, 4 shared -> IoU 4/12
    ref[1] = True
    test[1] = True                # identical -> 1
    # mask 2: both empty -> 1
    np.testing.assert_allclose(cm.mask_ious(ref, test), [1 / 3, 1.0, 1.0])
    vals = np.linspace(0.0, 1.0, 20)
    assert cm.worst_decile(vals) == pytest.approx(vals[:2].mean())
    assert cm.worst_decile([0.7]) == pytest.approx(0.7)


def test_panoptic_metrics_ignore_instance_ids_but_not_classes():
    ref = np.full((4, 6), 5, np.int32)          # void = 5 (K)
    ref[:, :3] = 1 + 1000                        # thing class 1, instance 1
    ref[:, 3:] = 3                               # stuff class 3
    test = ref.copy()
    test[:, :3] = 1 + 2000                       # same segment, other instance id
    segs_r = [{"id": 1001}, {"id": 3}]
    segs_t = [{"id": 2001}, {"id": 3}]
    m = cm.panoptic_metrics(ref, test, segs_r, segs_t)
    assert m["class_agreement"] == 1.0 and m["segment_agreement"] == 1.0
    assert m["matched_iou"] == 1.0 and m["matched"] == 2
    test2 = ref.copy()
    test2[:, 2:] = 3                             # one column of the thing became stuff
    m2 = cm.panoptic_metrics(ref, test2, segs_r, [{"id": 1001}, {"id": 3}])
    assert m2["class_agreement"] == pytest.approx(20 / 24)
    assert m2["matched_iou"] == pytest.approx(np.mean([8 / 12, 12 / 16]))
    empty = cm.panoptic_metrics(np.full((2, 2), 5), np.full((2, 2), 5), [], [])
    assert empty["matched_iou"] == 1.0 and empty["segment_agreement"] == 1.0


def test_verdicts_and_thresholds():
    th = cm.default_thresholds("int8")
    assert th["mask_iou_mean"] == (">=", 0.95) and cm.default_thresholds("fp16")["mask_iou_mean"] == (">=", 0.99)
    th = cm.default_thresholds("int8", min_mask_iou=0.9)
    assert th["mask_iou_mean"] == (">=", 0.9)
    v = cm.verdicts({"mask_iou_mean": 0.91, "iou_score_abs_error": 0.2, "feature_cosine": float("nan")}, th)
    assert v["mask_iou_mean"]["pass"] and not v["iou_score_abs_error"]["pass"] and not v["feature_cosine"]["pass"]
    assert "panoptic_class_agreement" not in v  # metrics that were not measured get no verdict
    assert cm.failed(v) == []  # only the gating metric (mask IoU) decides pass/fail
    every = cm.failed(v, gated_only=False)
    assert any(f.startswith("iou_score_abs_error 0.2 > 0.05") for f in every) and len(every) == 2
    gate = cm.gate_metrics(["encoder", "object_decoder"])
    assert gate == ["mask_iou_mean", "query_class_agreement"] and cm.gate_metrics(["encoder"]) == ["mask_iou_mean"]
    v = cm.verdicts({"mask_iou_mean": 0.5, "query_class_agreement": 0.1}, th, gate)
    assert cm.failed(v) == ["mask_iou_mean 0.5 < 0.9", "query_class_agreement 0.1 < 0.9"]


class _FakeRunner(object):
    """Encoder = identity-ish, decoders from simple arithmetic: lets compare_runners run without a model."""

    def __init__(self, noise=0.0):
        self.noise = noise

    def encode(self, x):
        f = np.repeat(x[:, :1, ::4, ::4], 4, axis=1)
        return f + self.noise

    def decode_prompts(self, feats, boxes):
        n = len(boxes)
        m = np.repeat(feats[0, :1], n, axis=0) - boxes[:, :1, None]
        return m.astype(np.float32), np.full((n, 1), 0.5 + self.noise, np.float32)

    def decode_objects(self, feats, class_embed):
        cls = np.zeros((1, 3, class_embed.shape[0] + 1), np.float32)
        cls[0, :, 0] = 10.0
        return cls, np.repeat(feats[:, :1], 3, axis=1), np.zeros((1, 3, 4), np.float32)


def test_compare_runners_end_to_end_on_fakes():
    from rmpsam_edge.preprocess import preprocess
    from rmpsam_edge.spec import ModelSpec
    rng = np.random.RandomState(0)
    spec = ModelSpec("r18", input_size=64)
    inputs = [preprocess(rng.randint(0, 255, (40, 64, 3)).astype(np.uint8), spec)]
    prompts = [(np.array([[0.5, 0.5, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1]], np.float32), ["box", "box"])]
    embed = np.ones((2, 1, 768), np.float32)
    same = cm.compare_runners(_FakeRunner(), _FakeRunner(), inputs, prompts, embed, 1)
    assert same["feature_cosine"] == pytest.approx(1.0) and same["mask_iou_mean"] == 1.0
    assert same["mask_iou_mean_large"] == 1.0 and 0 < same["prompts_large"] <= same["prompts"] == 2
    assert same["panoptic_class_agreement"] == 1.0 and same["query_class_agreement"] == 1.0
    off = cm.compare_runners(_FakeRunner(), _FakeRunner(noise=0.3), inputs, prompts, embed, 1)
    assert off["mask_iou_mean"] < 1.0 and off["iou_score_abs_error"] == pytest.approx(0.3, abs=1e-6)
    lat = fd.latency({"a": _FakeRunner(), "b": _FakeRunner()}, inputs[0][0], prompts[0][0][:1], embed, runs=2,
                     warmup=1)
    assert set(lat) == {"a", "b"} and lat["a"]["encoder_plus_prompt_1"] >= lat["a"]["encoder"] >= 0


def test_diff_row_scale_relative_and_sign_agreement():
    ref = np.array([[2.0, -1.0], [0.5, -0.5]], np.float32)
    assert cm.diff_row("x", ref, ref, 1e-4)["ok"]
    row = cm.diff_row("m", ref * [[1, 1], [1, -1]], ref, 1.0, agreement=0.9)  # one of four signs flips
    assert row["rel"] == pytest.approx(0.5) and row["mask_agreement"] == 0.75 and not row["ok"]
    assert not cm.diff_row("x", ref[:1], ref, 1.0)["ok"] and "shape" in cm.diff_row("x", ref[:1], ref, 1.0)["error"]
