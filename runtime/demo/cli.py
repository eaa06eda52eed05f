"""``rmpsam-edge demo``: camera / video / image-folder / stream demo in four modes.

    rmpsam-edge demo                                   # shipped clip + shipped weights, headless
    rmpsam-edge demo --source 0 --mode track --show    # webcam, video instance segmentation, stable ids
    rmpsam-edge demo --source street.mp4 --mode panoptic --out out.mp4
    rmpsam-edge demo --source "frames/*.jpg" --mode points --points 320,240 --boxes 10,10,200,200
    rmpsam-edge demo --source csi://0 --mode everything # Jetson CSI camera (OpenCV with GStreamer)

Weights: ``--model BUNDLE`` or nothing (the shipped demo bundle, ``--backend auto``, with or without torch) runs the
torch-free runtime (ONNX Runtime / OpenVINO / TensorRT); ``--checkpoint`` or ``--random-init`` run the PyTorch
model. Capture, inference and drawing
run as a pipeline (``pipeline.py``). Without a display (or without ``--show``) the demo writes an annotated
video and a per-frame JSON Lines file (RLE masks, boxes, ids, scores); Ctrl-C ends cleanly with the summary.
"""
import json
import os
import sys
import time

import numpy as np

from rmpsam_edge.errors import UserError, warn

from .modes import MODES, build_mode

WINDOW = "rmpsam-edge demo"


def default_source() -> str:
    from rmpsam_edge.media import asset_path
    return asset_path("video", "vtest_clip.avi")


def add_arguments(p):
    p.add_argument("--source", help="camera index (0), video file, image folder, image glob ('frames/*.jpg', "
                                    "quoted), rtsp://... / http://... URL, or csi://N (Jetson CSI camera); "
                                    "default: the shipped street clip")
    p.add_argument("--mode", default="panoptic", choices=MODES,
                   help="panoptic (default), track (video instances, stable ids), points/boxes (prompts; with "
                        "--show a click adds a point), everything (grid of prompts + mask NMS)")
    from rmpsam_edge.commands.common_args import add_deprecated, add_force, add_max_pixels, add_weights_arguments
    add_weights_arguments(p)
    p.add_argument("--points", nargs="*", default=[], metavar="X,Y", help="click prompts in frame pixels")
    p.add_argument("--boxes", nargs="*", default=[], metavar="X1,Y1,X2,Y2", help="box prompts in frame pixels")
    p.add_argument("--prompts-file", metavar="JSON", help='prompts file: {"points": [[x, y], ...], "boxes": '
                                                          '[[x1, y1, x2, y2], ...]}')
    add_deprecated(p, "--prompts", "--prompts-file", "prompts_file")
    p.add_argument("--grid", type=int, default=8, help="everything: points per side (8 -> 64 prompts)")
    p.add_argument("--nms", type=float, default=0.7, help="everything: mask IoU above which duplicates go")
    p.add_argument("--score-thr", type=float, default=0.3, help="track: hide tracks scoring below this")
    p.add_argument("--show", action="store_true", help="show a window (needs a display and OpenCV with GUI)")
    p.add_argument("--out", help="annotated video (.avi MJPG / .mp4 mp4v); its .jsonl is written beside it. "
                                 "Default without --show: runs/demo/<source>_<mode>.avi")
    p.add_argument("--no-json", action="store_true", help="do not write the per-frame JSON Lines file")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    add_max_pixels(p)
    p.add_argument("--retries", type=int, default=5, help="reconnect attempts when a camera/stream drops "
                                                           "(backoff 0.5 s doubling to 8 s; files: none)")
    p.add_argument("--queue", type=int, default=4, help="pipeline queue length (frames)")
    add_force(p, "an existing --out")


def load_prompts(args):
    """--points/--boxes/--prompts-file -> (points (Np,2), boxes (Nb,4)) in frame pixels."""
    from rmpsam_edge.commands.predict import parse_numbers
    points = parse_numbers(args.points, 2, "point")
    boxes = parse_numbers(args.boxes, 4, "box")
    if args.prompts_file:
        try:
            with open(args.prompts_file) as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            raise UserError("cannot read prompts file %s (%s); expected JSON like "
                            '{"points": [[320, 240]], "boxes": [[10, 10, 200, 200]]}' % (args.prompts_file, exc))
        if not isinstance(data, dict) or not set(data) <= {"points", "boxes"}:
            raise UserError('prompts file %s: expected an object with "points" and/or "boxes" lists' % args.prompts_file)
        try:
            more_p = np.asarray(data.get("points", []), dtype=np.float64).reshape(-1, 2)
            more_b = np.asarray(data.get("boxes", []), dtype=np.float64).reshape(-1, 4)
        except (TypeError, ValueError):
            raise UserError('prompts file %s: "points" must be [[x, y], ...] and "boxes" [[x1, y1, x2, y2], ...]'
                            % args.prompts_file)
        points, boxes = np.concatenate([points, more_p]), np.concatenate([boxes, more_b])
    return points, boxes


def display_problem() -> str:
    """Why a window cannot be shown here ('' when it can)."""
    import cv2
    gui = [l for l in cv2.getBuildInformation().splitlines() if l.strip().startswith("GUI:")]
    if gui and "NONE" in gui[0].upper():
        return "this OpenCV has no GUI (opencv-python-headless)"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY is not set)"
    return ""


