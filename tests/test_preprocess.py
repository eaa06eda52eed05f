"""Image loading, resize rules, normalisation/padding and prompt mapping (rmpsam_edge.preprocess)."""
import os

import cv2
import numpy as np
import pytest

from rmpsam_edge.errors import UserError
from rmpsam_edge.media import asset_path
from rmpsam_edge.preprocess import (ImageMeta, as_rgb, denormalize_boxes, load_image, normalize_boxes,
                                    points_to_boxes, preprocess, prompts_to_model, resize_shape)
from rmpsam_edge.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec

ASSETS = asset_path("images")


# ---------------------------------------------------------------------------------------------------------------
# resize rules
def test_resize_official_rule():
    # mmdet Resize(scale=(1333, 800), keep_ratio=True): s = min(1333/640, 800/480) = 5/3
    assert resize_shape(480, 640, None) == (800, 1067)
    assert resize_shape(640, 480, None) == (1067, 800)
    # very wide image: the long-side limit wins (s = 1333/2000)
    assert resize_shape(500, 2000, None) == (int(500 * 1333 / 2000 + 0.5), 1333)
    # already at the target size: unchanged
    assert resize_shape(800, 1333, None) == (800, 1333)
    # upscaling small images, as mmdet does
    assert resize_shape(100, 150, None) == (800, 1200)


def test_resize_long_side_rule():
    assert resize_shape(480, 640, 512) == (384, 512)
    assert resize_shape(640, 480, 512) == (512, 384)
    assert resize_shape(100, 150, 200) == (133, 200)  # 100 * 4/3 = 133.3 -> 133
    assert resize_shape(3, 1000, 512) == (2, 512)  # int(1.536 + 0.5)
    assert resize_shape(1, 1000, 512) == (1, 512)  # never 0 pixels
    with pytest.raises(UserError):
        resize_shape(10, 10, 8)


