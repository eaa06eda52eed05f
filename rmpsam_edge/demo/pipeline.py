"""Capture -> inference -> drawing/writing as a three-stage pipeline with bounded queues.

    capture thread ──q_in──> inference thread ──q_out──> sink (caller's thread: draw, write, show)

Live sources (cameras, streams) never wait for the model: the capture stage keeps only the newest frame and
counts the ones it replaced, and results the sink cannot take in time are dropped (counted) so a slow display
or disk never stalls the model. Finite sources (files, image lists) lose nothing: every stage blocks instead.
Ctrl-C, SIGTERM or SIGHUP (KeyboardInterrupt in the sink's thread) stops both worker threads, keeps every
result already computed, and returns the summary (``interrupted`` holds the exception; the caller re-raises it
after finalising its outputs). An exception in a worker stops the run and is re-raised in the caller's thread.
Python 3.8, no torch.
"""
import queue
import threading
import time
from typing import Callable, Optional

import numpy as np

_END = object()


class FrameItem(object):
    """One frame travelling through the pipeline: source index, BGR frame, model result, timestamps."""

    __slots__ = ("index", "frame", "result", "t_captured")

    def __init__(self, index: int, frame: np.ndarray, t_captured: float):
        self.index = index
        self.frame = frame
        self.result = None
        self.t_captured = t_captured


class Stats(object):
    """Thread-safe per-stage milliseconds and counters. ``add(stage, ms)``; ``count(name)``;
    ``last_ms(stage)``; ``fps()`` = frames finished by the sink per second over the last ``window`` frames."""

    def __init__(self, window: int = 30):
        self._lock = threading.Lock()
        self.ms = {}  # type: Dict[str, List[float]]
        self.counters = {}  # type: Dict[str, int]
        self._done_times = []  # type: List[float]
        self._window = window
        self.t_start = None  # type: Optional[float]
        self.t_end = None  # type: Optional[float]

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            self.ms.setdefault(stage, []).append(float(ms))

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + n

    def get(self, name: str) -> int:
        with self._lock:
            return self.counters.get(name, 0)

    def last_ms(self, stage: str) -> Optional[float]:
        with self._lock:
            v = self.ms.get(stage)
            return v[-1] if v else None

    def frame_done(self) -> None:
        now = time.perf_counter()
        with self._lock:
            self._done_times.append(now)
            self.t_end = now

    def fps(self) -> Optional[float]:
        with self._lock:
            t = self._done_times[-self._window:]
        if len(t) < 2 or t[-1] <= t[0]:
            return None
        return (len(t) - 1) / (t[-1] - t[0])

    def summary(self) -> dict:
        """{'frames', 'wall_s', 'fps', 'stages': {stage: {'mean','p50','p90','n'}}, 'counters': {...}}.
        ``fps`` is end-to-end: frames finished by the sink / time from the first capture to the last sink."""
        with self._lock:
            stages = {}
            for name, values in self.ms.items():
                a = np.asarray(values, dtype=np.float64)
                stages[name] = {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
                                "p90": float(np.percentile(a, 90)), "n": int(a.size)}
            frames = len(self._done_times)
            wall = (self.t_end - self.t_start) if (self.t_start is not None and self.t_end is not None) else 0.0
            # Steady-state rate: skip the first finished frame (model warm-up, pipeline fill).
            steady = None
            if frames >= 3 and self._done_times[-1] > self._done_times[0]:
                steady = (frames - 1) / (self._done_times[-1] - self._done_times[0])
            return {"frames": frames, "wall_s": wall, "fps": (frames / wall) if wall > 0 else None,
                    "fps_steady": steady, "stages": stages, "counters": dict(self.counters)}


class PipelineResult(object):
    """``interrupted``: the KeyboardInterrupt (Ctrl-C, or ``Stopped`` for SIGTERM/SIGHUP) that ended the run,
    None otherwise; the caller finalises its outputs, then re-raises it for the conventional exit code."""

    def __init__(self, stats: Stats, interrupted: Optional[BaseException], ended_early: Optional[str]):
        self.stats = stats
        self.interrupted = interrupted
        self.ended_early = ended_early


