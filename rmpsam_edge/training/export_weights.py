"""Turn a training checkpoint into shippable weights: FP16 tensors in the official key layout
({'state_dict': {backbone.*, neck.*, panoptic_head.*}, 'meta': {...}}), read by the normal strict loader
(``rmpsam_edge.checkpoint.load_checkpoint`` upcasts to FP32). Optimizer state is dropped.

    rmpsam-edge train ... --weights-out rmpsam_edge/assets/weights/rmpsam_r18_demo.pth   (at the end of a run)
"""
import json
import os

import torch

from ..errors import UserError
from ..spec import DEMO_WEIGHTS_NOTE


def export_weights(src: str, dst: str, force: bool = False, input_size=None) -> dict:
    if os.path.exists(dst) and not force:
        raise UserError("%s exists; pass --force to overwrite it" % dst)
    obj = torch.load(src, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or "state_dict" not in obj:
        raise UserError("%s is not a training checkpoint (no state_dict)" % src)
    smeta = obj.get("meta", {})
    cfg = json.loads(smeta.get("config", "{}")) if isinstance(smeta.get("config"), str) else {}
    extra = json.loads(smeta.get("extra", "{}")) if isinstance(smeta.get("extra"), str) else {}
    sd = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in obj["state_dict"].items()}
    meta = {"weights_note": DEMO_WEIGHTS_NOTE, "variant": cfg.get("variant", "r18"),
            "input_size": int(input_size or cfg.get("imgsz", 192)), "steps": int(smeta.get("step", 0)),
            "train_seconds": float(extra.get("elapsed_s", 0.0)), "train_config": json.dumps(cfg),
            "vocabulary": "demo_vocab.pth (seeded random unit vectors, not CLIP)", "dtype": "float16"}
    from rmpsam_edge.atomic import atomic_file
    with atomic_file(dst, force=True) as tmp:  # existence was checked above (force)
        torch.save({"state_dict": sd, "meta": meta}, tmp)
    return meta
