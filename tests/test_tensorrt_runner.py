"""runner.py + backend.py with the fake TensorRT + pycuda: the data path (page-locked buffers, device buffers,
one stream, async copies, execute_async_v3), buffer sizing and reuse, the features short-cut, prompt chunks,
profile errors, and the loader / Predictor on top.

The fake execution context runs each engine's ONNX graph with ONNX Runtime, so equality with ONNX Runtime
below checks that the right bytes reach the right buffers with the right shapes (not TensorRT numerics;
those need a GPU, see test_tensorrt_gpu.py)."""
import json
import os
import sys

import numpy as np
import onnxruntime as ort
import pytest

from fakes_tensorrt import FakeGPU, bundle, tiny_bundle  # noqa: F401 (fixtures)
from rmpsam_edge.errors import UserError
from rmpsam_edge.runtime import load, load_runner
from rmpsam_edge.runtime import tensorrt as trt_pkg
from rmpsam_edge.runtime.bundle_runner import BackendUnavailable
from rmpsam_edge.runtime.tensorrt import buffers, profiles, runner

RANGES = profiles.make_ranges((64, 64), prompts=(1, 1, 8), classes=(1, 5, 8), protos=(1, 2, 2))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = os.path.join(ROOT, "rmpsam_edge", "assets", "images", "chelsea.jpg")


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
        assert r.describe() == "tensorrt 10.3.0, Orin (sm 8.7), fp32"
        # buffers: allocated once at the profile MAX shapes, page-locked host + device; ONE features buffer for all
        allocs = [c[1] for c in fake.calls if c[0] == "mem_alloc"]
        pinned = [c[1] for c in fake.calls if c[0] == "pagelocked_empty"]
        f_max = 4 * 256 * 16 * 16
        buffers = [f_max, 4 * 3 * 64 * 64,                                            # features, encoder image
                   4 * 8 * 4, 4 * 8 * 16 * 16, 4 * 8,                                 # prompt decoder: Np 1..8
                   4 * 8 * 2 * 768, 4 * 100 * 9, 4 * 100 * 16 * 16, 4 * 100 * 256,   # object decoder
                   4 * 48 * 4, 4 * 48 * 16 * 16, 4 * 48]                              # many-prompt graph: Np 48
        assert allocs[:-1] == buffers
        assert [p[0] for p in pinned] == buffers
        # one activation area, the largest engine's, given to every execution context (made without their own)
        given = [c[1:] for c in fake.calls if c[0] == "device_memory"]
        engines = [g.engine for g in r._mem.graphs.values()]
        assert len(given) == len(engines) == 4 and len(set(given)) == 1
        assert given[0][1] == allocs[-1] == max(e.device_memory_size_v2 for e in engines)
        assert {c[1] for c in fake.calls if c[0] == "create_execution_context"} == {"USER_MANAGED"}
        n_alloc = len(allocs)
        # its own device memory, from the shapes above: the buffers plus the one shared activation area
        assert r.gpu_memory_mb() == (sum(buffers) + given[0][1]) / 1048576.0

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
        # other shapes inside the profile: same buffers, same one stream
        small = rng.standard_normal((1, 3, 32, 64)).astype(np.float32)
        f2 = r.encode(small)
        np.testing.assert_array_equal(f2, ort_run(bundle, "encoder", {"image": small})[0])
        m2, _ = r.decode_prompts(f2, boxes[:1])
        np.testing.assert_array_equal(m2, ort_run(bundle, "prompt_decoder", {"features": f2, "boxes": boxes[:1]})[0])
        c2, o2, _ = r.decode_objects(f2, vocab[:2, :1])
        np.testing.assert_array_equal(c2, ort_run(bundle, "object_decoder",
                                                  {"features": f2, "class_embed": vocab[:2, :1]})[0])
        assert m2.shape == (1, 8, 16) and o2.shape == (1, 100, 8, 16) and c2.shape == (1, 100, 3)
        assert len([c for c in fake.calls if c[0] == "mem_alloc"]) == n_alloc
        assert fake.names().count("Stream") == 1
        # every execute is followed by a stream sync before results are read (the fake runs queued work only then)
        names = fake.names()
        assert all("synchronize" in names[i:] for i, n in enumerate(names) if n == "execute_async_v3")
    assert fake.leftover() == [] and not fake.live_contexts and fake.memory == {}  # deactivate freed every buffer and popped the context
    assert r.gpu_memory_mb() is None
    assert fake.names()[-1] == "ctx.detach"  # detached while current: destroyed and popped by pycuda


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
        other = feats[:, :, ::-1].copy()
        m2, _ = r.decode_prompts(other, boxes)  # other features (could be modified): uploaded
        assert sorted(c[2] for c in fake.calls if c[0] == "memcpy_htod_async") == [32, 4 * 256 * 16 * 16]
        np.testing.assert_array_equal(m2, ort_run(bundle, "prompt_decoder", {"features": other, "boxes": boxes})[0])
        # the one shared features buffer now holds `other`: the encoder's features go up again, not reused stale
        del fake.calls[:]
        m3, _ = r.decode_prompts(feats, boxes)
        assert sorted(c[2] for c in fake.calls if c[0] == "memcpy_htod_async") == [32, 4 * 256 * 16 * 16]
        np.testing.assert_array_equal(m1, m3)
        assert r._mem.graphs["prompt_decoder"].device_mem["features"] is r._mem.graphs["encoder"].device_mem["features"]
        with pytest.raises(ValueError):
            feats += 1  # the encoder's output is read-only, so the device copy cannot go stale


