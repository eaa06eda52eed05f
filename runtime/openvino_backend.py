"""OpenVINO backend: CPU, GPU, AUTO (or any device string OpenVINO knows).

Inference precision is f32 by default (OpenVINO's CPU default is bf16 on CPUs with AMX/avx512_bf16, which moves
logits by ~1e-3; f32 matches PyTorch). A graph whose manifest entry says ``"inference_precision": "bf16"`` (bundles
from ``rmpsam-edge quantize --precision bf16`` or ``--rest bf16``) is compiled with the bf16 hint; on a CPU without
AVX512-BF16/AMX such a bundle is refused with one line (``bf16_support``). Graphs are compiled with dynamic shapes; when a device cannot compile or
run a graph with dynamic shapes, the graph is reshaped to the concrete input shapes of the call and compiled for
them (a few shapes are kept), with one warning line.
"""
from typing import Dict, Optional, Tuple

import numpy as np
import openvino as ov

from rmpsam_edge.errors import UserError, warn

from . import cpu_features
from .bundle_runner import BackendUnavailable, BundleRunner

PACKAGE = "openvino"
MAX_STATIC_SHAPES = 4  # per graph, when dynamic shapes fail
BF16_FLAGS = cpu_features.BF16_FLAGS  # /proc/cpuinfo flags of x86 CPUs with native bf16 math


def _cpu_flags(path: str = cpu_features.CPUINFO) -> Optional[set]:
    """The x86 CPU flags (None when the file is unreadable or lists none, e.g. not Linux / not x86)."""
    info = cpu_features.read(path)
    return set(info.flags) if info.arch == "x86" else None


