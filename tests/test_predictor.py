"""Predictor on a fake runner: call counts, shapes at the original size, coordinate mapping, batching, caching."""
import os

import numpy as np
import pytest

from rmpsam_edge.errors import UserError
from rmpsam_edge.media import asset_path
from rmpsam_edge.postprocess import instance_results, panoptic_fusion, upsample_masks
from rmpsam_edge.predictor import Predictor
from rmpsam_edge.runtime.base import Runner
from rmpsam_edge.spec import ModelSpec

ASSETS = asset_path("images")


class FakeRunner(Runner):
    """Deterministic stand-in for a model bundle, per-prompt independent.

    encoder: features (1, 5, H/4, W/4): channels 0/1 hold the resized image height/width (found from the
    zero padding of the input), 2..4 the 4x4-pooled input. prompt decoder: each prompt's mask logit is the
    signed distance (in resized pixels) of every stride-4 pixel centre to the prompt's box edges, so the
    mask is exactly the box; iou = a function of the box. object decoder: Q queries, query q positive on the
    q-th vertical stripe of the image; its class is q % (K+1) (class K = background)."""

    name = "fake"

    def __init__(self, num_queries=8):
        self.calls = {"encoder": 0, "prompt_decoder": 0, "object_decoder": 0}
        self.num_queries = num_queries
        self.last_num_prompts = None

    def infer(self, graph, feeds):
        self.calls[graph] += 1
        return getattr(self, "_" + graph)(**feeds)

    def _encoder(self, image):
        _, _, H, W = image.shape
        valid = np.any(image[0] != 0, axis=0)
        h_r = int(np.flatnonzero(valid.any(axis=1)).max()) + 1
        w_r = int(np.flatnonzero(valid.any(axis=0)).max()) + 1
        f = np.zeros((1, 5, H // 4, W // 4), np.float32)
        f[0, 0], f[0, 1] = h_r, w_r
        f[0, 2:] = image[0].reshape(3, H // 4, 4, W // 4, 4).mean(axis=(2, 4))
        return {"features": f}

    def _prompt_decoder(self, features, boxes):
        assert features.shape[0] == 1 and boxes.ndim == 2 and boxes.shape[1] == 4
        self.last_num_prompts = len(boxes)
        h_r, w_r = float(features[0, 0, 0, 0]), float(features[0, 1, 0, 0])
        h, w = features.shape[2:]
        ys = (np.arange(h) * 4 + 1.5)[:, None]
        xs = (np.arange(w) * 4 + 1.5)[None, :]
        out = np.zeros((len(boxes), h, w), np.float32)
        for i, (cx, cy, bw, bh) in enumerate(boxes.astype(np.float64)):
            x1, x2 = (cx - bw / 2) * w_r, (cx + bw / 2) * w_r
            y1, y2 = (cy - bh / 2) * h_r, (cy + bh / 2) * h_r
            out[i] = np.minimum(np.minimum(xs - x1, x2 - xs), np.minimum(ys - y1, y2 - ys))
        iou = (boxes[:, :1] * 0.5 + boxes[:, 1:2] * 0.25).astype(np.float32)
        return {"mask_logits": out, "iou": iou}

    def _object_decoder(self, features, class_embed):
        k = class_embed.shape[0]
        h, w = features.shape[2:]
        w_r = float(features[0, 1, 0, 0])
        q = self.num_queries
        cls = np.zeros((1, q, k + 1), np.float32)
        cls[0, np.arange(q), np.arange(q) % (k + 1)] = 10.0
        xs = np.arange(w) * 4 + 1.5
        stripe = np.floor(xs / w_r * q)
        masks = np.where(stripe[None, None, :] == np.arange(q)[:, None, None], 6.0, -6.0)
        masks = np.broadcast_to(masks, (q, h, w)).astype(np.float32)[None]
        query = np.eye(q, 256, dtype=np.float32)[None]
        return {"class_logits": cls, "mask_logits": masks, "query_embed": query}


def make_spec(input_size=200, k=3, things=2, vocab=True):
    embed = np.ones((k, 2, 768), np.float32) if vocab else None
    names = ["cat", "dog", "grass"][:k] if vocab else None
    return ModelSpec("r18", input_size=input_size, class_embed=embed, class_names=names,
                     num_things=things if vocab else None)


def image(h=100, w=150, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def iou(a, b):
    return (a & b).sum() / float((a | b).sum())


# ---------------------------------------------------------------------------------------------------------------
def test_one_encoder_call_per_image_one_decoder_call_per_predict():
    runner = FakeRunner()
    p = Predictor(runner, make_spec())
    meta = p.set_image(image())
    assert runner.calls["encoder"] == 1 and meta.img_shape == (133, 200) and meta.pad_shape == (160, 224)
    pts = [[10, 10], [75, 50], [140, 90]]
    boxes = [[5, 5, 60, 40], [30, 20, 120, 80]]
    masks, scores = p.predict(points=pts, boxes=boxes)
    assert runner.calls == {"encoder": 1, "prompt_decoder": 1, "object_decoder": 0}
    assert runner.last_num_prompts == 5
    assert masks.shape == (5, 100, 150) and masks.dtype == bool
    assert scores.shape == (5,) and scores.dtype == np.float32
    p.predict(points=[[1, 2]])
    p.predict(boxes=np.array(boxes))
    assert runner.calls["encoder"] == 1 and runner.calls["prompt_decoder"] == 3
    assert set(p.timings) == {"preprocess", "encoder", "prompts", "decoder", "postprocess"}
    assert all(v >= 0 for v in p.timings.values())


def test_batched_prompts_equal_one_by_one():
    p = Predictor(FakeRunner(), make_spec())
    p.set_image(image(seed=3))
    pts = [[10, 10], [75, 50]]
    boxes = [[5, 5, 60, 40], [30, 20, 120, 80], [-10, 50, 40, 130]]
    masks, scores = p.predict(points=pts, boxes=boxes)
    singles = [p.predict(points=[q]) for q in pts] + [p.predict(boxes=[b]) for b in boxes]
    np.testing.assert_array_equal(masks, np.concatenate([m for m, _ in singles]))
    np.testing.assert_array_equal(scores, np.concatenate([s for _, s in singles]))


def test_masks_land_on_the_prompt_in_original_pixels():
    # 100x150 -> resized 133x200 -> padded 160x224: both scale and padding must be handled
    p = Predictor(FakeRunner(), make_spec(input_size=200))
    p.set_image(image())
    box_mask = p.predict(boxes=[[30, 20, 120, 80]])[0][0]
    want = np.zeros((100, 150), bool)
    want[20:80, 30:120] = True
    assert iou(box_mask, want) > 0.95
    masks, _ = p.predict(points=[[75, 50], [140, 90]])
    for m, (x, y) in zip(masks, [(75, 50), (140, 90)]):
        assert m[y, x] and m.sum() < 60  # a small blob (6 resized px ~ 4.5 original px) around the click
        ys, xs = np.nonzero(m)
        assert abs(xs.mean() - x) < 1.5 and abs(ys.mean() - y) < 1.5


def test_official_resize_policy_and_logits():
    p = Predictor(FakeRunner(), make_spec(input_size=None))
    meta = p.set_image(image(48, 64))
    assert meta.img_shape == (800, 1067) and meta.pad_shape == (800, 1088)
    masks, scores, logits = p.predict(boxes=[[8, 8, 40, 30]], return_logits=True)
    assert masks.shape == (1, 48, 64) and logits.shape == (1, 200, 272) and logits.dtype == np.float32
    np.testing.assert_array_equal(upsample_masks(logits, p.meta) > 0, masks)
    want = np.zeros((48, 64), bool)
    want[8:30, 8:40] = True
    assert iou(masks[0], want) > 0.95


def test_set_image_from_path_and_gray(tmp_path):
    runner = FakeRunner()
    p = Predictor(runner, make_spec(input_size=128))
    p.set_image(os.path.join(ASSETS, "coffee.jpg"))
    assert p.image.ndim == 3 and p.meta.ori_shape == p.image.shape[:2]
    p.set_image(np.full((30, 40), 77, np.uint8))
    assert p.image.shape == (30, 40, 3) and runner.calls["encoder"] == 2
    with pytest.raises(UserError, match="cannot read image"):
        p.set_image(str(tmp_path / "nope.jpg"))


def test_panoptic_and_instances_decode_once_per_image():
    runner = FakeRunner(num_queries=8)
    spec = make_spec(k=3, things=2)
    p = Predictor(runner, spec)
    p.set_image(image(90, 160))
    pan, segs = p.panoptic()
    inst = p.instances()
    assert runner.calls["object_decoder"] == 1 and p.timings["decoder"] == 0.0
    assert pan.shape == (90, 160) and pan.dtype == np.int32
    # queries 0..7 get classes 0,1,2,bg,0,1,2,bg: things are cat/dog, grass is stuff (two stripes merged)
    assert [s["name"] for s in segs] == ["cat", "dog", "grass", "cat", "dog"]
    assert [s["id"] for s in segs] == [1000, 2001, 2, 3000, 4001]
    assert sum(s["area"] for s in segs) + (pan == 3).sum() == 90 * 160
    stripe = 160 / 8.0
    assert abs(segs[0]["area"] - stripe * 90) <= 2 * 90 and abs(segs[2]["area"] - 2 * stripe * 90) <= 4 * 90
    assert inst["masks"].shape[1:] == (90, 160) and inst["names"][0] in ("cat", "dog")
    assert len(inst["scores"]) == 16  # 8 queries x 2 thing classes (top-100 of 8 x 3 pairs, things only)
    top = set(zip(inst["query_index"][:4].tolist(), inst["labels"][:4].tolist()))
    assert top == {(0, 0), (1, 1), (4, 0), (5, 1)} and np.all(inst["scores"][:4] > 0.9)
    for m, b in zip(inst["masks"], inst["boxes"]):
        if m.any():
            assert b[1] == 0 and b[3] == 90 and b[2] - b[0] <= stripe + 3
    p.set_image(image(90, 160, seed=1))
    p.instances()
    assert runner.calls["object_decoder"] == 2


def test_fast_paths_equal_full_computation():
    runner = FakeRunner(num_queries=8)
    p = Predictor(runner, make_spec(k=3, things=2))
    p.set_image(image(70, 130))
    cls, masks, query = p.object_outputs()
    assert cls.shape == (8, 4) and masks.shape == (8,) + p.meta.feat_shape and query.shape == (8, 256)
    full = upsample_masks(masks, p.meta)
    pan, segs = p.panoptic()
    pan_ref, segs_ref = panoptic_fusion(cls, full, 2)
    np.testing.assert_array_equal(pan, pan_ref)
    assert [dict(s, name=None) for s in segs] == [dict(s, name=None) for s in segs_ref]
    for thr in (0.0, 0.5):
        inst = p.instances(score_thr=thr)
        ref = instance_results(cls, full, 2, score_thr=thr)
        for key in ("scores", "labels", "masks", "boxes", "query_index"):
            np.testing.assert_array_equal(inst[key], ref[key])


def test_errors():
    p = Predictor(FakeRunner(), make_spec(vocab=False))
    with pytest.raises(RuntimeError, match="set_image"):
        p.predict(points=[[1, 1]])
    p.set_image(image())
    with pytest.raises(UserError, match="no class vocabulary"):
        p.panoptic()
    with pytest.raises(UserError, match="no class vocabulary"):
        p.instances()
    with pytest.raises(UserError, match="no prompt"):
        p.predict()
    with pytest.raises(UserError, match="outside the image"):
        p.predict(points=[[500, 5]])

    class BadRunner(FakeRunner):
        def _encoder(self, image):
            return {"features": np.zeros((1, 5, 3, 3), np.float32)}

    with pytest.raises(RuntimeError, match="features of shape"):
        Predictor(BadRunner(), make_spec()).set_image(image())


# ---------------------------------------------------------------------------------------------------------------
# overlays of the predictor's outputs (rmpsam_edge.visualize)
def test_overlay_masks_colours_and_leaves_input_alone():
    from rmpsam_edge import visualize
    img = np.full((120, 160, 3), 100, np.uint8)
    before = img.copy()
    masks = np.zeros((2, 120, 160), bool)
    masks[0, 10:60, 10:70] = True
    masks[1, 70:110, 90:150] = True
    out = visualize.overlay_masks(img, masks, ids=[7, 42], boxes=[[10, 10, 70, 60]], points=[[140, 20]])
    np.testing.assert_array_equal(img, before)
    assert out.dtype == np.uint8 and out.shape == img.shape
    c7 = np.float32(visualize.color_for(7))
    np.testing.assert_allclose(out[50, 20], 100 * 0.5 + c7 * 0.5, atol=1)  # inside mask 0, away from text
    assert np.all(out[65, 80] == 100)  # outside every mask, box, label and marker
    assert tuple(out[20, 140]) != (100, 100, 100)  # the click marker
    # the same id gets the same colour in another frame, wherever the mask is
    m2 = np.zeros((1, 120, 160), bool)
    m2[0, 60:119, 0:60] = True
    np.testing.assert_array_equal(visualize.overlay_masks(img, m2, ids=[7])[115, 5], out[50, 20])
    assert len({visualize.color_for(k) for k in range(1, 21)}) == 20
    with pytest.raises(ValueError):
        visualize.overlay_masks(img, np.zeros((1, 10, 10), bool))


def test_banners_and_panoptic_overlay():
    from rmpsam_edge import visualize
    img = np.full((100, 200, 3), 200, np.uint8)
    top = visualize.overlay_masks(img, np.zeros((0, 100, 200), bool), banner="random weights")
    assert np.all(top[1, 150] < 100) and np.all(top[90] == 200)  # dark strip at the top only
    bottom = visualize.banner(img, "12.3 ms", position="bottom")
    assert np.all(bottom[98, 150] < 100) and np.all(bottom[10] == 200)
    pan = np.full((100, 200), 3, np.int32)  # K = 3 -> void
    pan[:, :80] = 2                          # stuff class 2
    pan[60:, 120:] = 1 + 1000                # thing class 1, instance 1
    segs = [{"id": 2, "label": 2, "score": 0.9, "isthing": False},
            {"id": 1001, "label": 1, "score": 0.8, "isthing": True}]
    out = visualize.panoptic_overlay(img, pan, segs, ["cat", "dog", "grass"], 3, banner="demo")
    assert np.all(out[50, 100] == 200)  # void stays untouched
    assert tuple(out[95, 5]) != (200, 200, 200) and tuple(out[95, 195]) != (200, 200, 200)
    assert tuple(out[95, 5]) != tuple(out[95, 195])
