"""The backend registry: one plain table, one row per backend, used by ``load``/``load_runner``, benchmark,
quantize and doctor. A new backend is one row.

Each row names a module that exposes::

    probe(device=None) -> (ok: bool, detail: str)   cheap: version + devices, or why it cannot run here
    create(bundle, device=None, threads=None, auto=False) -> an activated Runner
        raises BackendUnavailable when it cannot serve here (auto moves on), UserError for a bad bundle;
        auto=True never blocks for minutes (TensorRT: cached engines only).

``auto_device`` is the device ``auto`` asks the row for when the caller names none. No torch, Python 3.8.
"""
import importlib
from collections import namedtuple
from typing import Optional, Tuple

from rmpsam_edge.errors import UserError

Backend = namedtuple("Backend", "name aliases pip apt module auto_device")

PKG = "rmpsam_edge.runtime."
# auto order, best first
BACKENDS = (
    Backend("tensorrt", ("trt",), "desktop GPU: pip install \"tensorrt-cu12<11\" pycuda (10.x; plain `tensorrt` is "
            "11.x: strongly typed, FP16/INT8 from typed bundles, no DLA)",
            "JetPack: TensorRT comes with JetPack (sudo apt install python3-libnvinfer, never pip); pip install pycuda",
            PKG + "tensorrt", "gpu"),
    Backend("onnxruntime", ("ort",), "pip install onnxruntime (onnxruntime-gpu for CUDA/TensorRT providers)",
            "JetPack: pip install the onnxruntime-gpu wheel for your JetPack (Jetson Zoo)",
            PKG + "onnxruntime_backend", None),
    Backend("openvino", ("ov",), "pip install openvino", "JetPack: pip install openvino (CPU only)",
            PKG + "openvino_backend", None),
)
ORDER_TEXT = " > ".join(b.name for b in BACKENDS)

# served models: URL scheme -> client module exposing load_runner(url, verbose) and load(url, verbose)
REMOTE = {"grpc": PKG + "triton.client", "http": PKG + "triton.client"}


def is_remote(model) -> bool:
    """The one URL check: a model given as ``scheme://...`` is served (Triton), not a bundle folder."""
    return isinstance(model, str) and "://" in model


def remote_module(model):
    """The client module for a ``grpc://`` / ``http://`` model (Triton, docs/triton.md), else None."""
    if not is_remote(model):
        return None
    scheme = model.split("://", 1)[0].lower()
    if scheme not in REMOTE:
        raise UserError("unknown model address scheme %r; use grpc://HOST:PORT or http://HOST:PORT" % scheme)
    return importlib.import_module(REMOTE[scheme])


def names():
    return [b.name for b in BACKENDS]


def find(name: str) -> Optional[Backend]:
    """The row for a name or alias (case-insensitive), or None."""
    key = str(name).strip().lower()
    for b in BACKENDS:
        if key == b.name or key in b.aliases:
            return b
    return None


def get(name: str) -> Backend:
    row = find(name)
    if row is None:
        raise UserError("unknown backend %r; use auto or %s" % (name, ", ".join(names())))
    return row


def install_hint(row: Backend) -> str:
    return "%s; %s" % (row.pip, row.apt)


def import_module(row: Backend):
    """-> (module or None, None or 'not installed' or 'not shipped' (the backend module itself is absent))."""
    try:
        return importlib.import_module(row.module), None
    except ImportError as exc:
        missing = getattr(exc, "name", None) or ""
        if missing and row.module.startswith(missing):
            return None, "not shipped"
        if missing and not missing.startswith("rmpsam_edge"):
            return None, "not installed"
        raise


def probe(row: Backend, device=None) -> Tuple[bool, str]:
    """(ok, detail) for one row, never raising for a missing package."""
    mod, absent = import_module(row)
    if mod is None:
        return False, "%s %s (%s)" % (row.name, absent, row.pip)
    return mod.probe(device)


def create(row: Backend, bundle, device=None, threads=None, auto: bool = False, **extra):
    """An activated runner of ``row`` for ``bundle``; UserError naming the install when the package is missing.
    ``extra`` keyword arguments (TensorRT's ``precision``) go to the backend's ``create``."""
    mod, absent = import_module(row)
    if mod is None:
        raise UserError("backend %s is not installed: %s (or use --backend auto)" % (row.name, install_hint(row)))
    return mod.create(bundle, device=device, threads=threads, auto=auto, **extra)
