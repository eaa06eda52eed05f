"""Fidelity of a quantized bundle against its FP32 bundle, on held-out images (numpy only).

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

LARGE_MASK = 0.01  # "large" prompt masks cover >= 1 % of the image in FP32 (reported apart: tiny masks are volatile)

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


# ------------------------------------------------------------------------------------------- metrics
def feature_metrics(ref, test) -> Dict[str, float]:
    a = np.asarray(ref, dtype=np.float64).ravel()
    b = np.asarray(test, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError("feature shapes differ: %s vs %s" % (np.shape(ref), np.shape(test)))
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    cos = float(a @ b / (na * nb)) if na > 0 and nb > 0 else float(na == nb)
    diff = float(np.abs(a - b).max()) if a.size else 0.0
    scale = float(np.abs(a).max()) if a.size else 0.0
    return {"cosine": cos, "max_abs_error": diff, "max_abs_error_rel": diff / scale if scale > 0 else diff}


def mask_ious(ref, test) -> np.ndarray:
    """Binary masks (N, H, W) -> per-mask IoU (N,); two empty masks agree perfectly (IoU 1)."""
    a = np.asarray(ref, dtype=bool).reshape(len(ref), -1)
    b = np.asarray(test, dtype=bool).reshape(len(test), -1)
    if a.shape != b.shape:
        raise ValueError("mask shapes differ: %s vs %s" % (np.shape(ref), np.shape(test)))
    inter = (a & b).sum(axis=1).astype(np.float64)
    union = (a | b).sum(axis=1).astype(np.float64)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def worst_decile(values) -> float:
    """Mean of the lowest 10 % of ``values`` (at least one value)."""
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if v.size == 0:
        return float("nan")
    return float(v[:max(1, int(np.ceil(0.1 * v.size)))].mean())


def match_segments(ref_map, test_map, ref_ids: Sequence[int], test_ids: Sequence[int], min_iou: float = 0.5):
    """Greedy one-to-one matching of segments by IoU (> min_iou, highest first) -> [(ref_id, test_id, iou)]."""
    r = np.asarray(ref_map).ravel()
    t = np.asarray(test_map).ravel()
    pairs = []
    for i in ref_ids:
        ri = r == i
        area_r = int(ri.sum())
        if area_r == 0:
            continue
        for j in test_ids:
            tj = t == j
            inter = int((ri & tj).sum())
            if inter == 0:
                continue
            iou = inter / float(area_r + int(tj.sum()) - inter)
            if iou > min_iou:
                pairs.append((iou, i, j))
    pairs.sort(reverse=True)
    used_r, used_t, out = set(), set(), []
    for iou, i, j in pairs:
        if i in used_r or j in used_t:
            continue
        used_r.add(i)
        used_t.add(j)
        out.append((i, j, iou))
    return out


def panoptic_metrics(ref_map, test_map, ref_segments: List[dict], test_segments: List[dict],
                     instance_offset: int = 1000) -> Dict[str, float]:
    """Two panoptic maps (H, W) of ids (label + inst * offset, void = K) + their segment lists."""
    ref_map = np.asarray(ref_map)
    test_map = np.asarray(test_map)
    class_agree = float(np.mean(ref_map % instance_offset == test_map % instance_offset))
    ref_ids = [s["id"] for s in ref_segments]
    test_ids = [s["id"] for s in test_segments]
    matches = match_segments(ref_map, test_map, ref_ids, test_ids)
    mapped = np.full(test_map.shape, -1, dtype=np.int64)
    for i, j, _ in matches:
        mapped[test_map == j] = i
    unsegmented_ref = ~np.isin(ref_map, ref_ids)
    unsegmented_test = ~np.isin(test_map, test_ids)
    seg_agree = float(np.mean((mapped == ref_map) | (unsegmented_ref & unsegmented_test)))
    n = max(len(ref_ids), len(test_ids))
    return {"class_agreement": class_agree, "segment_agreement": seg_agree,
            "matched_iou": float(np.mean([m[2] for m in matches])) if matches else (1.0 if n == 0 else 0.0),
            "matched": len(matches), "segments_ref": len(ref_ids), "segments_test": len(test_ids)}


# ------------------------------------------------------------------------------------------- runs
def _same_size_meta(meta):
    """The image's meta with ori_shape = img_shape: masks compared at the resized-image resolution."""
    from rmpsam_edge.preprocess import ImageMeta
    return ImageMeta(meta.img_shape, meta.img_shape, meta.pad_shape, (1.0, 1.0))


