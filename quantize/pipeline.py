"""``quantize_bundle``: FP32 bundle -> FP16 / INT8 / BF16 bundle + fidelity report (``rmpsam-edge quantize``), in
steps: check options (and the INT8 recipe of ``--target``: ``ort_quant.recipe`` / ``ov_quant.recipe``), open the
source, calibration feeds, quantize the graphs, manifest, fidelity, auto-fallback, latency, report. INT8 by default quantizes the encoder only (INT8 decoders collapsed panoptic classes, and
OpenVINO's INT8 prompt decoder was slower than FP32); ``quantize_decoders`` adds them, through the fidelity gate.
FP16 converts every graph (sensitive parts kept FP32). BF16 (OpenVINO CPUs with AVX512-BF16/AMX) keeps the graph
files and marks them ``"inference_precision": "bf16"``; ``rest="bf16"`` does so next to INT8 (``int8+bf16``).
"""
import os
import shutil
import sys
import tempfile
from typing import Dict, List, Optional

import numpy as np

from rmpsam_edge.atomic import atomic_dir
from rmpsam_edge.errors import UserError
from rmpsam_edge.media import repo_path
from rmpsam_edge.runtime import compare, cpu_features

from . import bundle_out, fidelity, ort_quant, report, sensitivity
from .calibration import DEFAULT_HOLDOUT, load_frames

QUANTIZE_BACKENDS = ("onnxruntime", "openvino")  # registry names (aliases ort, ov) that quantize writes for
DECODERS = ("prompt_decoder", "prompt_decoder_many", "object_decoder")
DECODER_CALIB_MAX = 16  # images whose features calibrate the decoders (each is 256 x h x w floats)
PROMPT_GRID, PROMPT_BOXES = 4, 8
GATE_EXIT = 3  # exit code of --fail-below when fidelity is under the threshold


class Options(object):
    def __init__(self, model, out, precision="int8", backend="onnxruntime", calib=None, calib_count=None,
                 holdout=DEFAULT_HOLDOUT, calib_method="minmax", quantize_decoders=False, min_mask_iou=None,
                 fail_below=False, auto_fallback=False, force=False, threads=None, runs=10, imgsz=None,
                 rest="fp32", device=None, argv=None, target="auto", cpuinfo=None):
        self.__dict__.update(locals())
        del self.__dict__["self"]


def _say(stream, line):
    stream.write(line + "\n")
    stream.flush()


def check_tools(precision: str, backend: str) -> None:
    """One-line error when what this run needs is not installed."""
    need = ["onnx"]
    if backend == "onnxruntime" or precision == "fp16":
        need.append("onnxruntime")
    if backend == "openvino" or precision == "bf16":
        need.append("openvino")
        if precision == "int8":
            need.append("nncf")
    for mod in need:
        try:
            __import__(mod)
        except ImportError:
            raise UserError("%s is not installed but --precision %s --backend %s needs it: pip install %s "
                            "(or pip install 'rmpsam_edge[quantize]')" % (mod, precision, backend, mod))


def label(opts) -> str:
    """The bundle's precision: int8, fp16, bf16 or int8+bf16."""
    return "int8+bf16" if opts.precision == "int8" and getattr(opts, "rest", "fp32") == "bf16" else opts.precision


def check_bf16(backend: str) -> None:
    """One line when bf16 cannot be made or run here (bf16 is an OpenVINO CPU inference precision)."""
    if backend != "openvino":
        raise UserError("bf16 runs on OpenVINO's CPU plugin: add --backend openvino")
    try:
        from rmpsam_edge.runtime import openvino_backend
    except ImportError:
        raise UserError("openvino is not installed but bf16 needs it: pip install openvino")
    ok, detail = openvino_backend.bf16_support()
    if not ok:
        raise UserError("bf16 needs a CPU with AVX512-BF16 or AMX, but %s; use --precision int8 or fp16 "
                        "(or keep the FP32 bundle)" % detail)


