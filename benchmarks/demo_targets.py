"""Measure the demo's two targets in ONE run (ratios, so a busy machine affects both sides alike):

1. pipelining: the demo's end-to-end FPS (capture -> model -> draw -> write, points mode with one click;
   steady state, the first frame excluded) is at least 0.9x the encoder-only FPS of the same backend; encoder
   alone, demo and the same frames run sequentially (read, model, draw, write in one thread) alternate for
   ``--rounds`` rounds and the median ratio counts;
2. batched decoding: an 'everything' frame with 64 grid prompts costs at most 3x a single-prompt frame
   (both timed round-robin with ``rmpsam_edge.timing.measure``).

    rmpsam-edge benchmark --preset demo --model BUNDLE --backends onnxruntime [--threads 2] [--frames 30] [--rounds 3]
                          [--runs 20] [--grid 8] [--json out.json]
    rmpsam-edge benchmark --preset demo [--checkpoint PTH | --random-init]      (the PyTorch path)
"""
import os
import shutil
import tempfile
import time

from rmpsam_edge.media import repo_path


def _sequential(source, mode, sink, max_frames):
    """The same work without a pipeline: read, model, draw+write one frame after the other -> FPS."""
    import numpy as np

    from rmpsam_edge.demo.pipeline import FrameItem, Stats
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


def run(args):
    """-> (report, Markdown) of both ratios."""
    import numpy as np

    from rmpsam_edge.preprocess import preprocess
    from rmpsam_edge.demo.modes import EverythingMode, PromptMode
    from rmpsam_edge.demo.pipeline import Stats, run_pipeline
    from rmpsam_edge.demo.sink import Sink
    from rmpsam_edge.demo.sources import default_source, open_source
    from rmpsam_edge.demo.writer import JsonlOut, VideoOut

    from .soak import predictor as study_predictor
    from rmpsam_edge.timing import load_average, measure
    env, load_start = args.thread_env, load_average()
    predictor = study_predictor(args)
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
        "command": " ".join(args.command_argv),
        "backend": runner.describe(), "threads": args.threads, "thread_env": env, "load_average": load_start,
        "weights_note": predictor.spec.weights_note, "source": repo_path(src_path),
        "frame_size": [h, w], "input_shape": list(meta.pad_shape), "frames_per_run": args.frames,
        "rounds": rounds, "ratio_pipelined_vs_encoder": ratio,
        "single_prompt_frame_ms_p50": t["single"].p50, "everything_frame_ms_p50": t["everything"].p50,
        "everything_prompts": args.grid ** 2, "everything_masks_kept": n_kept,
        "ratio_everything_vs_single": t["everything"].p50 / t["single"].p50,
    }
    out["load_average_end"] = load_average()
    out["target_pipelining_met"] = out["ratio_pipelined_vs_encoder"] >= 0.9
    out["target_everything_met"] = out["ratio_everything_vs_single"] <= 3.0
    shutil.rmtree(tmp, ignore_errors=True)
    return out, markdown(out)


def markdown(out: dict) -> str:
    return "\n".join([
        "# Demo targets", "", "Command: `%s`" % out["command"], "",
        "%s; %s; frames %dx%d, input %s; %d frames per run, %d rounds; load average at the start %s, at the end "
        "%s." % (out["backend"], out["weights_note"], out["frame_size"][1], out["frame_size"][0],
                 "x".join(map(str, out["input_shape"])), out["frames_per_run"], len(out["rounds"]),
                 out["load_average"], out["load_average_end"]), "",
        "| target | measured | met |", "|---|---|---|",
        "| demo end-to-end FPS >= 0.9x encoder-only FPS | %.2fx (median of rounds) | %s |" % (
            out["ratio_pipelined_vs_encoder"], "yes" if out["target_pipelining_met"] else "no"),
        "| everything (%d prompts, one batch) <= 3x a single-prompt frame | %.2fx (%.1f vs %.1f ms p50) | %s |" % (
            out["everything_prompts"], out["ratio_everything_vs_single"], out["everything_frame_ms_p50"],
            out["single_prompt_frame_ms_p50"], "yes" if out["target_everything_met"] else "no"), "",
        "Rounds (encoder-only FPS / pipelined FPS / sequential FPS): " + "; ".join(
            "%.2f / %.2f / %s" % (r["encoder_only_fps"], r["pipelined_fps"] or 0.0,
                                  "%.2f" % r["sequential_fps"] if r["sequential_fps"] else "-")
            for r in out["rounds"])])
