"""ONNX Runtime session options measured, not assumed: intra-op thread spinning on/off x CPU memory arena on/off,
per graph and for the encoder + 1-prompt pipeline, interleaved round-robin (rmpsam_edge.timing) in one
process, so every variant sees the same machine state. Writes JSON + Markdown.

    rmpsam-edge benchmark --preset ort-options --model bundles/r18 --imgsz 512 --threads 2 --runs 30 \\
        --json benchmarks/results/ort_session_options_r18_512.json --md benchmarks/results/ort_session_options_r18_512.md
"""
import sys

import numpy as np

from .profile_graph import CENTRE_BOX

VARIANTS = (("spin off, arena on (default)", False, True), ("spin on, arena on", True, True),
            ("spin off, arena off", False, False), ("spin on, arena off", True, False))


def run(args):
    """-> (report, Markdown): p50 of every (spinning, arena) variant per graph, interleaved."""
    from rmpsam_edge.errors import UserError

    from rmpsam_edge import timing
    if not args.model:
        raise UserError("--preset ort-options times a bundle: pass --model BUNDLE")
    args.imgsz = args.imgsz[0]
    from rmpsam_edge.runtime.bundle import Bundle
    from rmpsam_edge.runtime.onnxruntime_backend import OnnxRuntimeRunner
    bundle = Bundle.open(args.model[0])
    runners = {}
    for name, spin, arena in VARIANTS:
        r = OnnxRuntimeRunner(bundle, device="cpu", threads=args.threads, spinning=spin, arena=arena)
        r.activate()
        runners[name] = r
    s = -(-args.imgsz // 32) * 32
    x = np.random.RandomState(0).rand(1, 3, s, s).astype(np.float32)
    box = CENTRE_BOX  # the middle half of the image, normalised (cx, cy, w, h) as the graph takes it
    ce = bundle.class_embed()
    load_before = timing.load_average()
    graphs = timing.time_graphs(runners, x, box, ce, runs=args.runs, warmup=3)
    pipeline = timing.measure({n: (lambda r=r: r.decode_prompts(r.encode(x), box)) for n, r in runners.items()},
                              runs=args.runs, warmup=3)
    results = {}
    for n, by_graph in graphs.items():
        for g, st in list(by_graph.items()) + [("encoder_plus_prompt_1", pipeline[n])]:
            results.setdefault(g, {})[n] = st.to_dict()
    for stage, by_variant in results.items():
        sys.stderr.write("%s: %s\n" % (stage, ", ".join("%s %.2f" % (n, d["p50"]) for n, d in by_variant.items())))
    cmd = " ".join(args.command_argv)
    import onnxruntime as ort
    doc = {"command": cmd, "onnxruntime": ort.__version__, "threads": args.threads, "input": [s, s],
           "runs": args.runs, "load_average_before": load_before, "load_average_after": timing.load_average(),
           "variants": [v[0] for v in VARIANTS], "p50_ms": {st: {n: d["p50"] for n, d in v.items()}
                                                           for st, v in results.items()}, "stats": results}
    lines = ["# ONNX Runtime session options (p50 ms, %d interleaved rounds, %d threads, %dx%d)" % (
        args.runs, args.threads, s, s), "", "Command: `%s`" % cmd, "",
        "onnxruntime %s; load average before %s, after %s (shared machine: compare within a column)." % (
            ort.__version__, load_before, doc["load_average_after"]), "",
        "| variant | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for n in runners:
        lines.append("| %s | %s |" % (n, " | ".join("%.2f" % results[st][n]["p50"] for st in results)))
    return doc, "\n".join(lines)
