"""Demo vocabulary in the official format: a tensor (K, P, 768) of unit rows, one per class (P = 1 prototype).

CLIP cannot be run here, so the embeddings are fixed, seeded random unit vectors (nearly orthogonal in 768-d).
They only have meaning for weights trained against them (the demo weights); they are NOT text embeddings.
"""
import json
import os
from typing import List, Tuple

import numpy as np

from .synthetic import CLASS_NAMES, NUM_THINGS

VOCAB_SEED = 20240601
CLIP_DIM = 768
NOTE = ("demo vocabulary for weights trained on synthetic shapes: seeded random unit vectors, not CLIP text "
        "embeddings; only meaningful with rmpsam_r18_demo.pth")


def demo_class_embed(num_classes: int = len(CLASS_NAMES), prototypes: int = 1, dim: int = CLIP_DIM,
                     seed: int = VOCAB_SEED) -> np.ndarray:
    """(K, P, dim) float32, every row L2-normalised; deterministic."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((num_classes, prototypes, dim)).astype(np.float64)
    e /= np.linalg.norm(e, axis=-1, keepdims=True)
    return e.astype(np.float32)


def save_vocab(out_dir: str, stem: str = "demo_vocab") -> Tuple[str, str]:
    """Write ``<stem>.pth`` (a plain tensor (K, P, 768), like the official files) and ``<stem>.json``."""
    import torch
    os.makedirs(out_dir, exist_ok=True)
    pth = os.path.join(out_dir, stem + ".pth")
    js = os.path.join(out_dir, stem + ".json")
    torch.save(torch.from_numpy(demo_class_embed()), pth)
    with open(js, "w") as f:
        json.dump({"class_names": list(CLASS_NAMES), "num_things": NUM_THINGS, "seed": VOCAB_SEED,
                   "note": NOTE}, f, indent=2)
        f.write("\n")
    return pth, js


def class_names() -> List[str]:
    return list(CLASS_NAMES)
