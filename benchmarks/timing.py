"""Latency measurement shared by the benchmarks (no torch, Python 3.8).

``measure`` runs several callables round-robin (one call of each per round, so a slow phase of a shared machine
hits all of them alike), excludes warm-up calls, and reports wall-clock percentiles (p50/p90/p99) plus the
process CPU time per call (less sensitive to other processes on a busy machine). State the thread settings with
every number: ``thread_env`` sets and returns them.

    from rmpsam_edge.benchmarks.timing import measure, thread_env
    env = thread_env(2)                 # before importing torch / onnxruntime / openvino
    stats = measure({"ort": lambda: sess.run(None, feeds), "ov": lambda: req.infer(feeds)}, runs=20)
    print(stats["ort"].p50)
"""
import os
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


class Stats(object):
    """Latency of one callable: ``samples`` wall-clock milliseconds, ``cpu`` process CPU milliseconds per call."""

    def __init__(self, name: str, samples: List[float], cpu: List[float]):
        self.name = name
        self.samples = [float(s) for s in samples]
        self.cpu = [float(c) for c in cpu]

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

    def to_dict(self) -> dict:
        return {"name": self.name, "runs": len(self.samples), "p50_ms": round(self.p50, 3),
                "p90_ms": round(self.p90, 3), "p99_ms": round(self.p99, 3), "mean_ms": round(self.mean, 3),
                "min_ms": round(min(self.samples), 3) if self.samples else None,
                "cpu_p50_ms": round(self.cpu_p50, 3)}

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


def load_average():
    """The 1/5/15-minute load averages (rounded), or None where the OS has none: benchmarks record them so a
    reader can tell a shared machine's numbers apart."""
    import os
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None