def test_prompts_beyond_a_profile_run_in_exact_chunks(bundle, monkeypatch):
    fake = FakeGPU("10.3.0").install(monkeypatch)
    rng = np.random.default_rng(2)
    with trt_pkg.create_runner(bundle, precision="fp32", ranges=RANGES) as r:
        feats = r.encode(rng.standard_normal((1, 3, 64, 64)).astype(np.float32))
        boxes = rng.uniform(0.2, 0.8, (50, 4)).astype(np.float32)
        # 9 > 8: 8 + 1 on prompt_decoder; 50 >= 48: 48 on the many-prompt graph + 2 on prompt_decoder. Each chunk
        # must equal the graph that ran it on exactly those prompts (the two graphs are different graphs: their
        # float results differ by what the CPU's kernels make of them, so they are not compared with each other)
        for n, chunks in ((9, (("prompt_decoder", 0, 8), ("prompt_decoder", 8, 9))),
                          (50, (("prompt_decoder_many", 0, 48), ("prompt_decoder", 48, 50)))):
            del fake.calls[:]
            masks, iou = r.decode_prompts(feats, boxes[:n])
            assert fake.names().count("execute_async_v3") == len(chunks)
            assert masks.shape == (n, 16, 16) and iou.shape == (n, 1)
            for graph, a, b in chunks:
                ref = ort_run(bundle, graph, {"features": feats, "boxes": boxes[a:b]})
                np.testing.assert_array_equal(masks[a:b], ref[0])
                np.testing.assert_array_equal(iou[a:b], ref[1])


def test_image_outside_the_profile_gives_a_clear_line(bundle, monkeypatch):
    FakeGPU("10.3.0").install(monkeypatch)
    with trt_pkg.create_runner(bundle, precision="fp32", ranges=RANGES) as r:
        with pytest.raises(UserError) as err:
            r.encode(np.zeros((1, 3, 96, 64), np.float32))
        assert str(err.value) == (
            "encoder input 'image' has shape [1, 3, 96, 64], outside the engine's optimisation profile "
            "(min [1, 3, 32, 32], max [1, 3, 64, 64]); rebuild with `rmpsam-edge build-engine --model %s` and a "
            "larger --max-size" % bundle)
        feats = r.encode(np.zeros((1, 3, 64, 64), np.float32))
        with pytest.raises(UserError, match=r"object_decoder input 'class_embed' has shape \[9, 2, 768\], outside "
                                            r"the engine's optimisation profile \(min \[1, 1, 768\], max \[8, 2, 768\]\)"):
            r.decode_objects(feats, np.zeros((9, 2, 768), np.float32))


