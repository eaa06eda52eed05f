"""SIGTERM and SIGHUP behave like Ctrl-C: the first one stops the work cleanly, a second one ends at once.

systemd and docker stop a process with SIGTERM, a closed terminal sends SIGHUP. Inside ``graceful_stop()``
(the CLI wraps every command in it) the first such signal raises ``Stopped`` (a KeyboardInterrupt subclass)
in the main thread, so the ``finally:`` / ``except KeyboardInterrupt`` paths that already finalise videos, JSON
Lines, checkpoints and staging folders run for every signal alike; the CLI then exits 128 + signal number
(130 SIGINT, 143 SIGTERM, 129 SIGHUP) with one line and no traceback. A second signal while stopping calls
``os._exit`` with the same code. Long loops may also poll ``stop_requested()``. Python 3.8, no torch.
"""
import contextlib
import os
import signal
import sys
import threading

_state = {"signum": None}
_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}
if hasattr(signal, "SIGHUP"):
    _NAMES[signal.SIGHUP] = "SIGHUP"


class Stopped(KeyboardInterrupt):
    """Raised in the main thread by the first SIGINT/SIGTERM/SIGHUP inside ``graceful_stop``."""

    def __init__(self, signum: int):
        super(Stopped, self).__init__(_NAMES.get(signum, "signal %d" % signum))
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)


def stop_requested():
    """The signal number that asked to stop (None if none): for loops that prefer to poll."""
    return _state["signum"]


def exit_code(exc: BaseException) -> int:
    """128 + signal for ``Stopped``, 130 for a plain KeyboardInterrupt."""
    return exc.exit_code if isinstance(exc, Stopped) else 130


def _handler(signum, frame):
    if _state["signum"] is not None:
        sys.stderr.write("\nrmpsam-edge: second %s, exiting now\n" % _NAMES.get(signum, signum))
        sys.stderr.flush()
        os._exit(128 + int(signum))
    _state["signum"] = signum
    sys.stderr.write("\nrmpsam-edge: %s received, stopping cleanly (send it again to exit at once)\n"
                     % _NAMES.get(signum, signum))
    sys.stderr.flush()
    raise Stopped(signum)


@contextlib.contextmanager
def graceful_stop():
    """Install the handlers for the block (main thread only; elsewhere a no-op) and restore them after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {}
    for s in _NAMES:
        try:
            old[s] = signal.signal(s, _handler)
        except (OSError, ValueError):
            pass
    _state["signum"] = None
    try:
        yield
    finally:
        for s, h in old.items():
            try:
                signal.signal(s, h)
            except (OSError, ValueError):
                pass
