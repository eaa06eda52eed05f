"""The quantization benchmark of docs/quantize.md: FP32 vs INT8 on ONNX Runtime and OpenVINO, one process,
interleaved round-robin (every number of one table comes from the same run, so ratios are fair).

    python -m rmpsam_edge.quantize.bench --model bundles/r18 --ort-int8 bundles/r18-int8 \\
        --ov-int8 bundles/r18-ov-int8 --imgsz 512 --threads 2 --runs 20 --out benchmarks/results/quantize_r18_512.json

Times the encoder at size x size, the prompt decoder with 1 prompt and the object decoder (median ms), then
derives the INT8 speed-ups and the encoder + 1-prompt pipelines, and copies each quantized bundle's
fidelity.json headline numbers next to them.
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

from rmpsam_edge.benchmarks.timing import load_average

NANOSAM_MS = {"encoder": 46.0, "decoder": 6.2, "source": "deployment-notes.md §5 (nanosam ResNet18 FP32, "
              "measured on this kind of machine; NOT part of this run)"}


def _runner(path, backend, threads):
    from rmpsam_edge.runtime import load_runner
    r, _, _ = load_runner(path, backend=backend, device="cpu" if backend == "onnxruntime" else None,
                          threads=threads, verbose=False)
    return r


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
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--collect", nargs="+", metavar="BUNDLE", help="only gather the fidelity.json headlines of these "
                    "quantized bundles (no timing)")
    from rmpsam_edge.commands.common_args import DEFAULTS, add_deprecated, add_model, add_runs
    add_model(ap, help_text="the FP32 bundle")
    add_deprecated(ap, "--fp32", "--model", "model")
    ap.add_argument("--ort-int8", help="bundle from quantize --backend ort (QDQ ONNX)")
    ap.add_argument("--ov-int8", help="bundle from quantize --backend openvino (NNCF IR)")
    ap.add_argument("--fp16", help="bundle from quantize --precision fp16 (timed on ORT CPU)")
    ap.add_argument("--ort-int8-dec", help="bundle from quantize --backend ort --quantize-decoders")
    ap.add_argument("--ov-int8-dec", help="bundle from quantize --backend openvino --quantize-decoders")
    ap.add_argument("--imgsz", type=int, default=512, metavar="PX", help="long side in pixels (default 512)")
    add_deprecated(ap, "--size", "--imgsz", "imgsz", type=int)
    ap.add_argument("--threads", type=int, default=2)
    add_runs(ap)
    ap.add_argument("--warmup", type=int, default=DEFAULTS["warmup"])
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    if args.collect:
        res = collect(args.collect, args.out)
        text = json.dumps(res, indent=2, sort_keys=True)
        if args.out:
            with open(args.out, "w") as f:
                f.write(text + "\n")
        print(text)
        return 0
    if not (args.model and args.ort_int8):
        ap.error("--model (FP32) and --ort-int8 are required (or use --collect)")

    from rmpsam_edge.runtime.bundle import Bundle
    from .fidelity import latency
    runners = {"ort_fp32": _runner(args.model, "onnxruntime", args.threads),
               "ort_int8": _runner(args.ort_int8, "onnxruntime", args.threads),
               "ov_fp32": _runner(args.model, "openvino", args.threads),
               "ov_ort_qdq_int8": _runner(args.ort_int8, "openvino", args.threads)}
    if args.ov_int8:
        runners["ov_nncf_int8"] = _runner(args.ov_int8, "openvino", args.threads)
    if args.fp16:
        runners["ort_fp16"] = _runner(args.fp16, "onnxruntime", args.threads)
    if args.ort_int8_dec:
        runners["ort_int8_all_graphs"] = _runner(args.ort_int8_dec, "onnxruntime", args.threads)
    if args.ov_int8_dec:
        runners["ov_nncf_int8_all_graphs"] = _runner(args.ov_int8_dec, "openvino", args.threads)
    load_before = load_average()
    rng = np.random.RandomState(0)
    x = rng.randn(1, 3, args.imgsz, args.imgsz).astype(np.float32)
    one = np.array([[0.5, 0.5, 0.2, 0.2]], np.float32)
    embed = Bundle.open(args.model).class_embed()
    t0 = time.time()
    ms = latency(runners, x, one, embed, runs=args.runs, warmup=args.warmup)
    wall = time.time() - t0

    def derived(get):
        def r(a, b):
            return round(get(a, "encoder") / get(b, "encoder"), 3)
        pipes = {
            "ort_fp32_enc+ort_fp32_dec": get("ort_fp32", "encoder") + get("ort_fp32", "prompt_decoder_1"),
            "ort_int8_enc+ort_fp32_dec": get("ort_int8", "encoder") + get("ort_fp32", "prompt_decoder_1"),
            "ov_fp32_enc+ov_fp32_dec": get("ov_fp32", "encoder") + get("ov_fp32", "prompt_decoder_1"),
            "ov_fp32_enc+ort_fp32_dec": get("ov_fp32", "encoder") + get("ort_fp32", "prompt_decoder_1"),
            "ov_ort_qdq_int8_enc+ort_fp32_dec": get("ov_ort_qdq_int8", "encoder") + get("ort_fp32", "prompt_decoder_1"),
        }
        ratios = {"ort_encoder_fp32_over_int8": r("ort_fp32", "ort_int8"),
                  "ov_encoder_fp32_over_ort_qdq_int8": r("ov_fp32", "ov_ort_qdq_int8")}
        if args.ov_int8:
            pipes["ov_nncf_int8_enc+ov_fp32_dec"] = get("ov_nncf_int8", "encoder") + get("ov_fp32", "prompt_decoder_1")
            pipes["ov_nncf_int8_enc+ort_fp32_dec"] = get("ov_nncf_int8", "encoder") + get("ort_fp32", "prompt_decoder_1")
            ratios["ov_encoder_fp32_over_int8"] = r("ov_fp32", "ov_nncf_int8")
        return ratios, {k: round(v, 2) for k, v in pipes.items()}

    ratios, pipes = derived(lambda n, part: ms[n][part])
    ratios_cpu, pipes_cpu = derived(lambda n, part: ms[n]["cpu_ms"][part])
    nanosam = NANOSAM_MS["encoder"] + NANOSAM_MS["decoder"]
    result = {
        "command": "python -m rmpsam_edge.quantize.bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "setting": "input 1x3x%dx%d, 1 prompt, %d threads, ORT allow_spinning=0, OpenVINO LATENCY hint f32, "
                   "median of %d interleaved round-robin runs after %d warm-up, all runners in one process"
                   % (args.imgsz, args.imgsz, args.threads, args.runs, args.warmup),
        "bundles": {"fp32": args.model, "ort_int8": args.ort_int8, "ov_int8": args.ov_int8, "fp16": args.fp16,
                    "ort_int8_decoders": args.ort_int8_dec, "ov_int8_decoders": args.ov_int8_dec},
        "ms": ms,
        "load_average": {"before": load_before, "after": load_average()},
        "ratios": ratios,
        "ratios_cpu_time": ratios_cpu,
        "targets": {"ov_int8_encoder_at_least_2x": ratios.get("ov_encoder_fp32_over_int8", 0) >= 2.0,
                    "ort_int8_encoder_at_least_1.5x": ratios["ort_encoder_fp32_over_int8"] >= 1.5},
        "pipelines_ms": pipes,
        "pipelines_cpu_ms": pipes_cpu,
        "nanosam_reference_ms": dict(NANOSAM_MS, total=nanosam),
        "best_int8_pipeline_over_nanosam": round(min(v for k, v in pipes.items() if "int8" in k) / nanosam, 3),
        "best_int8_pipeline_cpu_over_nanosam": round(min(v for k, v in pipes_cpu.items() if "int8" in k) / nanosam,
                                                     3),
        "fidelity": {k: _fidelity(p) for k, p in (("ort_int8", args.ort_int8), ("ov_int8", args.ov_int8),
                                                  ("fp16", args.fp16), ("ort_int8_decoders", args.ort_int8_dec),
                                                  ("ov_int8_decoders", args.ov_int8_dec)) if p},
        "wall_s": round(wall, 1),
    }
    text = json.dumps(result, indent=2, sort_keys=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    for rr in runners.values():
        rr.deactivate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
