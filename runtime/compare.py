"""One comparator (polygraphy-shaped): run runners on the SAME inputs, compare named outputs against a reference
runner, one report per runner. Each graph gets the reference's inputs (the decoders get the reference encoder's
features), so a disagreement names the graph that causes it.

    cases = make_cases(bundle, image_paths)
    ref = run_cases(reference_runner, cases)
    out = run_cases(runner, cases, features=[r["features"] for r in ref])
    report = compare(ref, out)      # {"feature_cosine": .., "prompt_mask_iou": .., "panoptic_class_agreement": ..,
                                    #  "ok": bool, "failures": [...], "tolerances": {...}}
No torch, Python 3.8, numpy only.
"""
from typing import Dict, List, Optional

import numpy as np

# worst image (cosine, class agreement) / mean over prompts (IoU); FP16 engines sit well inside these
TOLERANCES = {"feature_cosine": 0.999, "prompt_mask_iou": 0.95, "panoptic_class_agreement": 0.95}
GRID = 4  # prompts per image: a GRID x GRID grid of small boxes (clicks) over the image


def make_cases(bundle, images: List[str]) -> List[dict]:
    """Pre-processed inputs for each image: image tensor, normalised prompt boxes, the vocabulary embeddings."""
    from rmpsam_edge.preprocess import load_image, normalize_boxes, points_to_boxes, preprocess
    spec = bundle.spec()
    cases = []
    for path in images:
        x, meta = preprocess(load_image(path), spec)
        h, w = meta.img_shape[:2]
        g = (np.arange(GRID) + 0.5) / GRID
        points = np.stack(np.meshgrid(g * w, g * h), -1).reshape(-1, 2)
        cases.append({"name": path, "image": x, "boxes": normalize_boxes(points_to_boxes(points), meta.img_shape),
                      "class_embed": spec.class_embed})
    return cases


def run_cases(runner, cases: List[dict], features: Optional[List[np.ndarray]] = None) -> List[Dict[str, np.ndarray]]:
    """{output name: array} per case. ``features``: feed the decoders these (the reference's) instead of the
    runner's own encoder output."""
    outs = []
    for i, case in enumerate(cases):
        own = runner.encode(case["image"])
        feats = own if features is None else features[i]
        masks, iou = runner.decode_prompts(feats, case["boxes"])
        out = {"features": own, "prompt_mask_logits": masks, "prompt_iou": iou}
        if case["class_embed"] is not None:
            cls, obj_masks, _ = runner.decode_objects(feats, case["class_embed"])
            out["class_logits"], out["object_mask_logits"] = cls, obj_masks
        outs.append(out)
    return outs


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def _ious(a: np.ndarray, b: np.ndarray) -> List[float]:
    out = []
    for x, y in zip(a > 0, b > 0):
        union = (x | y).sum()
        out.append(1.0 if union == 0 else float((x & y).sum()) / float(union))
    return out


def _semantic(class_logits: np.ndarray, mask_logits: np.ndarray) -> np.ndarray:
    """Per-pixel class (MaskFormer semantic inference: sum over queries of p(class) * sigmoid(mask))."""
    logits = class_logits.reshape(-1, class_logits.shape[-1]).astype(np.float64)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p = (p / p.sum(-1, keepdims=True))[:, :-1]  # drop the void class
    m = 1.0 / (1.0 + np.exp(-mask_logits.reshape(p.shape[0], -1).astype(np.float64)))
    return np.argmax(p.T @ m, axis=0)


def compare(reference: List[dict], outputs: List[dict], tolerances: Optional[Dict[str, float]] = None) -> dict:
    tol = dict(TOLERANCES, **(tolerances or {}))
    cos = [_cosine(r["features"], o["features"]) for r, o in zip(reference, outputs)]
    ious = [v for r, o in zip(reference, outputs) for v in _ious(r["prompt_mask_logits"], o["prompt_mask_logits"])]
    agree = [float((_semantic(r["class_logits"], r["object_mask_logits"]) ==
                    _semantic(o["class_logits"], o["object_mask_logits"])).mean())
             for r, o in zip(reference, outputs) if "class_logits" in r]
    report = {"feature_cosine": min(cos), "prompt_mask_iou": float(np.mean(ious)),
              "prompt_mask_iou_worst": min(ious), "panoptic_class_agreement": min(agree) if agree else None,
              "images": len(reference), "prompts": len(ious), "tolerances": tol}
    report["failures"] = ["%s %.4f < %.4f" % (k, report[k], tol[k]) for k in TOLERANCES
                          if report[k] is not None and report[k] < tol[k]]
    report["ok"] = not report["failures"]
    return report
