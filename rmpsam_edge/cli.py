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
COMMANDS = {  # README.md's command table lists these lines (tests/test_cli_flags.py keeps them equal)
    "info": ("rmpsam_edge.commands.info", "what a checkpoint, vocabulary file or bundle holds: variant, parameters, vocabulary, input policy"),
    "predict": ("rmpsam_edge.commands.predict", "one image: point/box prompts (one decoder pass for all), --task panoptic or instances"),
    "export": ("rmpsam_edge.commands.export", "checkpoint -> bundle (three ONNX graphs + manifest), parity-checked"),
    "quantize": ("rmpsam_edge.commands.quantize", "bundle -> FP16 / INT8 bundle + fidelity.json / fidelity.md"),
    "build-engine": ("rmpsam_edge.commands.build_engine", "TensorRT engines for a bundle, built on the target GPU, cached in the bundle"),
    "export-triton": ("rmpsam_edge.commands.export_triton", "bundle -> Triton model repository (python / onnxruntime / tensorrt platforms, dynamic batching)"),
    "serve": ("rmpsam_edge.commands.serve", "serve a bundle on a real tritonserver (127.0.0.1; --model grpc://127.0.0.1:8001 anywhere then)"),
    "benchmark": ("rmpsam_edge.commands.benchmark", "latency table across backends and precisions, or a named preset (stages, quantize, demo, soak, triton, ...), JSON + Markdown"),
    "demo": ("rmpsam_edge.commands.demo", "camera / video / image-folder demo: panoptic, track, points, boxes, everything"),
    "doctor": ("rmpsam_edge.commands.doctor", "this machine: platform, every backend (or why not), each backend's results vs ONNX Runtime CPU + timings"),
    "train": ("rmpsam_edge.commands.train", "train demo weights on synthetic scenes"),
    "eval": ("rmpsam_edge.commands.eval", "evaluate weights on the held-out synthetic set"),
    "distill": ("rmpsam_edge.commands.distill", "a fast R18 student from a teacher checkpoint on your own frames, no labels; held-out agreement report"),
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
    try:
        return _main(argv)
    except ModuleNotFoundError as exc:  # no OpenCV: one line naming the package (desktop) or JetPack's (Jetson)
        if exc.name != "cv2":
            raise
        from .runtime.platform_facts import NO_OPENCV
        sys.stderr.write("error: %s\n" % NO_OPENCV)
        return 2


def _main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    args._argv = ["rmpsam-edge"] + argv  # the command line, for the provenance a bundle records
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