def test_dla_encoder_takes_any_frame_padded_to_its_one_size(bundle, monkeypatch):
    """A DLA engine runs only the size it was built for (min = opt = max): a 16:9 frame (64x96 after the /32
    padding) goes in zero-padded to it, the decoders read the full features and their masks come back cropped,
    as for a static bundle. (TensorRT 8.6: weak typing, so the fake runs the bundle's FP32 graphs and the results
    equal ONNX Runtime's; on 10.x the decoders would be the typed FP16 graphs.)"""
    fake = FakeGPU("8.6.1", dla_cores=2).install(monkeypatch)
    rng = np.random.default_rng(5)
    ranges = profiles.make_ranges((96, 96), prompts=(1, 1, 8), classes=(1, 5, 8), protos=(1, 2, 2))
    frame = rng.standard_normal((1, 3, 64, 96)).astype(np.float32)
    boxes = rng.uniform(0.2, 0.8, (2, 4)).astype(np.float32)
    with trt_pkg.create_runner(bundle, precision="fp16", ranges=ranges, dla_core=0) as r:
        assert "DLA 0" in r.describe() and fake.builds[0]["device"] == "DLA"
        feats = r.encode(frame)
        padded = np.zeros((1, 3, 96, 96), np.float32)
        padded[:, :, :64, :96] = frame
        full = ort_run(bundle, "encoder", {"image": padded})[0]
        np.testing.assert_array_equal(feats, full[:, :, :16, :24])
        masks, iou = r.decode_prompts(feats, boxes)
        ref = ort_run(bundle, "prompt_decoder", {"features": full, "boxes": boxes})
        np.testing.assert_array_equal(masks, ref[0][:, :16, :24])
        np.testing.assert_array_equal(iou, ref[1])
        with pytest.raises(UserError, match=r"input 96x128 is larger than the 96x96 the encoder engine runs \(DLA "
                                            r"runs one size\); use an input size <= 96 or rebuild"):
            r.encode(rng.standard_normal((1, 3, 128, 96)).astype(np.float32))


def test_no_build_mode_fails_with_what_differs(bundle, monkeypatch):
    fake = FakeGPU("10.3.0").install(monkeypatch)
    r = trt_pkg.create_runner(bundle, precision="fp16", build=False, ranges=RANGES)
    with pytest.raises(UserError, match="the encoder engine cannot be used: no engine built yet; build it with"):
        r.activate()
    assert fake.leftover() == [] and not fake.live_contexts and not r.active
    with trt_pkg.create_runner(bundle, precision="fp16", ranges=RANGES):
        pass
    assert sorted(f for f in os.listdir(os.path.join(bundle, "tensorrt")) if f.endswith(".engine")) == [
        "encoder.fp16.engine", "object_decoder.fp16.engine", "prompt_decoder.fp16.engine",
        "prompt_decoder_many.fp16.engine"]
    with trt_pkg.create_runner(bundle, "fp16", build=False) as r:  # ranges: the stored ones, nothing rebuilt
        assert r.choices.precision == "fp16" and r.choices.ranges["H"] == (32, 64, 64)
    assert fake.names().count("build_serialized_network") == 4


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
    plan = buffers.plan_buffers(Compat(), None, Ctx())
    assert plan == {"boxes": (np.float32, (64, 4), ((1, 4), (2, 4), (64, 4))), "out": (np.float16, (64, 4, 8), None)}


