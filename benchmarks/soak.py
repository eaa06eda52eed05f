"""``rmpsam-edge benchmark --preset soak --frames N`` (or ``--soak N``): N frames of the demo pipeline (capture / inference / sink threads) on the
shipped clip, looped, reporting resident memory (RSS) at start, after warm-up and at the end, and FPS drift
(last quarter vs first quarter after warm-up). A leak shows as RSS growing with N; a slowdown as negative drift.

Weights: ``--model BUNDLE`` (first --backends entry) or the PyTorch path (shipped demo
weights, --checkpoint, --random-init). Mode: track (panoptic + tracker) when the weights have a vocabulary,
else everything (grid of prompts + mask NMS).
"""
import os
import sys
import time

import numpy as np

from rmpsam_edge.errors import UserError
from rmpsam_edge.timing import rss_mb

WARMUP = 10


class LoopSource(object):
    """The shipped clip (or ``path``), rewound at its end: an endless finite-style source (nothing dropped)."""

    live = False
    ended_early = None

    def __init__(self, path):
        import cv2
        self.path, self.name = path, "%s (looped)" % os.path.basename(path)
        self.cap = cv2.VideoCapture(path)
        self.fps = 10.0
        self.loops = 0

    def read(self):
        import cv2
        ok, frame = self.cap.read()
        if not ok:
            self.cap.release()
            self.cap = cv2.VideoCapture(self.path)
            self.loops += 1
            ok, frame = self.cap.read()
        return frame if ok else None

    def close(self):
        self.cap.release()


def predictor(args):
    """The Predictor a study runs: ``--model BUNDLE`` on the first ``--backends`` entry (torch -> auto), else the
    PyTorch model (shipped demo weights, --checkpoint, --random-init); at the first ``--imgsz`` (pixels or
    'official'; none: the bundle's / weights' own size)."""
    from rmpsam_edge.weights import load_predictor
    size = args.imgsz[0] if args.imgsz else None
    backend = args.backends.split(",")[0].strip() if args.model else None
    return load_predictor(args.model[0] if args.model else None, args.checkpoint, args.random_init, None,
                          args.variant, "auto" if backend == "torch" else backend, args.device, args.threads,
                          size, pytorch=True)[0]


def run(args):
    r = run_soak(args)
    return r, markdown(r)


def run_soak(args) -> dict:
    from rmpsam_edge.demo.sources import default_source
    from rmpsam_edge.demo.modes import build_mode
    from rmpsam_edge.demo.pipeline import run_pipeline

    n = int(args.frames)
    if n < 4 * WARMUP:
        raise UserError("--soak / --frames needs at least %d frames (warm-up %d + four quarters to compare)"
                        % (4 * WARMUP, WARMUP))
    rss = {"start": rss_mb()}
    pred = predictor(args)
    mode_name = "track" if pred.spec.class_embed is not None else "everything"
    mode = build_mode(mode_name, pred, per_side=4)
    source = LoopSource(default_source())
    done, samples = [], []

    def sink(item, stats):
        done.append(time.perf_counter())
        k = len(done)
        if k == WARMUP:
            rss["after_warmup"] = rss_mb()
        if k % 50 == 0:
            samples.append([k, round(rss_mb(), 1)])
            sys.stderr.write("soak: %d/%d frames, RSS %.1f MB\n" % (k, n, samples[-1][1]))
        return True

    try:
        run_pipeline(source, lambda f, s: mode.process(np.ascontiguousarray(f[:, :, ::-1])), sink, max_frames=n)
    finally:
        source.close()
    rss["end"] = rss_mb()
    if len(done) < n:
        raise UserError("soak stopped after %d of %d frames" % (len(done), n))
    steady = np.diff(np.asarray(done[WARMUP:]))
    q = len(steady) // 4
    fps_first, fps_last = 1.0 / float(np.mean(steady[:q])), 1.0 / float(np.mean(steady[-q:]))
    from .sysinfo import collect
    return {"frames": n, "warmup_frames": WARMUP, "mode": mode_name, "backend": pred.runner.describe(),
            "input_size": pred.spec.input_size, "clip_loops": source.loops,
            "rss_mb": {k: round(v, 1) for k, v in rss.items()},
            "rss_growth_after_warmup_mb": round(rss["end"] - rss["after_warmup"], 1),
            "rss_samples_mb": samples, "fps_first_quarter": round(fps_first, 2), "fps_last_quarter": round(fps_last, 2),
            "fps_drift_pct": round(100.0 * (fps_last - fps_first) / fps_first, 1),
            "system": collect(command=args.command_argv, threads=args.threads)}


def format_soak(r: dict) -> str:
    return ("soak: %d frames (%s, %s, input %s): RSS start %.1f MB, after warm-up %.1f MB, end %.1f MB "
            "(%+.1f MB after warm-up); FPS first quarter %.2f, last quarter %.2f (drift %+.1f%%)"
            % (r["frames"], r["mode"], r["backend"], r["input_size"], r["rss_mb"]["start"],
               r["rss_mb"]["after_warmup"], r["rss_mb"]["end"], r["rss_growth_after_warmup_mb"],
               r["fps_first_quarter"], r["fps_last_quarter"], r["fps_drift_pct"]))


def markdown(r: dict) -> str:
    return ("# Soak: %d frames\n\nCommand: `%s`\n\n%s\n\nRSS samples (frame, MB): %s\n\n"
            "FPS drift includes the load of anything else running on the machine (see system in the JSON)."
            % (r["frames"], r["system"].get("command", ""), format_soak(r), r["rss_samples_mb"]))
