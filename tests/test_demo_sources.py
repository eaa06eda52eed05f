"""Demo sources: real files written here with OpenCV, and the one-line errors."""
import os

import cv2
import numpy as np
import pytest

from rmpsam_edge.errors import UserError
from rmpsam_edge.demo import sources


def _frames(n, h=48, w=64):
    out = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[:, : (i + 1) * 6] = (40 * i) % 255, 100, 200  # a bar that grows: frames are distinguishable
        out.append(f)
    return out


def _write_video(path, frames, fourcc="MJPG", fps=10.0):
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert vw.isOpened()
    for f in frames:
        vw.write(f)
    vw.release()


def _read_all(src):
    out = []
    while True:
        f = src.read()
        if f is None:
            return out
        out.append(f)


def test_video_file_reads_every_frame(tmp_path):
    frames = _frames(7)
    path = tmp_path / "clip.avi"
    _write_video(path, frames)
    src = sources.open_source(str(path))
    assert not src.live and src.frame_count == 7 and src.fps == pytest.approx(10.0)
    got = _read_all(src)
    src.close()
    assert len(got) == 7 and got[0].shape == (48, 64, 3)
    # MJPG is lossy, but the growing bar must be where it was written
    widths = [int((g[24, :, 2] > 128).sum()) for g in got]
    assert widths == sorted(widths) and widths[0] < widths[-1]
    assert src.ended_early is None


def test_glob_and_folder_sorted(tmp_path):
    for i, f in enumerate(_frames(3)):
        cv2.imwrite(str(tmp_path / ("f%02d.png" % (2 - i))), f)  # f02 = first frame written
    (tmp_path / "notes.txt").write_text("not an image")
    g = sources.open_source(str(tmp_path / "*.png"))
    d = sources.open_source(str(tmp_path))
    a, b = _read_all(g), _read_all(d)
    assert len(a) == len(b) == 3 and g.frame_count == 3
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    # sorted by name: f00 is the last frame written (widest bar)
    assert (a[0][24, :, 2] > 128).sum() > (a[2][24, :, 2] > 128).sum()


def test_single_image(tmp_path):
    p = tmp_path / "one.jpg"
    cv2.imwrite(str(p), _frames(1)[0])
    src = sources.open_source(str(p))
    assert len(_read_all(src)) == 1


def test_file_url_is_a_finite_stream(tmp_path):
    path = tmp_path / "clip.avi"
    _write_video(path, _frames(4))
    src = sources.open_source("file://" + str(path))
    assert not src.live
    assert len(_read_all(src)) == 4


@pytest.mark.parametrize("make, pattern", [
    (lambda d: None, "nothing_*.jpg"),
    (lambda d: os.makedirs(str(d / "empty")), "empty"),
])
def test_empty_glob_or_folder_is_an_error(tmp_path, make, pattern):
    make(tmp_path)
    with pytest.raises(UserError) as e:
        sources.open_source(str(tmp_path / pattern))
    assert "\n" not in str(e.value) and ("no images" in str(e.value) or "has no images" in str(e.value))


def test_not_a_video_is_an_error(tmp_path):
    p = tmp_path / "movie.mp4"
    p.write_bytes(b"this is text, not a video\n" * 50)
    with pytest.raises(UserError) as e:
        sources.open_source(str(p))
    assert "not a readable video" in str(e.value) and "\n" not in str(e.value)


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        sources.open_source(str(tmp_path / "nope.avi"))


def test_camera_that_does_not_open(capfd):
    index = next(i for i in range(50, 64) if not os.path.exists("/dev/video%d" % i))
    with pytest.raises(UserError) as e:
        sources.open_source(str(index))
    assert ("camera %d could not be opened" % index) in str(e.value)
    err = capfd.readouterr().err
    assert "WARN" not in err and "ERROR" not in err  # OpenCV's own log lines are silenced


def test_csi_without_gstreamer(monkeypatch):
    monkeypatch.setattr(sources, "has_gstreamer", lambda: False)
    with pytest.raises(UserError) as e:
        sources.open_source("csi://0")
    assert "GStreamer" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError, match="bad CSI option"):
        sources.open_source("csi://0?zoom=2")


def test_gstreamer_detection_and_csi_pipeline():
    assert sources.has_gstreamer() == ("YES" in [l for l in cv2.getBuildInformation().splitlines()
                                                  if l.strip().startswith("GStreamer:")][0])
    pipe = sources.csi_pipeline(1, 1920, 1080, 30)
    assert "nvarguscamerasrc sensor-id=1" in pipe and "width=(int)1920" in pipe and pipe.endswith("sync=false")


def test_unreachable_stream_is_an_error():
    # closed local port: fails fast without network
    with pytest.raises(UserError, match="could not be opened"):
        sources.open_source("rtsp://127.0.0.1:9/none")


class _DroppingCap(object):
    """A capture whose container claims 30 frames but whose reads fail after 5 (a broken file / stream)."""

    def __init__(self, n_ok, claimed):
        self.n_ok, self.claimed, self.reads, self.released = n_ok, claimed, 0, False

    def get(self, prop):
        return {cv2.CAP_PROP_FPS: 25.0, cv2.CAP_PROP_FRAME_COUNT: float(self.claimed)}.get(prop, 0.0)

    def read(self):
        self.reads += 1
        if self.reads > self.n_ok:
            return False, None
        return True, np.full((8, 8, 3), self.reads, np.uint8)

    def release(self):
        self.released = True


@pytest.mark.parametrize("live", [False, True])
def test_capture_that_drops_mid_run_reports_ended_early(live):
    cap = _DroppingCap(5, 30)
    src = sources.CaptureSource(cap, "cam", live=live)
    got = _read_all(src)
    assert [int(g[0, 0, 0]) for g in got] == [1, 2, 3, 4, 5]
    assert src.ended_early and ("5" in src.ended_early)
    src.close()
    assert cap.released


def test_capture_at_normal_end_is_not_early():
    src = sources.CaptureSource(_DroppingCap(30, 30), "clip.avi", live=False)
    assert len(_read_all(src)) == 30 and src.ended_early is None


def test_one_media_listing_for_demo_and_calibration(tmp_path):
    """rmpsam_edge.media.list_media is the one listing: the demo and quantize calibration see the same images of
    a folder (sorted, plain files, known extensions only)."""
    import cv2 as _cv2
    from rmpsam_edge.media import list_media
    from rmpsam_edge.media import source_units
    from rmpsam_edge.demo.sources import open_source
    for name in ("b.png", "a.jpg", "c.PNG"):
        _cv2.imwrite(str(tmp_path / name), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub.png").mkdir()
    images, videos = list_media(str(tmp_path))
    assert [os.path.basename(p) for p in images] == ["a.jpg", "b.png", "c.PNG"] and videos == []
    assert [u[1] for u in source_units(str(tmp_path), "--calib")] == images
    assert open_source(str(tmp_path)).paths == images
    assert list_media(str(tmp_path / "*.png"))[0] == [str(tmp_path / "b.png")]
