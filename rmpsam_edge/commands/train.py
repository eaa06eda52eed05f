"""``rmpsam-edge train``: train demo weights on synthetic scenes (CPU is fine; resumable)."""
import os

from rmpsam_edge.commands.common_args import add_training_run
from rmpsam_edge.errors import UserError
from rmpsam_edge.progress import log_lines


def add_arguments(parser):
    from rmpsam_edge.training.trainer import DEFAULTS
    parser.add_argument("--out", required=True, help="output folder (checkpoints last.pth, step_*.pth, log)")
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="training steps (default %(default)s)")
    parser.add_argument("--time-budget", type=float, default=0.0, metavar="SECONDS",
                        help="stop after this much training time; the LR schedule follows whichever of steps / "
                             "time runs out first (default: steps only)")
    parser.add_argument("--imgsz", type=int, default=DEFAULTS["imgsz"], help="square training size, multiple of 32")
    parser.add_argument("--batch", type=int, default=DEFAULTS["batch_images"], help="images per step")
    parser.add_argument("--clip-every", type=int, default=DEFAULTS["clip_every"],
                        help="add one 3-frame video clip every N steps (0: images only)")
    parser.add_argument("--prompts-per-frame", type=int, default=DEFAULTS["num_prompts"],
                        help="prompts (points / boxes) sampled per frame (default %(default)s)")
    parser.add_argument("--prompt-weight", type=float, default=DEFAULTS["prompt_weight"],
                        help="weight of the prompt mask loss against the object losses (default %(default)s)")
    parser.add_argument("--cls-lr-scale", type=float, default=DEFAULTS["cls_lr_scale"],
                        help="learning-rate factor of the class branches (sharp cosine logits; default %(default)s)")
    parser.add_argument("--weights-out", metavar="PTH", help="when training ends, also write the FP16 shipping "
                        "weights here (official key layout, what rmpsam_edge/assets/weights holds; with --force "
                        "over an existing file)")
    add_training_run(parser, DEFAULTS, "save last.pth every this many minutes")


def run(args) -> int:
    if args.imgsz % 32 or args.imgsz < 64:
        raise UserError("--imgsz must be a multiple of 32 and at least 64 (got %d)" % args.imgsz)
    if args.steps < 1 or args.batch < 1:
        raise UserError("--steps and --batch must be positive")
    last = os.path.join(args.out, "last.pth")
    if os.path.exists(last) and not (args.resume or args.force):
        raise UserError("%s exists: pass --resume to continue it or --force to overwrite it (start over)" % last)
    if args.weights_out and os.path.exists(args.weights_out) and not args.force:
        raise UserError("%s exists; pass --force to overwrite it or choose another --weights-out" % args.weights_out)
    import torch
    torch.set_num_threads(max(1, args.threads))
    try:
        import cv2
        cv2.setNumThreads(1)
    except Exception:  # pragma: no cover - OpenCV is a dependency
        pass
    from rmpsam_edge.training.trainer import Trainer
    cfg = {"imgsz": args.imgsz, "steps": args.steps, "batch_images": args.batch, "clip_every": args.clip_every,
           "lr": args.lr, "seed": args.seed, "threads": args.threads, "ckpt_minutes": args.ckpt_minutes,
           "time_budget_s": args.time_budget, "num_prompts": args.prompts_per_frame, "prompt_weight": args.prompt_weight,
           "cls_lr_scale": args.cls_lr_scale}
    os.makedirs(args.out, exist_ok=True)
    log_path = os.path.join(args.out, "train_log.txt")

    log = log_lines(log_path)

    trainer = Trainer(args.out, cfg, log=log)
    if args.resume and trainer.resume():
        log("resumed from %s at step %d (%.0f s trained so far)" % (last, trainer.step, trainer.elapsed))
    log("config %s" % cfg)
    trainer.run(show_progress=not args.no_progress)
    log("done: step %d, %.0f s of training; checkpoint %s" % (trainer.step, trainer.elapsed, last))
    if args.weights_out:
        from rmpsam_edge.training.export_weights import export_weights
        export_weights(last, args.weights_out, force=True)  # existence checked before training
        log("FP16 shipping weights %s (%.1f MB)" % (args.weights_out, os.path.getsize(args.weights_out) / 1e6))
    return 0
