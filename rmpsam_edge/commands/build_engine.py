"""``rmpsam-edge build-engine``: build (or check) the TensorRT engines of a bundle on this GPU.

    rmpsam-edge build-engine --model bundles/r18 --precision fp16 --imgsz 640 --max-prompts 64
    rmpsam-edge build-engine --model bundles/r18-int8-trt --precision int8 [--dla 0]  # a Q/DQ bundle from quantize
    rmpsam-edge build-engine --model bundles/r18 --no-build      # are the cached engines usable here?

The precision is --precision, else the bundle's; the profile flags left out keep what the last build used (the
engine sidecars), else the bundle's input size (else 640) as the max and opt image side, 1..64 prompts.
"""
import argparse
import sys

from rmpsam_edge.commands.common_args import image_sizes, input_size
from rmpsam_edge.errors import UserError
from rmpsam_edge.runtime.bundle import Bundle
from rmpsam_edge.runtime.bundle_runner import BackendUnavailable
from rmpsam_edge.runtime.tensorrt import compat as compat_mod
from rmpsam_edge.runtime.tensorrt import gpu_index, importers, profiles
from rmpsam_edge.runtime.tensorrt.cuda_context import CudaContext, device_info, import_pycuda
from rmpsam_edge.runtime.tensorrt.engines import GRAPH_ORDER, Choices, Session, prompt_ranges


def add_arguments(p: argparse.ArgumentParser) -> None:
    from rmpsam_edge.commands.common_args import add_device, add_force, add_imgsz, add_model, add_size
    add_model(p, required=True)
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"),
                   help="fp16 (default): LayerNorm/Softmax/mask pooling/logits stay FP32 (TensorRT 10+: from a typed "
                        "FP16 graph, made here when the onnx package is installed); int8: the Q/DQ encoder of a "
                        "`quantize --precision int8 --target tensorrt` bundle + FP16 decoders")
    add_imgsz(p, help_text="long side in pixels, or 'official' (1344): sets max and opt to imgsz x imgsz, rounded "
              "up to 32")
    add_size(p, "--min-size", "smallest padded image (default 32)")
    add_size(p, "--opt-size", "image size TensorRT tunes for (e.g. 384x640 for 16:9 at 640)")
    add_size(p, "--max-size", "largest padded image")
    p.add_argument("--max-prompts", type=int, help="most prompts per decoder call (default 64)")
    p.add_argument("--opt-prompts", type=int, help="prompt count TensorRT tunes for (default 1)")
    p.add_argument("--max-classes", type=int, help="most classes in a vocabulary (object decoder)")
    p.add_argument("--dla", help="Jetson DLA core for the encoder (0 or 1; GPU fallback on), or 'off'")
    p.add_argument("--workspace", type=float, default=2.0, help="builder workspace limit in GiB (default 2)")
    p.add_argument("--fp32-layers", action="append", metavar="REGEX",
                   help="also keep layers whose name matches REGEX in FP32 (repeatable)")
    p.add_argument("--graphs", help="comma list of graphs to build (default: all the bundle has: %s)"
                   % ",".join(GRAPH_ORDER))
    add_force(p, "the cached engine files (rebuilt even when usable)")
    p.add_argument("--no-build", action="store_true", help="only check the cached engines; never build")
    add_device(p, help_text="the CUDA GPU: N or cuda:N (default 0)")
    p.add_argument("--verbose", action="store_true", help="show TensorRT's builder log")


def _dla(text):
    """The DLA core, or None (not given, or 'off': DLA is never taken from what was built last)."""
    word = str(text).strip().lower()
    if text is None or word in ("off", "none", "gpu", "-1"):
        return None
    if not word.isdigit():
        raise UserError("--dla %s: give a DLA core number (0, 1) or 'off'" % text)
    return int(word)


