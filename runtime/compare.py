"""The one comparator (polygraphy-shaped): run runners on the SAME inputs, compare their named outputs against a
reference runner, one report per runner. Used by ``rmpsam-edge doctor``, export parity, quantize fidelity and
benchmark fidelity. No torch, Python 3.8, numpy only.

    cases = make_cases(bundle, image_paths)           # or cases_from(inputs, prompts, class_embed)
    ref = run_cases(reference_runner, cases)          # [{output name: array}] per case
    out = run_cases(runner, cases, features=[r["features"] for r in ref])
    report = compare(ref, out, cases, num_things)   # doctor: the metrics + "verdicts", "failures", "ok"
    metrics = compare_runners(ref_runner, runner, inputs, prompts, class_embed, num_things)   # end to end

One metric set (``metrics``; ``quantize/fidelity.py`` describes each) and one threshold table (``THRESHOLDS``)
for the doctor, quantize fidelity, benchmark fidelity and the distillation report.

Each graph can get the reference's inputs (``features``: the decoders get the reference encoder's features), so
a disagreement names the graph that causes it; ``compare_runners`` runs each runner end to end.
``diff_row`` is the element-wise check (max |diff| relative to the reference's scale, mask sign agreement).
"""
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

# metric -> (direction, threshold for int8, for fp16 / bf16 / fp32 backends); ">=": higher is better.
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
GRID = 4  # prompts per image: a GRID x GRID grid of small boxes (clicks) over the image
LARGE_MASK = 0.01  # "large" prompt masks cover >= 1 % of the image in the reference (tiny masks are volatile)


# ------------------------------------------------------------------------------------------- thresholds
def default_thresholds(precision: str, min_mask_iou: Optional[float] = None) -> Dict[str, tuple]:
    """metric -> (direction, threshold): the int8 column for int8, else the FP32-accuracy (fp16) column."""
    col = 1 if precision == "int8" else 2
    out = {k: (v[0], v[col]) for k, v in THRESHOLDS.items()}
    if min_mask_iou is not None:
        out["mask_iou_mean"] = (">=", float(min_mask_iou))
    return out


def gate_metrics(quantized_graphs: Sequence[str]) -> List[str]:
    """The metrics that decide pass/fail: the prompt-mask IoU always, and the object queries' class agreement
    when the object decoder itself is quantized. Every other metric gets a verdict in the report but does not
    gate (panoptic maps hinge on a 0.8 score threshold and flip wholesale on random weights)."""
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


def diff_row(name: str, got, ref, tolerance: float, agreement: Optional[float] = None) -> Dict:
    """Element-wise check of one output: max |diff| relative to the reference's max |value| (``rel`` <=
    ``tolerance``); with ``agreement``, also the fraction of elements whose sign (> 0) agrees (>= agreement)."""
    got = np.asarray(got, dtype=np.float32)
    ref = np.asarray(ref, dtype=np.float32)
    if got.shape != ref.shape:
        return {"output": name, "ok": False, "error": "shape %s != reference %s" % (got.shape, ref.shape)}
    diff = float(np.abs(got - ref).max()) if got.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    rel = diff / max(scale, 1e-12)
    row = {"output": name, "max_abs": diff, "ref_absmax": scale, "rel": rel, "tolerance": tolerance,
           "ok": rel <= tolerance}
    if agreement is not None:
        row["mask_agreement"] = float(np.mean((got > 0) == (ref > 0))) if got.size else 1.0
        row["ok"] = row["ok"] and row["mask_agreement"] >= agreement
    return row


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


def make_cases(bundle, images: List[str]) -> List[dict]:
    """Pre-processed inputs for each image: image tensor, normalised prompt boxes, the vocabulary embeddings."""
    from rmpsam_edge.preprocess import load_image, normalize_boxes, points_to_boxes, preprocess
    spec = bundle.spec()
    cases = []
    for path in images:
        x, meta = preprocess(load_image(path), spec)
        h, w = meta.img_shape[:2]
        g = (np.arange(GRID) + 0.5) / GRID
        points = np.stack(np.meshgrid(g * w, g * h), -1).reshape(-1, 2)
        cases.append({"name": path, "image": x, "boxes": normalize_boxes(points_to_boxes(points), meta.img_shape),
                      "class_embed": spec.class_embed, "meta": meta})
    return cases


def run_cases(runner, cases: List[dict], features: Optional[List[np.ndarray]] = None) -> List[Dict[str, np.ndarray]]:
    """{output name: array} per case. ``features``: feed the decoders these (the reference's) instead of the
    runner's own encoder output."""
    outs = []
    for i, case in enumerate(cases):
        own = runner.encode(case["image"])
        feats = own if features is None else features[i]
        masks, iou = runner.decode_prompts(feats, case["boxes"])
        out = {"features": own, "prompt_mask_logits": masks, "prompt_iou": iou}
        if case["class_embed"] is not None:
            cls, obj_masks, _ = runner.decode_objects(feats, case["class_embed"])
            out["class_logits"], out["object_mask_logits"] = cls, obj_masks
        outs.append(out)
    return outs


