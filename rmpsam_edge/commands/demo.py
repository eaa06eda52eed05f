"""``rmpsam-edge demo``: camera / video / image-folder / stream demo in four modes.

    rmpsam-edge demo                                   # shipped clip + shipped weights, headless
    rmpsam-edge demo --source 0 --mode track --show    # webcam, video instance segmentation, stable ids
    rmpsam-edge demo --source street.mp4 --mode panoptic --out out.mp4
    rmpsam-edge demo --source "frames/*.jpg" --mode points --points 320,240 --boxes 10,10,200,200
    rmpsam-edge demo --source csi://0 --mode everything # Jetson CSI camera (OpenCV with GStreamer)

Weights: ``--model BUNDLE`` or nothing (the shipped demo bundle, ``--backend auto``, with or without torch) runs the
torch-free runtime (ONNX Runtime / OpenVINO / TensorRT); ``--checkpoint`` or ``--random-init`` run the PyTorch
model. Capture, inference and drawing run as a pipeline (``rmpsam_edge/demo/``: sources, modes, pipeline, sink,
writer, summary). Without a display (or without ``--show``) the demo writes an annotated video and a per-frame
JSON Lines file (RLE masks, boxes, ids, scores); Ctrl-C ends cleanly with the summary.
"""
import sys

import numpy as np

from rmpsam_edge.commands.common_args import (add_force, add_max_pixels, add_weights_arguments,
                                              max_pixels, parse_numbers, predictor_from_args)
from rmpsam_edge.demo.modes import MODES, build_mode
from rmpsam_edge.errors import UserError, warn


def add_arguments(p):
    p.add_argument("--source", help="camera index (0), video file, image folder, image glob ('frames/*.jpg', "
                                    "quoted), rtsp://... / http://... URL, or csi://N (Jetson CSI camera); "
                                    "default: the shipped street clip")
    p.add_argument("--mode", default="panoptic", choices=MODES,
                   help="panoptic (default), track (video instances, stable ids), points/boxes (prompts; with "
                        "--show a click adds a point), everything (grid of prompts + mask NMS)")
    add_weights_arguments(p)
    p.add_argument("--points", nargs="*", default=[], metavar="X,Y", help="click prompts in frame pixels")
    p.add_argument("--boxes", nargs="*", default=[], metavar="X1,Y1,X2,Y2", help="box prompts in frame pixels")
    p.add_argument("--prompts-file", metavar="JSON", help='prompts file: {"points": [[x, y], ...], "boxes": '
                                                          '[[x1, y1, x2, y2], ...]}')
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


def run(args) -> int:
    from rmpsam_edge.demo import display
    from rmpsam_edge.demo.pipeline import Stats, run_pipeline
    from rmpsam_edge.demo.prompts import read_prompts_file
    from rmpsam_edge.demo.sink import Sink
    from rmpsam_edge.demo.sources import default_source, open_source
    from rmpsam_edge.demo.summary import format_summary
    from rmpsam_edge.demo.writer import JsonlOut, VideoOut, output_paths

    if args.max_frames is not None and args.max_frames < 1:
        raise UserError("--max-frames must be >= 1")
    if args.queue < 1:
        raise UserError("--queue must be >= 1")
    points = parse_numbers(args.points, 2, "point")
    boxes = parse_numbers(args.boxes, 4, "box")
    if args.prompts_file:
        more_p, more_b = read_prompts_file(args.prompts_file)
        points, boxes = np.concatenate([points, more_p]), np.concatenate([boxes, more_b])
    show = bool(args.show)
    if show:
        problem = display.display_problem()
        if problem:
            warn("--show ignored: %s; writing the annotated video instead" % problem)
            show = False
    if args.mode in ("points", "boxes") and not (len(points) or len(boxes)) and not show:
        raise UserError("--mode %s needs prompts: --points X,Y, --boxes X1,Y1,X2,Y2 or --prompts-file FILE "
                        "(or --show and click)" % args.mode)
    source_text = args.source if args.source is not None else default_source()
    if args.retries < 0:
        raise UserError("--retries must be >= 0")
    source = open_source(source_text, retries=args.retries, max_pixels=max_pixels(args))
    try:
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
            display.open_window(mode)
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
