"""precision.py: the FP32 pins, checked against REAL exported graphs.

The graphs are those of the shared test bundle (tests/_bundle_fixture.py: `rmpsam-edge export` of a
seeded random R18, i.e. ``rmpsam_edge.export`` with onnxslim), so node names such as ``/stages.0/MatMul``
are the ones TensorRT's ONNX parser gives its layers. The decomposed-LayerNorm case uses an opset-16
torch.onnx.export of ``rmpsam_edge.modeling``'s KernelUpdator.
"""
import os
import warnings

import onnx
import pytest

from _bundle_fixture import shared_bundle
from fakes_tensorrt import FakeGPU
from rmpsam_edge.runtime.sensitive_layers import summary
from rmpsam_edge.runtime.tensorrt import build, compat, precision, profiles


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    return shared_bundle(tmp_path_factory)


def _onnx_selection(path):
    model = onnx.load(path, load_external_data=False)
    nodes = precision.nodes_from_onnx(model.graph)
    return precision.select_fp32(nodes, [o.name for o in model.graph.output]), nodes


def _by_reason(sel):
    out = {}
    for name, reason in sel.items():
        out.setdefault(reason, []).append(name)
    return out


@pytest.mark.parametrize("graph", ["prompt_decoder", "prompt_decoder_many"])
def test_prompt_decoder_pins_on_the_real_graph(tiny_bundle, graph):
    sel, nodes = _onnx_selection(os.path.join(tiny_bundle, graph + ".onnx"))
    r = _by_reason(sel)
    ln = [n.name for n in nodes if n.kind == "layernorm"]
    assert len(ln) == 24 and r["layernorm"] == ln  # every LayerNorm of the 3 stages and the adapter
    assert r["softmax"] == ["/cross/Softmax"]   # prompt-to-pixel attention over all h*w pixels
    # the hard-mask SUM pooling of each cascade stage: MatMul((M > 0).float(), F^T)
    assert r["mask_pool"] == ["/stages.0/MatMul", "/stages.1/MatMul", "/stages.2/MatMul"]
    # the final mask logits MatMul, not the per-stage mask logits that only feed M > 0
    assert r["logits"] == ["/MatMul_1"]
    stage_masks = [n.name for n in nodes if n.kind == "matmul" and n.name.startswith("/stages.0/")]
    assert len(stage_masks) > 1 and [m for m in stage_masks if m in sel] == ["/stages.0/MatMul"]
    assert summary(sel) == "29 layers pinned to FP32: 24 layernorm, 1 softmax, 3 mask_pool, 1 logits"


def test_object_decoder_pins_on_the_real_graph(tiny_bundle):
    sel, nodes = _onnx_selection(os.path.join(tiny_bundle, "object_decoder.onnx"))
    r = _by_reason(sel)
    assert r["layernorm"] == [n.name for n in nodes if n.kind == "layernorm"] and len(r["layernorm"]) == 28
    assert r["softmax"] == ["/stages.%d/Softmax" % i for i in range(3)]
    assert r["mask_pool"] == ["/stages.0/MatMul", "/stages.1/MatMul", "/stages.2/MatMul", "/MatMul_1"]
    # mask logits MatMul; class logits = 100 * [max_p cos, 0]: cosine MatMul, ReduceMax over prototypes,
    # through the background Concat, x100
    assert sorted(r["logits"]) == ["/MatMul_2", "/MatMul_3", "/Mul", "/ReduceMax"]
    assert r["sum_squares"] == ["/ReduceL2"]  # F.normalize's norm: a sum of 768 squares overflows FP16


def test_encoder_has_nothing_to_pin(tiny_bundle):
    sel, nodes = _onnx_selection(os.path.join(tiny_bundle, "encoder.onnx"))
    assert len(nodes) > 200 and sel == {}  # conv / GridSample / resize only: FP16 as a whole


