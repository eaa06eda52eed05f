"""bf16 bundles (rmpsam-edge quantize --precision bf16 / --precision int8 --rest bf16, OpenVINO CPU): the
manifest marks them, the OpenVINO runner compiles their graphs with the bf16 hint, a CPU without bf16 is
refused with one line, ONNX Runtime declines them. Tests that need native bf16 skip on CPUs without it."""
import json
import os

import numpy as np
import pytest

from _bundle_fixture import shared_bundle
from rmpsam_edge.cli import main
from rmpsam_edge.errors import UserError

pytest.importorskip("openvino")  # optional (the openvino extra); a broken backend module fails, never skips
from rmpsam_edge.runtime import openvino_backend as ov_backend  # noqa: E402
FAST = ["--calib-count", "2", "--holdout", "1", "--runs", "1"]
HAS_BF16 = ov_backend.bf16_support()[0]
needs_bf16 = pytest.mark.skipif(not HAS_BF16, reason="this CPU has no native bf16 (AVX512-BF16/AMX)")


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    return shared_bundle(tmp_path_factory)


def _manifest(path):
    with open(os.path.join(str(path), "manifest.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def bf16(bundle, tmp_path_factory):
    if not HAS_BF16:
        pytest.skip("this CPU has no native bf16 (AVX512-BF16/AMX)")
    out = tmp_path_factory.mktemp("bf16") / "b16"
    assert main(["quantize", "--model", bundle, "--out", str(out), "--precision", "bf16",
                 "--backend", "openvino"] + FAST) == 0
    return out


def _hints(runner):
    out = {}
    for name, g in runner.graphs.items():
        compiled = g.dynamic[0] if g.dynamic is not None else next(iter(g.static.values()))[0]
        out[name] = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    return out


@needs_bf16
def test_bf16_bundle_is_marked_and_runs_with_the_bf16_hint(bundle, bf16):
    from rmpsam_edge.runtime import load
    m = _manifest(bf16)
    assert m["precision"] == "bf16" and m["quantization"]["precision"] == "bf16"
    assert m["quantization"]["calibration"] is None
    for name, entry in m["graphs"].items():
        assert entry["precision"] == "bf16" and entry["inference_precision"] == "bf16", name
    with open(os.path.join(str(bf16), "fidelity.json")) as f:
        rep = json.load(f)
    assert rep["thresholds"]["mask_iou_mean"] == [">=", 0.99]  # held to the FP32-accuracy column
    assert 0.5 < rep["metrics"]["feature_cosine"] <= 1.0
    pred = load(str(bf16), backend="openvino", verbose=False)
    hints = _hints(pred.runner)
    assert set(hints.values()) == {"bf16"}, hints
    img = (np.random.RandomState(0).rand(90, 120, 3) * 255).astype(np.uint8)
    pred.set_image(img)
    masks, scores = pred.predict(points=[[60, 45]])
    assert masks.shape == (1, 90, 120) and np.isfinite(scores).all()
    assert "bf16" in pred.runner.describe()
    fp32 = load(bundle, backend="openvino", verbose=False)  # FP32 bundles keep the f32 default
    assert set(_hints(fp32.runner).values()) == {"f32"}


@needs_bf16
def test_onnxruntime_declines_a_bf16_bundle(bf16):
    from rmpsam_edge.runtime import onnxruntime_backend
    from rmpsam_edge.runtime.bundle import Bundle
    from rmpsam_edge.runtime.bundle_runner import BackendUnavailable
    with pytest.raises(BackendUnavailable, match="bf16"):
        onnxruntime_backend.create(Bundle.open(str(bf16)), device="cpu")


@needs_bf16
def test_int8_with_rest_bf16(bundle, tmp_path):
    pytest.importorskip("nncf")
    out = tmp_path / "i8b16"
    assert main(["quantize", "--model", bundle, "--out", str(out), "--precision", "int8", "--rest", "bf16",
                 "--backend", "openvino"] + FAST) == 0
    m = _manifest(out)
    assert m["precision"] == "int8+bf16" and m["quantization"]["rest"] == "bf16"
    assert m["graphs"]["encoder"]["precision"] == "int8" and m["graphs"]["encoder"]["format"] == "openvino-ir"
    assert m["graphs"]["prompt_decoder"]["precision"] == "bf16"
    assert all(e["inference_precision"] == "bf16" for e in m["graphs"].values())
    from rmpsam_edge.runtime import load
    pred = load(str(out), backend="openvino", verbose=False)
    assert set(_hints(pred.runner).values()) == {"bf16"}


def test_refused_on_a_cpu_without_bf16(bundle, tmp_path, capsys, monkeypatch):
    out = tmp_path / "nobf16"
    monkeypatch.setattr(ov_backend, "bf16_support", lambda core=None, cpuinfo=None: (
        False, "this CPU has neither avx512_bf16 nor amx_bf16"))
    for extra in (["--precision", "bf16"], ["--precision", "int8", "--rest", "bf16"]):
        capsys.readouterr()
        assert main(["quantize", "--model", bundle, "--out", str(out), "--backend", "openvino"] + extra + FAST) != 0
        err = capsys.readouterr().err.strip()
        assert "AVX512-BF16 or AMX" in err and "Traceback" not in err and len(err.splitlines()) == 1, err
        assert not out.exists()
    assert main(["quantize", "--model", bundle, "--out", str(out), "--precision", "bf16", "--backend", "ort"]) != 0
    assert "--backend openvino" in capsys.readouterr().err


def test_loading_a_bf16_bundle_is_refused_without_bf16(bundle, tmp_path, monkeypatch):
    """A bf16 bundle (marked by hand here, so this runs on any CPU) on a CPU without bf16: one UserError."""
    import shutil
    from rmpsam_edge.runtime.bundle import Bundle, write_manifest
    out = tmp_path / "marked"
    shutil.copytree(bundle, str(out))
    m = _manifest(out)
    m["precision"] = "bf16"
    for e in m["graphs"].values():
        e["precision"] = e["inference_precision"] = "bf16"
    write_manifest(str(out), m)
    monkeypatch.setattr(ov_backend, "bf16_support", lambda core=None, cpuinfo=None: (False, "no bf16 here"))
    with pytest.raises(UserError, match="bf16 bundle but no bf16 here"):
        ov_backend.create(Bundle.open(str(out)))


class _Core(object):
    """openvino.Core's one call that bf16_support makes, with the capabilities a CPU plugin would list."""

    def __init__(self, caps):
        self.caps = caps

    def get_property(self, device, name):
        assert (device, name) == ("CPU", "OPTIMIZATION_CAPABILITIES")
        if self.caps is None:
            raise RuntimeError("Device with \"CPU\" name is not registered in the OpenVINO Runtime")
        return self.caps


def test_cpu_flag_detection(tmp_path):
    """Detection through its inputs (OpenVINO's capability list and the cpuinfo flags), never the CPU it runs on."""
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags\t\t: fpu sse avx512f\n")
    assert ov_backend._cpu_flags(str(info)) == {"fpu", "sse", "avx512f"}
    with_bf16 = _Core(["FP32", "BF16", "INT8"])
    ok, detail = ov_backend.bf16_support(with_bf16, cpuinfo=str(info))
    assert not ok and "avx512_bf16" in detail  # OpenVINO would emulate it: refused
    info.write_text("processor : 0\nflags\t\t: fpu avx512f avx512_bf16\n")
    assert ov_backend.bf16_support(with_bf16, cpuinfo=str(info)) == (True, "bf16 (avx512_bf16)")
    info.write_text("processor : 0\nflags\t\t: fpu amx_bf16 avx512_bf16\n")
    assert ov_backend.bf16_support(with_bf16, cpuinfo=str(info)) == (True, "bf16 (amx_bf16, avx512_bf16)")
    ok, detail = ov_backend.bf16_support(_Core(["FP32", "INT8"]), cpuinfo=str(info))
    assert not ok and detail == "openvino's CPU capabilities have no BF16 (FP32, INT8)"
    ok, detail = ov_backend.bf16_support(_Core(None), cpuinfo=str(info))
    assert not ok and detail.startswith("openvino has no CPU device")
    # no x86 flags (an ARM CPU, no /proc/cpuinfo): OpenVINO's word decides
    assert ov_backend._cpu_flags(str(tmp_path / "missing")) is None
    assert ov_backend.bf16_support(with_bf16, cpuinfo=str(tmp_path / "missing")) == (
        True, "bf16 (openvino CPU capability BF16)")
