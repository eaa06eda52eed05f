"""engines.py: reuse the cached engine, or rebuild with one line saying why; never crash on a bad file."""
import json
import os
import signal
import subprocess
import sys

import onnx
import pytest

from fakes_tensorrt import FakeGPU, bundle, tiny_bundle  # noqa: F401 (fixtures)
from rmpsam_edge.errors import UserError
from rmpsam_edge.quantize import ort_quant
from rmpsam_edge.runtime.bundle import Bundle
from rmpsam_edge.runtime.tensorrt import cache, compat, engines, profiles
from rmpsam_edge.runtime.tensorrt.cuda_context import device_info

RANGES = profiles.make_ranges((64, 64), prompts=(1, 1, 8), classes=(1, 5, 8), protos=(1, 2, 2))


def session(bundle, version="10.3.0", gpu="Orin", cc=(8, 7)):
    fake = FakeGPU(version, gpu=gpu, cc=cc)
    fake.cuda.Device(0).make_context()
    lines = []
    s = engines.Session(compat.Compat(fake.trt), device_info(fake.cuda), Bundle.open(bundle), lines.append)
    return s, fake, lines


def test_build_once_then_cached(bundle):
    s, fake, lines = session(bundle)
    data, status = s.engine_bytes("encoder", engines.Choices("fp16", RANGES))
    assert status == "built" and data.startswith(b"FAKE-TRT-PLAN")
    assert lines[0] == "building encoder fp16 engine (no engine built yet); this takes minutes on a Jetson"
    assert lines[-1].startswith("encoder engine saved: %s" % os.path.join(bundle, "tensorrt", "encoder.fp16.engine"))
    del lines[:]
    data2, status2 = s.engine_bytes("encoder", engines.Choices("fp16", RANGES))
    assert (data2, status2, lines) == (data, "cached", [])
    assert fake.names().count("build_serialized_network") == 1
    assert os.path.isfile(os.path.join(bundle, "tensorrt", "timing-trt10.3.0-orin.cache"))


@pytest.mark.parametrize("change,reason", [
    (dict(version="10.4.0"), "TensorRT version 10.3.0 (engine) != 10.4.0 (here)"),
    (dict(gpu="NVIDIA GeForce RTX 4090", cc=(8, 9)),
     "GPU Orin (engine) != 'NVIDIA GeForce RTX 4090' (here); compute capability 8.7 (engine) != 8.9 (here)"),
])
def test_other_machine_rebuilds_with_one_line_or_fails_with_no_build(bundle, change, reason):
    s, _, _ = session(bundle)
    s.engine_bytes("prompt_decoder", engines.Choices("fp16", RANGES))
    s2, fake2, lines = session(bundle, **change)
    with pytest.raises(UserError) as err:
        s2.engine_bytes("prompt_decoder", engines.Choices("fp16", RANGES), build=False)
    assert str(err.value) == ("the prompt_decoder engine cannot be used: %s; build it with `rmpsam-edge build-engine "
                              "--model %s --precision fp16`" % (reason, bundle))
    assert lines == [] and "build_serialized_network" not in fake2.names()
    _, status = s2.engine_bytes("prompt_decoder", engines.Choices("fp16", RANGES))
    assert status == "built" and lines[0] == "building prompt_decoder fp16 engine (%s); this takes minutes on a Jetson" % reason


def test_changed_graph_and_changed_profile_rebuild(bundle):
    s, _, lines = session(bundle)
    s.engine_bytes("encoder", engines.Choices("fp32", RANGES))
    bigger = profiles.make_ranges((128, 128), prompts=(1, 1, 8), classes=(1, 5, 8), protos=(1, 2, 2))
    s.engine_bytes("encoder", engines.Choices("fp32", bigger))
    assert "optimisation profile for H: min 32 opt 64 max 64 (engine) != min 32 opt 128 max 128 (wanted)" in lines[-2]
    # a re-exported graph (new file, new manifest sha256): rebuilt; an edited graph the manifest does not
    # vouch for is refused before TensorRT sees it
    enc = os.path.join(bundle, "encoder.onnx")
    model = onnx.load(enc)
    model.doc_string = "re-exported"
    os.remove(enc)
    onnx.save(model, enc)
    with pytest.raises(UserError, match="does not match its sha256"):
        session(bundle)[0].engine_bytes("encoder", engines.Choices("fp32", bigger))
    mpath = os.path.join(bundle, "manifest.json")
    with open(mpath) as f:
        manifest = json.load(f)
    manifest["graphs"]["encoder"]["sha256"] = cache.sha256_file(enc)
    with open(mpath, "w") as f:
        json.dump(manifest, f)
    s2, _, lines2 = session(bundle)
    s2.engine_bytes("encoder", engines.Choices("fp32", bigger))
    assert "ONNX graph sha256 changed" in lines2[0]


