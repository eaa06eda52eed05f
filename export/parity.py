"""Parity of an exported bundle against the PyTorch model, on a real image that ships with the project.

The staged bundle runs through the real runtime (``rmpsam_edge.runtime.load_runner``: ONNX Runtime CPU, or
OpenVINO CPU f32 when ONNX Runtime is absent), so a static bundle gets BundleRunner's own padding, prompt
chunking and cropping. The encoder runs on the pre-processed image, every decoder on the PyTorch features (so
each graph's own error is measured); the PyTorch side gets the inputs the graphs get (the static frame, the
features zero-padded to it). Two images: astronaut at the bundle's input size, and a crop of it at a size that
is not a multiple of 32 (padding on both sides). The prompt graphs get 6 prompts, the many-prompt graph its
first prompt count.

Rows come from the one comparator's ``runtime.compare.diff_row``: max |diff|, max |reference|, their ratio
(``rel``), and for mask logits the sign agreement (``mask_agreement``). Near-zero logits may flip between
runtimes; tolerances follow the reference notes: features rel <= 1e-4, decoder outputs rel <= 1e-3, masks
agreement >= 0.999.
"""
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from rmpsam_edge.media import asset_path
from rmpsam_edge.modeling.classifier import with_background
from rmpsam_edge.preprocess import load_image, normalize_boxes, points_to_boxes, preprocess
from rmpsam_edge.runtime.compare import diff_row
from rmpsam_edge.spec import ModelSpec

ASSET_IMAGE = asset_path("images", "astronaut.jpg")
TOLERANCE = {"features": 1e-4, "default": 1e-3, "agreement": 0.999}
# clicks and boxes as fractions of the resized image (x, y) / (x1, y1, x2, y2)
CLICKS = ((0.5, 0.5), (0.2, 0.3), (0.8, 0.6), (0.06, 0.94))
BOXES = ((0.2, 0.2, 0.6, 0.8), (0.0, 0.0, 1.0, 1.0))