def test_tensorrt_network_gives_the_same_layers(tiny_bundle):
    """Through the fake parser (one layer per node, ReduceL2 split as TensorRT does) and compat.layer_kind."""
    fake = FakeGPU("10.3.0")
    c = compat.Compat(fake.trt)
    network = c.create_network(fake.trt.Builder(fake.trt.Logger()))
    assert fake.trt.OnnxParser(network, fake.trt.Logger()).parse_from_file(os.path.join(tiny_bundle, "object_decoder.onnx"))
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    sel = precision.select_fp32(precision.nodes_from_network(network, c), outputs)
    onnx_sel, _ = _onnx_selection(os.path.join(tiny_bundle, "object_decoder.onnx"))
    expected = dict(onnx_sel)
    del expected["/ReduceL2"]  # TensorRT's parser: sqrt(reduce_sum(x * x)), all three pinned
    expected.update({"/ReduceL2_square": "sum_squares", "/ReduceL2_reduce": "sum_squares", "/ReduceL2": "sum_squares"})
    assert dict(sel) == expected


def test_user_patterns_and_decomposed_layernorm():
    """--fp32-layers regexes; and an opset-16 export (no LayerNormalization op) found by module path."""
    import torch
    from rmpsam_edge.modeling.kernel_updator import KernelUpdator
    import tempfile
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = os.path.join(d, "ku.onnx")
        torch.onnx.export(KernelUpdator(256).eval(), (torch.randn(1, 4, 256), torch.randn(1, 4, 256)), path,
                          input_names=["u", "x"], output_names=["out"], opset_version=16, dynamo=False)
        model = onnx.load(path)
    nodes = precision.nodes_from_onnx(model.graph)
    assert not any(n.kind == "layernorm" for n in nodes)
    sel = precision.select_fp32(nodes, ["out"])
    ln_parts = sorted({n.split("/")[1] for n in sel})
    assert ln_parts == ["fc_norm", "input_norm_in", "input_norm_out", "norm_in", "norm_out"]
    assert all(sel[n] == "layernorm" for n in sel)
    assert any(n.endswith("ReduceMean") for n in sel) and any(n.endswith("Sqrt") for n in sel)
    user = precision.select_fp32(nodes, ["out"], [r"input_gate/"])
    extra = {n for n, why in user.items() if why == "user"}
    assert extra and all("input_gate/" in n for n in extra)


@pytest.mark.parametrize("version", ["8.6.1", "10.3.0"])
def test_fp16_build_pins_exactly_the_selection(tiny_bundle, version):
    fake = FakeGPU(version)
    c = compat.Compat(fake.trt)
    ranges = profiles.make_ranges((64, 64), prompts=(1, 1, 8), classes=(1, 5, 8), protos=(1, 2, 2))
    lines = []
    res = build.build_engine(c, "prompt_decoder", os.path.join(tiny_bundle, "prompt_decoder.onnx"),
                                            build.BuildSettings("fp16", ranges), lines.append)
    rec = fake.builds[-1]
    assert rec["pinned"] == list(res.pinned) and len(rec["pinned"]) == 29
    assert set(rec["flags"]) == {"FP16", "OBEY_PRECISION_CONSTRAINTS"}
    assert all(types == [0] for types in rec["output_types"].values())
    assert lines == ["prompt_decoder: 29 layers pinned to FP32: 24 layernorm, 1 softmax, 3 mask_pool, 1 logits"]
    # fp32: nothing pinned, no precision flag
    fake.builds.clear()
    build.build_engine(c, "prompt_decoder", os.path.join(tiny_bundle, "prompt_decoder.onnx"),
                                      build.BuildSettings("fp32", ranges), lines.append)
    assert fake.builds[-1]["pinned"] == [] and fake.builds[-1]["flags"] == []


