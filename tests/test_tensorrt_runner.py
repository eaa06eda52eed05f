"""runner.py with the fake TensorRT + pycuda: the data path (page-locked buffers, device buffers, one stream,
async copies, execute_async_v3), profile errors, buffer sizing and reuse, the features short-cut.

The fake execution context runs each engine's ONNX graph with ONNX Runtime, so equality with ONNX Runtime
below checks that the right bytes reach the right buffers with the right shapes (not TensorRT numerics;
those need a GPU, see test_tensorrt_gpu.py)."""
import os
import shutil

import numpy as np
import onnxruntime as ort
import pytest

from fakes_tensorrt import FakeGPU, export_tiny_bundle
from rmpsam_edge.errors import UserError
from rmpsam_edge.runtime import tensorrt as trt_pkg
from rmpsam_edge.runtime.tensorrt import profiles, runner

RANGES = profiles.make_ranges((64, 64), prompts=(1, 1, 8), classes=(1, 5, 8), protos=(1, 2, 2))


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    return export_tiny_bundle(tmp_path_factory.getbasetemp() / "tiny_bundle")


@pytest.fixture
def bundle(tmp_path, tiny_bundle):
    d = tmp_path / "r18"
    d.mkdir()
    for name in ("encoder.onnx", "prompt_decoder.onnx", "object_decoder.onnx"):
        os.symlink(os.path.join(tiny_bundle, name), str(d / name))
    shutil.copy(os.path.join(tiny_bundle, "manifest.json"), str(d / "manifest.json"))
    return str(d)


