"""Bad input on the fake TensorRT + pycuda: one line each, non-zero exit (build-engine CLI) or the right error
(create / auto): engine for another module / GPU memory, corrupt engine, INT8 of an FP32 bundle on TensorRT 11,
FP16 without fast FP16, DLA where there is none, out of GPU memory while building; plus the guards that keep
a build from failing (FP32 pins only on float layers, a timing cache TensorRT does not give)."""
import os

import pytest

from fakes_tensorrt import FakeGPU, bundle, tiny_bundle  # noqa: F401 (fixtures)
from rmpsam_edge.cli import main
from rmpsam_edge.runtime import tensorrt as trt_pkg
from rmpsam_edge.runtime.bundle_runner import BackendUnavailable
from rmpsam_edge.runtime.tensorrt import compat

ENC = ["--graphs", "encoder", "--imgsz", "64"]


def _one_line_error(capsys, text):
    _, err = capsys.readouterr()  # progress lines ("tensorrt: building ...") may come first
    lines = [l for l in err.splitlines() if not l.startswith("tensorrt: ")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0] and "Traceback" not in err, err
    return lines[0]


def test_engine_from_another_jetson_module_is_refused_or_rebuilt(bundle, monkeypatch, capsys, tmp_path):
    model, release = tmp_path / "model", tmp_path / "nv_tegra_release"
    model.write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    release.write_text("# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic, EABI: aarch64, DATE: x\n")
    from rmpsam_edge.runtime import platform_facts
    monkeypatch.setattr(platform_facts, "DEVICE_TREE_MODEL", str(model))  # the one reader of the Jetson files
    monkeypatch.setattr(platform_facts, "TEGRA_RELEASE", str(release))
    FakeGPU("10.3.0", memory_mb=62841, sm_count=16).install(monkeypatch)
    assert main(["build-engine", "--model", bundle, "--precision", "fp16"] + ENC) == 0
    model.write_bytes(b"NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\x00")
    FakeGPU("10.3.0", memory_mb=7620, sm_count=8).install(monkeypatch)  # same name "Orin", same sm 8.7
    capsys.readouterr()
    assert main(["build-engine", "--model", bundle, "--precision", "fp16", "--no-build"] + ENC) == 2
    err = _one_line_error(capsys, "GPU memory MiB 62841 (engine) != 7620 (here); SM count 16 (engine) != 8 (here)")
    assert "Jetson module 'NVIDIA Jetson AGX Orin Developer Kit | # R36 (release), REVISION: 4.0' (engine)" in err
    assert "build it with `rmpsam-edge build-engine --model %s --precision fp16`" % bundle in err
    assert main(["build-engine", "--model", bundle, "--precision", "fp16"] + ENC) == 0  # rebuilt, one line why
    assert "building encoder fp16 engine (GPU memory MiB 62841 (engine) != 7620 (here)" in capsys.readouterr()[1]


def test_corrupt_engine_file(bundle, monkeypatch, capsys):
    FakeGPU("10.3.0").install(monkeypatch)
    assert main(["build-engine", "--model", bundle, "--precision", "fp16"] + ENC) == 0
    path = os.path.join(bundle, "tensorrt", "encoder.fp16.engine")
    with open(path, "r+b") as f:
        f.write(b"garbage!")
    capsys.readouterr()
    assert main(["build-engine", "--model", bundle, "--precision", "fp16", "--no-build"] + ENC) == 2
    _one_line_error(capsys, "engine file is corrupt (sha256 differs from its sidecar)")
    assert main(["build-engine", "--model", bundle, "--precision", "fp16"] + ENC) == 0  # rebuilt


def test_int8_of_an_fp32_bundle_on_tensorrt_11_is_one_line(bundle, monkeypatch, capsys):
    FakeGPU("11.4.0").install(monkeypatch)
    assert main(["build-engine", "--model", bundle, "--precision", "int8"] + ENC) == 2
    err = _one_line_error(capsys, "--precision int8 builds from a bundle whose encoder is a Q/DQ INT8 graph")
    assert "`rmpsam-edge quantize --model %s --precision int8 --target tensorrt --out %s-int8-trt`" % (
        bundle, bundle) in err


def test_fp16_without_fast_fp16(bundle, monkeypatch, capsys):
    fake = FakeGPU("8.6.1")
    fake.fast_fp16 = False
    fake.install(monkeypatch)
    assert main(["build-engine", "--model", bundle, "--precision", "fp16"] + ENC) == 2
    _one_line_error(capsys, "this GPU has no fast FP16 (TensorRT reports platform_has_fast_fp16 False): build "
                            "--precision fp32")
    assert main(["build-engine", "--model", bundle, "--precision", "fp32"] + ENC) == 0


