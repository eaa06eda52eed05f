"""One pycuda context owned by one runner (or one ``build-engine`` run), usable from any thread.

pycuda aborts at exit when a context is left on a thread's stack, so the context is popped right after
creation; ``with ctx:`` pushes/pops it under a lock; ``close()`` (also at interpreter exit, via
``weakref.finalize``) releases what was registered with ``own`` inside the context, then pops and detaches it.
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
