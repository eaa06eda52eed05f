"""The ``rmpsam-edge`` command: one subcommand per job.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
modules are imported only when their subcommand runs, so ``rmpsam-edge predict --model bundle`` never
imports torch. Errors of type ``UserError`` are printed as one line (``error: ...``), exit code 2.
"""
import argparse
import importlib
import sys

from .errors import UserError

# name -> (module, one-line help)
COMMANDS = {
    "info": ("rmpsam_edge.commands.info", "describe a checkpoint or a bundle: variant, parameters, vocabulary, input policy"),
    "predict": ("rmpsam_edge.commands.predict", "segment one image: point/box prompts, panoptic or instances"),
    "export": ("rmpsam_edge.export.cli", "export a checkpoint to a model bundle (three ONNX graphs + manifest)"),
    "quantize": ("rmpsam_edge.quantize.cli", "make an FP16 or INT8 bundle with a fidelity report"),
    "build-engine": ("rmpsam_edge.runtime.tensorrt.cli", "build TensorRT engines for a bundle on this GPU"),
    "export-triton": ("rmpsam_edge.commands.export_triton", "write a Triton Inference Server model repository for a bundle"),
    "serve": ("rmpsam_edge.commands.serve", "serve a bundle on a real tritonserver (127.0.0.1; python backend)"),
    "benchmark": ("rmpsam_edge.benchmarks.cli", "latency table across backends and precisions"),
    "demo": ("rmpsam_edge.runtime.demo.cli", "camera / video / image-folder demo: panoptic, track, points, everything"),
    "doctor": ("rmpsam_edge.commands.doctor", "check this machine: platform, backends, each backend's results vs ONNX Runtime CPU"),
    "train": ("rmpsam_edge.training.cli", "train demo weights on synthetic scenes"),
    "eval": ("rmpsam_edge.training.eval_cli", "evaluate weights on the held-out synthetic set"),
}


def build_parser(only=None):
    parser = argparse.ArgumentParser(prog="rmpsam-edge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            try:
                mod = importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if not exc.name or not module.startswith(exc.name):
                    raise
                p.set_defaults(_missing=module)
                continue
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    if getattr(args, "_missing", None):
        sys.stderr.write("error: '%s' is not available in this installation (module %s missing)\n"
                         % (args.command, args._missing))
        return 2
    from .signals import exit_code, graceful_stop
    try:
        with graceful_stop():
            return int(args._run(args) or 0)
    except UserError as exc:
        sys.stderr.write("error: %s\n" % exc)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Ctrl-C, and SIGTERM/SIGHUP through rmpsam_edge.signals
        sys.stderr.write("interrupted (%s)\n" % (exc or "SIGINT"))
        return exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
