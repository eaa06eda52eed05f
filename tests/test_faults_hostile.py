"""Hostile and broken input, one line each: decompression bombs refused before decoding (header parsing,
a limit the user can raise), manifest paths that leave the bundle, malformed/truncated manifests, absurd
declared shapes, a video that is not a video, a calibration folder of non-images, a backend flag that cannot
apply to the PyTorch path."""
import json
import os
import struct
import zlib

import cv2
import numpy as np
import pytest

from rmpsam_edge import preprocess
from rmpsam_edge.cli import main
from rmpsam_edge.errors import UserError
from rmpsam_edge.image_header import check_pixels, header_size
from rmpsam_edge.runtime.bundle import Bundle, sha256_file, write_manifest
from test_bundle import make_fake_bundle, one_line_error


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(path, w=30000, h=30000):
    """A few-KB PNG whose IHDR says w x h (8-bit gray); the IDAT holds the first rows of zeros."""
    idat = zlib.compress(b"\x00" * (w + 1) * 64, 9)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + \
        _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tif", ".webp", ".ppm"])
def test_header_size_matches_real_files(ext):
    img = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, img)
    assert ok
    assert tuple(header_size(buf.tobytes())) == (53, 37)


def test_header_size_unknown_or_short():
    assert header_size(b"hello world") is None and header_size(b"\x89PNG\r\n\x1a\n") is None


def test_bomb_png_refused_before_decoding(tmp_path, monkeypatch):
    path = bomb_png(tmp_path / "bomb.png")
    assert os.path.getsize(path) < 10000

    def no_decode(*a, **k):
        raise AssertionError("decoded a bomb")

    monkeypatch.setattr(cv2, "imdecode", no_decode)
    msg = one_line_error(preprocess.load_image, path)
    assert "30000x30000" in msg and "--max-pixels" in msg


def test_bomb_jpeg_sof_refused(tmp_path):
    ok, buf = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))
    data = bytearray(buf.tobytes())
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", 40000, 40000)
    with pytest.raises(UserError, match="40000x40000"):
        check_pixels("x.jpg", bytes(data))


