"""The fidelity tables of docs/quantize.md: the headline numbers of quantized bundles' fidelity.json reports,
gathered into one results file (no timing: speed comes from ``rmpsam-edge benchmark --preset quantize``).

    python -m rmpsam_edge.quantize.bench --collect bundles/r18_demo_int8 bundles/r18_demo_fp16 \\
        --out benchmarks/results/quantize_r18_demo_weights.json
"""
import argparse
import json
import os
import sys
import time


def _fidelity(path):
    p = os.path.join(path, "fidelity.json")
    if not os.path.isfile(p):
        return None
    with open(p) as f:
        rep = json.load(f)
    keep = ("feature_cosine", "feature_max_abs_error_rel", "mask_iou_mean", "mask_iou_worst_decile",
            "mask_iou_mean_large", "prompts_large",
            "iou_score_abs_error", "query_class_agreement", "query_mask_sign_agreement", "panoptic_class_agreement",
            "matched_segment_iou", "images", "prompts", "segments_fp32")
    return {"metrics": {k: rep["metrics"][k] for k in keep if k in rep["metrics"]}, "pass": rep["pass"],
            "graphs": {g: v["precision"] for g, v in rep["quantization"]["graphs"].items()},
            "calibration_images": (rep["quantization"].get("calibration") or {}).get("count"),
            "backend": rep["quantization"]["backend"], "source_bundle": rep["quantization"]["source_bundle"],
            "weights_note": rep.get("weights_note")}


def collect(bundles, out=None) -> dict:
    """--collect: the fidelity headline numbers of already quantized bundles, no timing."""
    result = {"command": "python -m rmpsam_edge.quantize.bench --collect " + " ".join(bundles) +
              (" --out %s" % out if out else ""),
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "fidelity": {os.path.basename(os.path.normpath(b)): _fidelity(b) for b in bundles}}
    for b in bundles:
        with open(os.path.join(b, "fidelity.json")) as f:
            rep = json.load(f)
        result["fidelity"][os.path.basename(os.path.normpath(b))]["latency_ms"] = {
            k: {p: round(v, 2) for p, v in rep["latency"][k].items() if p != "cpu_ms"}
            for k in ("fp32", "quantized")}
        result["fidelity"][os.path.basename(os.path.normpath(b))]["latency_setting"] = rep["latency"]["setting"]
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m rmpsam_edge.quantize.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--collect", nargs="+", required=True, metavar="BUNDLE", help="quantized bundles whose "
                    "fidelity.json headlines to gather")
    ap.add_argument("--out", help="write the JSON here")
    args = ap.parse_args(argv)
    res = collect(args.collect, args.out)
    text = json.dumps(res, indent=2, sort_keys=True)
    if args.out:
        from rmpsam_edge.atomic import atomic_file
        with atomic_file(args.out) as tmp:
            with open(tmp, "w") as f:
                f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
