"""Measure the demo's two targets in ONE run (ratios, so a busy machine affects both sides alike):

1. pipelining: the demo's end-to-end FPS (capture -> model -> draw -> write, points mode with one click;
   steady state, the first frame excluded) is at least 0.9x the encoder-only FPS of the same backend; encoder
   alone, demo and the same frames run sequentially (read, model, draw, write in one thread) alternate for
   ``--rounds`` rounds and the median ratio counts;
2. batched decoding: an 'everything' frame with 64 grid prompts costs at most 3x a single-prompt frame
   (both timed round-robin with ``benchmarks.timing.measure``).

    python -m rmpsam_edge.runtime.demo.targets --model BUNDLE [--backend auto] [--threads 2] [--frames 40]
                                               [--runs 20] [--json out.json]
    python -m rmpsam_edge.runtime.demo.targets --checkpoint PTH | --random-init   (PyTorch path)
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

from rmpsam_edge.media import repo_path


def _parser():
    p = argparse.ArgumentParser(prog="python -m rmpsam_edge.runtime.demo.targets", description=__doc__.split("\n")[0])
    from rmpsam_edge.commands.common_args import add_runs, add_weights_arguments
    add_weights_arguments(p)
    p.set_defaults(threads=2)
    p.add_argument("--source", help="video (default: the shipped clip)")
    p.add_argument("--frames", type=int, default=30, help="frames per demo run (default 30)")
    p.add_argument("--rounds", type=int, default=3, help="encoder-only / pipelined / sequential rounds, "
                   "alternated; the ratio is their median (default 3)")
    add_runs(p, help_text="timed rounds for the encoder / frame timings")
    p.add_argument("--grid", type=int, default=8, help="everything: points per side (8 = 64 prompts)")
    p.add_argument("--json", help="write the numbers here")
    return p


def _sequential(source, mode, sink, max_frames):
    """The same work without a pipeline: read, model, draw+write one frame after the other -> FPS."""
    import numpy as np

    from .pipeline import FrameItem, Stats
    stats = Stats()
    times = []
    for i in range(max_frames):
        frame = source.read()
        if frame is None:
            break
        item = FrameItem(i, frame, time.perf_counter())
        item.result = mode.process(np.ascontiguousarray(frame[:, :, ::-1]))
        sink(item, stats)
        times.append(time.perf_counter())
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 else None


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from rmpsam_edge.benchmarks.timing import measure, thread_env
    env = thread_env(args.threads)
    import numpy as np

    from rmpsam_edge.commands.predict import build_predictor
    from rmpsam_edge.preprocess import preprocess

    from .cli import Sink, default_source
    from .modes import EverythingMode, PromptMode
    from .pipeline import Stats, run_pipeline
    from .sources import open_source
    from .writer import JsonlOut, VideoOut

    predictor, info = build_predictor(args)
    src_path = args.source or default_source()
    first = open_source(src_path)
    frame0 = first.read()
    first.close()
    rgb0 = np.ascontiguousarray(frame0[:, :, ::-1])
    h, w = rgb0.shape[:2]
    click = [[w / 2.0, h / 2.0]]
    x, meta = preprocess(rgb0, predictor.spec)
    runner = predictor.runner
    tmp = tempfile.mkdtemp(prefix="rmpsam_demo_targets_")

    def encoder_fps():
        s = measure({"encoder": lambda: runner.encode(x)}, runs=args.runs, warmup=2)["encoder"]
        return 1000.0 / s.p50, s.p50

    def make_sink(tag):
        video = VideoOut(os.path.join(tmp, tag + ".avi"), 10.0)
        jsonl = JsonlOut(os.path.join(tmp, tag + ".jsonl"), {"mode": "points"})
        return Sink(mode, predictor.spec.weights_note, video, jsonl), video, jsonl

    mode = PromptMode(predictor, points=click)
    rounds = []
    for r in range(args.rounds):  # alternate: a busy machine's slow phases hit every side alike
        enc_fps, enc_ms = encoder_fps()
        sink, video, jsonl = make_sink("pipelined_%d" % r)
        src = open_source(src_path)
        res = run_pipeline(src, lambda f, s: mode.process(np.ascontiguousarray(f[:, :, ::-1])), sink,
                           max_frames=args.frames, stats=Stats())
        src.close()
        video.close()
        jsonl.close()
        pipe = res.stats.summary()
        sink, video, jsonl = make_sink("sequential_%d" % r)
        src = open_source(src_path)
        seq_fps = _sequential(src, mode, sink, args.frames)
        src.close()
        video.close()
        jsonl.close()
        rounds.append({"encoder_ms_p50": enc_ms, "encoder_only_fps": enc_fps, "pipelined_fps": pipe["fps_steady"],
                       "sequential_fps": seq_fps, "ratio": (pipe["fps_steady"] or 0.0) / enc_fps,
                       "stages_ms_mean": {k: round(v["mean"], 2) for k, v in pipe["stages"].items()}})
    ratio = float(np.median([r["ratio"] for r in rounds]))

    single = PromptMode(predictor, points=click)
    every = EverythingMode(predictor, per_side=args.grid)
    t = measure({"single": lambda: single.process(rgb0), "everything": lambda: every.process(rgb0)},
                runs=args.runs, warmup=2)
    n_kept = len(every.process(rgb0)["masks"])

    out = {
        "command": "python -m rmpsam_edge.runtime.demo.targets " + " ".join(sys.argv[1:] if argv is None else argv),
        "backend": runner.describe(), "threads": args.threads, "thread_env": env,
        "weights_note": predictor.spec.weights_note, "source": repo_path(src_path),
        "frame_size": [h, w], "input_shape": list(meta.pad_shape), "frames_per_run": args.frames,
        "rounds": rounds, "ratio_pipelined_vs_encoder": ratio,
        "single_prompt_frame_ms_p50": t["single"].p50, "everything_frame_ms_p50": t["everything"].p50,
        "everything_prompts": args.grid ** 2, "everything_masks_kept": n_kept,
        "ratio_everything_vs_single": t["everything"].p50 / t["single"].p50,
    }
    out["target_pipelining_met"] = out["ratio_pipelined_vs_encoder"] >= 0.9
    out["target_everything_met"] = out["ratio_everything_vs_single"] <= 3.0
    shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(out, indent=1)
    sys.stdout.write(text + "\n")
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
