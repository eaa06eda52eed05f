"""Progress for long loops (calibration, fidelity, training): a tqdm bar on a terminal when tqdm is installed;
otherwise (a log file, a pipe, CI, or no tqdm) plain periodic lines, never carriage returns. No torch, Python 3.8.

    for item in progress(items, len(items), "calibrate"): ...
    bar = Progress(total=6000, desc="train", initial=step); bar.update(1, note="loss 0.31"); bar.close()
    log = log_lines("run/train_log.txt"); log("step 10")   # "[HH:MM:SS] step 10" on stdout and in the file
"""
import sys
import time


def _on_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):  # closed or detached stream
        return False


class Progress(object):
    """``total`` steps on ``stream`` (default stderr). Not a terminal: a line ``desc: n/total note`` at each
    quarter of the total and at most every ``every_s`` seconds in between, and one at ``close``."""

    def __init__(self, total: int, desc: str, stream=None, initial: int = 0, every_s: float = 30.0):
        self.stream = sys.stderr if stream is None else stream
        self.total, self.desc, self.n, self.every_s = int(total), desc, int(initial), float(every_s)
        self.note = ""
        self._bar = None
        if _on_terminal(self.stream):
            try:
                from tqdm import tqdm
                self._bar = tqdm(total=self.total, initial=self.n, desc=desc, file=self.stream, leave=False,
                                 dynamic_ncols=True)
            except ImportError:
                pass
        self._quarter = max(1, self.total // 4)
        self._last = time.monotonic()
        if self._bar is None:
            self._line()

    def update(self, n: int = 1, note=None) -> None:
        before, self.n = self.n, self.n + n
        if note is not None:
            self.note = note
        if self._bar is not None:
            self._bar.update(n)
            if note is not None:
                self._bar.set_postfix_str(note, refresh=False)
            return
        now = time.monotonic()
        if self.n >= self.total:  # the last line is close()'s
            return
        if self.n // self._quarter != before // self._quarter or now - self._last >= self.every_s:
            self._line()
            self._last = now

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            self._line(" done" if self.n >= self.total else "")

    def _line(self, end: str = "") -> None:
        self.stream.write("%s: %d/%d%s%s\n" % (self.desc, self.n, self.total, (" " + self.note) if self.note else "",
                                               end))
        self.stream.flush()


def progress(iterable, total: int, desc: str, stream=None, every_s: float = 30.0):
    """Yield the items of ``iterable`` (``total`` of them) while showing a ``Progress``."""
    bar = Progress(total, desc, stream, every_s=every_s)
    try:
        for item in iterable:
            yield item
            bar.update(1)
    finally:
        bar.close()


def log_lines(path: str):
    """-> ``log(line)``: the line, time-stamped, on stdout and appended to the file ``path``."""
    def log(line):
        stamp = time.strftime("%H:%M:%S")
        sys.stdout.write("[%s] %s\n" % (stamp, line))
        sys.stdout.flush()
        with open(path, "a") as f:
            f.write("[%s] %s\n" % (stamp, line))
    return log