def _square(x: np.ndarray) -> np.ndarray:
    s = max(x.shape[2], x.shape[3])
    out = np.zeros((1, 3, s, s), np.float32)
    out[:, :, :x.shape[2], :x.shape[3]] = x
    return out


def _bundle_mb(path: str, manifest: dict) -> float:
    from rmpsam_edge.runtime.bundle import Bundle
    return Bundle(path, manifest).size_mb()


def plan(opts: Options, bundle) -> List[str]:
    """Which graphs get the new precision."""
    names = bundle.graph_names()
    if opts.precision in ("fp16", "bf16"):
        return names
    chosen = ["encoder"]
    if opts.quantize_decoders:
        chosen += [g for g in names if g in DECODERS and (g != "object_decoder" or bundle.class_embed() is not None)]
    return chosen


# ------------------------------------------------------------------------------------------------ the steps
def check_options(opts: Options) -> None:
    """Step 1: one line for a contradictory option; normalises ``backend`` and ``rest``."""
    if opts.precision not in ("int8", "fp16", "bf16"):
        raise UserError("--precision must be int8, fp16 or bf16, got %r" % opts.precision)
    from rmpsam_edge.runtime import backends as registry
    row = registry.find(opts.backend)
    if row is None or row.name not in QUANTIZE_BACKENDS:
        raise UserError("--backend must be onnxruntime (alias ort) or openvino, got %r" % opts.backend)
    opts.backend = backend = row.name
    from rmpsam_edge.runtime.loader import check_device
    check_device(backend, opts.device)
    rest = opts.rest = str(getattr(opts, "rest", None) or "fp32").lower()
    if rest not in ("fp32", "bf16"):
        raise UserError("--rest must be fp32 or bf16, got %r" % rest)
    if rest == "bf16" and opts.precision != "int8":
        raise UserError("--rest bf16 applies to --precision int8 (for an all-bf16 bundle use --precision bf16)")
    if opts.precision == "bf16" or rest == "bf16":
        check_bf16(backend)
    if opts.calib_method not in ort_quant.METHODS:
        raise UserError("--calib-method must be one of %s, got %r" % (", ".join(ort_quant.METHODS), opts.calib_method))
    if opts.calib_method != "minmax" and backend == "openvino":
        raise UserError("--calib-method applies to --backend ort; NNCF chooses its own ranges (drop --calib-method)")
    if opts.auto_fallback and opts.precision != "int8":
        raise UserError("--auto-fallback applies to --precision int8")
    opts.recipe = None  # {name, target, why} of the INT8 recipe
    target = getattr(opts, "target", None) or "auto"
    if opts.precision != "int8":
        if target != "auto":
            raise UserError("--target applies to --precision int8 (drop --target %s)" % target)
        return
    from . import ov_quant
    cpuinfo = getattr(opts, "cpuinfo", None) or cpu_features.CPUINFO
    opts.recipe = (ov_quant.recipe if backend == "openvino" else ort_quant.recipe)(target, cpuinfo)
    if opts.recipe["target"] == "tensorrt" and rest != "fp32":
        raise UserError("--target tensorrt makes an INT8 graph for TensorRT; --rest bf16 is OpenVINO's (drop it)")


