"""``load(bundle, backend="auto")``: pick a backend, load the bundle on it, return a Predictor (no torch).

The backend order is a plain list of rows ``(backend name, module, factory, device)``. ``auto`` walks it and
takes the first backend that loads; a backend whose package is not installed, or that cannot serve the device
(``BackendUnavailable``: no GPU, ...), is skipped; one that fails while loading the bundle is a fallback and
gets one line on stderr. The choice gets one line too. An explicitly requested backend that is missing is a
``UserError`` naming the package to install.

How a backend plugs in (see docs/export_runtime.md): a row naming a module and a factory
``create(bundle: Bundle, device=None, threads=None) -> Runner`` (an activated runner) that raises
``BackendUnavailable`` when it cannot serve the device (no GPU, package missing). TensorRT comes first, through
``create_tensorrt`` below, which adapts the TensorRT package's own entry points (``available()``,
``create_runner()``); a row whose module does not exist is skipped silently.
"""
import importlib
import sys
from typing import List, Optional, Tuple

from rmpsam_edge.errors import UserError

from .bundle import Bundle
from .bundle_runner import BackendUnavailable

ORT = "rmpsam_edge.runtime.onnxruntime_backend"
OV = "rmpsam_edge.runtime.openvino_backend"
TRT = __name__  # create_tensorrt below

# auto order, best first: (backend, module, factory, device used by auto when the caller gives none)
AUTO_ORDER = [
    ("tensorrt", TRT, "create_tensorrt", "gpu"),
    ("onnxruntime", ORT, "create", None),       # provider chain TensorRT EP > CUDA EP > CPU EP, those installed
    ("openvino", OV, "create", None),           # CPU f32; measured on par with ORT CPU for the encoder, slower
]                                               # for the decoders (benchmarks/results/stage_speed_r18_512.md)
ORDER_TEXT = "tensorrt > onnxruntime > openvino"
BACKENDS = {"tensorrt": (TRT, "create_tensorrt"), "onnxruntime": (ORT, "create"), "openvino": (OV, "create")}
ALIASES = {"ort": "onnxruntime", "ov": "openvino", "trt": "tensorrt"}
INSTALL = {"onnxruntime": "pip install onnxruntime (onnxruntime-gpu for CUDA/TensorRT providers)",
           "openvino": "pip install openvino", "tensorrt": "install TensorRT + pycuda (JetPack on Jetson)"}


def _say(line: str) -> None:
    sys.stderr.write("rmpsam-edge: %s\n" % line)
    sys.stderr.flush()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _import(module: str):
    """-> (backend module or None, None or 'not installed' or 'not shipped' (the module itself is absent))."""
    try:
        return importlib.import_module(module), None
    except ImportError as exc:
        missing = getattr(exc, "name", None) or ""
        if missing and module.startswith(missing):
            return None, "not shipped"
        if missing and not missing.startswith("rmpsam_edge"):
            return None, "not installed"
        raise


def load_runner(bundle, backend: str = "auto", device: Optional[str] = None, threads: Optional[int] = None,
                verbose: bool = True):
    """-> (activated Runner, Bundle, the line describing the choice). See ``load``."""
    if isinstance(bundle, str) and bundle.lower().startswith(("grpc://", "http://")):  # a Triton server
        from .triton.client import load_runner as triton_runner
        runner, b, line = triton_runner(bundle)
        if verbose:
            _say(line)
        return runner, b, line
    b = Bundle.open(bundle)
    name = ALIASES.get(str(backend).lower(), str(backend).lower())
    if name == "auto":
        runner, line = _auto(b, device, threads, verbose)
    elif name in BACKENDS:
        mod, _ = _import(BACKENDS[name][0])
        if mod is None:
            raise UserError("backend %s is not installed: %s (or use --backend auto)" % (name, INSTALL[name]))
        try:
            runner = getattr(mod, BACKENDS[name][1])(b, device=device, threads=threads)
        except BackendUnavailable as exc:
            raise UserError("backend %s cannot run here: %s" % (name, exc))
        except (UserError, ValueError) as exc:
            raise UserError(str(exc))
        line = "%s (requested)" % runner.describe()
    else:
        raise UserError("unknown backend %r; use auto, %s" % (backend, ", ".join(sorted(BACKENDS))))
    if verbose:
        _say(line)
    return runner, b, line


