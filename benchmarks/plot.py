"""The benchmark figure (matplotlib, Agg backend, no display needed), one column per input size: top, latency
vs fidelity (like the paper's speed/accuracy figure); bottom, per-stage p50 bars. Colour = backend, marker
(scatter) and hatch (bars) = precision, one legend outside the panels.

    plot_rows(rows, path, prompts=(1, 16), title="") -> path
Rows are the table's dicts; rows whose status is not "ok" are left out (they are in the table).
"""
from typing import List, Sequence

BACKEND_COLORS = {"torch": "#7f7f7f", "pytorch": "#7f7f7f", "onnxruntime": "#1f77b4", "ort": "#1f77b4", "openvino": "#9467bd",
                  "tensorrt": "#2ca02c", "triton": "#ff7f0e"}
OTHER_COLORS = ("#d62728", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
PRECISION_STYLE = {"fp32": ("o", ""), "fp16": ("s", "//"), "int8": ("^", "xx"), "mixed": ("D", "..")}
OTHER_STYLES = (("v", "\\\\"), ("P", "++"), ("*", "--"))


def _latency(row: dict) -> float:
    """Frame latency used on the x axis: encoder + object decoder p50 (the paper's FPS protocol)."""
    return row["encoder_ms"]["p50"] + (row["object_ms"]["p50"] if row.get("object_ms") else 0.0)


def _styles(ok: List[dict]):
    """-> ({backend: colour}, {precision: (marker, hatch)}) for the backends and precisions present."""
    colors, styles = {}, {}
    for r in ok:
        b, p = str(r.get("backend")), str(r.get("precision"))
        if b not in colors:
            extra = [c for c in OTHER_COLORS if c not in colors.values()]
            colors[b] = BACKEND_COLORS.get(b.split()[0].lower(), extra[0] if extra else "#000000")
        if p not in styles:
            used = set(styles.values())
            styles[p] = PRECISION_STYLE.get(p.lower()) or next((s for s in OTHER_STYLES if s not in used), ("x", ""))
    return colors, styles


def figure(rows: List[dict], prompts: Sequence[int] = (1, 16), title: str = ""):
    """The matplotlib Figure (see the module docstring); ``plot_rows`` saves it."""
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.legend_handler import HandlerTuple
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    ok = [r for r in rows if r.get("status") == "ok" and r.get("encoder_ms")]
    sizes = sorted({str(r.get("imgsz")) for r in ok}) or ["-"]
    fig, axes = plt.subplots(2, len(sizes), figsize=(4.8 * len(sizes) + 2.6, 8), squeeze=False)
    colors, styles = _styles(ok)
    stages = ["encoder"] + ["prompt x%d" % n for n in prompts] + ["object dec"]
    for col, size in enumerate(sizes):
        ax1, ax2 = axes[0][col], axes[1][col]
        here = [r for r in ok if str(r.get("imgsz")) == size]
        if not here:
            for ax in (ax1, ax2):
                ax.text(0.5, 0.5, "no backend ran", ha="center", va="center", transform=ax.transAxes)
        for r in here:
            fid = r.get("fidelity_iou")
            marker = styles[str(r.get("precision"))][0]
            ax1.scatter([_latency(r)], [fid if fid is not None else float("nan")], s=70, marker=marker,
                        color=colors[str(r.get("backend"))], edgecolors="black", linewidths=0.5)
        fids = [r["fidelity_iou"] for r in here if r.get("fidelity_iou") is not None]
        if fids:  # plain tick labels (no 1e-5 offset) and room above 1.0
            ax1.set_ylim(min(min(fids) - 0.01, 0.95), 1.005)
        ax1.ticklabel_format(axis="y", useOffset=False, style="plain")
        ax1.set_xlabel("encoder + object decoder p50 (ms)")
        ax1.set_ylabel("fidelity vs FP32 (prompt-mask IoU)")
        ax1.set_title("input %s: latency vs fidelity" % size)
        ax1.grid(True, alpha=0.3)
        width = 0.8 / max(1, len(here))
        for i, r in enumerate(here):
            summaries = [r["encoder_ms"]] + [(r.get("prompt_ms") or {}).get(str(n)) for n in prompts] + \
                [r.get("object_ms")]
            xs = [j + (i - (len(here) - 1) / 2.0) * width for j in range(len(stages))]
            ax2.bar(xs, [s["p50"] if s else 0.0 for s in summaries], width=width,
                    color=colors[str(r.get("backend"))], hatch=styles[str(r.get("precision"))][1],
                    edgecolor="black", linewidth=0.5)
        ax2.set_xticks(range(len(stages)))
        ax2.set_xticklabels(stages)
        ax2.set_ylabel("p50 latency (ms)")
        ax2.set_title("input %s: per-stage latency" % size)
        ax2.grid(True, axis="y", alpha=0.3)
    handles = [Patch(facecolor=c, edgecolor="black") for c in colors.values()]
    handles += [(Line2D([], [], marker=m, linestyle="none", markerfacecolor="white", markeredgecolor="black"),
                 Patch(facecolor="white", edgecolor="black", hatch=h)) for m, h in styles.values()]
    labels = list(colors) + list(styles)
    models = sorted({str(r.get("model")) for r in ok})
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False,
                   handler_map={tuple: HandlerTuple(ndivide=None)}, title_fontsize=8,
                   title="colour: backend\nmarker, hatch: precision" + ("\nmodels: " + ", ".join(models)
                                                                          if len(models) > 1 else ""))
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_rows(rows: List[dict], path: str, prompts: Sequence[int] = (1, 16), title: str = "") -> str:
    import matplotlib.pyplot as plt
    fig = figure(rows, prompts, title)
    fig.savefig(path, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path