def open_source(opts: Options):
    """Step 2: the FP32 source bundle (every sha256 checked before any work) and its input spec."""
    from rmpsam_edge.runtime.bundle import Bundle
    src = Bundle.open(opts.model)
    bundle_out.check_source(src)
    bundle_out.check_output(opts.out, opts.force, src.path)
    if src.static:
        raise UserError("%s is a static-shape bundle; quantize the dynamic export (static bundles are for "
                        "TensorRT, which builds its own INT8/FP16 engines: rmpsam-edge build-engine)" % src.path)
    check_tools(opts.precision, opts.backend)
    for g in src.graph_names():
        src.graph_path(g)  # verifies the sha256
    spec = src.spec()
    if opts.imgsz:  # pixels, or 'official' (long side up to 1333, padded to 1344)
        axes = src.manifest.get("dynamic_axes") or {}
        h_max = max([int((axes.get(s) or {}).get("max") or 0) for s in ("H", "W")])  # the long side's max
        official = opts.imgsz == "official"
        need = 1344 if official else -(-int(opts.imgsz) // 32) * 32
        if h_max and need > h_max:
            raise UserError("--imgsz %s needs %d pixels but %s was exported for %d; use --imgsz %d or less, or "
                            "export with --imgsz official" % (opts.imgsz, need, src.path, h_max, h_max))
        spec = spec.with_input_size(None if official else int(opts.imgsz))
    return src, spec


class _Job(object):
    """One run: the source, its pre-processed calibration / held-out inputs, the FP32 reference runner, the
    staging folder and a work folder (ORT-prepared graphs, calibration ranges)."""

    def __init__(self, opts: Options, src, spec, stream):
        from rmpsam_edge.preprocess import preprocess

        from .prompts import sample_prompts
        self.opts, self.src, self.spec, self.stream, self.backend = opts, src, spec, stream, opts.backend
        self.class_embed = src.class_embed()
        self.graphs = plan(opts, src)
        if opts.holdout < 1:
            raise UserError("--holdout must be at least 1: the fidelity report needs images not used for calibration")
        self.frames = load_frames(opts.calib, opts.calib_count, opts.holdout, stream,
                                  calibrating=opts.precision == "int8")
        _say(stream, "quantize: %s -> %s, %s on %s: %s (kept %s: %s)" % (
            src.path, opts.out, opts.precision.upper(), self.backend, ", ".join(self.graphs), opts.rest.upper(),
            ", ".join(g for g in src.graph_names() if g not in self.graphs) or "none"))
        self.calib_inputs = [preprocess(rgb, spec) for _, rgb in self.frames.calib]
        self.hold_inputs = [preprocess(rgb, spec) for _, rgb in self.frames.holdout]
        self.hold_prompts = [sample_prompts(m.img_shape, PROMPT_GRID, PROMPT_BOXES, seed=1000 + i)
                             for i, (_, m) in enumerate(self.hold_inputs)]
        self.thresholds = compare.default_thresholds(opts.precision, opts.min_mask_iou)
        self.gate = compare.gate_metrics(self.graphs)
        self.ref = self.runner(src.path)
        self.workdir = tempfile.mkdtemp(prefix="rmpsam_quant_")
        self.staging = None  # set inside the atomic output folder
        self.prepared = {}   # graph -> ORT-prepared FP32 path

    def runner(self, bundle_path: str):
        """A runner of the reference, calibration-feature and fidelity runs (ONNX Runtime on the CPU unless
        --device)."""
        from rmpsam_edge.runtime import load_runner
        device = self.opts.device or ("cpu" if self.backend == "onnxruntime" else None)
        return load_runner(bundle_path, backend=self.backend, device=device, threads=self.opts.threads,
                           verbose=False)[0]

    def prepared_graph(self, graph: str) -> str:
        if graph not in self.prepared:
            self.prepared[graph] = os.path.join(self.workdir, graph + ".prep.onnx")
            ort_quant.prepare(self.src.graph_path(graph), self.prepared[graph])
        return self.prepared[graph]

    def cleanup(self):
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.ref.deactivate()


def calibration_feeds(job: _Job) -> Dict[str, List[Dict]]:
    """Step 3 (INT8): calibration inputs per graph; the decoders get the FP32 encoder's features with sampled
    prompts (a click grid + boxes) or the bundle's vocabulary."""
    from .prompts import sample_prompts

    def feed(graph, i, x, meta):
        if graph == "encoder":
            return {"image": x}
        extra = ({"class_embed": job.class_embed} if graph == "object_decoder" else
                 {"boxes": sample_prompts(meta.img_shape, PROMPT_GRID, PROMPT_BOXES, seed=i)[0]})
        return dict({"features": job.ref.encode(x)}, **extra)
    if job.opts.precision != "int8":
        return {}
    return {g: [feed(g, i, x, meta) for i, (x, meta) in
                enumerate(job.calib_inputs[:None if g == "encoder" else DECODER_CALIB_MAX])] for g in job.graphs}


def quantize_graph(job: _Job, graph: str, feeds, extra_exclude=()) -> dict:
    """Step 4, one graph, written into the staging folder -> its manifest pieces."""
    opts, src, out = job.opts, job.src.graph_path(graph), os.path.join(job.staging, graph)
    if opts.precision == "bf16":  # the graph is unchanged; the runner compiles it with the bf16 hint
        shutil.copyfile(src, out + ".onnx")
        return {"file": graph + ".onnx", "kept_fp32": []}
    if opts.precision == "fp16":
        from . import fp16
        return {"file": graph + ".onnx", "kept_fp32": fp16.convert(src, out + ".onnx", extra_exclude)["kept_fp32"]}
    transformer = graph != "encoder"
    if opts.backend == "openvino":
        from . import ov_quant
        info = ov_quant.quantize(src, out + ".xml", feeds, transformer=transformer, ignored_names=extra_exclude,
                                 overflow_fix=opts.recipe["name"].endswith("-overflow-fix"))
        return {"file": graph + ".xml", "weights": graph + ".bin", "kept_fp32": info["excluded"],
                "nncf_overflow_fix": info["overflow_fix"]}
    prep = job.prepared_graph(graph)
    kept = ort_quant.sensitive_nodes(prep) if transformer else []
    cache = os.path.join(job.workdir, "%s.%s.calib.json" % (graph, opts.calib_method))
    calibrated = os.path.exists(cache)  # re-quantizing (auto-fallback) reuses the ranges: no bar
    ort_quant.quantize(prep, out + ".onnx", feeds, opts.calib_method, kept + list(extra_exclude), cache,
                       None if calibrated else "calibrating %s" % graph, opts.recipe["target"])
    return {"file": graph + ".onnx", "kept_fp32": kept}


def quantize_graphs(job: _Job, feeds, fallback=None) -> Dict[str, dict]:
    """Step 4 for every planned graph; ``fallback`` (auto-fallback): per graph, node names kept FP32."""
    pieces = {}
    for g in job.graphs:
        if fallback is None:
            _say(job.stream, "quantize: %s ..." % g)
        pieces[g] = quantize_graph(job, g, feeds.get(g), (fallback or {}).get(g, ()))
        if fallback is not None:
            pieces[g]["fallback"] = fallback[g]
    return pieces


def write_manifest(job: _Job, pieces) -> dict:
    """Step 5: the new bundle's manifest."""
    opts, src = job.opts, job.src
    entries = {g: bundle_out.graph_entry(src.manifest["graphs"][g], job.staging, p["file"], opts.precision,
                                         p.get("weights")) for g, p in pieces.items()}
    if opts.precision == "bf16" or opts.rest == "bf16":  # every graph runs with OpenVINO's bf16 hint
        for g, old in src.manifest["graphs"].items():
            entries[g] = dict(entries.get(g) or dict(old, precision="bf16"), inference_precision="bf16")
    calib = None
    if opts.precision == "int8":
        frames = job.frames
        calib = {"source": repo_path(frames.source), "count": len(frames.calib), "available": frames.available,
                 "default_samples": frames.is_default, "method": opts.calib_method if job.backend == "onnxruntime"
                 else "nncf (min-max / mixed preset)", "images": [repo_path(n) for n, _ in frames.calib]}
    info = {"tool": "rmpsam-edge quantize", "precision": label(opts), "backend": job.backend, "calibration": calib,
            "recipe": opts.recipe,
            "graphs": {g: dict({"precision": opts.precision, "kept_fp32": p.get("kept_fp32", []),
                                "fallback_fp32": p.get("fallback", [])},
                               **({"nncf_overflow_fix": p["nncf_overflow_fix"]} if "nncf_overflow_fix" in p else {}))
                       for g, p in pieces.items()}}
    if opts.rest == "bf16":
        info["rest"] = "bf16"
        for g in src.manifest["graphs"]:
            info["graphs"].setdefault(g, {"precision": "bf16", "kept_fp32": [], "fallback_fp32": []})
    return bundle_out.write_manifest(src, job.staging, entries, label(opts), info, getattr(opts, "argv", None))


def measure_fidelity(job: _Job):
    """Step 6: the staged bundle vs the FP32 reference on the held-out images -> (metrics, verdicts)."""
    test = job.runner(job.staging)
    try:
        m = compare.compare_runners(job.ref, test, job.hold_inputs, job.hold_prompts, job.class_embed,
                                    job.spec.num_things, stream=job.stream)
    finally:
        test.deactivate()
    return m, compare.verdicts(m, job.thresholds, job.gate)


def auto_fallback(job: _Job, feeds):
    """Step 7 (below the gate): rank the INT8 layers by the error they add, keep the fewest most sensitive in FP32.
    -> (report entry, metrics, verdicts, manifest)."""
    int8_dir = tempfile.mkdtemp(dir=job.workdir)
    ranked = []
    for g in job.graphs:  # the OpenVINO path ranks on an ORT QDQ model of the same graph
        prep = job.prepared_graph(g)
        kept = ort_quant.sensitive_nodes(prep) if g != "encoder" else []
        q = os.path.join(int8_dir, g + ".onnx")
        ort_quant.quantize(prep, q, feeds[g], "minmax", kept, os.path.join(job.workdir, g + ".rank.calib.json"),
                           target=job.opts.recipe["target"])  # OpenVINO's targets are ORT's CPU ones
        for name, score in sensitivity.rank(prep, q, feeds[g][:4], ort_quant.quantizable_nodes(prep, kept)):
            ranked.append((score, g, name))
    ranked.sort(key=lambda r: -r[0])
    _say(job.stream, "auto-fallback: %d INT8 layer(s) ranked by added error vs FP32" % len(ranked))
    results = {}

    def passes(k):
        for p in (os.path.join(job.staging, g + ext) for g in job.graphs for ext in (".onnx", ".xml", ".bin")):
            if os.path.exists(p):
                os.remove(p)
        manifest = write_manifest(job, quantize_graphs(job, feeds, {g: [n for _, gg, n in ranked[:k] if gg == g]
                                                                    for g in job.graphs}))
        m, v = measure_fidelity(job)
        results[k] = (m, v, manifest)
        return not compare.failed(v)

    tried = {}
    k = sensitivity.fewest([r[2] for r in ranked], passes, lambda s: _say(job.stream, s), tried)
    best = k if k is not None else len(ranked)
    passes(best)  # the staging folder holds the last try: rebuild the chosen one
    m, v, manifest = results[best]
    summary = ("Kept the %d most sensitive of %d INT8 layer(s) in FP32 to pass the gate." % (best, len(ranked))
               if k is not None else
               "Even with all %d ranked layers in FP32 the gate fails: the loss is not in the INT8 layers "
               "(check the thresholds / the FP32 pieces)." % len(ranked))
    return {"kept_fp32": ["%s: %s" % (g, n) for _, g, n in ranked[:best]], "summary": summary,
            "layers_ranked": len(ranked), "passes": k is not None,
            "tried": {str(t): ok for t, ok in sorted(tried.items())}}, m, v, manifest


def measure_latency(job: _Job, before: Optional[str]) -> dict:
    """Step 8: latency of FP32, the new bundle and (after auto-fallback) the all-INT8 one."""
    opts = job.opts
    runners = {"fp32": job.ref, "quantized": job.runner(job.staging)}
    if before is not None:
        runners["all_int8"] = job.runner(before)
    try:
        x = _square(job.hold_inputs[0][0])
        lat = fidelity.latency(runners, x, job.hold_prompts[0][0][:1], job.class_embed, runs=opts.runs)
        lat["setting"] = "%s CPU, %s threads, input %dx%d, 1 prompt, median of %d interleaved runs" % (
            job.backend, opts.threads or "default", x.shape[2], x.shape[3], opts.runs)
    finally:
        for name, r in runners.items():
            if name != "fp32":
                r.deactivate()
    return lat


def make_report(job: _Job, staging: str) -> dict:
    """Steps 3 to 8 inside the staging folder -> the fidelity report (written there by the caller)."""
    opts = job.opts
    bundle_out.copy_unchanged(job.src, staging, set(job.graphs))
    feeds = calibration_feeds(job)
    manifest = write_manifest(job, quantize_graphs(job, feeds))
    metrics, verdict = measure_fidelity(job)
    fallback, before = None, None
    if opts.auto_fallback and compare.failed(verdict):
        before = os.path.join(job.workdir, "all_int8")  # kept to show what the fallback costs in speed
        shutil.copytree(staging, before)
        fallback, metrics, verdict, manifest = auto_fallback(job, feeds)
    lat = measure_latency(job, before)
    failed = compare.failed(verdict)
    rep = {
        "bundle": repo_path(os.path.abspath(opts.out)), "quantization": manifest["quantization"], "metrics": metrics,
        "verdicts": verdict, "thresholds": {k: list(v) for k, v in job.thresholds.items()}, "pass": not failed,
        "failed": failed, "gate": job.gate, "below_threshold": compare.failed(verdict, gated_only=False),
        "latency": lat, "weights_note": job.spec.weights_note,
        "size_mb": {"fp32": _bundle_mb(job.src.path, job.src.manifest), "quantized": _bundle_mb(staging, manifest)},
        "held_out": [repo_path(n) for n, _ in job.frames.holdout],
        "prompts_note": "%dx%d click grid + %d boxes per image" % (PROMPT_GRID, PROMPT_GRID, PROMPT_BOXES),
    }
    if fallback:
        rep["auto_fallback"] = fallback
    return rep


def quantize_bundle(opts: Options, stream=None) -> int:
    stream = sys.stderr if stream is None else stream
    check_options(opts)
    src, spec = open_source(opts)
    job = _Job(opts, src, spec, stream)
    try:  # an atomic staging folder: the bundle appears complete or not at all (even after SIGKILL)
        with atomic_dir(opts.out, force=opts.force) as staging:
            job.staging = staging
            rep = make_report(job, staging)
            report.write(staging, rep)
    finally:
        job.cleanup()
    _summary(stream, opts, rep)
    if rep["failed"] and opts.fail_below:
        _say(stream, "error: fidelity below threshold (%s); the bundle was written to %s, see fidelity.md"
             % ("; ".join(rep["failed"]), opts.out))
        return GATE_EXIT
    return 0


def _summary(stream, opts, rep):
    m, lat = rep["metrics"], rep["latency"]
    parts = ["feature cosine %.4f" % m["feature_cosine"], "mask IoU %.4f (worst decile %.4f)" % (
        m["mask_iou_mean"], m["mask_iou_worst_decile"])]
    if "panoptic_class_agreement" in m:
        parts.append("query class agreement %.4f, panoptic pixel agreement %.4f (%d segments)" % (
            m["query_class_agreement"], m["panoptic_class_agreement"], m["segments_fp32"]))
    enc = lat["fp32"]["encoder"] / max(lat["quantized"]["encoder"], 1e-9)
    _say(stream, "quantize: wrote %s (%.1f MB, FP32 %.1f MB); %s; encoder %.1f -> %.1f ms (%.2fx)" % (
        opts.out, rep["size_mb"]["quantized"], rep["size_mb"]["fp32"], ", ".join(parts),
        lat["fp32"]["encoder"], lat["quantized"]["encoder"], enc))
    _say(stream, "quantize: fidelity %s (%s/fidelity.md)%s" % (
        "PASS" if rep["pass"] else "BELOW THRESHOLD: " + "; ".join(rep["failed"]), opts.out,
        "; %s: not a quality claim" % rep["weights_note"] if "random" in (rep.get("weights_note") or "") else ""))
