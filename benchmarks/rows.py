"""The latency table of ``rmpsam-edge benchmark`` (presets table, paper, stages, quantize): one row per model x
backend x precision x input size. Missing bundles are made first (``export`` when no --model is given, ``quantize``
for FP16/INT8) in a work folder and reused on the next run; every stage runs its rows round-robin with warm-up calls
excluded (``row_runs.run_group``). The header states the command, CPU, cores, OS, Python, package versions, threads
and, on a Jetson, the power mode and JetPack/TensorRT versions.

    run_table(args) -> (report {"header", "settings", "rows"}, Markdown)
"""
import os
import sys
import time

from rmpsam_edge import timing

from . import prepare


def _progress(line: str) -> None:
    sys.stderr.write("benchmark %s %s\n" % (time.strftime("%H:%M:%S"), line))
    sys.stderr.flush()


PAPER_SIZE = (800, 1333)


def run_table(args):
    from rmpsam_edge.timing import thread_env
    if any(n < 1 for n in args.prompts):
        from rmpsam_edge.errors import UserError
        raise UserError("--prompts counts must be >= 1")
    backends = prepare.parse_list(args.backends, prepare.BACKENDS, "backend")
    precisions = prepare.parse_list(args.precisions, prepare.PRECISIONS, "precision")
    threads = args.threads or timing.usable_cores()
    env = thread_env(threads)  # before onnxruntime / openvino / torch are imported
    from . import sysinfo
    header = sysinfo.collect(command=args.command_argv, threads=threads)
    header["thread_env"] = env
    header["load_average_start"] = timing.load_average()  # shared machines: read the numbers with these
    log = []  # commands run to make bundles
    bases, work = _fp32_bundles(args, log)
    installed = {b: _installed(b) for b in backends}
    _preimport([b for b in backends if not installed[b]])
    rows = []
    for i, base_path in enumerate(bases):
        mwork = work if len(bases) == 1 else os.path.join(work, "model_%d" % i)
        if args.paper and not args.model:
            mwork = os.path.dirname(base_path)
        rows += _bench_model(args, base_path, mwork, backends, precisions, installed, threads, log)
    header["peak_rss_mb"] = timing.peak_rss_mb()
    header["load_average_end"] = timing.load_average()
    header["bundle_commands"] = log
    return {"header": header, "settings": _settings(args, threads), "rows": rows}, _markdown(args, header, rows)


def _installed(backend: str):
    """None when the backend can be tried, else the 'not installed: ...' status."""
    import importlib.util
    if backend == "torch":
        return None if importlib.util.find_spec("torch") else "not installed: pip install torch"
    from rmpsam_edge.runtime import backends as registry
    ok, why = registry.probe(registry.get(backend))
    if ok:
        return None
    return "not installed: %s" % (why if backend == "tensorrt" else registry.get(backend).pip)


def _preimport(backends) -> None:
    """Import the backend libraries first, so the memory column holds what a row's runner adds (sessions,
    weights, arenas), not the one-time library import charged to whichever row loads first."""
    import importlib
    for b in backends:
        mod = b if b in ("torch", "onnxruntime", "openvino") else None
        if mod:
            try:
                importlib.import_module(mod)
            except ImportError:
                pass


def _bundle_mb(path: str) -> float:
    from rmpsam_edge.runtime.bundle import Bundle
    return Bundle.open(path).size_mb()


def _torch_model_factory(args, bundle):
    """-> a function returning (model or None, why) with the weights of ``bundle`` (made once, on first use)."""
    cache = {}

    def make():
        if "m" not in cache:
            from rmpsam_edge.checkpoint import model_for_bundle
            cache["m"] = model_for_bundle(bundle.weights_info(), bundle.variant, args.checkpoint)
        return cache["m"]
    return make


def _weights_args(args, variant=None):
    if args.random_init or variant == "r50_random":
        return ["--random-init", "--variant", "r50" if variant == "r50_random" else args.variant]
    return ["--checkpoint", args.checkpoint] if args.checkpoint else []


