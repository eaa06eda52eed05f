"""``rmpsam-edge predict``: segment one image with point/box prompts (one decoder pass), panoptic or instances.

Weights: ``--model BUNDLE`` runs the torch-free runtime, and so does nothing (the shipped demo bundle on
``--backend auto``, whether or not torch is installed); ``--checkpoint PTH``, ``--random-init`` or ``--vocab`` run the
PyTorch model (the demo weights as PyTorch: ``--checkpoint`` with the shipped .pth). Outputs in ``--out``: ``overlay.png``, binary masks
(``mask_NNN.png`` + ``masks.npz``; ``panoptic.npz`` for panoptic) and ``result.json``.
"""
import json
import os
import sys
import time

import numpy as np

from rmpsam_edge.commands.common_args import (add_force, add_max_pixels, add_weights_arguments, max_pixels,
                                              parse_numbers, predictor_from_args)
from rmpsam_edge.errors import UserError


def add_arguments(p):
    add_weights_arguments(p)
    p.add_argument("--image", required=True, help="input image (JPEG/PNG/...)")
    p.add_argument("--points", nargs="*", default=[], metavar="X,Y", help="click prompts in image pixels")
    p.add_argument("--boxes", nargs="*", default=[], metavar="X1,Y1,X2,Y2", help="box prompts in image pixels")
    p.add_argument("--task", choices=["prompts", "panoptic", "instances"],
                   help="default: prompts when --points/--boxes are given, else panoptic")
    p.add_argument("--score-thr", type=float, default=0.3, help="instances: drop results below this score")
    add_max_pixels(p)
    p.add_argument("--out", default="out", help="output folder (default: out)")
    add_force(p, "the files of an existing non-empty output folder")


def prepare_out(path, force):
    if os.path.isdir(path) and os.listdir(path) and not force:
        raise UserError("output folder %s exists and is not empty; pass --force to overwrite its files or choose another --out" % path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError("output path %s is a file; choose a folder with --out" % path)
    os.makedirs(path, exist_ok=True)


def run(args):
    points = parse_numbers(args.points, 2, "point")
    boxes = parse_numbers(args.boxes, 4, "box")
    task = args.task or ("prompts" if len(points) or len(boxes) else "panoptic")
    if task == "prompts" and not (len(points) or len(boxes)):
        raise UserError("no prompts: give --points X,Y and/or --boxes X1,Y1,X2,Y2, or --task panoptic")
    from rmpsam_edge.preprocess import load_image
    image = load_image(args.image, max_pixels=max_pixels(args))
    prepare_out(args.out, args.force)
    predictor, info = predictor_from_args(args)
    t0 = time.perf_counter()
    predictor.set_image(image)
    result = {"image": os.path.abspath(args.image), "image_size": [int(image.shape[0]), int(image.shape[1])],
              "task": task, "model": info, "weights_note": predictor.spec.weights_note}
    try:  # a full or read-only disk: one line naming the output folder, exit non-zero
        from rmpsam_edge import visualize
        banner = predictor.spec.weights_note
        if task == "prompts":
            masks, scores = predictor.predict(points=points if len(points) else None,
                                              boxes=boxes if len(boxes) else None)
            result["results"] = write_prompt_masks(args.out, masks, scores, points, boxes)
            overlay = visualize.overlay_masks(image, masks, points=points if len(points) else None,
                                              boxes=boxes if len(boxes) else None, banner=banner)
        elif task == "panoptic":
            pan_seg, segments = predictor.panoptic()
            np.savez_compressed(os.path.join(args.out, "panoptic.npz"), pan_seg=pan_seg)
            result["segments"] = [_jsonable(s) for s in segments]
            overlay = visualize.panoptic_overlay(image, pan_seg, segments, predictor.spec.class_names,
                                                 predictor.spec.num_classes, banner=banner)
        else:
            inst = predictor.instances(score_thr=args.score_thr)
            names = predictor.spec.class_names
            np.savez_compressed(os.path.join(args.out, "masks.npz"), masks=inst["masks"], scores=inst["scores"],
                                labels=inst["labels"], boxes=inst["boxes"])
            result["results"] = [{"index": i, "label": int(l), "class_name": names[int(l)], "score": float(s),
                                  "box": [float(v) for v in b], "area": int(m.sum())}
                                 for i, (l, s, b, m) in enumerate(zip(inst["labels"], inst["scores"], inst["boxes"],
                                                                      inst["masks"]))]
            overlay = visualize.overlay_masks(image, inst["masks"], labels=[names[int(l)] for l in inst["labels"]],
                                              boxes=inst["boxes"], banner=banner)
        result["timings_ms"] = dict(predictor.timings, total=round((time.perf_counter() - t0) * 1000, 2))
        import cv2
        imwrite(os.path.join(args.out, "overlay.png"), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        from rmpsam_edge.atomic import atomic_file
        with atomic_file(os.path.join(args.out, "result.json")) as tmp:  # last, and complete or absent
            with open(tmp, "w") as f:
                json.dump(result, f, indent=2)
    except OSError as exc:
        from rmpsam_edge.atomic import disk_error
        raise disk_error(getattr(exc, "filename", None) or args.out, exc)
    n = len(result.get("results", result.get("segments", [])))
    sys.stdout.write("%s: %d %s -> %s (overlay.png, result.json)%s\n"
                     % (task, n, "segments" if task == "panoptic" else "masks", args.out,
                        "  [%s]" % banner if banner else ""))
    return 0


def imwrite(path, image):
    """cv2.imwrite that says when it failed (OpenCV returns False on a full/read-only disk, it does not raise)."""
    import cv2
    if not cv2.imwrite(path, image):
        raise OSError(0, "OpenCV could not write the file (full or read-only disk?)", path)


def write_prompt_masks(out, masks, scores, points, boxes):
    from rmpsam_edge.postprocess import mask_to_box
    np.savez_compressed(os.path.join(out, "masks.npz"), masks=masks, scores=scores)
    prompts = [{"type": "point", "xy": [float(v) for v in p]} for p in points] + \
              [{"type": "box", "xyxy": [float(v) for v in b]} for b in boxes]
    tight = mask_to_box(masks) if len(masks) else np.zeros((0, 4))
    rows = []
    for i, (m, s) in enumerate(zip(masks, scores)):
        imwrite(os.path.join(out, "mask_%03d.png" % i), m.astype(np.uint8) * 255)
        rows.append({"index": i, "prompt": prompts[i], "score": float(s), "box": [float(v) for v in tight[i]],
                     "area": int(m.sum())})
    return rows


def _jsonable(d):
    out = {}
    for k, v in d.items():
        if isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, np.ndarray):
            v = v.tolist()
        out[k] = v
    return out
