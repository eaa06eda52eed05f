"""The loader: a usable engine per graph, the cached one when its sidecar key matches (cache.py), else built
(build.py) with one line saying why. The one place that decides each graph's precision, DLA core, profile ranges
(not given: the stored sidecars', else the bundle's) and ONNX file (the bundle's or its typed FP16 graph)."""
import os
import sys
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

from rmpsam_edge.errors import UserError

from ..bundle import OPTIONAL_GRAPHS, REQUIRED_GRAPHS, Bundle
from . import build as builder
from . import cache, importers, precision, profiles

GRAPH_SYMBOLS = {"encoder": ("B", "H", "W"), "prompt_decoder": ("B", "h", "w", "Np"),
                 "prompt_decoder_many": ("B", "h", "w", "Npm"), "object_decoder": ("B", "h", "w", "K", "P")}
GRAPH_ORDER = REQUIRED_GRAPHS + OPTIONAL_GRAPHS
DEFAULT_IMGSZ = 640
DEFAULT_MAX_PROMPTS = 64


def graph_precision(graph: str, precision: str, stored: str = "fp32") -> str:
    """A graph the bundle stores quantized (by `rmpsam-edge quantize`) keeps that precision; else int8 applies
    to the encoder only (it must be a Q/DQ graph), the decoders of an int8 build are fp16."""
    if stored in ("int8", "fp16"):
        return stored
    return "fp16" if precision == "int8" and graph != "encoder" else precision


def ranges_for(graph: str, ranges: Dict[str, tuple]) -> Dict[str, tuple]:
    """The many-prompt graph has its own prompt range (symbol Npm) on the same 'boxes' axis."""
    if graph == "prompt_decoder_many" and "Npm" in ranges:
        return dict(ranges, Np=ranges["Npm"])
    return ranges


class Choices(object):
    """The user's build choices; None = not given (take the stored sidecar's, else the default)."""

    def __init__(self, precision: Optional[str] = None, ranges: Optional[Dict[str, tuple]] = None,
                 dla_core: Optional[int] = None, fp32_layers: Optional[Sequence[str]] = None,
                 workspace_gib: float = 2.0, verbose: bool = False):
        self.precision, self.ranges, self.dla_core, self.fp32_layers = precision, ranges, dla_core, fp32_layers
        self.workspace_gib, self.verbose = workspace_gib, verbose


def stored_precision(bundle, graph: str) -> str:
    """The precision the bundle stores a graph in ('fp32', or 'fp16'/'int8' from `rmpsam-edge quantize`)."""
    return str((bundle.manifest["graphs"].get(graph) or {}).get("precision") or "fp32").lower()


def onnx_file(bundle, graph: str) -> Tuple[str, str]:
    """-> (path checked against the manifest's sha256 by runtime.bundle, the sha256 that keys the engine)."""
    fmt = bundle.graph_format(graph)
    if fmt not in (None, "onnx"):
        raise UserError("the %s graph of %s is %s, not ONNX: TensorRT builds from the ONNX bundle (use the "
                        "FP32 bundle, or quantize with --backend onnxruntime)" % (graph, os.path.abspath(bundle.path), fmt))
    path = bundle.graph_path(graph)
    if not os.path.isfile(path):  # removed after runtime.bundle verified it
        raise UserError("bundle %s is incomplete: %s is missing; re-export it (--force overwrites it)"
                        % (os.path.abspath(bundle.path), os.path.basename(path)))
    return path, str(bundle.manifest["graphs"][graph]["sha256"])


def _declared(manifest, sym: str) -> Optional[Tuple[int, int, int]]:
    d = (manifest.get("dynamic_axes") or {}).get(sym)
    if isinstance(d, dict) and "min" in d and "max" in d:
        return int(d["min"]), int(d.get("opt", d["max"])), int(d["max"])
    return None


