"""``--preset opset-speed``: the same weights exported at two opsets (e.g. 16 = decomposed LayerNorm vs 17 =
LayerNormalization) on ONNX Runtime and OpenVINO CPU: encoder, one-prompt decoder and object decoder, every
(bundle, backend, graph) interleaved round-robin in one process (``timing.measure``), and what each runtime makes of
the graphs (ONNX Runtime's optimised graph: node count and LayerNormalization nodes; OpenVINO's compiled model: op
count and MVN layers).

    rmpsam-edge benchmark --preset opset-speed --model BUNDLE_A --model BUNDLE_B [--threads 2] [--runs 20] \\
        [--json results/name.json --md results/name.md] [--force]

The older ``python -m rmpsam_edge.benchmarks.opset_speed BUNDLE_A BUNDLE_B [--threads N] [--runs N] --out PATH
[--force]`` (recorded in a committed results file) runs the same preset, writing PATH.json and PATH.md.
"""
import glob
import os
import sys


def run(args):
    """-> (report, Markdown) for the bundles given with ``--model`` (thread variables set by the caller)."""
    from rmpsam_edge.errors import UserError
    if not args.model or len(args.model) < 2:
        raise UserError("--preset opset-speed compares bundles: pass --model BUNDLE_A --model BUNDLE_B")
    from rmpsam_edge import timing
    from rmpsam_edge.runtime import compare, load_runner
    import rmpsam_edge
    images = sorted(glob.glob(os.path.join(os.path.dirname(rmpsam_edge.__file__), "assets", "images", "*.jpg")))
    calls, opsets = {}, {}
    for path in args.model:
        for backend in ("onnxruntime", "openvino"):
            runner, bundle, _ = load_runner(path, backend=backend, device="cpu", threads=args.threads, verbose=False)
            case = compare.make_cases(bundle, images[:1])[0]
            f = runner.encode(case["image"])
            key = "opset %s %s" % (bundle.manifest["opset"], backend)
            opsets[key] = path
            calls[key + " encoder"] = lambda r=runner, c=case: r.encode(c["image"])
            calls[key + " prompt x1"] = lambda r=runner, c=case, f=f: r.decode_prompts(f, c["boxes"][:1])
            calls[key + " object decoder"] = lambda r=runner, c=case, f=f: r.decode_objects(f, c["class_embed"])
    fused = {"%s %s" % (os.path.basename(os.path.normpath(path)), g): _fused(os.path.join(path, g + ".onnx"))
             for path in args.model for g in ("prompt_decoder", "object_decoder")}
    load_start = timing.load_average()
    stats = timing.measure(calls, runs=args.runs, warmup=2)
    p50 = {k: round(s.p50, 2) for k, s in stats.items()}
    cpu = {k: round(s.cpu_p50, 2) for k, s in stats.items()}
    report = {"command": " ".join(args.command_argv), "bundles": opsets, "threads": args.threads, "runs": args.runs,
              "p50_ms": p50, "cpu_p50_ms": cpu, "runtime_graphs": fused,
              "load_average_start": load_start, "load_average_end": timing.load_average()}
    rows = ["| bundle, backend | encoder ms | prompt x1 ms | object decoder ms | (CPU ms: enc / prompt / obj) |",
            "|---|---|---|---|---|"]
    rows += ["| %s | %s | %s | %s | %s / %s / %s |" % (
        k, p50[k + " encoder"], p50[k + " prompt x1"], p50[k + " object decoder"], cpu[k + " encoder"],
        cpu[k + " prompt x1"], cpu[k + " object decoder"]) for k in opsets]
    rows += ["", "| graph | ONNX Runtime optimised: nodes, LayerNormalization | OpenVINO compiled: ops, MVN |",
             "|---|---|---|"]
    rows += ["| %s | %d, %d | %d, %d |" % ((k,) + tuple(v)) for k, v in fused.items()]
    md = "\n".join(["# Opset speed (p50 of %d interleaved rounds, %d threads)" % (args.runs, args.threads), "",
                    "command: `%s`" % report["command"], "",
                    "load average start %s, end %s" % (load_start, report["load_average_end"]), ""] + rows)
    return report, md


def main(argv=None) -> int:
    """The older entry point: BUNDLE_A BUNDLE_B [--threads N] [--runs N] --out PATH [--force] -> the preset."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m rmpsam_edge.benchmarks.opset_speed", description=__doc__.split("\n")[0])
    p.add_argument("bundles", nargs=2)
    p.add_argument("--threads")
    p.add_argument("--runs")
    p.add_argument("--out", required=True, help="results path without extension (.json and .md are written)")
    p.add_argument("--force", action="store_true", help="overwrite existing results")
    a = p.parse_args(argv)
    from rmpsam_edge.cli import main as cli
    return cli(["benchmark", "--preset", "opset-speed", "--model", a.bundles[0], "--model", a.bundles[1],
                "--json", a.out + ".json", "--md", a.out + ".md"] + ["--force"] * a.force +
               sum([[flag, v] for flag, v in (("--threads", a.threads), ("--runs", a.runs)) if v], []))


def _fused(path: str):
    """-> (ORT optimised nodes, its LayerNormalization nodes, OpenVINO compiled ops, its MVN layers) of a graph."""
    import tempfile

    import onnx
    import onnxruntime as ort
    import openvino as ov
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.optimized_model_filepath = os.path.join(tmp, "opt.onnx")
        ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        nodes = onnx.load(so.optimized_model_filepath).graph.node
    ops = ov.Core().compile_model(path, "CPU").get_runtime_model().get_ops()
    kinds = [op.get_rt_info()["layerType"].astype(str) for op in ops]
    return (len(nodes), sum(n.op_type == "LayerNormalization" for n in nodes), len(ops), kinds.count("MVN"))


if __name__ == "__main__":
    sys.exit(main())
