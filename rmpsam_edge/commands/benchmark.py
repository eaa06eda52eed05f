"""``rmpsam-edge benchmark``: the one benchmark command, like ``yolo benchmark``; presets name what it measures.

    rmpsam-edge benchmark --model bundles/r18 --backends torch,onnxruntime,openvino,tensorrt --precisions fp32,fp16,int8 \\
        --imgsz 512 --prompts 1 16 --runs 20 --json bench.json --plot bench.png --md bench.md
    rmpsam-edge benchmark --preset stages        # per-stage speed of the graphs vs PyTorch eager, at 512
    rmpsam-edge benchmark --preset demo --model bundles/r18 --backends onnxruntime   # the demo's pipelining ratios
    rmpsam-edge benchmark --model grpc://127.0.0.1:8001 --streams 1 2 4     # a running Triton server

``PRESETS`` is the plain table of presets: a preset either fills the options not given on the command line
(``table`` family: one row per backend x precision x input size, ``rows.py``) or runs a study module of this
package (``run(args) -> (report dict, Markdown)``). Every preset writes its report the same way: Markdown on
stdout, ``--json`` / ``--md`` written atomically, never over an existing file without ``--force``.
"""
import json
import os
import sys

from rmpsam_edge.commands.common_args import DEFAULTS, add_device, add_force, add_runs, add_threads
from rmpsam_edge.errors import UserError

# name -> (what it measures, defaults for the options not given, study module or None for the latency table)
PRESETS = {
    "table": ("latency table: backends x precisions x input sizes, fidelity, memory (default)", {}, None),
    "paper": ("the paper's protocol: 1333x800, R18 + R50, FPS of encoder + object decoder, params and GFLOPs",
              {"precisions": "fp32", "flops": True, "imgsz": ["official"]}, None),
    "stages": ("the exported graphs vs the PyTorch eager model at 512, 2 threads: encoder, 1/16/64 prompts in one "
               "call, object decoder, frame with its pre/post-processing share (docs/export_runtime.md)",
               {"backends": "torch,onnxruntime,openvino", "precisions": "fp32", "prompts": [1, 16, 64], "imgsz": [512],
                "threads": 2, "flops": True}, None),
    "quantize": ("FP32 vs FP16 vs INT8 on ONNX Runtime and OpenVINO at 512, 2 threads (docs/quantize.md)",
                 {"backends": "onnxruntime,openvino", "precisions": "fp32,fp16,int8", "prompts": [1], "imgsz": [512],
                  "threads": 2}, None),
    "soak": ("--frames frames of the demo pipeline on the looped clip: RSS and FPS drift", {"frames": 1000},
             "soak"),
    "demo": ("the demo's ratios: pipelined FPS vs encoder-only FPS, everything (--grid^2 prompts) vs one prompt",
             {"frames": 30, "threads": 2}, "demo_targets"),
    "ort-options": ("ONNX Runtime intra-op spinning x memory arena, per graph (docs/benchmark_demo.md)",
                    {"imgsz": [512], "threads": 2}, "ort_options"),
    "opset-speed": ("the same weights at two opsets (two --model bundles) on ONNX Runtime and OpenVINO: p50 per "
                    "graph, and what each runtime fuses (docs/export_runtime.md)", {"threads": 2}, "opset_speed"),
    "profile": ("ONNX Runtime kernel-time profile of one --graph by op type and node",
                {"imgsz": [512], "threads": 2}, "profile_graph"),
    "collect-fidelity": ("the fidelity.json headlines of the quantized bundles given with --from, in one file "
                         "(docs/quantize.md); times nothing", {}, "collect_fidelity"),
    "targets": ("the CPU targets (docs/benchmark_demo.md) from --from: one benchmark --json report, then quantize "
                "fidelity.json reports; measures nothing", {}, "targets"),
    "triton": ("two local tritonservers (batching on / off) vs in-process: latency and FPS at --streams",
               {"frames": 12, "threads": 2, "streams": [1, 2, 4]}, "triton_streams"),
}
# the defaults every preset starts from (the help texts name them)
BASE = {"backends": "torch,onnxruntime,openvino,tensorrt", "precisions": "fp32,fp16,int8", "prompts": [1, 16],
        "imgsz": None, "threads": None, "flops": False, "frames": None, "rounds": 3, "grid": 8,
        "graph": "object_decoder", "streams": None}


