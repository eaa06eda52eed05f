"""Parameters and GFLOPs per stage, counted from the ONNX graphs of a bundle.

Counted ops: Conv, ConvTranspose, MatMul, Gemm (multiply-accumulates; GFLOPs = 2 x GMACs, the convention of
the paper tables and fvcore x2). Elementwise ops, GridSample, Resize and softmax are not counted, so GFLOPs are
a lower bound of the real work (GridSample in the DCNs is the largest uncounted op). Shapes come from ONNX shape
inference after fixing the graph inputs to the benchmark's concrete shapes.

    count_graph(model_or_path, input_shapes) -> {"params", "macs", "gflops", "counted_nodes", "unknown_nodes"}
``params`` = elements of float initializers (weights; BatchNorm is folded into convs in bundles).
"""
from typing import Dict, Sequence

import numpy as np

COUNTED = ("Conv", "ConvTranspose", "MatMul", "Gemm", "MatMulInteger", "QLinearConv", "QLinearMatMul",
           "ConvInteger")


def _load(model_or_path):
    import onnx
    if isinstance(model_or_path, (str, bytes)) or hasattr(model_or_path, "__fspath__"):
        return onnx.load(str(model_or_path), load_external_data=False)
    return model_or_path


def _fix_inputs(model, input_shapes: Dict[str, Sequence[int]]):
    import onnx
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for inp in m.graph.input:
        if inp.name in input_shapes:
            dims = inp.type.tensor_type.shape.dim
            shape = list(input_shapes[inp.name])
            if len(dims) != len(shape):
                raise ValueError("input %s has rank %d, got shape %s" % (inp.name, len(dims), shape))
            for d, v in zip(dims, shape):
                d.Clear()
                d.dim_value = int(v)
    return m


def _shapes(model) -> Dict[str, tuple]:
    """name -> concrete shape (tuple of ints) for every value ONNX shape inference resolved."""
    import onnx
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            out[vi.name] = tuple(int(d.dim_value) for d in dims)
    for init in inferred.graph.initializer:
        out[init.name] = tuple(int(d) for d in init.dims)
    return out


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            if a.ints:
                return list(a.ints)
            return a.i
    return default


def node_macs(node, shapes: Dict[str, tuple]):
    """MACs of one counted node, or None when a needed shape is unknown."""
    op = node.op_type
    get = shapes.get
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        w_idx = 3 if op == "QLinearConv" else 1
        y_name = node.output[0]
        w, y = get(node.input[w_idx]), get(y_name)
        if w is None or y is None:
            return None
        # y (N, Cout, *spatial); w (Cout, Cin/g, *k): each output element costs Cin/g * prod(k)
        return int(np.prod(y, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64))
    if op == "ConvTranspose":
        x, w = get(node.input[0]), get(node.input[1])
        if x is None or w is None:
            return None
        # x (N, Cin, *spatial); w (Cin, Cout/g, *k): each input element is scattered to Cout/g * prod(k)
        return int(np.prod(x, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64))
    if op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        a_idx, b_idx = (0, 3) if op == "QLinearMatMul" else (0, 1)
        a, b = get(node.input[a_idx]), get(node.input[b_idx])
        y = get(node.output[0])
        if a is None or b is None or y is None:
            return None
        k = a[-1] if len(a) >= 1 else 1
        return int(np.prod(y, dtype=np.int64)) * int(k)
    if op == "Gemm":
        a, y = get(node.input[0]), get(node.output[0])
        if a is None or y is None:
            return None
        k = a[0] if _attr(node, "transA", 0) else a[-1]
        return int(np.prod(y, dtype=np.int64)) * int(k)
    return 0


def count_params(model) -> int:
    total = 0
    for init in model.graph.initializer:
        if init.data_type in (1, 10, 11, 16, 3, 2):  # float, float16, double, bfloat16, int8, uint8 (quantised weights)
            n = int(np.prod(list(init.dims), dtype=np.int64)) if len(init.dims) else 1
            if n > 1:  # scalars are constants, not weights
                total += n
    return total


def count_graph(model_or_path, input_shapes: Dict[str, Sequence[int]]) -> dict:
    """Count one graph at concrete input shapes (every dynamic input must be given)."""
    model = _load(model_or_path)
    fixed = _fix_inputs(model, input_shapes)
    shapes = _shapes(fixed)
    macs, counted, unknown = 0, 0, []
    for node in fixed.graph.node:
        if node.op_type not in COUNTED:
            continue
        m = node_macs(node, shapes)
        if m is None:
            unknown.append(node.name or node.op_type)
            continue
        macs += m
        counted += 1
    return {"params": count_params(model), "macs": int(macs), "gflops": 2.0 * macs / 1e9,
            "counted_nodes": counted, "unknown_nodes": unknown}