def test_pixel_limit_is_settable(tmp_path):
    path = str(tmp_path / "small.png")
    cv2.imwrite(path, np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(UserError, match="limit"):
        preprocess.load_image(path, max_pixels=5000)
    assert preprocess.load_image(path, max_pixels=None).shape == (100, 100, 3)
    assert preprocess.load_image(path).shape == (100, 100, 3)


def test_predict_cli_bomb_one_line(tmp_path, capsys):
    path = bomb_png(tmp_path / "bomb.png")
    rc = main(["predict", "--random-init", "--image", path, "--points", "5,5", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc != 0 and err.count("\n") == 1 and "30000x30000" in err


def test_backend_flag_on_pytorch_path_is_an_error(tmp_path, capsys):
    img = str(tmp_path / "i.png")
    cv2.imwrite(img, np.zeros((32, 32, 3), np.uint8))
    rc = main(["predict", "--random-init", "--backend", "tensorrt", "--image", img, "--points", "5,5",
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc != 0 and err.count("\n") == 1
    assert "--backend tensorrt" in err and "--model" in err and "drop --backend" in err
    assert not os.path.exists(str(tmp_path / "o" / "result.json"))


def _edit(folder, fn):
    with open(os.path.join(folder, "manifest.json")) as f:
        m = json.load(f)
    fn(m)
    write_manifest(folder, m)


def test_graph_path_leaving_the_bundle_is_refused(tmp_path):
    b = make_fake_bundle(str(tmp_path / "b"))
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "encoder.onnx").write_bytes(b"evil graph")
    sha = sha256_file(str(evil / "encoder.onnx"))
    _edit(b, lambda m: m["graphs"]["encoder"].update(file="../evil/encoder.onnx", sha256=sha))
    assert "leaves the bundle" in one_line_error(Bundle.open, b)
    _edit(b, lambda m: m["graphs"]["encoder"].update(file=str(evil / "encoder.onnx")))
    assert "not a path inside the bundle" in one_line_error(Bundle.open, b)


def test_symlink_out_of_the_bundle_is_refused(tmp_path):
    b = make_fake_bundle(str(tmp_path / "b"))
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(open(os.path.join(b, "encoder.onnx"), "rb").read())
    os.remove(os.path.join(b, "encoder.onnx"))
    os.symlink(str(outside), os.path.join(b, "encoder.onnx"))
    assert "leaves the bundle" in one_line_error(Bundle.open, b)


def test_vocabulary_path_outside_is_refused(tmp_path):
    b = make_fake_bundle(str(tmp_path / "b"))
    _edit(b, lambda m: m["vocabulary"].update(file="../vocab.npy"))
    bundle = Bundle.open(b)
    assert "leaves the bundle" in one_line_error(bundle.class_embed)


def test_truncated_manifest(tmp_path):
    b = make_fake_bundle(str(tmp_path / "b"))
    p = os.path.join(b, "manifest.json")
    text = open(p).read()
    open(p, "w").write(text[:len(text) // 2])
    assert "not valid JSON" in one_line_error(Bundle.open, b)


@pytest.mark.parametrize("edit,what", [
    (lambda m: m["input"].update(size=-640), "input.size"),
    (lambda m: m["input"].update(size=10 ** 9), "input.size"),
    (lambda m: m.update(static={"height": 10 ** 7, "width": 64, "prompts": 1}), "static.height"),
    (lambda m: m.update(static={"height": 64, "width": 64, "prompts": -1}), "static.prompts"),
    (lambda m: m.update(dynamic_axes={"H": {"min": 64, "max": 32}}), "min 64 > max 32"),
    (lambda m: m.update(dynamic_axes={"Np": {"min": 1, "max": "many"}}), "dynamic_axes.Np.max"),
    (lambda m: m.update(input=[1, 2]), "'input' must be an object"),
])
def test_absurd_declared_shapes(tmp_path, edit, what):
    b = make_fake_bundle(str(tmp_path / "b"))
    _edit(b, edit)
    assert what in one_line_error(Bundle.open, b)


def test_video_that_is_not_a_video(tmp_path, capsys):
    bad = tmp_path / "clip.avi"
    bad.write_bytes(os.urandom(4096))
    rc = main(["demo", "--source", str(bad), "--random-init", "--mode", "everything",
               "--out", str(tmp_path / "o.avi")])
    err = capsys.readouterr().err
    assert rc != 0 and err.count("\n") == 1 and "not a readable video" in err


def test_calibration_folder_of_non_images(tmp_path):
    from rmpsam_edge.quantize.calibration import load_frames
    folder = tmp_path / "calib"
    folder.mkdir()
    for i in range(6):
        (folder / ("img%d.jpg" % i)).write_text("not a picture %d" % i)
    with pytest.raises(UserError) as info:
        load_frames(str(folder), count=2, holdout=1)
    assert "\n" not in str(info.value) and "img" in str(info.value)
    (folder / "notes.txt").write_text("x")
    for f in folder.glob("*.jpg"):
        f.unlink()
    assert "no images" in one_line_error(load_frames, str(folder), 2, 1)


def test_demo_sources_refuse_or_skip_bombs(tmp_path, capfd):
    from rmpsam_edge.demo import sources
    bomb = bomb_png(tmp_path / "a_bomb.png")
    cv2.imwrite(str(tmp_path / "b_ok.png"), np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(UserError, match="30000x30000"):
        sources.open_source(bomb)
    src = sources.open_source(str(tmp_path / "*.png"))
    frames = []
    while True:
        f = src.read()
        if f is None:
            break
        frames.append(f.shape)
    assert frames == [(16, 16, 3)] and src.skipped == [bomb]
    assert "skipped %s" % bomb in capfd.readouterr().err
