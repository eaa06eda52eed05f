"""rmpsam-edge distill: a student learns the teacher's neck features (tiny inputs, a few steps)."""
import json
import os

import numpy as np
import pytest
import torch

from rmpsam_edge.checkpoint import DEFAULT_WEIGHTS, load_checkpoint, load_vocabulary, weights_record
from rmpsam_edge.cli import main
from rmpsam_edge.media import asset_path
from rmpsam_edge.training.distill import Distiller, load_teacher
from rmpsam_edge.training.distill_data import TeacherCache, load_frames, make_view, random_prompts
from rmpsam_edge.training.distill_report import agreement
from rmpsam_edge.training.trainer import lr_at

IMAGES = asset_path("images")
CFG = {"imgsz": 64, "batch_images": 2, "views": 2, "num_prompts": 4, "warmup": 2, "cache_mb": 64.0}


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    class_embed, _, num_things = load_vocabulary(None)
    teacher, info = load_teacher(DEFAULT_WEIGHTS, class_embed)
    train, held, available = load_frames([IMAGES], count=3, holdout=1, long_side=128)
    return teacher, info, train, held, num_things


def _distiller(tmp_path, setup, **cfg):
    teacher, info, train, held, num_things = setup
    return Distiller(str(tmp_path), teacher, info, train, dict(CFG, **cfg), held_out=held, log=lambda s: None,
                     num_things=num_things)


def test_frames_are_split_evenly_and_shrunk(setup):
    _, _, train, held, _ = setup
    assert len(train) == 3 and len(held) == 1
    assert not set(n for n, _ in train) & set(n for n, _ in held)
    assert all(max(img.shape[:2]) <= 128 and img.dtype == np.uint8 for _, img in train + held)
    train, held, n = load_frames([IMAGES, asset_path("video")], count=10, holdout=2, long_side=64)
    assert n == 4 + 60 and len(train) == 10 and len(held) == 2
    assert any("#" in name for name, _ in train)  # video frames, named path#index
    train, held, n = load_frames([IMAGES], count=10, holdout=2, long_side=64, val=[asset_path("video")])
    assert len(train) == 4 and [name.rsplit("#", 1)[1] for name, _ in held] == ["15", "45"]  # --val: even spread


def test_views_and_prompts_are_seeded_and_in_range():
    frame = (np.arange(90 * 120 * 3) % 251).astype(np.uint8).reshape(90, 120, 3)
    a = make_view(frame, np.random.default_rng(1), 64)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, make_view(frame, np.random.default_rng(1), 64))
    assert not np.array_equal(a, make_view(frame, np.random.default_rng(2), 64))
    p = random_prompts(np.random.default_rng(0), 64, 5)
    assert p.shape == (5, 4) and (p > 0).all() and (p < 1).all()
    assert np.allclose(p[:3, 2:], 6 / 64.0)  # clicks first: the official 6-pixel boxes


def test_teacher_cache_is_lru_and_bounded():
    c = TeacherCache(max_mb=0.01)  # 10 kB: two entries of 4 kB
    for k in range(3):
        c.put(k, {"x": torch.zeros(1000)})
    assert c.get(0) is None and c.get(1) is not None and c.get(2) is not None
    assert c.bytes <= c.max_bytes and len(c.items) == 2
    c.put(3, {"x": torch.zeros(1000)})  # 2 was used last: 1 is the least recently used and goes
    assert c.get(1) is None and c.get(2) is not None


def test_distillation_lowers_the_loss_and_raises_agreement(tmp_path, setup):
    teacher, info, train, held, num_things = setup
    d = _distiller(tmp_path, setup, steps=12, lr=2e-3)
    before = agreement(teacher, d.model, held, 64, num_things)
    losses = [d.train_step()["total"] for _ in range(12)]
    after = agreement(teacher, d.model, held, 64, num_things)
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:2])
    assert after["feature_cosine_mean"] > before["feature_cosine_mean"] + 0.05
    assert after["mask_iou_mean"] > before["mask_iou_mean"] + 0.1
    # the teacher ran once per distinct view (2 views x 3 frames at most); repeats were served from the cache
    distinct = set(k for s in range(12) for k in d.step_keys(s))
    assert d.cache.misses == len(distinct) <= 6 and d.cache.hits > 0
    # the head stayed the teacher's (frozen by default)
    for k, v in teacher.panoptic_head.state_dict().items():
        assert torch.equal(v, d.model.panoptic_head.state_dict()[k]), k


def test_student_checkpoint_loads_strictly_and_says_what_it_is(tmp_path, setup):
    _, info, train, _, _ = setup
    d = _distiller(tmp_path, setup, steps=1)
    d.run(show_progress=False)
    student, sinfo = load_checkpoint(os.path.join(str(tmp_path), "last.pth"))
    assert sinfo["variant"] == "r18" and sinfo["training"]["steps"] == 1
    note = weights_record(sinfo)["note"]
    assert note.startswith("distilled r18 student of r18 rmpsam_r18_demo.pth") and info["sha256"][:12] in note
    meta = torch.load(os.path.join(str(tmp_path), "last.pth"), weights_only=True)["meta"]
    src = json.loads(meta["distilled_from"])
    assert src == {"teacher": "rmpsam_r18_demo.pth", "teacher_sha256": info["sha256"], "teacher_variant": "r18",
                   "frames": len(train), "steps": 1}


