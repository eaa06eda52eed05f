"""``rmpsam-edge benchmark``: one latency/fidelity table across backends and precisions, like ``yolo benchmark``.

    rmpsam-edge benchmark --model bundles/r18 --backends torch,ort,openvino,tensorrt --precisions fp32,fp16,int8 \\
        --imgsz 512 --prompts 1 16 --runs 20 --json bench.json --plot bench.png --md bench.md
    rmpsam-edge benchmark --paper        # the paper's protocol: 1333x800, R18 + R50, FPS of encoder + object decoder

Missing bundles are made first (``export`` when no --model is given, ``quantize`` for FP16/INT8) in a work folder
and reused on the next run. Every stage runs its rows round-robin with warm-up calls excluded
(``benchmarks/timing.py``). The header states the command, CPU, cores, OS, Python, package versions, threads
and, on a Jetson, the power mode and JetPack/TensorRT versions.
"""
import json
import os
import sys
import time

from rmpsam_edge.errors import UserError

from . import prepare

PAPER_FPS = "paper, R18 at 1333x800, FPS of encoder + object decoder: 40.3 (A100), 32.0 (RTX 3090), 14.2 (A10)"
PAPER_SIZE = (800, 1333)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def add_arguments(p):
    p.add_argument("--model", action="append", metavar="BUNDLE", help="FP32 model bundle (repeat for several "
                   "models); default: export the weights below into the work folder")
    w = p.add_argument_group("weights (torch row, and export when no --model is given)")
    w.add_argument("--checkpoint", metavar="PTH", help="RMP-SAM checkpoint (default: the shipped demo weights, or "
                   "the seeded random weights a random-init bundle was exported from)")
    w.add_argument("--random-init", action="store_true", help="export random weights (latency does not depend "
                   "on weight values; fidelity then uses random weights)")
    w.add_argument("--variant", default="r18", choices=["r18", "r50"], help="with --random-init")
    p.add_argument("--backends", default="torch,ort,openvino,tensorrt", help="comma list: torch, ort, openvino, "
                   "tensorrt (default all; missing ones get a 'not installed' row)")
    p.add_argument("--precisions", default=None, help="comma list: fp32, fp16, int8 (default all; fp32 with "
                   "--paper)")
    p.add_argument("--imgsz", type=int, nargs="+", help="long side(s) of the input (default: the bundle's size)")
    p.add_argument("--prompts", type=int, nargs="+", default=[1, 16], help="prompt counts decoded in one call "
                   "(default 1 16)")
    p.add_argument("--runs", type=int, default=20, help="timed rounds per stage (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up calls per row and stage, not timed (default 3)")
    p.add_argument("--max-seconds", type=float, help="time cap per stage (at least 3 rounds)")
    p.add_argument("--threads", type=int, help="CPU threads for every backend (default: usable cores)")
    p.add_argument("--device", help="backend device (onnxruntime: cpu/cuda/tensorrt; openvino: CPU/GPU)")
    p.add_argument("--paper", action="store_true", help="the paper's protocol: 1333x800 input, R18 and R50, FPS "
                   "of encoder + object decoder, parameters and GFLOPs per stage")
    p.add_argument("--flops", action="store_true", help="show parameters and GFLOPs per stage in the table")
    p.add_argument("--fidelity-images", type=int, default=2, help="shipped images for the fidelity column "
                   "(default 2; 0 = skip)")
    p.add_argument("--work", help="folder for exported/quantized bundles (default: <model>.bench, or "
                   "runs/benchmark)")
    p.add_argument("--json", help="write every row with its latency summaries here")
    p.add_argument("--md", help="write the header + table as Markdown here")
    p.add_argument("--plot", help="write latency-vs-fidelity and per-stage plots here (PNG)")
    p.add_argument("--force", action="store_true", help="overwrite existing --json/--md/--plot files")


def _progress(line: str) -> None:
    sys.stderr.write("benchmark %s %s\n" % (time.strftime("%H:%M:%S"), line))
    sys.stderr.flush()


def _check_outputs(args) -> None:
    for opt in ("json", "md", "plot"):
        path = getattr(args, opt)
        if path and os.path.exists(path) and not args.force:
            raise UserError("%s exists; pass --force to overwrite it or choose another --%s" % (path, opt))
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise UserError("--%s %s: folder %s does not exist" % (opt, path, os.path.dirname(os.path.abspath(path))))


def _installed(backend: str):
    """None when the backend can be tried, else the 'not installed: ...' status."""
    import importlib.util
    pkg = {"torch": "torch", "ort": "onnxruntime", "openvino": "openvino"}.get(backend)
    if pkg and importlib.util.find_spec(pkg) is None:
        return "not installed: pip install %s" % pkg
    if backend == "tensorrt":
        from rmpsam_edge.runtime import tensorrt as trt_pkg
        ok, why = trt_pkg.available()
        return None if ok else "not installed: %s" % why
    return None


