"""The numerically sensitive layers of the three graphs: ONE list of rules, used by TensorRT's FP32 pins
(runtime/tensorrt/precision.py, on the network) and by quantize's INT8 / FP16 exclusions (quantize/patterns.py,
on the ONNX graph). What EfficientViT-SAM, EfficientTAM and SAM users found by hand (FP16 engines with wrong or
NaN masks, INT8 masks that collapse) is encoded here as rules on the graph, checked against real exported
RMP-SAM graphs in the tests:

* ``layernorm``   every LayerNorm (ONNX LayerNormalization / TensorRT's INormalizationLayer, or the decomposed
                  ReduceMean/Sub/Pow chain of an old-opset export, found by its ``.../xxx_norm/...`` module path);
* ``softmax``     every Softmax (attention over all stride-4 pixels);
* ``mask_pool``   the MatMul whose input is the hard ``(M > 0)`` mask: a SUM over up to h*w pixels of
                  256-channel features, which overflows FP16 (65504) on large images;
* ``logits``      the ops between a ``*logits`` output and the MatMul that makes it (x100 cosine scale,
                  the background-column Concat passed through, ReduceMax over prototypes, the final mask /
                  class MatMuls);
* ``sum_squares`` ReduceL2 / sum of squares (the cosine classifier's normalisation) that overflow FP16;
* ``user``        layers whose name matches a ``--fp32-layers`` regex.

The rules work on ``Node`` tuples (name, kind, inputs, outputs), so the same code reads an ONNX graph
(``nodes_from_onnx``) and a TensorRT network (``precision.nodes_from_network``). Torch-free, Python 3.8.
"""
import collections
import re
from typing import Dict, Iterable, List, Optional, Sequence

Node = collections.namedtuple("Node", "name kind inputs outputs")

PASS = {"reshape", "cast", "gather", "slice", "expand"}     # data moves, values unchanged
SCALE = {"mul", "div", "add", "sub"}
LN_MODULE = re.compile(r"(^|/)(\w*norm\w*|\w+_fcs\.1)(/|$)")
LN_PARTS = {"reduce_mean", "sub", "pow", "add", "sqrt", "div", "mul"}

ONNX_KINDS = {
    "LayerNormalization": "layernorm", "Softmax": "softmax", "MatMul": "matmul", "Gemm": "matmul",
    "Greater": "greater", "Cast": "cast", "Identity": "cast", "Reshape": "reshape", "Transpose": "reshape",
    "Squeeze": "reshape", "Unsqueeze": "reshape", "Flatten": "reshape", "Gather": "gather", "Slice": "slice",
    "Concat": "concat", "Expand": "expand", "Mul": "mul", "Div": "div", "Add": "add", "Sub": "sub",
    "Pow": "pow", "ReduceMax": "reduce_max", "ReduceSum": "reduce_sum", "ReduceMean": "reduce_mean",
    "ReduceL2": "reduce_l2", "ReduceSumSquare": "reduce_sum_square", "Sqrt": "sqrt", "Constant": "constant",
    "Shape": "shape", "Conv": "conv", "ConvTranspose": "conv", "GridSample": "grid_sample", "Resize": "resize",
}
REASONS = ("layernorm", "softmax", "mask_pool", "logits", "sum_squares", "user")


def nodes_from_onnx(graph) -> List[Node]:
    """ONNX GraphProto -> nodes (kind from the op type)."""
    return [Node(n.name, ONNX_KINDS.get(n.op_type, "other"), [i for i in n.input if i], list(n.output))
            for n in graph.node]


def select_fp32(nodes: Sequence[Node], outputs: Iterable[str], patterns: Sequence[str] = ()) -> Dict[str, str]:
    """-> {node name: reason} in graph order. ``outputs``: graph output names."""
    src = {t: n for n in nodes for t in n.outputs}.get
    chosen = {}  # type: Dict[str, str]

    def pick(node: Node, reason: str) -> None:
        chosen.setdefault(node.name, reason)

    for n in nodes:
        if n.kind == "layernorm" or (n.kind in LN_PARTS and LN_MODULE.search(n.name or "")):
            pick(n, "layernorm")
        elif n.kind == "softmax":
            pick(n, "softmax")
        elif n.kind == "matmul" and any(_reaches_greater(src, t) for t in n.inputs):
            pick(n, "mask_pool")
        elif n.kind in ("reduce_l2", "reduce_sum_square"):
            pick(n, "sum_squares")
        elif n.kind == "reduce_sum" and n.inputs and _is_square(src(n.inputs[0])):
            pick(n, "sum_squares")
            pick(src(n.inputs[0]), "sum_squares")
    for n in nodes:  # sqrt of a pinned sum of squares (ReduceL2 as TensorRT decomposes it)
        if n.kind == "sqrt" and n.inputs and chosen.get(getattr(src(n.inputs[0]), "name", None)) == "sum_squares":
            pick(n, "sum_squares")

    for out in outputs:
        if "logits" in out:
            _walk_logits(src, src(out), pick, set())

    for pat in patterns:
        rx = re.compile(pat)
        for n in nodes:
            if rx.search(n.name or "") and n.kind not in ("constant", "shape", "greater"):
                pick(n, "user")
    order = {n.name: i for i, n in enumerate(nodes)}
    return collections.OrderedDict(sorted(chosen.items(), key=lambda kv: order[kv[0]]))


def _reaches_greater(src, tensor: str, depth: int = 6) -> bool:
    node = src(tensor)
    while node is not None and depth > 0:
        if node.kind == "greater":
            return True
        if node.kind not in PASS or not node.inputs:
            return False
        node, depth = src(node.inputs[0]), depth - 1
    return False


def _is_square(node: Optional[Node]) -> bool:
    if node is None:
        return False
    return node.kind == "pow" or (node.kind == "mul" and len(node.inputs) == 2 and node.inputs[0] == node.inputs[1])


def _walk_logits(src, node: Optional[Node], pick, seen: set) -> None:
    """From a logits output back to (and including) the MatMul that makes it."""
    while node is not None and node.name not in seen:
        seen.add(node.name)
        if node.kind == "matmul":
            pick(node, "logits")
            return
        if node.kind in PASS:
            node = src(node.inputs[0]) if node.inputs else None
        elif node.kind == "reduce_max":
            pick(node, "logits")
            node = src(node.inputs[0]) if node.inputs else None
        elif node.kind in SCALE or node.kind == "concat":  # x100 scale; the zero background column appended
            if node.kind in SCALE:
                pick(node, "logits")
            for t in node.inputs[1:]:
                _walk_logits(src, src(t), pick, seen)
            node = src(node.inputs[0]) if node.inputs else None
        else:
            return


def summary(chosen: Dict[str, str]) -> str:
    """'31 layers pinned to FP32: 24 layernorm, 1 softmax, 3 mask_pool, 3 logits'."""
    counts = collections.Counter(chosen.values())
    parts = ["%d %s" % (counts[r], r) for r in REASONS if counts.get(r)]
    return "%d layers pinned to FP32%s" % (len(chosen), (": " + ", ".join(parts)) if parts else "")
