"""The demo's closing summary: frames, end-to-end FPS, per-stage mean / p50 / p90 ms, drops, what was written."""


def format_summary(summary: dict, result, outputs, note) -> str:
    lines = ["demo summary: %d frames in %.1f s, end-to-end %.2f FPS%s"
             % (summary["frames"], summary["wall_s"], summary["fps"] or 0.0,
                (" (steady %.2f FPS)" % summary["fps_steady"]) if summary.get("fps_steady") else "")]
    order = ["capture", "model.preprocess", "model.encoder", "model.prompts",
             "model.decoder", "model.matching", "model.postprocess", "inference", "draw", "write", "show", "latency"]
    stages = summary["stages"]
    names = [n for n in order if n in stages] + sorted(n for n in stages if n not in order)
    lines.append("  per stage ms (mean / p50 / p90): " + "; ".join(
        "%s %.1f/%.1f/%.1f" % (n.replace("model.", ""), stages[n]["mean"], stages[n]["p50"], stages[n]["p90"])
        for n in names))
    c = summary["counters"]
    dropped = c.get("dropped_at_capture", 0) + c.get("dropped_at_output", 0)
    if dropped:
        lines.append("  dropped to stay real-time: %d at capture, %d at output"
                     % (c.get("dropped_at_capture", 0), c.get("dropped_at_output", 0)))
    if result.interrupted is not None:
        lines.append("  stopped by %s; everything computed before it was kept" % (str(result.interrupted) or "Ctrl-C"))
    if result.ended_early:
        lines.append("  source ended early: %s; what was written is kept" % result.ended_early)
    for path in outputs:
        lines.append("  wrote %s" % path)
    if note:
        lines.append("  [%s]" % note)
    return "\n".join(lines)
