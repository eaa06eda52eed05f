"""The sensitive-layer patterns checked against the graphs of a REAL exported bundle."""
import os

import onnx
import pytest
from onnx import helper

from _bundle_fixture import shared_bundle
from rmpsam_edge.quantize import patterns


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    return shared_bundle(tmp_path_factory)


def _graph(bundle, name):
    return onnx.load(os.path.join(bundle, name + ".onnx"), load_external_data=False).graph


@pytest.mark.parametrize("name", ["encoder", "prompt_decoder", "prompt_decoder_many", "object_decoder"])
def test_every_pattern_matches_and_norms_softmax_are_all_excluded(bundle, name):
    g = _graph(bundle, name)
    found = patterns.resolve(g)
    expected = patterns.EXPECTED.get(name, patterns.EXPECTED["prompt_decoder"])
    for rule in expected:
        assert found[rule], "rule %s matches no node of %s" % (rule, name)
    excluded = set(patterns.excluded_nodes(g))
    for n in g.node:
        if n.op_type in ("LayerNormalization", "Softmax"):
            assert n.name in excluded, n.name
    if name == "encoder":  # convolutions only: nothing is sensitive, the whole encoder goes INT8
        assert not excluded
    prod = {o: n for n in g.node for o in n.output}
    for node_name in found.get("mask_pool", []):  # the MatMul is fed by the hard mask (M > 0)
        node = next(n for n in g.node if n.name == node_name)
        assert node.op_type == "MatMul"
        assert any(prod.get(i) is not None and prod[i].op_type == "Cast" for i in node.input)
    outputs = {o.name for o in g.output if o.name.endswith("logits")}
    assert len(found.get("logits", [])) == len(outputs)  # one logits MatMul per logits output


def test_decomposed_layernorm_is_matched_by_module_name():
    """Older opsets export LayerNorm as ReduceMean/Sub/Pow/...: the module path in the node name catches them,
    and a plain residual Add elsewhere is not caught."""
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], name="/stages.0/ffn_norm/ReduceMean"),
             helper.make_node("Sub", ["x", "m"], ["d"], name="/stages.0/ffn_norm/Sub"),
             helper.make_node("Add", ["d", "x"], ["y"], name="/stages.0/ffn/Add")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [2, 4])],
                          [helper.make_tensor_value_info("y", 1, [2, 4])])
    assert patterns.resolve(g)["layernorm"] == ["/stages.0/ffn_norm/ReduceMean", "/stages.0/ffn_norm/Sub"]


@pytest.mark.parametrize("name", ["prompt_decoder", "object_decoder"])
def test_quantize_and_tensorrt_share_one_list(bundle, name):
    """INT8/FP16 exclusions are TensorRT's FP32 pins of the same rules, less the TensorRT-only ones
    (sum_squares) and the non-MatMul ops of the logits chain (not quantized anyway)."""
    from rmpsam_edge.runtime.tensorrt import precision
    g = _graph(bundle, name)
    pins = precision.select_fp32(precision.nodes_from_onnx(g), [o.name for o in g.output])
    op = {n.name: n.op_type for n in g.node}
    want = [n for n, why in pins.items() if why in patterns.RULES and
            (why not in patterns.MATMUL_ONLY or op[n] in ("MatMul", "Gemm"))]
    assert patterns.excluded_nodes(g) == want and len(want) >= 29
    assert {why for why in pins.values()} - set(patterns.RULES) <= {"sum_squares"}
