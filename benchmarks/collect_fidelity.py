"""``--preset collect-fidelity``: the headline numbers of quantized bundles' fidelity.json reports, gathered into
one results file (the fidelity tables of docs/quantize.md). It times nothing: the latencies are the ones each
quantize report recorded; speed across backends comes from ``rmpsam-edge benchmark --preset quantize``.

    rmpsam-edge benchmark --preset collect-fidelity --from bundles/r18_demo_int8 bundles/r18_demo_fp16 \\
        --json benchmarks/results/quantize_r18_demo_weights.json
"""
import json
import os
import time

KEEP = ("feature_cosine", "feature_max_abs_error_rel", "mask_iou_mean", "mask_iou_worst_decile",
        "mask_iou_mean_large", "prompts_large", "iou_score_abs_error", "query_class_agreement",
        "query_mask_sign_agreement", "panoptic_class_agreement", "matched_segment_iou", "images", "prompts",
        "segments_fp32")


def headline(rep: dict) -> dict:
    """One quantize report (fidelity.json) -> its metrics, pass, graph precisions, backend and recorded latency."""
    q = rep["quantization"]
    return {"metrics": {k: rep["metrics"][k] for k in KEEP if k in rep["metrics"]}, "pass": rep["pass"],
            "graphs": {g: v["precision"] for g, v in q["graphs"].items()},
            "calibration_images": (q.get("calibration") or {}).get("count"),
            "backend": q["backend"], "source_bundle": q["source_bundle"], "weights_note": rep.get("weights_note"),
            "latency_ms": {k: {p: round(v, 2) for p, v in rep["latency"][k].items() if p != "cpu_ms"}
                           for k in ("fp32", "quantized")},
            "latency_setting": rep["latency"]["setting"]}


def run(args):
    """-> (report, Markdown) for the quantized bundles given with ``--from``."""
    from rmpsam_edge.errors import UserError
    if not args.inputs:
        raise UserError("--preset collect-fidelity reads quantized bundles: pass --from BUNDLE [BUNDLE ...]")
    fidelity = {}
    for bundle in args.inputs:
        path = os.path.join(bundle, "fidelity.json")
        if not os.path.isfile(path):
            raise UserError("--from %s: no fidelity.json there; give bundles made by rmpsam-edge quantize" % bundle)
        with open(path) as f:
            fidelity[os.path.basename(os.path.normpath(bundle))] = headline(json.load(f))
    report = {"command": " ".join(args.command_argv), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "fidelity": fidelity}
    lines = ["# Quantize fidelity (held-out prompt masks vs FP32)", "", "Command: `%s`" % report["command"], "",
             "| bundle | backend | graphs | IoU mean | worst decile | pass |", "|---|---|---|---|---|---|"]
    for name, h in fidelity.items():
        m = h["metrics"]
        lines.append("| %s | %s | %s | %s | %s | %s |" % (
            name, h["backend"], ", ".join("%s %s" % kv for kv in sorted(h["graphs"].items())),
            "%.4f" % m["mask_iou_mean"] if "mask_iou_mean" in m else "-",
            "%.4f" % m["mask_iou_worst_decile"] if "mask_iou_worst_decile" in m else "-", "yes" if h["pass"] else "no"))
    return report, "\n".join(lines)