def _preimport(backends) -> None:
    """Import the backend libraries first, so the memory column holds what a row's runner adds (sessions,
    weights, arenas), not the one-time library import charged to whichever row loads first."""
    import importlib
    for b in backends:
        mod = {"torch": "torch", "ort": "onnxruntime", "openvino": "openvino"}.get(b)
        if mod:
            try:
                importlib.import_module(mod)
            except ImportError:
                pass


def _bundle_mb(path: str) -> float:
    from rmpsam_edge.runtime.bundle import Bundle
    m = Bundle.open(path).manifest
    total = 0
    for entry in m["graphs"].values():
        total += os.path.getsize(os.path.join(path, entry["file"]))
        if entry.get("weights"):
            total += os.path.getsize(os.path.join(path, entry["weights"]["file"]))
    return total / 1e6


def _torch_model_factory(args, bundle):
    """-> a function returning (model or None, why) with the weights of ``bundle``."""
    cache = {}

    def make():
        if "m" in cache:
            return cache["m"]
        from rmpsam_edge import checkpoint as ck
        weights = bundle.manifest.get("weights") or {}
        source = str(weights.get("source") or "")
        if args.checkpoint:
            model, _ = ck.load_checkpoint(args.checkpoint)
        elif source.startswith("random-init"):
            seed = int(source.split("seed")[-1].strip(" )")) if "seed" in source else 0
            model, _ = ck.random_model(bundle.variant, seed=seed)
        elif weights.get("sha256") and os.path.isfile(ck.DEFAULT_WEIGHTS) and \
                ck.sha256_file(ck.DEFAULT_WEIGHTS) == weights["sha256"]:
            model, _ = ck.load_checkpoint(None)
        else:
            cache["m"] = (None, "pass --checkpoint with the weights of %s for the torch row" % bundle.path)
            return cache["m"]
        if model.variant != bundle.variant:
            cache["m"] = (None, "--checkpoint is %s but the bundle is %s" % (model.variant, bundle.variant))
        else:
            cache["m"] = (model, None)
        return cache["m"]
    return make


def _weights_args(args, variant=None):
    if args.random_init or variant == "r50_random":
        return ["--random-init", "--variant", "r50" if variant == "r50_random" else args.variant]
    return ["--checkpoint", args.checkpoint] if args.checkpoint else []


def _bench_image(size):
    """A real photo at the benchmark size: astronaut (square) resized so its long side is ``size``; for the
    paper preset, coffee stretched to exactly 1333x800 (the official rule keeps it, padded to 800x1344)."""
    import cv2

    import rmpsam_edge
    from rmpsam_edge.preprocess import load_image
    assets = os.path.join(os.path.dirname(os.path.abspath(rmpsam_edge.__file__)), "assets", "images")
    if size == "paper":
        img = load_image(os.path.join(assets, "coffee.jpg"))
        return cv2.resize(img, (PAPER_SIZE[1], PAPER_SIZE[0]), interpolation=cv2.INTER_LINEAR)
    return load_image(os.path.join(assets, "astronaut.jpg"))


def _fidelity_images(n):
    import rmpsam_edge
    from rmpsam_edge.preprocess import load_image
    assets = os.path.join(os.path.dirname(os.path.abspath(rmpsam_edge.__file__)), "assets", "images")
    names = ["chelsea.jpg", "coffee.jpg", "rocket.jpg", "astronaut.jpg"][:max(0, n)]
    return [load_image(os.path.join(assets, f)) for f in names]


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


