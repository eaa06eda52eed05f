"""ONNX Runtime static INT8: QDQ, per-channel weights, calibrated on real inputs (onnxruntime.quantization).

Recipe (deployment notes §2a, §5-8): opset upgraded to >= 13 (per-channel DequantizeLinear needs ``axis``);
``quant_pre_process`` with ``skip_symbolic_shape=True`` (symbolic inference fails on the dynamic encoder);
only Conv / Gemm / MatMul are quantized (GridSample, Resize, ConvTranspose, LayerNorm, Softmax stay FP32);
the sensitive nodes of ``patterns`` are excluded by name; weights QInt8 symmetric per channel; the rest depends on
the CPU or accelerator the bundle will run on (``RECIPES``, chosen by ``recipe``). The calibrated ranges can be cached (``cache``) so that re-quantizing with other
exclusions (auto-fallback) skips calibration. The output is a QDQ ONNX file, which ONNX Runtime and OpenVINO
both load.
"""
import contextlib
import os
import sys
import tempfile
from typing import Dict, Iterable, List, Optional, Tuple

from rmpsam_edge.errors import UserError
from rmpsam_edge.runtime import cpu_features

from . import patterns

# ConvTranspose stays FP32: ONNX Runtime quantizes it well, but OpenVINO, which also loads these QDQ graphs, runs
# an INT8 ConvTranspose inaccurately (encoder feature cosine 0.977 instead of 0.9997, R18 at 512).
OP_TYPES = ("Conv", "Gemm", "MatMul")
METHODS = ("minmax", "entropy", "percentile")
MIN_OPSET = 13
CHUNK = 4  # calibration inputs whose intermediate tensors are held at once

# target -> how quantize_static is called. ONNX Runtime's U8S8 kernels on x86 without VNNI multiply-add u8 x s8
# pairs into saturating int16 (vpmaddubsw): 7-bit weights (reduce_range) keep the sums in range (ONNX Runtime's
# quantization docs advise reduce_range on such CPUs; benchmarks/results/fidelity_cpu_recipes/ has this recipe's
# fidelity, measured on a VNNI CPU).
# VNNI (x86) and ARM's kernels accumulate in 32 bit: the full 8-bit range is both exact and the faster.
# TensorRT reads explicit quantization: symmetric int8 activations and weights (zero point 0), Q/DQ pairs in
# on the inputs of every Conv/Gemm/MatMul only (TensorRT's placement advice: it fuses DQ -> Conv into an INT8
# kernel and propagates the scales itself; outputs stay float), one pair per consumer, biases left float (its
# parser dequantizes int8 only).
TARGETS = ("x86-vnni", "x86", "arm", "tensorrt")
RECIPES = {
    "x86": {"name": "u8s8-reduce-range", "activations": "QUInt8", "symmetric": False, "reduce_range": True,
            "why": "x86 without VNNI: U8S8 with 7-bit weights (reduce_range), so the int16 multiply-add of "
                   "ONNX Runtime's AVX2 kernels cannot saturate"},
    "x86-vnni": {"name": "u8s8", "activations": "QUInt8", "symmetric": False, "reduce_range": False,
                 "why": "x86 with VNNI: U8S8, full 8-bit weights (VNNI accumulates in 32 bit; no saturation)"},
    "arm": {"name": "u8s8", "activations": "QUInt8", "symmetric": False, "reduce_range": False,
            "why": "ARM: U8S8, full 8-bit weights (ONNX Runtime's ARM kernels accumulate in 32 bit, with the "
                   "dot-product instructions where the CPU has them)"},
    "tensorrt": {"name": "trt-s8s8-symmetric", "activations": "QInt8", "symmetric": True, "reduce_range": False,
                 "why": "TensorRT explicit quantization: symmetric int8 activations and per-channel weights "
                        "(zero point 0), a dedicated Q/DQ pair per Conv/Gemm/MatMul input, float outputs and biases"},
}


class _Reader(object):
    """onnxruntime.quantization.CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds: List[Dict], desc: Optional[str] = None):
        self.feeds = feeds
        self.pos, self.end = 0, len(feeds)
        self.bar = None
        if desc:
            from rmpsam_edge.progress import progress
            self.bar = iter(progress(range(len(feeds)), len(feeds), desc))

    def get_next(self):
        if self.pos >= self.end:
            if self.bar is not None and self.pos >= len(self.feeds):
                next(self.bar, None)  # finishes (and clears) the bar
                self.bar = None
            return None
        self.pos += 1
        if self.bar is not None:
            next(self.bar, None)
        return self.feeds[self.pos - 1]

    def rewind(self):
        self.pos, self.end = 0, len(self.feeds)

    def set_range(self, start_index: int, end_index: int):
        self.pos, self.end = start_index, min(end_index, len(self.feeds))

    def __len__(self):
        return len(self.feeds)


def calibration_method(name: str):
    from onnxruntime.quantization import CalibrationMethod
    table = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}
    if name not in table:
        raise UserError("unknown --calib-method %r; use one of %s" % (name, ", ".join(METHODS)))
    return table[name]


def prepare(src: str, dst: str) -> None:
    """Opset >= 13 + ``quant_pre_process`` (shape inference, basic fusions) -> ``dst``. Pattern names are
    resolved on THIS model, since the pre-processing may rename or fuse nodes."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process
    model = onnx.load(src)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < MIN_OPSET:
        model = onnx.version_converter.convert_version(model, 17)
    with tempfile.TemporaryDirectory(prefix="rmpsam_q_") as tmp:
        up = os.path.join(tmp, "in.onnx")
        onnx.save(model, up)
        quant_pre_process(up, dst, skip_symbolic_shape=True)


