"""build.py + profiles.py + calibrator.py against the fake TensorRT: profiles, workspace, timing cache,
parser errors, build failures, DLA, INT8 calibration and its cache."""
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from _bundle_fixture import shared_bundle
from fakes_tensorrt import FakeGPU
from rmpsam_edge.errors import UserError
from rmpsam_edge.runtime.tensorrt import build, calibrator, compat, profiles


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    return shared_bundle(tmp_path_factory)


RANGES = profiles.make_ranges((128, 128), (64, 96), None, prompts=(1, 2, 8), classes=(1, 5, 10), protos=(1, 2, 3))


def _shapes(fake):
    return {c[1]: c[2:] for c in fake.calls if c[0] == "set_shape"}


def test_profiles_of_the_three_graphs(tiny_bundle):
    fake = FakeGPU("10.3.0")
    c = compat.Compat(fake.trt)
    for graph in ("encoder", "prompt_decoder", "prompt_decoder_many", "object_decoder"):
        res = build.build_engine(c, graph, os.path.join(tiny_bundle, graph + ".onnx"),
                                 build.BuildSettings("fp32", RANGES), print)
        assert res.data.startswith(b"FAKE-TRT-PLAN") and fake.builds[-1]["profile"]
    s = _shapes(fake)
    assert s["image"] == ((1, 3, 32, 32), (1, 3, 64, 96), (1, 3, 128, 128))
    assert s["features"] == ((1, 256, 8, 8), (1, 256, 16, 24), (1, 256, 32, 32))
    assert s["boxes"] == ((1, 4), (2, 4), (8, 4))
    assert s["class_embed"] == ((1, 1, 768), (5, 2, 768), (10, 3, 768))
    assert [c[2] for c in fake.calls if c[0] == "set_memory_pool_limit"] == [2 << 30] * 4


def test_timing_cache_is_reused_across_builds(tiny_bundle, tmp_path):
    fake = FakeGPU("8.6.1")
    c = compat.Compat(fake.trt)
    path = str(tmp_path / "timing.cache")
    st = build.BuildSettings("fp16", RANGES, workspace_bytes=1 << 30, timing_cache=path)
    build.build_engine(c, "encoder", os.path.join(tiny_bundle, "encoder.onnx"), st, print)
    build.build_engine(c, "prompt_decoder", os.path.join(tiny_bundle, "prompt_decoder.onnx"), st, print)
    assert [c[1] for c in fake.calls if c[0] == "create_timing_cache"] == [b"", b"+"]
    with open(path, "rb") as f:
        assert f.read() == b"++"
    assert ("create_network", 1) in fake.calls  # 8.6: explicit batch flag


@pytest.mark.parametrize("version", ["10.3.0", "8.6.1"])
def test_parser_errors_name_the_failing_node(tiny_bundle, version):
    """10.x reports node_name()/node_operator(); 8.6 only node(): the name comes from the ONNX file."""
    path = os.path.join(tiny_bundle, "encoder.onnx")
    nodes = onnx.load(path, load_external_data=False).graph.node
    index = [n.op_type for n in nodes].index("GridSample")
    fake = FakeGPU(version)
    fake.unsupported_ops = {"GridSample"}
    with pytest.raises(UserError) as err:
        build.build_engine(compat.Compat(fake.trt), "encoder", path, build.BuildSettings("fp16", RANGES), print)
    assert str(err.value) == ("TensorRT cannot parse encoder.onnx: node %d '/deform.0/GridSample' (GridSample): "
                              "No importer registered for op: GridSample (+2 more errors)" % index)


def test_build_failure_is_one_line_with_tensorrt_reason(tiny_bundle):
    fake = FakeGPU("10.3.0")
    fake.fail_build = "[optimizer] Could not find any implementation for node /MatMul_1"
    with pytest.raises(UserError, match=r"^TensorRT could not build the prompt_decoder engine: \[optimizer\] "
                                        r"Could not find any implementation for node /MatMul_1$"):
        build.build_engine(compat.Compat(fake.trt), "prompt_decoder", os.path.join(tiny_bundle, "prompt_decoder.onnx"),
                                          build.BuildSettings("fp16", RANGES), print)
    with pytest.raises(UserError, match="prompt_decoder graph .*missing.onnx not found"):
        build.build_engine(compat.Compat(fake.trt), "prompt_decoder", os.path.join(tiny_bundle, "missing.onnx"),
                                          build.BuildSettings("fp16", RANGES), print)


