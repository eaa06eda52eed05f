"""build.py + profiles.py against the fake TensorRT: profiles, workspace, timing cache, parser errors, build
failures, DLA, and precision per version: strongly typed networks (10.x, 11.x) from typed graphs, weak typing with
flags (8.5, 8.6) for FP16 and for Q/DQ INT8 (explicit quantization)."""
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from _bundle_fixture import shared_bundle
from fakes_tensorrt import FakeGPU
from rmpsam_edge.errors import UserError
from rmpsam_edge.runtime.tensorrt import build, compat, profiles


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    return shared_bundle(tmp_path_factory)


RANGES = profiles.make_ranges((128, 128), (64, 96), None, prompts=(1, 2, 8), classes=(1, 5, 10), protos=(1, 2, 3))


def _shapes(fake):
    return {c[1]: c[2:] for c in fake.calls if c[0] == "set_shape"}


def test_profiles_of_the_three_graphs(tiny_bundle):
    fake = FakeGPU("10.3.0")
    c = compat.Compat(fake.trt)
    for graph in ("encoder", "prompt_decoder", "prompt_decoder_many", "object_decoder"):
        res = build.build_engine(c, graph, os.path.join(tiny_bundle, graph + ".onnx"),
                                 build.BuildSettings("fp32", RANGES), print)
        assert res.data.startswith(b"FAKE-TRT-PLAN") and fake.builds[-1]["profile"]
    s = _shapes(fake)
    assert s["image"] == ((1, 3, 32, 32), (1, 3, 64, 96), (1, 3, 128, 128))
    assert s["features"] == ((1, 256, 8, 8), (1, 256, 16, 24), (1, 256, 32, 32))
    assert s["boxes"] == ((1, 4), (2, 4), (8, 4))
    assert s["class_embed"] == ((1, 1, 768), (5, 2, 768), (10, 3, 768))
    assert [c[2] for c in fake.calls if c[0] == "set_memory_pool_limit"] == [2 << 30] * 4


def test_timing_cache_is_reused_across_builds(tiny_bundle, tmp_path):
    fake = FakeGPU("8.6.1")
    c = compat.Compat(fake.trt)
    path = str(tmp_path / "timing.cache")
    st = build.BuildSettings("fp16", RANGES, workspace_bytes=1 << 30, timing_cache=path)
    build.build_engine(c, "encoder", os.path.join(tiny_bundle, "encoder.onnx"), st, print)
    build.build_engine(c, "prompt_decoder", os.path.join(tiny_bundle, "prompt_decoder.onnx"), st, print)
    assert [c[1] for c in fake.calls if c[0] == "create_timing_cache"] == [b"", b"+"]
    with open(path, "rb") as f:
        assert f.read() == b"++"
    assert ("create_network", 1) in fake.calls  # 8.6: explicit batch flag


@pytest.mark.parametrize("version", ["10.3.0", "8.6.1"])
def test_parser_errors_name_the_failing_node(tiny_bundle, version):
    """10.x reports node_name()/node_operator(); 8.6 only node(): the name comes from the ONNX file."""
    path = os.path.join(tiny_bundle, "encoder.onnx")
    nodes = onnx.load(path, load_external_data=False).graph.node
    index = [n.op_type for n in nodes].index("GridSample")
    fake = FakeGPU(version)
    fake.unsupported_ops = {"GridSample"}
    with pytest.raises(UserError) as err:
        build.build_engine(compat.Compat(fake.trt), "encoder", path, build.BuildSettings("fp16", RANGES), print)
    assert str(err.value) == ("TensorRT cannot parse encoder.onnx: node %d '/deform.0/GridSample' (GridSample): "
                              "No importer registered for op: GridSample (+2 more errors)" % index)


