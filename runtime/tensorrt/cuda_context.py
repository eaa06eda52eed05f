"""One pycuda context owned by one runner (or one ``build-engine`` run), usable from any thread.

pycuda keeps one context STACK PER THREAD and aborts the process at exit when a context is still on a
stack ("The context stack was not empty upon module cleanup", exit 134). So the context is created once and
popped right away; ``with ctx:`` pushes it on the calling thread's stack and pops it again (a lock makes one
thread at a time use it); ``close()`` releases what was registered with ``own`` INSIDE the context (buffers,
execution contexts, engines, runtime, stream), then pops and detaches it. ``close`` also runs at interpreter
exit (``weakref.finalize``) when the owner forgot to, so no process aborts. Several contexts per process work.
"""
import threading
import weakref
from typing import Callable, List


def _close(cuda, ctx, owned: List[Callable[[], None]], lock) -> None:
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
            cuda.Context.pop()
            ctx.detach()


class CudaContext(object):
    def __init__(self, cuda, index: int = 0):
        self.cuda = cuda
        self._ctx = cuda.Device(index).make_context()  # pushed on this thread's stack by pycuda ...
        cuda.Context.pop()                              # ... and popped right away: pushed only while used
        self._lock = threading.RLock()
        self._owned = []  # type: List[Callable[[], None]]
        self._finalizer = weakref.finalize(self, _close, cuda, self._ctx, self._owned, self._lock)

    def own(self, release: Callable[[], None]) -> None:
        """Run ``release`` inside this context when it closes (last registered, first released)."""
        self._owned.append(release)

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

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
