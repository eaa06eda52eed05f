"""Tube splitting, Hungarian matching (scipy and the numpy fallback) and track identity (rmpsam_edge.tracking)."""
import numpy as np
import pytest

from rmpsam_edge import tracking
from rmpsam_edge.errors import UserError
from rmpsam_edge.predictor import Predictor
from rmpsam_edge.runtime.base import Runner
from rmpsam_edge.spec import ModelSpec
from rmpsam_edge.tracking import VideoTracker, hungarian, linear_assignment, match_queries, split_tubes, video_split

COLORS = np.array([[230, 40, 40], [40, 200, 60], [50, 80, 240], [240, 220, 40]], np.float32)  # RGB
BG = np.float32([128, 128, 128])
MEAN = np.float32([123.675, 116.28, 103.53])
STD = np.float32([58.395, 57.12, 57.375])


class ShuffledQueriesRunner(Runner):
    """A fake model whose queries come out in a NEW random order on every object-decoder call.

    Canonical query j < 4 is the object of colour j (class j % 2; mask = pixels of that colour), queries >= 4
    are background. Each call draws a permutation: output slot i is canonical query perm[i], with the
    canonical embedding E[perm[i]] (+ small noise). Tracks must follow the colours, not the slots. Masks are
    computed per pixel of whatever feature map comes in, so tubes (frames stacked along the height) work."""

    name = "fake-shuffled"

    def __init__(self, num_queries=12, seed=0):
        self.rng = np.random.default_rng(seed)
        self.q = num_queries
        self.embed = self.rng.normal(size=(num_queries, 256)).astype(np.float32)
        self.calls = {"encoder": 0, "object_decoder": 0}
        self.perms = []
        self.feature_heights = []

    def infer(self, graph, feeds):
        self.calls[graph] += 1
        if graph == "encoder":
            x = feeds["image"]
            _, _, H, W = x.shape
            return {"features": x.reshape(1, 3, H // 4, 4, W // 4, 4).mean(axis=(3, 5)).astype(np.float32)}
        assert graph == "object_decoder"
        f = feeds["features"][0]  # (3, h_total, w)
        self.feature_heights.append(f.shape[1])
        k = feeds["class_embed"].shape[0]
        cols = (COLORS - MEAN) / STD  # colours in the normalised space
        dist = np.linalg.norm(f[None] - cols[:, :, None, None], axis=1)  # (4, h, w)
        canon_masks = np.full((self.q,) + f.shape[1:], -6.0, np.float32)
        canon_masks[:4] = np.where(dist < 0.3, 6.0, -6.0)
        canon_cls = np.zeros((self.q, k + 1), np.float32)
        canon_cls[np.arange(4), np.arange(4) % 2] = 9.0
        canon_cls[4:, k] = 9.0
        perm = self.rng.permutation(self.q)
        self.perms.append(perm)
        noise = 0.05 * self.rng.normal(size=(self.q, 256)).astype(np.float32)
        return {"class_logits": canon_cls[perm][None], "mask_logits": canon_masks[perm][None],
                "query_embed": (self.embed[perm] + noise)[None]}


def make_spec(input_size=128):
    return ModelSpec("r18", input_size=input_size, class_embed=np.ones((3, 1, 768), np.float32),
                     class_names=["ball", "box", "floor"], num_things=2)


def make_frames(n, h=96, w=128):
    """Four coloured squares moving on a grey background, never overlapping."""
    frames = []
    for t in range(n):
        img = np.empty((h, w, 3), np.uint8)
        img[:] = BG.astype(np.uint8)
        starts = [(8 + t, 8), (8, 60 + t), (56, 10 + 2 * t), (50 - t, 90)]
        for c, (y, x) in enumerate(starts):
            img[y:y + 20, x:x + 20] = COLORS[c].astype(np.uint8)
        frames.append(img)
    return frames


def colour_of(frame, mask):
    mean = frame[mask].astype(np.float32).mean(axis=0)
    return int(np.argmin(np.linalg.norm(COLORS - mean, axis=1)))


def check_identity(frames, per_frame):
    """Every frame shows the 4 objects; each track id always covers the same colour, ids are distinct."""
    id_to_colour = {}
    for frame, tracks in zip(frames, per_frame):
        assert len(tracks) == 4
        assert len({t.id for t in tracks}) == 4
        for t in tracks:
            c = colour_of(frame, t.mask)
            assert id_to_colour.setdefault(t.id, c) == c, "track %d jumped to another object" % t.id
            assert t.label == c % 2 and t.name == ["ball", "box"][c % 2] and t.score > 0.9
            ys, xs = np.nonzero(t.mask)
            np.testing.assert_array_equal(t.box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    assert sorted(id_to_colour.values()) == [0, 1, 2, 3]
    return id_to_colour


# ---------------------------------------------------------------------------------------------------------------
def test_video_split_official_values():
    assert video_split(10, 3) == [3, 6, 8, 10]  # rebalanced: 3, 3, 2, 2
    assert video_split(22, 5) == [5, 10, 14, 18, 22]
    assert video_split(20, 5) == [5, 10, 15, 20]
    assert video_split(4, 3) == [3, 4]  # the official code's other branch: the last tube takes the excess
    assert video_split(1, 3) == [1] and video_split(0, 3) == []
    with pytest.raises(ValueError):
        video_split(5, 0)


def test_split_tubes_default_lengths():
    assert split_tubes(10) == [(0, 3), (3, 6), (6, 8), (8, 10)]  # <= 15 frames: tubes of 3
    assert split_tubes(15) == [(0, 3), (3, 6), (6, 9), (9, 12), (12, 15)]
    assert split_tubes(22) == [(0, 5), (5, 10), (10, 14), (14, 18), (18, 22)]  # > 15 frames: tubes of 5
    assert split_tubes(5, 1) == [(i, i + 1) for i in range(5)]
    for n in range(1, 40):
        tubes = split_tubes(n)
        assert tubes[0][0] == 0 and tubes[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(tubes, tubes[1:]))


@pytest.mark.parametrize("shape", [(1, 1), (4, 4), (5, 9), (9, 5), (100, 100)])
def test_hungarian_fallback_equals_scipy(shape):
    scipy_opt = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(sum(shape))
    for _ in range(3):
        cost = rng.random(shape)
        r1, c1 = scipy_opt.linear_sum_assignment(cost)
        r2, c2 = hungarian(cost)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(c1, c2)
    ties = rng.integers(0, 3, size=shape).astype(float)  # several optima: same minimum cost
    r1, c1 = scipy_opt.linear_sum_assignment(ties)
    r2, c2 = hungarian(ties)
    assert ties[r1, c1].sum() == ties[r2, c2].sum() and len(set(c2.tolist())) == len(c2)


def test_hungarian_hand_example_and_errors():
    cost = np.array([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]])
    rows, cols = hungarian(cost)
    assert rows.tolist() == [0, 1, 2] and cols.tolist() == [1, 0, 2]  # 1 + 2 + 2 = 5
    assert hungarian(np.zeros((0, 3)))[0].size == 0
    with pytest.raises(ValueError):
        hungarian(np.array([[np.nan]]))


def test_match_queries_recovers_permutation_with_and_without_scipy():
    rng = np.random.default_rng(3)
    prev = rng.normal(size=(100, 256))
    perm_true = rng.permutation(100)
    cur = prev[perm_true] * rng.uniform(0.5, 2.0, size=(100, 1)) + 0.05 * rng.normal(size=(100, 256))
    for use_scipy in (True, False):
        perm = match_queries(prev, cur, use_scipy=use_scipy)
        np.testing.assert_allclose(cur[perm] / np.linalg.norm(cur[perm], axis=1, keepdims=True),
                                   prev / np.linalg.norm(prev, axis=1, keepdims=True), atol=0.02)
        assert np.array_equal(perm_true[perm], np.arange(100))
    assert linear_assignment(np.eye(3), use_scipy=False)[1].tolist() != [0, 1, 2]


# ---------------------------------------------------------------------------------------------------------------
def test_live_tracking_ids_follow_objects():
    frames = make_frames(8)
    runner = ShuffledQueriesRunner()
    predictor = Predictor(runner, make_spec())
    tracker = VideoTracker(predictor, score_thr=0.5)
    per_frame = [tracker.update(f) for f in frames]
    assert runner.calls == {"encoder": 8, "object_decoder": 8}  # the predictor encodes, once per frame
    assert predictor.meta == tracker.meta and predictor.image is not None
    assert len({tuple(p) for p in runner.perms}) == 8  # the slots really were shuffled every frame
    ids = check_identity(frames, per_frame)
    assert all(1 <= i <= 12 for i in ids)
    assert per_frame[0][0].mask.shape == (96, 128) and set(tracker.timings) >= {"preprocess", "encoder", "decoder",
                                                                                "matching"}
    # reset(): a new stream starts from the decoder's own order again
    tracker.reset()
    assert tracker.frame_index == 0 and len(tracker.update(frames[0])) == 4


def test_live_tracking_with_numpy_hungarian(monkeypatch):
    monkeypatch.setattr(tracking, "_scipy_lsa", None)
    frames = make_frames(5)
    tracker = VideoTracker(Predictor(ShuffledQueriesRunner(seed=5), make_spec()))
    check_identity(frames, [tracker.update(f) for f in frames])


@pytest.mark.parametrize("tube_length, tubes", [(None, [3, 3, 2, 2]), (1, [1] * 10), (4, [4, 3, 3])])
def test_offline_tubes_ids_follow_objects(tube_length, tubes):
    frames = make_frames(10)
    runner = ShuffledQueriesRunner(seed=1)
    tracker = VideoTracker(Predictor(runner, make_spec()), tube_length=tube_length)
    per_frame = tracker.track_video(frames)
    assert len(per_frame) == 10
    assert runner.calls == {"encoder": 10, "object_decoder": len(tubes)}
    h = tracker.meta.feat_shape[0]
    assert runner.feature_heights == [n * h for n in tubes]  # frames concatenated along the height
    check_identity(frames, per_frame)


def test_offline_does_not_disturb_live_state_and_checks_sizes():
    frames = make_frames(4)
    tracker = VideoTracker(Predictor(ShuffledQueriesRunner(seed=2), make_spec()), tube_length=1)
    first = tracker.update(frames[0])
    tracker.track_video(frames)
    second = tracker.update(frames[1])
    assert {t.id for t in first} == {t.id for t in second}
    with pytest.raises(UserError, match="one size"):
        tracker.track_video([frames[0], frames[1][:50]])
    assert tracker.track_video([]) == []


def test_tracker_options_and_errors():
    frames = make_frames(3)
    tracker = VideoTracker(Predictor(ShuffledQueriesRunner(), make_spec()), max_tracks=2)
    assert len(tracker.update(frames[0])) == 2
    high = VideoTracker(Predictor(ShuffledQueriesRunner(), make_spec()), score_thr=0.9999)
    assert high.update(frames[0]) == []
    with pytest.raises(ValueError, match="track_video"):
        VideoTracker(Predictor(ShuffledQueriesRunner(), make_spec()), tube_length=None).update(frames[0])
    with pytest.raises(UserError, match="vocabulary"):
        VideoTracker(Predictor(ShuffledQueriesRunner(), ModelSpec("r18")))
    with pytest.raises(UserError, match="thing"):
        VideoTracker(Predictor(ShuffledQueriesRunner(),
                                ModelSpec("r18", class_embed=np.ones((2, 1, 768)), num_things=0)))
    t = tracker.update(frames[1])[0]
    d = t.to_dict()
    assert set(d) == {"id", "label", "name", "score", "box", "area"} and d["area"] == int(t.mask.sum())


def test_track_reads_as_dict():
    t = tracking.Track(3, 1, "box", 0.75, np.ones((2, 2), bool), np.float32([0, 0, 2, 2]))
    assert t["score"] == t.score == 0.75 and t["id"] == 3 and "mask" in t.keys()
    with pytest.raises(KeyError):
        t["nope"]


def test_tube_refused_by_static_decoder_gives_one_line_error():
    class StaticRunner(ShuffledQueriesRunner):
        def infer(self, graph, feeds):
            if graph == "object_decoder" and feeds["features"].shape[2] != 24:
                raise RuntimeError("Got invalid dimensions for input: features\nindex: 2 Got: 72 Expected: 24")
            return ShuffledQueriesRunner.infer(self, graph, feeds)

    frames = make_frames(3)
    with pytest.raises(UserError, match="refused a tube of 3 frames.*tube_length=1"):
        VideoTracker(Predictor(StaticRunner(), make_spec()), tube_length=3).track_video(frames)
    assert len(VideoTracker(Predictor(StaticRunner(), make_spec()), tube_length=1).track_video(frames)) == 3
