"""``quantize_bundle``: FP32 bundle -> FP16 / INT8 bundle + fidelity report (what ``rmpsam-edge quantize`` runs).

Default INT8 recipe: the encoder only (the decoders stay FP32: INT8 decoders collapsed panoptic classes on the
prototype, and OpenVINO's INT8 prompt decoder was slower than FP32); ``quantize_decoders`` adds the decoders,
always through the fidelity gate. The encoder is calibrated on pre-processed images; the decoders on the FP32
encoder's features of those images with sampled prompts (a 4 x 4 click grid + 8 boxes) and the bundle's
vocabulary embeddings. FP16 converts every graph (sensitive parts kept FP32) and needs no calibration.
BF16 (OpenVINO only, CPUs with AVX512-BF16/AMX) keeps every graph file unchanged and marks each graph
``"inference_precision": "bf16"``, which the OpenVINO runner compiles with INFERENCE_PRECISION_HINT bf16;
``rest="bf16"`` with INT8 marks every graph so (the bundle's precision is then ``int8+bf16``).
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
from rmpsam_edge.runtime import compare

from . import bundle_out, fidelity, ort_quant, report, sensitivity
from .calibration import DEFAULT_HOLDOUT, load_frames

QUANTIZE_BACKENDS = ("onnxruntime", "openvino")  # registry names (aliases ort, ov) that quantize writes for
DECODERS = ("prompt_decoder", "prompt_decoder_many", "object_decoder")
DECODER_CALIB_MAX = 16  # images whose features calibrate the decoders (each is 256 x h x w floats)
PROMPT_GRID, PROMPT_BOXES = 4, 8
GATE_EXIT = 3  # exit code of --fail-below when fidelity is under the threshold


class Options(object):
    def __init__(self, model, out, precision="int8", backend="ort", calib=None, calib_count=None,
                 holdout=DEFAULT_HOLDOUT, calib_method="minmax", quantize_decoders=False, min_mask_iou=None,
                 fail_below=False, auto_fallback=False, force=False, threads=None, runs=10, imgsz=None,
                 rest="fp32", device=None, argv=None):
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


def _runner(bundle_path: str, backend: str, threads, device=None):
    """A runner of the reference, calibration-feature and fidelity runs (ONNX Runtime on the CPU unless --device)."""
    from rmpsam_edge.runtime import load_runner
    if device is None and backend == "onnxruntime":
        device = "cpu"
    runner, _, _ = load_runner(bundle_path, backend=backend, device=device, threads=threads, verbose=False)
    return runner


def _square(x: np.ndarray) -> np.ndarray:
    s = max(x.shape[2], x.shape[3])
    out = np.zeros((1, 3, s, s), np.float32)
    out[:, :, :x.shape[2], :x.shape[3]] = x
    return out


def _bundle_mb(path: str, manifest: dict) -> float:
    from rmpsam_edge.runtime.bundle import Bundle
    return Bundle(path, manifest).size_mb()


class _Job(object):
    """State of one run: inputs, feeds per graph, and how to (re)quantize one graph."""

    def __init__(self, opts: Options, bundle, stream):
        self.opts, self.bundle, self.stream = opts, bundle, stream
        self.workdir = tempfile.mkdtemp(prefix="rmpsam_quant_")
        self.prepared = {}   # graph -> ORT-prepared FP32 path (INT8)
        self.kept = {}       # graph -> node names kept FP32 by the patterns

    # ---------------------------------------------------------------- feeds
    def feeds(self, graph: str, calib_inputs, ref, class_embed) -> List[Dict]:
        from .prompts import sample_prompts
        if graph == "encoder":
            return [{"image": x} for x, _ in calib_inputs]
        out = []
        for i, (x, meta) in enumerate(calib_inputs[:DECODER_CALIB_MAX]):
            f = ref.encode(x)
            if graph == "object_decoder":
                out.append({"features": f, "class_embed": class_embed})
            else:
                boxes, _ = sample_prompts(meta.img_shape, PROMPT_GRID, PROMPT_BOXES, seed=i)
                out.append({"features": f, "boxes": boxes})
        return out

    # ---------------------------------------------------------------- one graph
    def quantize(self, graph: str, src: str, staging: str, feeds, extra_exclude=()) -> dict:
        """Write graph ``graph`` of the new bundle into ``staging``; returns the manifest entry pieces."""
        opts = self.opts
        if opts.precision == "bf16":  # the graph is unchanged; the runner compiles it with the bf16 hint
            dst = graph + ".onnx"
            shutil.copyfile(src, os.path.join(staging, dst))
            return {"file": dst, "kept_fp32": []}
        if opts.precision == "fp16":
            from . import fp16
            dst = graph + ".onnx"
            info = fp16.convert(src, os.path.join(staging, dst), extra_exclude)
            return {"file": dst, "kept_fp32": info["kept_fp32"]}
        transformer = graph != "encoder"
        if opts.backend == "openvino":
            from . import ov_quant
            dst = graph + ".xml"
            info = ov_quant.quantize(src, os.path.join(staging, dst), feeds, transformer=transformer,
                                     ignored_names=extra_exclude)
            return {"file": dst, "weights": graph + ".bin", "kept_fp32": info["excluded"],
                    "nncf_overflow_fix": info["overflow_fix"]}
        dst = graph + ".onnx"
        if graph not in self.prepared:
            prep = os.path.join(self.workdir, graph + ".prep.onnx")
            ort_quant.prepare(src, prep)
            self.prepared[graph] = prep
        prep = self.prepared[graph]
        kept = ort_quant.sensitive_nodes(prep) if transformer else []
        cache = os.path.join(self.workdir, "%s.%s.calib.json" % (graph, opts.calib_method))
        calibrated = os.path.exists(cache)  # re-quantizing (auto-fallback) reuses the ranges: no bar
        ort_quant.quantize(prep, os.path.join(staging, dst), feeds, opts.calib_method, kept + list(extra_exclude),
                           cache, None if calibrated else "calibrating %s" % graph)
        return {"file": dst, "kept_fp32": kept}

    def cleanup(self):
        shutil.rmtree(self.workdir, ignore_errors=True)


def plan(opts: Options, bundle) -> List[str]:
    """Which graphs get the new precision."""
    names = bundle.graph_names()
    if opts.precision in ("fp16", "bf16"):
        return names
    chosen = ["encoder"]
    if opts.quantize_decoders:
        chosen += [g for g in names if g in DECODERS and (g != "object_decoder" or bundle.class_embed() is not None)]
    return chosen


def quantize_bundle(opts: Options, stream=None) -> int:
    from rmpsam_edge.preprocess import preprocess
    from rmpsam_edge.runtime.bundle import Bundle

    from .prompts import sample_prompts
    stream = sys.stderr if stream is None else stream
    if opts.precision not in ("int8", "fp16", "bf16"):
        raise UserError("--precision must be int8, fp16 or bf16, got %r" % opts.precision)
    from rmpsam_edge.runtime import backends as registry
    row = registry.find(opts.backend)
    backend = row.name if row is not None and row.name in QUANTIZE_BACKENDS else None
    if backend is None:
        raise UserError("--backend must be ort (onnxruntime) or openvino, got %r" % opts.backend)
    opts.backend = backend
    from rmpsam_edge.runtime.loader import check_device
    check_device(backend, opts.device)
    rest = str(getattr(opts, "rest", None) or "fp32").lower()
    if rest not in ("fp32", "bf16"):
        raise UserError("--rest must be fp32 or bf16, got %r" % rest)
    if rest == "bf16" and opts.precision != "int8":
        raise UserError("--rest bf16 applies to --precision int8 (for an all-bf16 bundle use --precision bf16)")
    opts.rest = rest
    if opts.precision == "bf16" or rest == "bf16":
        check_bf16(backend)
    if opts.calib_method not in ort_quant.METHODS:
        raise UserError("--calib-method must be one of %s, got %r" % (", ".join(ort_quant.METHODS), opts.calib_method))
    if opts.calib_method != "minmax" and backend == "openvino":
        raise UserError("--calib-method applies to --backend ort; NNCF chooses its own ranges (drop --calib-method)")
    if opts.auto_fallback and opts.precision != "int8":
        raise UserError("--auto-fallback applies to --precision int8")
    src = Bundle.open(opts.model)
    bundle_out.check_source(src)
    bundle_out.check_output(opts.out, opts.force, src.path)
    if src.static:
        raise UserError("%s is a static-shape bundle; quantize the dynamic export (static bundles are for "
                        "TensorRT, which builds its own INT8/FP16 engines: rmpsam-edge build-engine)" % src.path)
    check_tools(opts.precision, backend)
    for g in src.graph_names():  # sha256 of everything we read, before any work
        src.graph_path(g)
    spec = src.spec()
    if opts.imgsz:
        axes = src.manifest.get("dynamic_axes") or {}
        h_max = max([int((axes.get(s) or {}).get("max") or 0) for s in ("H", "W")])  # the long side's max
        if h_max and -(-int(opts.imgsz) // 32) * 32 > h_max:
            raise UserError("--imgsz %d is larger than the %d pixels %s was exported for; use --imgsz %d or less"
                            % (opts.imgsz, h_max, src.path, h_max))
        spec = spec.with_input_size(int(opts.imgsz))
    class_embed = src.class_embed()
    graphs = plan(opts, src)
    if opts.holdout < 1:
        raise UserError("--holdout must be at least 1: the fidelity report needs images not used for calibration")
    frames = load_frames(opts.calib, opts.calib_count, opts.holdout, stream, calibrating=opts.precision == "int8")
    _say(stream, "quantize: %s -> %s, %s on %s: %s (kept %s: %s)" % (
        src.path, opts.out, opts.precision.upper(), backend, ", ".join(graphs), opts.rest.upper(),
        ", ".join(g for g in src.graph_names() if g not in graphs) or "none"))

    calib_inputs = [preprocess(rgb, spec) for _, rgb in frames.calib]
    hold_inputs = [preprocess(rgb, spec) for _, rgb in frames.holdout]
    hold_prompts = [sample_prompts(m.img_shape, PROMPT_GRID, PROMPT_BOXES, seed=1000 + i)
                    for i, (_, m) in enumerate(hold_inputs)]

    ref = _runner(src.path, backend, opts.threads, opts.device)
    job = _Job(opts, src, stream)
    try:  # an atomic staging folder: the bundle appears complete or not at all (even after SIGKILL)
        with atomic_dir(opts.out, force=opts.force) as staging:
            bundle_out.copy_unchanged(src, staging, set(graphs))
            feeds = {}
            if opts.precision == "int8":
                for g in graphs:
                    feeds[g] = job.feeds(g, calib_inputs, ref, class_embed)
            pieces = {}
            for g in graphs:
                _say(stream, "quantize: %s ..." % g)
                pieces[g] = job.quantize(g, src.graph_path(g), staging, feeds.get(g))
            manifest = _write_manifest(opts, src, staging, pieces, frames, backend)
            thresholds = fidelity.default_thresholds(opts.precision, opts.min_mask_iou)

            def measure():
                test = _runner(staging, backend, opts.threads, opts.device)
                try:
                    m = compare.compare_runners(ref, test, hold_inputs, hold_prompts, class_embed, spec.num_things,
                                                stream=stream)
                finally:
                    test.deactivate()
                return m

            gate = fidelity.gate_metrics(graphs)
            metrics = measure()
            verdict = fidelity.verdicts(metrics, thresholds, gate)
            fallback, before = None, None
            if opts.auto_fallback and fidelity.failed(verdict):
                before = os.path.join(job.workdir, "all_int8")  # kept to show what the fallback costs in speed
                shutil.copytree(staging, before)
                fallback, metrics, verdict, manifest = _auto_fallback(job, src, staging, graphs, feeds, pieces, frames,
                                                                      backend, thresholds, gate, measure)
            test = _runner(staging, backend, opts.threads, opts.device)
            runners = {"fp32": ref, "quantized": test}
            if before is not None:
                runners["all_int8"] = _runner(before, backend, opts.threads, opts.device)
            try:
                x = _square(hold_inputs[0][0])
                one = hold_prompts[0][0][:1]
                lat = fidelity.latency(runners, x, one, class_embed, runs=opts.runs)
                lat["setting"] = "%s CPU, %s threads, input %dx%d, 1 prompt, median of %d interleaved runs" % (
                    backend, opts.threads or "default", x.shape[2], x.shape[3], opts.runs)
            finally:
                for name, r in runners.items():
                    if name != "fp32":
                        r.deactivate()
            failed = fidelity.failed(verdict)
            rep = {
                "bundle": repo_path(os.path.abspath(opts.out)), "quantization": manifest["quantization"], "metrics": metrics,
                "verdicts": verdict, "thresholds": {k: list(v) for k, v in thresholds.items()}, "pass": not failed,
                "failed": failed, "gate": gate, "below_threshold": fidelity.failed(verdict, gated_only=False),
                "latency": lat, "weights_note": spec.weights_note,
                "size_mb": {"fp32": _bundle_mb(src.path, src.manifest), "quantized": _bundle_mb(staging, manifest)},
                "held_out": [repo_path(n) for n, _ in frames.holdout],
                "prompts_note": "%dx%d click grid + %d boxes per image" % (PROMPT_GRID, PROMPT_GRID, PROMPT_BOXES),
            }
            if fallback:
                rep["auto_fallback"] = fallback
            report.write(staging, rep)
    finally:
        job.cleanup()
        ref.deactivate()
    _summary(stream, opts, rep)
    if failed and opts.fail_below:
        _say(stream, "error: fidelity below threshold (%s); the bundle was written to %s, see fidelity.md"
             % ("; ".join(failed), opts.out))
        return GATE_EXIT
    return 0


def _write_manifest(opts, src, staging, pieces, frames, backend) -> dict:
    entries = {}
    for g, p in pieces.items():
        entries[g] = bundle_out.graph_entry(src.manifest["graphs"][g], staging, p["file"], opts.precision,
                                            p.get("weights"))
    if opts.precision == "bf16" or opts.rest == "bf16":  # every graph runs with OpenVINO's bf16 hint
        for g, old in src.manifest["graphs"].items():
            entries[g] = dict(entries.get(g) or dict(old, precision="bf16"), inference_precision="bf16")
    calib = None
    if opts.precision == "int8":
        calib = {"source": repo_path(frames.source), "count": len(frames.calib), "available": frames.available,
                 "default_samples": frames.is_default, "method": opts.calib_method if backend == "onnxruntime"
                 else "nncf (min-max / mixed preset)", "images": [repo_path(n) for n, _ in frames.calib]}
    info = {"tool": "rmpsam-edge quantize", "precision": label(opts), "backend": backend, "calibration": calib,
            "graphs": {g: dict({"precision": opts.precision, "kept_fp32": p.get("kept_fp32", []),
                                "fallback_fp32": p.get("fallback", [])},
                               **({"nncf_overflow_fix": p["nncf_overflow_fix"]} if "nncf_overflow_fix" in p else {}))
                       for g, p in pieces.items()}}
    if opts.rest == "bf16":
        info["rest"] = "bf16"
        for g in src.manifest["graphs"]:
            info["graphs"].setdefault(g, {"precision": "bf16", "kept_fp32": [], "fallback_fp32": []})
    return bundle_out.write_manifest(src, staging, entries, label(opts), info, getattr(opts, "argv", None))


def _auto_fallback(job, src, staging, graphs, feeds, pieces, frames, backend, thresholds, gate, measure):
    """Rank the INT8 layers of every quantized graph, then keep the fewest most sensitive ones in FP32."""
    stream = job.stream
    int8_dir = tempfile.mkdtemp(dir=job.workdir)
    ranked = []
    for g in graphs:
        prep = job.prepared.get(g)
        if prep is None:  # OpenVINO path: rank on an ORT QDQ model of the same graph
            prep = os.path.join(job.workdir, g + ".prep.onnx")
            ort_quant.prepare(src.graph_path(g), prep)
            job.prepared[g] = prep
        kept = ort_quant.sensitive_nodes(prep) if g != "encoder" else []
        q = os.path.join(int8_dir, g + ".onnx")
        ort_quant.quantize(prep, q, feeds[g], "minmax", kept, os.path.join(job.workdir, g + ".rank.calib.json"))
        cands = ort_quant.quantizable_nodes(prep, kept)
        for name, score in sensitivity.rank(prep, q, feeds[g][:4], cands):
            ranked.append((score, g, name))
    ranked.sort(key=lambda r: -r[0])
    _say(stream, "auto-fallback: %d INT8 layer(s) ranked by added error vs FP32" % len(ranked))
    results = {}

    def passes(k):
        extra = {g: [n for _, gg, n in ranked[:k] if gg == g] for g in graphs}
        for g in graphs:
            for f in ("%s.onnx" % g, "%s.xml" % g, "%s.bin" % g):
                p = os.path.join(staging, f)
                if os.path.exists(p):
                    os.remove(p)
            piece = job.quantize(g, src.graph_path(g), staging, feeds[g], extra[g])
            piece["fallback"] = extra[g]
            pieces[g] = piece
        manifest = _write_manifest(job.opts, src, staging, pieces, frames, backend)
        m = measure()
        v = fidelity.verdicts(m, thresholds, gate)
        results[k] = (m, v, manifest)
        return not fidelity.failed(v)

    k = sensitivity.fewest([r[2] for r in ranked], passes, lambda s: _say(stream, s))
    best = k if k is not None else len(ranked)
    passes(best)  # the staging folder holds the last try: rebuild the chosen one
    m, v, manifest = results[best]
    kept = ["%s: %s" % (g, n) for _, g, n in ranked[:best]]
    summary = ("Kept the %d most sensitive of %d INT8 layer(s) in FP32 to pass the gate." % (best, len(ranked))
               if k is not None else
               "Even with all %d ranked layers in FP32 the gate fails: the loss is not in the INT8 layers "
               "(check the thresholds / the FP32 pieces)." % len(ranked))
    return {"kept_fp32": kept, "summary": summary, "layers_ranked": len(ranked), "passes": k is not None}, m, v, manifest


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
