"""``Predictor``: one image, many questions (numpy + OpenCV, no torch, Python 3.8).

The same class drives the PyTorch model (``rmpsam_edge.torch_runner.TorchRunner``) and every runtime backend
(ONNX Runtime, OpenVINO, TensorRT): all of them implement ``rmpsam_edge.runtime.base.Runner``.

    predictor = Predictor(runner, spec)
    predictor.set_image("photo.jpg")                  # encoder runs once
    masks, scores = predictor.predict(points=[[320, 240]], boxes=[[50, 60, 300, 400]])  # one decoder pass
    pan_seg, segments = predictor.panoptic()          # object decoder runs once per image ...
    inst = predictor.instances()                      # ... and is reused here

Threads: ``set_image`` + ``predict`` are a stateful pair, so ONE Predictor serves ONE thread at a time. Every
call holds ``predictor.lock`` (an RLock); a thread asking about an image another thread set gets a clear
RuntimeError instead of another camera's masks. Two cameras in one process: one Predictor each (they may share
nothing, or a thread-safe runner). To share one Predictor, hold the lock around the pair::

    with predictor.lock:
        predictor.set_image(frame)
        masks, scores = predictor.predict(points=...)

Shapes: H, W = the original image size; N = number of prompts (points first, then boxes); h, w = stride-4
size of the padded network input.
"""
import functools
import os
import threading
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from .errors import UserError
from .postprocess import (assemble_instances, empty_instances, filter_instances, panoptic_fusion, panoptic_keep,
                          select_instances, upsample_and_score_masks, upsample_masks)
from .preprocess import ImageMeta, as_rgb, load_image, preprocess, prompts_to_model