def test_build_failure_is_one_line_with_tensorrt_reason(tiny_bundle):
    fake = FakeGPU("10.3.0")
    fake.fail_build = "[optimizer] Could not find any implementation for node /MatMul_1"
    with pytest.raises(UserError, match=r"^TensorRT could not build the prompt_decoder engine: \[optimizer\] "
                                        r"Could not find any implementation for node /MatMul_1$"):
        build.build_engine(compat.Compat(fake.trt), "prompt_decoder", os.path.join(tiny_bundle, "prompt_decoder.onnx"),
                                          build.BuildSettings("fp16", RANGES), print)
    with pytest.raises(UserError, match="prompt_decoder graph .*missing.onnx not found"):
        build.build_engine(compat.Compat(fake.trt), "prompt_decoder", os.path.join(tiny_bundle, "missing.onnx"),
                                          build.BuildSettings("fp16", RANGES), print)


def test_unknown_dynamic_axis_is_named(tmp_path):
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "H", "W"])
    m = helper.make_tensor_value_info("mystery", TensorProto.FLOAT, ["T", 2])
    y = helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 3, "H", "W"])
    g = helper.make_graph([helper.make_node("Identity", ["image"], ["features"], name="id")], "g", [x, m], [y])
    path = str(tmp_path / "encoder.onnx")
    onnx.save(helper.make_model(g), path)
    fake = FakeGPU("10.3.0")
    with pytest.raises(UserError, match=r"encoder input 'mystery' \[-1, 2\]: axis 0 is dynamic and is an axis the "
                                        r"builder has no size for"):
        build.build_engine(compat.Compat(fake.trt), "encoder", path, build.BuildSettings("fp32", RANGES), print)


def test_profile_helpers():
    with pytest.raises(UserError, match=r"prompts \(--max-prompts\) must satisfy 1 <= min <= opt <= max, got 1 / 9 / 8"):
        profiles.make_ranges((64, 64), prompts=(1, 9, 8))
    # (1, Np, 4) matches the (Np, 4) row from the right; static axes keep their value
    assert profiles.input_profile("g", "boxes", (1, -1, 4), RANGES) == ((1, 1, 4), (1, 2, 4), (1, 8, 4))
    with pytest.raises(UserError, match=r"outside the engine's optimisation profile \(min \[1, 4\], max \[8, 4\]\); rebuild"):
        profiles.check_within("prompt_decoder", "boxes", (9, 4), ((1, 4), (2, 4), (8, 4)), "; rebuild")
    profiles.check_within("prompt_decoder", "boxes", (8, 4), ((1, 4), (2, 4), (8, 4)))


def test_dla_build_is_static_with_gpu_fallback(tiny_bundle):
    fake = FakeGPU("8.6.1", dla_cores=2)
    st = build.BuildSettings("fp16", RANGES, dla_core=1)
    lines = []
    build.build_engine(compat.Compat(fake.trt), "encoder", os.path.join(tiny_bundle, "encoder.onnx"), st, lines.append)
    rec = fake.builds[-1]
    assert rec["device"] == "DLA" and rec["dla_core"] == 1 and set(rec["flags"]) == {"FP16", "GPU_FALLBACK"}
    assert _shapes(fake)["image"] == ((1, 3, 64, 96),) * 3  # DLA has no dynamic shapes: min = opt = max
    # one line names the layers the builder leaves on the GPU: the deformable neck's GridSample among them
    types = [l.type.name for l in onnx_layers(fake, os.path.join(tiny_bundle, "encoder.onnx"))]
    gpu = [t for t in types if t not in ("CONVOLUTION", "ACTIVATION", "ELEMENTWISE", "CONCATENATION", "RESIZE",
                                         "SHUFFLE", "SLICE", "SOFTMAX", "REDUCE", "UNARY")]
    dla_line, = [l for l in lines if "DLA core 1" in l]
    assert dla_line.startswith("encoder: DLA core 1 runs %d of %d layers; on the GPU" % (len(types) - len(gpu), len(types)))
    assert "GRID_SAMPLE x%d" % types.count("GRID_SAMPLE") in dla_line and types.count("GRID_SAMPLE") >= 1
    fake0 = FakeGPU("10.3.0", dla_cores=0)  # Orin Nano / Orin Nano Super, desktop GPUs
    with pytest.raises(UserError, match="this GPU has no DLA .*Orin Nano, Orin Nano Super and desktop GPUs do not"):
        build.build_engine(compat.Compat(fake0.trt), "encoder", os.path.join(tiny_bundle, "encoder.onnx"), st, print)


