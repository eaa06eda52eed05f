import json
import os

import numpy as np
import pytest
import torch

from rmpsam_edge.errors import UserError
from rmpsam_edge.training import batching
from rmpsam_edge.training.losses import class_loss, dice_loss
from rmpsam_edge.training.matching import bce_cost, dice_cost, hungarian_match
from rmpsam_edge.training.metrics import PanopticQuality, mask_iou, track_identity
from rmpsam_edge.training.synthetic import CLASS_NAMES, NUM_THINGS, SceneGenerator
from rmpsam_edge.training.vocab import demo_class_embed, save_vocab

torch.set_num_threads(1)


# ------------------------------------------------------------------ vocabulary
def test_vocab_official_format_and_lead_loader(tmp_path):
    pth, js = save_vocab(str(tmp_path))
    t = torch.load(pth, weights_only=True)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    assert tuple(t.shape) == (len(CLASS_NAMES), 1, 768)
    assert torch.allclose(t.norm(dim=-1), torch.ones(len(CLASS_NAMES), 1), atol=1e-5)
    assert np.array_equal(t.numpy(), demo_class_embed()), "seeded: identical every time"
    meta = json.load(open(js))
    assert meta["class_names"] == CLASS_NAMES and meta["num_things"] == NUM_THINGS and "not CLIP" in meta["note"]
    from rmpsam_edge.checkpoint import load_vocabulary
    embed, names, things = load_vocabulary(pth)
    assert embed.shape == (7, 1, 768) and names == CLASS_NAMES and things == NUM_THINGS


# ------------------------------------------------------------------ matching / losses
def test_matching_costs_and_assignment_on_hand_made_case():
    # 3 queries, 2 ground-truth masks on 4 pixels
    gt = torch.tensor([[1., 1., 0., 0.], [0., 0., 1., 1.]])
    big = 20.0
    pred = torch.tensor([[-big, -big, big, big],    # query 0 = gt 1
                         [big, big, -big, -big],    # query 1 = gt 0
                         [big, -big, big, -big]])   # query 2 = half of each
    d = dice_cost(pred, gt)
    assert d[0, 1] < 1e-3 and d[1, 0] < 1e-3 and d[0, 0] > 0.6
    b = bce_cost(pred, gt)
    assert b[0, 1] < 1e-3 and b[2, 0] == pytest.approx(b[2, 1]) and b[2, 0] == pytest.approx(big / 2, rel=1e-3)
    cls = torch.zeros(3, 4)  # K = 3 classes + background
    q, g = hungarian_match(cls, pred, torch.tensor([0, 2]), gt)
    assert dict(zip(q.tolist(), g.tolist())) == {1: 0, 0: 1}
    # the class cost decides when masks are equal
    same = torch.zeros(2, 4)
    cls2 = torch.tensor([[0., 9., 0., 0.], [9., 0., 0., 0.]])
    q, g = hungarian_match(cls2, same, torch.tensor([0, 1]), gt)
    assert dict(zip(q.tolist(), g.tolist())) == {1: 0, 0: 1}


def test_losses_on_known_values():
    t = torch.tensor([[1., 1., 0., 0.]])
    assert dice_loss(torch.tensor([[30., 30., -30., -30.]]), t) < 1e-4
    assert dice_loss(torch.tensor([[-30., -30., 30., 30.]]), t) == pytest.approx(1 - 1 / 5., abs=1e-4)
    logits = torch.tensor([[0., 0., 5.], [5., 0., 0.]])
    full = class_loss(logits, torch.tensor([2, 2]), 2, no_object_weight=1.0)
    weighted = class_loss(logits, torch.tensor([0, 2]), 2, no_object_weight=0.1)
    assert full > 0 and weighted > 0 and not torch.isclose(full, weighted)


def test_prompt_sampling_and_box_encoding():
    s = SceneGenerator(96, "train").image(1)
    rng = np.random.default_rng(0)
    boxes, idx, is_pt = batching.sample_prompts(rng, s["masks"], 8)
    assert boxes.shape == (8, 4) and len(idx) == 8
    for b, i, p in zip(boxes, idx, is_pt):
        if p:
            assert b[2] - b[0] == pytest.approx(6) and b[3] - b[1] == pytest.approx(6)
            cx, cy = int((b[0] + b[2]) / 2), int((b[1] + b[3]) / 2)
            assert s["masks"][i][min(cy, 95), min(cx, 95)], "a click lies on its segment"
    x = batching.normalise_images([np.full((32, 64, 3), 255, np.uint8)])
    assert tuple(x.shape) == (1, 3, 32, 64) and float(x[0, 0, 0, 0]) == pytest.approx((255 - 123.675) / 58.395)
    pt = batching.click_point(np.pad(np.ones((5, 5), bool), 3))
    assert np.allclose(pt, [5.5, 5.5])


