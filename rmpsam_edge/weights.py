"""Weights -> Predictor: the one factory (predict, the demo, the benchmark's demo studies).

    predictor, info = load_predictor(model="bundles/r18", backend="openvino")   # a bundle or a Triton URL
    predictor, info = load_predictor(checkpoint="rmpsam.pth", vocab="coco.npz")  # the PyTorch model
    predictor, info = load_predictor()   # the shipped demo bundle (FP16-stored demo weights) on the runtime

``size``: None = the bundle's / checkpoint's own input size, an int = that many pixels, "official" = the
official keep-ratio policy. ``info``: what ran (bundle path or URL, backend, variant, weights note) for reports.
The runtime path imports no torch; the PyTorch path needs it.
"""
import os
import sys

from rmpsam_edge.errors import UserError
from rmpsam_edge.media import asset_path

SHIPPED_BUNDLE = asset_path("bundle")  # the demo weights exported as a bundle (FP16-stored weights)
DEMO_WEIGHTS = asset_path("weights", "rmpsam_r18_demo.pth")  # checkpoint.DEFAULT_WEIGHTS, without importing torch


def load_predictor(model=None, checkpoint=None, random_init=False, vocab=None, variant="r18", backend=None,
                   device=None, threads=None, size=None, pytorch=False, stream=None):
    """-> (Predictor, info). ``model``: bundle folder or grpc:// / http:// URL; else ``checkpoint`` /
    ``random_init`` / ``vocab`` (or ``pytorch=True``) run the PyTorch model; nothing named: the shipped bundle
    (said on ``stream``, default stderr)."""
    if model and (checkpoint or random_init):
        raise UserError("--model (a bundle) and --checkpoint/--random-init exclude each other; pass one")
    if not model and not (checkpoint or random_init or vocab or pytorch):
        (stream or sys.stderr).write(
            "rmpsam-edge: no --model: running the shipped demo bundle %s (demo weights, FP16-stored, computed in "
            "FP32) on the deployed runtime, --backend %s; the PyTorch model runs with --checkpoint (the demo "
            "weights: --checkpoint %s)\n" % (SHIPPED_BUNDLE, backend or "auto", DEMO_WEIGHTS))
        model = SHIPPED_BUNDLE
    if model:
        from rmpsam_edge.runtime import backends, load
        remote = backends.is_remote(model)
        if remote and size is not None:
            raise UserError("--imgsz does not apply to %s: the served bundle fixes the input size" % model)
        predictor = load(model, backend=backend or "auto", device=device, threads=threads)
        if size is not None:  # a copy: the bundle's spec is not changed
            predictor.spec = predictor.spec.with_input_size(None if size == "official" else size)
        return predictor, {"bundle": model if remote else os.path.abspath(model),
                           "backend": predictor.runner.describe(), "variant": predictor.spec.variant,
                           "weights_note": predictor.spec.weights_note}
    if device:
        raise UserError("--device applies to an exported bundle (--model); the PyTorch path runs on the CPU")
    if backend and backend != "auto":  # a flag that cannot apply is an error, not ignored
        raise UserError("--backend %s applies to an exported bundle (--model), not to the PyTorch %s; export one "
                        "(rmpsam-edge export ... --out BUNDLE, then --model BUNDLE --backend %s) or drop --backend"
                        % (backend, "checkpoint" if checkpoint else "weights", backend))
    try:
        from rmpsam_edge.torch_runner import torch_predictor
    except ImportError as exc:
        if "torch" in str(exc):
            raise UserError("the PyTorch path needs torch (pip install torch==2.13.0); or pass --model BUNDLE "
                            "to run an exported bundle without torch")
        raise
    predictor, info = torch_predictor(checkpoint, vocab, random_init, variant,
                                      size if size != "official" else None, threads)
    if size == "official":  # None above means "the checkpoint's size"; 'official' means the official policy
        predictor.spec = predictor.spec.with_input_size(None)
    return predictor, info
