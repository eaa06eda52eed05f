"""The numerically sensitive parts of the three graphs: ONE list, used by INT8 (ORT, OpenVINO), FP16 and
(if it wants) the TensorRT precision pinning.

Each rule names a part that must stay out of INT8 / in FP32:

* ``layernorm``      LayerNormalization nodes (opset >= 17), or the pieces of a decomposed LayerNorm (older
                     opsets) whose node name carries the module name (``.../norm_in/ReduceMean``).
* ``softmax``        Softmax nodes (attention weights).
* ``mask_sum_pool``  the hard-mask SUM pooling ``(M > 0).float() @ F^T``: a MatMul fed, through shape-only
                     ops, by ``Cast(Greater(...))``. Its sums run over every pixel (h*w terms) and overflow
                     FP16; as INT8 they are what made the prototype's panoptic classes collapse.
* ``final_logits``   the MatMul / Gemm that writes a ``*logits`` graph output (mask logits, class logits),
                     traced back through shape-only / elementwise-with-constant ops.

A rule matches by op type plus a node-name regular expression (the exporters write module paths into
node names: legacy ``/mask_heads.0/kernel_update/norm_in/LayerNormalization``, dynamo
``node_layer_norm_3``), or by the small structural test that names cannot express (which MatMul pools a
hard mask, which one writes the logits). ``resolve(graph)`` turns the rules into node names, which is what
the quantizers take (ORT ``nodes_to_exclude``, NNCF ``IgnoredScope(names=...)``, the FP16 converter's
``node_block_list``). tests/test_quantize_patterns.py checks every rule against the real exported graphs.
"""
import re
from typing import Dict, Iterable, List

# Ops that only move data around: followed when tracing a tensor to its producer / consumer.
SHAPE_OPS = frozenset(("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Expand",
                       "Slice", "Gather", "Concat", "Cast"))
# Elementwise ops that may sit between a logits MatMul and the graph output (scale, bias, max over synonyms).
TAIL_OPS = SHAPE_OPS | frozenset(("Mul", "Div", "Add", "Sub", "ReduceMax", "Max", "Pad"))

# (rule, op types matched by type alone, (op types, node-name regex) matched by name, (op types, structural test))
RULES = (
    ("layernorm", ("LayerNormalization",),
     (("ReduceMean", "Sub", "Pow", "Sqrt", "Div", "Add", "Mul"), r"(?i)(^|/)[^/]*norm[^/]*/[^/]+$"), None),
    ("softmax", ("Softmax",), None, None),
    ("mask_sum_pool", (), None, (("MatMul",), "hard_mask_matmul")),
    ("final_logits", (), None, (("MatMul", "Gemm"), "writes_logits_output")),
)
WHY = {
    "layernorm": "LayerNorm: FP16 overflow of the variance; INT8 error amplified by the gated updaters",
    "softmax": "softmax of the attention scores",
    "mask_sum_pool": "hard-mask sum pooling (M>0)@F^T: sums over h*w pixels overflow FP16",
    "final_logits": "the MatMul that writes the mask / class logits",
}
# Which graphs each rule is expected to find nodes in (the encoder has no LayerNorm / softmax / logits).
EXPECTED = {
    "encoder": (),
    "prompt_decoder": ("layernorm", "softmax", "mask_sum_pool", "final_logits"),
    "object_decoder": ("layernorm", "softmax", "mask_sum_pool", "final_logits"),
}


def rule_names() -> List[str]:
    return [r[0] for r in RULES]


def _index(graph):
    producers, consumers = {}, {}
    for node in graph.node:
        for out in node.output:
            producers[out] = node
        for inp in node.input:
            consumers.setdefault(inp, []).append(node)
    return producers, consumers


def _fed_by_hard_mask(node, producers, depth=8) -> bool:
    """True if an input of ``node`` comes, through shape-only ops, from Cast(Greater/Less(...))."""
    stack = [(i, 0) for i in node.input]
    while stack:
        name, d = stack.pop()
        prod = producers.get(name)
        if prod is None or d > depth:
            continue
        if prod.op_type == "Cast":
            src = producers.get(prod.input[0])
            if src is not None and src.op_type in ("Greater", "Less", "GreaterOrEqual", "LessOrEqual"):
                return True
        if prod.op_type in SHAPE_OPS:
            stack.extend((i, d + 1) for i in prod.input[:1])
    return False


def _writes_logits(node, consumers, outputs, depth=8) -> bool:
    """True if ``node``'s output reaches a graph output named '*logits' through tail ops only."""
    stack = [(o, 0) for o in node.output]
    while stack:
        name, d = stack.pop()
        if name in outputs:
            return True
        if d > depth:
            continue
        for c in consumers.get(name, ()):
            if c.op_type in TAIL_OPS:
                stack.extend((o, d + 1) for o in c.output)
    return False


def resolve(graph) -> Dict[str, List[str]]:
    """onnx GraphProto -> {rule: [node names]} (unnamed nodes cannot be excluded by name and are skipped)."""
    producers, consumers = _index(graph)
    logit_outputs = {o.name for o in graph.output if o.name.endswith("logits")}
    found = {rule[0]: [] for rule in RULES}
    for node in graph.node:
        if not node.name:
            continue
        for rule, by_type, by_name, structural in RULES:
            hit = node.op_type in by_type
            if not hit and by_name is not None:
                hit = node.op_type in by_name[0] and re.search(by_name[1], node.name) is not None
            if not hit and structural is not None and node.op_type in structural[0]:
                if structural[1] == "hard_mask_matmul":
                    hit = _fed_by_hard_mask(node, producers)
                else:
                    hit = _writes_logits(node, consumers, logit_outputs)
            if hit:
                found[rule].append(node.name)
    return found


def excluded_nodes(graph, rules: Iterable[str] = None) -> List[str]:
    """Node names matched by ``rules`` (default: all), in graph order, without duplicates."""
    found = resolve(graph)
    names = set()
    for rule in (rule_names() if rules is None else rules):
        names.update(found.get(rule, ()))
    return [n.name for n in graph.node if n.name in names]


def sensitive_op_types() -> List[str]:
    """Op types excluded whatever their names (for tools that take types: NNCF, TensorRT)."""
    return [t for rule in RULES for t in rule[1]]
