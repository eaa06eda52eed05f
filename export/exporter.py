"""``export_bundle``: an RMP-SAM model -> a model bundle folder (graphs + vocab.npy + manifest.json).

The bundle is written into a hidden sibling (``rmpsam_edge.atomic.atomic_dir``) and renamed to ``out`` only
after parity passed, so a failed or killed export never leaves a half bundle at ``out`` (a rerun sweeps the
leftover) and an existing bundle is replaced only with ``force``.
"""
import datetime
import os
import time
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch

from rmpsam_edge.atomic import atomic_dir
from rmpsam_edge.errors import UserError
from rmpsam_edge.runtime.base import GRAPHS
from rmpsam_edge.runtime.bundle import (FORMAT, FORMAT_VERSION, VOCAB_FILE, is_bundle, provenance_step,
                                        sha256_file, write_manifest)
from rmpsam_edge.spec import IMAGENET_MEAN, IMAGENET_STD

from .graphs import build_graphs
from .onnx_io import DEFAULT_OPSET, export_onnx
from .parity import check_parity, format_parity, pad_to, parity_images

SIZE_DIVISOR = 32
# Prompt count from which the projected-keys/values prompt graph is used. Measured on this project's CPU
# (R18, 512x512, ORT and OpenVINO, 2 threads): the query-side fold is cheaper up to ~32-48 prompts, the
# projected form from ~48-64 (theory: ~37, where Np*8*256 per-pixel work meets the fixed 2*256*256).
MANY_PROMPTS_FROM = 48
DEFAULT_RANGES = {"Np": (1, 256), "K": (1, 1024), "P": (1, 16)}
OUTPUT_NAMES = {"prompt_decoder_many": GRAPHS["prompt_decoder"]}


