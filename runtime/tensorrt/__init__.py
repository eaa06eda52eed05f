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
    """Cheap check for ``backend="auto"``: (True, 'TensorRT 10.3.0 on Orin') or (False, why not)."""
    from rmpsam_edge.errors import UserError
    from . import compat
    try:
        trt = compat.import_tensorrt()
        cuda = compat.import_pycuda()
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
