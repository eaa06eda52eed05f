"""Turn a training checkpoint into shippable weights: FP16 tensors in the official key layout
({'state_dict': {backbone.*, neck.*, panoptic_head.*}, 'meta': {...}}), read by the normal strict loader
(``rmpsam_edge.checkpoint.load_checkpoint`` upcasts to FP32). Optimizer state is dropped.

    python -m rmpsam_edge.training.export_weights train_run/last.pth rmpsam_edge/assets/weights/rmpsam_r18_demo.pth
"""
import argparse
import json
import os
import sys

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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--input-size", type=int, default=None)
    from rmpsam_edge.commands.common_args import add_force
    add_force(p, "an existing dst")
    a = p.parse_args(argv)
    try:
        meta = export_weights(a.src, a.dst, a.force, a.input_size)
    except UserError as exc:
        sys.stderr.write("error: %s\n" % exc)
        return 2
    sys.stdout.write("%s (%.1f MB): %s\n" % (a.dst, os.path.getsize(a.dst) / 1e6, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
