"""Latency and memory measurement, the one copy for every layer (benchmarks, quantize fidelity, the doctor);
numpy only, Python 3.8.

``measure`` runs several callables round-robin (one call of each per round, so a slow phase of a shared machine
hits all of them alike), excludes warm-up calls, and reports wall-clock percentiles (p50/p90/p99) plus the
process CPU time per call (less sensitive to other processes on a busy machine). ``time_graphs`` is the
per-graph loop (encoder, prompt decoder, object decoder of several runners, round-robin). ``Stats.to_dict`` is
the one JSON shape of a latency summary (milliseconds). ``rss_mb`` / ``peak_rss_mb``: resident memory. State the
thread settings with every number: ``thread_env`` sets and returns them.

    from rmpsam_edge.timing import measure, thread_env
    env = thread_env(2)                 # before importing torch / onnxruntime / openvino
    stats = measure({"onnxruntime": lambda: sess.run(None, feeds), "openvino": lambda: req.infer(feeds)}, runs=20)
    print(stats["onnxruntime"].p50)
"""
import os
import sys
import time
from typing import Callable, Dict, List, Optional

import numpy as np

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_env(threads: int, passive: bool = True) -> Dict[str, str]:
    """Set the thread environment for libraries not yet imported (OpenMP/MKL thread count; OpenMP threads
    sleep instead of spinning between calls, so interleaved backends do not stall each other). -> the values."""
    env = {k: str(int(threads)) for k in THREAD_VARS}
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    os.environ.update(env)
    return env


def usable_cores() -> int:
    """CPUs this process may run on (its affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


class Stats(object):
    """Latency of one callable: ``samples`` wall-clock milliseconds, ``cpu`` process CPU milliseconds per call."""

    def __init__(self, name: str, samples: List[float], cpu: Optional[List[float]] = None):
        self.name = name
        self.samples = [float(s) for s in samples]
        self.cpu = [float(c) for c in cpu or []]

    def pct(self, q: float) -> float:
        return float(np.percentile(self.samples, q)) if self.samples else float("nan")

    @property
    def p50(self) -> float:
        return self.pct(50)

    @property
    def p90(self) -> float:
        return self.pct(90)

    @property
    def p99(self) -> float:
        return self.pct(99)

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples)) if self.samples else float("nan")

    @property
    def cpu_p50(self) -> float:
        return float(np.percentile(self.cpu, 50)) if self.cpu else float("nan")

    def to_dict(self, samples: bool = False) -> dict:
        """The one summary shape, milliseconds: {"p50", "p90", "p99", "mean", "min", "n", "cpu_p50"} (NaN where
        nothing was recorded), plus the rounded ``samples`` when asked."""
        out = {"p50": self.p50, "p90": self.p90, "p99": self.p99, "mean": self.mean,
               "min": min(self.samples) if self.samples else float("nan"), "n": len(self.samples),
               "cpu_p50": self.cpu_p50}
        if samples:
            out["samples"] = [round(v, 3) for v in self.samples]
        return out

    def __repr__(self) -> str:
        return "Stats(%s: p50 %.2f ms, p90 %.2f, p99 %.2f, n=%d)" % (self.name, self.p50, self.p90, self.p99,
                                                                   len(self.samples))


def measure(callables: Dict[str, Callable[[], object]], runs: int = 20, warmup: int = 2,
            max_seconds: Optional[float] = None) -> Dict[str, Stats]:
    """Call every callable ``warmup`` times (not recorded), then ``runs`` rounds of one call each, in order.

    max_seconds: stop early (after at least 3 recorded rounds) once this much time has passed. Returns
    {name: Stats} in the input order."""
    names = list(callables)
    for _ in range(max(0, warmup)):
        for n in names:
            callables[n]()
    wall = {n: [] for n in names}  # type: Dict[str, List[float]]
    cpu = {n: [] for n in names}  # type: Dict[str, List[float]]
    start = time.perf_counter()
    for i in range(max(1, runs)):
        for n in names:
            c0 = time.process_time()
            t0 = time.perf_counter()
            callables[n]()
            t1 = time.perf_counter()
            c1 = time.process_time()
            wall[n].append((t1 - t0) * 1000.0)
            cpu[n].append((c1 - c0) * 1000.0)
        if max_seconds is not None and i >= 2 and time.perf_counter() - start > max_seconds:
            break
    return {n: Stats(n, wall[n], cpu[n]) for n in names}


def graph_calls(runner, x, features, boxes, class_embed=None) -> Dict[str, Callable[[], object]]:
    """One runner's graphs as calls: "encoder" on ``x``, "prompt_decoder_N" on ``features`` with the N
    normalised ``boxes`` (N, 4), "object_decoder" when ``class_embed`` is given."""
    calls = {"encoder": lambda: runner.encode(x),
             "prompt_decoder_%d" % len(boxes): lambda: runner.decode_prompts(features, boxes)}
    if class_embed is not None:
        calls["object_decoder"] = lambda: runner.decode_objects(features, class_embed)
    return calls


def time_graphs(runners: Dict[str, object], x, boxes, class_embed=None, runs: int = 10,
                warmup: int = 2) -> Dict[str, Dict[str, Stats]]:
    """The per-graph latency loop: every graph of every runner (``graph_calls``), round-robin in one process so
    that all runners see the same machine state -> {runner name: {graph: Stats}}."""
    calls = {}
    for n, r in runners.items():
        for g, fn in graph_calls(r, x, r.encode(x), boxes, class_embed).items():
            calls[(n, g)] = fn
    stats = measure(calls, runs=runs, warmup=warmup)
    out = {n: {} for n in runners}  # type: Dict[str, Dict[str, Stats]]
    for (n, g), st in stats.items():
        out[n][g] = st
    return out


def rss_mb() -> Optional[float]:
    """Current resident memory of this process in MB (Linux /proc), else the peak from getrusage, else None."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1048576.0
    except (OSError, ValueError, AttributeError):
        return peak_rss_mb()


def peak_rss_mb() -> Optional[float]:
    """Peak resident memory of this process in MB (getrusage), None where there is none (Windows)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1048576.0 if sys.platform == "darwin" else 1024.0)


def load_average():
    """The 1/5/15-minute load averages (rounded), or None where the OS has none: benchmarks record them so a
    reader can tell a shared machine's numbers apart."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None
