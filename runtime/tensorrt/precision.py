"""A build's precision from the one rule list (``runtime.sensitive_layers``, shared with quantize). Weak typing:
``nodes_from_network`` feeds the FP32 pins. Strong typing: ``typed_fp16`` writes the FP16 graph `quantize --precision
fp16` writes (quantize/fp16.py); ``check_qdq`` accepts only TensorRT's INT8 format (symmetric int8 Q/DQ)."""
import glob
import hashlib
import os
from typing import List, Optional, Sequence

from rmpsam_edge.atomic import atomic_file
from rmpsam_edge.errors import UserError

from ..sensitive_layers import Node, nodes_from_onnx, select_fp32

POLICY = "fp32-rules-v2"  # recorded in the engine key: changing the rules (or typing) rebuilds engines
TRT_ONLY = ("sum_squares", "user")  # rules quantize's FP16 graph does not apply; TensorRT's typed graph adds them
QUANTIZE_INT8 = ("`rmpsam-edge quantize --model %s --precision int8 --target tensorrt --out %s-int8-trt` (on any "
                 "machine with the onnx package; it calibrates on your images), then build that bundle")
QUANTIZE_FP16 = "`rmpsam-edge quantize --model %s --precision fp16 --out %s-fp16`, then build that bundle"


def nodes_from_network(network, compat) -> List[Node]:
    """TensorRT INetworkDefinition -> nodes (kind from the layer type and its op)."""
    nodes = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        ins = [layer.get_input(j) for j in range(layer.num_inputs)]
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        nodes.append(Node(layer.name, compat.layer_kind(layer), [t.name for t in ins if t is not None],
                          [t.name for t in outs if t is not None]))
    return nodes


def typed_fp16(graph: str, src: str, src_sha: str, folder: str, patterns: Sequence[str], bundle_dir: str):
    """FP32 ONNX ``src`` -> (path of its typed FP16 graph in ``folder``, kept-FP32 node count). The file is named
    after sha256(graph sha256, POLICY, patterns): reused while those match, older ones removed, written whole."""
    try:
        import onnx
        from rmpsam_edge.quantize import fp16
    except ImportError:
        raise UserError("this TensorRT builds FP16 from an FP16 graph, and the onnx package that makes one from the "
                        "FP32 bundle is not installed: pip install onnx, or run " + QUANTIZE_FP16
                        % (bundle_dir, bundle_dir.rstrip("/\\")))
    key = hashlib.sha256(("%s|%s|%s" % (src_sha, POLICY, list(patterns))).encode()).hexdigest()[:16]
    path = os.path.join(folder, "%s.fp16-typed-%s.onnx" % (graph, key))
    if os.path.isfile(path):
        return path, None
    model = onnx.load(src, load_external_data=False)
    chosen = select_fp32(nodes_from_onnx(model.graph), [o.name for o in model.graph.output], patterns)
    extra = [name for name, why in chosen.items() if why in TRT_ONLY]
    for old in glob.glob(os.path.join(folder, "%s.fp16-typed-*.onnx" % graph)):
        if old != path:  # another process may be writing this very file
            os.remove(old)
    os.makedirs(folder, exist_ok=True)
    with atomic_file(path) as tmp:
        info = fp16.convert(src, tmp, extra)
    kept = set(info["kept_fp32"]), set(info["op_types_kept_fp32"])
    return path, sum(1 for n in model.graph.node if n.name in kept[0] or n.op_type in kept[1])


def check_qdq(manifest: dict, path: str, bundle_dir: str) -> None:
    """An INT8 graph TensorRT can build: symmetric int8 Q/DQ (zero point 0, int8 type). The manifest's
    quantization recipe decides when it names one; else the graph is read (skipped without the onnx package:
    TensorRT's parser then refuses a uint8 zero point itself)."""
    recipe = (manifest.get("quantization") or {}).get("recipe")  # {name, target, why} (quantize --target)
    target = recipe.get("target") if isinstance(recipe, dict) else recipe
    if target == "tensorrt":
        return
    if target is not None:
        problem = "it was quantized for --target %s (recipe %s)" % (
            target, recipe.get("name", "?") if isinstance(recipe, dict) else target)
    else:
        try:
            import onnx
        except ImportError:
            return
        problem = _qdq_problem(onnx, onnx.load(path, load_external_data=False).graph)
    if problem:
        src = str((manifest.get("quantization") or {}).get("source_bundle") or bundle_dir).rstrip("/\\")
        raise UserError("%s is not a TensorRT INT8 graph (%s; TensorRT takes symmetric int8 Q/DQ only): run %s"
                        % (os.path.basename(path), problem, QUANTIZE_INT8 % (src, src)))


def _qdq_problem(onnx, graph) -> Optional[str]:
    from onnx import numpy_helper
    consts = {i.name: i for i in graph.initializer}
    consts.update({n.output[0]: a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute
                   if a.name == "value"})
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq:
        return "no QuantizeLinear/DequantizeLinear nodes"
    for n in qdq:
        zp = consts.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if zp is None or zp.data_type != onnx.TensorProto.INT8:  # absent zero point = uint8 (ONNX default)
            return "%s %s is %s, not int8" % (n.op_type, n.name, "uint8" if zp is None else
                                              onnx.TensorProto.DataType.Name(zp.data_type).lower())
        if numpy_helper.to_array(zp).any():
            return "%s %s has a non-zero zero point (asymmetric)" % (n.op_type, n.name)
    return None