def test_dla_where_there_is_none(bundle, monkeypatch, capsys):
    FakeGPU("10.3.0", gpu="NVIDIA GeForce RTX 4090", cc=(8, 9), dla_cores=0).install(monkeypatch)
    assert main(["build-engine", "--model", bundle, "--precision", "fp16", "--dla", "0"] + ENC) == 2
    _one_line_error(capsys, "--dla 0: this GPU has no DLA (only Jetson AGX Xavier, Xavier NX, AGX Orin and Orin NX")


def test_out_of_gpu_memory_names_the_workspace_limit(bundle, monkeypatch, capsys):
    fake = FakeGPU("10.3.0").install(monkeypatch)
    fake.fail_build = "Requested amount of GPU memory (4294967296 bytes) could not be allocated."
    assert main(["build-engine", "--model", bundle, "--precision", "fp16", "--workspace", "4"] + ENC) == 2
    _one_line_error(capsys, "TensorRT ran out of GPU memory building the encoder engine: lower the builder "
                            "workspace limit (--workspace, now 4.0 GiB; e.g. --workspace 2.0)")
    assert not os.path.exists(os.path.join(bundle, "tensorrt", "encoder.fp16.engine"))


def test_fp32_pins_skip_non_float_layers_and_a_missing_timing_cache_is_no_failure(bundle, monkeypatch, capsys):
    fake = FakeGPU("8.6.1").install(monkeypatch)  # pins: weak typing
    fake.timing_cache_fails = True  # create_timing_cache returns None, as TensorRT may
    # '.' matches every layer: Greater (BOOL) and Shape (INT64) must not be pinned under OBEY_PRECISION_CONSTRAINTS
    assert main(["build-engine", "--model", bundle, "--precision", "fp16", "--fp32-layers", ".",
                 "--graphs", "prompt_decoder", "--imgsz", "64"]) == 0, capsys.readouterr()[1]
    assert "TensorRT did not accept a timing cache; building without one" in capsys.readouterr()[1]
    rec = fake.builds[-1]
    assert rec["pinned"] and "OBEY_PRECISION_CONSTRAINTS" in rec["flags"]
    c = compat.Compat(fake.trt)
    net = c.create_network(fake.trt.Builder(fake.trt.Logger()))
    fake.trt.OnnxParser(net, fake.trt.Logger()).parse_from_file(os.path.join(bundle, "prompt_decoder.onnx"))
    bool_layers = [l for l in net.layers if l._outputs[0].dtype == fake.trt.bool]
    assert bool_layers and not c.pin_fp32(bool_layers[0]) and bool_layers[0]._precision is None


def test_auto_never_builds_and_names_the_command_explicit_builds_once(bundle, monkeypatch, capsys):
    fake = FakeGPU("10.3.0").install(monkeypatch)
    with pytest.raises(BackendUnavailable) as err:
        trt_pkg.create(bundle, auto=True)
    assert "build it with `rmpsam-edge build-engine --model %s --precision fp32`" % bundle in str(err.value)
    assert "\n" not in str(err.value) and fake.names().count("build_serialized_network") == 0
    assert fake.leftover() == [] and not fake.live_contexts
    r = trt_pkg.create(bundle, precision="fp16")  # explicit: builds once, says so and how long it took
    err = capsys.readouterr()[1]
    assert "building encoder fp16 engine (no engine built yet)" in err and "built in" in err
    r.deactivate()
    r = trt_pkg.create(bundle, auto=True, precision="fp16")  # now cached: auto uses it
    assert r.active and fake.names().count("build_serialized_network") == 4
    r.deactivate()


def test_tensorrt_8_5_names_the_layernorm_limit(bundle, monkeypatch, capsys):
    FakeGPU("8.5.2").install(monkeypatch)  # JetPack 5.1.x
    assert main(["build-engine", "--model", bundle, "--precision", "fp16", "--graphs", "prompt_decoder",
                 "--imgsz", "64"]) == 2
    _one_line_error(capsys, "TensorRT 8.5: cannot import LayerNormalization (24 nodes in prompt_decoder); "
                            "export with --opset 16")
    assert main(["build-engine", "--model", bundle, "--precision", "fp16"] + ENC) == 0  # the encoder has none