def _bench_image(size):
    """A real photo at the benchmark size, so the frame stage's post-processing works at that size too:
    astronaut (square) resized to size x size; for 'official' (the paper preset), coffee stretched to exactly
    1333x800 (the official rule keeps it, padded to 800x1344)."""
    import cv2

    from rmpsam_edge.media import asset_path
    from rmpsam_edge.preprocess import load_image
    if size == "official":
        img = load_image(asset_path("images", "coffee.jpg"))
        return cv2.resize(img, (PAPER_SIZE[1], PAPER_SIZE[0]), interpolation=cv2.INTER_LINEAR)
    img = load_image(asset_path("images", "astronaut.jpg"))
    return cv2.resize(img, (int(size), int(size)), interpolation=cv2.INTER_AREA)


def _fidelity_images(n):
    from rmpsam_edge.media import asset_path
    from rmpsam_edge.preprocess import load_image
    names = ["chelsea.jpg", "coffee.jpg", "rocket.jpg", "astronaut.jpg"][:max(0, n)]
    return [load_image(asset_path("images", f)) for f in names]


def _stage_flops(bundle, spec, image, class_embed):
    from rmpsam_edge.preprocess import preprocess

    from . import flops
    x, meta = preprocess(image, spec)
    h, w = meta.feat_shape
    feats = (1, 256, h, w)
    shapes = {"encoder": {"image": x.shape}, "prompt_decoder": {"features": feats, "boxes": (1, 4)},
              "object_decoder": {"features": feats, "class_embed": class_embed.shape}}
    out = {}
    for graph, inputs in shapes.items():
        try:
            out[graph] = flops.count_graph(bundle.graph_path(graph), inputs)
        except Exception as exc:  # noqa: BLE001 - FLOPs are informative; a graph shape inference cannot do is noted
            out[graph] = {"params": 0, "gflops": float("nan"), "error": str(exc).splitlines()[0][:120]}
    return out


def _fp32_bundles(args, log):
    """-> (FP32 bundle paths, work folder): the --model bundles, or exports (two for --paper)."""
    work_default = os.path.join("runs", "benchmark")
    if args.model:
        work = args.work or (os.path.normpath(args.model[0]) + ".bench")
        return [prepare.ensure_base(m, work, [], None, log) for m in args.model], work
    if args.paper:
        work = args.work or os.path.join(work_default, "paper")
        return [prepare.ensure_base(None, os.path.join(work, "r18"), _weights_args(args), "official", log),
                prepare.ensure_base(None, os.path.join(work, "r50"), _weights_args(args, "r50_random"), "official",
                                    log)], work
    work = args.work or work_default
    size = None if not args.imgsz else ("official" if "official" in args.imgsz else max(args.imgsz))
    return [prepare.ensure_base(None, work, _weights_args(args), size, log)], work


def _spec_for(bundle, size, class_embed):
    """The bundle's spec at one benchmark size; the frame stage always runs the panoptic path, so a bundle
    without a vocabulary gets the stand-in embeddings."""
    from rmpsam_edge.spec import ModelSpec
    spec = bundle.spec().with_input_size(None if size == "official" else int(size))
    if spec.class_embed is None:
        spec = ModelSpec(spec.variant, spec.input_size, spec.mean, spec.std, class_embed=class_embed,
                         weights_note=spec.weights_note)
    return spec


def _open_runners(args, bundle, plan, mwork, installed, threads, log, first_size, class_embed):
    """(backend, precision) -> {"status", "bundle", "size_mb", "runner", "describe", "mem_mb"}. Missing
    bundles are made here; memory is measured per row right after its runner was loaded and ran one frame."""
    from rmpsam_edge.predictor import Predictor

    from rmpsam_edge.timing import rss_mb

    from .row_runs import open_row, process_gpu_mb, row_gpu_mb
    base_path = bundle.path
    image = _bench_image(first_size)
    spec = _spec_for(bundle, first_size, class_embed)
    runners, derived = {}, {}
    for backend, precision, source in plan:
        info = {"status": None, "bundle": None, "size_mb": None}
        runners[(backend, precision)] = info
        if installed[backend]:
            info["status"] = installed[backend]
            continue
        if source is None:
            info["status"] = ("n/a (torch runs FP32 only)" if backend == "torch" else
                              "n/a (%s is an OpenVINO CPU precision)" % precision)
            continue
        if source in ("fp32", "torch"):
            info["bundle"] = base_path
        else:
            if source not in derived:
                derived[source] = prepare.ensure_derived(base_path, source, mwork, threads, log)
            path, status = derived[source]
            if status:
                info["status"] = status
                continue
            info["bundle"] = path
        _progress("loading %s %s %s" % (bundle.variant, backend, precision))
        before, gpu_before = rss_mb(), process_gpu_mb()
        stub = {"backend": backend, "precision": precision}
        runner = open_row(stub, info["bundle"], threads, args.device, _torch_model_factory(args, bundle))
        if runner is None:
            info["status"] = stub["status"]
            continue
        try:  # one frame, so lazily allocated arenas / compiled kernels count in the memory column
            pred = Predictor(runner, spec)
            pred.set_image(image)
            pred.predict(points=[[image.shape[1] / 2.0, image.shape[0] / 2.0]])
            pred.object_outputs()
        except Exception as exc:  # noqa: BLE001 - a backend that cannot run a frame is a row status
            info["status"] = "failed: %s" % str(exc).strip().splitlines()[0][:160]
            runner.deactivate()
            continue
        after = rss_mb()
        info.update(runner=runner, describe=runner.describe(), gpu_mb=row_gpu_mb(runner, gpu_before),
                    mem_mb=(after - before) if (after is not None and before is not None) else None)
        if backend == "torch":
            info["size_mb"] = sum(p.numel() * p.element_size() for p in runner.model.state_dict().values()) / 1e6
        else:
            info["size_mb"] = _bundle_mb(info["bundle"])
    return runners


