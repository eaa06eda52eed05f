"""A bundle half the size that computes exactly like FP32: large FP32 initializers stored as FP16, each followed by
a ``Cast`` to FP32 (ONNX Runtime and OpenVINO fold the casts when they load the graph; TensorRT reads the weights
as constants). Used for the demo bundle shipped in the wheel (rmpsam_edge/assets/bundle); the only loss is the
rounding of the weights to FP16 (the bundle's parity with the FP32 export is tested in tests/test_shipped_bundle.py).

    python -m rmpsam_edge.export.fp16_storage FP32_BUNDLE OUT [--drop prompt_decoder_many] [--force]
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np

from rmpsam_edge.atomic import atomic_dir
from rmpsam_edge.errors import UserError

MIN_ELEMENTS = 1024  # smaller tensors (biases, norms) stay FP32: no size to win, no rounding to risk
FP16_MAX = 65504.0


def store_fp16(model, min_elements: int = MIN_ELEMENTS) -> int:
    """Rewrite ``model`` (onnx.ModelProto) in place; -> the number of initializers now stored as FP16."""
    import onnx
    from onnx import helper, numpy_helper
    casts, kept = [], []
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init) if init.data_type == onnx.TensorProto.FLOAT else None
        if arr is None or arr.size < min_elements or not np.isfinite(arr).all() or np.abs(arr).max() > FP16_MAX:
            kept.append(init)
            continue
        stored = init.name + "__fp16"
        kept.append(numpy_helper.from_array(arr.astype(np.float16), stored))
        casts.append(helper.make_node("Cast", [stored], [init.name], to=onnx.TensorProto.FLOAT,
                                      name=stored + "_to_fp32"))
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    nodes = casts + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return len(casts)


def convert_bundle(src: str, out: str, drop=("prompt_decoder_many",), force: bool = False) -> dict:
    """FP32 bundle folder ``src`` -> ``out`` with FP16-stored weights (graphs in ``drop`` left out). -> manifest."""
    import onnx
    from rmpsam_edge.runtime.bundle import Bundle, add_step, sha256_file, write_manifest
    b = Bundle.open(src)
    if b.manifest.get("precision", "fp32") != "fp32" or b.static:
        raise UserError("%s: fp16 storage starts from a dynamic FP32 export" % src)
    manifest = json.loads(json.dumps(b.manifest))
    with atomic_dir(out, force=force) as tmp:
        for name in list(manifest["graphs"]):
            if name in drop:
                del manifest["graphs"][name]
                manifest.pop("many_prompts_from", None)
                continue
            entry = manifest["graphs"][name]
            model = onnx.load(b.graph_path(name))
            entry["fp16_initializers"] = store_fp16(model)
            dst = os.path.join(tmp, entry["file"])
            onnx.save(model, dst)
            entry["sha256"], entry["bytes"] = sha256_file(dst), os.path.getsize(dst)
        voc = manifest.get("vocabulary")
        if voc:
            shutil.copy2(os.path.join(b.path, voc.get("file", "vocab.npy")), tmp)
        manifest["weights_storage"] = "fp16 initializers + Cast to fp32 (computes in fp32)"
        argv = ["python", "-m", "rmpsam_edge.export.fp16_storage", src, out, "--drop", ",".join(drop)]
        add_step(manifest, "rmpsam_edge.export.fp16_storage", argv + (["--force"] if force else []), modules=("onnx",))
        write_manifest(tmp, manifest)
    return manifest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rmpsam_edge.export.fp16_storage", description=__doc__.split("\n")[0])
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--drop", default="prompt_decoder_many", help="comma-separated graphs to leave out")
    from rmpsam_edge.commands.common_args import add_force
    add_force(p, "an existing out bundle")
    a = p.parse_args(argv)
    try:
        m = convert_bundle(a.src, a.out, [d for d in a.drop.split(",") if d], a.force)
    except UserError as exc:
        sys.stderr.write("error: %s\n" % exc)
        return 2
    total = sum(g["bytes"] for g in m["graphs"].values()) / 1e6
    sys.stdout.write("fp16-stored bundle written: %s (%.1f MB of graphs)\n" % (a.out, total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
