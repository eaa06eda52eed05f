"""TensorRT backend (pycuda): engine building, engine cache, runner.

Importing this package imports neither TensorRT nor pycuda; they are loaded when a runner activates or
``build-engine`` runs. Entry points for the loader:

    available() -> (bool, reason)                 TensorRT + pycuda importable and a CUDA GPU answers
    create_runner(bundle, precision=None, ...)    a TensorRTRunner (engines built on first use if needed)

Modules: compat (the one 8.6/10.x adapter), profiles, precision (FP32 pins), cache (engine sidecars),
calibrator (INT8), build (three builder functions), engines (reuse-or-rebuild), runner, cli.
"""
from typing import Optional, Tuple


def available(device: int = 0) -> Tuple[bool, str]:
    """Cheap check for ``backend="auto"``: (True, 'TensorRT 10.3.0 on Orin (sm 8.7)') or (False, why not:
    'tensorrt not installed (...)', 'pycuda not installed (...)', no GPU, TensorRT too old)."""
    import importlib
    from rmpsam_edge.errors import UserError
    from . import compat
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError:
        return False, "tensorrt not installed (JetPack ships it; on a desktop GPU: pip install tensorrt)"
    try:
        cuda = importlib.import_module("pycuda.driver")
    except ImportError:
        return False, "pycuda not installed (pip install pycuda; it needs the CUDA toolkit)"
    try:
        c = compat.Compat(trt)
        name, cc = c.device_info(cuda, device)
    except UserError as exc:
        return False, str(exc)
    return True, "TensorRT %s on %s (sm %s)" % (c.version_string, name, cc)


def create_runner(bundle, precision: Optional[str] = None, build: bool = True, device: int = 0, **choices):
    """A ``TensorRTRunner`` for a bundle folder. precision None: what `build-engine` built last, else fp16.
    build=False: fail (one line saying what differs) instead of building a missing or stale engine.
    Other keyword arguments go to ``engines.Choices`` (ranges, dla_core, fp32_layers, ...)."""
    from .engines import Choices
    from .runner import TensorRTRunner
    return TensorRTRunner(bundle, Choices(precision=precision, **choices), build=build, device=device)