def _auto(b: Bundle, device: Optional[str], threads: Optional[int], verbose: bool):
    skipped, failed = [], []  # type: Tuple[List[str], List[str]]
    tried = set()
    for name, module, factory, row_device in AUTO_ORDER:
        dev = device if device is not None else row_device
        if (name, dev) in tried:
            continue
        tried.add((name, dev))
        mod, absent = _import(module)
        if mod is None:
            if absent == "not installed" and "%s not installed" % name not in skipped:
                skipped.append("%s not installed" % name)
            continue
        try:
            runner = getattr(mod, factory)(b, device=dev, threads=threads)
        except BackendUnavailable as exc:
            text = _first_line(exc)
            skipped.append("%s not installed" % name if "not installed" in text else text[:100])
            continue
        except UserError:
            raise  # the bundle itself is bad (sha256, ...): no backend can help
        except Exception as exc:  # noqa: BLE001 - any backend failure means: try the next one
            failed.append(name)
            if verbose:
                _say("%s could not load %s (%s); falling back to the next backend" % (name, b.path, _first_line(exc)))
            continue
        why = "; ".join(skipped + ["%s failed" % f for f in failed])
        return runner, "%s (auto: first to load of %s%s)" % (runner.describe(), ORDER_TEXT,
                                                              "; skipped: " + why if why else "")
    raise UserError("no backend could load %s (%s); install one: %s"
                    % (b.path, "; ".join(skipped + ["%s failed" % f for f in failed]) or "none installed",
                       ", ".join(INSTALL[n] for n in ("onnxruntime", "openvino"))))


def _gpu_index(device) -> int:
    """None / 'gpu' / 'cuda' / 'tensorrt' -> 0, 'cuda:1' or 1 -> 1; anything else is not a GPU."""
    if device is None or isinstance(device, int):
        return int(device or 0)
    text = str(device).lower()
    kind, _, index = text.partition(":")
    if kind not in ("gpu", "cuda", "tensorrt", "trt"):
        raise BackendUnavailable("tensorrt runs on a CUDA GPU, not on %r" % (device,))
    return int(index) if index.isdigit() else 0


def create_tensorrt(bundle: Bundle, device=None, threads=None):
    """The TensorRT row: ``rmpsam_edge.runtime.tensorrt.available()`` then ``create_runner()`` (engines built or
    reused on first use). ``threads`` does not apply."""
    from rmpsam_edge.runtime import tensorrt as trt_backend
    index = _gpu_index(device)
    ok, why = trt_backend.available(index)
    if not ok:
        raise BackendUnavailable(why)
    runner = trt_backend.create_runner(bundle.path, device=index)
    runner.activate()
    return runner


def load(bundle, backend: str = "auto", device: Optional[str] = None, threads: Optional[int] = None,
         verbose: bool = True):
    """Load a model bundle on a backend -> ``rmpsam_edge.predictor.Predictor``.

    backend: 'auto' (best installed: TensorRT > ONNX Runtime (TensorRT EP > CUDA EP > CPU) > OpenVINO,
    falling back when one fails to load), 'onnxruntime', 'openvino' or 'tensorrt'. device: backend device
    ('cpu', 'gpu', 'cuda', 'tensorrt' for ONNX Runtime; 'CPU', 'GPU', 'AUTO' for OpenVINO). threads: intra-op
    threads (None: backend default). Prints one line on stderr: which backend, device and precision, and why.
    """
    from rmpsam_edge.predictor import Predictor

    if isinstance(bundle, str) and bundle.lower().startswith(("grpc://", "http://")):  # a Triton server
        from .triton.client import load as triton_load
        return triton_load(bundle, verbose=verbose)
    runner, b, _ = load_runner(bundle, backend, device, threads, verbose)
    return Predictor(runner, b.spec())