# ------------------------------------------------------------------ training
def _tiny_trainer(tmp_path, **kw):
    from rmpsam_edge.training.trainer import Trainer
    cfg = {"imgsz": 64, "batch_images": 1, "clip_every": 2, "clip_frames": 2, "num_prompts": 3, "steps": 4,
           "warmup": 1, "ckpt_minutes": 100.0, "lr": 3e-4}
    cfg.update(kw)
    return Trainer(str(tmp_path), cfg, log=lambda *_: None)


def test_losses_decrease_when_fitting_one_batch(tmp_path):
    from rmpsam_edge.training.objective import batch_losses
    from rmpsam_edge.training.trainer import set_train_mode, step_batch
    tr = _tiny_trainer(tmp_path)
    batch = step_batch(tr.gen, 0, tr.cfg)  # 1 image + one 2-frame clip
    assert batch["x"].shape == (3, 3, 64, 64) and len(batch["tubes"]) == 1
    opt = torch.optim.AdamW(tr.model.parameters(), lr=1e-4)
    first = last = None
    for _ in range(10):
        set_train_mode(tr.model)
        losses = batch_losses(tr.model, batch)
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
        vals = {k: float(v.detach()) for k, v in losses.items()}
        first = first or vals
        last = vals
    for k in ("prompt_mask", "object_cls", "object_mask", "video_cls", "total"):
        assert last[k] < first[k], k
    assert last["total"] < 0.7 * first["total"]


def test_backbone_batchnorm_trains_from_scratch(tmp_path):
    from rmpsam_edge.training.trainer import set_train_mode
    tr = _tiny_trainer(tmp_path)
    set_train_mode(tr.model)
    bns = [m for m in tr.model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.training for m in bns)


def test_checkpoint_official_layout_strict_load_and_resume(tmp_path):
    from rmpsam_edge.checkpoint import load_checkpoint
    tr = _tiny_trainer(tmp_path, steps=2)
    tr.run(show_progress=False)
    assert tr.step == 2
    path = os.path.join(str(tmp_path), "last.pth")
    obj = torch.load(path, weights_only=True)
    prefixes = {k.split(".", 1)[0] for k in obj["state_dict"]}
    assert prefixes == {"backbone", "neck", "panoptic_head"}
    assert not any("fc_cls" in k or "logit_scale" in k for k in obj["state_dict"])
    model, info = load_checkpoint(path)  # the lead's strict loader
    assert info["variant"] == "r18"
    for k, v in model.state_dict().items():
        assert torch.equal(v, obj["state_dict"][k]), k
    # resume: a new trainer continues at step 2 with identical weights, and the replayed data is identical
    tr2 = _tiny_trainer(tmp_path, steps=3)
    assert tr2.resume() and tr2.step == 2
    assert all(torch.equal(a, b) for a, b in zip(tr.model.state_dict().values(), tr2.model.state_dict().values()))
    assert len(tr2.optimizer.state) == len(tr.optimizer.state) > 0
    tr.cfg["steps"] = 3
    tr.train_step()
    tr2.train_step()
    for (k, a), b in zip(tr.model.state_dict().items(), tr2.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), k


def test_train_cli_refuses_to_overwrite(tmp_path):
    from rmpsam_edge.cli import main
    (tmp_path / "last.pth").write_bytes(b"x")
    import argparse
    from rmpsam_edge.commands import train as cli
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    with pytest.raises(UserError, match="--resume"):
        cli.run(p.parse_args(["--out", str(tmp_path)]))
    with pytest.raises(UserError, match="multiple of 32"):
        cli.run(p.parse_args(["--out", str(tmp_path / "new"), "--imgsz", "100"]))
    assert main(["train", "--out", str(tmp_path)]) == 2


def test_train_weights_out_writes_the_shipping_file_and_never_over_one(tmp_path):
    import argparse

    from rmpsam_edge.checkpoint import load_checkpoint
    from rmpsam_edge.commands import train as cli
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    dst = tmp_path / "w.pth"
    dst.write_bytes(b"x")
    argv = ["--out", str(tmp_path / "run"), "--imgsz", "64", "--batch", "1", "--steps", "1", "--prompts-per-frame",
            "3", "--threads", "1", "--no-progress", "--weights-out", str(dst)]
    with pytest.raises(UserError, match="--weights-out"):
        cli.run(p.parse_args(argv))
    assert not (tmp_path / "run").exists()  # refused before training
    assert cli.run(p.parse_args(argv + ["--force"])) == 0
    model, info = load_checkpoint(str(dst))
    assert info["input_size"] == 64 and torch.load(str(dst), weights_only=True)["meta"]["steps"] == 1