def _put(q: "queue.Queue", item, stop: threading.Event) -> bool:
    """Blocking put that gives up when ``stop`` is set (returns False then)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _put_latest(q: "queue.Queue", item, stats: Stats, counter: str) -> None:
    """Non-blocking put for live sources: replace the oldest waiting item, counting it as dropped."""
    while True:
        try:
            q.put_nowait(item)
            return
        except queue.Full:
            try:
                q.get_nowait()
                stats.count(counter)
            except queue.Empty:
                pass


def run_pipeline(source, process: Callable, sink: Callable, max_frames: Optional[int] = None,
                 queue_size: int = 4, stats: Optional[Stats] = None) -> PipelineResult:
    """Run ``source`` through ``process`` (inference thread) into ``sink`` (this thread).

    source: an object with ``read() -> BGR frame or None``, ``live`` (bool) and optional ``ended_early``.
    process(frame, stats) -> result; it may ``stats.add(stage, ms)`` its own stage timings.
    sink(item: FrameItem, stats) -> bool; draws/writes/shows; return False to stop (e.g. the 'q' key).
    max_frames: stop after this many frames reached the model (None = until the source ends).
    """
    stats = stats or Stats()
    live = bool(getattr(source, "live", False))
    stop = threading.Event()
    q_in = queue.Queue(maxsize=1 if live else queue_size)
    q_out = queue.Queue(maxsize=min(queue_size, 2) if live else queue_size)  # live: little display lag
    errors = []  # type: List[BaseException]

    def capture():
        try:
            index = 0
            while not stop.is_set():
                if not live and max_frames is not None and index >= max_frames:
                    break
                t0 = time.perf_counter()
                frame = source.read()
                if frame is None:
                    break
                stats.add("capture", (time.perf_counter() - t0) * 1e3)
                item = FrameItem(index, frame, time.perf_counter())
                index += 1
                if live:
                    _put_latest(q_in, item, stats, "dropped_at_capture")
                elif not _put(q_in, item, stop):
                    return
        except BaseException as exc:  # noqa: B902 - re-raised in the caller's thread
            errors.append(exc)
            stop.set()
        finally:
            _put(q_in, _END, stop) if not live else _put_latest(q_in, _END, stats, "dropped_at_capture")

    def infer():
        try:
            done = 0
            while not stop.is_set():
                try:
                    item = q_in.get(timeout=0.05)
                except queue.Empty:
                    continue
                if item is _END:
                    break
                t0 = time.perf_counter()
                item.result = process(item.frame, stats)
                stats.add("inference", (time.perf_counter() - t0) * 1e3)
                stats.count("inferred")
                done += 1
                if live:
                    try:
                        q_out.put_nowait(item)
                    except queue.Full:
                        stats.count("dropped_at_output")
                elif not _put(q_out, item, stop):
                    return
                if max_frames is not None and done >= max_frames:
                    break
        except BaseException as exc:  # noqa: B902
            errors.append(exc)
        finally:
            stop.set()  # the model is done: capture stops too
            _put(q_out, _END, closed)

    closed = threading.Event()  # set when the sink stops reading
    workers = [threading.Thread(target=capture, name="demo-capture", daemon=True),
               threading.Thread(target=infer, name="demo-inference", daemon=True)]
    stats.t_start = time.perf_counter()
    interrupted = None  # type: Optional[BaseException]
    try:
        for w in workers:
            w.start()
        while True:
            try:
                item = q_out.get(timeout=0.1)
            except queue.Empty:
                if errors and not any(w.is_alive() for w in workers):
                    break
                continue
            if item is _END:
                break
            keep_going = sink(item, stats)
            stats.add("latency", (time.perf_counter() - item.t_captured) * 1e3)
            stats.frame_done()
            if keep_going is False:
                break
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP as rmpsam_edge.signals.Stopped
        interrupted = exc
    finally:
        stop.set()
        closed.set()
        # After Ctrl-C, keep what was already computed: the results waiting for the sink are still drawn
        # and written (a second Ctrl-C abandons them). The frame inside the model at that moment is lost.
        for w in workers:
            if w.ident is not None:
                w.join(timeout=10.0)
        if interrupted:
            while True:
                try:
                    item = q_out.get_nowait()
                except queue.Empty:
                    break
                if item is _END:
                    break
                try:
                    sink(item, stats)
                    stats.frame_done()
                except KeyboardInterrupt:
                    break
    if errors:
        raise errors[0]
    return PipelineResult(stats, interrupted, getattr(source, "ended_early", None))
