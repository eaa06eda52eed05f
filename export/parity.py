"""Parity of exported graphs against the PyTorch model, on a real image that ships with the project.

Each graph runs in ONNX Runtime (CPU; OpenVINO CPU f32 when ONNX Runtime is absent) on the same inputs as the
original ``rmpsam_edge.modeling`` modules: the encoder on the pre-processed image, every decoder on the PyTorch
features (so each graph's own error is measured). Two images: astronaut at the bundle's input size, and a
crop of it at a size that is not a multiple of 32 (padding on both sides).

Metrics per output: max |diff|, max |reference|, their ratio (``rel``), and for mask logits the sign agreement
(``mask_agreement``, the fraction of pixels where both are > 0 or both <= 0). Near-zero logits may flip between
runtimes; tolerances follow the reference notes: features rel <= 1e-4, decoder outputs rel <= 1e-3, masks
agreement >= 0.999.
"""
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from rmpsam_edge.media import asset_path
from rmpsam_edge.modeling.classifier import with_background
from rmpsam_edge.preprocess import load_image, normalize_boxes, points_to_boxes, preprocess
from rmpsam_edge.spec import ModelSpec

ASSET_IMAGE = asset_path("images", "astronaut.jpg")
TOLERANCE = {"features": 1e-4, "default": 1e-3, "agreement": 0.999}
# clicks and boxes as fractions of the resized image (x, y) / (x1, y1, x2, y2)
CLICKS = ((0.5, 0.5), (0.2, 0.3), (0.8, 0.6), (0.06, 0.94))
BOXES = ((0.2, 0.2, 0.6, 0.8), (0.0, 0.0, 1.0, 1.0))


def parity_images(input_size: Optional[int], static_hw: Optional[Tuple[int, int]] = None):
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
    if static_hw is not None:
        padded = []
        for label, x, shape in out:
            full = np.zeros((1, 3) + tuple(static_hw), dtype=np.float32)
            full[:, :, :x.shape[2], :x.shape[3]] = x
            padded.append((label + " in static %dx%d" % (static_hw[1], static_hw[0]), full, shape))
        out = padded
    return out


def parity_boxes(img_shape) -> np.ndarray:
    """The parity prompts for an image of resized size (h, w) -> (6, 4) normalised (cx, cy, w, h)."""
    h, w = img_shape
    clicks = points_to_boxes(np.asarray([(cx * w, cy * h) for cx, cy in CLICKS], dtype=np.float32))
    boxes = np.asarray([(a * w, b * h, c * w, d * h) for a, b, c, d in BOXES], dtype=np.float32)
    return normalize_boxes(np.concatenate([clicks, boxes]), img_shape)


def compare(name: str, got: np.ndarray, ref: np.ndarray, mask: bool = False) -> Dict:
    got = np.asarray(got, dtype=np.float32)
    ref = np.asarray(ref, dtype=np.float32)
    if got.shape != ref.shape:
        return {"output": name, "ok": False, "error": "shape %s != reference %s" % (got.shape, ref.shape)}
    diff = float(np.abs(got - ref).max()) if got.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    rel = diff / max(scale, 1e-12)
    tol = TOLERANCE["features"] if name == "features" else TOLERANCE["default"]
    row = {"output": name, "max_abs": diff, "ref_absmax": scale, "rel": rel, "tolerance": tol, "ok": rel <= tol}
    if mask:
        agree = float(np.mean((got > 0) == (ref > 0))) if got.size else 1.0
        row["mask_agreement"] = agree
        row["ok"] = row["ok"] and agree >= TOLERANCE["agreement"]
    return row


class _OrtOrOv(object):
    """Run ONNX files with ONNX Runtime CPU (or OpenVINO CPU f32 if ONNX Runtime is not installed)."""

    def __init__(self, threads: int = 2):
        try:
            import onnxruntime as ort
            self.ort, self.name = ort, "onnxruntime %s CPU" % ort.__version__
        except ImportError:
            import openvino as ov
            self.ort, self.ov, self.name = None, ov.Core(), "openvino %s CPU f32" % ov.get_version().split("-")[0]
        self.threads = threads
        self.cache = {}

    def run(self, path: str, feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
        if path not in self.cache:
            if self.ort is not None:
                so = self.ort.SessionOptions()
                so.intra_op_num_threads = self.threads
                so.log_severity_level = 3
                self.cache[path] = self.ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            else:
                self.cache[path] = self.ov.compile_model(self.ov.read_model(path), "CPU",
                                                         {"INFERENCE_PRECISION_HINT": "f32"})
        s = self.cache[path]
        if self.ort is not None:
            return s.run(None, feeds)
        res = s(feeds)
        return [np.array(res[o]) for o in s.outputs]


@torch.no_grad()
def check_parity(model: torch.nn.Module, folder: str, graphs: Dict[str, str], class_embed: np.ndarray,
                 input_size: Optional[int], static: Optional[dict] = None, threads: int = 2) -> Dict:
    """Run every graph file of ``folder`` against ``model`` on the parity images.

    graphs: name -> file name. class_embed (K, P, 768) for the object decoder. Returns
    {'runtime', 'image', 'tolerance', 'runs': [{'graph', 'input', 'outputs': [rows]}], 'ok'}."""
    rt = _OrtOrOv(threads)
    static_hw = (static["height"], static["width"]) if static else None
    fc = with_background(torch.from_numpy(np.ascontiguousarray(class_embed, dtype=np.float32)))
    runs = []
    for label, x, img_shape in parity_images(input_size, static_hw):
        feats = model.encode(torch.from_numpy(x))
        f_np = feats.numpy()
        got = rt.run(os.path.join(folder, graphs["encoder"]), {"image": x})
        runs.append({"graph": "encoder", "input": label, "outputs": [compare("features", got[0], f_np)]})
        boxes = parity_boxes(img_shape)
        m_ref, i_ref = model.decode_prompts(feats, torch.from_numpy(boxes))
        for g in ("prompt_decoder", "prompt_decoder_many"):
            if g not in graphs:
                continue
            b = boxes
            if static and g == "prompt_decoder":
                b = np.concatenate([boxes, np.repeat(boxes[:1], max(0, static["prompts"] - len(boxes)), 0)])
                b = b[:static["prompts"]]
            got = rt.run(os.path.join(folder, graphs[g]), {"features": f_np, "boxes": b})
            n = min(len(b), len(boxes))
            runs.append({"graph": g, "input": "%s, %d prompts" % (label, n),
                         "outputs": [compare("mask_logits", got[0][:n], m_ref.numpy()[:n], mask=True),
                                     compare("iou", got[1][:n], i_ref.numpy()[:n])]})
        c_ref, m_ref, q_ref = model.decode_objects(feats, fc)
        got = rt.run(os.path.join(folder, graphs["object_decoder"]), {"features": f_np, "class_embed": class_embed})
        runs.append({"graph": "object_decoder", "input": "%s, %d classes" % (label, class_embed.shape[0]),
                     "outputs": [compare("class_logits", got[0], c_ref.numpy()),
                                 compare("mask_logits", got[1], m_ref.numpy(), mask=True),
                                 compare("query_embed", got[2], q_ref.numpy())]})
    ok = all(r["ok"] for run in runs for r in run["outputs"])
    return {"runtime": rt.name, "image": "rmpsam_edge/assets/images/astronaut.jpg", "tolerance": dict(TOLERANCE),
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
