"""Killed writers (SIGKILL while `rmpsam-edge export` stages its bundle) leave nothing that loads as a bundle,
and the rerun works without --force, sweeping the leftover staging folder. Checkpoints are written atomically."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from rmpsam_edge.errors import UserError
from rmpsam_edge.runtime.bundle import Bundle

EXPORT = [sys.executable, "-m", "rmpsam_edge.cli", "export", "--random-init", "--imgsz", "64"]


def _staging(parent, name):
    return [f for f in os.listdir(parent) if f.startswith("." + name + ".tmp-")]


def test_sigkill_mid_export_then_rerun_without_force(tmp_path):
    out = str(tmp_path / "b")
    proc = subprocess.Popen(EXPORT + ["--out", out], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    t0 = time.time()
    while not _staging(str(tmp_path), "b"):  # wait until the staging folder exists, then kill -9
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() - t0 < 300
        time.sleep(0.05)
    time.sleep(0.5)  # something is being written into it
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not os.path.exists(out)
    left = _staging(str(tmp_path), "b")
    assert left  # the killed process's hidden folder stays ...
    with pytest.raises(UserError):
        Bundle.open(os.path.join(str(tmp_path), left[0]))  # ... and never loads as a bundle
    res = subprocess.run(EXPORT + ["--out", out], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert Bundle.open(out).manifest["graphs"]
    assert _staging(str(tmp_path), "b") == []  # swept by the rerun


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from rmpsam_edge.training import trainer

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = str(tmp_path / "last.pth")
    trainer.save_checkpoint(path, model, opt, 1, {})
    good = open(path, "rb").read()

    def torn(obj, f):  # the process dies half way through writing the next checkpoint
        open(f, "wb").write(b"PK\x03\x04 torn")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint(path, model, opt, 2, {})
    assert open(path, "rb").read() == good and os.listdir(str(tmp_path)) == ["last.pth"]


def test_sigterm_mid_export_stops_cleanly_and_removes_staging(tmp_path):
    out = str(tmp_path / "b")
    proc = subprocess.Popen(EXPORT + ["--out", out], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    while not _staging(str(tmp_path), "b"):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() - t0 < 300
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    text = proc.communicate(timeout=300)[0]
    assert proc.returncode == 143, text
    assert "Traceback" not in text and "interrupted (SIGTERM)" in text
    assert os.listdir(str(tmp_path)) == []  # neither a bundle nor its staging folder


def test_sigterm_during_train_saves_last_checkpoint(tmp_path):
    cmd = [sys.executable, "-m", "rmpsam_edge.cli", "train", "--out", str(tmp_path / "run"), "--steps", "100000",
           "--imgsz", "64", "--batch", "1", "--threads", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:  # the trainer logs every 50 steps: signal it once it is inside its loop
        seen.append(line)
        if " step 50 " in line:
            break
    assert proc.poll() is None, "".join(seen)
    proc.send_signal(signal.SIGTERM)
    text = "".join(seen) + proc.communicate(timeout=300)[0]
    assert proc.returncode == 143, text
    assert "Traceback" not in text and "stopped by SIGTERM" in text and "--resume" in text
    stopped_at = int(re.search(r"stopped by SIGTERM at step (\d+)", text).group(1))
    files = os.listdir(str(tmp_path / "run"))
    assert "last.pth" in files and not [f for f in files if ".tmp-" in f]
    torch = pytest.importorskip("torch")
    saved = torch.load(str(tmp_path / "run" / "last.pth"), map_location="cpu", weights_only=True)["meta"]["step"]
    assert saved == stopped_at >= 50  # the step it finished is the step it saved


def test_quantize_stopped_by_signal_removes_staging(tmp_path_factory, tmp_path, monkeypatch, capsys):
    from _bundle_fixture import shared_bundle
    from rmpsam_edge.cli import main
    from rmpsam_edge.runtime import compare
    from rmpsam_edge.signals import Stopped

    bundle = shared_bundle(tmp_path_factory)

    def stopped(*a, **k):  # SIGTERM arrives while the fidelity of the staged bundle is measured
        raise Stopped(signal.SIGTERM)

    monkeypatch.setattr(compare, "compare_runners", stopped)
    rc = main(["quantize", "--model", bundle, "--out", str(tmp_path / "q"), "--precision", "fp16", "--holdout", "1",
               "--runs", "1"])
    assert rc == 143 and "interrupted (SIGTERM)" in capsys.readouterr().err
    assert os.listdir(str(tmp_path)) == []