def bf16_support(core=None, cpuinfo: str = "/proc/cpuinfo") -> Tuple[bool, str]:
    """(ok, detail): does OpenVINO's CPU plugin run bf16 natively here? OpenVINO must list BF16 in the CPU's
    OPTIMIZATION_CAPABILITIES and, where /proc/cpuinfo lists x86 flags, one of avx512_bf16 / amx_bf16."""
    core = ov.Core() if core is None else core
    try:
        caps = [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    except RuntimeError as exc:
        return False, "openvino has no CPU device (%s)" % str(exc).strip().splitlines()[0][:80]
    flags = _cpu_flags(cpuinfo)
    hw = sorted(f for f in BF16_FLAGS if flags and f in flags)
    if "BF16" not in caps:
        return False, "openvino's CPU capabilities have no BF16 (%s)" % ", ".join(caps)
    if flags is not None and not hw:
        return False, "this CPU has neither avx512_bf16 nor amx_bf16"
    return True, "bf16 (%s)" % (", ".join(hw) if hw else "openvino CPU capability BF16")


class _Graph(object):
    """One graph: the read model, a dynamic compiled model (or None) and compiled static shapes."""

    def __init__(self, model):
        self.model = model
        self.dynamic = None
        self.static = {}
        self.outputs = [o.get_any_name() for o in model.outputs]


class OpenVINORunner(BundleRunner):
    name = "openvino"

    def __init__(self, bundle, device: Optional[str] = None, threads: Optional[int] = None,
                 precision: str = "f32"):
        super(OpenVINORunner, self).__init__(bundle, threads)
        self.core = ov.Core()
        self.device = "CPU" if device is None else str(device).upper()
        base = self.device.split(":")[0].split(".")[0]
        available = self.core.available_devices
        if base not in ("AUTO", "MULTI", "HETERO") and not any(d.split(".")[0] == base for d in available):
            raise BackendUnavailable("openvino has no %s device here (devices: %s)"
                                     % (self.device, ", ".join(available)))
        self.inference_precision = precision
        self.graph_precision = {}  # graph -> inference precision hint from the manifest (bf16 bundles)
        for g in self.bundle.graph_names():
            hint = self.bundle.manifest["graphs"][g].get("inference_precision")
            if hint:
                self.graph_precision[g] = str(hint)
        if "bf16" in self.graph_precision.values() and self.device.startswith("CPU"):
            ok, detail = bf16_support(self.core)
            if not ok:
                raise UserError("%s is a bf16 bundle but %s; run the FP32 bundle it was made from (%s) or "
                                "re-quantize it with --precision int8" % (
                                    self.bundle.path, detail, (self.bundle.manifest.get("quantization") or {}).get(
                                        "source_bundle", "the original export")))
        self.graphs = {}

    def _config(self, graph: Optional[str] = None) -> dict:
        cfg = {"PERFORMANCE_HINT": "LATENCY"}
        prec = self.graph_precision.get(graph, self.inference_precision)
        if prec:
            cfg["INFERENCE_PRECISION_HINT"] = prec
        if self.threads and self.device.startswith("CPU"):
            cfg["INFERENCE_NUM_THREADS"] = int(self.threads)
        return cfg

    def _compile(self, model, graph: Optional[str] = None):
        compiled = self.core.compile_model(model, self.device, self._config(graph))
        return compiled, compiled.create_infer_request()

    def _load(self, graph: str, path: str) -> None:
        g = _Graph(self.core.read_model(path))
        try:
            g.dynamic = self._compile(g.model, graph)
        except RuntimeError as exc:
            if not any(p.get_partial_shape().is_dynamic for p in g.model.inputs):
                raise
            warn("openvino %s: %s does not compile with dynamic shapes (%s); compiling per input shape"
                 % (self.device, graph, str(exc).strip().splitlines()[0][:120]))
        self.graphs[graph] = g

    def _unload(self) -> None:
        self.graphs = {}

    def _static_request(self, graph: str, g: _Graph, feeds: Dict[str, np.ndarray]):
        key = tuple((k, v.shape) for k, v in sorted(feeds.items()))
        if key not in g.static:
            if len(g.static) >= MAX_STATIC_SHAPES:
                g.static.pop(next(iter(g.static)))
            model = g.model.clone()
            model.reshape({k: ov.PartialShape(list(v.shape)) for k, v in feeds.items()})
            g.static[key] = self._compile(model, graph)
        return g.static[key][1]

    def _run(self, graph: str, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        g = self.graphs[graph]
        request = None
        if g.dynamic is not None:
            try:
                g.dynamic[1].infer(feeds)
                request = g.dynamic[1]
            except RuntimeError as exc:
                warn("openvino %s: %s failed with dynamic shapes (%s); using static shapes for it from now on"
                     % (self.device, graph, str(exc).strip().splitlines()[0][:120]))
                g.dynamic = None
        if request is None:
            request = self._static_request(graph, g, feeds)
            request.infer(feeds)
        # copies: the request's output buffers are reused by its next call
        return {name: np.array(request.get_tensor(name).data) for name in g.outputs}

    def describe(self) -> str:
        threads = ""
        if self.device.startswith("CPU"):
            threads = ", %s" % ("%d threads" % self.threads if self.threads else "default threads")
        prec = self.inference_precision or "device default"
        if self.graph_precision:
            hints = sorted(set(self.graph_precision.values()))
            others = [g for g in self.bundle.graph_names() if g not in self.graph_precision]
            prec = ", ".join(hints) + (" (%s: %s)" % (", ".join(others), prec) if others else "")
        return "openvino %s, %s, %s (inference precision %s)%s" % (ov.get_version().split("-")[0], self.device,
                                                                   self.precision, prec, threads)


def probe(device: Optional[str] = None) -> Tuple[bool, str]:
    """(ok, 'openvino 2025.x, devices: CPU') or (False, why ``device`` is not there)."""
    devices = ov.Core().available_devices
    version = ov.get_version().split("-")[0]
    base = "CPU" if device is None else str(device).upper().split(":")[0].split(".")[0]
    if base not in ("AUTO", "MULTI", "HETERO") and not any(d.split(".")[0] == base for d in devices):
        return False, "openvino %s has no %s device here (devices: %s)" % (version, base, ", ".join(devices))
    return True, "openvino %s, devices: %s" % (version, ", ".join(devices))


def create(bundle, device: Optional[str] = None, threads: Optional[int] = None,
           auto: bool = False) -> OpenVINORunner:
    """Open ``bundle`` and compile its graphs for ``device`` (CPU default; GPU, AUTO, ...). ``auto`` changes
    nothing here."""
    runner = OpenVINORunner(bundle, device=device, threads=threads)
    runner.activate()
    return runner