# ---------------------------------------------------------------------------------------------------------------
# normalisation and padding
def test_preprocess_values_and_padding():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(100, 150, 3), dtype=np.uint8)
    spec = ModelSpec("r18", input_size=200)
    x, meta = preprocess(img, spec)
    assert meta.ori_shape == (100, 150) and meta.img_shape == (133, 200) and meta.pad_shape == (160, 224)
    assert meta.scale == pytest.approx((133 / 100.0, 200 / 150.0))
    assert meta.feat_shape == (40, 56)
    assert x.shape == (1, 3, 160, 224) and x.dtype == np.float32
    resized = cv2.resize(img, (200, 133), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    want = ((resized - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)).transpose(2, 0, 1)
    np.testing.assert_array_equal(x[0, :, :133, :200], want)
    # RGB order: channel 0 uses the R mean/std
    assert x[0, 0, 0, 0] == pytest.approx((resized[0, 0, 0] - 123.675) / 58.395, rel=1e-6)
    # padding AFTER normalisation: exactly zero
    assert np.all(x[0, :, 133:, :] == 0) and np.all(x[0, :, :, 200:] == 0)


def test_preprocess_no_resize_when_size_matches():
    img = np.full((64, 96, 3), 200, np.uint8)
    x, meta = preprocess(img, ModelSpec("r18", input_size=96))
    assert meta.img_shape == (64, 96) and meta.pad_shape == (64, 96) and meta.scale == (1.0, 1.0)
    assert np.allclose(x[0, 1], (200 - 116.28) / 57.12)


def test_preprocess_uses_spec_mean_std():
    img = np.full((32, 32, 3), 10, np.uint8)
    x, _ = preprocess(img, ModelSpec("r18", input_size=32, mean=(10, 0, 10), std=(1, 2, 4)))
    assert np.allclose(x[0, 0], 0) and np.allclose(x[0, 1], 5) and np.allclose(x[0, 2], 0)


# ---------------------------------------------------------------------------------------------------------------
# images
def test_load_image_real_jpeg_is_rgb():
    path = os.path.join(ASSETS, "astronaut.jpg")
    img = load_image(path)
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    np.testing.assert_array_equal(img, bgr[:, :, ::-1])


def test_load_image_gray_rgba_16bit(tmp_path):
    gray = (np.arange(20 * 30).reshape(20, 30) % 256).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    g = load_image(tmp_path / "g.png")
    assert g.shape == (20, 30, 3) and np.all(g[:, :, 0] == gray) and np.all(g[:, :, 2] == gray)

    bgra = np.zeros((10, 12, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 10, 20, 30, 77
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    a = load_image(str(tmp_path / "a.png"))
    assert a.shape == (10, 12, 3) and tuple(a[0, 0]) == (30, 20, 10)  # alpha dropped, BGR -> RGB

    deep = np.zeros((8, 9, 3), np.uint16)
    deep[..., 0], deep[..., 2] = 65535, 257 * 100  # B = max, R = 100/255
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    d = load_image(tmp_path / "d.png")
    assert d.dtype == np.uint8 and tuple(d[0, 0]) == (100, 0, 255)

    g16 = np.full((5, 6), 257 * 7, np.uint16)
    cv2.imwrite(str(tmp_path / "g16.tif"), g16)
    assert tuple(load_image(tmp_path / "g16.tif")[0, 0]) == (7, 7, 7)


def test_load_image_errors(tmp_path):
    with pytest.raises(UserError, match="cannot read image .*missing.png: no such file; give a JPEG"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "notes.txt").write_text("hello, not an image")
    with pytest.raises(UserError, match="cannot read image .*notes.txt.*JPEG/PNG/BMP/TIFF"):
        load_image(tmp_path / "notes.txt")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(UserError, match="empty"):
        load_image(tmp_path / "empty.jpg")
    with pytest.raises(UserError, match="directory"):
        load_image(tmp_path)
    # a truncated JPEG
    ok, buf = cv2.imencode(".jpg", np.zeros((64, 64, 3), np.uint8))
    (tmp_path / "trunc.jpg").write_bytes(buf.tobytes()[:40])
    with pytest.raises(UserError, match="trunc.jpg"):
        load_image(tmp_path / "trunc.jpg")


def test_as_rgb_conversions():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert as_rgb(gray).shape == (3, 4, 3) and np.all(as_rgb(gray)[..., 1] == gray)
    assert as_rgb(gray[:, :, None]).shape == (3, 4, 3)
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0] = 9
    out = as_rgb(rgba)
    assert out.shape == (3, 4, 3) and np.all(out[..., 0] == 9)
    assert np.all(as_rgb(rgba, assume="bgr")[..., 2] == 9)
    u16 = np.full((2, 2, 3), 65535, np.uint16)
    assert np.all(as_rgb(u16) == 255)
    f = np.full((2, 2, 3), 0.5, np.float32)
    assert np.all(as_rgb(f) == 128)
    assert np.all(as_rgb(np.ones((2, 2), bool)) == 255)
    assert as_rgb(np.full((2, 2, 3), 7, np.int64)).dtype == np.uint8
    assert as_rgb(np.zeros((5, 7, 3), np.uint8)).flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("bad, msg", [
    (np.zeros((3, 64, 64), np.uint8), "channels-first"),
    (np.zeros((4, 4, 2), np.uint8), "not \\(H, W\\)"),
    (np.zeros((2, 3, 4, 5), np.uint8), "not \\(H, W\\)"),
    (np.zeros((0, 4, 3), np.uint8), "empty"),
    (np.full((2, 2, 3), 2.0, np.float32), "within 0..1"),
    (np.full((2, 2, 3), np.nan, np.float32), "NaN"),
    (np.full((2, 2, 3), 300, np.int32), "within 0..255"),
    (np.zeros((2, 2, 3), np.complex64), "not supported"),
    ("image.jpg", "load_image"),
])
def test_as_rgb_rejects(bad, msg):
    with pytest.raises(UserError, match=msg):
        as_rgb(bad)


# ---------------------------------------------------------------------------------------------------------------
# prompts
def test_points_to_boxes():
    b = points_to_boxes([[10, 20], [0.5, 7]])
    np.testing.assert_array_equal(b, np.float32([[7, 17, 13, 23], [-2.5, 4, 3.5, 10]]))
    assert b.dtype == np.float32 and points_to_boxes([5, 6]).shape == (1, 4)


def test_normalize_boxes_hand_computed():
    # img_shape (h, w) = (100, 200)
    out = normalize_boxes([[20, 10, 60, 50], [0, 0, 200, 100], [-50, 0, 10, 100]], (100, 200))
    assert out.dtype == np.float32
    # box 0: x/200, y/100 -> (0.1, 0.1, 0.3, 0.5) -> cx 0.2, cy 0.3, w 0.2, h 0.4
    np.testing.assert_allclose(out[0], [0.2, 0.3, 0.2, 0.4], rtol=1e-6)
    # full image: w = h = 1 -> clamped to 1 - 1e-5 by the inverse-sigmoid round trip
    np.testing.assert_allclose(out[1], [0.5, 0.5, 1 - 1e-5, 1 - 1e-5], rtol=1e-6)
    # box reaching left of the image: cx = (-0.25 + 0.05) / 2 = -0.1 -> clamped to 0 -> 1e-5; w = 0.3
    np.testing.assert_allclose(out[2], [1e-5, 0.5, 0.3, 1 - 1e-5], rtol=1e-4)


def test_prompt_mapping_uses_img_shape_not_pad_shape():
    # 100x150 with long side 200 -> img_shape (133, 200), pad_shape (160, 224): not multiples of 32
    meta = ImageMeta((100, 150), (133, 200), (160, 224), (133 / 100.0, 200 / 150.0))
    pts = np.array([[75.0, 50.0], [12.0, 90.0]])
    boxes = np.array([[30.0, 20.0, 120.0, 80.0]])
    out = prompts_to_model(pts, boxes, meta)
    assert out.shape == (3, 4) and out.dtype == np.float32
    sy, sx = meta.scale
    # a point maps to the centre of a 6-px box in resized pixels, normalised by img_shape (w_r=200, h_r=133)
    np.testing.assert_allclose(out[0], [75 * sx / 200, 50 * sy / 133, 6 / 200.0, 6 / 133.0], rtol=1e-5)
    np.testing.assert_allclose(out[1], [12 * sx / 200, 90 * sy / 133, 6 / 200.0, 6 / 133.0], rtol=1e-5)
    # boxes come after points; round trip back to original pixels
    np.testing.assert_allclose(denormalize_boxes(out[2:], meta), boxes.astype(np.float32), atol=1e-3)
    # the click box is 6 RESIZED pixels wide: +-3/sx original pixels around the click
    np.testing.assert_allclose(denormalize_boxes(out[:1], meta)[0],
                               [75 - 3 / sx, 50 - 3 / sy, 75 + 3 / sx, 50 + 3 / sy], atol=1e-3)
    # the centre of the image maps to 0.5 only when normalising by img_shape (by pad_shape it would be 0.446)
    centre = prompts_to_model([[75.0, 50.0]], None, meta)[0]
    assert centre[0] == pytest.approx(0.5, abs=1e-6) and centre[1] == pytest.approx(0.5, abs=1e-3)


def test_prompt_order_points_then_boxes():
    meta = ImageMeta((100, 100), (100, 100), (128, 128), (1.0, 1.0))
    out = prompts_to_model([[10, 10]], [[50, 50, 90, 90]], meta)
    only_box = prompts_to_model(None, [[50, 50, 90, 90]], meta)
    only_pt = prompts_to_model([10, 10], [], meta)
    np.testing.assert_array_equal(out, np.concatenate([only_pt, only_box]))


def test_prompt_errors_and_clipping(capsys):
    meta = ImageMeta((100, 150), (133, 200), (160, 224), (1.33, 200 / 150.0))
    with pytest.raises(UserError, match="no prompt"):
        prompts_to_model(None, None, meta)
    with pytest.raises(UserError, match="no prompt"):
        prompts_to_model([], np.zeros((0, 4)), meta)
    with pytest.raises(UserError, match=r"point \(150, 20\) is outside the image \(150 x 100 pixels\)"):
        prompts_to_model([[150, 20]], None, meta)
    with pytest.raises(UserError, match=r"point \(-1, 5\)"):
        prompts_to_model([[-1, 5]], None, meta)
    with pytest.raises(UserError, match=r"box \(10, 10, 5, 20\) is empty or inverted"):
        prompts_to_model(None, [[10, 10, 5, 20]], meta)
    with pytest.raises(UserError, match=r"box \(10, 10, 20, 10\)"):
        prompts_to_model(None, [[10, 10, 20, 10]], meta)
    with pytest.raises(UserError, match=r"box \(160, 10, 200, 20\) is entirely outside the image \(150 x 100"):
        prompts_to_model(None, [[160, 10, 200, 20]], meta)
    with pytest.raises(UserError, match="4 numbers"):
        prompts_to_model(None, [[1, 2, 3]], meta)
    with pytest.raises(UserError, match="NaN"):
        prompts_to_model([[np.nan, 3]], None, meta)
    capsys.readouterr()
    out = prompts_to_model(None, [[-10, 20, 50, 130], [10, 10, 20, 20]], meta)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: 1 box(es)") and "(0, 20, 50, 100)" in err
    np.testing.assert_allclose(denormalize_boxes(out[:1], meta), [[0, 20, 50, 100]], atol=1e-3)


def test_with_input_size_copies_the_spec():
    spec = ModelSpec("r18", input_size=512, class_embed=np.ones((2, 1, 768), np.float32))
    other = spec.with_input_size(320)
    assert other.input_size == 320 and spec.input_size == 512  # the shared spec is not changed
    assert other.class_names == spec.class_names and other.variant == "r18"
