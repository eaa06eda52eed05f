"""Video instance segmentation and tracking, MinVIS-style as the official RMP-SAM video eval (numpy, no torch).

How the official code tracks (``Mask2formerVideoMinVIS``, YouTube-VIS eval):
* the video is cut into non-overlapping tubes of L frames (``split_tubes``: 5 if the video has more than
  15 frames, else 3, rebalanced by the official ``video_split``);
* per tube the object decoder runs ONCE on the frames' stride-4 features concatenated along the height,
  (1, 256, L*h, w): each of the 100 queries is shared by the L frames; its mask is split back per frame;
* consecutive tubes are linked by Hungarian matching on cost = 1 - cosine of the object-adapter query
  embeddings; the current tube's queries are permuted to align with the previous (already aligned) tube,
  a chain from tube to tube (no memory bank);
* video-level class logits = the mean of the aligned class logits over the tubes.

Track identity here: **a track id is a query slot after alignment** (slot ``i`` of the first tube/frame has
id ``i + 1``; later tubes/frames are permuted into those slots), so an object keeps its id as long as the
matching keeps it in its slot. Per slot the track gets one label: the best THING class of its (video-level,
or smoothed in live mode) class probabilities; its per-frame score is class score x mask score (mean sigmoid
inside the mask, as mmdet). A track appears in a frame when its mask there is non-empty and its score reaches
``score_thr``; at most ``max_tracks`` per frame, highest scores first.

Live mode (``update``): every frame is its own tube (tube length 1), matched to the previous frame; the class
logits of a slot are smoothed with an exponential moving average (``cls_momentum``; 0 = per frame), the causal
analogue of the official video-level mean.

The Hungarian solver is scipy's ``linear_sum_assignment`` when scipy is installed, else a small pure-numpy
implementation (``hungarian``) that gives the same assignment.
"""
import time
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .errors import UserError
from .postprocess import mask_to_box, softmax, upsample_and_score_masks
from .preprocess import ImageMeta

try:  # optional: the runtime may run without scipy
    from scipy.optimize import linear_sum_assignment as _scipy_lsa
except ImportError:  # pragma: no cover - depends on the environment
    _scipy_lsa = None

SMALL_VIDEO_FRAMES = 15  # official small_clip_thr: longer videos use 5-frame tubes
TUBE_LONG, TUBE_SHORT = 5, 3


