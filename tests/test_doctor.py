"""`rmpsam-edge doctor`: runs here for real (ONNX Runtime and OpenVINO checked, TensorRT explained), writes a
JSON report with real values, refuses to overwrite it without --force, exits non-zero when a backend disagrees."""
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from rmpsam_edge.cli import main
from rmpsam_edge.runtime import backends

CLI = [sys.executable, "-m", "rmpsam_edge.cli"]


def test_doctor_runs_here_and_reports(tmp_path):
    import onnxruntime
    import openvino
    out = str(tmp_path / "doctor.json")
    p = subprocess.run(CLI + ["doctor", "--runs", "2", "--threads", "2", "--json", out], capture_output=True,
                       text=True, timeout=600, cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr[-2000:]
    rep = json.load(open(out))
    assert rep["ok"] is True and rep["platform"]["machine"] and rep["platform"]["cpu_count"] >= 1
    assert set(rep["platform"]["gpu"]) >= {"name", "memory_mb", "sm_count", "driver", "cuda"}
    by = {b["backend"]: b for b in rep["backends"]}
    assert [b["backend"] for b in rep["backends"]] == backends.names()
    assert by["onnxruntime"]["usable"] and onnxruntime.__version__ in by["onnxruntime"]["detail"]
    assert by["openvino"]["usable"] and openvino.get_version().split("-")[0] in by["openvino"]["detail"]
    if not by["tensorrt"]["usable"]:  # here: TensorRT cannot be installed; said plainly, with the install hint
        assert "tensorrt cannot run here: " in p.stderr and by["tensorrt"]["detail"] and by["tensorrt"]["install"]
        assert "| tensorrt | **no** |" in p.stdout
    results = {r["backend"]: r for r in rep["results"]}
    for name in ("onnxruntime", "openvino"):
        c = results[name]["compare"]
        assert c["ok"] and c["images"] == 4 and c["prompts"] == 64
        assert 0.999 <= c["feature_cosine"] <= 1.0 + 1e-9 and 0.95 <= c["prompt_mask_iou"] <= 1.0
        assert all(v > 0 for v in results[name]["timing_p50_ms"].values())
        assert set(results[name]["timing_p50_ms"]) == {"encoder", "prompt_decoder", "object_decoder"}
    assert "### rmpsam-edge doctor" in p.stdout and "| openvino | 1.0" in p.stdout
    # its report is not replaced without --force
    p = subprocess.run(CLI + ["doctor", "--json", out], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "--force" in p.stderr and "Traceback" not in p.stderr


def test_a_backend_that_disagrees_fails_the_doctor(tmp_path, monkeypatch, capsys):
    from rmpsam_edge.runtime import onnxruntime_backend

    class Perturbed(object):
        """ONNX Runtime whose encoder adds noise: a backend that silently computes something else."""

        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def encode(self, image):
            f = self.inner.encode(image)
            return f + np.random.default_rng(0).normal(0, 3 * f.std(), f.shape).astype(np.float32)

        def describe(self):
            return "perturbed " + self.inner.describe()

    fake = types.ModuleType("rmpsam_edge_test_perturbed")
    fake.probe = lambda device=None: (True, "perturbed 0.0, devices: CPU")
    fake.create = lambda bundle, device=None, threads=None, auto=False: Perturbed(
        onnxruntime_backend.create(bundle, device="cpu", threads=threads))
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    row = backends.Backend("perturbed", (), "pip install perturbed", "-", fake.__name__, None)
    monkeypatch.setattr(backends, "BACKENDS", backends.BACKENDS + (row,))
    out = str(tmp_path / "d.json")
    assert main(["doctor", "--runs", "1", "--threads", "2", "--json", out]) == 1
    rep = json.load(open(out))
    bad = [r for r in rep["results"] if r["backend"] == "perturbed"][0]
    assert bad["ok"] is False and any(f.startswith("feature_cosine") for f in bad["compare"]["failures"])
    assert [r["ok"] for r in rep["results"] if r["backend"] == "onnxruntime"] == [True]
    assert "**FAIL**: feature_cosine" in capsys.readouterr().out
