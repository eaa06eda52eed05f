"""The CPU targets (the targets table of docs/benchmark_demo.md and README), computed from one committed benchmark
JSON and quantize fidelity reports, for the ISA named in the benchmark's header (``isa``, from /proc/cpuinfo):

1. best INT8 encoder + 1 prompt >= 7x the eager model (torch FP32 encoder + 1 prompt, same run);
2. an FP32-accuracy path (FP32 encoder, any backend) + 1 prompt >= 3x eager;
3. INT8 prompt-mask IoU vs FP32 >= 0.95 at 512 (the best of the fidelity reports made at 512x512).

Every ratio is between rows of the one benchmark run (interleaved per stage): no number from another machine.

    rmpsam-edge benchmark --preset targets --from benchmarks/results/bench_cpu_isa_r18_512.json \\
        R1/fidelity.json R2/fidelity.json --json benchmarks/results/targets_cpu_r18_512.json \\
        --md benchmarks/results/targets_cpu_r18_512.md
"""
import json
import re

SPEEDUP_INT8, SPEEDUP_FP32, MIN_IOU, IOU_SIZE = 7.0, 3.0, 0.95, 512


def _p50(row, key, sub=None):
    v = row.get(key) or {}
    if sub is not None:
        v = v.get(sub) or {}
    return v.get("p50")


def _input_size(rep: dict):
    m = re.search(r"input (\d+)x(\d+)", (rep.get("latency") or {}).get("setting", ""))
    return max(int(m.group(1)), int(m.group(2))) if m else None


def compute(bench: dict, fidelity_reports) -> dict:
    head = bench.get("header") or {}
    rows = {(r["backend"], r["precision"]): r for r in bench["rows"] if r.get("status") == "ok"}
    enc = {k: _p50(r, "encoder_ms") for k, r in rows.items()}
    prm = {k: _p50(r, "prompt_ms", "1") for k, r in rows.items()}
    eager = enc[("torch", "fp32")] + prm[("torch", "fp32")]
    # best path: fastest encoder of the precision class + fastest 1-prompt decoder (any backend, same run)
    fast_prompt = min(v for (b, p), v in prm.items() if b != "torch")
    int8 = {k: v for k, v in enc.items() if k[0] != "torch" and "int8" in k[1]}
    f32 = {k: v for k, v in enc.items() if k[1] == "fp32" and k[0] != "torch"}
    load = ", load average (1/5/15 min) %s at the start, %s at the end" % (
        head["load_average_start"], head["load_average_end"]) if "load_average_start" in head else ""
    out = {"cpu": head.get("cpu"), "isa": head.get("isa"), "eager_enc_plus_1": eager, "fast_prompt_1": fast_prompt,
           "load_note": "%s cores shared%s; ratios between rows of one stage are interleaved; stage sums mix "
                        "stages measured one after another" % (head.get("cores_logical") or "?", load)}
    for key, pool, need in (("t1", int8, SPEEDUP_INT8), ("t2", f32, SPEEDUP_FP32)):
        best = min(pool, key=pool.get) if pool else None
        ms = pool[best] + fast_prompt if best else None
        out[key] = {"path": "%s %s encoder + fastest 1-prompt decoder" % best if best else "no row",
                    "ms": ms, "speedup_vs_eager": eager / ms if ms else None,
                    "target": ">= %gx eager" % need, "met": bool(ms and eager / ms >= need)}
    fid = []
    for path in fidelity_reports:
        with open(path) as f:
            rep = json.load(f)
        q = rep["quantization"]
        fid.append({"report": path, "precision": q["precision"], "backend": q["backend"],
                    "recipe": (q.get("recipe") or {}).get("name"), "input": _input_size(rep),
                    "mask_iou_mean": rep["metrics"]["mask_iou_mean"],
                    "mask_iou_worst_decile": rep["metrics"]["mask_iou_worst_decile"]})
    at = [r for r in fid if r["input"] == IOU_SIZE and "int8" in r["precision"]]
    best = max(at, key=lambda r: r["mask_iou_mean"]) if at else None
    out["t3"] = {"best": best, "reports": fid, "target": "INT8 prompt-mask IoU >= %.2f at %d" % (MIN_IOU, IOU_SIZE),
                 "met": bool(best and best["mask_iou_mean"] >= MIN_IOU)}
    return out


def _yes(ok) -> str:
    return "yes" if ok else "no"


def markdown(t: dict, cmd: str, bench_cmd: str) -> str:
    isa = " ".join(t["isa"]) if t.get("isa") else "unknown (the benchmark header has no isa)"
    L = ["# CPU targets on %s, ISA: %s (R18 demo weights, 512x512)" % (t.get("cpu") or "?", isa), "",
         "Command: `%s`" % cmd, "", "Benchmark: `%s`" % bench_cmd, "",
         "Every ratio is between rows of that one run on this machine (%s)." % t["load_note"], "",
         "| # | target | ISA | path | measured | met |", "|---|---|---|---|---|---|"]
    for n, key in ((1, "t1"), (2, "t2")):
        r = t[key]
        L.append("| %d | %s %s | %s | %s | %s | %s |" % (
            n, "INT8 encoder + 1 prompt" if key == "t1" else "FP32-accuracy path + 1 prompt", r["target"], isa,
            r["path"], "%.1f ms = %.2fx eager (%.1f ms)" % (r["ms"], r["speedup_vs_eager"], t["eager_enc_plus_1"])
            if r["ms"] else "-", _yes(r["met"])))
    b = t["t3"]["best"]
    L.append("| 3 | %s | %s | %s | %s | %s |" % (
        t["t3"]["target"], isa, "%s %s (%s)" % (b["backend"], b["precision"], b["recipe"] or "-") if b else "-",
        "%.4f (worst decile %.4f)" % (b["mask_iou_mean"], b["mask_iou_worst_decile"]) if b else "no report at %d"
        % IOU_SIZE, _yes(t["t3"]["met"])))
    L += ["", "INT8 fidelity (quantize reports, held-out shipped samples, prompt-mask IoU vs FP32):", "",
          "| report | input | precision | backend | recipe | IoU mean | worst decile |", "|---|---|---|---|---|---|---|"]
    for r in t["t3"]["reports"]:
        L.append("| %s | %s | %s | %s | %s | %.4f | %.4f |" % (
            r["report"], r["input"] or "-", r["precision"], r["backend"], r["recipe"] or "-", r["mask_iou_mean"],
            r["mask_iou_worst_decile"]))
    return "\n".join(L) + "\n"


def run(args):
    """``--preset targets``: ``--from`` one benchmark JSON, then quantize fidelity.json reports -> (report, Markdown)."""
    from rmpsam_edge.errors import UserError
    if not args.inputs:
        raise UserError("--preset targets reads results: pass --from BENCH.json [FIDELITY.json ...]")
    try:
        with open(args.inputs[0]) as f:
            bench = json.load(f)
        t = compute(bench, args.inputs[1:])
    except (OSError, ValueError, KeyError) as exc:
        raise UserError("--from %s: not a benchmark JSON followed by fidelity.json reports (%s); give the "
                        "benchmark's --json first" % (" ".join(args.inputs), exc))
    t["command"] = " ".join(args.command_argv)
    return t, markdown(t, t["command"], (bench.get("header") or {}).get("command", "?")).rstrip("\n")