def test_unknown_dynamic_axis_is_named(tmp_path):
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "H", "W"])
    m = helper.make_tensor_value_info("mystery", TensorProto.FLOAT, ["T", 2])
    y = helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 3, "H", "W"])
    g = helper.make_graph([helper.make_node("Identity", ["image"], ["features"], name="id")], "g", [x, m], [y])
    path = str(tmp_path / "encoder.onnx")
    onnx.save(helper.make_model(g), path)
    fake = FakeGPU("10.3.0")
    with pytest.raises(UserError, match=r"encoder input 'mystery' \[-1, 2\]: axis 0 is dynamic and is an axis the "
                                        r"builder has no size for"):
        build.build_engine(compat.Compat(fake.trt), "encoder", path, build.BuildSettings("fp32", RANGES), print)


def test_profile_helpers():
    with pytest.raises(UserError, match=r"prompts \(--max-prompts\) must satisfy 1 <= min <= opt <= max, got 1 / 9 / 8"):
        profiles.make_ranges((64, 64), prompts=(1, 9, 8))
    # (1, Np, 4) matches the (Np, 4) row from the right; static axes keep their value
    assert profiles.input_profile("g", "boxes", (1, -1, 4), RANGES) == ((1, 1, 4), (1, 2, 4), (1, 8, 4))
    with pytest.raises(UserError, match=r"outside the engine's optimisation profile \(min \[1, 4\], max \[8, 4\]\); rebuild"):
        profiles.check_within("prompt_decoder", "boxes", (9, 4), ((1, 4), (2, 4), (8, 4)), "; rebuild")
    profiles.check_within("prompt_decoder", "boxes", (8, 4), ((1, 4), (2, 4), (8, 4)))


def test_dla_build_is_static_with_gpu_fallback(tiny_bundle):
    fake = FakeGPU("8.6.1", dla_cores=2)
    st = build.BuildSettings("fp16", RANGES, dla_core=1)
    lines = []
    build.build_engine(compat.Compat(fake.trt), "encoder", os.path.join(tiny_bundle, "encoder.onnx"), st, lines.append)
    rec = fake.builds[-1]
    assert rec["device"] == "DLA" and rec["dla_core"] == 1 and set(rec["flags"]) == {"FP16", "GPU_FALLBACK"}
    assert _shapes(fake)["image"] == ((1, 3, 64, 96),) * 3  # DLA has no dynamic shapes: min = opt = max
    # one line names the layers the builder leaves on the GPU: the deformable neck's GridSample among them
    types = [l.type.name for l in onnx_layers(fake, os.path.join(tiny_bundle, "encoder.onnx"))]
    gpu = [t for t in types if t not in ("CONVOLUTION", "ACTIVATION", "ELEMENTWISE", "CONCATENATION", "RESIZE",
                                         "SHUFFLE", "SLICE", "SOFTMAX", "REDUCE", "UNARY")]
    dla_line, = [l for l in lines if "DLA core 1" in l]
    assert dla_line.startswith("encoder: DLA core 1 runs %d of %d layers; on the GPU" % (len(types) - len(gpu), len(types)))
    assert "GRID_SAMPLE x%d" % types.count("GRID_SAMPLE") in dla_line and types.count("GRID_SAMPLE") >= 1
    fake0 = FakeGPU("10.3.0", dla_cores=0)  # Orin Nano / Orin Nano Super, desktop GPUs
    with pytest.raises(UserError, match="this GPU has no DLA .*Orin Nano, Orin Nano Super and desktop GPUs do not"):
        build.build_engine(compat.Compat(fake0.trt), "encoder", os.path.join(tiny_bundle, "encoder.onnx"), st, print)


def onnx_layers(fake, path):
    """The layers the fake parser makes of an ONNX file (one per node, as the build saw them)."""
    logger = fake.trt.Logger()
    network = fake.trt.Builder(logger).create_network(1)
    fake.trt.OnnxParser(network, logger).parse_from_file(path)
    return network.layers


def _frames(n, hw=(64, 96), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, 3) + hw).astype(np.float32) for _ in range(n)]


