"""pycuda: import it (never ``pycuda.autoinit``), describe a GPU, and own one CUDA context usable from any thread
(pushed per call under a lock, closed on the calling thread while current, since pycuda leaks a context detached
elsewhere; src/cpp/cuda.hpp ``context::detach``). SCHED_BLOCKING_SYNC: synchronize blocks instead of spinning."""
import collections
import importlib
import threading
import weakref
from typing import Callable, List

from rmpsam_edge.errors import UserError

# Every Orin reports the GPU name "Orin" and sm 8.7: an engine key also needs memory, SM count and the module.
GpuInfo = collections.namedtuple("GpuInfo", "name cc memory_mb sm_count module")


def pycuda_problem(exc: ImportError) -> str:
    """pycuda absent, or installed but its compiled part cannot load libcuda (no NVIDIA driver here)."""
    text = str(exc)
    if "libcuda" in text or (getattr(exc, "name", "") or "").startswith("pycuda._driver"):
        return ("pycuda is installed but cannot load the CUDA driver library (%s): install the NVIDIA driver "
                "(on Jetson it comes with JetPack), or rebuild pycuda against this CUDA" % text.strip()[:120])
    return "pycuda not installed (pip install pycuda; it needs the CUDA toolkit, nvcc on PATH)"


def import_pycuda():
    try:
        return importlib.import_module("pycuda.driver")
    except ImportError as exc:
        raise UserError(pycuda_problem(exc))


def device_info(cuda, index: int = 0) -> GpuInfo:
    """-> GpuInfo(name, compute capability 'major.minor', total memory MiB, SM count, Jetson module or '')."""
    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as exc:
        raise UserError("CUDA is not usable here (%s): TensorRT needs an NVIDIA GPU and its driver" % exc)
    if count <= index:
        raise UserError("no CUDA GPU %d found (%d visible): TensorRT needs an NVIDIA GPU" % (index, count))
    cuda_device = cuda.Device(index)
    sms = cuda_device.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT)
    from ..platform_facts import jetson_module
    return GpuInfo(str(cuda_device.name()), "%d.%d" % tuple(cuda_device.compute_capability()),
                   int(cuda_device.total_memory()) >> 20,
               int(sms), jetson_module())


def _close(ctx, owned: List[Callable[[], None]], lock) -> None:
    with lock:
        ctx.push()
        try:
            while owned:
                release = owned.pop()
                try:
                    release()
                except Exception:  # noqa: BLE001 - releasing the rest matters more
                    pass
        finally:
            ctx.detach()  # current here: destroyed and popped, whichever thread made it


class CudaContext(object):
    def __init__(self, cuda, index: int = 0):
        self.cuda = cuda
        self._ctx = cuda.Device(index).make_context(cuda.ctx_flags.SCHED_BLOCKING_SYNC)  # pushed here ...
        cuda.Context.pop()                                                             # ... popped at once
        self._lock = threading.RLock()
        self._owned = []  # type: List[Callable[[], None]]
        self._finalizer = weakref.finalize(self, _close, self._ctx, self._owned, self._lock)

    def own(self, release: Callable[[], None]) -> None:
        """Run ``release`` inside this context when it closes (last registered, first released)."""
        self._owned.append(release)

    def __enter__(self):
        self._lock.acquire()
        try:
            self._ctx.push()
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.cuda.Context.pop()
        finally:
            self._lock.release()

    def close(self) -> None:
        self._finalizer()
