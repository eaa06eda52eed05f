"""How closely the model reproduces the official RMP-SAM outputs, per torch thread count -> a JSON results file.

    .venv/bin/python tests/measure_reference_parity.py --threads 1 2 --out benchmarks/results/reference_parity.json

Same model, weights, input and reference arrays as tests/test_reference_parity.py; each number is the largest
absolute difference divided by the reference's absmax (``rel``), or a count of differing mask signs.
"""
import argparse
import json
import os
import platform
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_reference_parity import rel, run_reference  # noqa: E402


def measure(threads: int) -> dict:
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as work:
        ref, feats, pan, prompt = run_reference(work)
    sign = np.unpackbits(ref["pan_masks_sign_packed"], axis=-1, count=128).astype(bool)
    return {"threads": threads,
            "features_rel": rel(feats[..., ::8, ::8], ref["feat_f32_sub8"]),
            "class_logits_rel": rel(pan["cls"], ref["pan_cls"]),
            "query_embed_rel": rel(pan["query"], ref["pan_query"]),
            "object_mask_logits_rel": rel(pan["masks"][..., ::8, ::8], ref["pan_masks_f32_sub8"]),
            "object_mask_sign_mismatches": int(((pan["masks"] > 0).numpy() != sign).sum()),
            "object_mask_signs": int(sign.size),
            "prompt_mask_logits_rel": rel(prompt["masks"], ref["prompt_masks"]),
            "prompt_iou_rel": rel(prompt["iou"], ref["prompt_iou"])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--out", help="JSON results file (printed when not given)")
    args = p.parse_args(argv)
    result = {"command": "python tests/measure_reference_parity.py --threads %s%s" % (
                  " ".join(str(t) for t in args.threads), " --out %s" % args.out if args.out else ""),
              "reference": "official xushilin1/RAP-SAM 2e7bf1c outputs, R50, seeded weights, 512x512 input "
                           "(tests/data/ref_r50_small.npz)",
              "torch": torch.__version__, "machine": platform.machine(), "cpu_count": os.cpu_count(),
              "runs": [measure(t) for t in args.threads]}
    text = json.dumps(result, indent=2) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
