"""``rmpsam-edge info PATH``: what a checkpoint, a vocabulary file or a bundle holds.

Checkpoint: variant, parameter count per part, keys, sha256, weights note, input policy, and the training record
(steps, seconds, settings) of weights made by ``rmpsam-edge train``. Vocabulary: classes,
prototypes, names. Bundle folder: variant, precision, graphs and their hashes, the weights it was exported from,
parity, its provenance (one step per command that wrote it: export, quantize, ...) and which TensorRT versions'
ONNX importers take its graphs (``runtime/tensorrt/importers.py``).
"""
import json
import os
import sys

from rmpsam_edge.errors import UserError


def add_arguments(p):
    p.add_argument("path", nargs="?", help="checkpoint (.pth), vocabulary file, or bundle folder "
                                           "(default: the shipped demo weights)")
    p.add_argument("--vocab", help="also describe this vocabulary file")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def describe_checkpoint(path):
    from rmpsam_edge.checkpoint import load_checkpoint
    model, info = load_checkpoint(path)
    parts = {name: sum(p.numel() for p in getattr(model, name).parameters()) for name in ("backbone", "neck", "panoptic_head")}
    policy = info.get("input_size")
    from rmpsam_edge.media import repo_path
    return {"kind": "checkpoint", "path": repo_path(info["path"]), "variant": info["variant"],
            "parameters": info["parameters"], "parameters_by_part": parts,
            "state_dict_keys": len(model.state_dict()), "sha256": info["sha256"],
            "weights_note": info.get("weights_note"), "training": info.get("training"),
            "input_policy": ("long side %d px, pad to /32" % policy) if policy else
                            "official: short side 800, long side <= 1333, pad to /32"}


def describe_vocab(path):
    from rmpsam_edge.checkpoint import load_vocabulary
    arr, names, num_things = load_vocabulary(path)
    return {"kind": "vocabulary", "path": os.path.abspath(path), "classes": int(arr.shape[0]),
            "prototypes": int(arr.shape[1]), "dim": int(arr.shape[2]), "things": num_things,
            "stuff": len(names) - num_things, "names": names}


def describe_bundle(path):
    from rmpsam_edge.runtime.bundle import Bundle
    from rmpsam_edge.runtime.tensorrt.importers import verdicts
    b = Bundle.open(path)
    m, voc = b.manifest, b.manifest.get("vocabulary") or {}
    return {"kind": "bundle", "path": os.path.abspath(path), "variant": b.variant,
            "precision": m.get("precision", "fp32"), "input_size": m.get("input", {}).get("size"),
            "static": b.static, "graphs": {g: {"file": e["file"], "sha256": e["sha256"], "bytes": e.get("bytes")}
                                           for g, e in m["graphs"].items()},
            "vocabulary": voc.get("names"), "weights": b.weights_info(),
            "parity_ok": (m.get("parity") or {}).get("ok"), "provenance": b.provenance(), "tensorrt": verdicts(b)}


def run(args):
    path = args.path
    if path is None:
        from rmpsam_edge.checkpoint import DEFAULT_WEIGHTS
        path = DEFAULT_WEIGHTS
    if os.path.isdir(path):
        out = describe_bundle(path)
    elif not os.path.exists(path):
        raise UserError("%s does not exist; give a checkpoint file, a vocabulary file or a bundle folder" % path)
    else:
        try:
            out = describe_checkpoint(path)
        except UserError as exc:
            if "no state_dict" not in str(exc):
                raise
            out = describe_vocab(path)
    if args.vocab:
        out["vocabulary"] = describe_vocab(args.vocab)
    if args.json:
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        sys.stdout.write(_text(out))
    return 0


def _step(i, s):
    import shlex
    cmd = " ".join(shlex.quote(a) for a in s["argv"]) if s.get("argv") else s.get("command")
    return "  %d. %s (%s): %s" % (i, s.get("tool") or "command", s.get("created") or "?", cmd)


def _text(d, indent=""):
    lines = []
    for k, v in d.items():
        if k == "provenance" and isinstance(v, list):
            lines.append("%sprovenance:" % indent)
            lines += [indent + _step(i + 1, s) for i, s in enumerate(v)]
        elif k == "tensorrt" and isinstance(v, list):  # one line per TensorRT version
            lines += [indent + line for line in v]
        elif isinstance(v, dict):
            lines.append("%s%s:" % (indent, k))
            lines.append(_text(v, indent + "  ").rstrip("\n"))
        elif isinstance(v, list) and len(v) > 12:
            lines.append("%s%s: %s, ... (%d)" % (indent, k, ", ".join(str(x) for x in v[:12]), len(v)))
        else:
            lines.append("%s%s: %s" % (indent, k, v))
    return "\n".join(lines) + "\n"
