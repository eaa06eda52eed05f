"""Which TensorRT's ONNX importer can take a bundle's graphs, from the manifest's per-graph record (``graph_record``)
and ``LIMITS`` (onnx-tensorrt branches 8.5-GA, 8.6-GA, 10.0-GA, 10.1-GA; 10.3-11.x get 10.1-GA's limits), before
TensorRT runs and without the onnx package. Only the operators this project's graphs may contain are checked."""
import collections
from typing import Dict, List, Optional, Sequence

VERSIONS = ("8.5", "8.6", "10.x", "11.x")
# The highest opset every supported TensorRT imports correctly: 8.5 has no LayerNormalization (opset 17 emits it),
# 8.5/8.6 ignore Reduce* axes given as an input (opset 18+). The default of `rmpsam-edge export`.
PORTABLE_OPSET = 16
REDUCE = ("ReduceMax", "ReduceMin", "ReduceMean", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
          "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp")
AXES_INPUT_8X = ("ReduceSum", "ReduceLogSum")  # 8.x reads these two's axes input; the others' only as an attribute
AXES_ATTRIBUTE_ONLY = tuple(o for o in REDUCE if o not in AXES_INPUT_8X)
FIX = "export with --opset %d" % PORTABLE_OPSET

# (ops, form ('' = any node of the ops), TensorRT versions, what happens). A form is what ``graph_record`` writes.
LIMITS = (
    # 8.5-GA docs/operators.md: "LayerNormalization | N"; 8.6-GA docs/operators.md: Y (importer added in 8.6-GA
    # builtin_op_importers.cpp DEFINE_BUILTIN_OP_IMPORTER(LayerNormalization)).
    (("LayerNormalization",), "", ("8.5",), "cannot import"),
    # 8.5-GA and 8.6-GA builtin_op_importers.cpp: ReduceMax/Min/Mean/Prod/L1/L2/SumSquare call
    # reduceTensor(ctx, node, inputs.at(0), op) without the axes input (ReduceLogSumExp passes only the Exp
    # output on to ReduceLogSum); reduceTensor (onnx2trt_utils.cpp) then reduces over ALL axes when the attribute
    # is absent (opset 18+ form): a wrong result, no error.
    (AXES_ATTRIBUTE_ONLY, "axes=initializer", ("8.5", "8.6"), "reduces over all axes (axes input ignored) in"),
    (AXES_ATTRIBUTE_ONLY, "axes=input", ("8.5", "8.6"), "reduces over all axes (axes input ignored) in"),
    # 8.5-GA/8.6-GA ReduceSum (and ReduceLogSum, through it) reads the axes input (opset >= 13) and
    # onnx2trt_utils.cpp reduceTensor asserts "Axis input must be an initializer!"; 10.1-GA importerUtils.cpp
    # reduceTensor asserts the same for every Reduce* ("`axes` must be an initializer", docs/operators.md).
    (AXES_INPUT_8X, "axes=input", ("8.5", "8.6"), "cannot import"),
    (REDUCE, "axes=input", ("10.x", "11.x"), "cannot import"),
    # GridSample importer (8.5-GA/8.6-GA builtin_op_importers.cpp, 10.1-GA onnxOpImporters.cpp) maps only
    # "bilinear"/"nearest"/"bicubic"; opset 20's "linear"/"cubic" fall through to kNEAREST: a wrong result.
    (("GridSample",), "mode=linear", VERSIONS, "samples nearest instead of linear in"),
    (("GridSample",), "mode=cubic", VERSIONS, "samples nearest instead of cubic in"),
    # DeformConv: absent from docs/operators.md on 8.5-GA, 8.6-GA (and 10.0-GA); "DeformConv | Y" on 10.1-GA.
    (("DeformConv",), "", ("8.5", "8.6"), "cannot import"),
)


