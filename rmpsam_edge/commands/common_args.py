"""The options several commands share, defined once, with one defaults table.

One meaning per flag: ``--model`` is always the bundle folder (or a Triton URL), ``--backend`` the runtime
backend (default ``auto``), ``--device`` the backend's device, ``--imgsz`` the long side in pixels or
``official`` (short side 800, long side at most 1333), ``--min-size/--opt-size/--max-size`` a padded image
size ``PX`` (square) or ``HxW``, ``--runs`` timed rounds, ``--force`` "overwrite what is
there", ``--prompts`` the benchmark's prompt counts (nothing else). Torch-free, numpy-free, Python 3.8.
"""
import re

from rmpsam_edge.errors import UserError

DEFAULTS = {
    "backend": "auto",   # every command that runs a backend
    "runs": 20,          # timed rounds per stage/graph (benchmark, quantize's latency table, the harnesses)
    "warmup": 3,         # untimed calls before timing
    "check_runs": 5,     # doctor: a quick health check, not a benchmark
}

IMGSZ_HELP = "long side in pixels, or 'official' (short side 800, long side <= 1333)"
BACKEND_HELP = ("auto | onnxruntime | openvino | tensorrt | onnxruntime+openvino | "
                "encoder=openvino,prompt_decoder=onnxruntime,... (default auto)")
DEVICE_HELP = "backend device (onnxruntime: cpu/cuda/tensorrt; openvino: CPU/GPU; tensorrt: CUDA index)"


def input_size(text):
    """A ``--imgsz`` value -> ``ModelSpec.input_size``: an int >= 32, or None for 'official' (the official policy).
    Parsed when the command runs, so a bad value is one ``error:`` line (argparse types print the usage too)."""
    if str(text).lower() == "official":
        return None
    try:
        value = int(text)
    except ValueError:
        raise UserError("--imgsz must be a number of pixels (e.g. 640) or 'official', got %r" % text)
    if value < 32:
        raise UserError("--imgsz %d is too small; use at least 32 (e.g. 640)" % value)
    return value


def image_size(text, flag):
    """A ``--min-size/--opt-size/--max-size`` value -> (H, W): 'PX' (square) or 'HxW', each side a multiple of
    32 (the model pads images to /32). Parsed when the command runs: a bad value is one ``error:`` line."""
    m = re.match(r"^\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*$", str(text))
    if not m:
        raise UserError("%s %r: give a size in pixels like 640, or HxW like 384x640" % (flag, text))
    hw = (int(m.group(1)), int(m.group(2) or m.group(1)))
    if any(v < 32 or v % 32 for v in hw):
        raise UserError("%s %s: sides must be multiples of 32, at least 32 (the model pads images to /32), "
                        "e.g. 640 or 384x640" % (flag, text))
    return hw


def image_sizes(args, names=("min_size", "opt_size", "max_size")):
    """The size flags given -> {dest: (H, W)}; called first in ``run`` so a bad value stops before any work."""
    return {n: image_size(getattr(args, n), "--" + n.replace("_", "-")) for n in names if getattr(args, n, None)}


def add_size(p, flag, help_text):
    p.add_argument(flag, metavar="PX|HxW", help=help_text + ": PX (square) or HxW, multiples of 32")


def add_model(p, required=False, help_text="model bundle folder (from `rmpsam-edge export`)", **kw):
    return p.add_argument("--model", required=required, metavar="BUNDLE", help=help_text, **kw)


def add_backend(p, help_text=BACKEND_HELP):
    p.add_argument("--backend", default=DEFAULTS["backend"], help=help_text)


def add_device(p, help_text=DEVICE_HELP, **kw):
    p.add_argument("--device", help=help_text, **kw)


def add_threads(p, help_text="CPU threads for the model (default: the backend's)"):
    p.add_argument("--threads", type=int, help=help_text)


def add_imgsz(p, help_text="input size: " + IMGSZ_HELP + " (default: the model's input policy)", **kw):
    p.add_argument("--imgsz", metavar="PX|official", help=help_text, **kw)


def add_runs(p, key="runs", help_text="timed rounds"):
    p.add_argument("--runs", type=int, default=DEFAULTS[key], help="%s (default %d)" % (help_text, DEFAULTS[key]))


def add_max_pixels(p):
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse images (and video frames) of N pixels or more, from the header, before decoding "
                        "(default 8192*8192 = 67108864; 0 = no limit)")


def max_pixels(args):
    """``--max-pixels`` -> the limit for ``image_header.check_pixels`` (None: no limit)."""
    from rmpsam_edge.image_header import DEFAULT_MAX_PIXELS
    value = getattr(args, "max_pixels", None)
    if value is not None and value < 0:
        raise UserError("--max-pixels must be >= 0 (0 = no limit), got %d" % value)
    return DEFAULT_MAX_PIXELS if value is None else (value or None)


def add_force(p, what):
    p.add_argument("--force", action="store_true", help="overwrite %s" % what)


def add_weights_arguments(p):
    """The options ``predictor_from_args`` reads (predict, demo)."""
    src = p.add_argument_group("weights (one of; default: the shipped demo bundle on the deployed runtime)")
    add_model(src, help_text="model bundle folder (from `rmpsam-edge export`) or grpc:// / http:// Triton URL: "
                             "runs without torch")
    src.add_argument("--checkpoint", help="RMP-SAM .pth checkpoint (official or trained here)")
    src.add_argument("--random-init", action="store_true", help="seeded random weights (outputs say so)")
    p.add_argument("--variant", default="r18", choices=["r18", "r50"], help="with --random-init")
    p.add_argument("--vocab", help="class-embedding file (K,P,768) for panoptic/instances/track")
    add_backend(p, help_text="with a bundle: " + BACKEND_HELP)
    add_device(p, help_text="with a bundle: " + DEVICE_HELP)
    add_threads(p)
    add_imgsz(p)


def predictor_from_args(args):
    """-> (Predictor, model info): ``rmpsam_edge.weights.load_predictor`` on the ``add_weights_arguments`` options."""
    from rmpsam_edge.weights import load_predictor
    size = None if args.imgsz is None else (input_size(args.imgsz) or "official")
    return load_predictor(args.model, args.checkpoint, args.random_init, args.vocab, args.variant,
                          getattr(args, "backend", None), getattr(args, "device", None), args.threads, size)


def parse_numbers(items, n, what):
    """``--points X,Y ...`` / ``--boxes X1,Y1,X2,Y2 ...`` values -> float64 (len(items), n)."""
    import numpy as np
    out = []
    for item in items:
        parts = item.replace(" ", "").split(",")
        try:
            vals = [float(v) for v in parts if v != ""]
        except ValueError:
            vals = []
        if len(vals) != n:
            raise UserError("bad %s %r: expected %d comma-separated numbers, e.g. %s"
                            % (what, item, n, "320,240" if n == 2 else "50,60,300,400"))
        out.append(vals)
    return np.asarray(out, dtype=np.float64).reshape(-1, n)


def add_training_run(p, defaults: dict, ckpt_help: str):
    """The options of a training run (train, distill): learning rate, seed, threads, checkpoints, resume."""
    p.add_argument("--lr", type=float, default=defaults["lr"])
    p.add_argument("--seed", type=int, default=defaults["seed"])
    p.add_argument("--threads", type=int, default=defaults["threads"], help="torch CPU threads")
    p.add_argument("--ckpt-minutes", type=float, default=defaults["ckpt_minutes"], help=ckpt_help)
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pth")
    add_force(p, "an earlier run in OUT (its last.pth): start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