def test_typed_fp16_graph_is_quantizes_fp16_graph_plus_tensorrts_rules(tiny_bundle, tmp_path):
    """precision.typed_fp16 reuses quantize/fp16.py: on the prompt decoder (no sum of squares) the graph is the
    one `quantize --precision fp16` writes; on the object decoder ReduceL2 (sum_squares) and --fp32-layers
    matches also stay FP32."""
    from rmpsam_edge.quantize import fp16

    def fp16_nodes(path):
        m = onnx.load(path)
        return [(n.op_type, n.name) for n in m.graph.node], sorted(i.name for i in m.graph.initializer
                                                                   if i.data_type == onnx.TensorProto.FLOAT16)
    src = os.path.join(tiny_bundle, "prompt_decoder.onnx")
    fp16.convert(src, str(tmp_path / "q.onnx"))
    path, kept = precision.typed_fp16("prompt_decoder", src, "a" * 64, str(tmp_path / "trt"), [], tiny_bundle)
    assert fp16_nodes(path) == fp16_nodes(str(tmp_path / "q.onnx")) and kept == 29  # the 29 sensitive nodes
    assert precision.typed_fp16("prompt_decoder", src, "a" * 64, str(tmp_path / "trt"), [], tiny_bundle) == (path, None)

    def casts_into(path, name):
        m = onnx.load(path)
        src_of = {o: n for n in m.graph.node for o in n.output}
        node = next(n for n in m.graph.node if n.name == name)
        return src_of[node.input[0]].op_type
    obj = os.path.join(tiny_bundle, "object_decoder.onnx")
    fp16.convert(obj, str(tmp_path / "q_obj.onnx"))
    typed, _ = precision.typed_fp16("object_decoder", obj, "b" * 64, str(tmp_path / "trt"), [r"/stages\.2/"],
                                    tiny_bundle)
    assert casts_into(str(tmp_path / "q_obj.onnx"), "/ReduceL2") != "Cast"  # quantize's FP16 graph: FP16 ReduceL2
    assert casts_into(typed, "/ReduceL2") == "Cast"  # TensorRT's: an FP32 island (Cast in, Cast out)
    assert sorted(os.listdir(str(tmp_path / "trt"))) == sorted(os.path.basename(p) for p in (path, typed))


def _float_conv(path):
    from onnx import TensorProto, helper
    import numpy as np
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    g = helper.make_graph([helper.make_node("Conv", ["image", "w"], ["features"], name="/conv", pads=[1, 1, 1, 1])],
                          "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 4, 16, 16])],
                          [onnx.numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.mark.parametrize("symmetric", [False, True])
def test_qdq_check_on_onnx_runtime_quantized_graphs(tmp_path, symmetric):
    """ONNX Runtime's default static QDQ (uint8 activations, asymmetric) is refused in one line naming the
    quantize command; int8 symmetric activations + int8 per-channel weights pass."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from rmpsam_edge.errors import UserError

    class Feed(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"image": np.random.default_rng(i).random((1, 3, 16, 16), np.float32)} for i in range(2)])

        def get_next(self):
            return next(self.it, None)
    src, dst = str(tmp_path / "f.onnx"), str(tmp_path / "encoder.onnx")
    _float_conv(src)
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True} if symmetric else {}
    quantize_static(src, dst, Feed(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                    weight_type=QuantType.QInt8, extra_options=extra)
    if symmetric:
        precision.check_qdq({}, dst, "b")
        return
    with pytest.raises(UserError, match=r"^encoder.onnx is not a TensorRT INT8 graph \(QuantizeLinear \S+ is uint8, "
                                        r"not int8; TensorRT takes symmetric int8 Q/DQ only\): run `rmpsam-edge quantize "
                                        r"--model bundles/r18 --precision int8 --target tensorrt --out "
                                        r"bundles/r18-int8-trt`"):
        precision.check_qdq({"quantization": {"source_bundle": "bundles/r18"}}, dst, "b")
    precision.check_qdq({"quantization": {"recipe": {"name": "trt-s8s8-symmetric", "target": "tensorrt"}}}, dst, "b")  # the recipe is trusted without reading