def default_ranges(bundle, max_prompts: int = DEFAULT_MAX_PROMPTS) -> Dict[str, tuple]:
    """Profile ranges from the bundle: the export's declared H/W (else its input size, else 640), 1..64 prompts
    (the many-prompt graph takes many_prompts_from..64), classes and prototypes up to the vocabulary's K x P (what
    the predictor sends; a bigger vocabulary needs --max-classes), else the export's declared K / P."""
    m = bundle.manifest
    h, w = _declared(m, "H"), _declared(m, "W")
    if h is None or w is None:
        size = -(-(int((m.get("input") or {}).get("size") or 0) or DEFAULT_IMGSZ) // profiles.ALIGN) * profiles.ALIGN
        h = w = (profiles.ALIGN, size, size)
    shape = (m.get("vocabulary") or {}).get("shape")
    k, p = (int(shape[0]), int(shape[1])) if isinstance(shape, (list, tuple)) and len(shape) == 3 else (None, None)
    classes = (1, k, k) if k else _declared(m, "K") or (1, 80, 1024)  # 1024 x 16 x 768 floats: 50 MB per buffer
    protos = (1, p, p) if p else _declared(m, "P") or (1, 1, 16)
    return prompt_ranges(profiles.make_ranges((h[2], w[2]), (h[1], w[1]), (h[0], w[0]), (1, 1, max_prompts),
                                              classes, protos), bundle.many_prompts_from)


def prompt_ranges(ranges: Dict[str, tuple], many_from: Optional[int]) -> Dict[str, tuple]:
    """Split the prompt range between the two prompt graphs: prompt_decoder 1..many_from-1, the many-prompt
    graph many_from..max (more prompts than a profile's max are run in chunks by the runner)."""
    r = dict(ranges)
    lo, opt, hi = r["Np"]
    if many_from:
        top = max(hi, many_from)
        r["Npm"] = (many_from, top, top)
        hi = min(hi, many_from - 1)
        r["Np"] = (min(lo, hi), min(opt, hi), hi)
    return r


def profile_key(graph: str, ranges: Dict[str, tuple]) -> Dict[str, list]:
    return {s: list(ranges[s]) for s in GRAPH_SYMBOLS[graph] if s in ranges}



class Session(object):
    """The loader: one machine (TensorRT module, ``cuda_context.GpuInfo``) and one bundle; ``log`` gets one line per
    build or rebuild."""

    def __init__(self, compat, gpu_info, bundle, log: Optional[Callable[[str], None]] = None):
        self.compat, self.gpu_info = compat, gpu_info
        self.log = log or (lambda line: sys.stderr.write("tensorrt: %s\n" % line))
        self.bundle = Bundle.open(bundle)
        self.dir = os.path.abspath(self.bundle.path)
        self.engine_dir = cache.engine_dir(self.dir)

    def precision(self, graph: str, choices: Choices) -> str:
        return graph_precision(graph, choices.precision, stored_precision(self.bundle, graph))

    def fill_choices(self, requested: Choices) -> Choices:
        """Fill what the caller left out: the precision is the bundle's (never guessed from what was built
        last); profile ranges come from the stored sidecars of that precision, else the defaults."""
        c = Choices(**vars(requested))
        if c.precision is None:
            c.precision = str(self.bundle.manifest.get("precision") or "fp32").lower()
        if c.ranges is None:
            ranges, found = dict(default_ranges(self.bundle)), set()
            for graph in GRAPH_ORDER:
                dla = c.dla_core if graph == "encoder" else None
                side, _ = cache.read_sidecar(cache.engine_paths(self.dir, graph, self.precision(graph, c), dla)[1])
                for k, v in ((side or {}).get("key", {}).get("profiles") or {}).items():
                    ranges[k] = tuple(v)
                    found.add(k)
            if "H" in found and "h" not in found:  # decoders follow the encoder's image sizes
                ranges["h"] = tuple(v // profiles.STRIDE for v in ranges["H"])
                ranges["w"] = tuple(v // profiles.STRIDE for v in ranges["W"])
            c.ranges = ranges
        elif "Npm" not in c.ranges:
            c.ranges = prompt_ranges(c.ranges, self.bundle.many_prompts_from)
        return c

    # ------------------------------------------------------------------ one graph
    def engine_bytes(self, graph: str, choices: Choices, build: bool = True, force: bool = False,
                     reason_prefix: str = "") -> Tuple[bytes, str]:
        """-> (plan bytes, 'cached' | 'built')."""
        choices = self.fill_choices(choices)  # no-op when precision and ranges are given
        stored_prec = stored_precision(self.bundle, graph)
        gp = graph_precision(graph, choices.precision, stored_prec)
        if gp == "int8" and stored_prec != "int8":  # INT8 is explicit (Q/DQ) on every version: no calibrator
            raise UserError("--precision int8 builds from a bundle whose encoder is a Q/DQ INT8 graph; %s is FP32: "
                            "run %s" % (self.dir, precision.QUANTIZE_INT8 % (self.dir, self.dir)))
        dla = choices.dla_core if graph == "encoder" else None
        typed = self.compat.typed(dla is not None)
        onnx_path, onnx_sha = onnx_file(self.bundle, graph)
        engine_path, side_path = cache.engine_paths(self.dir, graph, gp, dla)
        stored_side, _ = cache.read_sidecar(side_path)
        stored = stored_side["key"] if stored_side else {}

        ranges = ranges_for(graph, choices.ranges)
        pins = list(choices.fp32_layers if choices.fp32_layers is not None else stored.get("fp32_layers") or [])
        key = cache.make_key(self.compat.version_string, self.gpu_info.name, self.gpu_info.cc, graph, onnx_sha, gp,
                             profile_key(graph, ranges), dla, precision.POLICY if gp != "fp32" else None,
                             pins if gp != "fp32" else [], *self.gpu_info[2:])
        verdict = cache.check(engine_path, side_path, key)
        if verdict.ok and not force:
            return verdict.data, "cached"
        if verdict.foreign and not force:
            raise UserError("%s; pass --force to overwrite it" % verdict.reason)
        why = reason_prefix or ("--force: overwriting the usable engine" if verdict.ok else verdict.reason)
        if not build:
            raise UserError("the %s engine cannot be used: %s; build it with `rmpsam-edge build-engine --model %s "
                            "--precision %s`" % (graph, why, self.dir, choices.precision))
        if dla is not None and self.compat.major >= 11:
            raise UserError("--dla %d: TensorRT %s has no DLA (TensorRT 11 dropped it and does not run on Jetson); "
                            "build without --dla" % (dla, self.compat.version_string))
        if dla is not None and gp == "fp32":
            raise UserError("--dla runs FP16 or INT8 only: add --precision fp16 (or int8)")
        importers.check_build(self.bundle, self.compat.version_string, [graph])  # before the parser: one line
        killed = cache.killed_build(engine_path)
        if killed is not None:
            self.log("the last build of the %s engine (process %d) was killed before it finished, most likely out of "
                     "memory (the kernel's OOM killer): if it dies again, add swap, close other programs or build a "
                     "smaller profile (--max-size, --workspace)" % (graph, killed))
        self.log("building %s %s engine (%s); this takes minutes on a Jetson" % (graph, gp, why))
        if stored_prec == "int8":
            precision.check_qdq(self.bundle.manifest, onnx_path, self.dir)
        elif typed and gp == "fp16" and stored_prec == "fp32":  # strong typing: the FP16 graph is the precision
            onnx_path, kept = precision.typed_fp16(graph, onnx_path, onnx_sha, self.engine_dir, pins, self.dir)
            if kept is not None:
                self.log("%s: typed FP16 graph %s written (%d nodes kept FP32, Casts around them)"
                         % (graph, os.path.basename(onnx_path), kept))
        t0 = time.time()
        timing = os.path.join(self.engine_dir, cache.timing_cache_name(self.compat.version_string, self.gpu_info.name,
                                                                                 self.gpu_info.module))
        settings = builder.BuildSettings(gp, ranges, int(choices.workspace_gib * (1 << 30)), dla, pins, timing,
                                         choices.verbose, typed)
        with cache.building(engine_path):
            result = builder.build_engine(self.compat, graph, onnx_path, settings, self.log)
        extra = {"tensor_profiles": profiles.as_json(result.profile), "fp32_pinned": len(result.pinned),
                 "typed": typed}
        cache.write(engine_path, side_path, result.data, key, extra)
        self.log("%s engine saved: %s (%.1f MB, built in %.0f s)"
                 % (graph, engine_path, len(result.data) / 1e6, time.time() - t0))
        return result.data, "built"

    def load_engine(self, runtime, graph: str, choices: Choices, build: bool = True, force: bool = False):
        """-> (ICudaEngine, plan bytes, 'cached' | 'built'); a plan TensorRT rejects is rebuilt once."""
        data, status = self.engine_bytes(graph, choices, build=build, force=force)
        if graph == "encoder" and choices.dla_core is not None:
            runtime.DLA_core = int(choices.dla_core)  # before deserialising a DLA engine
        engine = self.compat.deserialize(runtime, data)
        if engine is None and status == "cached":
            data, status = self.engine_bytes(graph, choices, build=build, force=True,
                                             reason_prefix="TensorRT could not deserialise the cached engine")
            engine = self.compat.deserialize(runtime, data)
        if engine is None:
            raise UserError("TensorRT %s could not deserialise the %s engine it just built"
                            % (self.compat.version_string, graph))
        return engine, data, status
