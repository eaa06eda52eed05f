"""OpenVINO INT8: NNCF post-training quantization of the OpenVINO model read from the FP32 ONNX graph.

The sensitive nodes of ``patterns`` go into ``nncf.IgnoredScope`` (names resolved on the ONNX graph: the
OpenVINO ONNX frontend keeps node names as friendly names for MatMul/Conv; LayerNorm becomes MVN, so op types
are ignored too, and so are the transposed convolutions: see IGNORED_TYPES). Decoders use
``ModelType.TRANSFORMER`` (NNCF then also keeps softmax / norm paths out of INT8). The result is an OpenVINO IR
(.xml + .bin), saved without FP16 weight compression.
"""
from typing import Dict, Iterable, List

from rmpsam_edge.errors import UserError
from rmpsam_edge.runtime import cpu_features

from . import ort_quant, patterns

# MVN = LayerNorm, SoftMax: numerically sensitive. ConvolutionBackpropData (ConvTranspose): OpenVINO CPU's INT8
# kernel for it is inaccurate (measured: encoder feature cosine 0.977 with it INT8, 0.9997 without, R18 at 512).
IGNORED_TYPES = ("MVN", "SoftMax", "Softmax", "GridSample", "ConvolutionBackpropData")


def recipe(target: str = "auto", cpuinfo: str = cpu_features.CPUINFO) -> Dict[str, str]:
    """{name, target, why}: NNCF's recipe for ``target`` (as ``ort_quant.recipe``; no TensorRT). NNCF's default
    "overflow fix" stores the first layer's INT8 weights with 7 bits, for x86 CPUs without VNNI whose u8 x s8
    multiply-add saturates. With VNNI (or on ARM) it only costs accuracy (measured, R18 demo weights at 512:
    encoder cosine 0.9977 with it, 0.9995 without), so it is off there."""
    if target == "tensorrt":
        raise UserError("--target tensorrt writes ONNX QDQ graphs for TensorRT: use --backend ort")
    base = ort_quant.recipe(target, cpuinfo)
    fix = base["target"] == "x86"
    return {"name": "nncf-mixed" + ("-overflow-fix" if fix else ""), "target": base["target"],
            "why": "%s -> NNCF min-max, mixed preset, %s" % (base["why"].split(" -> ")[0], "first-layer overflow "
                   "fix (7-bit weights: no VNNI)" if fix else "no overflow fix (no saturation on this target)")}


def quantize(src_onnx: str, dst_xml: str, feeds: List[Dict], transformer: bool = False,
             ignored_names: Iterable[str] = (), preset: str = "mixed", overflow_fix: bool = False) -> dict:
    """FP32 ONNX -> INT8 OpenVINO IR at ``dst_xml`` (+ .bin). feeds: calibration inputs ({name: array});
    overflow_fix: NNCF's first-layer overflow fix (targets without VNNI, see ``recipe``)."""
    import logging

    import nncf
    import onnx
    import openvino as ov
    logging.getLogger("nncf").setLevel(logging.ERROR)
    by_pattern = patterns.excluded_nodes(onnx.load(src_onnx, load_external_data=False).graph)
    model = ov.Core().read_model(src_onnx)
    present = {op.get_friendly_name() for op in model.get_ops()}
    by_pattern = ov_names(by_pattern, present)
    extra = [n for n in ov_names(ignored_names, present) if n not in by_pattern]
    scope = nncf.IgnoredScope(names=by_pattern + extra, types=list(IGNORED_TYPES), validate=False)
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    overflow = OverflowFix.FIRST_LAYER if overflow_fix else OverflowFix.DISABLE
    kwargs = {"subset_size": len(feeds), "ignored_scope": scope,
              "advanced_parameters": AdvancedQuantizationParameters(overflow_fix=overflow),
              "preset": nncf.QuantizationPreset.MIXED if preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE}
    if transformer:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    qmodel = nncf.quantize(model, nncf.Dataset(feeds), **kwargs)
    ov.save_model(qmodel, dst_xml, compress_to_fp16=False)
    return {"excluded": by_pattern, "extra_excluded": extra, "ignored_types": list(IGNORED_TYPES),
            "overflow_fix": overflow.value}


def ov_names(onnx_names: Iterable[str], present) -> List[str]:
    """ONNX node names -> the OpenVINO op names that carry them. A Conv with a bias becomes a Convolution named
    '<name>/WithoutBiases' plus an Add named '<name>': both are returned, so ignoring the node really keeps the
    convolution FP32."""
    out = []
    for n in onnx_names:
        for cand in (n, n + "/WithoutBiases"):
            if cand in present and cand not in out:
                out.append(cand)
    return out