def graph_record(model) -> dict:
    """onnx ModelProto -> {'nodes': 200, 'ops': {'Add': 10, ...}, 'opset': 16, 'op_forms': {'ReduceMax':
    {'axes=attribute': 1}, 'GridSample': {'mode=bilinear': 3}}}, the manifest's record of one graph. Reads proto
    fields only (no onnx import)."""
    opset = max([o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] or [0])
    g = model.graph
    weights = {i.name for i in g.initializer}
    weights.update(o for n in g.node if n.op_type == "Constant" for o in n.output)  # parsed as weights too
    forms = collections.defaultdict(collections.Counter)  # type: Dict[str, collections.Counter]
    for n in g.node:
        attrs = {a.name: a for a in n.attribute}
        if n.op_type in REDUCE:
            if "axes" in attrs:
                form = "attribute"
            elif len(n.input) > 1 and n.input[1]:
                form = "initializer" if n.input[1] in weights else "input"
            else:
                form = "none"
            forms[n.op_type]["axes=" + form] += 1
        elif n.op_type == "GridSample":
            mode = attrs["mode"].s.decode() if "mode" in attrs else ("linear" if opset >= 20 else "bilinear")
            forms[n.op_type]["mode=" + mode] += 1
    ops = collections.Counter(n.op_type for n in g.node)
    return {"nodes": len(g.node), "ops": dict(sorted(ops.items())), "opset": opset,
            "op_forms": {op: dict(sorted(c.items())) for op, c in sorted(forms.items())}}


def problems(graphs: Dict[str, dict], version: str) -> List[str]:
    """graphs: the manifest's ``graphs`` (each with ``ops`` and ``op_forms``); version: one of VERSIONS ->
    ['cannot import LayerNormalization (24 nodes in prompt_decoder)', ...]; [] = builds."""
    found = collections.OrderedDict()  # type: Dict[tuple, List[str]]
    for ops, form, versions, what in LIMITS:
        if version not in versions:
            continue
        for name, entry in graphs.items():
            for op in ops:
                n = entry.get("ops", {}).get(op, 0) if not form else entry.get("op_forms", {}).get(op, {}).get(form, 0)
                if n:
                    found.setdefault((what, op), []).append("%d node%s in %s" % (n, "s" * (n != 1), name))
    return ["%s %s (%s)" % (what, op, ", ".join(where)) for (what, op), where in found.items()]


def version_key(version: str) -> Optional[str]:
    """'8.5.2.2' -> '8.5', '10.3.0' -> '10.x', '11.4.0.106' -> '11.x'; None for a release outside the table."""
    parts = str(version).split(".")
    key = "%s.%s" % tuple(parts[:2]) if parts[0] == "8" and len(parts) > 1 else parts[0] + ".x"
    return key if key in VERSIONS else None


def verdict(graphs: Dict[str, dict], version: str) -> str:
    """-> 'TensorRT 8.5: builds' or 'TensorRT 8.5: cannot import LayerNormalization (...); export with --opset 16'."""
    found = problems(graphs, version)
    return "TensorRT %s: %s" % (version, "; ".join(found) + "; " + FIX if found else "builds")


def bundle_graphs(bundle) -> Dict[str, dict]:
    """The manifest's records of ``bundle``'s ONNX graphs. A bundle exported before ``op_forms`` were recorded is
    read with onnx when it is installed; without onnx only its op counts (``ops``) are checked."""
    graphs = {n: bundle.manifest["graphs"][n] for n in bundle.graph_names() if bundle.graph_format(n) == "onnx"}
    if all("op_forms" in e for e in graphs.values()):
        return graphs
    try:
        import onnx
    except ImportError:
        return graphs
    out = {}
    for name, entry in graphs.items():
        try:
            out[name] = dict(entry, **graph_record(onnx.load(bundle.graph_path(name), load_external_data=False)))
        except Exception:  # noqa: BLE001 - an unreadable file keeps its op counts; the parser will name the problem
            out[name] = entry
    return out


def verdicts(bundle, versions: Sequence[str] = VERSIONS) -> List[str]:
    """One line per TensorRT version for ``bundle`` (a runtime.bundle.Bundle)."""
    graphs = bundle_graphs(bundle)
    lines = [verdict(graphs, v) for v in versions]
    if not all("op_forms" in e for e in graphs.values()):
        lines.append("(operator counts only: Reduce* axes and GridSample modes are not recorded in this bundle; "
                     "re-export it with rmpsam-edge export, or pip install onnx, to check them)")
    return lines


def check_build(bundle, version: str, names: Optional[Sequence[str]] = None) -> None:
    """Raise UserError with the verdict line when TensorRT ``version`` (the installed one) cannot import the
    graphs ``names`` (default all) of ``bundle`` correctly, before its parser runs; nothing when it can or when
    ``version`` is outside the table."""
    from rmpsam_edge.errors import UserError
    key = version_key(version)
    if key is None:
        return
    graphs = {n: e for n, e in bundle_graphs(bundle).items() if names is None or n in names}
    if problems(graphs, key):
        raise UserError("%s: %s" % (bundle.path, verdict(graphs, key)))
