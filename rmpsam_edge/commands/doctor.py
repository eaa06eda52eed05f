"""``rmpsam-edge doctor``: what this machine can run, checked for real, in one report to paste into an issue.

1. Platform: Jetson L4T/JetPack, module, nvpmodel, jetson_clocks, RAM/swap; GPU name, memory, SM count, driver,
   CUDA (``runtime/platform_facts.py``); the install traps, each with its fix (an OpenCV without GStreamer on a
   Jetson, numpy 2 beside JetPack's modules, an onnxruntime without GPU providers on an NVIDIA machine, a pycuda
   that cannot reach the driver), and one ``ready`` line.
2. Every backend of the registry (``runtime/backends.py``): version and devices, or why it cannot run here
   (with ``--device``: on that device; the checks below then run only there).
3. On a bundle (``--model``, default the shipped demo bundle): whether the installed TensorRT's ONNX importer takes
   its graphs (every version when none is installed; ``runtime/tensorrt/importers.py``); the shipped images through
   every usable backend (TensorRT: builds or loads FP16 engines unless ``--precision``), each compared with ONNX
   Runtime CPU FP32 by the one comparator (``runtime/compare.py``: its metric set and threshold table; feature
   cosine, prompt-mask IoU and query class agreement gate) and timed (encoder, prompt decoder, object decoder p50).
Writes ``--json`` (default doctor.json; an existing file is overwritten only with ``--force``), prints a Markdown block.
Exit 0: every usable backend agrees; 1: one disagrees beyond tolerance or fails to run; 2: bad input.
"""
import glob
import json
import os
import sys

from rmpsam_edge.errors import UserError

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")


def add_arguments(p):
    from rmpsam_edge.commands.common_args import DEVICE_HELP, add_device, add_force, add_model, add_runs, add_threads
    add_model(p, help_text="bundle to check (default: the shipped demo bundle)")
    add_device(p, help_text="check only this device, e.g. cpu: " + DEVICE_HELP + " (default: each backend's)")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], help="TensorRT engine precision (default fp16)")
    add_runs(p, key="check_runs", help_text="timed calls per graph (p50)")
    add_threads(p, help_text="CPU threads for the CPU backends")
    p.add_argument("--json", default="doctor.json", help="JSON report path (default: doctor.json)")
    add_force(p, "an existing --json file")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def check_backends(registry, device=None) -> list:
    rows = []
    for row in registry.BACKENDS:
        try:
            ok, detail = registry.probe(row, device)
        except Exception as exc:  # noqa: BLE001 - a probe that crashes is a finding, not a crash
            ok, detail = False, "probe failed: %s" % _first_line(exc)
        rows.append({"backend": row.name, "usable": bool(ok), "detail": detail,
                     "install": None if ok else registry.install_hint(row)})
    return rows


def install_facts() -> dict:
    """What the traps are read from: numpy's version, OpenCV's (and whether it has GStreamer), ONNX Runtime's
    version and providers; None where the package is missing."""
    import numpy
    facts = {"numpy": numpy.__version__, "opencv": None, "opencv_gstreamer": None, "onnxruntime": None,
             "ort_providers": None}
    try:
        import cv2
        from rmpsam_edge.demo.sources import has_gstreamer
        facts.update(opencv=cv2.__version__, opencv_gstreamer=has_gstreamer())
    except ImportError:
        pass
    try:
        import onnxruntime
        facts.update(onnxruntime=onnxruntime.__version__, ort_providers=list(onnxruntime.get_available_providers()))
    except ImportError:
        pass
    return facts


def find_traps(platform: dict, facts: dict) -> list:
    """[{'trap': what is wrong, 'fix': the command}] for the install traps this machine is in."""
    from rmpsam_edge.runtime.platform_facts import NO_OPENCV, OPENCV_RESTORE
    jetson, gpu, out = bool(platform["jetson"]["l4t"]), platform["gpu"], []
    if jetson and facts["opencv"] is None:
        out.append({"trap": "no OpenCV", "fix": NO_OPENCV})
    if jetson and facts["opencv"] and facts["opencv_gstreamer"] is False:
        out.append({"trap": "OpenCV %s has no GStreamer (a pip wheel in front of JetPack's): csi:// cameras do not "
                            "open" % facts["opencv"], "fix": OPENCV_RESTORE})
    if jetson and int(facts["numpy"].split(".")[0]) >= 2:
        out.append({"trap": "numpy %s beside JetPack's modules, which are built against numpy 1.x (\"compiled using "
                            "NumPy 1.x\" on import)" % facts["numpy"],
                    "fix": "pip uninstall -y numpy in this venv: JetPack's numpy 1.x shows through "
                           "--system-site-packages (docs/jetson.md)"})
    providers = facts["ort_providers"]
    if (jetson or gpu["name"]) and providers is not None and "CUDAExecutionProvider" not in providers:
        wheel = ("the onnxruntime-gpu wheel for your JetPack from NVIDIA's Jetson index (docs/jetson.md)" if jetson
                 else "onnxruntime-gpu")
        out.append({"trap": "onnxruntime %s has no GPU provider (only %s) on a machine with an NVIDIA GPU"
                            % (facts["onnxruntime"], ", ".join(providers)),
                    "fix": "pip uninstall -y onnxruntime onnxruntime-gpu; pip install %s" % wheel})
    why = gpu.get("why_not") or ""
    if why.startswith("pycuda: ") or ("pycuda not importable" in why and "libcuda" in why):
        out.append({"trap": "pycuda cannot reach the driver (%s)" % why,
                    "fix": "check the driver (nvidia-smi; on a Jetson: your user in the 'video' group), then rebuild "
                           "pycuda against this CUDA: pip install --force-reinstall --no-cache-dir pycuda "
                           "(nvcc on PATH)"})
    return out


