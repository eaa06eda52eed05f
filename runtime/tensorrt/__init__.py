"""TensorRT backend (pycuda), imported lazily; ``probe``/``create`` follow runtime/backends.py. ``auto=True`` never
builds (minutes on a Jetson): cached engines, or ``BackendUnavailable`` naming the ``build-engine`` command."""
from typing import Optional, Tuple

from ..bundle_runner import BackendUnavailable


def gpu_index(device) -> int:
    """None / 'gpu' / 'cuda' / 'tensorrt' -> 0, 'cuda:1', '1' or 1 -> 1; anything else is not a GPU."""
    if device is None or isinstance(device, int) or str(device).isdigit():
        return int(device or 0)
    kind, _, index = str(device).lower().partition(":")
    if kind not in ("gpu", "cuda", "tensorrt", "trt"):
        raise BackendUnavailable("tensorrt runs on a CUDA GPU, not on %r" % (device,))
    return int(index) if index.isdigit() else 0


def probe(device=None) -> Tuple[bool, str]:
    """Cheap: (True, 'TensorRT 10.3.0 on Orin (sm 8.7, 7620 MiB, 8 SMs)') or (False, why not)."""
    from rmpsam_edge.errors import UserError
    from . import compat, cuda_context
    try:
        index = gpu_index(device)
        c = compat.Compat(compat.import_tensorrt())
        gpu_info = cuda_context.device_info(cuda_context.import_pycuda(), index)
    except (BackendUnavailable, UserError) as exc:
        return False, str(exc)
    return True, "TensorRT %s on %s (sm %s, %d MiB, %d SMs%s)" % (
        c.version_string, gpu_info.name, gpu_info.cc, gpu_info.memory_mb, gpu_info.sm_count,
        ", " + gpu_info.module if gpu_info.module else "")


def create(bundle, device=None, threads=None, auto: bool = False, precision: Optional[str] = None):
    """An activated ``TensorRTRunner`` for ``bundle`` (a path, a Bundle, or the GraphSubset of a per-graph
    placement: only its graphs get engines); ``threads`` does not apply."""
    ok, why = probe(device)
    if not ok:
        raise BackendUnavailable(why)
    runner = create_runner(bundle, precision, build=not auto, device_index=gpu_index(device))
    runner.activate()
    return runner


def create_runner(bundle, precision: Optional[str] = None, build: bool = True, device_index: int = 0, **choices):
    """A (not yet activated) ``TensorRTRunner``; keyword arguments go to ``engines.Choices`` (ranges,
    dla_core, fp32_layers, ...). build=False: a missing or stale engine is an error naming build-engine."""
    from .engines import Choices
    from .runner import TensorRTRunner
    return TensorRTRunner(bundle, Choices(precision=precision, **choices), build=build, device_index=device_index)
