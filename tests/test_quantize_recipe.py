"""INT8 picks its recipe for the target it will run on: the CPU-feature reader on fake cpuinfo files (never the
real CPU), the recipe table, the graphs each recipe writes (7-bit weights without VNNI, TensorRT's symmetric
int8 Q/DQ) and the manifest / fidelity.md fields of a real ``rmpsam-edge quantize --target tensorrt`` run."""
import json
import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from _bundle_fixture import shared_bundle
from rmpsam_edge.errors import UserError
from rmpsam_edge.quantize import ort_quant, ov_quant
from rmpsam_edge.runtime import cpu_features

X86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse sse2 avx avx2 fma %s\n"
ARM = "processor\t: 0\nBogoMIPS\t: 62.50\nFeatures\t: fp asimd evtstrm aes crc32 %s\nCPU part\t: 0xd42\n"


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    return shared_bundle(tmp_path_factory)


def _cpuinfo(tmp_path, text, name="cpuinfo"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("text, target, name", [
    (X86 % "", "x86", "u8s8-reduce-range"),
    (X86 % "avx512f avx512_vnni", "x86-vnni", "u8s8"),
    (X86 % "avx_vnni", "x86-vnni", "u8s8"),
    (X86 % "amx_int8 amx_tile", "x86-vnni", "u8s8"),
    (ARM % "asimddp", "arm", "u8s8"),
    (ARM % "", "arm", "u8s8"),
])
def test_auto_recipe_follows_the_cpuinfo(tmp_path, text, target, name):
    r = ort_quant.recipe("auto", _cpuinfo(tmp_path, text))
    assert (r["target"], r["name"]) == (target, name)
    assert r["why"].startswith("auto: this CPU")
    assert ("asimddp" in r["why"]) == ("asimddp" in text)


def test_explicit_target_ignores_the_cpu_and_unknown_is_one_line(tmp_path):
    vnni = _cpuinfo(tmp_path, X86 % "avx512_vnni")
    r = ort_quant.recipe("x86", vnni)  # quantizing on a VNNI machine for one without
    assert r == {"name": "u8s8-reduce-range", "target": "x86", "why": r["why"]} and r["why"].startswith("--target x86")
    assert ort_quant.recipe("tensorrt", vnni)["name"] == "trt-s8s8-symmetric"
    unreadable = ort_quant.recipe("auto", str(tmp_path / "missing"))
    assert unreadable["target"] == "x86" and "lists no CPU flags" in unreadable["why"]
    with pytest.raises(UserError, match="unknown --target 'riscv'; use auto or one of"):
        ort_quant.recipe("riscv", vnni)


def test_openvino_recipe_turns_nncf_overflow_fix_on_only_without_vnni(tmp_path):
    assert ov_quant.recipe("auto", _cpuinfo(tmp_path, X86 % ""))["name"] == "nncf-mixed-overflow-fix"
    assert ov_quant.recipe("auto", _cpuinfo(tmp_path, X86 % "avx512_vnni"))["name"] == "nncf-mixed"
    assert ov_quant.recipe("arm", _cpuinfo(tmp_path, X86 % ""))["name"] == "nncf-mixed"
    with pytest.raises(UserError, match="--target tensorrt .* use --backend ort"):
        ov_quant.recipe("tensorrt")


def test_cpu_reader_x86_arm_isa_and_fingerprint(tmp_path):
    x86 = cpu_features.read(_cpuinfo(tmp_path, X86 % "avx512f avx512_vnni avx512_bf16", "a"))
    assert x86.arch == "x86" and x86.model == "AMD EPYC 7B13" and "avx512_vnni" in x86.flags
    assert cpu_features.isa(x86) == ["avx512", "avx2", "vnni", "bf16"]
    avx2 = cpu_features.read(_cpuinfo(tmp_path, X86 % "", "b"))
    assert cpu_features.isa(avx2) == ["avx2"] and not cpu_features.has_vnni(avx2)
    arm = cpu_features.read(_cpuinfo(tmp_path, ARM % "asimddp", "c"))
    assert (arm.arch, arm.model) == ("arm", "0xd42") and cpu_features.isa(arm) == ["neon", "dotprod"]
    assert not cpu_features.has_vnni(arm) and cpu_features.has_dotprod(arm)
    assert len({cpu_features.fingerprint(i) for i in (x86, avx2, arm)}) == 3
    assert cpu_features.fingerprint(avx2) == cpu_features.fingerprint(cpu_features.read(_cpuinfo(tmp_path, X86 % "", "d")))
    assert cpu_features.read(str(tmp_path / "missing")) == cpu_features.CpuInfo(None, frozenset(), "")


@pytest.fixture(scope="module")
def prepared(bundle, tmp_path_factory):
    """The prompt decoder (Conv, MatMul, Gemm) prepared for ORT, and two calibration inputs."""
    prep = str(tmp_path_factory.mktemp("recipe") / "pd.prep.onnx")
    ort_quant.prepare(os.path.join(bundle, "prompt_decoder.onnx"), prep)
    rng = np.random.RandomState(0)
    feeds = [{"features": rng.randn(1, 256, 8, 8).astype(np.float32),
              "boxes": np.array([[0.5, 0.5, 0.3, 0.3]], np.float32)} for _ in range(2)]
    return prep, feeds


def _qdq(path):
    g = onnx.load(path).graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    return g, inits, [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]


def test_tensorrt_recipe_writes_symmetric_int8_qdq_with_per_channel_weights(prepared, tmp_path):
    prep, feeds = prepared
    dst = str(tmp_path / "trt.onnx")
    ort_quant.quantize(prep, dst, feeds, target="tensorrt")
    g, inits, qdq = _qdq(dst)
    assert qdq, "no Q/DQ nodes written"
    per_channel = 0
    for n in qdq:
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), (n.name, zp.dtype)  # int8, zero point 0 everywhere
        x = inits.get(n.input[0])
        if x is not None:  # a weight: int8 (never an int32 bias: TensorRT's parser dequantizes int8 only)
            assert x.dtype == np.int8 and n.op_type == "DequantizeLinear"
            per_channel += inits[n.input[1]].size > 1
    assert per_channel > 0  # Conv / MatMul weights carry one scale per output channel
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    for n in qdq:  # dedicated pairs: no activation DQ is shared by two INT8 ops
        if n.op_type == "DequantizeLinear" and n.input[0] not in inits:
            assert len([c for c in consumers.get(n.output[0], []) if c.op_type in ort_quant.OP_TYPES]) <= 1