def qdq_conv(path, zero_point_type=TensorProto.INT8, zero_point=0):
    """image (1, 3, H, W) -> Q/DQ -> Conv (Q/DQ int8 per-channel weights) -> features, as TensorRT's format wants."""
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.05]),
             helper.make_tensor("zp", zero_point_type, [], [zero_point]),
             helper.make_tensor("w", TensorProto.INT8, w.shape, np.clip(np.round(w / 0.02), -127, 127).astype(
                 np.int8).ravel().tolist()),
             helper.make_tensor("ws", TensorProto.FLOAT, [4], [0.02] * 4),
             helper.make_tensor("wzp", TensorProto.INT8, [4], [0] * 4)]
    nodes = [helper.make_node("QuantizeLinear", ["image", "s", "zp"], ["q"], name="/q"),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["dq"], name="/dq"),
             helper.make_node("DequantizeLinear", ["w", "ws", "wzp"], ["wdq"], name="/wdq", axis=0),
             helper.make_node("Conv", ["dq", "wdq"], ["features"], name="/conv", pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "H", "W"])],
                          [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 4, "H", "W"])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def onnx_layers(fake, path):
    """The layers the fake parser makes of an ONNX file (one per node, as the build saw them)."""
    logger = fake.trt.Logger()
    network = fake.trt.Builder(logger).create_network(1)
    fake.trt.OnnxParser(network, logger).parse_from_file(path)
    return network.layers


@pytest.mark.parametrize("version,typed,flags", [("8.5.2", False, {"FP16", "INT8"}), ("8.6.1", False, {"FP16", "INT8"}),
                                                 ("10.3.0", True, set()), ("11.4.0", True, set())])
def test_qdq_int8_builds_explicitly_on_every_version(tmp_path, version, typed, flags):
    """8.x: explicit quantization needs the INT8 flag (and FP16 for the rest); 10.x/11.x: a strongly typed network,
    the Q/DQ nodes are the precision, no flag."""
    path = qdq_conv(str(tmp_path / "encoder.onnx"))
    fake = FakeGPU(version)
    c = compat.Compat(fake.trt)
    assert c.typed() == typed
    build.build_engine(c, "encoder", path, build.BuildSettings("int8", RANGES, typed=c.typed()), print)
    rec = fake.builds[-1]
    assert set(rec["flags"]) == flags and rec["typed"] == typed and rec["pinned"] == []


def test_qdq_built_as_fp16_on_weak_typing_fails(tmp_path):
    """Why a stored INT8 graph keeps precision int8 (engines.graph_precision): 8.x quantizes explicitly only with
    the INT8 flag."""
    path = qdq_conv(str(tmp_path / "encoder.onnx"))
    fake = FakeGPU("8.6.1")
    with pytest.raises(UserError, match="INT8 builder flag is not set"):
        build.build_engine(compat.Compat(fake.trt), "encoder", path, build.BuildSettings("fp16", RANGES), print)


def test_asymmetric_uint8_qdq_is_refused_by_the_parser(tmp_path):
    path = qdq_conv(str(tmp_path / "encoder.onnx"), TensorProto.UINT8, 128)
    with pytest.raises(UserError, match="node 0 '/q' \\(QuantizeLinear\\): Assertion failed: TensorRT only supports "
                                        "symmetric INT8"):
        build.build_engine(compat.Compat(FakeGPU("10.3.0").trt), "encoder", path,
                           build.BuildSettings("int8", RANGES, typed=True), print)