def image_outputs(runner, x, meta, boxes, class_embed, num_things, want_panoptic: bool) -> dict:
    """Everything one runner produces for one image that the metrics compare."""
    from rmpsam_edge.postprocess import panoptic_fusion, panoptic_keep, upsample_masks
    feats = runner.encode(x)
    out = {"features": feats}
    small = _same_size_meta(meta)
    logits, iou = runner.decode_prompts(feats, boxes)
    out["prompt_masks"] = upsample_masks(logits, small, binary=True)
    out["iou"] = np.asarray(iou, dtype=np.float32).ravel()
    if want_panoptic:
        cls, masks, _ = runner.decode_objects(feats, class_embed)
        out["query_labels"] = np.asarray(cls[0]).argmax(axis=-1)
        out["query_masks"] = np.asarray(masks[0]) > 0
        keep, _, _ = panoptic_keep(cls[0])  # fusion depends on the kept queries only: upsample just those
        out["panoptic"] = panoptic_fusion(cls[0][keep], upsample_masks(masks[0][keep], small), num_things)
    return out


def compare_runners(ref, test, inputs, prompts, class_embed=None, num_things: int = 0,
                    progress_desc: str = "fidelity", stream=None) -> dict:
    """ref / test: runners (``encode``, ``decode_prompts``, ``decode_objects``); inputs: [(x, meta)];
    prompts: [(normalised boxes (N, 4), kinds)] per input. Returns the metric dict (see module docstring)."""
    from rmpsam_edge.progress import progress
    cos, maxabs, maxrel, ious, iou_err, pan, qcls, qmask, areas = [], [], [], [], [], [], [], [], []
    want_pan = class_embed is not None
    for (x, meta), (boxes, _) in progress(zip(inputs, prompts), len(inputs), progress_desc, stream):
        a = image_outputs(ref, x, meta, boxes, class_embed, num_things, want_pan)
        b = image_outputs(test, x, meta, boxes, class_embed, num_things, want_pan)
        fm = feature_metrics(a["features"], b["features"])
        cos.append(fm["cosine"])
        maxabs.append(fm["max_abs_error"])
        maxrel.append(fm["max_abs_error_rel"])
        ious.append(mask_ious(a["prompt_masks"], b["prompt_masks"]))
        areas.append(a["prompt_masks"].reshape(len(a["prompt_masks"]), -1).mean(axis=1))
        iou_err.append(np.abs(a["iou"] - b["iou"]))
        if want_pan:
            qcls.append(float(np.mean(a["query_labels"] == b["query_labels"])))
            qmask.append(float(np.mean(a["query_masks"] == b["query_masks"])))
            pan.append(panoptic_metrics(a["panoptic"][0], b["panoptic"][0], a["panoptic"][1], b["panoptic"][1]))
    all_ious = np.concatenate(ious) if ious else np.zeros(0)
    large = np.concatenate(areas) >= LARGE_MASK if areas else np.zeros(0, bool)
    out = {
        "images": len(inputs),
        "prompts": int(all_ious.size),
        "feature_cosine": float(np.min(cos)) if cos else float("nan"),
        "feature_cosine_mean": float(np.mean(cos)) if cos else float("nan"),
        "feature_max_abs_error": float(np.max(maxabs)) if maxabs else float("nan"),
        "feature_max_abs_error_rel": float(np.max(maxrel)) if maxrel else float("nan"),
        "mask_iou_mean": float(all_ious.mean()) if all_ious.size else float("nan"),
        "mask_iou_worst_decile": worst_decile(all_ious),
        "mask_iou_mean_large": float(all_ious[large].mean()) if large.any() else float("nan"),
        "prompts_large": int(large.sum()),
        "iou_score_abs_error": float(np.concatenate(iou_err).mean()) if iou_err else float("nan"),
    }
    if pan:
        out.update({
            "query_class_agreement": float(np.mean(qcls)),
            "query_mask_sign_agreement": float(np.mean(qmask)),
            "panoptic_class_agreement": float(np.mean([p["class_agreement"] for p in pan])),
            "panoptic_segment_agreement": float(np.mean([p["segment_agreement"] for p in pan])),
            "matched_segment_iou": float(np.mean([p["matched_iou"] for p in pan])),
            "segments_fp32": int(sum(p["segments_ref"] for p in pan)),
            "segments_quantized": int(sum(p["segments_test"] for p in pan)),
            "segments_matched": int(sum(p["matched"] for p in pan)),
        })
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