def test_corrupt_engine_is_rebuilt_never_crashes(bundle):
    s, fake, lines = session(bundle)
    s.engine_bytes("encoder", engines.Choices("fp16", RANGES))
    eng, side = cache.engine_paths(bundle, "encoder", "fp16")
    with open(eng, "r+b") as f:
        f.seek(100)
        f.write(b"\xff\xff")
    runtime = fake.trt.Runtime(fake.trt.Logger())
    engine = s.load_engine(runtime, "encoder", engines.Choices("fp16", RANGES))[0]
    assert engine.num_io_tensors == 2
    assert "engine file is corrupt (sha256 differs from its sidecar)" in lines[-2]
    # a plan whose sidecar matches but that TensorRT rejects (e.g. written by a broken tool): rebuilt once
    key = cache.read_sidecar(side)[0]["key"]
    cache.write(eng, side, b"garbage plan", key)
    del lines[:]
    engine, _, status = s.load_engine(runtime, "encoder", engines.Choices("fp16", RANGES))
    assert engine is not None and status == "built"
    assert lines[0].startswith("building encoder fp16 engine (TensorRT could not deserialise the cached engine)")
    # and with building disabled the same file gives a line, not a crash
    cache.write(eng, side, b"garbage plan", key)
    with pytest.raises(UserError, match="cannot be used: TensorRT could not deserialise the cached engine"):
        s.load_engine(runtime, "encoder", engines.Choices("fp16", RANGES), build=False)


def test_foreign_engine_needs_force(bundle):
    s, _, _ = session(bundle)
    eng, _ = cache.engine_paths(bundle, "encoder", "fp16")
    os.makedirs(os.path.dirname(eng))
    with open(eng, "wb") as f:
        f.write(b"made with trtexec")
    with pytest.raises(UserError, match=r"encoder.fp16.engine has no sidecar key \(not built by rmpsam-edge\); "
                                        r"pass --force to overwrite it"):
        s.engine_bytes("encoder", engines.Choices("fp16", RANGES))
    with open(eng, "rb") as f:
        assert f.read() == b"made with trtexec"
    assert s.engine_bytes("encoder", engines.Choices("fp16", RANGES), force=True)[1] == "built"


def test_runtime_keeps_the_stored_build_choices(bundle):
    s, _, _ = session(bundle)
    custom = profiles.make_ranges((128, 128), (64, 128), prompts=(1, 4, 16), classes=(1, 5, 8), protos=(1, 2, 2))
    for g in engines.GRAPH_ORDER:
        s.engine_bytes(g, engines.Choices("fp16", custom, fp32_layers=["conv1"]))
    s2, fake2, lines = session(bundle)
    assert s2.fill_choices(engines.Choices()).precision == "fp32"  # the bundle's: never what was built last
    filled = s2.fill_choices(engines.Choices("fp16"))
    assert filled.precision == "fp16" and filled.ranges["Np"] == (1, 4, 16) and filled.ranges["H"] == (32, 64, 128)
    for g in engines.GRAPH_ORDER:
        assert s2.engine_bytes(g, engines.Choices("fp16"))[1] == "cached"
    # after a TensorRT upgrade the rebuild keeps the custom profile and patterns
    s3, fake3, lines3 = session(bundle, version="10.4.0")
    s3.engine_bytes("prompt_decoder", engines.Choices("fp16"))
    assert [c[2:] for c in fake3.calls if c[0] == "set_shape" and c[1] == "boxes"] == [((1, 4), (4, 4), (16, 4))]
    assert cache.read_sidecar(cache.engine_paths(bundle, "prompt_decoder", "fp16")[1])[0]["key"]["fp32_layers"] == ["conv1"]
    os.remove(os.path.join(bundle, "object_decoder.onnx"))
    with pytest.raises(UserError, match=r"object_decoder.onnx is missing"):
        s2.engine_bytes("object_decoder", engines.Choices("fp16"))


