"""Per-stage speed of the exported graphs vs the project's PyTorch eager model, measured in ONE run.

    .venv/bin/python -m rmpsam_edge.benchmarks.stage_speed --threads 2 --imgsz 512 --runs 15

R18 at 512x512 by default. Backends: PyTorch eager (``TorchRunner``, the stand-in for the official code),
ONNX Runtime CPU and OpenVINO CPU (f32) on a bundle exported at the start of the run (or ``--model``).
Stages: encoder, 1 prompt, 16 prompts in one call vs 16 calls of one prompt, 64 prompts (the bundle's automatic
graph choice, and both prompt graphs forced), object decoder, and the pre/post-processing share of one
prompt on one image end to end (Predictor). Every stage runs its backends round-robin (``timing.measure``).
Writes ``<out>/stage_speed_<variant>_<imgsz>.json`` and ``.md`` and prints the Markdown.
"""
import argparse
import datetime
import json
import os
import platform
import sys
import tempfile

from rmpsam_edge.commands.common_args import add_deprecated, add_model, add_runs
from rmpsam_edge.media import asset_path

from .timing import load_average

REFERENCE = {  # from the issue, measured earlier on this machine kind (R18, 512x512, 2 threads); not re-run here
    "official PyTorch code": {"encoder": 171.0, "prompt x1": 47.0, "prompt x16 one call": 66.0,
                              "object decoder": 112.0},
    "nanosam on ONNX Runtime": {"encoder": 46.0, "prompt x1": 6.0},
}
NANOSAM_TOTAL_MS = 52.0