def ready_line(platform: dict, traps: list) -> str:
    """'yes', or 'no: ...' naming what to do first (the traps, then pinned clocks on a Jetson)."""
    if traps:
        return "no: %d install trap%s, fixes below" % (len(traps), "" if len(traps) == 1 else "s")
    clocks = platform["jetson"]["jetson_clocks"]
    if platform["jetson"]["l4t"] and clocks != "on":
        return ("yes to run; to benchmark first sudo nvpmodel -m 0 && sudo jetson_clocks (jetson_clocks: %s)"
                % clocks)
    return "yes"


def _time(runner, case, runs):
    from rmpsam_edge.timing import time_graphs
    stats = time_graphs({"r": runner}, case["image"], case["boxes"][:1], case["class_embed"], runs=runs, warmup=1)
    return {g: round(st.p50, 2) for g, st in stats["r"].items()}


def check_bundle(registry, bundle, backends, precision, runs, threads, device=None) -> list:
    from rmpsam_edge.runtime import compare
    images = sorted(glob.glob(os.path.join(ASSETS, "images", "*.jpg")))
    cases = compare.make_cases(bundle, images)
    ort = registry.get("onnxruntime")
    from rmpsam_edge.runtime.bundle_runner import BackendUnavailable
    try:
        ref_runner = registry.create(ort, bundle, device="cpu", threads=threads)
    except BackendUnavailable as exc:
        raise UserError("the reference (ONNX Runtime CPU) cannot run %s: %s; check an ONNX bundle (the FP32 export)"
                        % (bundle.path, exc))
    ref = compare.run_cases(ref_runner, cases)
    feats = [r["features"] for r in ref]
    results = [{"backend": "onnxruntime (CPU FP32, the reference)", "describe": ref_runner.describe(),
                "timing_p50_ms": _time(ref_runner, cases[0], runs), "ok": True, "reference": True}]
    ref_runner.deactivate()
    for entry in backends:
        if not entry["usable"]:
            continue
        row = registry.get(entry["backend"])
        extra = {"precision": precision or "fp16"} if row.name == "tensorrt" else {}
        res = {"backend": row.name, "precision": extra.get("precision", bundle.manifest.get("precision", "fp32"))}
        try:
            runner = registry.create(row, bundle, device=device, threads=threads, **extra)
            try:
                res["describe"] = runner.describe()
                res["compare"] = compare.compare(ref, compare.run_cases(runner, cases, features=feats), cases,
                                                 bundle.spec().num_things, res["precision"])
                res["timing_p50_ms"] = _time(runner, cases[0], runs)
            finally:
                runner.deactivate()
            res["ok"] = res["compare"]["ok"]
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - a usable backend that cannot run the bundle is a finding
            res.update(ok=False, error=_first_line(exc))
        results.append(res)
    return results


def tensorrt_import(bundle) -> list:
    """Which TensorRT's ONNX importer takes the bundle: one line for the installed TensorRT, else one per version."""
    import importlib
    from rmpsam_edge.runtime.tensorrt import importers
    try:
        key = importers.version_key(importlib.import_module("tensorrt").__version__)
    except Exception:  # noqa: BLE001 - not installed (or its libraries are missing): every version is reported
        key = None
    return importers.verdicts(bundle, [key] if key else importers.VERSIONS)


def _fmt(v, pattern="%.4f"):
    return "-" if v is None else pattern % v


