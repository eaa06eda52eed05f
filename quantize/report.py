"""fidelity.json and fidelity.md: what was quantized, how, and how close it stays to FP32."""
import json
import os

LABELS = {
    "feature_cosine": "encoder feature cosine (worst image)",
    "feature_max_abs_error": "encoder feature max abs diff",
    "feature_max_abs_error_rel": "encoder feature max abs diff / max abs FP32",
    "mask_iou_mean": "prompt-mask IoU, mean",
    "mask_iou_worst_decile": "prompt-mask IoU, worst decile (mean of lowest 10 %)",
    "mask_iou_mean_large": "prompt-mask IoU, mean over masks >= 1 % of the image",
    "iou_score_abs_error": "IoU-score abs error, mean",
    "query_class_agreement": "object queries: argmax class agreement",
    "query_mask_sign_agreement": "object queries: mask-logit sign agreement",
    "panoptic_class_agreement": "panoptic class-map pixel agreement",
    "panoptic_segment_agreement": "panoptic segment-map pixel agreement",
    "matched_segment_iou": "matched segment IoU, mean",
}


def write_json(path: str, report: dict) -> None:
    with open(path, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True, default=_plain)
        f.write("\n")


def _plain(v):
    if hasattr(v, "item"):
        return v.item()
    raise TypeError("not JSON serialisable: %r" % (v,))


def _fmt(v) -> str:
    if isinstance(v, float):
        return "%.4f" % v if abs(v) >= 1e-3 or v == 0 else "%.2e" % v
    return str(v)


def markdown(report: dict) -> str:
    q = report["quantization"]
    lines = ["# Fidelity report: %s vs FP32" % q["precision"].upper(), ""]
    note = report.get("weights_note")
    if note and "random" in note:
        lines += ["**%s: these numbers show the pipeline is sane, they are not a quality claim.**" % note, ""]
    elif note:
        lines += ["Weights: %s." % note, ""]
    lines += ["- bundle: `%s` (from `%s`)" % (report["bundle"], q["source_bundle"]),
              "- backend: %s; quantized graphs: %s" % (q["backend"], ", ".join(
                  "%s (%s)" % (g, v["precision"]) for g, v in sorted(q["graphs"].items()))),
              "- calibration: %s" % _calib_line(q.get("calibration")),
              "- recipe: %s" % _recipe_line(q.get("recipe")),
              "- held-out images (never used for calibration): %d, prompts compared: %d (%s)"
              % (report["metrics"]["images"], report["metrics"]["prompts"], report.get("prompts_note", "")),
              "- verdict (gate: %s): **%s**" % (", ".join(report["gate"]), "PASS" if report["pass"] else
                                                "BELOW THRESHOLD: " + "; ".join(report["failed"])),
              "", "| metric | value | threshold | verdict |", "|---|---|---|---|"]
    verdicts = report["verdicts"]
    for key, label in LABELS.items():
        if key not in report["metrics"]:
            continue
        v = verdicts.get(key)
        thr = "%s %s" % (v["direction"], _fmt(v["threshold"])) if v else "-"
        ok = ("pass" if v["pass"] else "**fail**") + (" (gate)" if v["gate"] else "") if v else "-"
        lines.append("| %s | %s | %s | %s |" % (label, _fmt(report["metrics"][key]), thr, ok))
    m = report["metrics"]
    if "prompts_large" in m:
        lines += ["", "Prompt masks covering >= 1 %% of the image in FP32: %d of %d." % (m["prompts_large"], m["prompts"])]
    if "segments_fp32" in m:
        lines += ["", "Panoptic segments: FP32 %d, quantized %d, matched %d (IoU > 0.5)."
                  % (m["segments_fp32"], m["segments_quantized"], m["segments_matched"])]
        if m["segments_fp32"] == 0:
            lines.append("No query passes the panoptic score threshold in FP32 (maps are all void), so the panoptic "
                         "agreements are trivially 1; the object-query rows carry the information.")
    lat = report.get("latency")
    if lat:
        lines += ["", "## Size and latency (same run, %s)" % lat["setting"], "",
                  "| | FP32 | %s | ratio |" % q["precision"].upper(), "|---|---|---|---|"]
        lines.append("| size on disk (MB) | %.1f | %.1f | %.2fx smaller |" % (
            report["size_mb"]["fp32"], report["size_mb"]["quantized"],
            report["size_mb"]["fp32"] / max(report["size_mb"]["quantized"], 1e-9)))
        for part in ("encoder", "prompt_decoder_1", "object_decoder", "encoder_plus_prompt_1"):
            if part in lat["fp32"]:
                a, b = lat["fp32"][part], lat["quantized"][part]
                lines.append("| %s (ms) | %.1f | %.1f | %.2fx |" % (part, a, b, a / max(b, 1e-9)))
        if "all_int8" in lat:
            lines += ["", "Cost of the auto-fallback (same run): all-INT8 (below threshold) vs the written bundle, ms:",
                      "", "| | all INT8 | written | slower by |", "|---|---|---|---|"]
            for part in ("encoder", "prompt_decoder_1", "object_decoder"):
                if part in lat["all_int8"]:
                    a, b = lat["all_int8"][part], lat["quantized"][part]
                    lines.append("| %s | %.1f | %.1f | %.2fx |" % (part, a, b, b / max(a, 1e-9)))
    fb = report.get("auto_fallback")
    if fb:
        lines += ["", "## Auto-fallback", "", fb["summary"], ""]
        for name in fb.get("kept_fp32", []):
            lines.append("- `%s`" % name)
    kept = {g: v.get("kept_fp32", []) for g, v in q["graphs"].items()}
    lines += ["", "## Kept in FP32 by the sensitive-layer patterns", ""]
    for g, names in sorted(kept.items()):
        lines.append("- %s: %d node(s)%s" % (g, len(names), (": " + ", ".join("`%s`" % n for n in names[:12]) +
                                                              (" ..." if len(names) > 12 else "")) if names else ""))
    lines += ["", "Metrics are against the FP32 bundle on the same backend, not against ground truth. "
              "Thresholds: docs/quantize.md.", ""]
    return "\n".join(lines)


def _calib_line(c) -> str:
    if not c:
        return "none (FP16 and bf16 need no calibration)"
    return "%d image(s) from %s, method %s%s" % (c["count"], c["source"], c.get("method", "-"),
                                                  " (the shipped samples: a tiny set)" if c.get("default_samples") else "")


def _recipe_line(r) -> str:
    if not r:
        return "none (FP16 and bf16 keep float math)"
    return "`%s` for target %s (%s)" % (r["name"], r["target"], r["why"])


def write(bundle_dir: str, report: dict) -> None:
    write_json(os.path.join(bundle_dir, "fidelity.json"), report)
    with open(os.path.join(bundle_dir, "fidelity.md"), "w") as f:
        f.write(markdown(report))