def _parser():
    p = argparse.ArgumentParser(prog="python -m rmpsam_edge.benchmarks.stage_speed", description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--imgsz", type=int, default=512)
    p.add_argument("--variant", choices=("r18", "r50"), default="r18")
    add_runs(p, help_text="recorded rounds per stage (after 2 warm-up rounds)")
    p.add_argument("--max-seconds", type=float, default=60.0, help="time cap per stage")
    add_model(p, help_text="use this bundle instead of exporting one (must match --variant/--imgsz)")
    add_deprecated(p, "--bundle", "--model", "model")
    p.add_argument("--checkpoint", help="weights (default: the shipped demo weights if present, else random)")
    p.add_argument("--render", metavar="JSON", help="only re-write the Markdown of an earlier run's JSON")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.render:
        with open(args.render) as f:
            md = to_markdown(json.load(f))
        with open(os.path.splitext(args.render)[0] + ".md", "w") as f:
            f.write(md)
        print(md)
        return 0
    from .timing import measure, thread_env
    env = thread_env(args.threads)

    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    from rmpsam_edge import checkpoint as ck
    from rmpsam_edge.predictor import Predictor
    from rmpsam_edge.preprocess import load_image, normalize_boxes, points_to_boxes, preprocess
    from rmpsam_edge.runtime.loader import load_runner
    from rmpsam_edge.torch_runner import TorchRunner

    def say(msg):
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()

    load_start = load_average()
    if args.checkpoint or (os.path.isfile(ck.DEFAULT_WEIGHTS) and args.variant == "r18"):
        model, info = ck.load_checkpoint(args.checkpoint)
        weights = os.path.basename(info["path"])
    else:
        model, info = ck.random_model(args.variant, seed=0)
        weights = "random init (seed 0)"
    rng = np.random.default_rng(0)
    class_embed = rng.standard_normal((133, 2, 768)).astype(np.float32)  # COCO-panoptic-sized vocabulary
    class_embed /= np.linalg.norm(class_embed, axis=-1, keepdims=True)
    tmp = None
    bundle = args.model
    if bundle is None:
        from rmpsam_edge.export.exporter import export_bundle
        tmp = tempfile.mkdtemp(prefix="rmpsam_stage_speed_")
        bundle = os.path.join(tmp, "bundle")
        say("exporting %s at %d px to %s ..." % (args.variant, args.imgsz, bundle))
        export_bundle(model, bundle, input_size=args.imgsz, class_embed=class_embed,
                      weights={"source": weights}, log=lambda s: None)

    runners = {"pytorch eager": TorchRunner(model, threads=args.threads)}
    runners["pytorch eager"].activate()
    spec = None
    for name, backend in (("onnxruntime", "onnxruntime"), ("openvino", "openvino")):
        r, b, line = load_runner(bundle, backend, threads=args.threads, verbose=False)
        runners[name] = r
        spec = b.spec()
        say("loaded " + line)
    describe = {k: r.describe() for k, r in runners.items()}

    img = load_image(asset_path("images", "astronaut.jpg"))
    x, meta = preprocess(img, spec)
    feats = runners["pytorch eager"].encode(x)
    h, w = meta.img_shape

    def clicks(n):
        pts = np.stack([rng.uniform(0, w, n), rng.uniform(0, h, n)], axis=1)
        return normalize_boxes(points_to_boxes(pts), meta.img_shape)

    b1, b16, b64 = clicks(1), clicks(16), clicks(64)
    results = {}

    def stage(label, fns, runs=args.runs):
        say("measuring %s ..." % label)
        stats = measure(fns, runs=runs, warmup=2, max_seconds=args.max_seconds)
        results[label] = {k: s.to_dict() for k, s in stats.items()}

    def each(fn):
        return {k: (lambda r=r: fn(r)) for k, r in runners.items()}

    bundle_runners = {k: r for k, r in runners.items() if k != "pytorch eager"}
    stage("encoder", each(lambda r: r.encode(x)))
    stage("prompt x1", each(lambda r: r.decode_prompts(feats, b1)))
    stage("prompt x16 one call", each(lambda r: r.decode_prompts(feats, b16)))
    stage("prompt x1 called 16 times", each(lambda r: [r.decode_prompts(feats, b16[i:i + 1]) for i in range(16)]))
    stage("prompt x64 (auto graph)", each(lambda r: r.decode_prompts(feats, b64)))
    forced = {}
    for k, r in bundle_runners.items():
        for g in ("prompt_decoder", "prompt_decoder_many"):
            forced["%s %s" % (k, g)] = (lambda r=r, g=g: r._run(g, {"features": feats, "boxes": b64}))
    stage("prompt x64 per graph", forced)
    stage("object decoder", each(lambda r: r.decode_objects(feats, class_embed)))

    # end to end: one prompt on one image, pre/post-processing share (Predictor timings)
    street = asset_path("video", "vtest_clip.avi")
    import cv2
    cap = cv2.VideoCapture(street)
    ok, frame = cap.read()
    cap.release()
    images = {"astronaut 512x512": img}
    if ok:
        images["street frame %dx%d" % (frame.shape[1], frame.shape[0])] = frame[:, :, ::-1].copy()
    shares = {}
    for label, image in images.items():
        preds = {k: Predictor(r, spec) for k, r in runners.items()}
        parts = {k: [] for k in preds}

        def e2e(k, p, image=image):
            p.set_image(image)
            H, W = image.shape[:2]
            p.predict(points=[[W // 2, H // 2]])
            parts[k].append(dict(p.timings))

        stage("end to end 1 prompt, %s" % label, {k: (lambda k=k, p=p: e2e(k, p)) for k, p in preds.items()})
        shares[label] = {}
        for k, rows in parts.items():
            rows = rows[2:] or rows  # drop warm-up
            tot = {s: float(np.median([r.get(s, 0.0) for r in rows])) for s in
                   ("preprocess", "encoder", "prompts", "decoder", "postprocess")}
            host = tot["preprocess"] + tot["prompts"] + tot["postprocess"]
            shares[label][k] = dict(tot, host_ms=round(host, 3), share=round(host / max(sum(tot.values()), 1e-9), 4))

    report = _summarise(results, shares, args, env, describe, weights, load_start, bundle if tmp is None else None)
    report["gflops"] = _gflops(bundle, x.shape, feats.shape, class_embed.shape)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "stage_speed_%s_%d" % (args.variant, args.imgsz))
    with open(stem + ".json", "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    md = to_markdown(report)
    with open(stem + ".md", "w") as f:
        f.write(md)
    print(md)
    if tmp is not None:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _gflops(bundle, image_shape, feat_shape, embed_shape) -> dict:
    """GFLOPs (2 x MACs of Conv/MatMul/Gemm) of each measured call, from the bundle's graphs."""
    try:
        from .flops import count_graph
    except ImportError:
        return {}
    g = lambda name: os.path.join(bundle, name + ".onnx")  # noqa: E731
    out = {"encoder": count_graph(g("encoder"), {"image": list(image_shape)})["gflops"],
           "object decoder": count_graph(g("object_decoder"), {"features": list(feat_shape),
                                                               "class_embed": list(embed_shape)})["gflops"]}
    for n in (1, 16, 64):
        out["prompt x%d fold graph" % n] = count_graph(g("prompt_decoder"), {"features": list(feat_shape),
                                                                             "boxes": [n, 4]})["gflops"]
    if os.path.isfile(g("prompt_decoder_many")):
        out["prompt x64 kv graph"] = count_graph(g("prompt_decoder_many"), {"features": list(feat_shape),
                                                                            "boxes": [64, 4]})["gflops"]
    return {k: round(v, 3) for k, v in out.items()}


def _summarise(results, shares, args, env, describe, weights, load_start, bundle):
    """Ratios and targets, from wall-clock p50 and, because other jobs may share the machine, also from the
    process CPU time p50 divided by the thread count (the wall time an idle machine would at best give)."""
    def p50(stage, backend, cpu=False):
        s = results[stage][backend]
        return s["cpu_p50_ms"] / float(args.threads) if cpu else s["p50_ms"]

    backends = [b for b in describe if b != "pytorch eager"]
    ratios, targets = {}, []
    for b in backends:
        r = {}
        for kind, cpu in (("wall", False), ("cpu/threads", True)):
            eager = p50("encoder", "pytorch eager", cpu) + p50("prompt x1", "pytorch eager", cpu)
            total = p50("encoder", b, cpu) + p50("prompt x1", b, cpu)
            r[kind] = {"encoder+1 prompt ms": round(total, 2), "speedup vs pytorch eager": round(eager / total, 2),
                       "16 in one call / 16 calls": round(p50("prompt x16 one call", b, cpu)
                                                          / p50("prompt x1 called 16 times", b, cpu), 3),
                       "64 prompts ms per prompt": round(p50("prompt x64 (auto graph)", b, cpu) / 64.0, 3),
                       "64 prompts fold / kv graph": round(
                           p50("prompt x64 per graph", "%s prompt_decoder" % b, cpu)
                           / p50("prompt x64 per graph", "%s prompt_decoder_many" % b, cpu), 3),
                       "object decoder ms": round(p50("object decoder", b, cpu), 2),
                       "one-prompt decoder ms": round(p50("prompt x1", b, cpu), 2)}
        ratios[b] = r
        for kind in ("wall", "cpu/threads"):
            v = r[kind]
            targets += [
                (b, kind, "encoder + 1 prompt >= 2x faster than PyTorch eager", v["speedup vs pytorch eager"] >= 2.0,
                 "%.2fx" % v["speedup vs pytorch eager"]),
                (b, kind, "encoder + 1 prompt <= nanosam's 52 ms", v["encoder+1 prompt ms"] <= NANOSAM_TOTAL_MS,
                 "%.1f ms" % v["encoder+1 prompt ms"]),
                (b, kind, "object decoder < 20 ms", v["object decoder ms"] < 20.0, "%.1f ms" % v["object decoder ms"]),
                (b, kind, "one-prompt decoder < 5 ms", v["one-prompt decoder ms"] < 5.0,
                 "%.2f ms" % v["one-prompt decoder ms"]),
                (b, kind, "16 prompts in one call < 0.3x 16 calls", v["16 in one call / 16 calls"] < 0.3,
                 "%.3fx" % v["16 in one call / 16 calls"]),
            ]
        for label, s in shares.items():
            targets.append((b, "wall", "pre/post < 10%% of end to end (%s)" % label, s[b]["share"] < 0.10,
                            "%.1f%% (%.1f of %.1f ms)" % (100 * s[b]["share"], s[b]["host_ms"],
                                                          s[b]["host_ms"] / max(s[b]["share"], 1e-9))))
    return {
        "command": "python -m rmpsam_edge.benchmarks.stage_speed " + " ".join(
            "--%s %s" % (k.replace("_", "-"), v) for k, v in (("threads", args.threads), ("imgsz", args.imgsz),
                                                             ("variant", args.variant), ("runs", args.runs))),
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "load_average_start": load_start, "load_average_end": load_average(),
        "threads": args.threads, "thread_env": env, "variant": args.variant, "imgsz": args.imgsz,
        "weights": weights, "bundle": bundle, "backends": describe, "stages": results, "prepost": shares,
        "ratios": ratios,
        "targets": [{"backend": b, "basis": k, "target": t, "met": bool(m), "value": v}
                    for b, k, t, m, v in targets],
        "reference_not_rerun": REFERENCE,
    }


def to_markdown(rep) -> str:
    lines = ["# Stage speed: %s at %dx%d, %d threads" % (rep["variant"].upper(), rep["imgsz"], rep["imgsz"],
                                                        rep["threads"]), "",
             "Command: `%s`  " % rep["command"],
             "Date %s; %s; %s CPUs; load average at start %s, at end %s (other jobs share this machine: "
             "compare ratios within this run, absolute numbers are inflated by the load)."
             % (rep["date"], rep["processor"], rep["cpu_count"], rep["load_average_start"], rep["load_average_end"]),
             "Weights: %s. Thread settings: %s." % (rep["weights"], ", ".join("%s=%s" % kv for kv in
                                                                              sorted(rep["thread_env"].items()))), ""]
    for k, v in rep["backends"].items():
        lines.append("- **%s**: %s" % (k, v))
    names = list(rep["backends"])
    lines += ["", "## Latency, ms (p50 / p90; process CPU ms p50 in brackets)", "",
              "| stage | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for stage, row in rep["stages"].items():
        if stage == "prompt x64 per graph":
            continue
        cells = []
        for n in names:
            s = row.get(n)
            cells.append("-" if s is None else "%.1f / %.1f [%.0f]" % (s["p50_ms"], s["p90_ms"], s["cpu_p50_ms"]))
        lines.append("| %s | %s |" % (stage, " | ".join(cells)))
    per = rep["stages"].get("prompt x64 per graph", {})
    if per:
        lines += ["", "64 prompts per prompt graph (p50 ms): " + ", ".join("%s %.1f" % (k, v["p50_ms"])
                                                                         for k, v in per.items())]
    lines += ["", "## Pre/post-processing share, one prompt end to end (p50 ms)", "",
              "| image | backend | preprocess | encoder | prompts | decoder | postprocess | share |",
              "|---|---|---|---|---|---|---|---|"]
    for label, rows in rep["prepost"].items():
        for b, s in rows.items():
            lines.append("| %s | %s | %.1f | %.1f | %.2f | %.1f | %.1f | %.1f%% |" % (
                label, b, s["preprocess"], s["encoder"], s["prompts"], s["decoder"], s["postprocess"], 100 * s["share"]))
    keys = list(next(iter(rep["ratios"].values()))["wall"].keys())
    lines += ["", "## Ratios (basis: wall = wall-clock p50; cpu/threads = process CPU ms p50 / threads)", "",
              "| backend | basis | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for b, r in rep["ratios"].items():
        for kind, v in r.items():
            lines.append("| %s | %s | %s |" % (b, kind, " | ".join(str(v[k]) for k in keys)))
    gf = rep.get("gflops") or {}
    if gf:
        enc = rep["ratios"]
        lines += ["", "Work per call (GFLOPs = 2 x MACs of Conv/MatMul/Gemm): " + ", ".join(
            "%s %.2f" % kv for kv in gf.items()) + ". At the cpu/threads times above, the encoder runs at " + ", ".join(
            "%s %.0f GFLOP/s" % (b, gf["encoder"] / (rep["stages"]["encoder"][b]["cpu_p50_ms"] / rep["threads"]) * 1e3)
            for b in enc) + " and the object decoder at " + ", ".join(
            "%s %.0f GFLOP/s" % (b, gf["object decoder"] / (rep["stages"]["object decoder"][b]["cpu_p50_ms"]
                                                            / rep["threads"]) * 1e3) for b in enc)
            + ". Meeting 'encoder + 1 prompt <= %.0f ms' would take %.0f GFLOP/s and 'object decoder < 20 ms' %.0f GFLOP/s."
            % (NANOSAM_TOTAL_MS, (gf["encoder"] + gf["prompt x1 fold graph"]) / NANOSAM_TOTAL_MS * 1e3,
               gf["object decoder"] / 20.0 * 1e3)]
    lines += ["", "## Targets (issue #5)", "", "| backend | basis | target | met | value |", "|---|---|---|---|---|"]
    for t in rep["targets"]:
        lines.append("| %s | %s | %s | %s | %s |" % (t["backend"], t["basis"], t["target"],
                                                     "yes" if t["met"] else "**no**", t["value"]))
    lines += ["", "Reference figures from the issue (not re-run): " + "; ".join(
        "%s: %s" % (k, ", ".join("%s %.0f ms" % kv for kv in v.items())) for k, v in rep["reference_not_rerun"].items()),
        ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
