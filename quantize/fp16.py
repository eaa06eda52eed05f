"""FP16 graphs: weights and activations in FP16, inputs/outputs FP32, the sensitive parts kept in FP32.

Uses ``onnxruntime.transformers.float16`` (same converter as onnxconverter-common, no extra package) with
``keep_io_types=True`` and the ``patterns`` nodes in ``node_block_list``; the converter inserts the Casts.
On CPU this only saves size (ORT has few FP16 kernels); FP16 is the TensorRT / GPU precision.
"""
from typing import Iterable

from . import patterns

# Ops that stay FP32 whatever their name: the converter's own defaults + resampling ops whose FP16 CPU
# kernels are missing or inexact.
OP_BLOCK = ("Resize", "GridSample", "Range", "Max", "Min", "Upsample", "TopK", "CumSum", "RoiAlign",
            "NonMaxSuppression")


def convert(src: str, dst: str, extra_block: Iterable[str] = ()) -> dict:
    """FP32 ONNX ``src`` -> FP16 ONNX ``dst``; returns {"kept_fp32": node names blocked by pattern}."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    model = onnx.load(src)
    block = patterns.excluded_nodes(model.graph) + list(extra_block)
    ops = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(OP_BLOCK) | set(patterns.sensitive_op_types()))
    m16 = convert_float_to_float16(model, keep_io_types=True, op_block_list=ops, node_block_list=block)
    onnx.save(m16, dst)
    return {"kept_fp32": block, "op_types_kept_fp32": ops}
