"""One engine of one graph (no running here): parse the ONNX, profile, workspace, timing cache, precision (typed
network, or weak typing with FP32 pins: ``compat.typed``), DLA, serialise. Which file and precision: engines.py."""
import collections
import os
import re
from typing import Callable, Dict, List, Optional, Tuple

from rmpsam_edge.errors import UserError

from . import profiles
from .cache import write_bytes
from ..sensitive_layers import select_fp32, summary
from .precision import nodes_from_network

Log = Callable[[str], None]
OUT_OF_MEMORY = re.compile(r"out of memory|OutOfMemory|cudaErrorMemoryAllocation|Requested amount of GPU memory", re.I)

# typed: a STRONGLY_TYPED network, the ONNX's own types are the precision (compat.typed decides per version)
BuildSettings = collections.namedtuple("BuildSettings", "precision ranges workspace_bytes dla_core fp32_layers "
                                       "timing_cache verbose typed",
                                       defaults=(2 << 30, None, (), None, False, False))
BuildResult = collections.namedtuple("BuildResult", "data profile pinned")


def build_engine(compat, graph: str, onnx_path: str, settings: BuildSettings, log: Log) -> BuildResult:
    trt = compat.trt
    if settings.precision not in ("fp32", "fp16", "int8"):
        raise UserError("--precision %s: use fp32, fp16 or int8" % settings.precision)
    messages = []  # type: List[Tuple[str, str]]
    logger = compat.logger(messages, settings.verbose)
    if hasattr(trt, "init_libnvinfer_plugins"):
        trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    if (settings.precision != "fp32" and not settings.typed
            and getattr(builder, "platform_has_fast_fp16", True) is False):  # attribute gone in TensorRT 11
        raise UserError("this GPU has no fast FP16 (TensorRT reports platform_has_fast_fp16 False): build "
                        "--precision fp32")
    network = compat.create_network(builder, settings.typed)
    parser = trt.OnnxParser(network, logger)
    _parse(compat, parser, graph, onnx_path)

    config = builder.create_builder_config()
    compat.set_workspace(config, settings.workspace_bytes)
    ranges = settings.ranges
    if settings.dla_core is not None:  # DLA has no dynamic shapes: min = opt = max = opt
        ranges = {k: (v[1], v[1], v[1]) for k, v in ranges.items()}
    shapes = {t.name: profiles.input_profile(graph, t.name, t.shape, ranges)
              for t in (network.get_input(i) for i in range(network.num_inputs))}
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)

    pinned = {}  # type: Dict[str, str]
    if settings.precision != "fp32" and not settings.typed:  # weak typing: pin the sensitive layers to FP32
        outputs = [network.get_output(i).name for i in range(network.num_outputs)]
        pinned = select_fp32(nodes_from_network(network, compat), outputs, settings.fp32_layers)
    compat.set_precision(config, settings.precision, bool(pinned), settings.typed)
    if pinned:
        for layer in (network.get_layer(i) for i in range(network.num_layers)):
            if layer.name in pinned:
                compat.pin_fp32(layer)
        log("%s: %s" % (graph, summary(pinned)))
    if settings.dla_core is not None:
        log("%s: %s" % (graph, compat.use_dla(builder, config, settings.dla_core, network)))

    cache = _load_timing_cache(config, settings.timing_cache, log)
    data = builder.build_serialized_network(network, config)  # None on failure
    if data is None:
        errors = [m for s, m in messages if s in ("ERROR", "INTERNAL_ERROR")]
        if any(OUT_OF_MEMORY.search(m) for m in errors):
            raise UserError("TensorRT ran out of GPU memory building the %s engine: lower the builder workspace "
                            "limit (--workspace, now %.1f GiB; e.g. --workspace %.1f) or stop other GPU programs"
                            % (graph, settings.workspace_bytes / float(1 << 30),
                               max(0.25, settings.workspace_bytes / float(1 << 31))))
        raise UserError("TensorRT could not build the %s engine: %s" % (
            graph, errors[-1] if errors else "no reason given (run with --verbose)"))
    _save_timing_cache(config, cache, settings.timing_cache)
    return BuildResult(bytes(data), shapes, pinned)


def _parse(compat, parser, graph: str, onnx_path: str) -> None:
    if not os.path.isfile(onnx_path):
        raise UserError("%s graph %s not found in the bundle" % (graph, onnx_path))
    ok = parser.parse_from_file(str(onnx_path))
    if ok and parser.num_errors == 0:
        return
    node_names = _onnx_node_names(onnx_path) if compat.major < 10 else None
    lines = [compat.parser_error_line(parser.get_error(i), node_names) for i in range(parser.num_errors)]
    if not lines:
        lines = ["the file is not a valid ONNX model"]
    more = " (+%d more errors)" % (len(lines) - 1) if len(lines) > 1 else ""
    if "LayerNormalization" in lines[0] and compat.version[:2] < (8, 6):
        lines[0] += (" - TensorRT %s (JetPack 5.1) cannot import ONNX LayerNormalization (opset 17+): export "
                     "with --opset 16 (the default)" % compat.version_string)
    raise UserError("TensorRT cannot parse %s: %s%s" % (os.path.basename(onnx_path), lines[0], more))


def _onnx_node_names(onnx_path: str):
    """TensorRT 8.6's IParserError has only the node index: map it to (name, op) when onnx is installed."""
    try:
        import onnx
        model = onnx.load(onnx_path, load_external_data=False)
        return [(n.name, n.op_type) for n in model.graph.node]
    except Exception:
        return None


def _load_timing_cache(config, path: Optional[str], log: Log):
    """-> the timing cache the build uses, or None. create_timing_cache may return None (polygraphy guards it);
    set_timing_cache returns False when TensorRT rejects the cache."""
    data = b""
    if path and os.path.isfile(path):
        with open(path, "rb") as f:
            data = f.read()
    cache = None
    try:
        cache = config.create_timing_cache(data)
    except Exception:  # noqa: BLE001 - an unreadable cache file is only lost tuning time
        pass
    if cache is None and data:
        log("timing cache %s is unreadable; starting a new one" % path)
        cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, False):
        log("TensorRT did not accept a timing cache; building without one")
        return None
    return cache


def _save_timing_cache(config, cache, path: Optional[str]) -> None:
    if path and cache is not None:
        write_bytes(path, bytes((config.get_timing_cache() or cache).serialize()))
