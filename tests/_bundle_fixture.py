"""One small exported bundle shared by the export / bundle / runtime tests (exported once per test session).

R18, seeded random weights (seed 0), input size 128, a 5-class vocabulary with names (written as .npy + .json
sidecar and passed with --vocab), exported through the real CLI (``rmpsam-edge export``) at --opset 17, so the
LayerNormalization ops (TensorRT pins, quantize exclusions, the 8.5 refusal) stay tested; the default export
(opset 16, LayerNorm decomposed) is tested on the shipped bundle and in tests/test_tensorrt_importers.py. A second,
static bundle (--static, prompt batch 2) is exported on first use. Each test module wraps these in its own
fixture:

    @pytest.fixture(scope="session")
    def bundle(tmp_path_factory):
        return shared_bundle(tmp_path_factory)
"""
import json
import os

import numpy as np

IMGSZ = 128
SEED = 0
VOCAB_NAMES = ["person", "car", "tree", "sky", "road"]
NUM_THINGS = 2
_CACHE = {}


def vocab_embed():
    rng = np.random.default_rng(1)
    v = rng.standard_normal((len(VOCAB_NAMES), 2, 768)).astype(np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def write_vocab(folder):
    path = os.path.join(str(folder), "tiny_vocab.npy")
    np.save(path, vocab_embed())
    with open(os.path.join(str(folder), "tiny_vocab.json"), "w") as f:
        json.dump({"class_names": VOCAB_NAMES, "num_things": NUM_THINGS}, f)
    return path


def _export(tmp_path_factory, name, extra):
    from rmpsam_edge.cli import main
    base = tmp_path_factory.mktemp(name)
    vocab = write_vocab(base)
    out = os.path.join(str(base), "bundle")
    argv = ["export", "--random-init", "--seed", str(SEED), "--imgsz", str(IMGSZ), "--vocab", vocab, "--opset", "17",
            "--out", out]
    rc = main(argv + list(extra))
    assert rc == 0, "export failed: %s" % argv
    return out


def shared_bundle(tmp_path_factory):
    """Path of the dynamic-shape test bundle (exported on first call)."""
    if "dynamic" not in _CACHE:
        _CACHE["dynamic"] = _export(tmp_path_factory, "bundle_dynamic", [])
    return _CACHE["dynamic"]


def shared_static_bundle(tmp_path_factory):
    """Path of the static test bundle: 128x128, prompt batch 2, 5 classes x 2 prototypes."""
    if "static" not in _CACHE:
        _CACHE["static"] = _export(tmp_path_factory, "bundle_static", ["--static", "--static-prompts", "2"])
    return _CACHE["static"]


def torch_model():
    """The PyTorch model the test bundles were exported from, with their vocabulary set."""
    if "model" not in _CACHE:
        import torch
        from rmpsam_edge.checkpoint import random_model
        model, _ = random_model("r18", seed=SEED)
        model.set_vocabulary(torch.from_numpy(vocab_embed()))
        _CACHE["model"] = model
    return _CACHE["model"]
