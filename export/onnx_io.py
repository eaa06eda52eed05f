"""Write one deploy module to a single-file ONNX graph (legacy TorchScript exporter, opset 16 by default) and slim it.

The legacy exporter keeps every op at the requested opset (the dynamo exporter silently lifts graphs with
ReduceMax to opset 18); onnxslim removes its Constant/Shape/Gather clutter. Weights stay inside the file
(single file, < 2 GB).
"""
import io
import warnings
from typing import Dict, List, Sequence

import torch

from rmpsam_edge.runtime.tensorrt.importers import PORTABLE_OPSET as DEFAULT_OPSET, graph_record


def export_onnx(module: torch.nn.Module, args: Sequence[torch.Tensor], path: str, input_names: List[str],
                output_names: List[str], dynamic_axes: Dict[str, Dict[int, str]] = None,
                opset: int = DEFAULT_OPSET, slim: bool = True) -> dict:
    """Trace ``module(*args)`` to ``path``. dynamic_axes: {tensor name: {axis: symbolic name}} or None for
    static shapes. Returns the graph's record (``rmpsam_edge.runtime.tensorrt.importers.graph_record``: nodes,
    ops, opset, op_forms)."""
    import onnx

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation + tracer warnings on shape arithmetic
        torch.onnx.export(module, tuple(args), buf, dynamo=False, opset_version=opset, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes or None, do_constant_folding=True)
    model = onnx.load_from_string(buf.getvalue())
    if slim:
        import onnxslim
        model = onnxslim.slim(model)
    _name_dims(model, dynamic_axes or {})
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return graph_record(model)


def _name_dims(model, dynamic_axes: Dict[str, Dict[int, str]]) -> None:
    """Make sure graph inputs/outputs carry the symbolic names given (onnxslim may rename them)."""
    for value in list(model.graph.input) + list(model.graph.output):
        axes = dynamic_axes.get(value.name, {})
        dims = value.type.tensor_type.shape.dim
        for i, d in enumerate(dims):
            if i in axes:
                d.ClearField("dim_value")
                d.dim_param = axes[i]
