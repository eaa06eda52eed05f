"""ONNX Runtime backend: provider chain CUDA EP -> CPU EP, whichever are installed; the TensorRT EP on request.

``device``: None/'auto', 'cuda' or 'gpu' (CUDA EP + CPU), 'cpu', 'tensorrt' (TensorRT EP + CUDA EP + CPU). The
TensorRT EP builds its engines when a session opens (minutes on a Jetson) and again whenever an input shape leaves
the ones it has seen, so ``auto`` never uses it; with 'tensorrt' each graph gets profile shapes from the bundle's
ranges (the native TensorRT backend's: one build covers every image size and prompt count the runtime sends), its
engines cached in the bundle's engine folder, and one line before a build. Sessions use ``threads`` intra-op threads (None: ONNX Runtime's default),
no spinning between calls and the CPU memory arena on, full graph optimisation. Spinning off is for pipelines whose
capture / draw threads share the cores; on an otherwise quiet machine spinning ran the encoder faster and both
decoders slower (benchmarks/results/ort_session_options_r18_512.md); ``spinning=True`` /
``arena=False`` switch them per runner.
"""
import os
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnxruntime as ort

from .bundle_runner import BackendUnavailable, BundleRunner

PACKAGE = "onnxruntime"  # pip name; onnxruntime-gpu for the CUDA/TensorRT providers
CHAIN = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = CHAIN[:2]
DEVICES = {None: CHAIN[1:], "auto": CHAIN[1:], "cpu": CHAIN[2:], "cuda": CHAIN[1:], "gpu": CHAIN[1:], "tensorrt": CHAIN}
SHORT = {"TensorrtExecutionProvider": "TensorRT EP", "CUDAExecutionProvider": "CUDA EP",
         "CPUExecutionProvider": "CPU EP"}


def providers_for(device: Optional[str]) -> List[str]:
    """The installed providers to use for ``device``, best first; BackendUnavailable when none fits."""
    key = device.lower() if isinstance(device, str) else device
    if key not in DEVICES:
        raise ValueError("onnxruntime device must be one of cpu, cuda, gpu, tensorrt, auto; got %r" % (device,))
    installed = ort.get_available_providers()
    chosen = [p for p in DEVICES[key] if p in installed]
    if key in ("cuda", "gpu", "tensorrt") and not any(p in GPU_PROVIDERS for p in chosen):
        raise BackendUnavailable("onnxruntime %s has no GPU provider (install onnxruntime-gpu)" % ort.__version__)
    if key == "tensorrt" and CHAIN[0] not in chosen:
        raise BackendUnavailable("onnxruntime %s has no TensorRT provider" % ort.__version__)
    return chosen


def tensorrt_options(bundle, graph: str) -> dict:
    """TensorRT EP options for one graph: ``trt_profile_min/opt/max_shapes`` ('boxes:1x4,features:1x256x8x8')
    from the bundle's ranges, engines cached in ``<engine folder>/onnxruntime/<graph>-<sha256[:12]>``."""
    from .tensorrt import cache, profiles
    from .tensorrt.engines import default_ranges, ranges_for
    ranges = ranges_for(graph, default_ranges(bundle, max_prompts=bundle.max_prompts))  # what _prompts sends
    entry = bundle.manifest["graphs"][graph]
    shapes = {name: profiles.input_profile(graph, name, [d if isinstance(d, int) else -1 for d in spec["shape"]],
                                           ranges) for name, spec in sorted(entry["inputs"].items())}
    options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": os.path.join(
        cache.engine_dir(bundle.path), "onnxruntime", "%s-%s" % (graph, str(entry["sha256"])[:12]))}
    for i, key in enumerate(("min", "opt", "max")):
        options["trt_profile_%s_shapes" % key] = ",".join(
            "%s:%s" % (name, "x".join(str(d) for d in prof[i])) for name, prof in shapes.items())
    return options


class OnnxRuntimeRunner(BundleRunner):
    name = "onnxruntime"

    def __init__(self, bundle, device: Optional[str] = None, threads: Optional[int] = None,
                 spinning: bool = False, arena: bool = True, log=None):
        super(OnnxRuntimeRunner, self).__init__(bundle, threads)
        self.log = log or (lambda line: sys.stderr.write("onnxruntime: %s\n" % line))
        self.spinning, self.arena = bool(spinning), bool(arena)  # defaults: benchmarks/results/ort_session_options*
        self.providers = providers_for(device)
        self.sessions = {}
        self.outputs = {}

    def _options(self) -> "ort.SessionOptions":
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
            so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
        so.enable_cpu_mem_arena = self.arena
        return so

    def _load(self, graph: str, path: str) -> None:
        if self.bundle.graph_format(graph) != "onnx":
            raise BackendUnavailable("the %s graph is an OpenVINO IR (quantize --backend openvino): run this bundle "
                                     "with backend='openvino'" % graph)
        if self.bundle.manifest["graphs"][graph].get("inference_precision") == "bf16":
            raise BackendUnavailable("%s is marked bf16 (OpenVINO CPU only): use backend='openvino'" % graph)
        providers = [(p, {}) for p in self.providers]
        if self.providers[0] == CHAIN[0]:
            options = tensorrt_options(self.bundle, graph)
            folder = options["trt_engine_cache_path"]
            os.makedirs(folder, exist_ok=True)
            if not any(f.endswith(".engine") for f in os.listdir(folder)):
                self.log("building %s TensorRT EP engine (none cached in %s); this takes minutes on a Jetson"
                         % (graph, folder))
            providers[0] = (CHAIN[0], options)
        sess = ort.InferenceSession(path, self._options(), providers=providers)
        self.sessions[graph] = sess
        self.outputs[graph] = [o.name for o in sess.get_outputs()]

    def _unload(self) -> None:
        self.sessions = {}

    def _run(self, graph: str, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        outs = self.sessions[graph].run(None, feeds)
        return dict(zip(self.outputs[graph], outs))

    def describe(self) -> str:
        used = next(iter(self.sessions.values())).get_providers() if self.sessions else self.providers
        threads = "%d threads" % self.threads if self.threads else "default threads"
        return "onnxruntime %s, %s, %s, %s" % (ort.__version__, " > ".join(SHORT.get(p, p) for p in used),
                                              self.precision, threads)


def probe(device: Optional[str] = None) -> Tuple[bool, str]:
    """(ok, 'onnxruntime 1.x, providers: CPU EP') or (False, why ``device`` is not served here)."""
    try:
        chosen = providers_for(device)
    except (BackendUnavailable, ValueError) as exc:
        return False, str(exc)
    return True, "onnxruntime %s, providers: %s" % (ort.__version__, ", ".join(SHORT.get(p, p) for p in chosen))


def create(bundle, device: Optional[str] = None, threads: Optional[int] = None,
           auto: bool = False) -> OnnxRuntimeRunner:
    """Open ``bundle`` and load its graphs (raises BackendUnavailable when ``device`` is not served here).
    ``auto`` changes nothing here: loading never blocks for minutes."""
    runner = OnnxRuntimeRunner(bundle, device=device, threads=threads)
    runner.activate()
    return runner
