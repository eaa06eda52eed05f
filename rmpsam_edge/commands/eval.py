"""``rmpsam-edge eval``: measure weights on the held-out synthetic set (1-click / box mIoU, PQ, track identity)."""
import json
import os
import shlex
import sys

from rmpsam_edge.errors import UserError
from rmpsam_edge.media import repo_path


def add_arguments(parser):
    parser.add_argument("--checkpoint", default=None,
                        help="weights to evaluate (default: the shipped demo weights); training checkpoints "
                             "(last.pth, step_*.pth) are read too")
    parser.add_argument("--vocab", default=None, help="vocabulary (default: the demo vocabulary)")
    parser.add_argument("--imgsz", type=int, default=None,
                        help="square evaluation size (default: the checkpoint's training size, else 192)")
    parser.add_argument("--images", type=int, default=100, help="held-out images (default %(default)s)")
    parser.add_argument("--clips", type=int, default=20, help="held-out 9-frame clips (default %(default)s)")
    parser.add_argument("--split", choices=["eval", "train"], default="eval",
                        help="photo split of the scenes (default: eval = photos never used in training)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    from rmpsam_edge.commands.common_args import add_force
    add_force(parser, "--json if it exists")


def _train_size(path):
    import torch
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - load_checkpoint reports unreadable files properly
        return None
    meta = obj.get("meta", {}) if isinstance(obj, dict) else {}
    if isinstance(meta, dict):
        if meta.get("input_size"):
            return int(meta["input_size"])
        if meta.get("config"):
            try:
                return int(json.loads(meta["config"])["imgsz"])
            except (ValueError, KeyError, TypeError):
                return None
    return None


def run(args) -> int:
    if args.json and os.path.exists(args.json) and not args.force:
        raise UserError("%s exists; pass --force to overwrite it" % args.json)
    if args.images < 0 or args.clips < 0 or (args.imgsz is not None and (args.imgsz % 32 or args.imgsz < 64)):
        raise UserError("--images/--clips must be >= 0 and --imgsz a multiple of 32 (>= 64)")
    import numpy as np
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from rmpsam_edge.checkpoint import DEFAULT_WEIGHTS, load_checkpoint
    from rmpsam_edge.training.evaluate import evaluate
    from rmpsam_edge.training.vocab import demo_class_embed
    if args.vocab:
        from rmpsam_edge.checkpoint import load_vocabulary
        embed = load_vocabulary(args.vocab)[0]
    else:
        embed = demo_class_embed()
    from rmpsam_edge.training.synthetic import CLASS_NAMES
    if embed.shape[0] != len(CLASS_NAMES):
        raise UserError("the vocabulary has %d classes but the synthetic set has %d (%s)"
                        % (embed.shape[0], len(CLASS_NAMES), ", ".join(CLASS_NAMES)))
    path = args.checkpoint or DEFAULT_WEIGHTS
    model, info = load_checkpoint(path, class_embed=np.asarray(embed))
    imgsz = args.imgsz or _train_size(path) or 192
    res = evaluate(model, imgsz, num_images=args.images, num_clips=args.clips, split=args.split)
    res["checkpoint"] = repo_path(info["path"])
    res["weights_note"] = info.get("weights_note")
    res["split"] = args.split
    res["command"] = " ".join(shlex.quote(a) for a in getattr(args, "_argv", ["rmpsam-edge", "eval"]))
    for k in ("click_mIoU", "box_mIoU", "PQ", "PQ_things", "PQ_stuff", "SQ", "RQ", "identity_kept", "detected"):
        sys.stdout.write("%-14s %.4f\n" % (k, res[k]))
    sys.stdout.write("(%d images, %d prompts, %d clips x %d frames, %d object-frames, %dx%d, split %s)\n"
                     % (res["images"], res["prompts"], res["clips"], res["clip_frames"], res["object_frames"],
                        imgsz, imgsz, args.split))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
            f.write("\n")
    return 0
