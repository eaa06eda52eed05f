"""One pycuda context owned by one runner (or one ``build-engine`` run), usable from any thread.

pycuda keeps a context stack per thread and aborts at exit when a context is left on one, so the context is
popped right after creation; ``with ctx:`` pushes/pops it under a lock. ``close()`` (also at interpreter exit,
via ``weakref.finalize``) pushes it on the calling thread, releases what was registered with ``own``, and
detaches it while it is current: pycuda's ``context::detach`` (src/cpp/cuda.hpp) destroys a current context on
any thread and pops it, whereas a non-current one detached off its creating thread is leaked. The context
blocks the CPU thread in synchronize (``SCHED_BLOCKING_SYNC``) instead of spinning a core (flags 0 = AUTO).
"""
import threading
import weakref
from typing import Callable, List


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