def _locked(method):
    """Run ``method`` holding ``self.lock`` (see the module docstring: one image per thread at a time)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)
    return wrapper


class Predictor(object):
    """Interactive (point/box), panoptic and instance segmentation of one image at a time.

    runner: a ``rmpsam_edge.runtime.base.Runner`` (already activated); spec: a ``rmpsam_edge.spec.ModelSpec``
    (input size policy, mean/std, vocabulary). ``timings`` holds milliseconds per stage of the latest calls:
    ``preprocess`` and ``encoder`` (``set_image``), ``prompts`` (prompt mapping), ``decoder`` and ``postprocess``
    (``predict`` / ``panoptic`` / ``instances``; ``decoder`` is 0 when the cached object decoder output was used).
    """

    def __init__(self, runner, spec):
        self.runner = runner
        self.spec = spec
        self.timings = {}  # type: Dict[str, float]
        self.image = None  # type: Optional[np.ndarray]
        self.meta = None  # type: Optional[ImageMeta]
        self.features = None  # type: Optional[np.ndarray]
        self._objects = None
        self.lock = threading.RLock()
        self._image_thread = None  # the thread whose set_image() the cached features belong to

    # -- image ------------------------------------------------------------------------------------------------
    @_locked
    def set_image(self, image) -> ImageMeta:
        """image: a file path, or an array (H, W, 3) RGB uint8 (also gray, RGBA, uint16, float 0..1; see
        ``preprocess.as_rgb``). Runs the encoder once and keeps features (1, 256, h, w) and ``meta``."""
        t0 = time.perf_counter()
        if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
            rgb = load_image(os.fsdecode(image) if isinstance(image, bytes) else image)
        else:
            rgb = as_rgb(image)
        t1 = time.perf_counter()
        features, meta, pre_s = self._encode(rgb)
        t2 = time.perf_counter()
        self.image, self.meta, self.features, self._objects = rgb, meta, features, None
        self._image_thread = threading.get_ident()
        self.timings = {"preprocess": round((t1 - t0 + pre_s) * 1000, 3), "encoder": round((t2 - t1 - pre_s) * 1000, 3)}
        return meta

    def _encode(self, rgb: np.ndarray):
        """rgb (H, W, 3) uint8 -> (features (1, C, h, w), meta, seconds spent pre-processing)."""
        t0 = time.perf_counter()
        x, meta = preprocess(rgb, self.spec)
        t1 = time.perf_counter()
        features = self.runner.encode(x)
        expect = (1, meta.feat_shape[0], meta.feat_shape[1])
        if features.ndim != 4 or (features.shape[0], features.shape[2], features.shape[3]) != expect:
            raise RuntimeError("the %s encoder returned features of shape %s for an input of %s; expected "
                               "(1, C, %d, %d)" % (self.runner.describe(), features.shape, x.shape, expect[1],
                                                   expect[2]))
        return features, meta, t1 - t0

    @_locked
    def reset_image(self) -> None:
        self.image = self.meta = self.features = self._objects = None

    def _require_image(self) -> None:
        if self.features is None:
            raise RuntimeError("no image set: call set_image(image) first")
        if self._image_thread != threading.get_ident():
            raise RuntimeError("this Predictor's image was set by another thread (set_image + predict are a "
                               "stateful pair): give each thread its own Predictor, or hold `with "
                               "predictor.lock:` around set_image and the calls that use it")

    # -- prompts ----------------------------------------------------------------------------------------------
    @_locked
    def predict(self, points=None, boxes=None, return_logits: bool = False):
        """Segment what each prompt points at, all prompts in ONE decoder pass (they are independent).

        points (Np, 2) (x, y) and boxes (Nb, 4) (x1, y1, x2, y2) in pixels of the ORIGINAL image (lists or
        arrays; either may be None). Returns ``(masks, scores)``: masks (Np + Nb, H, W) bool, points first then
        boxes, one mask per prompt; scores (Np + Nb,) float32 = the model's IoU estimate. With
        ``return_logits`` also the low-resolution logits (Np + Nb, h, w) float32 (stride 4 of the padded
        input; ``postprocess.upsample_masks(logits, predictor.meta)`` brings them to image size)."""
        self._require_image()
        t0 = time.perf_counter()
        boxes_model = prompts_to_model(points, boxes, self.meta)
        t1 = time.perf_counter()
        logits, iou = self.runner.decode_prompts(self.features, boxes_model)
        t2 = time.perf_counter()
        logits = np.asarray(logits, dtype=np.float32).reshape((len(boxes_model),) + self.meta.feat_shape)
        masks = upsample_masks(logits, self.meta, binary=True)
        scores = np.asarray(iou, dtype=np.float32).reshape(len(boxes_model))
        t3 = time.perf_counter()
        self.timings.update({"prompts": _ms(t0, t1), "decoder": _ms(t1, t2), "postprocess": _ms(t2, t3)})
        if return_logits:
            return masks, scores, logits
        return masks, scores

    # -- vocabulary tasks -------------------------------------------------------------------------------------
    def _decode_objects(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """-> (class logits (100, K+1), mask logits (100, h, w), query embeddings (100, 256), decoder ms);
        cached per image."""
        self._require_image()
        if self.spec.class_embed is None:
            raise UserError("this model has no class vocabulary, which panoptic and instance output need; "
                            "give a vocabulary (class-embedding file, e.g. --vocab) or use point/box prompts")
        if self._objects is None:
            t0 = time.perf_counter()
            cls, masks, query = self.runner.decode_objects(self.features, self.spec.class_embed)
            ms = _ms(t0, time.perf_counter())
            k = self.spec.class_embed.shape[0]
            cls = np.asarray(cls, dtype=np.float32)
            if cls.shape[-1] != k + 1:
                raise RuntimeError("the object decoder returned %d class logits per query for a vocabulary of "
                                   "%d classes (expected %d: background last)" % (cls.shape[-1], k, k + 1))
            n = cls.shape[-2]
            self._objects = (cls.reshape(n, k + 1),
                             np.asarray(masks, dtype=np.float32).reshape((n,) + self.meta.feat_shape),
                             np.asarray(query, dtype=np.float32).reshape(n, -1))
            return self._objects + (ms,)
        return self._objects + (0.0,)

    @_locked
    def object_outputs(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw object-decoder outputs for this image (cached): class logits (100, K+1), low-resolution mask
        logits (100, h, w), query embeddings (100, 256)."""
        return self._decode_objects()[:3]

    @_locked
    def panoptic(self, object_mask_thr: float = 0.8, iou_thr: float = 0.8,
                 filter_low_score: bool = True) -> Tuple[np.ndarray, List[dict]]:
        """Panoptic segmentation (mmdet MaskFormerFusionHead, the official test settings by default).

        Returns (pan_seg (H, W) int32, segments): pan_seg holds ``label`` for stuff, ``label + 1000 * instance``
        for things and K (= number of classes) for void; segments: list of dicts ``id, label, name, score,
        area, isthing`` (see ``postprocess.panoptic_fusion``)."""
        cls, masks, _, dec_ms = self._decode_objects()
        t0 = time.perf_counter()
        keep = panoptic_keep(cls, object_mask_thr)[0]  # only kept queries matter: upsample just those
        full = upsample_masks(masks[keep], self.meta)
        pan_seg, segments = panoptic_fusion(cls[keep], full, self.spec.num_things, object_mask_thr, iou_thr,
                                            filter_low_score)
        names = self.spec.class_names
        for s in segments:
            s["name"] = names[s["label"]] if s["label"] < len(names) else "class_%d" % s["label"]
        self.timings.update({"decoder": dec_ms, "postprocess": _ms(t0, time.perf_counter())})
        return pan_seg, segments

    @_locked
    def instances(self, max_per_image: int = 100, score_thr: float = 0.0) -> Dict[str, np.ndarray]:
        """Instance segmentation of the thing classes (mmdet MaskFormerFusionHead ``instance_postprocess``).

        Returns a dict of arrays for M results sorted by score: ``scores`` (M,) float32 (class score x mask
        score), ``labels`` (M,) int64, ``masks`` (M, H, W) bool, ``boxes`` (M, 4) float32 (x1, y1, x2, y2),
        ``query_index`` (M,) int64, and ``names`` (list of M class names). ``score_thr`` drops lower scores."""
        cls, masks, _, dec_ms = self._decode_objects()
        t0 = time.perf_counter()
        query, labels, cls_scores = select_instances(cls, self.spec.num_things, max_per_image)
        if score_thr > 0:  # final score <= class score: skip upsampling what cannot pass
            ok = cls_scores >= score_thr
            query, labels, cls_scores = query[ok], labels[ok], cls_scores[ok]
        if len(query) == 0:
            res = empty_instances(self.meta.ori_shape)
        else:
            uq, inverse = np.unique(query, return_inverse=True)
            binary, mscores = upsample_and_score_masks(masks[uq], self.meta)
            res = assemble_instances(query, labels, cls_scores, binary, mscores, inverse.reshape(-1))
            res = filter_instances(res, score_thr)
        names = self.spec.class_names
        res["names"] = [names[int(l)] if int(l) < len(names) else "class_%d" % int(l) for l in res["labels"]]
        self.timings.update({"decoder": dec_ms, "postprocess": _ms(t0, time.perf_counter())})
        return res


def _ms(t0: float, t1: float) -> float:
    return round((t1 - t0) * 1000.0, 3)


__all__ = ["Predictor"]