def ort_run(bundle, graph, feeds):
    s = ort.InferenceSession(os.path.join(bundle, graph + ".onnx"), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def test_runner_matches_onnxruntime_and_reuses_buffers(bundle, monkeypatch):
    fake = FakeGPU("10.3.0").install(monkeypatch)
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    boxes = rng.uniform(0.2, 0.8, (3, 4)).astype(np.float32)
    vocab = rng.standard_normal((5, 2, 768)).astype(np.float32)
    with trt_pkg.create_runner(bundle, precision="fp32", ranges=RANGES) as r:
        assert r.describe() == "tensorrt 10.3.0 fp32 on Orin (sm 8.7)"
        feats = r.encode(image)
        np.testing.assert_array_equal(feats, ort_run(bundle, "encoder", {"image": image})[0])
        assert feats.shape == (1, 256, 16, 16) and not feats.flags.writeable
        masks, iou = r.decode_prompts(feats, boxes)
        ref = ort_run(bundle, "prompt_decoder", {"features": feats, "boxes": boxes})
        np.testing.assert_array_equal(masks, ref[0])
        np.testing.assert_array_equal(iou, ref[1])
        cls, omasks, query = r.decode_objects(feats, vocab)
        ref = ort_run(bundle, "object_decoder", {"features": feats, "class_embed": vocab})
        assert cls.shape == (1, 100, 6) and omasks.shape == (1, 100, 16, 16)
        for a, b in zip((cls, omasks, query), ref):
            np.testing.assert_array_equal(a, b)

        # buffers: allocated once per graph at the profile MAX shapes, page-locked host + device
        allocs = [c[1] for c in fake.calls if c[0] == "mem_alloc"]
        pinned = [c[1] for c in fake.calls if c[0] == "pagelocked_empty"]
        assert allocs == [4 * 3 * 64 * 64, 4 * 256 * 16 * 16,                        # encoder
                          4 * 256 * 16 * 16, 4 * 8 * 4, 4 * 8 * 16 * 16, 4 * 8,     # prompt decoder (Np max 8)
                          4 * 256 * 16 * 16, 4 * 8 * 2 * 768, 4 * 9 * 100, 4 * 100 * 16 * 16, 4 * 100 * 256]
        assert [p[0] * 4 for p in pinned] == allocs
        # a smaller image and fewer prompts inside the profile: no new buffer, same one stream
        n_alloc = len(allocs)
        small = rng.standard_normal((1, 3, 32, 64)).astype(np.float32)
        f2 = r.encode(small)
        np.testing.assert_array_equal(f2, ort_run(bundle, "encoder", {"image": small})[0])
        c2, o2, _ = r.decode_objects(f2, vocab[:2, :1])
        ref = ort_run(bundle, "object_decoder", {"features": f2, "class_embed": vocab[:2, :1]})
        np.testing.assert_array_equal(c2, ref[0])
        np.testing.assert_array_equal(o2, ref[1])
        assert o2.shape == (1, 100, 8, 16) and c2.shape == (1, 100, 3)
        m2, _ = r.decode_prompts(feats, boxes[:1])
        np.testing.assert_array_equal(m2, ort_run(bundle, "prompt_decoder", {"features": feats, "boxes": boxes[:1]})[0])
        assert m2.shape == (1, 16, 16)
        assert len([c for c in fake.calls if c[0] == "mem_alloc"]) == n_alloc
        assert fake.names().count("Stream") == 1
        # every execute is followed by a stream sync before results are read (the fake runs queued work only then)
        names = fake.names()
        assert all("synchronize" in names[i:] for i, n in enumerate(names) if n == "execute_async_v3")
    assert fake.contexts == [] and fake.memory == {}  # deactivate freed every buffer and popped the context
    assert fake.names()[-2:] == ["ctx.pop", "ctx.detach"]


def test_features_are_read_from_the_device_without_a_copy(bundle, monkeypatch):
    fake = FakeGPU("8.6.1").install(monkeypatch)
    rng = np.random.default_rng(1)
    image = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    boxes = rng.uniform(0.2, 0.8, (2, 4)).astype(np.float32)
    with trt_pkg.create_runner(bundle, precision="fp16", ranges=RANGES) as r:
        feats = r.encode(image)
        del fake.calls[:]
        m1, _ = r.decode_prompts(feats, boxes)
        copies = [c[2] for c in fake.calls if c[0] == "memcpy_htod_async"]
        assert copies == [2 * 4 * 4]  # only the boxes travel; features come from the encoder's device buffer
        del fake.calls[:]
        m2, _ = r.decode_prompts(np.array(feats), boxes)  # a copy (could be modified): uploaded
        assert sorted(c[2] for c in fake.calls if c[0] == "memcpy_htod_async") == [32, 4 * 256 * 16 * 16]
        np.testing.assert_array_equal(m1, m2)
        with pytest.raises(ValueError):
            feats += 1  # the encoder's output is read-only, so the device copy cannot go stale


def test_shapes_outside_the_profile_give_a_clear_line(bundle, monkeypatch):
    FakeGPU("10.3.0").install(monkeypatch)
    with trt_pkg.create_runner(bundle, precision="fp32", ranges=RANGES) as r:
        with pytest.raises(UserError) as err:
            r.encode(np.zeros((1, 3, 96, 64), np.float32))
        assert str(err.value) == (
            "encoder input 'image' has shape [1, 3, 96, 64], outside the engine's optimisation profile "
            "(min [1, 3, 32, 32], max [1, 3, 64, 64]); rebuild with `rmpsam-edge build-engine --model %s` and a "
            "larger --max-size / --max-prompts" % bundle)
        feats = r.encode(np.zeros((1, 3, 64, 64), np.float32))
        with pytest.raises(UserError, match=r"prompt_decoder input 'boxes' has shape \[9, 4\], outside the engine's "
                                            r"optimisation profile \(min \[1, 4\], max \[8, 4\]\)"):
            r.decode_prompts(feats, np.zeros((9, 4), np.float32))
        with pytest.raises(UserError, match="prompt_decoder needs input\\(s\\) boxes"):
            r.infer("prompt_decoder", {"features": feats})
        with pytest.raises(UserError, match="unknown graph 'decoder'"):
            r.infer("decoder", {})


def test_no_build_mode_and_lazy_engines(bundle, monkeypatch):
    fake = FakeGPU("10.3.0").install(monkeypatch)
    r = trt_pkg.create_runner(bundle, precision="fp16", build=False, ranges=RANGES)
    with r:
        with pytest.raises(UserError, match="the encoder engine cannot be used: no engine built yet; build it with"):
            r.encode(np.zeros((1, 3, 64, 64), np.float32))
    with trt_pkg.create_runner(bundle, precision="fp16", ranges=RANGES) as r:
        r.encode(np.zeros((1, 3, 64, 64), np.float32))
    # only the graph that was used got built (the decoders are built on first use)
    assert sorted(os.listdir(os.path.join(bundle, "tensorrt"))) == [
        "encoder.fp16.engine", "encoder.fp16.engine.json", "timing-trt10.3.0-orin.cache"]
    assert fake.contexts == []


def test_plan_buffers_uses_profile_max_and_output_shapes():
    class Ctx(object):
        def __init__(self):
            self.shapes = {}

        def set_input_shape(self, name, shape):
            self.shapes[name] = shape
            return True

        def get_tensor_shape(self, name):
            return (self.shapes["boxes"][0], 4, 8)

    class Compat(object):
        def io_tensors(self, engine):
            return [("boxes", True, np.dtype(np.float32)), ("out", False, np.dtype(np.float16))]

        def profile_shapes(self, engine, name):
            return ((1, 4), (2, 4), (64, 4))
    plan = runner.plan_buffers(Compat(), None, Ctx())
    assert plan == {"boxes": (np.float32, (64, 4), True), "out": (np.float16, (64, 4, 8), False)}
