"""A live source that drops mid-run is reopened with bounded backoff (one line per attempt), frames flow again
when it is back, and after the last failed retry the run ends with a clear line and finalised outputs. Files
are not retried. The fake capture objects fail on purpose."""
import json

import cv2
import numpy as np

from rmpsam_edge.demo import sources
from rmpsam_edge.demo.pipeline import run_pipeline
from rmpsam_edge.demo.writer import JsonlOut, VideoOut


class FlakyCap(object):
    """Yields ``n`` frames (value = a running id), then every read fails."""

    def __init__(self, n, start=0, count=0):
        self.n, self.i, self.start, self.count = n, 0, start, count

    def isOpened(self):
        return True

    def get(self, prop):
        return {cv2.CAP_PROP_FPS: 10.0, cv2.CAP_PROP_FRAME_COUNT: self.count}.get(prop, 0)

    def read(self):
        if self.i >= self.n:
            return False, None
        self.i += 1
        return True, np.full((8, 8, 3), self.start + self.i, np.uint8)

    def release(self):
        pass


class Reopener(object):
    """reopen(): fails ``down`` times, then gives a camera with ``n`` more frames; after ``comebacks`` of
    those, fails for good."""

    def __init__(self, down=2, n=5, comebacks=1):
        self.down, self.n, self.comebacks, self.calls, self.served = down, n, comebacks, 0, 0

    def __call__(self):
        self.calls += 1
        if self.served >= self.comebacks or self.calls <= self.down:
            return None
        self.served += 1
        return FlakyCap(self.n, start=100 * self.served)


def _read_all(src, limit=1000):
    frames = []
    while len(frames) < limit:
        f = src.read()
        if f is None:
            break
        frames.append(int(f[0, 0, 0]))
    return frames


def test_live_source_reconnects_then_gives_up_with_one_line_each():
    lines = []
    reopen = Reopener(down=2, n=5, comebacks=1)
    src = sources.CaptureSource(FlakyCap(4), "rtsp://cam", live=True, reopen=reopen, retries=4, backoff=0.01,
                                log=lines.append)
    frames = _read_all(src)
    assert frames == [1, 2, 3, 4, 101, 102, 103, 104, 105]  # frames keep coming after the reconnect
    assert src.reconnects == 1
    attempts = [l for l in lines if "reconnecting" in l]
    assert len(attempts) == 3 + 4  # 2 failed + 1 good, then 4 failed (bounded), one line each
    assert "attempt 1 of 4" in attempts[0] and any("is back (attempt 3)" in l for l in lines)
    assert "4 reconnect attempts failed" in src.ended_early and "finishing the outputs" in lines[-1]
    assert src.read() is None  # stays ended


def test_backoff_doubles_and_is_capped():
    lines = []
    src = sources.CaptureSource(FlakyCap(1), "cam", live=True, reopen=lambda: None, retries=6, backoff=0.001,
                                log=lines.append)
    _read_all(src)
    delays = [float(l.split("reconnecting in ")[1].split(" s")[0]) for l in lines if "reconnecting" in l]
    assert len(delays) == 6 and delays == sorted(delays) and delays[-1] <= 8.0


def test_files_are_not_retried():
    calls = []
    src = sources.CaptureSource(FlakyCap(3, count=3), "clip.avi", live=False, reopen=lambda: calls.append(1),
                                backoff=0.001)
    assert _read_all(src) == [1, 2, 3] and calls == [] and src.ended_early is None


def test_pipeline_writes_through_a_drop_and_finalises(tmp_path):
    lines = []
    src = sources.CaptureSource(FlakyCap(3), "rtsp://cam", live=True, reopen=Reopener(down=1, n=3),
                                retries=2, backoff=0.05, log=lines.append)
    video = VideoOut(str(tmp_path / "o.avi"), 10.0)
    jsonl = JsonlOut(str(tmp_path / "o.jsonl"), {"mode": "test"})

    def sink(item, stats):
        video.write(np.repeat(np.repeat(item.frame, 8, 0), 8, 1))
        jsonl.write({"frame": item.index, "value": int(item.result)})
        return True

    import time

    def process(frame, stats):
        time.sleep(0.002)
        return frame[0, 0, 0]

    res = run_pipeline(src, process, sink, queue_size=8)
    video.close()
    jsonl.write_summary(res.stats.summary())
    jsonl.close()
    assert "reconnect attempts failed" in res.ended_early
    rows = [json.loads(l) for l in open(str(tmp_path / "o.jsonl")).read().splitlines()]
    values = [r["value"] for r in rows if "frame" in r]
    assert any(v >= 100 for v in values)  # frames written after the source came back
    assert "summary" in rows[-1]
    assert int(cv2.VideoCapture(str(tmp_path / "o.avi")).get(cv2.CAP_PROP_FRAME_COUNT)) == len(values)