def _bench_model(args, base_path, mwork, backends, precisions, installed, threads, log):
    """All rows of one FP32 bundle: every (backend, precision) at every input size."""
    import numpy as np

    from rmpsam_edge.predictor import Predictor
    from rmpsam_edge.runtime.bundle import Bundle

    from .row_runs import fidelity, run_group
    bundle = Bundle.open(base_path)
    spec0 = bundle.spec()
    class_embed, vocab_note = spec0.class_embed, None
    if class_embed is None:
        class_embed = np.random.RandomState(0).standard_normal((133, 1, 768)).astype(np.float32)
        vocab_note = "no vocabulary in the bundle: object decoder%s timed with 133 random class embeddings" % (
            "" if args.paper else " and frame")
    sizes = args.imgsz or [spec0.input_size or 512]
    plan = prepare.plan_rows(backends, precisions)
    runners = _open_runners(args, bundle, plan, mwork, installed, threads, log, sizes[0], class_embed)
    out = []
    try:
        for size in sizes:
            spec = _spec_for(bundle, size, class_embed)
            image = _bench_image(size)
            rows, live = {}, {}
            for backend, precision, _ in plan:
                info = runners[(backend, precision)]
                rk = "%s %s" % (backend, precision)
                rows[rk] = {"model": bundle.variant, "backend": backend, "precision": precision,
                            "imgsz": "1333x800" if size == "official" else size, "status": info["status"] or "ok",
                            "size_mb": info["size_mb"], "bundle": info["bundle"], "runner": info.get("describe"),
                            "mem_mb": info.get("mem_mb"), "gpu_mb": info.get("gpu_mb"),
                            "weights_note": spec0.weights_note}
                if vocab_note:
                    rows[rk]["vocab_note"] = vocab_note
                if info.get("runner") is not None:
                    live[rk] = {"runner": info["runner"], "predictor": Predictor(info["runner"], spec)}
            _progress("%s @ %s: %d of %d rows run" % (bundle.variant, size, len(live), len(rows)))
            run_group(rows, live, image, spec, class_embed, args.prompts, args.runs, args.warmup,
                      args.max_seconds, _progress, frame_stage=not args.paper)
            ref = next((k for k in ("onnxruntime fp32", "openvino fp32", "torch fp32", "tensorrt fp32") if k in live), None)
            if args.fidelity_images > 0 and ref:
                _progress("fidelity vs %s on %d shipped images" % (ref, args.fidelity_images))
                fidelity(rows, live, ref, spec, _fidelity_images(args.fidelity_images))
            flops = _stage_flops(bundle, spec, image, class_embed)
            for row in rows.values():
                row["flops"] = flops
            out.extend(rows.values())
    finally:
        for info in runners.values():
            if info.get("runner") is not None:
                info["runner"].deactivate()
    return out


