"""``rmpsam-edge export``: a checkpoint (or the default / random weights) -> a model bundle folder.

    rmpsam-edge export --checkpoint rapsam_r50_12e.pth --vocab CocoPanopticOVDataset.pth --imgsz 640 --out bundles/r50

torch is imported only when the command runs (the CLI's help works without it).
"""
import argparse
import os

from rmpsam_edge.errors import UserError

from rmpsam_edge.runtime.tensorrt.importers import PORTABLE_OPSET as DEFAULT_OPSET

OPSETS = (16, 17, 18, 19, 20)


def add_arguments(p) -> None:
    from rmpsam_edge.commands.common_args import IMGSZ_HELP, add_force, add_imgsz, add_size
    src = p.add_argument_group("weights")
    src.add_argument("--checkpoint", metavar="PTH", help="RMP-SAM checkpoint (.pth); default: the shipped demo weights")
    src.add_argument("--vocab", metavar="FILE", help="class-embedding file (K, P, 768) stored in the bundle for "
                     "panoptic/instances (default: the demo vocabulary with the demo weights)")
    src.add_argument("--random-init", action="store_true", help="seeded random weights (pipeline checks only)")
    src.add_argument("--variant", choices=("r18", "r50"), default="r18", help="backbone for --random-init")
    src.add_argument("--seed", type=int, default=0, help="seed for --random-init (default 0)")
    add_imgsz(p, help_text="input-size policy: " + IMGSZ_HELP + "; also the trace and parity size (default: the "
              "checkpoint's, else 640)")
    p.add_argument("--out", metavar="DIR", help="bundle folder to write (default: bundles/rmpsam_<variant>_<imgsz>)")
    add_force(p, "an existing bundle at --out")
    p.add_argument("--static", action="store_true", help="fixed shapes: H = W = imgsz (rounded up to 32), a fixed "
                   "prompt batch and the vocabulary's class count (for backends that want static shapes)")
    p.add_argument("--static-prompts", type=int, default=1, metavar="N", help="prompt batch of a --static bundle "
                   "(default 1; more prompts run in chunks)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default %d: every supported "
                   "TensorRT (8.5 to 11) imports it; 16-20)" % DEFAULT_OPSET)
    add_size(p, "--min-size", "smallest padded image the dynamic graphs declare (default 32)")
    add_size(p, "--max-size", "largest padded image the dynamic graphs declare (default: imgsz rounded up to 32; "
             "1344 for 'official'; e.g. 384x640 for landscape 16:9 at 640)")
    p.add_argument("--no-many-prompts-graph", action="store_true", help="do not write prompt_decoder_many.onnx "
                   "(the projected keys/values variant used for >= 48 prompts in one call; saves ~20 MB)")
    p.add_argument("--dcn-form", choices=("per-tap", "sample-first"), default="per-tap", help=argparse.SUPPRESS)


def run(args) -> int:
    from rmpsam_edge.commands.common_args import image_sizes, input_size
    sizes = image_sizes(args, ("min_size", "max_size"))
    try:
        import torch  # noqa: F401
        import onnx  # noqa: F401
    except ImportError as exc:
        raise UserError("export needs %s: pip install 'rmpsam_edge[export]'" % (exc.name or "torch and onnx"))
    from rmpsam_edge import checkpoint as ck

    from rmpsam_edge.export.exporter import export_bundle

    if args.opset not in OPSETS:
        raise UserError("--opset %d is not supported; use one of %s" % (args.opset, ", ".join(map(str, OPSETS))))
    if args.static_prompts < 1:
        raise UserError("--static-prompts must be at least 1")
    if args.random_init and args.checkpoint:
        raise UserError("--random-init and --checkpoint exclude each other; pass one")
    vocab = args.vocab
    if vocab is None and not args.checkpoint and not args.random_init and os.path.isfile(ck.DEFAULT_VOCAB):
        vocab = ck.DEFAULT_VOCAB
    class_embed, names, num_things = ck.load_vocabulary(vocab) if vocab else (None, None, None)
    if args.random_init:
        model, info = ck.random_model(args.variant, seed=args.seed)
    else:
        model, info = ck.load_checkpoint(args.checkpoint)
    weights = ck.weights_record(info, vocab)
    imgsz = input_size(args.imgsz) if args.imgsz is not None else (info.get("input_size") or 640)
    out = args.out or os.path.join("bundles", "rmpsam_%s_%s%s" % (info["variant"], imgsz or "official",
                                                                  "_static" if args.static else ""))
    print("exporting RMP-SAM %s (%s) at input size %s -> %s" % (
        info["variant"], weights["file"] or "%s, seed %s" % (weights["kind"], weights["seed"]),
        imgsz or "official keep-ratio", out))
    export_bundle(model, out, input_size=imgsz, class_embed=class_embed, class_names=names, num_things=num_things,
                  weights=weights, force=args.force, static=args.static, static_prompts=args.static_prompts,
                  opset=args.opset, min_size=sizes.get("min_size", (32, 32)), max_size=sizes.get("max_size"),
                  many_prompts=not args.no_many_prompts_graph, per_tap=args.dcn_form == "per-tap",
                  argv=getattr(args, "_argv", None))
    return 0
