"""The benchmark figure (matplotlib, Agg backend, no display needed): left, latency vs fidelity per
backend/precision (like the paper's speed/accuracy figure); right, per-stage p50 bars per row.

    plot_rows(rows, path, prompts=(1, 16), title="") -> path
Rows are the table's dicts; rows whose status is not "ok" are left out (they are in the table).
"""
from typing import List, Sequence


def _label(row: dict, with_model: bool = False) -> str:
    text = "%s %s @%s" % (row.get("backend"), row.get("precision"), row.get("imgsz"))
    return ("%s %s" % (row.get("model"), text)) if with_model else text


def _latency(row: dict) -> float:
    """Frame latency used on the x axis: encoder + object decoder p50 (the paper's FPS protocol)."""
    return row["encoder_ms"]["p50"] + (row["object_ms"]["p50"] if row.get("object_ms") else 0.0)


def plot_rows(rows: List[dict], path: str, prompts: Sequence[int] = (1, 16), title: str = "") -> str:
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("status") == "ok" and r.get("encoder_ms")]
    many = len(set(str(r.get("model")) for r in ok)) > 1
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    if not ok:
        for ax in (ax1, ax2):
            ax.text(0.5, 0.5, "no backend ran", ha="center", va="center")
    markers = "osD^v<>ph*"
    for i, r in enumerate(ok):
        fid = r.get("fidelity_iou")
        ax1.scatter([_latency(r)], [fid if fid is not None else float("nan")], s=60,
                    marker=markers[i % len(markers)], label=_label(r, many))
    fids = [r["fidelity_iou"] for r in ok if r.get("fidelity_iou") is not None]
    if fids:  # plain tick labels (no 1e-5 offset) and room above 1.0
        ax1.set_ylim(min(min(fids) - 0.01, 0.95), 1.005)
    ax1.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax1.set_xlabel("encoder + object decoder p50 (ms)")
    ax1.set_ylabel("fidelity vs FP32 (prompt-mask IoU)")
    ax1.set_title("latency vs fidelity")
    ax1.grid(True, alpha=0.3)
    if ok:
        ax1.legend(fontsize=7, loc="lower right")

    stages = ["encoder"] + ["prompt x%d" % n for n in prompts] + ["object dec"]
    width = 0.8 / max(1, len(ok))
    for i, r in enumerate(ok):
        summaries = [r["encoder_ms"]] + [(r.get("prompt_ms") or {}).get(str(n)) for n in prompts] + \
            [r.get("object_ms")]
        vals = [s["p50"] if s else 0.0 for s in summaries]
        xs = [j + (i - (len(ok) - 1) / 2.0) * width for j in range(len(stages))]
        ax2.bar(xs, vals, width=width, label=_label(r, many))
    ax2.set_xticks(range(len(stages)))
    ax2.set_xticklabels(stages)
    ax2.set_ylabel("p50 latency (ms)")
    ax2.set_title("per-stage latency")
    ax2.grid(True, axis="y", alpha=0.3)
    if ok:
        ax2.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
