"""The demo pipeline: a slow sink never stalls the model, live sources drop frames, files never do, a stream that
drops keeps what was written, Ctrl-C ends cleanly. Events and counters only, no timing asserts."""
import _thread
import json
import threading

import cv2
import numpy as np
import pytest

from rmpsam_edge.errors import UserError
from rmpsam_edge.demo.pipeline import run_pipeline
from rmpsam_edge.demo.writer import JsonlOut, VideoOut


class ListSource(object):
    """n numbered frames; ``live`` as given; optionally ends early like a dropped stream."""

    def __init__(self, n, live=False, drop_after=None):
        self.n, self.live, self.i = n, live, 0
        self.drop_after = drop_after
        self.ended_early = None

    def read(self):
        if self.drop_after is not None and self.i >= self.drop_after:
            self.ended_early = "stream stopped after %d frames" % self.i
            return None
        if self.n is not None and self.i >= self.n:
            return None
        self.i += 1
        return np.full((32, 48, 3), self.i % 256, np.uint8)


def test_blocked_writer_does_not_stall_inference_on_files():
    ahead = threading.Event()
    seen = []

    def process(frame, stats):
        seen.append(int(frame[0, 0, 0]))
        if len(seen) == 4:
            ahead.set()
        return int(frame[0, 0, 0])

    waited = []

    def sink(item, stats):
        if not waited:  # the first write blocks until the model is 3 frames past it
            waited.append(ahead.wait(timeout=20))
        assert item.result == int(item.frame[0, 0, 0])
        sink.order.append(item.index)
        return True
    sink.order = []

    res = run_pipeline(ListSource(12), process, sink, queue_size=4)
    assert waited == [True]  # set by inference while the writer was blocked, not by the timeout
    assert sink.order == list(range(12))  # a file loses no frame and keeps the order
    assert res.stats.summary()["frames"] == 12 and res.stats.get("dropped_at_output") == 0


def test_blocked_display_on_live_source_drops_instead_of_stalling():
    many = threading.Event()
    inferred = []

    def process(frame, stats):
        inferred.append(1)
        if len(inferred) == 15:  # far more than all the queues hold (1 + 4 + 1)
            many.set()
        return None

    waited = []

    def sink(item, stats):
        if not waited:
            waited.append(many.wait(timeout=20))
        return True

    res = run_pipeline(ListSource(None, live=True), process, sink, max_frames=20, queue_size=4)
    assert waited == [True]
    assert len(inferred) == 20
    assert res.stats.get("dropped_at_output") > 0
    assert res.stats.summary()["frames"] < 20


def test_stream_that_drops_keeps_what_was_written(tmp_path):
    video, jsonl = tmp_path / "out.avi", tmp_path / "out.jsonl"
    vout, jout = VideoOut(str(video), 10), JsonlOut(str(jsonl), {"mode": "test"})

    def sink(item, stats):
        vout.write(item.frame)
        jout.write({"frame": item.index, "value": int(item.frame[0, 0, 0])})
        return True

    src = ListSource(100, drop_after=6)
    res = run_pipeline(src, lambda f, s: None, sink)
    vout.close()
    jout.close()
    assert res.ended_early == "stream stopped after 6 frames"
    cap = cv2.VideoCapture(str(video))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 6
    lines = [json.loads(l) for l in jsonl.read_text().splitlines()]
    assert lines[0] == {"header": {"mode": "test"}} and [l["frame"] for l in lines[1:]] == list(range(6))


def test_ctrl_c_ends_cleanly_and_keeps_computed_results():
    count = []

    def process(frame, stats):
        count.append(1)
        if len(count) == 3:
            _thread.interrupt_main()  # what Ctrl-C does: KeyboardInterrupt in the main thread
        return len(count)

    written = []
    res = run_pipeline(ListSource(1000), process, lambda item, stats: written.append(item.result) or True)
    assert res.interrupted
    assert len(count) < 1000
    assert written == sorted(written) and len(written) >= 1  # what was computed before the interrupt is kept


def test_worker_error_is_raised_in_caller():
    def process(frame, stats):
        raise UserError("model broke")

    with pytest.raises(UserError, match="model broke"):
        run_pipeline(ListSource(5), process, lambda item, stats: True)


def test_sink_can_stop_and_max_frames():
    res = run_pipeline(ListSource(50), lambda f, s: None, lambda item, stats: item.index < 2)
    assert res.stats.summary()["frames"] == 3
    res = run_pipeline(ListSource(50), lambda f, s: s.add("model", 1.0), lambda item, stats: True, max_frames=7)
    summary = res.stats.summary()
    assert summary["frames"] == 7 and summary["stages"]["model"]["n"] == 7 and "capture" in summary["stages"]
