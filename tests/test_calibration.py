"""Calibration sources: folder, video (evenly sampled frames), glob, the shipped samples; errors are one line."""
import io
import os

import cv2
import numpy as np
import pytest

from rmpsam_edge.errors import UserError
from rmpsam_edge.quantize import calibration as cal
from rmpsam_edge.quantize.prompts import sample_prompts


def _write_images(folder, n, size=(48, 64)):
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(n):
        img = np.full(size + (3,), 10 * i, np.uint8)
        img[:, :, 2] = 200  # BGR red channel: RGB frames must come back with R = 200
        p = os.path.join(folder, "img_%02d.png" % i)
        cv2.imwrite(p, img)
        paths.append(p)
    return paths


def _write_video(path, n, size=(48, 64)):
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (size[1], size[0]))
    assert w.isOpened()
    for i in range(n):
        frame = np.zeros(size + (3,), np.uint8)
        frame[:, :, 1] = 4 * i  # frame number encoded in green (MJPG keeps flat colours within a few levels)
        w.write(frame)
    w.release()
    return path


def test_folder_source_counts_and_disjoint_holdout(tmp_path):
    _write_images(str(tmp_path / "imgs"), 10)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    out = io.StringIO()
    fs = cal.load_frames(str(tmp_path / "imgs"), count=6, holdout=2, stream=out)
    assert len(fs.calib) == 6 and len(fs.holdout) == 2
    names_c = {n for n, _ in fs.calib}
    names_h = {n for n, _ in fs.holdout}
    assert not names_c & names_h
    assert all(n.endswith(".png") for n in names_c | names_h)
    rgb = fs.calib[0][1]
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8 and rgb[0, 0, 0] == 200  # RGB order
    assert "calibration: 6 image(s)" in out.getvalue() and "of 10 available" in out.getvalue()


def test_video_source_samples_evenly(tmp_path):
    path = _write_video(str(tmp_path / "clip.avi"), 30)
    fs = cal.load_frames(path, count=4, holdout=1, stream=io.StringIO())
    idx = sorted(int(n.split("#")[1]) for n, _ in fs.calib + fs.holdout)
    assert idx == [cal.even_indices(30, 5)[i] for i in range(5)] == [3, 9, 15, 21, 27]
    for name, rgb in fs.calib + fs.holdout:  # each frame is the one its name says
        assert abs(int(rgb[:, :, 1].mean()) - 4 * int(name.split("#")[1])) <= 3


def test_glob_source(tmp_path):
    _write_images(str(tmp_path / "a"), 3)
    _write_images(str(tmp_path / "b"), 2)
    fs = cal.load_frames(str(tmp_path / "*" / "img_0*.png"), count=4, holdout=1, stream=io.StringIO())
    assert len(fs.calib) + len(fs.holdout) == 5


def test_default_source_warns_and_prints_count(capsys):
    out = io.StringIO()
    fs = cal.load_frames(None, count=3, holdout=2, stream=out)
    err = capsys.readouterr().err
    assert "warning:" in err and "tiny set" in err and "--calib" in err
    assert "calibration: 3 image(s)" in out.getvalue()
    assert fs.is_default and len(fs.calib) == 3 and len(fs.holdout) == 2
    units = cal.default_units()
    assert fs.available == len(units) and {u[0] for u in units} == {"image", "video"}
    assert sum(u[0] == "video" for u in units) == cal.DEFAULT_VIDEO_FRAMES


@pytest.mark.parametrize("make, pattern", [
    (lambda d: os.makedirs(d), "has no images"),                                          # empty folder
    (lambda d: None, "does not exist"),                                                   # missing path
])
def test_bad_sources_are_one_line_errors(tmp_path, make, pattern):
    d = str(tmp_path / "src")
    make(d)
    with pytest.raises(UserError, match=pattern) as exc:
        cal.load_frames(d, stream=io.StringIO())
    assert "\n" not in str(exc.value)


def test_unreadable_image_and_video(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "broken.jpg").write_bytes(b"definitely not a jpeg")
    (d / "ok.png").write_bytes(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    with pytest.raises(UserError, match="broken.jpg"):
        cal.load_frames(str(d), count=1, holdout=1, stream=io.StringIO())
    v = tmp_path / "broken.mp4"
    v.write_bytes(b"\x00" * 100)
    with pytest.raises(UserError, match="cannot read video .* given to --calib"):
        cal.load_frames(str(v), stream=io.StringIO())
    with pytest.raises(UserError, match="matches no files"):
        cal.load_frames(str(tmp_path / "nothing*.jpg"), stream=io.StringIO())


def test_fewer_images_than_calib_count(tmp_path):
    _write_images(str(tmp_path / "few"), 3)
    with pytest.raises(UserError, match="fewer than --calib-count 5"):
        cal.load_frames(str(tmp_path / "few"), count=5, holdout=0, stream=io.StringIO())
    with pytest.raises(UserError, match="held out"):  # enough for calibration, not for the hold-out too
        cal.load_frames(str(tmp_path / "few"), count=3, holdout=1, stream=io.StringIO())


def test_prompt_sampler_is_deterministic_and_normalised():
    a, kinds = sample_prompts((100, 200), grid=4, boxes=8, seed=3)
    b, _ = sample_prompts((100, 200), grid=4, boxes=8, seed=3)
    assert a.shape == (24, 4) and kinds.count("point") == 16 and kinds.count("box") == 8
    np.testing.assert_array_equal(a, b)
    assert (a > 0).all() and (a < 1).all()
    np.testing.assert_allclose(a[0, 2:], [6 / 200, 6 / 100], rtol=1e-4)  # a click is a 6-pixel box


def test_one_reader_folder_videos_and_the_pixel_limit(tmp_path, monkeypatch):
    """rmpsam_edge.media reads a folder's images and its videos' frames; a video whose frames are over the pixel
    limit images have is refused before decoding, naming the flag the caller passes (--calib, --images)."""
    from rmpsam_edge import image_header
    from rmpsam_edge.training.distill_data import load_frames as distill_frames
    _write_images(str(tmp_path / "mixed"), 2)
    _write_video(str(tmp_path / "mixed" / "clip.avi"), 5)
    fs = cal.load_frames(str(tmp_path / "mixed"), count=5, holdout=2, stream=io.StringIO())
    assert fs.available == 7 and sum("#" in n for n, _ in fs.calib + fs.holdout) == 5
    monkeypatch.setattr(image_header, "DEFAULT_MAX_PIXELS", 48 * 64)  # the clip's frames are 48x64
    with pytest.raises(UserError, match="clip.avi given to --calib has 64x48 frames, over the limit") as exc:
        cal.load_frames(str(tmp_path / "mixed" / "clip.avi"), stream=io.StringIO())
    assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match="given to --images has 64x48 frames"):
        distill_frames([str(tmp_path / "mixed")], count=2, holdout=1, long_side=32)
