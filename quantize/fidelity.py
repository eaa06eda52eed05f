"""Fidelity of a quantized bundle against its FP32 bundle, on held-out images (numpy only): thresholds, verdicts
and latency. The metrics come from the one comparator, ``runtime.compare.compare_runners``.

Metrics (all against FP32, never against ground truth):

* encoder features: cosine similarity (whole tensor) and max |diff| (also relative to FP32 max |value|);
* prompt masks: IoU of the binary masks (logits > 0, upsampled to the resized image as the runtime does) over a
  grid of clicks and a set of boxes per image: mean IoU and worst-decile IoU (the mean of the lowest 10 % of
  the per-prompt IoUs), and the mean over the masks that cover >= 1 % of the image in FP32 (a few-pixel mask
  flips to IoU 0.1 with a handful of pixels, so the plain mean is dominated by tiny masks); IoU-score error (mean |iou_fp32 - iou_quant| of the IoU head);
* object queries (before the panoptic score threshold, so it is informative even when few segments survive
  it): agreement of the 100 queries' argmax class and of the sign of their mask logits (stride 4);
* panoptic: pixel agreement of the class maps (void included) and of the segment maps (quantized segments
  mapped to their matched FP32 segment), and the mean IoU of matched segments (greedy, IoU > 0.5, as PQ);
* size on disk and latency of both bundles, measured in the same run (interleaved, median).

``verdicts`` checks each metric against a threshold (``THRESHOLDS``: the documented defaults); ``gate_metrics``
says which of them decide pass/fail.
"""
from typing import Dict, List, Optional, Sequence

import numpy as np

# metric -> (direction, default threshold for int8, for fp16 and bf16); ">=": higher is better.
THRESHOLDS = {
    "feature_cosine": (">=", 0.99, 0.999),
    "mask_iou_mean": (">=", 0.95, 0.99),
    "mask_iou_worst_decile": (">=", 0.80, 0.95),
    "iou_score_abs_error": ("<=", 0.05, 0.01),
    "query_class_agreement": (">=", 0.90, 0.98),
    "query_mask_sign_agreement": (">=", 0.95, 0.99),
    "panoptic_class_agreement": (">=", 0.95, 0.99),
    "panoptic_segment_agreement": (">=", 0.90, 0.98),
    "matched_segment_iou": (">=", 0.85, 0.95),
}


def default_thresholds(precision: str, min_mask_iou: Optional[float] = None) -> Dict[str, tuple]:
    col = 2 if precision in ("fp16", "bf16") else 1  # bf16 is held to the FP32-accuracy (fp16) column
    out = {k: (v[0], v[col]) for k, v in THRESHOLDS.items()}
    if min_mask_iou is not None:
        out["mask_iou_mean"] = (">=", float(min_mask_iou))
    return out


def gate_metrics(quantized_graphs: Sequence[str]) -> List[str]:
    """The metrics that decide pass/fail (--fail-below, --auto-fallback): the prompt-mask IoU always, and the
    object queries' class agreement when the object decoder itself is quantized. Every other metric gets a
    verdict in the report but does not gate (panoptic maps hinge on a 0.8 score threshold and flip wholesale on
    random weights)."""
    gate = ["mask_iou_mean"]
    if "object_decoder" in quantized_graphs:
        gate.append("query_class_agreement")
    return gate


def verdicts(metrics: dict, thresholds: Dict[str, tuple], gate: Sequence[str] = ("mask_iou_mean",)) -> Dict[str, dict]:
    """metric -> {"value", "threshold", "direction", "pass", "gate"} for every thresholded metric present."""
    out = {}
    for name, (direction, thr) in thresholds.items():
        if name not in metrics:
            continue
        v = metrics[name]
        ok = bool(np.isfinite(v)) and (v >= thr if direction == ">=" else v <= thr)
        out[name] = {"value": v, "threshold": thr, "direction": direction, "pass": ok, "gate": name in gate}
    return out


def failed(verdict_map: Dict[str, dict], gated_only: bool = True) -> List[str]:
    """'metric value < threshold' for each failing metric (only the gating ones unless gated_only=False)."""
    return ["%s %.4g %s %.4g" % (k, v["value"], "<" if v["direction"] == ">=" else ">", v["threshold"])
            for k, v in verdict_map.items() if not v["pass"] and (v["gate"] or not gated_only)]


# ------------------------------------------------------------------------------------------- latency
def latency(runners: Dict[str, object], x, boxes1, class_embed=None, runs: int = 10, warmup: int = 2) -> dict:
    """Median wall ms of encoder / 1-prompt decoder / object decoder for each runner (and, under "cpu_ms", the
    median process CPU ms), timed by ``benchmarks.timing.measure`` round-robin in one process so that all
    runners see the same machine state."""
    from rmpsam_edge.benchmarks.timing import measure
    feats = {n: r.encode(x) for n, r in runners.items()}
    calls = {"encoder": lambda r, f: r.encode(x), "prompt_decoder_1": lambda r, f: r.decode_prompts(f, boxes1)}
    if class_embed is not None:
        calls["object_decoder"] = lambda r, f: r.decode_objects(f, class_embed)
    stats = measure({(n, c): (lambda fn, r, f: lambda: fn(r, f))(fn, r, feats[n])
                     for c, fn in calls.items() for n, r in runners.items()}, runs=runs, warmup=warmup)
    out = {}
    for n in runners:
        out[n] = {c: stats[(n, c)].p50 for c in calls}
        out[n]["encoder_plus_prompt_1"] = out[n]["encoder"] + out[n]["prompt_decoder_1"]
        # process CPU time (all threads): with 1 thread it approximates the latency of an idle core even
        # when other processes compete for the CPU
        out[n]["cpu_ms"] = {c: stats[(n, c)].cpu_p50 for c in calls}
    return out
