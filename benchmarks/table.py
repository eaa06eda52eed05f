"""The benchmark table (Markdown, readable in a terminal too), like ``yolo benchmark``: one row per
backend x precision x input size.

A row is a dict (the same dict goes to the JSON file):
    backend, precision, imgsz (int or "HxW"), status ("ok", "not installed: ...", "export failed: ..."),
    size_mb, fidelity_iou (prompt-mask IoU vs the FP32 row of the same input size; 1.0 for FP32 itself),
    encoder_ms / object_ms / frame_ms: {"p50","p90","p99","mean","n"} latency summaries,
    prompt_ms: {"1": summary, "16": summary, ...}, fps (end-to-end frames per second: 1000 / frame_ms p50),
    fps_enc_obj (1000 / (encoder + object decoder p50): the paper's protocol), mem_mb (resident memory the
    row's runner added when loaded and run once), gpu_mb (GPU memory or None), model (e.g. "r18"),
    flops (optional): {"encoder": {"params","gflops"}, "prompt_decoder": ..., "object_decoder": ...}
"""
from typing import List, Optional, Sequence

STATUS_WIDTH = 48


def _ms(s: Optional[dict], key: str = "p50") -> str:
    return "-" if not s else "%.1f" % s[key]


def _num(v, fmt: str) -> str:
    return "-" if v is None else fmt % v


def short_status(status: str) -> str:
    return status if len(status) <= STATUS_WIDTH else status[:STATUS_WIDTH - 3] + "..."


def columns(prompts: Sequence[int], with_flops: bool, fps_label: str, show_model: bool = False) -> List[str]:
    cols = (["model"] if show_model else []) + ["backend", "precision", "imgsz", "status", "size MB",
                                                 "fidelity IoU", "encoder ms p50/p90/p99"]
    cols += ["prompt x%d ms" % n for n in prompts]
    cols += ["object dec ms", fps_label, "mem MB", "GPU MB"]
    if with_flops:
        cols += ["params M enc/prm/obj", "GFLOPs enc/prm/obj"]
    return cols


def row_cells(row: dict, prompts: Sequence[int], with_flops: bool, fps_key: str = "fps",
              show_model: bool = False) -> List[str]:
    ok = row.get("status") == "ok"
    enc = row.get("encoder_ms")
    fid = "1 (ref)" if row.get("fidelity_ref") else _num(row.get("fidelity_iou"), "%.4f")
    cells = ([str(row.get("model", "-"))] if show_model else []) + [
        str(row.get("backend")), str(row.get("precision")), str(row.get("imgsz", "-")),
        short_status(str(row.get("status"))), _num(row.get("size_mb"), "%.1f"), fid,
             ("%.1f / %.1f / %.1f" % (enc["p50"], enc["p90"], enc["p99"])) if (ok and enc) else "-"]
    pm = row.get("prompt_ms") or {}
    cells += [_ms(pm.get(str(n))) if ok else "-" for n in prompts]
    cells += [_ms(row.get("object_ms")) if ok else "-", _num(row.get(fps_key) if ok else None, "%.1f"),
              _num(row.get("mem_mb"), "%.0f"), _num(row.get("gpu_mb"), "%.0f")]
    if with_flops:
        f = row.get("flops") or {}
        stages = ("encoder", "prompt_decoder", "object_decoder")
        if f and all(s in f for s in stages):
            cells.append(" / ".join("%.2f" % (f[s]["params"] / 1e6) for s in stages))
            cells.append(" / ".join("%.1f" % f[s]["gflops"] for s in stages))
        else:
            cells += ["-", "-"]
    return cells


def format_table(rows: List[dict], prompts: Sequence[int] = (1, 16), with_flops: bool = False,
                 fps_label: str = "FPS", fps_key: str = "fps", show_model: Optional[bool] = None) -> str:
    """Markdown table with aligned columns, then one note line per row whose status was cut short.
    show_model None: a model column only when the rows hold more than one model."""
    if show_model is None:
        show_model = len(set(str(r.get("model")) for r in rows)) > 1
    cols = columns(prompts, with_flops, fps_label, show_model)
    body = [row_cells(r, prompts, with_flops, fps_key, show_model) for r in rows]
    widths = [max([len(c)] + [len(b[i]) for b in body]) for i, c in enumerate(cols)]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    out = [line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(b) for b in body]
    long = {}  # full status -> "backend precision, ..." (one note per distinct status)
    for r in rows:
        status = str(r.get("status"))
        if len(status) > STATUS_WIDTH:
            who = "%s %s" % (r.get("backend"), r.get("precision"))
            who = ("%s %s" % (r.get("model"), who)) if show_model else who
            if who not in long.setdefault(status, []):  # the same row at several input sizes: named once
                long[status].append(who)
    notes = ["- %s: %s" % (", ".join(who), status) for status, who in long.items()]
    if notes:
        out += [""] + notes
    return "\n".join(out)