def _markdown(args, header, rows) -> str:
    from . import sysinfo
    from .table import format_table
    fps_key, fps_label = ("fps_enc_obj", "FPS enc+obj") if args.paper else ("fps", "FPS")
    table = format_table(rows, args.prompts, with_flops=args.flops, fps_label=fps_label, fps_key=fps_key)
    load = ["load average (1/5/15 min): start %s, end %s" % (header["load_average_start"],
                                                             header.get("load_average_end"))] if header.get(
        "load_average_start") else []
    title = "# rmpsam-edge benchmark" + ("" if args.preset == "table" else " --preset %s" % args.preset)
    return "\n".join([title, ""] + ["    " + l for l in sysinfo.header_lines(header) + load] + [""]
                     + [table, ""] + notes_lines(args, header, rows))


def _settings(args, threads):
    return {"preset": args.preset, "backends": args.backends, "precisions": args.precisions, "imgsz": args.imgsz,
            "prompts": args.prompts, "runs": args.runs, "warmup": args.warmup, "threads": threads,
            "device": args.device, "fidelity_images": args.fidelity_images}


def derived_lines(rows, prompts):
    """Ratios within the run: N prompts in one call vs N x the 1-prompt p50 (the 1-prompt call timed in the
    same rounds), and the host (pre + post-processing) share of a frame."""
    out = []
    for r in rows:
        if r.get("status") != "ok":
            continue
        who = "%s %s %s @ %s" % (r.get("model"), r["backend"], r["precision"], r["imgsz"])
        pm = r.get("prompt_ms") or {}
        parts = ["%d prompts in one call = %.2fx of %d x one prompt (%.1f vs %.1f ms, %.2f ms per prompt)"
                 % (n, pm[str(n)]["p50"] / (n * pm["1"]["p50"]), n, pm[str(n)]["p50"], n * pm["1"]["p50"],
                    pm[str(n)]["p50"] / n) for n in prompts if n > 1 and str(n) in pm and "1" in pm]
        fp = r.get("frame_parts_ms")
        if fp:
            parts.append("pre/post-processing %.1f %% of a frame (%.1f of %.1f ms)"
                         % (100.0 * fp["host_share"], fp["host_ms"], fp["total_ms"]))
        if parts:
            out.append("- %s: %s." % (who, "; ".join(parts)))
    return out


def notes_lines(args, header, rows):
    ok = [r for r in rows if r.get("status") == "ok"]
    out = ["Notes:",
           "- latency: wall-clock ms, p50/p90/p99 of %d round-robin rounds per stage (rows interleaved), %d warm-up "
           "calls per row and stage excluded; %s threads." % (args.runs, args.warmup, header.get("threads")),
           "- prompt xN: N clicks decoded in ONE prompt-decoder call; object dec: the 100-query panoptic decoder.",
           ("- FPS enc+obj: 1000 / (encoder p50 + object decoder p50), the paper's protocol (no pre/post-"
            "processing)." if args.paper else
            "- FPS: 1000 / p50 of a whole frame through the Predictor (pre-processing, encoder, object decoder, "
            "panoptic post-processing)."),
           "- fidelity: mean prompt-mask IoU vs the FP32 reference row on %d shipped images (4x4 clicks + 4 boxes "
           "each)." % args.fidelity_images,
           "- mem MB: resident memory the row's runner added when loaded and run once (libraries imported before; "
           "one process for all rows, so this is not a per-backend peak). GPU MB: the row's GPU memory (TensorRT: "
           "engines + buffers; else nvidia-smi's figure for this process); - without a GPU."]
    if header.get("peak_rss_mb"):
        out.append("- peak resident memory of the whole benchmark process: %.0f MB." % header["peak_rss_mb"])
    derived = derived_lines(rows, args.prompts)
    if derived:
        out += ["- ratios within this run (p50):"] + ["  " + d for d in derived]
    if args.flops:
        out.append("- params / GFLOPs per stage from the ONNX graphs (Conv, ConvTranspose, MatMul, Gemm; GFLOPs = "
                   "2 x GMACs; GridSample/elementwise not counted); prompt decoder for 1 prompt.")
    if args.paper:
        out.append("- the paper's own FPS (other GPUs) are quoted in docs/benchmark_demo.md; not measured here.")
    notes = sorted(set(r.get("weights_note") for r in ok if r.get("weights_note")))
    if notes:
        out.append("- weights: %s (latency does not depend on weight values; fidelity does)." % ", ".join(notes))
    vn = sorted(set(r["vocab_note"] for r in rows if r.get("vocab_note")))
    out += ["- " + v for v in vn]
    if header.get("bundle_commands"):
        out.append("- bundles made for this run: " + "; ".join(header["bundle_commands"]))
    return out