def add_arguments(p):
    p.add_argument("--preset", choices=sorted(PRESETS), help="what to measure (default table): " + "; ".join(
        "%s: %s" % (k, v[0]) for k, v in PRESETS.items()))
    p.add_argument("--model", action="append", metavar="BUNDLE", help="FP32 model bundle (repeat for several "
                   "models) or a Triton URL grpc://... / http://...; default: export the weights below into the work "
                   "folder")
    w = p.add_argument_group("weights (torch row, and export when no --model is given)")
    w.add_argument("--checkpoint", metavar="PTH", help="RMP-SAM checkpoint (default: the shipped demo weights, or "
                   "the seeded random weights a random-init bundle was exported from)")
    w.add_argument("--random-init", action="store_true", help="export random weights (latency does not depend "
                   "on weight values; fidelity then uses random weights)")
    w.add_argument("--variant", default="r18", choices=["r18", "r50"], help="with --random-init")
    p.add_argument("--backends", help="comma list: torch, onnxruntime (alias ort), openvino, tensorrt (default %s; missing ones get a "
                   "'not installed' row; studies run the first one)" % BASE["backends"])
    p.add_argument("--precisions", help="comma list: fp32, fp16, int8, bf16, int8+bf16 (bf16: OpenVINO rows only; "
                   "default %s)" % BASE["precisions"])
    p.add_argument("--imgsz", nargs="+", metavar="PX|official", help="long side(s) in pixels, or 'official': the "
                   "official keep-ratio policy on a 1333x800 photo (default: the bundle's size; --preset paper: official)")
    p.add_argument("--prompts", type=int, nargs="+", help="prompt counts decoded in one call (default 1 16)")
    add_runs(p, help_text="timed rounds per stage")
    p.add_argument("--warmup", type=int, default=DEFAULTS["warmup"], help="warm-up calls per row and stage, not "
                   "timed (default %d)" % DEFAULTS["warmup"])
    p.add_argument("--max-seconds", type=float, help="time cap per stage (at least 3 rounds)")
    add_threads(p, help_text="CPU threads for every backend (default: usable cores; 2 in the named presets)")
    add_device(p)
    p.add_argument("--flops", action="store_true", default=None, help="show parameters and GFLOPs per stage")
    p.add_argument("--fidelity-images", type=int, default=2, help="shipped images for the fidelity column "
                   "(default 2; 0 = skip)")
    p.add_argument("--work", help="folder for exported/quantized bundles (default: <model>.bench, or "
                   "runs/benchmark)")
    s = p.add_argument_group("studies (--preset soak / demo / profile / triton)")
    s.add_argument("--frames", type=int, help="soak: frames (default 1000); demo: frames per run (30); triton: "
                   "frames per stream per round (12)")
    s.add_argument("--rounds", type=int, help="demo / triton: alternated rounds, medians count (default 3)")
    s.add_argument("--grid", type=int, help="demo: everything-mode points per side (default 8 = 64 prompts)")
    s.add_argument("--source", help="demo: video (default: the shipped clip)")
    s.add_argument("--graph", choices=("encoder", "prompt_decoder", "object_decoder"),
                   help="profile: the graph (default object_decoder)")
    s.add_argument("--streams", type=int, nargs="+", help="triton, or --model grpc://...: concurrent client "
                   "streams (default 1 2 4; docs/triton.md)")
    p.add_argument("--from", dest="inputs", nargs="+", metavar="PATH", help="summary presets: the results read "
                   "instead of measuring (targets: a benchmark JSON + fidelity.json files; collect-fidelity: "
                   "quantized bundles)")
    p.add_argument("--json", help="write the whole report (every row with its latency summaries) here")
    p.add_argument("--md", help="write the header + table as Markdown here")
    p.add_argument("--plot", help="table presets: latency-vs-fidelity and per-stage plots (PNG)")
    add_force(p, "existing --json/--md/--plot files")
    p.add_argument("--paper", dest="preset", action="store_const", const="paper", help="shorthand for --preset paper")
    p.add_argument("--soak", type=int, metavar="N", help="shorthand for --preset soak --frames N")