# ------------------------------------------------------------------ metrics
def _sq(y0, y1, x0, x1, size=10):
    m = np.zeros((size, size), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_mask_iou_and_panoptic_quality_hand_made():
    a, b = _sq(0, 4, 0, 4), _sq(0, 4, 2, 6)
    assert mask_iou(a, b) == pytest.approx(8 / 24)
    gt = np.stack([_sq(0, 4, 0, 4), _sq(5, 10, 0, 10)])  # thing class 0, stuff class 5 (num_things 5)
    pq = PanopticQuality(7, 5)
    pred = np.stack([_sq(0, 4, 0, 3),       # IoU 12/16 with the thing: TP
                     _sq(5, 10, 0, 10),     # exact stuff: TP
                     _sq(0, 2, 7, 10)])     # class 1, all in void: ignored (not FP)
    pq.update(pred, [0, 5, 1], gt, [0, 5])
    r = pq.result()
    assert r["PQ_things"] == pytest.approx(0.75) and r["PQ_stuff"] == pytest.approx(1.0)
    assert r["PQ"] == pytest.approx(0.875)
    pq2 = PanopticQuality(7, 5)
    pq2.update(pred[:2], [1, 5], gt, [0, 5])  # wrong class: FN for class 0, FP for class 1
    r2 = pq2.result()
    assert r2["PQ"] == pytest.approx(1 / 3) and r2["RQ"] == pytest.approx(1 / 3)


def test_track_identity_hand_made():
    A, B = _sq(0, 4, 0, 4), _sq(6, 10, 6, 10)
    gt = [{1: A, 2: B}] * 4
    pred = [{7: A, 8: B}, {7: A, 8: B}, {8: A, 7: B}, {7: A}]  # frame 2 swaps, frame 3 misses B
    r = track_identity(gt, pred)
    # object 1: ids 7,7,8,7 -> 3 kept; object 2: ids 8,8,7,None -> 2 kept; 8 object-frames
    assert r["identity_kept"] == pytest.approx(5 / 8) and r["detected"] == pytest.approx(7 / 8)
    assert r["object_frames"] == 8


def test_evaluate_runs_end_to_end_on_tiny_set():
    from rmpsam_edge.modeling import build_model
    from rmpsam_edge.training.evaluate import evaluate
    torch.manual_seed(0)
    m = build_model("r18", torch.from_numpy(demo_class_embed()))
    r = evaluate(m, 64, num_images=2, num_clips=1, clip_frames=3)
    for k in ("click_mIoU", "box_mIoU", "PQ", "identity_kept"):
        assert 0.0 <= r[k] <= 1.0
    assert r["prompts"] > 0 and r["object_frames"] > 0


def test_export_fp16_official_layout_loads_strictly(tmp_path):
    from rmpsam_edge.checkpoint import load_checkpoint
    from rmpsam_edge.spec import DEMO_WEIGHTS_NOTE
    from rmpsam_edge.training.export_weights import export_weights
    tr = _tiny_trainer(tmp_path / "run", steps=1)
    tr.run(show_progress=False)
    dst = str(tmp_path / "demo.pth")
    meta = export_weights(str(tmp_path / "run" / "last.pth"), dst)
    assert meta["weights_note"] == DEMO_WEIGHTS_NOTE and meta["input_size"] == 64 and meta["steps"] == 1
    obj = torch.load(dst, weights_only=True)
    assert set(obj) == {"state_dict", "meta"}
    assert all(v.dtype == torch.float16 for v in obj["state_dict"].values() if v.is_floating_point())
    model, info = load_checkpoint(dst)
    assert info["weights_note"] == DEMO_WEIGHTS_NOTE and info["input_size"] == 64
    for k, v in tr.model.state_dict().items():
        got = model.state_dict()[k]
        assert got.dtype == v.dtype
        if v.is_floating_point():
            assert torch.allclose(got, v, rtol=1e-3, atol=1e-3), k
    with pytest.raises(UserError, match="--force"):
        export_weights(str(tmp_path / "run" / "last.pth"), dst)


def test_optimizer_state_is_restored_by_parameter_name_across_groupings(tmp_path):
    from rmpsam_edge.training.trainer import _legacy_names, load_optimizer_state
    tr = _tiny_trainer(tmp_path)
    params = dict(tr.model.named_parameters())
    names = _legacy_names(tr.model)
    # an optimizer with another grouping (two groups, no names), one step with a known gradient
    legacy = torch.optim.AdamW([{"params": [params[n] for n in names[:5]]},
                                {"params": [params[n] for n in names[5:]]}], lr=1e-3)
    for i, n in enumerate(names):
        params[n].grad = torch.full_like(params[n], float(i + 1))
    legacy.step()
    load_optimizer_state(tr.optimizer, legacy.state_dict(), tr.model)
    for g in tr.optimizer.param_groups:
        for n, p in zip(g["names"], g["params"]):
            assert torch.allclose(tr.optimizer.state[p]["exp_avg"], 0.1 * torch.full_like(p, float(names.index(n) + 1))), n
    scales = {g["lr_scale"] for g in tr.optimizer.param_groups}
    assert scales == {1.0, 0.1}
    cls_groups = [g for g in tr.optimizer.param_groups if g["lr_scale"] == 0.1]
    assert all(any(c in n for c in ("cls_fcs.", "cls_proj.", "panoptic_cls.")) for g in cls_groups for n in g["names"])
