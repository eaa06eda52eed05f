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
        assert 0.999 <= c["feature_cosine"] <= 1.0 + 1e-9 and 0.99 <= c["mask_iou_mean"] <= 1.0
        assert all(v > 0 for v in results[name]["timing_p50_ms"].values())
        assert set(results[name]["timing_p50_ms"]) == {"encoder", "prompt_decoder_1", "object_decoder"}
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


# ------------------------------------------------------------------------------------ install traps
from rmpsam_edge.commands import doctor  # noqa: E402

JETPACK_OK = {"numpy": "1.26.4", "opencv": "4.8.0", "opencv_gstreamer": True, "onnxruntime": "1.20.0",
              "ort_providers": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]}
# what `pip install ".[ort]"` used to leave in a --system-site-packages venv on JetPack 6: the opencv wheel (no
# GStreamer), numpy 2 pulled in by it, and CPU onnxruntime over the Jetson onnxruntime-gpu
DESKTOP_WHEELS = {"numpy": "2.2.6", "opencv": "4.12.0", "opencv_gstreamer": False, "onnxruntime": "1.23.2",
                  "ort_providers": ["AzureExecutionProvider", "CPUExecutionProvider"]}


def _platform(tmp_path, monkeypatch, clocks=None, jetson=True):
    from test_platform_facts import CLOCKS_FREE, _board
    root, _ = _board(tmp_path, monkeypatch, major=36 if jetson else None, rev="4.3", clocks=clocks or CLOCKS_FREE,
                     model=b"NVIDIA Jetson Orin Nano Developer Kit\x00" if jetson else None)
    from rmpsam_edge.runtime import platform_facts
    return {"jetson": platform_facts.jetson(root), "gpu": {"name": "Orin", "memory_mb": 7620, "sm_count": 8,
                                                           "compute_capability": "8.7", "driver": "540.4.0",
                                                           "cuda": "12.6.68", "why_not": None}}


def test_traps_of_desktop_wheels_on_a_jetson(tmp_path, monkeypatch):
    plat = _platform(tmp_path, monkeypatch)
    traps = doctor.find_traps(plat, DESKTOP_WHEELS)
    text = [t["trap"] + " | " + t["fix"] for t in traps]
    assert len(traps) == 3, text
    assert text[0].startswith("OpenCV 4.12.0 has no GStreamer") and "sudo apt install nvidia-opencv" in text[0]
    assert "pip uninstall -y opencv-python opencv-python-headless" in text[0] and "not Ubuntu's python3-opencv" in text[0]
    assert text[1].startswith("numpy 2.2.6 beside JetPack's modules") and "pip uninstall -y numpy" in text[1]
    assert text[2].startswith("onnxruntime 1.23.2 has no GPU provider (only AzureExecutionProvider, CPUExecution")
    assert "onnxruntime-gpu wheel for your JetPack from NVIDIA's Jetson index" in text[2]
    assert doctor.ready_line(plat, traps) == "no: 3 install traps, fixes below"


def test_a_ready_jetson_and_one_that_needs_pinned_clocks(tmp_path, monkeypatch):
    from test_platform_facts import CLOCKS_PINNED
    plat = _platform(tmp_path, monkeypatch, clocks=CLOCKS_PINNED)
    assert doctor.find_traps(plat, JETPACK_OK) == [] and doctor.ready_line(plat, []) == "yes"
    plat = _platform(tmp_path / "b", monkeypatch)
    assert doctor.ready_line(plat, []).startswith("yes to run; to benchmark first sudo nvpmodel -m 0 && sudo "
                                                  "jetson_clocks (jetson_clocks: off (CPU, GPU")
    report = {"platform": dict(plat, system="Linux", machine="aarch64", python="3.10.12", cpu_count=6),
              "bundle": "b", "runs": 1, "backends": [], "results": [], "traps": [], "ready": "yes"}
    md = doctor.markdown(report)
    assert "- Jetson: L4T 36.4.3 (JetPack 6.2), NVIDIA Jetson Orin Nano Developer Kit, nvpmodel: MAXN (mode 0)" in md
    assert "RAM 30536 MB, swap 15268 MB" in md and "\n- ready: yes\n" in md


def test_desktop_traps(tmp_path, monkeypatch):
    plat = _platform(tmp_path, monkeypatch, jetson=False)
    assert plat["jetson"]["l4t"] is None
    traps = doctor.find_traps(plat, DESKTOP_WHEELS)  # numpy 2 and a pip OpenCV are right on a desktop
    assert [t["fix"] for t in traps] == ["pip uninstall -y onnxruntime onnxruntime-gpu; pip install onnxruntime-gpu"]
    plat["gpu"] = {"name": None, "why_not": "no NVIDIA GPU found (no nvidia-smi; pycuda not importable: No module "
                                            "named 'pycuda')"}
    assert doctor.find_traps(plat, DESKTOP_WHEELS) == []  # a CPU machine: CPU onnxruntime is right
    plat["gpu"]["why_not"] = "pycuda: cuInit failed: no CUDA-capable device is detected"
    traps = doctor.find_traps(plat, JETPACK_OK)
    assert len(traps) == 1 and traps[0]["trap"].startswith("pycuda cannot reach the driver (pycuda: cuInit failed")
    assert "pip install --force-reinstall --no-cache-dir pycuda" in traps[0]["fix"]


def test_install_facts_read_this_environment():
    import cv2
    import onnxruntime
    facts = doctor.install_facts()
    assert facts["numpy"] == np.__version__ and facts["opencv"] == cv2.__version__
    assert facts["onnxruntime"] == onnxruntime.__version__ and "CPUExecutionProvider" in facts["ort_providers"]
    built_with = [l for l in cv2.getBuildInformation().splitlines() if l.strip().startswith("GStreamer:")]
    assert facts["opencv_gstreamer"] is bool(built_with and "YES" in built_with[0])