def sensitive_nodes(path: str, rules: Optional[Iterable[str]] = None) -> List[str]:
    import onnx
    return patterns.excluded_nodes(onnx.load(path, load_external_data=False).graph, rules)


def quantizable_nodes(path: str, exclude: Iterable[str] = ()) -> List[str]:
    """Names of the nodes INT8 would touch (op type in OP_TYPES, not excluded), in graph order."""
    import onnx
    skip = set(exclude)
    return [n.name for n in onnx.load(path, load_external_data=False).graph.node
            if n.op_type in OP_TYPES and n.name not in skip]


def detect_target(cpuinfo: str = cpu_features.CPUINFO) -> Tuple[str, str]:
    """(target, why) for the CPU ``cpuinfo`` describes (this machine's by default)."""
    info = cpu_features.read(cpuinfo)
    if info.arch == "arm":
        return "arm", "this CPU is ARM (%s)" % ("dot-product: asimddp" if cpu_features.has_dotprod(info)
                                                else "no dot-product instructions")
    if cpu_features.has_vnni(info):
        return "x86-vnni", "this CPU has %s" % ", ".join(f for f in cpu_features.VNNI_FLAGS if f in info.flags)
    if info.arch == "x86":
        return "x86", "this CPU has none of %s" % ", ".join(cpu_features.VNNI_FLAGS)
    return "x86", "%s lists no CPU flags: the recipe that is safe on every x86" % cpuinfo


def recipe(target: str = "auto", cpuinfo: str = cpu_features.CPUINFO) -> Dict[str, str]:
    """{name, target, why} of the recipe for ``target`` ('auto': the CPU of ``cpuinfo``)."""
    if target == "auto":
        target, found = detect_target(cpuinfo)
        why = "auto: %s" % found
    elif target in RECIPES:
        why = "--target %s" % target
    else:
        raise UserError("unknown --target %r; use auto or one of %s" % (target, ", ".join(TARGETS)))
    return {"name": RECIPES[target]["name"], "target": target, "why": "%s -> %s" % (why, RECIPES[target]["why"])}


def quantize(prepared: str, dst: str, feeds: Optional[List[Dict]], method: str = "minmax",
             exclude: Iterable[str] = (), cache: Optional[str] = None, desc: Optional[str] = None,
             target: str = "x86-vnni") -> None:
    """Static QDQ INT8 of an already ``prepare``d model -> ``dst`` with the recipe of ``target`` (a key of
    RECIPES). ``feeds``: calibration inputs (list of {input name: array}); may be None when ``cache`` holds
    ranges from an earlier call."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    r = RECIPES[target]
    extra = {"ActivationSymmetric": r["symmetric"], "WeightSymmetric": True}
    if target == "tensorrt":
        extra.update({"DedicatedQDQPair": True, "QuantizeBias": False, "OpTypesToExcludeOutputQuantization":
                      list(OP_TYPES), "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1}})
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    if feeds:  # calibrate in chunks: the calibrator keeps every intermediate tensor of a chunk in memory; the
        # histogram methods stack a chunk's tensors into one array, so their chunks hold one input (images of
        # different aspect ratios give different shapes)
        chunk = CHUNK if method == "minmax" else 1
        extra["CalibStridedMinMax"] = max(d for d in range(1, chunk + 1) if len(feeds) % d == 0)
    with contextlib.redirect_stdout(sys.stderr):  # the histogram calibrators print progress on stdout
        quantize_static(prepared, dst, _Reader(feeds, desc) if feeds is not None else None,
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=list(OP_TYPES), per_channel=True,
                        activation_type=getattr(QuantType, r["activations"]), weight_type=QuantType.QInt8,
                        reduce_range=r["reduce_range"],
                        nodes_to_exclude=list(exclude), calibrate_method=calibration_method(method),
                        extra_options=extra, calibration_cache_path=cache)
    keep_fp32_inputs(dst, exclude, prepared)


def keep_fp32_inputs(path: str, names: Iterable[str], prepared: str) -> int:
    """ORT shares one Q/DQ pair per tensor (and one quantized copy per initializer), so an excluded node whose
    input also feeds a quantized node still reads an INT8-rounded value. Give every excluded node back the
    inputs it has in the ``prepared`` FP32 model (float activations, float initializers copied over when the
    quantizer replaced them) and drop Q/DQ nodes left without consumers, so excluded nodes really compute on
    FP32. Returns the number of restored inputs."""
    import onnx
    model = onnx.load(path)
    g = model.graph
    names = set(names)
    src = onnx.load(prepared)
    original = {n.name: list(n.input) for n in src.graph.node if n.name in names}
    src_inits = {t.name: t for t in src.graph.initializer}
    have = {t.name for t in g.initializer} | {o for n in g.node for o in n.output} | {i.name for i in g.input}
    prod = {o: n for n in g.node for o in n.output}
    rewired = 0
    for node in g.node:
        orig = original.get(node.name)
        if orig is None or len(orig) != len(node.input):
            continue
        for k, inp in enumerate(node.input):
            target = orig[k]
            if target in src_inits:
                dq = prod.get(inp)
                if dq is None or dq.op_type != "DequantizeLinear":
                    continue  # still the float initializer
                # the quantizer gave the float name to a DQ output: bring back a float copy
                target = target + "_fp32"
                if target not in have:
                    t = onnx.TensorProto()
                    t.CopyFrom(src_inits[orig[k]])
                    t.name = target
                    g.initializer.append(t)
                    have.add(target)
            elif inp == target or target not in have:
                continue
            node.input[k] = target
            rewired += 1
    while True:
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    if rewired:
        onnx.save(model, path)
    return rewired
