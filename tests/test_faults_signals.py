"""SIGTERM / SIGHUP during `rmpsam-edge demo` (a real subprocess on a looped copy of the shipped clip): the
outputs are finalised (a video OpenCV can count, complete JSON Lines, the summary), exit 128 + signal; a second
signal exits at once. The pipeline's worker threads stop when the main thread is interrupted."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import cv2
import pytest

from rmpsam_edge.demo.pipeline import run_pipeline
from rmpsam_edge.signals import Stopped

CLIP = os.path.join(os.path.dirname(__file__), "..", "rmpsam_edge", "assets", "video", "vtest_clip.avi")


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """The shipped clip looped to 600 frames at half size (a run far longer than the test waits)."""
    path = str(tmp_path_factory.mktemp("clip") / "long.avi")
    cap = cv2.VideoCapture(CLIP)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.resize(f, (192, 144)))
    out = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (192, 144))
    for i in range(600):
        out.write(frames[i % len(frames)])
    out.release()
    return path


def _start_demo(clip, out):
    cmd = [sys.executable, "-m", "rmpsam_edge.cli", "demo", "--source", clip, "--random-init", "--mode",
           "everything", "--grid", "2", "--imgsz", "128", "--threads", "1", "--out", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_lines(jsonl, n, proc, timeout=120.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError("demo ended early: %s" % (proc.communicate(),))
        if os.path.exists(jsonl):
            with open(jsonl) as f:
                if len(f.read().splitlines()) >= n:
                    return
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("demo wrote fewer than %d lines in %.0f s" % (n, timeout))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_finalises_demo_outputs(long_clip, tmp_path, sig):
    out = tmp_path / "o.avi"
    jsonl = str(tmp_path / "o.jsonl")
    proc = _start_demo(long_clip, out)
    _wait_for_lines(jsonl, 4, proc)  # header + 3 frames
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + int(sig), (stdout, stderr)
    assert "Traceback" not in stderr
    assert "demo summary:" in stdout and "stopped by %s" % sig.name in stdout
    lines = [json.loads(l) for l in open(jsonl).read().splitlines()]  # every line is complete JSON
    assert "header" in lines[0] and "summary" in lines[-1]
    frames = [l for l in lines if "frame" in l]
    assert 3 <= len(frames) < 600
    assert lines[-1]["summary"]["frames"] == len(frames)
    cap = cv2.VideoCapture(str(out))  # the index is written: OpenCV counts the frames
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(frames)
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == len(frames)


def test_second_signal_exits_at_once(long_clip, tmp_path):
    proc = _start_demo(long_clip, tmp_path / "o.avi")
    _wait_for_lines(str(tmp_path / "o.jsonl"), 2, proc)
    proc.send_signal(signal.SIGHUP)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode in (129, 143), stderr  # 143 when the second one arrived while stopping
    if proc.returncode == 143:
        assert "second SIGTERM, exiting now" in stderr
    assert "Traceback" not in stderr


class _Endless(object):
    live = False

    def read(self):
        time.sleep(0.005)
        return __import__("numpy").zeros((4, 4, 3), "uint8")


def test_worker_threads_stop_when_main_thread_is_stopped():
    calls = []

    def sink(item, stats):
        calls.append(item.index)
        if len(calls) == 3:
            raise Stopped(signal.SIGTERM)  # what the SIGTERM handler raises in the main thread
        return True

    before = set(threading.enumerate())
    res = run_pipeline(_Endless(), lambda f, s: 1, sink)
    assert isinstance(res.interrupted, Stopped) and res.interrupted.exit_code == 143
    left = [t for t in threading.enumerate() if t not in before and t.name.startswith("demo-")]
    assert not left