def markdown(report) -> str:
    plat, gpu, jet = report["platform"], report["platform"]["gpu"], report["platform"]["jetson"]
    lines = ["### rmpsam-edge doctor", "",
             "- platform: %s %s, Python %s, %s CPUs" % (plat["system"], plat["machine"], plat["python"],
                                                       plat["cpu_count"]),
             "- Jetson: %s" % ("L4T %s (JetPack %s), %s, nvpmodel: %s, jetson_clocks: %s, RAM %s MB, swap %s MB"
                               % (jet["l4t"], jet["jetpack"] or "?", jet["module"], jet["nvpmodel"],
                                  jet["jetson_clocks"], jet["ram_mb"], jet["swap_mb"]) if jet["l4t"] else "no"),
             "- GPU: %s" % ("%s, %s MB, %s SMs, sm %s, driver %s, CUDA %s" % (
                 gpu["name"], gpu["memory_mb"], gpu["sm_count"], gpu["compute_capability"], gpu["driver"],
                 gpu["cuda"]) if gpu["name"] else gpu["why_not"]),
             "- bundle: %s%s" % (report["bundle"], ", --device %s" % report["device"] if report.get("device") else ""),
             "- ready: %s" % report["ready"]] + ["- trap: %s; fix: %s" % (t["trap"], t["fix"]) for t in report["traps"]]
    lines += ["- %s" % line for line in report.get("tensorrt_import", [])]
    lines += ["", "| backend | usable | version, devices / why not |", "|---|---|---|"]
    for b in report["backends"]:
        lines.append("| %s | %s | %s |" % (b["backend"], "yes" if b["usable"] else "**no**",
                                           b["detail"] + ("" if b["usable"] else " (install: %s)" % b["install"])))
    lines += ["", "| backend | feature cosine | prompt-mask IoU | query class agreement | encoder ms | prompt ms | "
              "objects ms | verdict |", "|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        c, t = r.get("compare") or {}, r.get("timing_p50_ms") or {}
        verdict = "reference" if r.get("reference") else ("ok" if r["ok"] else "**FAIL**: %s" % (
            r.get("error") or "; ".join(c.get("failures", []))))
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["backend"], _fmt(c.get("feature_cosine"), "%.5f"), _fmt(c.get("mask_iou_mean")),
            _fmt(c.get("query_class_agreement")), _fmt(t.get("encoder"), "%.1f"),
            _fmt(t.get("prompt_decoder_1"), "%.1f"), _fmt(t.get("object_decoder"), "%.1f"), verdict))
    from rmpsam_edge.runtime.compare import default_thresholds
    fp32 = default_thresholds("fp32")
    lines += ["", "gating (FP32/FP16; INT8 bundles: the looser column of runtime/compare.py): " +
              ", ".join("%s >= %s" % (k, fp32[k][1]) for k in ("feature_cosine", "mask_iou_mean",
                                                            "query_class_agreement")) +
              "; p50 of %d runs on the first image" % report["runs"]]
    return "\n".join(lines)


def run(args) -> int:
    from rmpsam_edge.atomic import atomic_file, check_target
    from rmpsam_edge.weights import SHIPPED_BUNDLE
    from rmpsam_edge.runtime import backends as registry
    from rmpsam_edge.runtime import platform_facts
    from rmpsam_edge.runtime.bundle import Bundle
    if args.runs < 1:
        raise UserError("--runs must be >= 1")
    check_target(args.json, args.force)
    bundle = Bundle.open(args.model or SHIPPED_BUNDLE)
    report = {"platform": platform_facts.collect(), "bundle": os.path.abspath(bundle.path), "runs": args.runs,
              "device": args.device}
    report["install"] = install_facts()
    report["traps"] = find_traps(report["platform"], report["install"])
    report["ready"] = ready_line(report["platform"], report["traps"])
    for t in report["traps"]:
        sys.stderr.write("doctor: %s; fix: %s\n" % (t["trap"], t["fix"]))
    report["backends"] = check_backends(registry, args.device)
    report["tensorrt_import"] = tensorrt_import(bundle)
    for b in report["backends"]:
        if not b["usable"]:
            sys.stderr.write("doctor: %s cannot run here: %s\n" % (b["backend"], b["detail"]))
    if registry.import_module(registry.get("onnxruntime"))[0] is None:
        raise UserError("the reference backend ONNX Runtime (CPU) is not installed: pip install onnxruntime")
    if not any(b["usable"] for b in report["backends"]):
        raise UserError("no backend can run on --device %s here (%s)" % (
            args.device, "; ".join(b["detail"] for b in report["backends"])))
    report["results"] = check_bundle(registry, bundle, report["backends"], args.precision, args.runs, args.threads,
                                     args.device)
    report["ok"] = all(r["ok"] for r in report["results"])
    with atomic_file(args.json, force=args.force) as tmp:
        with open(tmp, "w") as f:
            json.dump(report, f, indent=2, sort_keys=True, default=str)
    sys.stdout.write(markdown(report) + "\n\nreport: %s\n" % args.json)
    return 0 if report["ok"] else 1
