"""Per-graph CPU placement measured on this machine: the first time a bundle is split over several CPU backends
(``auto`` without a GPU, ``onnxruntime+openvino``), each backend runs each graph a few times at the bundle's
``opt`` size (one warm-up + ``RUNS`` timed runs, the fastest kept); the timings are cached in
``$XDG_CACHE_HOME/rmpsam_edge/placement.json`` (default ``~/.cache``; written atomically), keyed by the machine
(CPU model + flags hash, cores), the backend versions, the thread count and the bundle (sha256 of its graphs
from the manifest). ``timings`` answers {graph: {backend: ms}} and whether it was "measured here" or came
"from cache". No torch, Python 3.8.
"""
import hashlib
import json
import os
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from rmpsam_edge.atomic import atomic_file

from . import cpu_features
from .base import GRAPHS

FORMAT = 1
RUNS = 2  # timed runs per graph and backend, after one warm-up
Timings = Dict[str, Dict[str, float]]


def cache_path() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "rmpsam_edge", "placement.json")


def _version(name: str) -> str:
    import importlib
    try:
        return str(getattr(importlib.import_module(name), "__version__", "unknown"))
    except ImportError:
        return "not installed"


def key(bundle, backends: Sequence[str], threads: Optional[int], cpuinfo: str = cpu_features.CPUINFO) -> dict:
    """What the timings depend on: machine, backend versions, threads, the bundle's graphs."""
    info = cpu_features.read(cpuinfo)
    return {"format": FORMAT, "cpu": info.model, "cpu_flags": cpu_features.fingerprint(info),
            "cores": os.cpu_count(), "threads": threads,
            "backends": {n: _version(n) for n in sorted(backends)},
            "graphs": {g: e.get("sha256") for g, e in sorted(bundle.manifest["graphs"].items())}}


def _key_id(k: dict) -> str:
    return hashlib.sha256(json.dumps(k, sort_keys=True).encode("utf-8")).hexdigest()


def feeds(bundle, features: Optional[np.ndarray] = None) -> Dict[str, Dict[str, np.ndarray]]:
    """Inputs of each graph at the bundle's ``opt`` size: a random image (1,3,H,W); the decoders get
    ``features`` (1,256,H/4,W/4; zeros when None) with ``Np`` opt boxes / the bundle's vocabulary (no
    object_decoder entry without one)."""
    axes = bundle.manifest.get("dynamic_axes") or {}
    h, w = (int((axes.get(a) or {}).get("opt") or (axes.get(a) or {}).get("max") or 256) for a in ("H", "W"))
    n = int((axes.get("Np") or {}).get("opt") or 1)
    image = np.random.RandomState(0).rand(1, 3, h, w).astype(np.float32)
    f = np.zeros((1, 256, h // 4, w // 4), np.float32) if features is None else features
    out = {"encoder": {"image": image},
           "prompt_decoder": {"features": f, "boxes": np.tile(np.array([[0.5, 0.5, 0.3, 0.3]], np.float32), (n, 1))}}
    vocab = bundle.class_embed()
    if vocab is not None:
        out["object_decoder"] = {"features": f, "class_embed": vocab}
    return out


def _ms(runner, graph: str, feed: Dict[str, np.ndarray]) -> float:
    runner.infer(graph, feed)  # warm-up (allocations, OpenVINO's shape compile)
    best = float("inf")
    for _ in range(RUNS):
        t = time.perf_counter()
        runner.infer(graph, feed)
        best = min(best, (time.perf_counter() - t) * 1e3)
    return best


def measure(bundle, backends: Sequence[str], threads: Optional[int]) -> Timings:
    """{graph: {backend: ms}}: each backend loads the bundle's graphs and runs each one (see ``_ms``)."""
    from . import backends as registry
    from .composite import GraphSubset
    out = {}  # type: Timings
    for name in backends:
        runner = registry.create(registry.get(name), GraphSubset(bundle, GRAPHS), threads=threads, auto=True)
        try:
            first = feeds(bundle)
            feats = runner.infer("encoder", first["encoder"])["features"]
            for graph, feed in feeds(bundle, feats).items():
                out.setdefault(graph, {})[name] = round(_ms(runner, graph, feed), 3)
        finally:
            runner.deactivate()
    return out


def _read(path: str) -> Tuple[dict, Optional[str]]:
    """(entries, why it was ignored or None)."""
    if not os.path.exists(path):
        return {}, None
    try:
        with open(path) as f:
            data = json.load(f)
        if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
            raise ValueError("not a placement cache")
        return data["entries"], None
    except (OSError, IOError, ValueError, UnicodeDecodeError) as exc:
        return {}, str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__


def timings(bundle, backends: Sequence[str], threads: Optional[int] = None,
            measure_fn: Callable[..., Timings] = measure, path: Optional[str] = None,
            say: Optional[Callable[[str], None]] = None, cpuinfo: str = cpu_features.CPUINFO) -> Tuple[Timings, str]:
    """-> ({graph: {backend: ms}}, 'measured here' | 'from cache'). ``measure_fn(bundle, backends, threads)``
    measures (tests inject fake timings); ``say`` gets the one line about measuring or a cache problem."""
    say = say or (lambda line: None)
    path = path or cache_path()
    k = key(bundle, backends, threads, cpuinfo)
    kid = _key_id(k)
    entries, bad = _read(path)
    if bad:
        say("ignoring the unreadable placement cache %s (%s); it is rewritten" % (path, bad))
    hit = entries.get(kid)
    if isinstance(hit, dict) and isinstance(hit.get("ms"), dict):
        return hit["ms"], "from cache"
    say("measuring each graph on %s to place it (a few seconds, once per machine and bundle; cached in %s)"
        % (" and ".join(backends), path))
    ms = measure_fn(bundle, list(backends), threads)
    entries[kid] = {"key": k, "ms": ms, "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        with atomic_file(path) as tmp:
            with open(tmp, "w") as f:
                json.dump({"format": FORMAT, "entries": entries}, f, indent=1, sort_keys=True)
    except Exception as exc:  # noqa: BLE001 - a cache that cannot be written only costs the next load a measurement
        say("could not write the placement cache %s (%s)" % (path, str(exc).splitlines()[0][:120]))
    return ms, "measured here"

