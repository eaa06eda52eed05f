"""Safe loading of RMP-SAM checkpoints and vocabulary files (needs torch).

Checkpoints are untrusted: only ``torch.load(weights_only=True)`` is used. mmengine checkpoints carry, next to
``state_dict``, ``meta``/``message_hub`` entries with classes weights_only refuses; those classes are replaced by
inert placeholders (they are never called with their real code), and only tensors are kept.
"""
import json
import os
import pickle
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from .errors import UserError, warn
from .media import asset_path
from .modeling import build_model
from .modeling.rmpsam import UNSUPPORTED_VARIANTS
from .runtime.bundle import sha256_file

DEFAULT_WEIGHTS = asset_path("weights", "rmpsam_r18_demo.pth")
DEFAULT_VOCAB = asset_path("weights", "demo_vocab.pth")


class _Inert(object):
    """Stands in for any class a checkpoint references that is not a tensor (mmengine objects, numpy scalars).
    It records nothing and runs nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __call__(self, *args, **kwargs):
        return self


def _torch_load_safe(path: str):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" not in str(exc).lower():
            raise UserError("%s is not a PyTorch checkpoint (%s); pass an RMP-SAM .pth file" % (path, _short(exc)))
        # unknown globals (mmengine objects, numpy scalars): retry with inert placeholders for exactly those names
    except Exception as exc:  # noqa: BLE001 - torch raises many types for files that are not checkpoints
        raise UserError("%s is not a PyTorch checkpoint (%s); pass an RMP-SAM .pth file" % (path, _short(exc)))
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a checkpoint"
        raise UserError("%s is not a PyTorch checkpoint (%s); pass an RMP-SAM .pth file" % (path, _short(exc)))
    stubs = [(type("Inert_" + n.replace(".", "_"), (_Inert,), {}), n) for n in names]
    try:
        with torch.serialization.safe_globals(stubs):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise UserError("%s could not be read safely (%s); re-save it as a plain state_dict" % (path, _short(exc)))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


def read_state_dict(path: str) -> Tuple[Dict[str, torch.Tensor], dict]:
    """-> (state_dict of tensors with official key names, meta dict of plain values)."""
    if not os.path.isfile(path):
        raise UserError("checkpoint not found: %s; pass --checkpoint with the path to an RMP-SAM .pth file" % path)
    obj = _torch_load_safe(path)
    meta = {}
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError("%s holds no state_dict of tensors (found %s); pass an RMP-SAM checkpoint"
                        % (path, type(obj).__name__))
    sd = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            continue
        k = k[len("module."):] if k.startswith("module.") else k
        # mmdet AnchorFreeHead renames keys ending in 'cls' to 'conv_cls' when a state dict has no version metadata
        if k.startswith("panoptic_head.conv_cls."):
            k = "panoptic_head.panoptic_cls." + k[len("panoptic_head.conv_cls."):]
        sd[k] = v
    return sd, meta


def detect_variant(sd: Dict[str, torch.Tensor]) -> str:
    """Backbone from tensor shapes: Bottleneck conv3 -> r50; BasicBlock 3x3 conv1 with 64 channels -> r18."""
    if any(k.startswith("backbone.stem.") or k.startswith("backbone.trunk") for k in sd):
        raise UserError("this is a ConvNeXt-L checkpoint; not supported: %s. Use an R18 or R50 checkpoint"
                        % UNSUPPORTED_VARIANTS["convnext_l"])
    if "backbone.layer1.0.conv3.weight" in sd:
        return "r50"
    w = sd.get("backbone.layer1.0.conv1.weight")
    if w is not None and tuple(w.shape) == (64, 64, 3, 3):
        return "r18"
    prefixes = sorted({k.split(".", 1)[0] for k in sd})
    raise UserError("not an RMP-SAM checkpoint: no ResNet-18/50 backbone keys (top-level prefixes: %s); "
                    "expected keys like backbone.layer1.0.conv1.weight, neck.deconv.*, panoptic_head.*"
                    % ", ".join(prefixes[:6]))


def _describe_mismatch(path, variant, missing, unexpected) -> str:
    parts = []
    if missing:
        parts.append("%d missing keys (%s%s)" % (len(missing), ", ".join(missing[:3]), ", ..." if len(missing) > 3 else ""))
    if unexpected:
        parts.append("%d unexpected keys (%s%s)" % (len(unexpected), ", ".join(unexpected[:3]),
                                                      ", ..." if len(unexpected) > 3 else ""))
    return ("%s does not match the RMP-SAM %s model: %s; is it a checkpoint of another model?"
            % (path, variant, "; ".join(parts)))


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def load_checkpoint(path: Optional[str] = None, class_embed: Optional[np.ndarray] = None):
    """Build the model a checkpoint describes and load it strictly. ``path=None`` -> the shipped demo weights.

    Returns (model in eval mode, float32, info dict: path, variant, parameters, sha256, weights_note, input_size,
    training: the run's steps / train_seconds / train_config when the checkpoint records them, else None).
    """
    path = DEFAULT_WEIGHTS if path is None else path
    if path == DEFAULT_WEIGHTS and not os.path.isfile(path):
        raise UserError("no default weights are installed (%s); pass --checkpoint PATH or --random-init" % path)
    sd, meta = read_state_dict(path)
    variant = detect_variant(sd)
    model = build_model(variant)
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    own = model.state_dict()
    missing = sorted(k for k in own if k not in sd)
    unexpected = sorted(k for k in sd if k not in own)
    if missing or unexpected:
        raise UserError(_describe_mismatch(path, variant, missing, unexpected))
    bad = [k for k in own if tuple(own[k].shape) != tuple(sd[k].shape)]
    if bad:
        raise UserError("%s: %d tensors have the wrong shape for RMP-SAM %s (first: %s %s, expected %s)"
                        % (path, len(bad), variant, bad[0], tuple(sd[bad[0]].shape), tuple(own[bad[0]].shape)))
    model.load_state_dict(sd, strict=True)
    if class_embed is not None:
        model.set_vocabulary(torch.from_numpy(np.asarray(class_embed, dtype=np.float32)))
    info = {"path": os.path.abspath(path), "variant": variant, "parameters": count_parameters(model),
            "sha256": sha256_file(path), "weights_note": meta.get("weights_note"),
            "input_size": meta.get("input_size"), "training": _training_record(meta)}
    return model.eval(), info


def _training_record(meta: dict) -> Optional[dict]:
    """What a checkpoint written by ``rmpsam-edge train`` says about its run: steps, seconds, settings."""
    rec = {k: meta[k] for k in ("steps", "train_seconds", "train_config") if k in meta}
    if isinstance(rec.get("train_config"), str):
        try:
            rec["train_config"] = json.loads(rec["train_config"])
        except ValueError:
            pass
    return rec or None


def random_model(variant: str = "r18", seed: int = 0, class_embed: Optional[np.ndarray] = None):
    """A seeded randomly initialised model (only on explicit --random-init)."""
    torch.manual_seed(seed)
    model = build_model(variant)
    if class_embed is not None:
        model.set_vocabulary(torch.from_numpy(np.asarray(class_embed, dtype=np.float32)))
    info = {"path": None, "variant": variant, "parameters": count_parameters(model), "sha256": None,
            "weights_note": "random weights", "input_size": None, "seed": seed}
    return model.eval(), info


def weights_record(info: dict, vocab: Optional[str] = None) -> dict:
    """The manifest's "weights" for a model from ``load_checkpoint`` / ``random_model`` (its ``info``) and the
    vocabulary file ``vocab`` (read back with ``rmpsam_edge.runtime.bundle.weights_info``)."""
    if info.get("path") is None:
        kind = "random-init"
    else:
        kind = "demo" if os.path.abspath(info["path"]) == os.path.abspath(DEFAULT_WEIGHTS) else "checkpoint"
    return {"kind": kind, "file": os.path.basename(info["path"]) if info.get("path") else None,
            "sha256": info.get("sha256"), "seed": info.get("seed") if kind == "random-init" else None,
            "variant": info["variant"], "note": info.get("weights_note"),
            "vocabulary_source": os.path.basename(vocab) if vocab else None}


def model_for_bundle(weights: dict, variant: str, checkpoint: Optional[str] = None):
    """The PyTorch model with the weights a bundle was exported from -> (model in eval mode, None), or
    (None, why: one line) when they cannot be reproduced here.

    weights: ``Bundle.weights_info()``; variant: the bundle's. random-init: the same variant and seed; weights
    whose sha256 is the shipped demo weights': those; ``checkpoint``: that file, when its sha256 is the
    bundle's (or the bundle records none)."""
    sha, kind = weights.get("sha256"), weights.get("kind")
    if checkpoint:
        model, info = load_checkpoint(checkpoint)
        if sha and info["sha256"] != sha:
            return None, ("%s (sha256 %s...) is not the checkpoint the bundle was exported from (%s, sha256 %s...)"
                          % (checkpoint, info["sha256"][:12], weights.get("file") or kind, sha[:12]))
    elif kind == "random-init":
        if weights.get("seed") is None:
            return None, "the bundle's random-init weights record no seed; re-export it with --random-init --seed N"
        model, _ = random_model(variant, seed=int(weights["seed"]))
    elif sha and os.path.isfile(DEFAULT_WEIGHTS) and sha256_file(DEFAULT_WEIGHTS) == sha:
        model, _ = load_checkpoint(None)
    else:
        what = "%s %s" % (kind, weights.get("file") or "") if kind else "unrecorded weights"
        return None, "the bundle's weights (%s) are not installed here; pass --checkpoint with them" % what.strip()
    if model.variant != variant:
        return None, "the weights are %s but the bundle is %s" % (model.variant, variant)
    return model, None


# ---------------------------------------------------------------------------------------------- vocabulary
def load_vocabulary(path: Optional[str] = None):
    """A CLIP text-embedding file -> (class_embed (K, P, 768) float32, class_names, num_things).

    Accepts the official format (a tensor saved with torch.save) or a .npy array. Class names and the number of
    thing classes come from a JSON file beside it (same stem, ``{"class_names": [...], "num_things": N}``);
    without one, the official COCO panoptic (133) and YouTube-VIS 2019 (40) vocabularies are recognised by size,
    others get generic names and are all treated as things.
    """
    path = DEFAULT_VOCAB if path is None else path
    if not os.path.isfile(path):
        raise UserError("vocabulary file not found: %s; pass --vocab with a (K, P, 768) class-embedding file" % path)
    if path.endswith(".npy"):
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001
            raise UserError("%s is not a numpy array file (%s)" % (path, _short(exc)))
    else:
        obj = _torch_load_safe(path)
        if isinstance(obj, dict):
            tensors = [v for v in obj.values() if isinstance(v, torch.Tensor)]
            obj = tensors[0] if len(tensors) == 1 else obj
        if not isinstance(obj, torch.Tensor):
            raise UserError("%s holds no embedding tensor (found %s); expected a (K, P, 768) tensor"
                            % (path, type(obj).__name__))
        arr = obj.float().numpy()
    if arr.ndim == 2 and arr.shape[-1] == 768:
        arr = arr[:, None, :]
    if arr.ndim != 3 or arr.shape[-1] != 768 or arr.shape[0] < 1:
        raise UserError("vocabulary %s has shape %s; expected (K classes, P prototypes, 768) CLIP text embeddings"
                        % (path, tuple(arr.shape)))
    arr = arr.astype(np.float32)
    k = arr.shape[0]
    names, num_things = _vocab_names(path, k)
    return arr, names, num_things


def _vocab_names(path: str, k: int):
    side = os.path.splitext(path)[0] + ".json"
    if os.path.isfile(side):
        with open(side) as f:
            meta = json.load(f)
        names = list(meta.get("class_names", []))
        if len(names) != k:
            raise UserError("%s lists %d class names but the vocabulary has %d classes; fix the JSON" % (side, len(names), k))
        return names, int(meta.get("num_things", k))
    from .vocabularies import KNOWN
    if k in KNOWN:
        names, num_things = KNOWN[k]
        return list(names), num_things
    warn("no class names for %s (no %s): using class_0..class_%d, all treated as things" % (path, side, k - 1))
    return ["class_%d" % i for i in range(k)], k
