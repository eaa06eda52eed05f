import numpy as np
import pytest

from rmpsam_edge.training import synthetic
from rmpsam_edge.training.synthetic import CLASS_NAMES, NUM_THINGS, STUFF_ID_BASE, SceneGenerator


@pytest.fixture(scope="module")
def gen():
    return SceneGenerator(96, "train")


def test_same_seed_same_scene_other_seed_other_scene(gen):
    a, b, c = gen.image(5), gen.image(5), gen.image(6)
    assert np.array_equal(a["image"], b["image"])
    assert np.array_equal(a["masks"], b["masks"])
    assert np.array_equal(a["classes"], b["classes"]) and np.array_equal(a["ids"], b["ids"])
    assert not np.array_equal(a["image"], c["image"])
    # a fresh generator (photos re-read) gives the same scene too
    assert np.array_equal(SceneGenerator(96, "train").image(5)["image"], a["image"])


def test_ground_truth_is_consistent(gen):
    saw_stuff = saw_thing = False
    for seed in range(12):
        s = gen.image(seed)
        img, masks, classes, ids = s["image"], s["masks"], s["classes"], s["ids"]
        assert img.shape == (96, 96, 3) and img.dtype == np.uint8
        assert masks.dtype == bool and masks.shape[1:] == (96, 96)
        assert len(masks) == len(classes) == len(ids) >= 1
        assert masks.sum(0).max() <= 1, "segments must be disjoint (occlusion resolved)"
        assert (masks.sum((1, 2)) >= gen.min_area * 96 * 96).all(), "no tiny / empty segments"
        assert ((classes >= 0) & (classes < len(CLASS_NAMES))).all()
        assert len(set(ids.tolist())) == len(ids)
        for c, k in zip(classes, ids):
            if c >= NUM_THINGS:
                saw_stuff = True
                assert k == STUFF_ID_BASE + c
            else:
                saw_thing = True
                assert k < STUFF_ID_BASE
    assert saw_stuff and saw_thing


def test_clip_tracks_keep_ids_and_move():
    gen = SceneGenerator(96, "train")
    clip = gen.clip(3, frames=4)
    assert len(clip) == 4
    assert np.array_equal(gen.clip(3, frames=4)[2]["masks"], clip[2]["masks"])
    ids0 = {int(k): int(c) for k, c in zip(clip[0]["ids"], clip[0]["classes"])}
    for f in clip[1:]:
        for k, c in zip(f["ids"], f["classes"]):
            if int(k) in ids0:
                assert ids0[int(k)] == int(c), "a track keeps its class"
    things0 = [k for k in ids0 if k < STUFF_ID_BASE]
    assert things0
    k = things0[0]
    m0 = clip[0]["masks"][list(clip[0]["ids"]).index(k)]
    moved = [not np.array_equal(m0, f["masks"][list(f["ids"]).index(k)]) for f in clip[1:] if k in f["ids"]]
    assert any(moved)


def test_eval_photos_are_not_training_photos():
    assert not set(synthetic.TRAIN_PHOTOS) & set(synthetic.EVAL_PHOTOS)
    assert len(synthetic.load_photos("eval")) >= 1
    with pytest.raises(ValueError):
        synthetic.load_photos("test")


def test_generator_has_no_torch_dependency():
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(synthetic))
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
             for a in n.names} | {(n.module or "").split(".")[0] for n in ast.walk(tree)
                                  if isinstance(n, ast.ImportFrom)}
    assert "torch" not in names