def run(args) -> int:
    from .timing import thread_env
    _check_outputs(args)
    if args.runs < 1 or args.warmup < 0:
        raise UserError("--runs must be >= 1 and --warmup >= 0")
    if any(n < 1 for n in args.prompts):
        raise UserError("--prompts counts must be >= 1")
    backends = prepare.parse_list(args.backends, prepare.BACKENDS, "backend")
    precisions = prepare.parse_list(args.precisions or ("fp32" if args.paper else "fp32,fp16,int8"),
                                    prepare.PRECISIONS, "precision")
    threads = args.threads or _usable_cores()
    env = thread_env(threads)  # before onnxruntime / openvino / torch are imported
    from . import sysinfo
    header = sysinfo.collect(command=_command(args), threads=threads)
    header["thread_env"] = env
    log = []  # commands run to make bundles

    # ---- models (FP32 bundles)
    work_default = os.path.join("runs", "benchmark")
    if args.model:
        models = list(args.model)
        work = args.work or (os.path.normpath(models[0]) + ".bench")
        bases = [prepare.ensure_base(m, work, [], None, log) for m in models]
    elif args.paper:
        work = args.work or os.path.join(work_default, "paper")
        bases = [prepare.ensure_base(None, os.path.join(work, "r18"), _weights_args(args), "official", log),
                 prepare.ensure_base(None, os.path.join(work, "r50"), _weights_args(args, "r50_random"), "official",
                                     log)]
    else:
        work = args.work or work_default
        size = max(args.imgsz) if args.imgsz else None
        bases = [prepare.ensure_base(None, work, _weights_args(args), size, log)]

    from rmpsam_edge.predictor import Predictor
    from rmpsam_edge.runtime.bundle import Bundle
    from rmpsam_edge.spec import ModelSpec

    from .measure import fidelity, open_row, rss_mb, run_group

    all_rows = []
    installed = {b: _installed(b) for b in backends}
    _preimport([b for b in backends if not installed[b]])
    for base_path in bases:
        bundle = Bundle.open(base_path)
        spec0 = bundle.spec()
        class_embed = spec0.class_embed
        vocab_note = None
        if class_embed is None:
            import numpy as np
            class_embed = np.random.RandomState(0).standard_normal((133, 1, 768)).astype(np.float32)
            vocab_note = ("no vocabulary in the bundle: object decoder and frame timed with 133 random class "
                          "embeddings")
        model_label = bundle.variant
        mwork = work if len(bases) == 1 else os.path.join(work, "%s_%d" % (model_label, bases.index(base_path)))
        if args.paper and not args.model:
            mwork = os.path.dirname(base_path)
        # ---- one runner per (backend, precision)
        runners = {}
        plan = prepare.plan_rows(backends, precisions)
        derived = {}
        for backend, precision, source in plan:
            key = (backend, precision)
            info = {"status": None, "bundle": None, "size_mb": None}
            runners[key] = info
            if installed[backend]:
                info["status"] = installed[backend]
                continue
            if source is None:
                info["status"] = "n/a: torch runs FP32 (use ort/openvino/tensorrt for %s)" % precision
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
            before = rss_mb()
            row_stub = {"backend": backend, "precision": precision}
            _progress("loading %s %s %s" % (model_label, backend, precision))
            runner = open_row(row_stub, info["bundle"], threads, args.device,
                              _torch_model_factory(args, bundle))
            if runner is None:
                info["status"] = row_stub["status"]
                continue
            info.update(runner=runner, describe=runner.describe(), mem_before=before)
            if backend == "torch":
                info["size_mb"] = sum(p.numel() * p.element_size() for p in runner.model.state_dict().values()) / 1e6
            else:
                info["size_mb"] = _bundle_mb(info["bundle"])
        # ---- per input size: time all live rows together
        sizes = ["paper"] if args.paper else (args.imgsz or [spec0.input_size or 512])
        for size in sizes:
            spec = bundle.spec()
            spec.input_size = None if size == "paper" else int(size)
            if spec.class_embed is None:  # the frame stage always runs the panoptic path
                spec = ModelSpec(spec.variant, spec.input_size, spec.mean, spec.std, class_embed=class_embed,
                                 weights_note=spec.weights_note)
            image = _bench_image(size)
            rows, live = {}, {}
            for backend, precision, _ in plan:
                info = runners[(backend, precision)]
                rk = "%s %s" % (backend, precision)
                row = {"model": model_label, "backend": backend, "precision": precision,
                       "imgsz": "1333x800" if size == "paper" else size, "status": info["status"] or "ok",
                       "size_mb": info["size_mb"], "bundle": info["bundle"], "runner": info.get("describe"),
                       "weights_note": spec0.weights_note}
                if vocab_note:
                    row["vocab_note"] = vocab_note
                rows[rk] = row
                if info.get("runner") is not None:
                    live[rk] = {"runner": info["runner"], "predictor": Predictor(info["runner"], spec)}
            _progress("%s @ %s: %d of %d rows run" % (model_label, size, len(live), len(rows)))
            run_group(rows, live, image, spec, class_embed, args.prompts, args.runs, args.warmup,
                      args.max_seconds, _progress)
            for rk, st in live.items():
                info = runners[(rows[rk]["backend"], rows[rk]["precision"])]
                if "mem_mb" not in info:
                    after = rss_mb()
                    info["mem_mb"] = (after - info["mem_before"]) if (after and info["mem_before"]) else None
                rows[rk]["mem_mb"] = info["mem_mb"]
                gpu = getattr(st["runner"], "gpu_memory_mb", None)
                rows[rk]["gpu_mb"] = gpu() if callable(gpu) else None
            ref = next((k for k in ("ort fp32", "openvino fp32", "torch fp32", "tensorrt fp32") if k in live), None)
            if args.fidelity_images > 0 and ref:
                _progress("fidelity vs %s on %d shipped images" % (ref, args.fidelity_images))
                fidelity(rows, live, ref, spec, _fidelity_images(args.fidelity_images))
            flops = _stage_flops(bundle, spec, image, class_embed)
            for row in rows.values():
                row["flops"] = flops
            all_rows.extend(rows.values())
        for info in runners.values():
            if info.get("runner") is not None:
                info["runner"].deactivate()

    # ---- outputs
    from .measure import peak_rss_mb
    from .table import format_table
    header["peak_rss_mb"] = peak_rss_mb()
    header["bundle_commands"] = log
    fps_key, fps_label = ("fps_enc_obj", "FPS enc+obj") if args.paper else ("fps", "FPS")
    table = format_table(all_rows, args.prompts, with_flops=args.paper or args.flops, fps_label=fps_label,
                         fps_key=fps_key)
    lines = sysinfo.header_lines(header)
    notes = notes_lines(args, header, all_rows)
    text = "\n".join(["# rmpsam-edge benchmark", ""] + ["    " + l for l in lines] + [""] + [table, ""] + notes)
    sys.stdout.write(text + "\n")
    if args.md:
        with open(args.md, "w") as f:
            f.write(text + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "settings": _settings(args, threads), "rows": all_rows}, f, indent=1,
                      default=_json_default)
            f.write("\n")
    if args.plot:
        from .plot import plot_rows
        plot_rows(all_rows, args.plot, args.prompts, title=header["command"][:150])
    return 0


