"""Shared test helpers for model / checkpoint tests: seeded official-format weights (the rule the reference
outputs were made with: one generator per key, seeded with its crc32) and checkpoint files written the way
mmengine writes them."""
import json
import os
import re
import zlib

import numpy as np
import torch

DATA = os.path.join(os.path.dirname(__file__), "data")


def official_keys():
    with open(os.path.join(DATA, "keys_r50.json")) as f:
        return json.load(f)


def seeded_tensor(key, shape):
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    shape = tuple(shape)
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    if key.endswith("running_var"):
        a = rng.uniform(0.5, 1.5, shape)
    elif key.endswith("running_mean"):
        a = rng.normal(0, 0.1, shape)
    elif len(shape) == 1 and key.endswith(".weight") and ("norm" in key or "bn" in key or re.search(r"\.\d+\.weight$", key)):
        a = 1 + rng.normal(0, 0.1, shape)
    elif len(shape) >= 2:
        a = rng.normal(0, 1 / np.sqrt(np.prod(shape) / shape[0]), shape)
    else:
        a = rng.normal(0, 0.02, shape)
    return torch.from_numpy(np.asarray(a, dtype=np.float64).astype(np.float32))


def seeded_state_dict(shapes):
    """shapes: {key: shape} -> deterministic state dict."""
    return {k: seeded_tensor(k, s) for k, s in shapes.items()}


def model_shapes(variant):
    from rmpsam_edge.modeling import build_model
    return {k: tuple(v.shape) for k, v in build_model(variant).state_dict().items()}


def write_mmengine_checkpoint(path, state_dict, extra_meta=True):
    """{'state_dict': ..., 'meta': {...}} like mmengine; meta holds only plain values here."""
    obj = {"state_dict": state_dict}
    if extra_meta:
        obj["meta"] = {"epoch": 12, "mmdet_version": "3.3.0", "dataset_meta": {"classes": ["a", "b"]}}
    torch.save(obj, path)
    return path
