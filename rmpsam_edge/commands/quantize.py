"""``rmpsam-edge quantize``: make an FP16 or INT8 bundle from an FP32 bundle, with a fidelity report.

    rmpsam-edge quantize --model bundles/r18 --precision int8 --backend ort --calib my_frames/ --out bundles/r18-int8
    rmpsam-edge quantize --model bundles/r18 --precision int8 --backend openvino --calib street.mp4 --out bundles/r18-ov-int8
    rmpsam-edge quantize --model bundles/r18 --precision int8 --target tensorrt --out bundles/r18-trt-int8
    rmpsam-edge quantize --model bundles/r18 --precision fp16 --out bundles/r18-fp16
    rmpsam-edge quantize --model bundles/r18 --precision bf16 --backend openvino --out bundles/r18-bf16
    rmpsam-edge quantize --model bundles/r18 --precision int8 --rest bf16 --backend openvino --out bundles/r18-int8-bf16
"""
from rmpsam_edge.quantize.calibration import DEFAULT_HOLDOUT
from rmpsam_edge.quantize.ort_quant import METHODS, TARGETS


def add_arguments(p) -> None:
    from rmpsam_edge.commands.common_args import (DEVICE_HELP, IMGSZ_HELP, add_backend, add_device, add_force,
                                                  add_model, add_runs, add_threads)
    add_model(p, required=True, help_text="FP32 model bundle folder (from rmpsam-edge export)")
    p.add_argument("--out", required=True, help="new bundle folder to write (refused if it exists, unless --force)")
    p.add_argument("--precision", choices=("int8", "fp16", "bf16"), default="int8", help="target precision (default "
                   "int8); bf16: --backend openvino on a CPU with AVX512-BF16 or AMX, graphs unchanged, run with "
                   "OpenVINO's bf16 inference precision")
    p.add_argument("--rest", choices=("fp32", "bf16"), default="fp32", help="with --precision int8 --backend "
                   "openvino: precision of everything not INT8 (the decoders and the encoder's non-quantized ops); "
                   "bf16 makes an int8+bf16 bundle (default fp32)")
    add_backend(p, help_text="auto (default: openvino for bf16, else onnxruntime), onnxruntime (alias ort; static QDQ, output "
                "loads in ORT and OpenVINO) or openvino (NNCF, writes OpenVINO IR); fidelity and latency are "
                "measured on it")
    p.add_argument("--target", choices=("auto",) + TARGETS, default="auto", help="where the INT8 bundle will run, "
                   "which picks its recipe: auto (default: this machine's CPU), x86-vnni, x86 (no VNNI: 7-bit "
                   "weights), arm, tensorrt (symmetric int8 Q/DQ for TensorRT; fidelity still measured on ONNX "
                   "Runtime's CPU); the manifest records the recipe and why")
    p.add_argument("--calib", default=None, help="calibration images: a folder, a video (frames sampled evenly) or "
                   "a quoted glob; default: the small sample set shipped with rmpsam_edge (with a warning)")
    p.add_argument("--calib-count", type=int, default=None, help="calibration images to use (error if the source "
                   "has fewer); default: all, up to 64")
    p.add_argument("--holdout", type=int, default=DEFAULT_HOLDOUT, help="images held out of calibration for the "
                   "fidelity report (default %d)" % DEFAULT_HOLDOUT)
    p.add_argument("--calib-method", choices=METHODS, default="minmax", help="ONNX Runtime range method "
                   "(default minmax)")
    p.add_argument("--quantize-decoders", action="store_true", help="INT8 also for the decoders (off by default: "
                   "they lose fidelity; the fidelity gate decides)")
    p.add_argument("--min-mask-iou", type=float, default=None, help="threshold on the mean prompt-mask IoU vs FP32 "
                   "(default 0.95 for int8, 0.99 for fp16)")
    p.add_argument("--fail-below", action="store_true", help="exit with status 3 when fidelity is below the gate: "
                   "prompt-mask IoU < --min-mask-iou (and, with INT8 decoders, object-query class agreement < 0.9); "
                   "the bundle is still written")
    p.add_argument("--auto-fallback", action="store_true", help="when INT8 is below threshold, keep the fewest "
                   "most sensitive layers in FP32 until it passes")
    p.add_argument("--imgsz", metavar="PX|official", help="input size for calibration and the report: " +
                   IMGSZ_HELP + " (default: the bundle's input size)")
    add_device(p, help_text="device of the reference, calibration and fidelity runs: " + DEVICE_HELP + " (default: CPU)")
    add_threads(p, help_text="inference threads for fidelity/latency (default: backend default)")
    add_runs(p, help_text="timed runs per graph for the latency table")
    add_force(p, "an existing --out bundle")


def run(args) -> int:
    from rmpsam_edge.commands.common_args import input_size

    from rmpsam_edge.quantize.pipeline import Options, quantize_bundle
    imgsz = None if args.imgsz is None else (input_size(args.imgsz) or "official")
    backend = args.backend
    if backend == "auto":  # bf16 exists only on OpenVINO's CPU plugin
        backend = "openvino" if "bf16" in (args.precision, args.rest) else "onnxruntime"
    opts = Options(model=args.model, out=args.out, precision=args.precision, backend=backend, calib=args.calib,
                   calib_count=args.calib_count, holdout=args.holdout, calib_method=args.calib_method,
                   quantize_decoders=args.quantize_decoders, min_mask_iou=args.min_mask_iou,
                   fail_below=args.fail_below, auto_fallback=args.auto_fallback, force=args.force,
                   threads=args.threads, runs=args.runs, imgsz=imgsz, rest=args.rest, device=args.device,
                   argv=getattr(args, "_argv", None), target=args.target)
    return quantize_bundle(opts)
