"""Full or read-only disks (ENOSPC / EROFS simulated by monkeypatching writes: tests may run as root, where
chmod does not stop writes): one line naming the path, what was written stays valid, exit non-zero."""
import errno
import json
import os

import cv2
import numpy as np
import pytest

from rmpsam_edge.cli import main
from rmpsam_edge.errors import UserError
from rmpsam_edge.demo import writer
from test_demo_cli import fake_model  # noqa: F401 - the fixture

import rmpsam_edge.commands.predict as predict_cmd


class FillingFile(object):
    """A file that accepts ``room`` more bytes, writes part of the next line, then raises ``err``."""

    def __init__(self, f, room, err=errno.ENOSPC):
        self.f, self.room, self.err = f, room, err

    def write(self, text):
        if len(text) > self.room:
            self.f.write(text[:self.room])
            self.f.flush()
            self.room = 0
            raise OSError(self.err, os.strerror(self.err))
        self.room -= len(text)
        return self.f.write(text)

    def __getattr__(self, name):
        return getattr(self.f, name)


@pytest.mark.parametrize("err,why", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only")])
def test_jsonl_keeps_complete_lines_on_disk_error(tmp_path, err, why):
    path = str(tmp_path / "o.jsonl")
    out = writer.JsonlOut(path, {"mode": "test"})
    out.write({"frame": 0})
    out._f = FillingFile(out._f, room=30, err=err)
    out.write({"frame": 1})
    with pytest.raises(UserError) as info:
        out.write({"frame": 2, "segments": ["x" * 100]})
    msg = str(info.value)
    assert path in msg and why in msg and "\n" not in msg
    out.close()
    lines = [json.loads(l) for l in open(path).read().splitlines()]  # every line parses
    assert lines == [{"header": {"mode": "test"}}, {"frame": 0}, {"frame": 1}]


def test_demo_full_disk_one_line_video_still_valid(tmp_path, capsys, monkeypatch, fake_model):  # noqa: F811
    real_init = writer.JsonlOut.__init__

    def init(self, path, header):
        real_init(self, path, header)
        self._f = FillingFile(self._f, room=4000)

    monkeypatch.setattr(writer.JsonlOut, "__init__", init)
    out = tmp_path / "o.avi"
    rc = main(["demo", "--mode", "track", "--max-frames", "20", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc != 0
    assert err.strip().splitlines()[-1].startswith("error: cannot write %s" % (tmp_path / "o.jsonl"))
    assert "Traceback" not in err
    lines = [json.loads(l) for l in open(str(tmp_path / "o.jsonl")).read().splitlines()]
    frames = [l for l in lines if "frame" in l]
    assert "header" in lines[0] and 0 < len(frames) < 20
    cap = cv2.VideoCapture(str(out))  # the video was finalised (index written) despite the error
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) >= len(frames)


def test_predict_read_only_output(tmp_path, capsys, monkeypatch, fake_model):  # noqa: F811
    img = str(tmp_path / "i.png")
    cv2.imwrite(img, __import__("numpy").zeros((64, 64, 3), "uint8"))

    def refuse(path, image):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    monkeypatch.setattr(predict_cmd, "imwrite", refuse)
    rc = main(["predict", "--image", img, "--points", "10,10", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc != 0 and err.count("\n") == 1 and "read-only" in err and "mask_000.png" in err
    assert not os.path.exists(str(tmp_path / "o" / "result.json"))  # no result that looks complete


def test_predict_imwrite_false_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(cv2, "imwrite", lambda *a, **k: False)
    with pytest.raises(OSError):
        predict_cmd.imwrite(str(tmp_path / "x.png"), __import__("numpy").zeros((4, 4), "uint8"))


def test_video_frames_opencv_drops_silently_are_an_error(tmp_path, capsys, monkeypatch, fake_model):  # noqa: F811
    real = cv2.VideoWriter

    class DroppingWriter(object):  # like OpenCV on a full disk: write() returns, nothing reaches the file
        def __init__(self, *a):
            self.w, self.n = real(*a), 0

        def isOpened(self):
            return self.w.isOpened()

        def write(self, frame):
            self.n += 1
            if self.n <= 2:
                self.w.write(frame)

        def release(self):
            self.w.release()

    monkeypatch.setattr(writer.cv2, "VideoWriter", DroppingWriter)
    out = tmp_path / "d.avi"
    rc = main(["demo", "--mode", "panoptic", "--max-frames", "5", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("error: only 2 of 5 frames reached %s (disk full or not writable?); "
                                            "free space or choose another --out" % out)


def test_demo_max_pixels_for_videos_and_images(tmp_path, capsys, fake_model):  # noqa: F811
    rc = main(["demo", "--max-pixels", "100000", "--max-frames", "1", "--out", str(tmp_path / "v.avi")])
    err = capsys.readouterr().err
    assert rc == 2 and "has 384x288 frames (110592 pixels), over the limit of 100000; pass --max-pixels" in err
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a_small.png"), np.zeros((40, 50, 3), np.uint8))
    cv2.imwrite(str(folder / "b_big.png"), np.zeros((400, 500, 3), np.uint8))
    rc = main(["demo", "--source", str(folder), "--max-pixels", "10000", "--out", str(tmp_path / "i.avi")])
    err = capsys.readouterr().err
    assert rc == 0 and "skipped %s: image %s declares 500x400 = 200000 pixels, over the limit of 10000" % (
        folder / "b_big.png", folder / "b_big.png") in err
    assert main(["demo", "--max-pixels", "-1"]) == 2
    assert "--max-pixels must be >= 0" in capsys.readouterr().err
