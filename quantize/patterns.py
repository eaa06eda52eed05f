"""What stays out of INT8 (and in FP32 in an FP16 bundle): the rules of ``rmpsam_edge.runtime.sensitive_layers``
(the ONE list, shared with TensorRT's FP32 pins) resolved on an ONNX graph into node names, which is what the
quantizers take (ORT ``nodes_to_exclude``, NNCF ``IgnoredScope(names=...)``, the FP16 converter's
``node_block_list``).

quantize applies the rules ``RULES``: layernorm, softmax, mask_pool and logits (of those two, only the MatMul /
Gemm nodes: the ops the quantizers turn into INT8). ``sum_squares`` and ``user`` are TensorRT FP16 pins.
tests/test_quantize_patterns.py checks every rule against the real exported graphs.
"""
from typing import Dict, Iterable, List

from rmpsam_edge.runtime import sensitive_layers as sl

RULES = ("layernorm", "softmax", "mask_pool", "logits")
MATMUL_ONLY = {"mask_pool", "logits"}
# Which graphs each rule is expected to find nodes in (the encoder has no LayerNorm / softmax / logits).
EXPECTED = {
    "encoder": (),
    "prompt_decoder": RULES,
    "object_decoder": RULES,
}


def resolve(graph) -> Dict[str, List[str]]:
    """onnx GraphProto -> {rule: [node names]} in graph order (unnamed nodes cannot be excluded by name)."""
    op = {n.name: n.op_type for n in graph.node}
    chosen = sl.select_fp32(sl.nodes_from_onnx(graph), [o.name for o in graph.output])
    found = {rule: [] for rule in RULES}
    for name, rule in chosen.items():
        if rule in found and name and (rule not in MATMUL_ONLY or op.get(name) in ("MatMul", "Gemm")):
            found[rule].append(name)
    return found


def excluded_nodes(graph, rules: Iterable[str] = None) -> List[str]:
    """Node names matched by ``rules`` (default: all of ``RULES``), in graph order, without duplicates."""
    found = resolve(graph)
    names = set()
    for rule in (RULES if rules is None else rules):
        names.update(found.get(rule, ()))
    return [n.name for n in graph.node if n.name in names]


def sensitive_op_types() -> List[str]:
    """Op types excluded whatever their names (for tools that take types: NNCF, the FP16 converter)."""
    return ["LayerNormalization", "Softmax"]