def test_defaults_from_manifest(bundle):
    """H/W as the export declared them (manifest dynamic_axes), K and P up to the bundle's vocabulary (5 x 2, not
    the export's 1024 x 16), else as declared; prompts 1..64 split at many_prompts_from."""
    s, _, _ = session(bundle)
    c = s.fill_choices(engines.Choices())
    assert c.precision == "fp32" and c.ranges["H"] == (32, 128, 128) and c.ranges["h"] == (8, 32, 32)
    assert c.ranges["K"] == (1, 5, 5) and c.ranges["P"] == (1, 2, 2)
    with open(os.path.join(bundle, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["dynamic_axes"]["K"]["max"] == 1024
    del manifest["vocabulary"]
    with open(os.path.join(bundle, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    bare = engines.default_ranges(Bundle.open(bundle))
    assert bare["K"] == (1, manifest["dynamic_axes"]["K"]["opt"], 1024) and bare["P"][2] == 16
    assert c.ranges["Np"] == (1, 1, 47) and c.ranges["Npm"] == (48, 64, 64)
    assert engines.profile_key("prompt_decoder_many", c.ranges) == {"B": [1, 1, 1], "h": [8, 32, 32], "w": [8, 32, 32],
                                                                    "Npm": [48, 64, 64]}
    s11, _, _ = session(bundle, version="11.0.0")
    assert s11.fill_choices(engines.Choices()).precision == "fp32"  # strongly typed TensorRT


def test_many_prompt_graph_gets_its_own_prompt_range(bundle):
    s, fake, _ = session(bundle)
    s.engine_bytes("prompt_decoder_many", engines.Choices("fp16", RANGES))
    s.engine_bytes("prompt_decoder", engines.Choices("fp16", RANGES))
    boxes = [c[2:] for c in fake.calls if c[0] == "set_shape" and c[1] == "boxes"]
    assert boxes == [((48, 4), (48, 4), (48, 4)), ((1, 4), (1, 4), (8, 4))]


def test_dla_refused_where_tensorrt_has_none(bundle):
    s, fake, lines = session(bundle, "11.4.0")
    with pytest.raises(UserError, match=r"--dla 0: TensorRT 11.4.0 has no DLA .*build without --dla"):
        s.engine_bytes("encoder", engines.Choices("fp16", RANGES, dla_core=0))
    assert lines == [] and fake.builds == []


KILLED = """
import os, signal, sys
sys.path.insert(0, %(tests)r)
from fakes_tensorrt import FakeGPU
from rmpsam_edge.runtime.bundle import Bundle
from rmpsam_edge.runtime.tensorrt import compat, cuda_context, engines, profiles
fake = FakeGPU("10.3.0")
fake.cuda.Device(0).make_context()
fake.trt.Builder.build_serialized_network = lambda *a: os.kill(os.getpid(), signal.SIGKILL)  # the OOM killer
s = engines.Session(compat.Compat(fake.trt), cuda_context.device_info(fake.cuda), Bundle.open(%(bundle)r), print)
s.engine_bytes("encoder", engines.Choices("fp16", profiles.make_ranges((64, 64))))
"""


def test_a_build_killed_by_the_oom_killer_is_named_by_the_next_one(bundle):
    tests = os.path.dirname(os.path.abspath(__file__))
    p = subprocess.Popen([sys.executable, "-c", KILLED % {"tests": tests, "bundle": bundle}], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=os.path.dirname(tests))
    err = p.communicate(timeout=120)[1]
    assert p.returncode == -signal.SIGKILL, err[-2000:]
    s, fake, lines = session(bundle)
    s.engine_bytes("encoder", engines.Choices("fp16", RANGES))
    assert lines[0] == ("the last build of the encoder engine (process %d) was killed before it finished, most likely "
                        "out of memory (the kernel's OOM killer): if it dies again, add swap, close other programs or "
                        "build a smaller profile (--max-size, --workspace)" % p.pid)
    assert lines[1].startswith("building encoder fp16 engine") and fake.builds
    del lines[:]
    fake.fail_build = "some TensorRT error"  # a build that fails in Python leaves no marker behind
    with pytest.raises(UserError):
        s.engine_bytes("object_decoder", engines.Choices("fp16", RANGES))
    assert not [f for f in os.listdir(os.path.join(bundle, "tensorrt")) if f.endswith(".building")]


def _edit_manifest(bundle, **graph_fields):
    mpath = os.path.join(bundle, "manifest.json")
    with open(mpath) as f:
        manifest = json.load(f)
    for key, value in graph_fields.items():
        if key == "recipe":
            manifest["quantization"] = {"recipe": value, "source_bundle": "bundles/r18"}
        else:
            manifest["graphs"]["encoder"][key] = value
    with open(mpath, "w") as f:
        json.dump(manifest, f)


@pytest.mark.parametrize("version", ["10.3.0", "11.4.0"])
def test_fp16_from_an_fp32_bundle_is_a_typed_graph_on_tensorrt_10_and_11(bundle, version):
    """The FP16 graph `quantize --precision fp16` writes (quantize/fp16.py) plus TensorRT's sum_squares rule, made
    once into the engine folder, built as a strongly typed network with no precision flag."""
    s, fake, lines = session(bundle, version)
    s.engine_bytes("object_decoder", engines.Choices("fp16", RANGES))
    rec = fake.builds[-1]
    typed = [f for f in os.listdir(os.path.join(bundle, "tensorrt")) if f.endswith(".onnx")]
    assert len(typed) == 1 and typed[0].startswith("object_decoder.fp16-typed-")
    assert rec["typed"] and rec["flags"] == [] and rec["pinned"] == []
    assert rec["source"] == os.path.join(bundle, "tensorrt", typed[0])
    assert lines[1].startswith("object_decoder: typed FP16 graph %s written (" % typed[0])
    model = onnx.load(rec["source"])
    by_name = {n.name: n for n in model.graph.node}
    assert by_name["/ReduceL2"].op_type == "ReduceL2" and any(n.op_type == "Cast" for n in model.graph.node)
    fp16_inits = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert fp16_inits  # the weights went FP16; the graph's I/O stays FP32 (keep_io_types)
    assert {i.type.tensor_type.elem_type for i in model.graph.input} == {onnx.TensorProto.FLOAT}
    # a TensorRT upgrade rebuilds the engine from the same typed graph; new --fp32-layers make a new one
    s2, fake2, lines2 = session(bundle, "10.4.0" if version.startswith("10") else "11.5.0")
    s2.engine_bytes("object_decoder", engines.Choices("fp16", RANGES))
    assert fake2.builds[-1]["source"] == rec["source"] and len(lines2) == 2
    s2.engine_bytes("object_decoder", engines.Choices("fp16", RANGES, fp32_layers=["/stages.0/"]))
    now = [f for f in os.listdir(os.path.join(bundle, "tensorrt")) if f.endswith(".onnx")]
    assert len(now) == 1 and now != typed


def test_fp16_on_tensorrt_8_is_weakly_typed_with_pins(bundle):
    s, fake, lines = session(bundle, "8.6.1")
    s.engine_bytes("prompt_decoder", engines.Choices("fp16", RANGES))
    rec = fake.builds[-1]
    assert not rec["typed"] and set(rec["flags"]) == {"FP16", "OBEY_PRECISION_CONSTRAINTS"} and len(rec["pinned"]) == 29
    assert rec["source"] == os.path.join(bundle, "prompt_decoder.onnx")


def test_typed_fp16_without_onnx_names_the_quantize_command(bundle, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "onnx", None)
    s, fake, _ = session(bundle, "11.4.0")
    with pytest.raises(UserError) as err:
        s.engine_bytes("encoder", engines.Choices("fp16", RANGES))
    assert str(err.value) == ("this TensorRT builds FP16 from an FP16 graph, and the onnx package that makes one from "
                              "the FP32 bundle is not installed: pip install onnx, or run `rmpsam-edge quantize --model "
                              "%s --precision fp16 --out %s-fp16`, then build that bundle" % (bundle, bundle))
    assert "build_serialized_network" not in fake.names()


@pytest.mark.parametrize("version", ["8.5.2", "8.6.1", "10.3.0", "11.4.0"])
def test_int8_on_an_fp32_bundle_names_the_quantize_command(bundle, version):
    s, fake, _ = session(bundle, version)
    with pytest.raises(UserError) as err:
        s.engine_bytes("encoder", engines.Choices("int8", RANGES))
    assert str(err.value) == ("--precision int8 builds from a bundle whose encoder is a Q/DQ INT8 graph; %s is FP32: "
                              "run `rmpsam-edge quantize --model %s --precision int8 --target tensorrt --out %s-int8-trt` "
                              "(on any machine with the onnx package; it calibrates on your images), then build that "
                              "bundle" % (bundle, bundle, bundle))
    assert fake.builds == []


@pytest.mark.parametrize("version,flags,typed", [("8.6.1", {"FP16", "INT8"}, False), ("10.3.0", set(), True),
                                                 ("11.4.0", set(), True)])
def test_tensorrt_int8_bundle_keeps_its_graph_precision(bundle, version, flags, typed):
    """A bundle from `quantize --precision int8 --target tensorrt` (manifest recipe target 'tensorrt'): the encoder is
    built explicitly quantized (INT8 flag on 8.x, strongly typed on 10+); its decoders are FP16."""
    _edit_manifest(bundle, precision="int8", recipe=ort_quant.recipe("tensorrt"))
    s, fake, lines = session(bundle, version)
    assert engines.graph_precision("encoder", "fp16", "int8") == "int8"
    s.engine_bytes("encoder", engines.Choices("int8", RANGES))
    assert set(fake.builds[-1]["flags"]) == flags and fake.builds[-1]["typed"] == typed
    assert lines[0].startswith("building encoder int8 engine (no engine built yet)")
    assert engines.graph_precision("prompt_decoder", "int8") == "fp16"
    _edit_manifest(bundle, format="openvino-ir")
    with pytest.raises(UserError, match="is openvino-ir, not ONNX"):
        session(bundle)[0].engine_bytes("encoder", engines.Choices("fp16", RANGES))


def test_int8_bundle_that_is_not_symmetric_qdq_is_refused(bundle):
    """No recipe in the manifest (an older quantize): the graph itself is read; an FP32 graph labelled int8, or an
    ONNX Runtime uint8 bundle (recipe for a CPU target), is refused naming the quantize command for the source bundle."""
    _edit_manifest(bundle, precision="int8")
    with pytest.raises(UserError, match=r"^encoder.onnx is not a TensorRT INT8 graph \(no QuantizeLinear/Dequantize"
                                        r"Linear nodes; .*--precision int8 --target tensorrt"):
        session(bundle)[0].engine_bytes("encoder", engines.Choices("int8", RANGES))
    _edit_manifest(bundle, recipe=ort_quant.recipe("x86"))  # an ONNX Runtime CPU bundle
    with pytest.raises(UserError, match=r"it was quantized for --target x86 \(recipe u8s8-reduce-range\).* run `rmpsam-edge quantize --model "
                                        r"bundles/r18 --precision int8 --target tensorrt --out bundles/r18-int8-trt`"):
        session(bundle)[0].engine_bytes("encoder", engines.Choices("int8", RANGES))


def test_registry_fp16_on_tensorrt_11_runs_the_typed_graphs(bundle, monkeypatch):
    """doctor's FP16 default and the benchmark's fp16 row call ``create(bundle, precision="fp16")`` on the FP32
    bundle: on the pip TensorRT (11.4) that goes through the typed FP16 graphs, whose FP16 features come out close
    to the FP32 graph's (the fake runs each engine's ONNX with ONNX Runtime)."""
    import numpy as np
    import onnxruntime as ort
    from rmpsam_edge.runtime import tensorrt as trt_pkg
    fake = FakeGPU("11.4.0").install(monkeypatch)
    image = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    runner = trt_pkg.create(bundle, precision="fp16")
    try:
        feats = runner.encode(image)
    finally:
        runner.deactivate()
    assert {b["typed"] for b in fake.builds} == {True} and all(".fp16-typed-" in b["source"] for b in fake.builds)
    ref = ort.InferenceSession(os.path.join(bundle, "encoder.onnx")).run(None, {"image": image})[0]
    assert feats.dtype == np.float32 and np.abs(feats - ref).max() < 0.05 * np.abs(ref).max()
    assert not np.array_equal(feats, ref)  # it did run in FP16
