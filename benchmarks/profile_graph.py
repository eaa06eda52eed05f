"""ONNX Runtime kernel-time profile of one graph of a bundle (share by op type, the slowest nodes), on a square
random input; writes Markdown.

    rmpsam-edge benchmark --preset profile --model bundles/r18 --graph object_decoder --imgsz 512 \\
        --threads 2 --runs 15 --md benchmarks/results/object_decoder_profile_r18_512.md
"""
import collections
import json
import os
import tempfile

import numpy as np

STRIDE = 4  # the features are 1/4 of the padded image
CENTRE_BOX = np.array([[0.5, 0.5, 0.5, 0.5]], np.float32)  # the graphs take normalised (cx, cy, w, h)


def feeds_for(bundle, graph: str, size: int) -> dict:
    s = -(-size // 32) * 32
    rng = np.random.RandomState(0)
    if graph == "encoder":
        return {"image": rng.rand(1, 3, s, s).astype(np.float32)}
    f = rng.rand(1, 256, s // STRIDE, s // STRIDE).astype(np.float32)
    if graph == "object_decoder":
        return {"features": f, "class_embed": bundle.class_embed()}
    return {"features": f, "boxes": CENTRE_BOX}


def run(args):
    """-> (report, Markdown): kernel time by op type and the slowest nodes of ``--graph``."""
    from rmpsam_edge.errors import UserError
    if not args.model:
        raise UserError("--preset profile profiles a bundle's graph: pass --model BUNDLE (and --graph)")
    args.imgsz = args.imgsz[0]
    threads = args.threads
    import onnxruntime as ort
    from rmpsam_edge.runtime.bundle import Bundle
    from rmpsam_edge import timing
    bundle = Bundle.open(args.model[0])
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.intra_op_num_threads = threads
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "prof")
    sess = ort.InferenceSession(bundle.graph_path(args.graph), so, providers=["CPUExecutionProvider"])
    feeds = feeds_for(bundle, args.graph, args.imgsz)
    for _ in range(3):
        sess.run(None, feeds)
    sess.end_profiling()
    so.enable_profiling = True
    sess = ort.InferenceSession(bundle.graph_path(args.graph), so, providers=["CPUExecutionProvider"])
    sess.run(None, feeds)  # warm-up inside the profile, dropped below by counting only the last runs
    load = timing.load_average()
    for _ in range(args.runs):
        sess.run(None, feeds)
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"][-args.runs:]
    t0 = runs[0]["ts"]
    by_op, by_node = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= t0:
            by_op[e["args"]["op_name"]] += e["dur"]
            by_node[(e["name"][:-len("_kernel_time")], e["args"]["op_name"])] += e["dur"]
    total = float(sum(by_op.values()))
    wall = float(np.median([e["dur"] for e in runs])) / 1000.0
    cmd = " ".join(args.command_argv)
    lines = ["# ONNX Runtime profile: %s, %dx%d, %d threads, %d runs" % (args.graph, args.imgsz, args.imgsz,
                                                                     threads, args.runs), "",
             "Command: `%s`" % cmd, "",
             "onnxruntime %s; median model_run %.2f ms; kernel time %.2f ms/run; load average %s (shared machine)."
             % (ort.__version__, wall, total / args.runs / 1000.0, load), "", "| op type | share |", "|---|---|"]
    lines += ["| %s | %.1f %% |" % (k, 100.0 * v / total) for k, v in by_op.most_common(10)]
    lines += ["", "| node | op | ms/run |", "|---|---|---|"]
    lines += ["| %s | %s | %.2f |" % (n, o, v / args.runs / 1000.0) for (n, o), v in by_node.most_common(15)]
    report = {"command": cmd, "graph": args.graph, "imgsz": args.imgsz, "threads": threads, "runs": args.runs,
              "onnxruntime": ort.__version__, "model_run_p50_ms": wall, "load_average": load,
              "kernel_us_by_op": dict(by_op.most_common()),
              "kernel_us_by_node": [[n, o, v] for (n, o), v in by_node.most_common(30)]}
    return report, "\n".join(lines)