def test_x86_recipe_keeps_weights_in_7_bits_and_vnni_uses_8(prepared, tmp_path):
    prep, feeds = prepared
    spans = {}
    for target in ("x86", "x86-vnni"):
        dst = str(tmp_path / (target + ".onnx"))
        ort_quant.quantize(prep, dst, feeds, target=target)
        _, inits, qdq = _qdq(dst)
        acts = [inits[n.input[2]].dtype for n in qdq if n.op_type == "QuantizeLinear"]
        assert acts and set(acts) == {np.dtype(np.uint8)}  # U8S8: asymmetric uint8 activations
        w = [inits[n.input[0]] for n in qdq if n.input[0] in inits and inits[n.input[0]].dtype == np.int8]
        spans[target] = max(int(np.abs(a.astype(np.int32)).max()) for a in w)
    assert spans["x86"] <= 64 < spans["x86-vnni"]


def test_quantize_target_tensorrt_records_the_recipe(bundle, tmp_path):
    from rmpsam_edge.cli import main
    out = tmp_path / "trt"
    assert main(["quantize", "--model", bundle, "--out", str(out), "--calib-count", "2", "--holdout", "1",
                 "--runs", "1", "--precision", "int8", "--target", "tensorrt"]) == 0
    with open(str(out / "manifest.json")) as f:
        q = json.load(f)["quantization"]
    assert q["backend"] == "onnxruntime"
    assert q["recipe"]["name"] == "trt-s8s8-symmetric" and q["recipe"]["target"] == "tensorrt"
    assert q["recipe"]["why"].startswith("--target tensorrt -> TensorRT explicit quantization")
    _, inits, qdq = _qdq(str(out / "encoder.onnx"))
    assert qdq and all(inits[n.input[2]].dtype == np.int8 and not inits[n.input[2]].any() for n in qdq)
    md = (out / "fidelity.md").read_text()
    assert "- recipe: `trt-s8s8-symmetric` for target tensorrt (--target tensorrt -> " in md


def test_target_refusals(bundle, tmp_path, capsys):
    from rmpsam_edge.cli import main
    for extra, msg in ((["--precision", "fp16", "--target", "x86"], "--target applies to --precision int8"),
                       (["--backend", "openvino", "--target", "tensorrt"], "use --backend ort")):
        assert main(["quantize", "--model", bundle, "--out", str(tmp_path / "x")] + extra) != 0
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err
        assert not (tmp_path / "x").exists()