# ------------------------------------------------------------------------------ loader / Predictor
def test_predictor_on_tensorrt_gives_the_onnxruntime_results(bundle, monkeypatch):
    """`load(bundle, backend="tensorrt")`: same Predictor API and outputs as the ONNX Runtime backend."""
    FakeGPU("10.3.0").install(monkeypatch)
    p_trt = load(bundle, backend="tensorrt", verbose=False)
    p_ort = load(bundle, backend="onnxruntime", verbose=False)
    points, boxes = [[225, 150], [60, 40]], [[100, 50, 350, 280]]
    outs = []
    for p in (p_trt, p_ort):
        p.set_image(IMAGE)
        masks, scores = p.predict(points=points, boxes=boxes)
        outs.append((masks, scores, p.object_outputs()))
    assert outs[0][0].shape == (3, 300, 451) and np.array_equal(outs[0][0], outs[1][0])
    np.testing.assert_allclose(outs[0][1], outs[1][1], rtol=1e-5)
    for a, b in zip(outs[0][2], outs[1][2]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    p_trt.runner.deactivate()


@pytest.mark.parametrize("version", ["8.5.2", "10.3.0"])
def test_encoder_on_tensorrt_decoders_on_onnxruntime_builds_only_the_encoder(bundle, monkeypatch, version):
    """A per-graph placement: TensorRT builds and runs only the graphs placed on it (8.5 cannot even import the
    decoders' LayerNormalization), the decoders run on ONNX Runtime, results equal the all-ONNX Runtime run."""
    fake = FakeGPU(version).install(monkeypatch)
    placed = load(bundle, backend="encoder=tensorrt,prompt_decoder=onnxruntime,object_decoder=onnxruntime",
                  verbose=False)
    assert [b["profile"].keys() for b in fake.builds] == [{"image": 0}.keys()]  # one build: the encoder
    assert [f for f in os.listdir(os.path.join(bundle, "tensorrt")) if f.endswith(".engine")] == ["encoder.fp32.engine"]
    assert placed.runner.placement["encoder"] == "tensorrt" and placed.runner.runners["tensorrt"].name == "tensorrt"
    outs = []
    for p in (placed, load(bundle, backend="onnxruntime", verbose=False)):
        p.set_image(IMAGE)
        outs.append(p.predict(boxes=[[100, 50, 350, 280]]) + tuple(p.object_outputs()))
    assert any(c[0] == "execute_async_v3" for c in fake.calls)
    for a, b in zip(outs[0], outs[1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    placed.runner.deactivate()
    assert fake.leftover() == [] and not fake.live_contexts


def test_auto_prefers_tensorrt_and_falls_back(bundle, monkeypatch, capsys):
    fake = FakeGPU("10.3.0", gpu="NVIDIA GeForce RTX 4090", cc=(8, 9)).install(monkeypatch)
    # no engine yet: auto never builds (minutes on a Jetson); it moves on, naming the build-engine command
    r, _, line = load_runner(bundle, "auto", verbose=False)
    assert r.name != "tensorrt" and "rmpsam-edge build-engine --model" in line and "--precision fp32" in line
    assert not os.path.isdir(os.path.join(bundle, "tensorrt")) or not os.listdir(os.path.join(bundle, "tensorrt"))
    r.deactivate()
    r, _, line = load_runner(bundle, "tensorrt", verbose=False)  # explicit: builds once
    r.deactivate()
    r, _, line = load_runner(bundle, "auto")  # now cached: auto takes TensorRT
    assert r.name == "tensorrt" and line.startswith("tensorrt 10.3.0, NVIDIA GeForce RTX 4090 (sm 8.9), fp32 (auto")
    r.deactivate()
    # an engine that cannot be built here: auto moves on with the reason, an explicit request says it in one line
    fake.fail_build = "[optimizer] no implementation for /deform.0/GridSample"
    for f in os.listdir(os.path.join(bundle, "tensorrt")):
        os.remove(os.path.join(bundle, "tensorrt", f))
    r, _, line = load_runner(bundle, "auto", verbose=False)
    assert r.name != "tensorrt" and "build-engine" in line
    with pytest.raises(UserError, match=r"backend tensorrt cannot run here: TensorRT could not prepare the encoder "
                                        r"engine: TensorRT could not build the encoder engine: \[optimizer\]"):
        load_runner(bundle, "tensorrt", verbose=False)
    assert fake.leftover() == [] and not fake.live_contexts
    # used directly (not through the loader) the same failure is a one-line UserError
    with pytest.raises(UserError):
        trt_pkg.create_runner(bundle).activate()
    assert issubclass(runner.EngineUnavailable, BackendUnavailable)


def test_loader_devices_missing_packages_and_bad_bundles(bundle, monkeypatch):
    FakeGPU("10.3.0").install(monkeypatch)
    with pytest.raises(UserError, match="backend tensorrt cannot run here: no CUDA GPU 3 found"):
        load_runner(bundle, "tensorrt", device="cuda:3", verbose=False)
    # a tampered graph is a bundle problem (UserError), never hidden behind a fallback
    mpath = os.path.join(bundle, "manifest.json")
    with open(mpath) as f:
        manifest = json.load(f)
    manifest["graphs"]["prompt_decoder"]["sha256"] = "0" * 64
    with open(mpath, "w") as f:
        json.dump(manifest, f)
    with pytest.raises(UserError, match="does not match its sha256"):
        load_runner(bundle, "auto", verbose=False)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(UserError, match="backend tensorrt cannot run here: pycuda not installed"):
        load_runner(bundle, "tensorrt", verbose=False)