def image_flags(args) -> dict:
    """{'imgsz', 'min_size', 'opt_size', 'max_size': (H, W)} for the flags given (--imgsz rounded up to 32,
    'official' -> 1344, the export's largest side)."""
    sizes = image_sizes(args)
    if args.imgsz is not None:
        side = -(-(input_size(args.imgsz) or 1344) // profiles.ALIGN) * profiles.ALIGN
        sizes["imgsz"] = (side, side)
    return sizes


def ranges_from_args(args, sizes, base, many_from=None):
    """Override the stored/default ranges ``base`` with the size (``image_flags``) and prompt flags that were
    given; the prompt range is then split between the prompt graphs (see engines.prompt_ranges)."""
    r = dict(base)
    hi = opt = sizes.get("imgsz")
    if hi is None:
        hi, opt = (r["H"][2], r["W"][2]), (r["H"][1], r["W"][1])
    if "max_size" in sizes:
        hi = sizes["max_size"]
        opt = opt if "imgsz" in sizes else hi
    opt = sizes.get("opt_size", opt)
    lo = sizes.get("min_size", (r["H"][0], r["W"][0]))
    opt = (min(opt[0], hi[0]), min(opt[1], hi[1]))
    lo = lo if "min_size" in sizes else (min(lo[0], opt[0]), min(lo[1], opt[1]))
    np_lo, np_opt, np_hi = r["Np"]
    if many_from and np_hi >= many_from - 1:  # the prompt range continues in the many-prompt graph
        np_hi = max(np_hi, r.get("Npm", (0, 0, 0))[2])
    if args.max_prompts is not None:
        np_hi = args.max_prompts
    if args.opt_prompts is not None:
        np_opt = args.opt_prompts
    np_opt = min(np_opt, np_hi)
    k = r.get("K", (1, 133, 133))
    if args.max_classes is not None:
        k = (k[0], min(k[1], args.max_classes), args.max_classes)
    made = profiles.make_ranges(hi, opt, lo, (min(np_lo, np_opt), np_opt, np_hi), k, r.get("P", (1, 1, 16)))
    return prompt_ranges(made, many_from)


def run(args) -> int:
    if args.force and args.no_build:
        raise UserError("--force and --no-build contradict each other")
    sizes = image_flags(args)
    bundle = Bundle.open(args.model)
    have = bundle.graph_names()
    graphs = [g.strip() for g in str(args.graphs).split(",") if g.strip()] if args.graphs else list(have)
    bad = [g for g in graphs if g not in have]
    if bad:
        raise UserError("--graphs: unknown graph %s (this bundle has %s)" % (", ".join(bad), ", ".join(have)))
    trt = compat_mod.import_tensorrt()
    cuda = import_pycuda()
    compat = compat_mod.Compat(trt)
    importers.check_build(bundle, compat.version_string, graphs)  # every graph, before any is built
    try:
        index = gpu_index(args.device)
    except BackendUnavailable as exc:
        raise UserError("--device %s: %s" % (args.device, exc))
    gpu_info = device_info(cuda, index)
    ctx = CudaContext(cuda, index)
    held = {}  # the runtime is released inside the context, before it is popped and detached
    ctx.own(held.clear)
    try:
        with ctx:
            session = Session(compat, gpu_info, bundle)
            choices = session.fill_choices(Choices(precision=args.precision, dla_core=_dla(args.dla),
                                                   fp32_layers=args.fp32_layers, workspace_gib=args.workspace,
                                                   verbose=args.verbose))
            choices.ranges = ranges_from_args(args, sizes, choices.ranges, bundle.many_prompts_from)
            r = choices.ranges
            many = ", many-prompt graph %d..%d" % (r["Npm"][0], r["Npm"][2]) if "prompt_decoder_many" in graphs else ""
            sys.stdout.write("TensorRT %s on %s (sm %s): %s, image %s..%s (opt %s), prompts %d..%d (opt %d)%s\n"
                             % (compat.version_string, gpu_info.name, gpu_info.cc, choices.precision, _hw(r, 0), _hw(r, 2),
                                _hw(r, 1), r["Np"][0], r["Np"][2], r["Np"][1], many))
            held["runtime"] = trt.Runtime(compat.logger([]))
            for graph in graphs:
                _, data, status = session.load_engine(held["runtime"], graph, choices, build=not args.no_build,
                                                      force=args.force)
                sys.stdout.write("%s: %s engine %s (%.1f MB)\n" % (
                    graph, session.precision(graph, choices),
                    "up to date" if status == "cached" else "built", len(data) / 1e6))
    finally:
        ctx.close()
    return 0


def _hw(ranges, i) -> str:
    return "%dx%d" % (ranges["H"][i], ranges["W"][i])