def parity_images(input_size: Optional[int]):
    """-> list of (label, x (1,3,H,W) float32, img_shape (h, w)) for the parity runs."""
    img = load_image(ASSET_IMAGE)
    spec = ModelSpec("r18", input_size=input_size)
    out = []
    x, meta = preprocess(img, spec)
    out.append(("astronaut %dx%d" % (x.shape[3], x.shape[2]), x, meta.img_shape))
    # a crop whose resized size is not a multiple of 32 (both sides padded)
    s = int(input_size) if input_size else 800
    s2 = max(40, (s * 3) // 4) | 1
    crop = img[: img.shape[0] * 3 // 4, :]
    x2, meta2 = preprocess(crop, ModelSpec("r18", input_size=s2))
    out.append(("astronaut crop %dx%d padded to %dx%d" % (meta2.img_shape[1], meta2.img_shape[0], x2.shape[3],
                                                          x2.shape[2]), x2, meta2.img_shape))
    return out


def parity_boxes(img_shape) -> np.ndarray:
    """The parity prompts for an image of resized size (h, w) -> (6, 4) normalised (cx, cy, w, h)."""
    h, w = img_shape
    clicks = points_to_boxes(np.asarray([(cx * w, cy * h) for cx, cy in CLICKS], dtype=np.float32))
    boxes = np.asarray([(a * w, b * h, c * w, d * h) for a, b, c, d in BOXES], dtype=np.float32)
    return normalize_boxes(np.concatenate([clicks, boxes]), img_shape)


def _runner(folder: str, threads: int):
    """The bundle at ``folder`` on ONNX Runtime CPU, else OpenVINO CPU (f32)."""
    from rmpsam_edge.runtime import backends as registry
    from rmpsam_edge.runtime import load_runner
    backend = "onnxruntime" if registry.probe(registry.get("onnxruntime"))[0] else "openvino"
    return load_runner(folder, backend=backend, device="cpu", threads=threads, verbose=False)[:2]


def pad_to(t: torch.Tensor, hw: Optional[Tuple[int, int]]) -> torch.Tensor:
    """``t`` (..., h, w) zero-padded at the bottom/right to ``hw`` (None: unchanged)."""
    if hw is None:
        return t
    return torch.nn.functional.pad(t, (0, hw[1] - t.shape[-1], 0, hw[0] - t.shape[-2]))


def _row(name: str, got, ref: torch.Tensor, mask: bool = False) -> Dict:
    h, w = np.shape(got)[-2:] if mask else (None, None)
    ref = ref.numpy()[..., :h, :w] if mask else ref.numpy()
    return diff_row(name, got, ref, TOLERANCE["features"] if name == "features" else TOLERANCE["default"],
                    TOLERANCE["agreement"] if mask else None)


@torch.no_grad()
def check_parity(model: torch.nn.Module, folder: str, class_embed: np.ndarray, input_size: Optional[int],
                 threads: int = 2) -> Dict:
    """Run the bundle at ``folder`` (its manifest written) against ``model`` on the parity images.

    class_embed (K, P, 768) for the object decoder. Returns
    {'runtime', 'image', 'tolerance', 'runs': [{'graph', 'input', 'outputs': [rows]}], 'ok'}."""
    runner, bundle = _runner(folder, threads)
    st = bundle.static
    hw = (st["height"], st["width"]) if st else None
    fc = with_background(torch.from_numpy(np.ascontiguousarray(class_embed, dtype=np.float32)))
    counts = [6] + ([bundle.many_prompts_from] if bundle.has_graph("prompt_decoder_many") else [])
    runs = []
    try:
        for label, x, img_shape in parity_images(input_size):
            label += " in static %dx%d" % (hw[1], hw[0]) if hw else ""
            h4, w4 = x.shape[2] // 4, x.shape[3] // 4
            feats = model.encode(pad_to(torch.from_numpy(x), hw))
            runs.append({"graph": "encoder", "input": label,
                         "outputs": [_row("features", runner.encode(x), feats[:, :, :h4, :w4])]})
            f_np = np.ascontiguousarray(feats[:, :, :h4, :w4].numpy())  # what the decoders get, as the runner pads it
            f_in = pad_to(torch.from_numpy(f_np), None if hw is None else (hw[0] // 4, hw[1] // 4))
            for n in counts:
                boxes = np.resize(parity_boxes(img_shape), (n, 4))
                m_ref, i_ref = model.decode_prompts(f_in, torch.from_numpy(boxes))
                masks, iou = runner.decode_prompts(f_np, boxes)
                runs.append({"graph": bundle.prompt_graph(n), "input": "%s, %d prompts" % (label, n),
                             "outputs": [_row("mask_logits", masks, m_ref, mask=True), _row("iou", iou, i_ref)]})
            c_ref, m_ref, q_ref = model.decode_objects(f_in, fc)
            cls, masks, queries = runner.decode_objects(f_np, class_embed)
            runs.append({"graph": "object_decoder", "input": "%s, %d classes" % (label, class_embed.shape[0]),
                         "outputs": [_row("class_logits", cls, c_ref), _row("mask_logits", masks, m_ref, mask=True),
                                     _row("query_embed", queries, q_ref)]})
        name = runner.describe()
    finally:
        runner.deactivate()
    ok = all(r["ok"] for run in runs for r in run["outputs"])
    return {"runtime": name, "image": "rmpsam_edge/assets/images/astronaut.jpg", "tolerance": dict(TOLERANCE),
            "runs": runs, "ok": ok}


def format_parity(report: Dict) -> List[str]:
    """Human-readable lines, one per graph output."""
    lines = ["parity vs PyTorch (%s, %s):" % (report["runtime"], report["image"])]
    for run in report["runs"]:
        for r in run["outputs"]:
            if "error" in r:
                lines.append("  FAIL %-20s %-13s %s: %s" % (run["graph"], r["output"], run["input"], r["error"]))
                continue
            agree = "  mask agreement %.5f" % r["mask_agreement"] if "mask_agreement" in r else ""
            lines.append("  %s %-20s %-13s max|diff| %.2e (%.1e of max %.3g)%s  [%s]"
                         % ("ok  " if r["ok"] else "FAIL", run["graph"], r["output"], r["max_abs"], r["rel"],
                            r["ref_absmax"], agree, run["input"]))
    return lines