# ---------------------------------------------------------------------------------------------------------------
# tubes
def video_split(total: int, tube_size: int) -> List[int]:
    """The official ``video_split`` (overlap 0): end indices of the tubes. Tubes have ``tube_size`` frames;
    the rounding excess is taken from the last tubes, one frame each (so lengths differ by at most 1) when
    there are enough tubes, else all from the last tube (e.g. 4 frames in tubes of 3 -> 3 + 1)."""
    total, tube_size = int(total), int(tube_size)
    if tube_size < 1:
        raise ValueError("tube length must be >= 1, got %d" % tube_size)
    if total < 1:
        return []
    splits = -(-total // tube_size)
    ends = [(i + 1) * tube_size for i in range(splits)]
    diff = ends[-1] - total
    if diff < splits:
        for i in range(diff):
            ends[splits - 1 - i] -= diff - i
    else:
        ends[splits - 1] -= diff
    return ends


def split_tubes(num_frames: int, tube_length: Optional[int] = None) -> List[Tuple[int, int]]:
    """[(start, end), ...] frame ranges of the tubes of a ``num_frames`` video. tube_length None: the official
    choice, 5 frames if the video has more than 15 frames, else 3."""
    if tube_length is None:
        tube_length = TUBE_LONG if num_frames > SMALL_VIDEO_FRAMES else TUBE_SHORT
    ends = video_split(num_frames, tube_length)
    return list(zip([0] + ends[:-1], ends))


# ---------------------------------------------------------------------------------------------------------------
# matching
def hungarian(cost) -> Tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment (pure numpy, O(n^2 m) shortest augmenting paths with potentials).

    cost (n, m) -> (row_ind, col_ind) like ``scipy.optimize.linear_sum_assignment``: min(n, m) pairs, rows
    in increasing order."""
    c = np.asarray(cost, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError("cost must be a 2-D matrix, got shape %s" % (c.shape,))
    if not np.all(np.isfinite(c)):
        raise ValueError("cost matrix contains NaN or infinite values")
    transposed = c.shape[0] > c.shape[1]
    if transposed:
        c = c.T
    n, m = c.shape
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    p = np.zeros(m + 1, np.int64)  # p[j]: row (1-based) assigned to column j (1-based); 0 = free
    way = np.zeros(m + 1, np.int64)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            free = ~used[1:]
            cur = c[i0 - 1] - u[i0] - v[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            cand = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            cols = np.flatnonzero(used)
            u[p[cols]] += delta
            v[cols] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    cols = np.flatnonzero(p[1:] > 0)
    rows = p[1:][cols] - 1
    if transposed:
        rows, cols = cols, rows
    order = np.argsort(rows, kind="stable")
    return rows[order].astype(np.int64), cols[order].astype(np.int64)


def linear_assignment(cost, use_scipy: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """scipy's ``linear_sum_assignment`` when available (and ``use_scipy``), else ``hungarian``."""
    if use_scipy and _scipy_lsa is not None:
        r, c = _scipy_lsa(np.asarray(cost, dtype=np.float64))
        return np.asarray(r, np.int64), np.asarray(c, np.int64)
    return hungarian(cost)


def match_queries(prev_embed, cur_embed, use_scipy: bool = True) -> np.ndarray:
    """Align the current queries to the previous (aligned) ones, as the official ``match_from_embeds``.

    prev_embed (Q, C), cur_embed (Q, C) -> perm (Q,) int64 such that ``cur[perm][i]`` continues ``prev[i]``;
    cost = 1 - cosine similarity, minimised over one-to-one assignments."""
    prev = np.asarray(prev_embed, dtype=np.float64)
    cur = np.asarray(cur_embed, dtype=np.float64)
    if prev.shape != cur.shape or prev.ndim != 2:
        raise ValueError("query embeddings must both be (Q, C), got %s and %s" % (prev.shape, cur.shape))
    prev = prev / np.maximum(np.linalg.norm(prev, axis=1, keepdims=True), 1e-12)
    cur = cur / np.maximum(np.linalg.norm(cur, axis=1, keepdims=True), 1e-12)
    # (target, current), as the official C.transpose(0, 1). einsum, not a BLAS matmul: a small BLAS call right
    # after the model's threads ran can wait 10-50 ms for OpenBLAS's workers on a busy CPU
    cost = 1.0 - np.einsum("ic,jc->ij", prev, cur)
    rows, cols = linear_assignment(cost, use_scipy=use_scipy)
    perm = np.empty(prev.shape[0], np.int64)
    perm[rows] = cols
    return perm


# ---------------------------------------------------------------------------------------------------------------
class Track(object):
    """One tracked object in one frame: id (stable across frames), label / name (class), score, mask
    (H, W) bool at the frame's size, box (4,) float32 (x1, y1, x2, y2) tight around the mask.
    Fields read as attributes (``t.score``) or as keys (``t["score"]``)."""

    __slots__ = ("id", "label", "name", "score", "mask", "box")

    def __init__(self, id, label, name, score, mask, box):
        self.id, self.label, self.name, self.score, self.mask, self.box = id, label, name, score, mask, box

    def __getitem__(self, key):
        """``track["score"]`` works like ``track.score`` (tracks can be handled as dicts)."""
        if key not in self.__slots__:
            raise KeyError(key)
        return getattr(self, key)

    def keys(self):
        return list(self.__slots__)

    def to_dict(self) -> dict:
        """JSON-friendly fields (no mask)."""
        return {"id": self.id, "label": self.label, "name": self.name, "score": self.score,
                "box": [float(v) for v in self.box], "area": int(self.mask.sum())}

    def __repr__(self):
        return "Track(id=%d, name=%r, score=%.3f, box=%s)" % (self.id, self.name, self.score,
                                                             [round(float(v), 1) for v in self.box])


class VideoTracker(object):
    """Video instance segmentation with stable track ids (see the module docstring for the method).

    predictor: a ``rmpsam_edge.predictor.Predictor`` (it pre-processes and encodes each frame); its spec needs a
    vocabulary with thing classes, and for tubes of L > 1 frames its runner's ``object_decoder`` must accept
    features of any height (a tube is L frames tall). tube_length: frames per tube: 1 (default:
    every frame its own tube; the only setting ``update`` supports), an int L, or None for the official
    choice (5 if the video has more than 15 frames, else 3) in ``track_video``. score_thr: minimum track score
    in a frame; max_tracks: at most this many tracks per frame; cls_momentum: live-mode smoothing of the class
    logits per slot (0 = none)."""

    def __init__(self, predictor, tube_length: Optional[int] = 1, score_thr: float = 0.5,
                 max_tracks: int = 100, cls_momentum: float = 0.5):
        spec = predictor.spec
        if spec.class_embed is None:
            raise UserError("tracking needs a class vocabulary (class-embedding file, e.g. --vocab): the object "
                            "decoder that finds the objects to track classifies them with it")
        if spec.num_things < 1:
            raise UserError("the vocabulary has no thing classes (num_things = 0); tracking follows things")
        if tube_length is not None and int(tube_length) < 1:
            raise ValueError("tube_length must be None or >= 1, got %r" % (tube_length,))
        if not 0.0 <= cls_momentum < 1.0:
            raise ValueError("cls_momentum must be in [0, 1), got %r" % (cls_momentum,))
        self.predictor = predictor
        self.spec = spec
        self.tube_length = None if tube_length is None else int(tube_length)
        self.score_thr = float(score_thr)
        self.max_tracks = int(max_tracks)
        self.cls_momentum = float(cls_momentum)
        self.timings = {}
        self.meta = None  # type: Optional[ImageMeta]
        self.reset()

    def reset(self) -> None:
        """Forget the stream (the next ``update`` starts new track ids)."""
        self._prev_embed = None
        self._cls_state = None
        self.frame_index = 0

    # -- shared steps -----------------------------------------------------------------------------------------
    def _encode(self, frame) -> Tuple[np.ndarray, ImageMeta]:
        """frame (H, W, 3) RGB -> features (1, C, h, w) and its meta, through the predictor."""
        meta = self.predictor.set_image(frame)
        return self.predictor.features, meta

    def _decode(self, features: np.ndarray, num_frames: int, meta: ImageMeta):
        """features (1, C, L*h, w) -> cls (Q, K+1), masks (L, Q, h, w), query (Q, D)."""
        try:
            cls, masks, query = self.predictor.runner.decode_objects(features, self.spec.class_embed)
        except Exception as exc:
            if num_frames == 1:
                raise
            raise UserError("the %s object decoder refused a tube of %d frames (features %s, frames stacked "
                            "along the height): it needs a dynamic height up to %d; use tube_length=1 with "
                            "static bundles or engines (%s)" % (self.predictor.runner.describe(), num_frames,
                                                                tuple(features.shape), features.shape[2],
                                                                str(exc).strip().splitlines()[0][:200]))
        h, w = meta.feat_shape
        cls = np.asarray(cls, np.float32)
        q = cls.shape[-2]
        cls = cls.reshape(q, -1)
        masks = np.asarray(masks, np.float32).reshape(q, num_frames, h, w).transpose(1, 0, 2, 3)
        return cls, masks, np.asarray(query, np.float32).reshape(q, -1)

    def _align(self, cls, masks, query):
        """Permute this tube's queries into the previous tube's slots (the chain of the official code)."""
        if self._prev_embed is not None:
            if self._prev_embed.shape != query.shape:
                raise RuntimeError("query embeddings changed shape from %s to %s" % (self._prev_embed.shape,
                                                                                    query.shape))
            perm = match_queries(self._prev_embed, query)
            cls, masks, query = cls[perm], masks[:, perm], query[perm]
        self._prev_embed = query
        return cls, masks, query

    def _tracks(self, cls_logits: np.ndarray, mask_logits: np.ndarray, meta: ImageMeta) -> List[Track]:
        """Slots -> tracks of one frame. cls_logits (Q, K+1), mask_logits (Q, h, w) low resolution."""
        probs = softmax(cls_logits, axis=-1)[:, :self.spec.num_things]
        labels = probs.argmax(axis=1)
        cls_scores = probs.max(axis=1)
        cand = np.flatnonzero(cls_scores >= self.score_thr)  # final score <= class score
        if cand.size == 0:
            return []
        binary, mscores = upsample_and_score_masks(mask_logits[cand], meta)
        scores = cls_scores[cand] * mscores
        ok = (scores >= self.score_thr) & binary.reshape(len(cand), -1).any(axis=1)
        order = [i for i in np.argsort(-scores, kind="stable") if ok[i]][:self.max_tracks]
        names = self.spec.class_names
        out = []
        for i in order:
            slot, lab = int(cand[i]), int(labels[cand[i]])
            out.append(Track(slot + 1, lab, names[lab] if lab < len(names) else "class_%d" % lab,
                             float(scores[i]), binary[i], mask_to_box(binary[i])))
        return out

    # -- live -------------------------------------------------------------------------------------------------
    def update(self, frame_rgb) -> List[Track]:
        """Live mode: one frame (H, W, 3) RGB -> the tracks in it (sorted by score). One encoder and one
        object-decoder pass; the queries are matched to the previous frame's."""
        if self.tube_length != 1:
            raise ValueError("update() tracks frame by frame (tube_length=1); use track_video() for tubes")
        features, meta = self._encode(frame_rgb)
        t1 = time.perf_counter()
        cls, masks, query = self._decode(features, 1, meta)
        t2 = time.perf_counter()
        cls, masks, query = self._align(cls, masks, query)
        t3 = time.perf_counter()
        if self._cls_state is None or self.cls_momentum == 0.0:
            self._cls_state = cls
        else:
            m = np.float32(self.cls_momentum)
            self._cls_state = m * self._cls_state + (np.float32(1.0) - m) * cls
        tracks = self._tracks(self._cls_state, masks[0], meta)
        t4 = time.perf_counter()
        self.meta = meta
        self.frame_index += 1
        self.timings = dict(self.predictor.timings)  # preprocess, encoder
        self.timings.update({"decoder": _ms(t1, t2), "matching": _ms(t2, t3), "postprocess": _ms(t3, t4)})
        return tracks

    # -- offline ----------------------------------------------------------------------------------------------
    def track_video(self, frames: Sequence) -> List[List[Track]]:
        """Offline mode, as the official video eval: frames (a sequence of (H, W, 3) RGB arrays of one size)
        -> one list of tracks per frame. Tubes from ``split_tubes(len(frames), tube_length)``; the object
        decoder runs once per tube on the tube's features concatenated along the height; video-level class
        logits = mean over tubes. Keeps the low-resolution mask logits of every frame (100 x h x w float32
        each) until the end. Independent of (and does not disturb) the live ``update`` state."""
        frames = list(frames)
        if not frames:
            return []
        shape = np.shape(frames[0])[:2]
        for i, f in enumerate(frames):
            if np.shape(f)[:2] != shape:
                raise UserError("frame %d has size %s but frame 0 has %s: all frames of a video must have one "
                                "size" % (i, np.shape(f)[:2], shape))
        saved = (self._prev_embed, self._cls_state)
        self._prev_embed = None
        t0 = time.perf_counter()
        cls_sum, frame_masks, meta = None, [], None
        tubes = split_tubes(len(frames), self.tube_length)
        try:
            for start, end in tubes:
                feats = []
                for f in frames[start:end]:
                    feat, meta = self._encode(f)
                    feats.append(feat)
                tube = np.concatenate(feats, axis=2)  # (1, C, L*h, w): frames stacked along the height
                cls, masks, query = self._align(*self._decode(tube, end - start, meta))
                cls_sum = cls if cls_sum is None else cls_sum + cls
                frame_masks.extend(masks)
        finally:
            self._prev_embed, self._cls_state = saved
        t1 = time.perf_counter()
        video_cls = cls_sum / np.float32(len(tubes))
        out = [self._tracks(video_cls, m, meta) for m in frame_masks]
        self.meta = meta
        self.timings = {"encoder+decoder": _ms(t0, t1), "postprocess": _ms(t1, time.perf_counter()),
                        "tubes": len(tubes)}
        return out


def _ms(t0: float, t1: float) -> float:
    return round((t1 - t0) * 1000.0, 3)


__all__ = ["video_split", "split_tubes", "hungarian", "linear_assignment", "match_queries", "Track",
           "VideoTracker"]