def stats_text(stats, timings: dict) -> str:
    """'9.8 FPS | enc 80.1 | dec 4.2 | post 3.0 | draw 2.1 ms' for the frame overlay."""
    fps = stats.fps()
    parts = ["%.1f FPS" % fps if fps else "-- FPS"]
    for key, short in (("encoder", "enc"), ("decoder", "dec"), ("postprocess", "post")):
        if key in timings:
            parts.append("%s %.1f" % (short, timings[key]))
    draw = stats.last_ms("draw")
    if draw is not None:
        parts.append("draw %.1f" % draw)
    return " | ".join(parts) + " ms"


class Sink(object):
    """Draws, writes and shows one frame (the pipeline's last stage)."""

    def __init__(self, mode, banner, video=None, jsonl=None, show=False):
        self.mode = mode
        self.banner = banner
        self.video = video
        self.jsonl = jsonl
        self.show = show

    def __call__(self, item, stats) -> bool:
        import cv2
        from rmpsam_edge import visualize
        result = item.result
        t0 = time.perf_counter()
        rgb = item.frame[:, :, ::-1]
        drawn = self.mode.draw(rgb, result, self.banner)
        drawn = visualize.banner(drawn, stats_text(stats, result["timings"]), position="bottom")
        bgr = cv2.cvtColor(np.ascontiguousarray(drawn), cv2.COLOR_RGB2BGR)
        t1 = time.perf_counter()
        stats.add("draw", (t1 - t0) * 1e3)
        if self.video is not None:
            self.video.write(bgr)
        if self.jsonl is not None:
            self.jsonl.write({"frame": item.index, "segments": self.mode.records(result),
                              "timings_ms": {k: round(float(v), 2) for k, v in result["timings"].items()}})
        t2 = time.perf_counter()
        if self.video is not None or self.jsonl is not None:
            stats.add("write", (t2 - t1) * 1e3)
        for key, ms in result["timings"].items():
            stats.add("model." + key, ms)
        if self.show:
            cv2.imshow(WINDOW, bgr)
            key = cv2.waitKey(1) & 0xFF
            stats.add("show", (time.perf_counter() - t2) * 1e3)
            if key in (ord("q"), 27):
                return False
        return True


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


def run(args) -> int:
    from .pipeline import Stats, run_pipeline
    from .sources import open_source
    from .writer import JsonlOut, VideoOut, output_paths

    if args.max_frames is not None and args.max_frames < 1:
        raise UserError("--max-frames must be >= 1")
    if args.queue < 1:
        raise UserError("--queue must be >= 1")
    points, boxes = load_prompts(args)
    show = bool(args.show)
    if show:
        problem = display_problem()
        if problem:
            warn("--show ignored: %s; writing the annotated video instead" % problem)
            show = False
    if args.mode in ("points", "boxes") and not (len(points) or len(boxes)) and not show:
        raise UserError("--mode %s needs prompts: --points X,Y, --boxes X1,Y1,X2,Y2 or --prompts-file FILE "
                        "(or --show and click)" % args.mode)
    source_text = args.source if args.source is not None else default_source()
    if args.retries < 0:
        raise UserError("--retries must be >= 0")
    from rmpsam_edge.commands.common_args import max_pixels
    source = open_source(source_text, retries=args.retries, max_pixels=max_pixels(args))
    try:
        from rmpsam_edge.commands.common_args import predictor_from_args
        predictor, info = predictor_from_args(args)
        mode = build_mode(args.mode, predictor, points, boxes, per_side=args.grid, nms=args.nms,
                          score_threshold=args.score_thr)
        note = predictor.spec.weights_note
        video = jsonl = None
        outputs = []
        if not show or args.out:
            vpath, jpath = output_paths(args.out, source.name, args.mode, args.force)
            video = VideoOut(vpath, source.fps or 10.0)
            outputs.append(vpath)
            if not args.no_json:
                header = {"source": source.name, "mode": args.mode, "model": _jsonable(info),
                          "backend": predictor.runner.describe(), "weights_note": note,
                          "masks": "COCO uncompressed RLE (column-major), boxes x1,y1,x2,y2 in frame pixels"}
                jsonl = JsonlOut(jpath, header)
                outputs.append(jpath)
        if show:
            _open_window(mode)
        sys.stderr.write("demo: %s, mode %s, %s%s\n" % (source.name, args.mode, predictor.runner.describe(),
                                                         "  [%s]" % note if note else ""))

        def process(frame, stats):
            return mode.process(np.ascontiguousarray(frame[:, :, ::-1]))

        sink = Sink(mode, note, video, jsonl, show)
        stats = Stats()
        try:
            result = run_pipeline(source, process, sink, max_frames=args.max_frames, queue_size=args.queue,
                                  stats=stats)
            summary = result.stats.summary()
            if jsonl is not None:
                jsonl.write_summary(summary)
        finally:  # a disk error (one line) or a signal still leaves a video with its index, complete lines
            if video is not None:
                video.close()
            if jsonl is not None:
                jsonl.close()
            if show:
                import cv2
                cv2.destroyAllWindows()
        sys.stdout.write(format_summary(summary, result, outputs, note) + "\n")
        sys.stdout.flush()
        if result.interrupted is not None:  # outputs are final: exit 130 / 143 / 129 through the CLI
            raise result.interrupted
        if summary["frames"] == 0:
            raise UserError("no frame was processed from %s" % source.name)
        return 0
    finally:
        source.close()


def _open_window(mode) -> None:
    import cv2
    cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    if hasattr(mode, "add_point"):
        def on_mouse(event, x, y, flags, param):
            if event == cv2.EVENT_LBUTTONDOWN:
                mode.add_point(x, y)
        cv2.setMouseCallback(WINDOW, on_mouse)


def _jsonable(d):
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, dict):
            v = _jsonable(v)
        if isinstance(v, (str, int, float, bool, list, dict)) or v is None:
            out[k] = v
    return out