def notes_lines(args, header, rows):
    ok = [r for r in rows if r.get("status") == "ok"]
    out = ["Notes:",
           "- latency: wall-clock ms, p50/p90/p99 of %d round-robin rounds per stage (rows interleaved), %d warm-up "
           "calls per row and stage excluded; %s threads." % (args.runs, args.warmup, header.get("threads")),
           "- prompt xN: N clicks decoded in ONE prompt-decoder call; object dec: the 100-query panoptic decoder.",
           "- FPS: 1000 / p50 of a whole frame through the Predictor (pre-processing, encoder, object decoder, "
           "panoptic post-processing)%s." % ("; FPS enc+obj (shown): 1000 / (encoder + object decoder p50), the "
                                            "paper's protocol" if args.paper else ""),
           "- fidelity: mean prompt-mask IoU vs the FP32 reference row on %d shipped images (4x4 clicks + 4 boxes "
           "each)." % args.fidelity_images,
           "- mem MB: resident memory the row's runner added when loaded and run once (libraries imported before; "
           "one process for all rows, so this is not a per-backend peak)."]
    if header.get("peak_rss_mb"):
        out.append("- peak resident memory of the whole benchmark process: %.0f MB." % header["peak_rss_mb"])
    if args.paper or args.flops:
        out.append("- params / GFLOPs per stage from the ONNX graphs (Conv, ConvTranspose, MatMul, Gemm; GFLOPs = "
                   "2 x GMACs; GridSample/elementwise not counted); prompt decoder for 1 prompt.")
    if args.paper:
        out.append("- " + PAPER_FPS + ".")
    notes = sorted(set(r.get("weights_note") for r in ok if r.get("weights_note")))
    if notes:
        out.append("- weights: %s (latency does not depend on weight values; fidelity does)." % ", ".join(notes))
    vn = sorted(set(r["vocab_note"] for r in rows if r.get("vocab_note")))
    out += ["- " + v for v in vn]
    if header.get("bundle_commands"):
        out.append("- bundles made for this run: " + "; ".join(header["bundle_commands"]))
    return out


def _command(args):
    """argv of this run; when called from Python (``main([...])``) sys.argv is someone else's, so the
    command is rebuilt from the parsed options."""
    if "benchmark" in sys.argv[1:2] or "benchmark" in sys.argv[1:3]:
        return ["rmpsam-edge"] + sys.argv[1:]
    cmd = ["rmpsam-edge", "benchmark"]
    for m in args.model or []:
        cmd += ["--model", m]
    for key, value in sorted(vars(args).items()):
        if key.startswith("_") or key in ("command", "model") or value in (None, False, []):
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            cmd.append(flag)
        elif isinstance(value, list):
            cmd += [flag] + [str(v) for v in value]
        else:
            cmd += [flag, str(value)]
    return cmd


def _settings(args, threads):
    return {"backends": args.backends, "precisions": args.precisions, "imgsz": args.imgsz, "prompts": args.prompts,
            "runs": args.runs, "warmup": args.warmup, "threads": threads, "paper": args.paper,
            "device": args.device, "fidelity_images": args.fidelity_images}


def _json_default(o):
    try:
        import numpy as np
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(o)