def test_resume_continues_the_schedule(tmp_path, setup):
    d = _distiller(tmp_path, setup, steps=6)
    d.run(steps=2, show_progress=False)
    d2 = _distiller(tmp_path, setup, steps=6)
    assert d2.resume() and d2.step == 2 and d2.elapsed == pytest.approx(d.elapsed)
    assert all(torch.equal(a, b) for a, b in zip(d.model.state_dict().values(), d2.model.state_dict().values()))
    a, b = d.train_step(), d2.train_step()
    assert a["lr"] == b["lr"] == lr_at(2, d.cfg) != lr_at(0, d.cfg)
    assert a["total"] == pytest.approx(b["total"], rel=1e-4)
    for (k, x), y in zip(d.model.state_dict().items(), d2.model.state_dict().values()):
        assert torch.allclose(x.float(), y.float(), atol=1e-5), k


def _one_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def _argv(tmp_path, teacher, *more):
    return ["distill", "--teacher", teacher, "--images", IMAGES, "--holdout", "1", "--frames", "2", "--imgsz", "64",
            "--steps", "1", "--latency-size", "64", "--latency-runs", "1", "--no-progress",
            "--out", str(tmp_path / "out")] + list(more)


def test_a_teacher_of_the_wrong_kind_is_one_line(tmp_path, capsys):
    err = _one_line(capsys, _argv(tmp_path, asset_path("bundle")))
    assert "is a folder (a bundle?)" in err and ".pth" in err
    sd = torch.load(DEFAULT_WEIGHTS, weights_only=True)["state_dict"]
    missing = {k: v for k, v in sd.items() if not k.startswith("neck.loc_conv")}
    torch.save({"state_dict": missing}, str(tmp_path / "missing.pth"))
    assert "2 missing keys (neck.loc_conv.bias" in _one_line(capsys, _argv(tmp_path, str(tmp_path / "missing.pth")))
    narrow = dict(sd, **{"neck.loc_conv.weight": torch.zeros(128, 130, 1, 1), "neck.loc_conv.bias": torch.zeros(128)})
    torch.save({"state_dict": narrow}, str(tmp_path / "narrow.pth"))
    for argv in (_argv(tmp_path, str(tmp_path / "narrow.pth")),
                 _argv(tmp_path, DEFAULT_WEIGHTS, "--init", str(tmp_path / "narrow.pth"))):
        assert "wrong shape" in _one_line(capsys, argv)
    if not torch.cuda.is_available():  # a device torch does not have: one line, before any work
        assert "--device cuda" in _one_line(capsys, _argv(tmp_path, DEFAULT_WEIGHTS, "--device", "cuda"))
    assert not os.path.exists(str(tmp_path / "out" / "last.pth"))


def test_cli_end_to_end_writes_report_and_refuses_to_overwrite(tmp_path, capsys):
    argv = _argv(tmp_path, DEFAULT_WEIGHTS)
    assert main(argv) == 0
    out = tmp_path / "out"
    doc = json.loads((out / "distill.json").read_text())
    assert [r["step"] for r in doc["reports"]] == [0, 1]
    assert doc["command"] == "rmpsam-edge " + " ".join(argv)
    assert doc["latency"]["teacher_ms"] > 0 and doc["latency"]["student_ms"] > 0
    assert "| 1 |" in (out / "distill.md").read_text()
    assert "--resume" in _one_line(capsys, argv)
    assert main(argv + ["--resume", "--steps", "2"]) == 0
    assert [r["step"] for r in json.loads((out / "distill.json").read_text())["reports"]] == [0, 1, 2]


def test_sigterm_finishes_the_step_and_saves(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "rmpsam_edge.cli"] + _argv(tmp_path, DEFAULT_WEIGHTS)[:-2] + [
        "--out", str(out), "--steps", "100000", "--ckpt-minutes", "0"]  # last.pth after every step: in the loop
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    while not (out / "last.pth").exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() - t0 < 300
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    text = proc.communicate(timeout=300)[0]
    assert proc.returncode == 143, text
    assert "Traceback" not in text and "stopped by SIGTERM" in text and "--resume" in text
    assert not [f for f in os.listdir(str(out)) if ".tmp-" in f]
    student, info = load_checkpoint(str(out / "last.pth"))
    assert info["training"]["steps"] >= 1


def test_init_from_a_checkpoint_and_head_lr_fine_tunes_the_head(tmp_path, setup):
    teacher, info, train, held, num_things = setup
    d = Distiller(str(tmp_path), teacher, info, train, dict(CFG, steps=3, head_lr=1e-4), init=DEFAULT_WEIGHTS,
                  held_out=held, log=lambda s: None, num_things=num_things)
    init, _ = load_checkpoint(DEFAULT_WEIGHTS)
    assert torch.equal(d.model.backbone.conv1.weight, init.backbone.conv1.weight)
    assert d.init_info["init_sha256"] == info["sha256"]
    head_before = {k: v.clone() for k, v in d.model.panoptic_head.state_dict().items()}
    d.train_step()
    assert [g["lr_scale"] for g in d.optimizer.param_groups] == [1.0, 0.1]  # head at --head-lr / --lr
    changed = [k for k, v in d.model.panoptic_head.state_dict().items() if not torch.equal(v, head_before[k])]
    assert changed and not torch.equal(d.model.backbone.conv1.weight, init.backbone.conv1.weight)