def test_int8_calibration_feeds_the_images_and_reuses_its_cache(tiny_bundle, tmp_path):
    fake = FakeGPU("10.3.0")
    c = compat.Compat(fake.trt)
    cache_file = str(tmp_path / "calib-x.cache")
    enc = os.path.join(tiny_bundle, "encoder.onnx")
    frames = _frames(5)
    fake.cuda.Device(0).make_context()  # the CLI / runner make the current CUDA context
    cal = calibrator.make_calibrator(fake.trt, fake.cuda, iter(frames), (1, 3, 64, 96), cache_file, limit=4)
    build.build_engine(c, "encoder", enc, build.BuildSettings("int8", RANGES, calibrator=cal), print)
    rec = fake.builds[-1]
    assert set(rec["flags"]) == {"FP16", "INT8"} and rec["calibrated"] == 4 and cal.used == 4
    assert all(np.array_equal(a, b) for a, b in zip(fake.calib_images, frames[:4]))  # bytes went to the device
    assert _shapes(fake)["image"][1] == (1, 3, 64, 96)
    with open(cache_file, "rb") as f:
        assert f.read() == b"TRT-fake-EntropyCalibration2 n=4"
    # the second build reads the cache: no image is fed
    cal2 = calibrator.make_calibrator(fake.trt, fake.cuda, iter(_frames(5)), (1, 3, 64, 96), cache_file)
    build.build_engine(c, "encoder", enc, build.BuildSettings("int8", RANGES, calibrator=cal2), print)
    assert cal2.used == 0 and cal2.cache_read and fake.builds[-1]["calibrated"] == 0


def test_int8_calibration_errors(tiny_bundle, tmp_path):
    fake = FakeGPU("10.3.0")
    fake.cuda.Device(0).make_context()
    c = compat.Compat(fake.trt)
    enc = os.path.join(tiny_bundle, "encoder.onnx")
    wrong = calibrator.make_calibrator(fake.trt, fake.cuda, iter(_frames(2, (64, 64))), (1, 3, 64, 96),
                                       str(tmp_path / "a.cache"))
    with pytest.raises(UserError, match=r"calibration image 0 has shape \[1, 3, 64, 64\], expected \[1, 3, 64, 96\]"):
        build.build_engine(c, "encoder", enc, build.BuildSettings("int8", RANGES, calibrator=wrong), print)
    empty = calibrator.make_calibrator(fake.trt, fake.cuda, iter([]), (1, 3, 64, 96), str(tmp_path / "b.cache"))
    with pytest.raises(UserError, match="INT8 calibration saw no images"):
        build.build_engine(c, "encoder", enc, build.BuildSettings("int8", RANGES, calibrator=empty), print)
    fake11 = FakeGPU("11.0.0")
    with pytest.raises(UserError, match="strongly typed"):
        build.build_engine(compat.Compat(fake11.trt), "encoder", enc, build.BuildSettings("int8", RANGES), print)


def test_calibration_files_fingerprint_and_letterbox(tmp_path):
    import cv2
    for i in range(3):
        cv2.imwrite(str(tmp_path / ("f%d.png" % i)), np.full((40, 80, 3), 50 * i, np.uint8))
    (tmp_path / "notes.txt").write_text("x")
    files = calibrator.list_calibration_files(str(tmp_path))
    assert [os.path.basename(f) for f in files] == ["f0.png", "f1.png", "f2.png"]
    assert calibrator.list_calibration_files(str(tmp_path / "f[12].png")) == files[1:]
    fp = calibrator.data_fingerprint(files, 3, (1, 3, 64, 96))
    assert fp != calibrator.data_fingerprint(files, 2, (1, 3, 64, 96))
    cv2.imwrite(files[2], np.full((40, 80, 3), 7, np.uint8))
    assert fp != calibrator.data_fingerprint(files, 3, (1, 3, 64, 96))
    p1, k1 = calibrator.cache_path("d", "g" * 64, fp)
    p2, k2 = calibrator.cache_path("d", "h" * 64, fp)  # new graph -> new cache file
    assert p1 != p2 and p1 == os.path.join("d", "calib-%s.cache" % k1[:16])
    imgs = list(calibrator.images_from_paths(files, (64, 96), (0, 0, 0), (1, 1, 1), count=2))
    assert len(imgs) == 2 and imgs[1].shape == (1, 3, 64, 96)
    # 40x80 -> scale 1.2 -> 48x96 at the top-left, zeros below
    assert np.all(imgs[1][0, :, :48, :] == 50) and np.all(imgs[1][0, :, 48:, :] == 0)
    with pytest.raises(UserError, match="no images found"):
        calibrator.list_calibration_files(str(tmp_path / "*.jpg"))
    with pytest.raises(UserError, match="no such folder"):
        calibrator.list_calibration_files(str(tmp_path / "nope"))
