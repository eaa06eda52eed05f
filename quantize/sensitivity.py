"""Auto-fallback: find the INT8 layers that hurt fidelity most and keep the fewest of them in FP32.

1. ``rank``: one pass over a few calibration inputs with every candidate node's input and output tensors
   exposed, in the FP32 graph and in its INT8 (QDQ) graph (QDQ keeps the float tensor names). A node's
   sensitivity is the error it ADDS: (1 - cosine) of its output vs FP32 minus the largest (1 - cosine) of its
   inputs, so a layer is not blamed for the error it was fed.
2. ``fewest``: with nodes ranked, find the smallest k such that keeping the top-k in FP32 passes the gate
   (doubling k, then bisecting), each try re-quantizing with cached calibration ranges and re-measuring
   fidelity. Assumes more FP32 layers never hurt (true in practice; the search is logarithmic).
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np


def _expose(model, names: Sequence[str]):
    import onnx
    have = {o.name for o in model.graph.output}
    for n in names:
        if n not in have:
            model.graph.output.append(onnx.ValueInfoProto(name=n))
    return model


def _session(model):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor addressable
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _err(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 0.0 if na == nb else 1.0
    return float(1.0 - a @ b / (na * nb))


def rank(fp32_path: str, int8_path: str, feeds: List[Dict], candidates: Sequence[str]) -> List[Tuple[str, float]]:
    """-> [(node name, added error)] for ``candidates``, most sensitive first."""
    import onnx
    ref = onnx.load(fp32_path)
    inits = {i.name for i in ref.graph.initializer}
    consts = {o for n in ref.graph.node if n.op_type == "Constant" for o in n.output}
    nodes = {n.name: n for n in ref.graph.node}
    io = {}
    for name in candidates:
        n = nodes.get(name)
        if n is None:
            continue
        ins = [i for i in n.input if i and i not in inits and i not in consts]
        io[name] = (ins, n.output[0])
    tensors = sorted({t for ins, out in io.values() for t in ins + [out]})
    q = onnx.load(int8_path)
    q_names = {o for n in q.graph.node for o in n.output} | {i.name for i in q.graph.input}
    tensors = [t for t in tensors if t in q_names]
    s_ref = _session(_expose(ref, tensors))
    s_q = _session(_expose(q, tensors))
    errs = {t: 0.0 for t in tensors}
    for feed in feeds:
        a = dict(zip([o.name for o in s_ref.get_outputs()], s_ref.run(None, feed)))
        b = dict(zip([o.name for o in s_q.get_outputs()], s_q.run(None, feed)))
        for t in tensors:
            if t in a and t in b and a[t].shape == b[t].shape:
                errs[t] += _err(a[t], b[t]) / len(feeds)
    scores = []
    for name, (ins, out) in io.items():
        before = max([errs.get(i, 0.0) for i in ins] or [0.0])
        scores.append((name, max(0.0, errs.get(out, 0.0) - before)))
    scores.sort(key=lambda s: -s[1])
    return scores


def fewest(ranked: Sequence[str], passes: Callable[[int], bool], log: Callable[[str], None] = None,
           tried: Optional[Dict[int, bool]] = None) -> Optional[int]:
    """Smallest k (1..len(ranked)) for which ``passes(k)`` holds, or None if even all of them fail.
    ``passes(k)`` keeps ``ranked[:k]`` in FP32 and checks the gate; ``tried`` (filled in) records every k tried."""
    n = len(ranked)
    if n == 0:
        return None
    tried = {} if tried is None else tried

    def check(k):
        if k not in tried:
            tried[k] = bool(passes(k))
            if log:
                log("auto-fallback: %d layer(s) in FP32 -> %s" % (k, "passes" if tried[k] else "below threshold"))
        return tried[k]

    lo, k = 0, 1  # invariant: lo fails (0 = the plain INT8 model, known to fail)
    while k < n and not check(k):
        lo, k = k, min(n, 2 * k)
    if not check(k):
        return None
    hi = k
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if check(mid):
            hi = mid
        else:
            lo = mid
    return hi
