"""``rmpsam-edge distill``: a fast student (R18) from a teacher checkpoint on your own frames, no labels
(resumable; reports held-out agreement with the teacher in OUT/distill.json + OUT/distill.md)."""
import os

from rmpsam_edge.errors import UserError
from rmpsam_edge.progress import log_lines


def add_arguments(parser):
    from rmpsam_edge.training.distill import DEFAULTS
    parser.add_argument("--teacher", required=True, metavar="CKPT", help="teacher checkpoint (.pth), e.g. the "
                        "official rapsam_r50_12e.pth; its head and vocabulary go into the student")
    parser.add_argument("--vocab", default=None, metavar="FILE",
                        help="the teacher's class-embedding file (default: the shipped demo vocabulary)")
    parser.add_argument("--images", required=True, nargs="+", metavar="SRC",
                        help="frames to learn on: folders, videos, images or quoted globs; sampled evenly")
    parser.add_argument("--val", nargs="+", default=None, metavar="SRC",
                        help="held-out frames for the report (default: --holdout frames of --images kept out)")
    parser.add_argument("--out", required=True, help="output folder (last.pth, distill.json, distill.md, log)")
    parser.add_argument("--student", default=DEFAULTS["student"], choices=["r18", "r50"],
                        help="student backbone (default %(default)s)")
    parser.add_argument("--init", default=None, metavar="CKPT",
                        help="start the student from this checkpoint (its head is replaced by the teacher's); "
                             "default: random weights")
    parser.add_argument("--frames", type=int, default=256, help="frames to train on, at most (default %(default)s)")
    parser.add_argument("--holdout", type=int, default=4, help="frames held out for the report (default %(default)s)")
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="steps (default %(default)s)")
    parser.add_argument("--time-budget", type=float, default=0.0, metavar="SECONDS",
                        help="stop after this much training time; the LR schedule follows whichever of steps / "
                             "time runs out first (default: steps only)")
    parser.add_argument("--imgsz", type=int, default=DEFAULTS["imgsz"],
                        help="square view size, multiple of 32 (default %(default)s)")
    parser.add_argument("--batch", type=int, default=DEFAULTS["batch_images"], help="views per step")
    parser.add_argument("--views", type=int, default=DEFAULTS["views"],
                        help="augmented views per frame; the teacher's outputs on each are cached (default "
                             "%(default)s)")
    parser.add_argument("--cache-mb", type=float, default=DEFAULTS["cache_mb"],
                        help="memory for cached teacher outputs (default %(default)s)")
    parser.add_argument("--prompts-per-frame", type=int, default=DEFAULTS["num_prompts"],
                        help="random clicks + boxes per view for the prompt-mask term (default %(default)s)")
    parser.add_argument("--feature-weight", type=float, default=DEFAULTS["feature_weight"])
    parser.add_argument("--prompt-weight", type=float, default=DEFAULTS["prompt_weight"],
                        help="prompt-mask agreement term (0: off; default %(default)s)")
    parser.add_argument("--object-weight", type=float, default=DEFAULTS["object_weight"],
                        help="object-query mask + class agreement term (0: off; default %(default)s)")
    parser.add_argument("--head-lr", type=float, default=DEFAULTS["head_lr"],
                        help="fine-tune the copied head at this learning rate (default 0: head frozen)")
    parser.add_argument("--latency-size", type=int, default=512,
                        help="square size for the encoder latency of teacher and student (default %(default)s)")
    parser.add_argument("--latency-runs", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda[:N]")
    from rmpsam_edge.commands.common_args import add_training_run
    add_training_run(parser, DEFAULTS, "save last.pth and report every this many minutes")


def _check(args):
    if args.imgsz % 32 or args.imgsz < 64:
        raise UserError("--imgsz must be a multiple of 32 and at least 64 (got %d)" % args.imgsz)
    for name in ("steps", "batch", "views", "frames", "latency_size", "latency_runs"):
        if getattr(args, name) < 1:
            raise UserError("--%s must be positive (got %s)" % (name.replace("_", "-"), getattr(args, name)))
    if args.holdout < 1:
        raise UserError("--holdout must be at least 1: the report needs held-out frames")
    if args.head_lr < 0 or args.lr <= 0:
        raise UserError("--lr must be positive and --head-lr >= 0")
    if args.device != "cpu":
        import torch
        if not args.device.startswith("cuda") or not torch.cuda.is_available():
            raise UserError("--device %s: this torch (%s) has no such device; use --device cpu, or cuda on a "
                            "machine whose torch sees a GPU" % (args.device, torch.__version__))


def run(args) -> int:
    _check(args)
    last = os.path.join(args.out, "last.pth")
    if os.path.exists(last) and not (args.resume or args.force):
        raise UserError("%s exists: pass --resume to continue it or --force to overwrite it (start over)" % last)
    import torch
    torch.set_num_threads(max(1, args.threads))
    from rmpsam_edge.checkpoint import load_vocabulary
    from rmpsam_edge.media import repo_path
    from rmpsam_edge.training.distill import Distiller, load_teacher
    from rmpsam_edge.training.distill_data import load_frames
    from rmpsam_edge.training.distill_report import measure_latency
    class_embed, _, num_things = load_vocabulary(args.vocab)
    teacher, tinfo = load_teacher(args.teacher, class_embed)
    train, held, available = load_frames(args.images, args.frames, args.holdout, 2 * args.imgsz, args.val)
    if not train:
        raise UserError("no frames left to train on; add frames to --images or lower --holdout")
    os.makedirs(args.out, exist_ok=True)
    if args.force and not args.resume:
        for name in ("last.pth", "distill.json", "distill.md", "distill_log.txt"):
            if os.path.isfile(os.path.join(args.out, name)):
                os.remove(os.path.join(args.out, name))
    log_path = os.path.join(args.out, "distill_log.txt")

    log = log_lines(log_path)

    cfg = {"student": args.student, "imgsz": args.imgsz, "steps": args.steps, "batch_images": args.batch,
           "views": args.views, "num_prompts": args.prompts_per_frame, "lr": args.lr, "head_lr": args.head_lr,
           "seed": args.seed, "threads": args.threads, "ckpt_minutes": args.ckpt_minutes,
           "time_budget_s": args.time_budget, "feature_weight": args.feature_weight,
           "prompt_weight": args.prompt_weight, "object_weight": args.object_weight, "cache_mb": args.cache_mb,
           "device": args.device}
    extra = {"command": " ".join(getattr(args, "_argv", ["rmpsam-edge", "distill"])),
             "teacher": {"file": os.path.basename(tinfo["path"]), "sha256": tinfo["sha256"],
                         "variant": tinfo["variant"], "note": tinfo["weights_note"]},
             "frames": {"sources": [repo_path(s) for s in args.images], "available": available, "train": len(train),
                        "held_out": len(held), "held_out_names": [repo_path(n) for n, _ in held],
                        "val": [repo_path(s) for s in args.val] if args.val else None},
             "config": cfg}
    d = Distiller(args.out, teacher, tinfo, train, cfg, init=args.init, held_out=held, log=log,
                  num_things=num_things, report_extra=extra)
    extra["student"] = dict(d.init_info, variant=args.student)
    resumed = args.resume and d.resume()
    log("%s: teacher %s %s, student %s, %d frames (%d held out), config %s"
        % ("resumed at step %d" % d.step if resumed else "start", tinfo["variant"], args.teacher, args.student,
           len(train), len(held), cfg))
    extra["latency"] = measure_latency(d.teacher, d.model, args.latency_size, args.latency_runs, args.device)
    log("encoder latency at %d: teacher %.1f ms, student %.1f ms (x%.2f)" % (
        args.latency_size, extra["latency"]["teacher_ms"], extra["latency"]["student_ms"], extra["latency"]["speedup"]))
    if not resumed:
        d.report()
    d.run(show_progress=not args.no_progress)
    d.report()
    log("done: step %d, %.0f s of distillation; student %s (loads like any checkpoint: export, quantize, "
        "build-engine)" % (d.step, d.elapsed, last))
    return 0
