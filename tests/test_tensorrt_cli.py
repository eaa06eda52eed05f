"""`rmpsam-edge build-engine` through the real CLI entry point, with the fake TensorRT + pycuda."""
import json
import os
import sys

import pytest

from fakes_tensorrt import FakeGPU, bundle, tiny_bundle  # noqa: F401 (fixtures)
from rmpsam_edge.cli import main


def test_build_then_up_to_date_then_no_build_check(bundle, monkeypatch, capsys):
    fake = FakeGPU("8.6.2", gpu="Orin", cc=(8, 7)).install(monkeypatch)
    args = ["build-engine", "--model", bundle, "--precision", "fp16", "--imgsz", "64", "--max-prompts", "8",
            "--graphs", "encoder,prompt_decoder"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "TensorRT 8.6.2 on Orin (sm 8.7): fp16, image 32x32..64x64 (opt 64x64), prompts 1..8 (opt 1)",
        "encoder: fp16 engine built (0.0 MB)", "prompt_decoder: fp16 engine built (0.0 MB)"]
    assert "tensorrt: building encoder fp16 engine (no engine built yet)" in err
    assert "tensorrt: prompt_decoder: 29 layers pinned to FP32" in err
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[1:] == ["encoder: fp16 engine up to date (0.0 MB)",
                                    "prompt_decoder: fp16 engine up to date (0.0 MB)"] and err == ""
    # a check with only the precision keeps the stored profile (64, 8 prompts): still usable
    assert main(["build-engine", "--model", bundle, "--precision", "fp16", "--no-build", "--graphs",
                 "encoder,prompt_decoder"]) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines()[0].endswith("prompts 1..8 (opt 1)")
    assert fake.names().count("build_serialized_network") == 2 and fake.leftover() == [] and not fake.live_contexts


def test_no_build_on_another_machine_says_what_differs(bundle, monkeypatch, capsys):
    FakeGPU("8.6.2").install(monkeypatch)
    assert main(["build-engine", "--model", bundle, "--imgsz", "64", "--graphs", "encoder"]) == 0
    FakeGPU("10.3.0", gpu="NVIDIA GeForce RTX 4090", cc=(8, 9)).install(monkeypatch)
    capsys.readouterr()
    assert main(["build-engine", "--model", bundle, "--no-build", "--graphs", "encoder"]) == 2
    _, err = capsys.readouterr()
    assert err == ("error: the encoder engine cannot be used: TensorRT version 8.6.2 (engine) != 10.3.0 (here); "
                   "GPU Orin (engine) != 'NVIDIA GeForce RTX 4090' (here); compute capability 8.7 (engine) != 8.9 "
                   "(here); build it with `rmpsam-edge build-engine --model %s --precision fp32`\n" % bundle)


def _tensorrt_int8_bundle(bundle):
    """The manifest of a `quantize --precision int8 --target tensorrt` bundle (encoder Q/DQ, recipe 'tensorrt')."""
    mpath = os.path.join(bundle, "manifest.json")
    with open(mpath) as f:
        manifest = json.load(f)
    manifest["precision"], manifest["graphs"]["encoder"]["precision"] = "int8", "int8"
    manifest["quantization"] = {"recipe": {"name": "trt-s8s8-symmetric", "target": "tensorrt"}}
    with open(mpath, "w") as f:
        json.dump(manifest, f)


@pytest.mark.parametrize("version,flags", [("8.6.2", {"FP16", "INT8", "GPU_FALLBACK"}),
                                           ("10.3.0", {"FP16", "INT8", "GPU_FALLBACK"})])
def test_int8_bundle_on_dla(bundle, monkeypatch, capsys, version, flags):
    """DLA builds take their precision from the flags on 8.x and 10.x (weak typing), from an explicit Q/DQ graph."""
    fake = FakeGPU(version, dla_cores=2).install(monkeypatch)
    _tensorrt_int8_bundle(bundle)
    assert main(["build-engine", "--model", bundle, "--imgsz", "64", "--dla", "0", "--graphs", "encoder"]) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines()[1] == "encoder: int8 engine built (0.0 MB)"
    rec = fake.builds[-1]
    assert rec["device"] == "DLA" and set(rec["flags"]) == flags and not rec["typed"]
    assert os.path.isfile(os.path.join(bundle, "tensorrt", "encoder.int8.dla0.engine"))
    # precision and DLA are never guessed from what was built last: given, the engine is found; without --dla
    # it is the GPU engine, which was not built
    assert main(["build-engine", "--model", bundle, "--precision", "int8", "--dla", "0", "--no-build",
                 "--graphs", "encoder"]) == 0
    assert main(["build-engine", "--model", bundle, "--precision", "int8", "--no-build", "--graphs", "encoder"]) == 2
    _, err = capsys.readouterr()
    assert "the encoder engine cannot be used: no engine built yet" in err


def test_fp16_of_an_fp32_bundle_on_tensorrt_11(bundle, monkeypatch, capsys):
    """The pip-installed TensorRT (11.4): every graph of the FP32 bundle builds FP16 through its typed graph."""
    fake = FakeGPU("11.4.0").install(monkeypatch)
    assert main(["build-engine", "--model", bundle, "--precision", "fp16", "--imgsz", "64"]) == 0
    out, err = capsys.readouterr()
    graphs = [line.split(":")[0] for line in out.splitlines()[1:]]
    assert len(graphs) == len(fake.builds) >= 3 and all(b["typed"] and b["flags"] == [] for b in fake.builds)
    assert all(b["source"].endswith(".onnx") and ".fp16-typed-" in b["source"] for b in fake.builds)
    assert err.count("typed FP16 graph") == len(graphs)


@pytest.mark.parametrize("argv,message", [
    (["--precision", "int8"], "--precision int8 --target tensorrt --out"),
    (["--graphs", "encoder,decoder"], "--graphs: unknown graph decoder"),
    (["--force", "--no-build"], "--force and --no-build contradict each other"),
    (["--imgsz", "big"], "--imgsz must be a number of pixels (e.g. 640) or 'official'"),
    (["--max-size", "100"], "--max-size 100: sides must be multiples of 32"),
    (["--opt-size", "384by640"], "--opt-size '384by640': give a size in pixels like 640, or HxW like 384x640"),
    (["--dla", "x"], "--dla x: give a DLA core number"),
    (["--device", "cpu"], "--device cpu: tensorrt runs on a CUDA GPU"),
    (["--precision", "fp32", "--dla", "0"], "--dla runs FP16 or INT8 only"),
    (["--max-prompts", "0"], "prompts (--max-prompts) must satisfy 1 <= min <= opt <= max"),
])
def test_bad_flags_are_one_line(bundle, monkeypatch, capsys, argv, message):
    FakeGPU("10.3.0").install(monkeypatch)
    assert main(["build-engine", "--model", bundle] + argv) == 2
    _, err = capsys.readouterr()
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_without_tensorrt_or_bundle(bundle, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert main(["build-engine", "--model", bundle]) == 2
    assert "tensorrt not installed (Jetson: comes with JetPack" in capsys.readouterr()[1]
    assert main(["build-engine", "--model", str(tmp_path)]) == 2
    assert "is not a model bundle (no manifest.json)" in capsys.readouterr()[1]
