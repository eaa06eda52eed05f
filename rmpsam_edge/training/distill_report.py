"""What a distilled student is worth: its agreement with the teacher on held-out frames, and the encoder speed of
both, in OUT/distill.json + OUT/distill.md (one row per report: before training, at each checkpoint, at the end).

Agreement uses the one comparator (``rmpsam_edge.runtime.compare.compare_runners``, the quantize fidelity
metrics) with the teacher as the reference: each held-out frame is resized to the training size (long side,
keep-ratio, padded), and prompted with a fixed grid of 4 x 4 clicks and 3 x 3 boxes (a third of the image each).
"""
import io
import json
import os
import platform
from typing import Dict, List

import numpy as np
import torch

from ..atomic import atomic_file
from ..preprocess import normalize_boxes, points_to_boxes, preprocess
from ..runtime.compare import GRID, compare_runners
from ..spec import ModelSpec

NOTE = ("Agreement with the teacher, not accuracy: a student is as good as its teacher and the frames it learned "
        "on. Real quality needs the official weights as the teacher and the deployment's own footage.")
COLUMNS = [("step", "step"), ("train_seconds", "train s"), ("loss", "loss"),
           ("feature_cosine_mean", "feature cosine (mean)"), ("feature_cosine", "feature cosine (worst)"),
           ("mask_iou_mean", "prompt-mask IoU"), ("query_class_agreement", "query class agreement"),
           ("panoptic_class_agreement", "panoptic class agreement"),
           ("panoptic_segment_agreement", "panoptic segment agreement"),
           ("matched_segment_iou", "matched segment IoU")]


def grid_prompts(img_shape) -> np.ndarray:
    """-> (GRID^2 + 9, 4) normalised boxes: GRID x GRID clicks, then 3 x 3 boxes of a third of the image."""
    h, w = img_shape
    g = (np.arange(GRID) + 0.5) / GRID
    clicks = points_to_boxes(np.stack(np.meshgrid(g * w, g * h), -1).reshape(-1, 2))
    t = np.arange(3) / 3.0
    x0, y0 = [a.ravel() for a in np.meshgrid(t * w, t * h)]
    boxes = np.stack([x0, y0, x0 + w / 3.0, y0 + h / 3.0], 1).astype(np.float32)
    return normalize_boxes(np.concatenate([clicks, boxes]), img_shape)


def agreement(teacher, student, frames, imgsz: int, num_things: int, device: str = "cpu") -> Dict:
    """Held-out frames [(name, RGB uint8)] -> the comparator's metrics of the student against the teacher."""
    from ..torch_runner import TorchRunner
    spec = ModelSpec(student.variant, input_size=imgsz)
    inputs = [preprocess(img, spec) for _, img in frames]
    prompts = [(grid_prompts(meta.img_shape), None) for _, meta in inputs]
    fc = teacher.panoptic_head.fc_cls.cpu()
    class_embed = fc[:, :-1].permute(1, 2, 0).contiguous().numpy()
    return compare_runners(TorchRunner(teacher, device=device), TorchRunner(student, device=device), inputs,
                           prompts, class_embed, num_things, stream=io.StringIO())


def measure_latency(teacher, student, size: int, runs: int, device: str) -> Dict:
    """Encoder latency of teacher and student, measured here one after the other at ``size`` x ``size``."""
    from .distill import encoder_latency
    t = encoder_latency(teacher, size, runs, device)
    s = encoder_latency(student, size, runs, device)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"size": size, "runs": runs, "device": device, "torch_threads": torch.get_num_threads(),
            "teacher_ms": round(t * 1e3, 2), "student_ms": round(s * 1e3, 2), "speedup": round(t / s, 2),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "load_average_1_5_15": [round(v, 2) for v in load] if load else None}


def append_report(out_dir: str, row: Dict, extra: Dict) -> Dict:
    """Add one report row to OUT/distill.json (kept across --resume) and rewrite OUT/distill.md from it."""
    path = os.path.join(out_dir, "distill.json")
    reports: List[Dict] = []
    if os.path.isfile(path):
        with open(path) as f:
            reports = json.load(f).get("reports", [])
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    row = dict(row, load_average_1_5_15=[round(v, 2) for v in load] if load else None)
    doc = dict(extra, reports=reports + [row], note=NOTE)
    with atomic_file(path, force=True) as tmp:
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=2, sort_keys=True)
            f.write("\n")
    with atomic_file(os.path.join(out_dir, "distill.md"), force=True) as tmp:
        with open(tmp, "w") as f:
            f.write(markdown(doc))
    return doc


def _fmt(v, key: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "%.0f" % v if key == "train_seconds" else "%.4f" % v
    return str(v)


def markdown(doc: Dict) -> str:
    t, s = doc.get("teacher", {}), doc.get("student", {})
    lines = ["# Distillation report", "", NOTE, ""]
    if doc.get("command"):
        lines += ["Command: `%s`" % doc["command"], ""]
    lines += ["- teacher: %s %s (sha256 %s)" % (t.get("variant"), t.get("file"), t.get("sha256")),
              "- student: %s, init %s" % (s.get("variant"), s.get("init") or "random (seed %s)" % s.get("seed")),
              "- frames: %s for training, %s held out, from %s" % (doc.get("frames", {}).get("train"),
                                                                   doc.get("frames", {}).get("held_out"),
                                                                   ", ".join(doc.get("frames", {}).get("sources", []))),
              "- prompts on each held-out frame: a grid of %d clicks and 9 boxes" % (GRID * GRID)]
    lat = doc.get("latency")
    if lat:
        lines += ["- encoder latency at %dx%d on %s (%s, %s threads; load average %s while measuring): teacher "
                  "%.1f ms, student %.1f ms, speed-up x%.2f" % (lat["size"], lat["size"], lat["device"], lat["cpu"],
                                                                lat["torch_threads"], lat["load_average_1_5_15"],
                                                                lat["teacher_ms"], lat["student_ms"], lat["speedup"])]
    lines += ["", "| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in doc.get("reports", []):
        lines.append("| " + " | ".join(_fmt(r.get(k), k) for k, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"