def cases_from(inputs, prompts, class_embed=None) -> List[dict]:
    """Cases from pre-processed ``inputs`` [(x, meta)] and ``prompts`` [(normalised boxes (N, 4), kinds)]."""
    return [{"name": str(i), "image": x, "boxes": boxes, "class_embed": class_embed, "meta": meta}
            for i, ((x, meta), (boxes, _)) in enumerate(zip(inputs, prompts))]


def _same_size_meta(meta):
    """The image's meta with ori_shape = img_shape: masks compared at the resized-image resolution."""
    from rmpsam_edge.preprocess import ImageMeta
    return ImageMeta(meta.img_shape, meta.img_shape, meta.pad_shape, (1.0, 1.0))


def image_outputs(out: Dict[str, np.ndarray], meta, num_things: int) -> dict:
    """What the fidelity metrics compare, from one runner's named outputs for one image (``run_cases``)."""
    from rmpsam_edge.postprocess import panoptic_fusion, panoptic_keep, upsample_masks
    small = _same_size_meta(meta)
    res = {"features": out["features"], "prompt_masks": upsample_masks(out["prompt_mask_logits"], small, binary=True),
           "iou": np.asarray(out["prompt_iou"], dtype=np.float32).ravel()}
    if "class_logits" in out:
        cls, masks = out["class_logits"][0], out["object_mask_logits"][0]
        res["query_labels"] = np.asarray(cls).argmax(axis=-1)
        res["query_masks"] = np.asarray(masks) > 0
        keep, _, _ = panoptic_keep(cls)  # fusion depends on the kept queries only: upsample just those
        res["panoptic"] = panoptic_fusion(cls[keep], upsample_masks(masks[keep], small), num_things)
    return res


def metrics(pairs: Iterable[tuple], num_things: int = 0) -> dict:
    """The one metric set over ``pairs``: (reference outputs, test outputs, ImageMeta) per image, the outputs
    named as ``run_cases`` names them (an iterator is consumed one image at a time); the panoptic and query
    metrics when the outputs hold the object decoder's. "fp32" = the reference."""
    cos, maxabs, maxrel, ious, iou_err, pan, qcls, qmask, areas = [], [], [], [], [], [], [], [], []
    for ra, rb, meta in pairs:
        a, b = (image_outputs(r, meta, num_things) for r in (ra, rb))
        fm = feature_metrics(a["features"], b["features"])
        cos.append(fm["cosine"])
        maxabs.append(fm["max_abs_error"])
        maxrel.append(fm["max_abs_error_rel"])
        ious.append(mask_ious(a["prompt_masks"], b["prompt_masks"]))
        areas.append(a["prompt_masks"].reshape(len(a["prompt_masks"]), -1).mean(axis=1))
        iou_err.append(np.abs(a["iou"] - b["iou"]))
        if "panoptic" in a:
            qcls.append(float(np.mean(a["query_labels"] == b["query_labels"])))
            qmask.append(float(np.mean(a["query_masks"] == b["query_masks"])))
            pan.append(panoptic_metrics(a["panoptic"][0], b["panoptic"][0], a["panoptic"][1], b["panoptic"][1]))
    all_ious = np.concatenate(ious) if ious else np.zeros(0)
    large = np.concatenate(areas) >= LARGE_MASK if areas else np.zeros(0, bool)
    out = {
        "images": len(cos),
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


def compare(reference: List[dict], outputs: List[dict], cases: List[dict], num_things: int = 0,
            precision: str = "fp32") -> dict:
    """The doctor's check: ``metrics`` of ``outputs`` against ``reference`` (``run_cases`` on ``cases``), judged
    by THRESHOLDS' column for ``precision``; feature cosine, prompt-mask IoU and query class agreement gate.
    -> the metrics + "verdicts", "failures" (gating ones), "ok"."""
    report = metrics(zip(reference, outputs, [c["meta"] for c in cases]), num_things)
    report["verdicts"] = verdicts(report, default_thresholds(precision), ["feature_cosine"] +
                                  gate_metrics(["object_decoder"]))
    report["failures"] = failed(report["verdicts"])
    report["ok"] = not report["failures"]
    return report


def compare_runners(ref, test, inputs, prompts, class_embed=None, num_things: int = 0,
                    progress_desc: str = "fidelity", stream=None) -> dict:
    """ref / test: runners (``encode``, ``decode_prompts``, ``decode_objects``); inputs: [(x, meta)];
    prompts: [(normalised boxes (N, 4), kinds)] per input. Each runner runs end to end on every image, one
    image at a time. Returns ``metrics``."""
    from rmpsam_edge.progress import progress
    cases = cases_from(inputs, prompts, class_embed)
    return metrics(((run_cases(ref, [c])[0], run_cases(test, [c])[0], c["meta"])
                    for c in progress(cases, len(cases), progress_desc, stream)), num_things)