def _ceil32(v: int) -> int:
    return -(-int(v) // SIZE_DIVISOR) * SIZE_DIVISOR


def _dynamic_axes(graph: str, static: bool, fixed_vocab: bool = True):
    """Symbolic axes of ``graph``; static bundles fix H, W, Np (and K, P when a vocabulary is stored)."""
    if static:
        if graph == "object_decoder" and not fixed_vocab:
            return {"class_embed": {0: "K", 1: "P"}, "class_logits": {2: "K+1"}}
        return None
    if graph == "encoder":
        return {"image": {0: "B", 2: "H", 3: "W"}, "features": {0: "B", 2: "h", 3: "w"}}
    if graph.startswith("prompt_decoder"):
        return {"features": {2: "h", 3: "w"}, "boxes": {0: "Np"}, "mask_logits": {0: "Np", 1: "h", 2: "w"},
                "iou": {0: "Np"}}
    return {"features": {2: "h", 3: "w"}, "class_embed": {0: "K", 1: "P"}, "class_logits": {2: "K+1"},
            "mask_logits": {2: "h", 3: "w"}}


def _io_shapes(path: str) -> dict:
    import onnx
    model = onnx.load(path, load_external_data=False)

    def desc(values):
        out = {}
        for v in values:
            dims = [d.dim_param if d.dim_param else int(d.dim_value) for d in v.type.tensor_type.shape.dim]
            out[v.name] = {"shape": dims, "dtype": onnx.helper.tensor_dtype_to_np_dtype(
                v.type.tensor_type.elem_type).name}
        return out

    return {"inputs": desc(model.graph.input), "outputs": desc(model.graph.output)}


def _check_out(out: str, force: bool) -> None:
    """Refuse to overwrite without force; refuse to replace something that is not a bundle."""
    if os.path.exists(out):
        if not force:
            raise UserError("%s already exists; pass --force to overwrite it, or choose another --out" % out)
        if os.path.isfile(out) or (not is_bundle(out) and os.listdir(out)):
            raise UserError("%s exists and is not a model bundle; refusing to overwrite it even with --force, "
                            "choose another --out" % out)


def export_bundle(model: torch.nn.Module, out: str, input_size: Optional[int] = 640,
                  class_embed: Optional[np.ndarray] = None, class_names: Optional[List[str]] = None,
                  num_things: Optional[int] = None, weights: Optional[dict] = None, force: bool = False,
                  static: bool = False, static_prompts: int = 1, opset: int = DEFAULT_OPSET,
                  min_size: Tuple[int, int] = (32, 32), max_size: Optional[Tuple[int, int]] = None,
                  many_prompts: bool = True, per_tap: bool = True, argv: Optional[List[str]] = None,
                  log: Callable[[str], None] = print) -> dict:
    """Export ``model`` (an ``RMPSAM`` in eval mode) as a bundle at ``out``; returns the manifest.

    input_size: the input-size policy (long side in pixels; None = the official keep-ratio rule), also the
    parity/trace size. class_embed (K, P, 768): the vocabulary stored as vocab.npy (None: no vocabulary; the
    object decoder still takes class embeddings as input). weights: the manifest's weights record
    (``rmpsam_edge.checkpoint.weights_record``). argv: the command line for the provenance step (default: this
    process's). static: fixed H = W = input_size rounded up to 32, fixed prompt batch ``static_prompts`` and the
    vocabulary's K x P. min_size/max_size: the declared (H, W) range (multiples of 32) of a dynamic bundle;
    max_size None: imgsz rounded up to 32 (1344 for the official policy) on both sides.
    Raises UserError when an output is over the parity tolerance (the bundle is then not written)."""
    t0 = time.time()
    if input_size is not None and int(input_size) < SIZE_DIVISOR:
        raise UserError("--imgsz %s is too small; use at least %d (e.g. 640)" % (input_size, SIZE_DIVISOR))
    if static and input_size is None:
        raise UserError("--static needs an integer --imgsz (the fixed input size), e.g. --imgsz 640")
    trace_max = _ceil32(input_size) if input_size else 1344
    lo = tuple(min_size)
    hi = tuple(max_size) if max_size else (max(trace_max, lo[0]), max(trace_max, lo[1]))
    # each side reaches its min at this long side, and the long side fits one side's max (either orientation)
    if not static and not (max(lo) <= trace_max <= max(hi) and lo[0] <= hi[0] and lo[1] <= hi[1]):
        raise UserError("--imgsz %s is outside the declared range --min-size %dx%d .. --max-size %dx%d"
                        % (input_size, lo[0], lo[1], hi[0], hi[1]))
    if class_embed is not None:
        class_embed = np.ascontiguousarray(class_embed, dtype=np.float32)
        if class_embed.ndim != 3 or class_embed.shape[-1] != 768:
            raise UserError("vocabulary must be (K, P, 768), got %s" % (class_embed.shape,))
    parity_embed = class_embed if class_embed is not None else _random_vocab()
    st = None
    if static:
        side = _ceil32(input_size)
        st = {"height": side, "width": side, "prompts": int(static_prompts),
              "classes": None if class_embed is None else int(class_embed.shape[0]),
              "prototypes": None if class_embed is None else int(class_embed.shape[1])}
    _check_out(out, force)
    with atomic_dir(out, force=force) as partial:  # a hidden sibling, renamed to ``out`` when complete
        manifest = _write(model.eval(), partial, input_size, class_embed, class_names, num_things, weights, st,
                          opset, (lo, hi), many_prompts and not static, per_tap, parity_embed, argv, log)
        manifest["export_seconds"] = round(time.time() - t0, 1)
        write_manifest(partial, manifest)
    log("bundle written: %s (%.1f s)" % (out, time.time() - t0))
    return manifest


def _random_vocab(k: int = 8, p: int = 2, seed: int = 0) -> np.ndarray:
    """Unit-row stand-in class embeddings for the parity of bundles exported without a vocabulary."""
    v = np.random.default_rng(seed).standard_normal((k, p, 768)).astype(np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@torch.no_grad()
def _write(model, folder, input_size, class_embed, class_names, num_things, weights, st, opset, hw_range,
           many_prompts, per_tap, parity_embed, argv, log) -> dict:
    graphs = build_graphs(model, per_tap=per_tap)
    if not many_prompts:
        graphs.pop("prompt_decoder_many")
    x = pad_to(torch.from_numpy(parity_images(input_size)[0][1]), (st["height"], st["width"]) if st else None)
    feats = graphs["encoder"](x)
    n_trace = st["prompts"] if st else 6
    boxes = torch.rand(n_trace, 4, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    ce = torch.from_numpy(parity_embed)
    sample = {"encoder": (x,), "prompt_decoder": (feats, boxes),
              "prompt_decoder_many": (feats, boxes), "object_decoder": (feats, ce)}
    entries = {}
    for name, module in graphs.items():
        t = time.time()
        fname = name + ".onnx"
        path = os.path.join(folder, fname)
        ins, outs = GRAPHS.get(name) or OUTPUT_NAMES[name]
        axes = _dynamic_axes(name, st is not None, class_embed is not None)
        stats = export_onnx(module, sample[name], path, list(ins), list(outs), axes, opset=opset)
        if stats["opset"] != opset:
            raise UserError("%s was written at opset %s instead of %d; report this with your torch/onnx versions"
                            % (fname, stats["opset"], opset))
        entries[name] = dict(stats, file=fname, sha256=sha256_file(path), bytes=os.path.getsize(path),
                             **_io_shapes(path))
        log("exported %-20s %6.1f MB  %4d nodes  %.1f s" % (fname, os.path.getsize(path) / 1e6, stats["nodes"],
                                                            time.time() - t))
    vocab = None
    if class_embed is not None:
        np.save(os.path.join(folder, VOCAB_FILE), class_embed)
        k = class_embed.shape[0]
        names = list(class_names) if class_names is not None else ["class_%d" % i for i in range(k)]
        vocab = {"file": VOCAB_FILE, "sha256": sha256_file(os.path.join(folder, VOCAB_FILE)),
                 "shape": list(class_embed.shape), "names": names,
                 "num_things": int(num_things) if num_things is not None else k}
    lo, hi = hw_range
    policy = ("long side resized to %d px, aspect ratio kept" % input_size) if input_size else \
        "official keep-ratio rule: short side 800, long side <= 1333"
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "variant": getattr(model, "variant", "r18"), "precision": "fp32", "opset": opset,
        "input": {"size": input_size, "policy": policy, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                  "color": "RGB", "layout": "NCHW float32, (x - mean) / std on the 0-255 scale",
                  "pad": "zeros at bottom/right to multiples of 32, after normalisation", "size_divisor": 32},
        "prompts": {"boxes": "normalised (cx, cy, w, h) of the resized un-padded image, clamped to [1e-5, 1-1e-5] "
                             "(rmpsam_edge.preprocess.normalize_boxes); a click is the box (x-3, y-3, x+3, y+3)"},
        "outputs": {"mask_logits": "stride 4 of the padded input; upsample on the host "
                                   "(rmpsam_edge.postprocess.upsample_masks); not upsampled in any graph",
                    "class_logits": "100 * max over prototypes of cosine; background (exactly 0) last"},
        "graphs": entries,
        "many_prompts_from": MANY_PROMPTS_FROM if "prompt_decoder_many" in entries else None,
        "dynamic_axes": None if st else {
            "B": {"min": 1, "max": 1, "note": "encoder batch; the runtime sends one image"},
            "H": {"min": lo[0], "max": hi[0], "opt": min(hi[0], _ceil32(input_size or 800)), "multiple_of": 32},
            "W": {"min": lo[1], "max": hi[1], "opt": min(hi[1], _ceil32(input_size or 1333)), "multiple_of": 32},
            "h": "H / 4", "w": "W / 4",
            "Np": {"min": DEFAULT_RANGES["Np"][0], "max": DEFAULT_RANGES["Np"][1], "opt": 1},
            "K": {"min": DEFAULT_RANGES["K"][0], "max": DEFAULT_RANGES["K"][1],
                  "opt": class_embed.shape[0] if class_embed is not None else 80},
            "P": {"min": DEFAULT_RANGES["P"][0], "max": DEFAULT_RANGES["P"][1],
                  "opt": class_embed.shape[1] if class_embed is not None else 1}},
        "static": st,
        "vocabulary": vocab,
        "weights": dict(weights or {}),
    }
    write_manifest(folder, manifest)  # parity runs the staged bundle through the real runtime
    parity = check_parity(model, folder, parity_embed, input_size)
    for line in format_parity(parity):
        log(line)
    if not parity["ok"]:
        bad = ["%s/%s (%s)" % (run["graph"], r["output"], r.get("error") or "rel %.1e, tolerance %.0e%s" % (
            r["rel"], r["tolerance"], ", mask agreement %.5f" % r["mask_agreement"] if "mask_agreement" in r else ""))
            for run in parity["runs"] for r in run["outputs"] if not r["ok"]]
        raise UserError("export failed parity against PyTorch: %s; nothing was written (report this with "
                        "`rmpsam-edge info` output)" % "; ".join(bad[:4]))
    step = provenance_step("rmpsam-edge export", argv, modules=("torch", "onnx", "onnxslim"),
                           versions={"parity_runtime": parity["runtime"]})
    manifest.update(provenance=[step], parity=parity)
    return manifest