def apply_preset(args):
    """Fill the options not given from the preset, then from ``BASE`` (one place for every default)."""
    if args.soak is not None:
        args.preset, args.frames = "soak", args.soak if args.frames is None else args.frames
    args.preset = args.preset or "table"
    for key, value in dict(BASE, **PRESETS[args.preset][1]).items():
        if getattr(args, key, None) is None:
            setattr(args, key, list(value) if isinstance(value, list) else value)
    args.paper = args.preset == "paper"
    if args.imgsz:  # the shared grammar (common_args.input_size): pixels, or 'official' (kept as that word)
        from rmpsam_edge.commands.common_args import input_size
        args.imgsz = [input_size(v) or "official" for v in args.imgsz]
        if "official" in args.imgsz and PRESETS[args.preset][2] in ("ort_options", "profile_graph"):
            raise UserError("--preset %s times a square input: give --imgsz in pixels (e.g. 512)" % args.preset)
    return args


def _check_outputs(args) -> None:
    for opt in ("json", "md", "plot"):
        path = getattr(args, opt)
        if path and os.path.exists(path) and not args.force:
            raise UserError("%s exists; pass --force to overwrite it or choose another --%s" % (path, opt))
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise UserError("--%s %s: folder %s does not exist" % (opt, path, os.path.dirname(os.path.abspath(path))))


def run(args) -> int:
    args.command_argv = command_line(args)  # what was given, before the preset fills the rest
    apply_preset(args)
    from rmpsam_edge.runtime.backends import is_remote
    remote = [m for m in args.model or [] if is_remote(m)]
    if remote:  # a running Triton server
        from rmpsam_edge.benchmarks.triton_streams import run_remote
        return run_remote(remote, args.streams or [1], args.runs)
    _check_outputs(args)
    if args.runs < 1 or args.warmup < 0:
        raise UserError("--runs must be >= 1 and --warmup >= 0")
    if args.plot and PRESETS[args.preset][2]:
        raise UserError("--plot draws the latency table; --preset %s has no plot (drop --plot)" % args.preset)
    study = PRESETS[args.preset][2]
    if study:
        import importlib
        from rmpsam_edge.timing import thread_env, usable_cores
        args.thread_env = thread_env(args.threads or usable_cores())  # before any backend library is imported
        report, markdown = importlib.import_module("rmpsam_edge.benchmarks." + study).run(args)
    else:
        from rmpsam_edge.benchmarks.rows import run_table
        report, markdown = run_table(args)
    sys.stdout.write(markdown + "\n")
    write_report(args, report, markdown)
    return 0


def write_report(args, report: dict, markdown: str) -> None:
    """--json / --md (and --plot for the table), each complete or absent (rmpsam_edge.atomic)."""
    from rmpsam_edge.atomic import atomic_file
    if args.md:
        with atomic_file(args.md, force=args.force) as tmp:
            with open(tmp, "w") as f:
                f.write(markdown + "\n")
    if args.json:
        with atomic_file(args.json, force=args.force) as tmp:
            with open(tmp, "w") as f:
                json.dump(report, f, indent=1, default=_json_default)
                f.write("\n")
    if args.plot:
        from rmpsam_edge.benchmarks.plot import plot_rows
        with atomic_file(args.plot, force=args.force) as tmp:
            plot_rows(report["rows"], tmp, args.prompts, title=report["header"]["command"][:150])


def command_line(args) -> list:
    """This run's argv; called from Python (``main([...])``) sys.argv is someone else's, so the command is
    rebuilt from the parsed options."""
    argv = sys.argv[1:]
    if "benchmark" in argv[:2]:
        return ["rmpsam-edge"] + argv
    from rmpsam_edge.cli import build_parser
    defaults = vars(build_parser(only="benchmark").parse_args(["benchmark"]))
    cmd = ["rmpsam-edge", "benchmark"]
    given = sorted(vars(args).items(), key=lambda kv: (kv[0] not in ("model", "preset"), kv[0]))
    for key, value in given:
        if key.startswith("_") or key in ("command", "command_argv", "soak", "paper", "thread_env") or \
                value in (None, False, []) or value == defaults.get(key):
            continue
        flag = "--from" if key == "inputs" else "--" + key.replace("_", "-")
        values = value if isinstance(value, list) else [value]
        cmd += [flag] if value is True else ([flag] + [str(v) for v in values] if key != "model" else
                                              sum([[flag, str(v)] for v in values], []))
    return cmd


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
