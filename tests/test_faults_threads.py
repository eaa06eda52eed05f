"""Concurrency: two Predictors in two threads (two cameras in one process) give exactly the single-thread
results; one Predictor shared by two threads refuses a question about another thread's image, and works
when the pair is held under ``predictor.lock``."""
import threading

import numpy as np
import pytest

from _bundle_fixture import shared_bundle
from rmpsam_edge.runtime import load


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return shared_bundle(tmp_path_factory)


def _frames(seed, n=3):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(n)]


def _answer(predictor, frame):
    predictor.set_image(frame)
    masks, scores = predictor.predict(points=[[30, 40]], boxes=[[10, 10, 90, 70]])
    pan, _ = predictor.panoptic()
    return masks, scores, pan


def _run(predictor, frames, out, errors):
    try:
        for _ in range(2):
            out.extend(_answer(predictor, f) for f in frames)
    except BaseException as exc:  # noqa: B902
        errors.append(exc)


def test_two_predictors_in_two_threads_match_single_thread(bundle):
    cams = [_frames(1), _frames(2)]
    single = load(bundle, backend="onnxruntime", threads=1)
    expected = [[_answer(single, f) for f in frames] * 2 for frames in cams]
    preds = [load(bundle, backend="onnxruntime", threads=1) for _ in cams]
    outs, errors = [[], []], []
    threads = [threading.Thread(target=_run, args=(p, f, o, errors)) for p, f, o in zip(preds, cams, outs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for got, exp in zip(outs, expected):
        assert len(got) == len(exp) == 6
        for (m, s, p), (me, se, pe) in zip(got, exp):
            assert np.array_equal(m, me) and np.allclose(s, se, atol=1e-5) and np.array_equal(p, pe)


def test_shared_predictor_refuses_another_threads_image(bundle):
    pred = load(bundle, backend="onnxruntime", threads=1)
    pred.set_image(_frames(3, 1)[0])
    errors = []

    def other():
        try:
            pred.predict(points=[[5, 5]])
        except RuntimeError as exc:
            errors.append(str(exc))

    t = threading.Thread(target=other)
    t.start()
    t.join(60)
    assert errors and "another thread" in errors[0] and "predictor.lock" in errors[0]


def test_shared_predictor_under_its_lock(bundle):
    pred = load(bundle, backend="onnxruntime", threads=1)
    frames = _frames(4, 2)
    ref = load(bundle, backend="onnxruntime", threads=1)
    expected = [ref.set_image(f) and ref.predict(points=[[30, 40]])[0] for f in frames]
    got, errors = {}, []

    def worker(i):
        try:
            for _ in range(3):
                with pred.lock:
                    pred.set_image(frames[i])
                    got.setdefault(i, []).append(pred.predict(points=[[30, 40]])[0])
        except BaseException as exc:  # noqa: B902
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for i in range(2):
        assert all(np.array_equal(m, expected[i]) for m in got[i])
