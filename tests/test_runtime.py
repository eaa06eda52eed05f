"""The torch-free runtime: ONNX Runtime and OpenVINO give PyTorch's results through the same Predictor API on a
shipped real image; dynamic H/W and Np; the many-prompt graph; static bundles; auto choice, fallback and
missing-backend errors; no torch import."""
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from _bundle_fixture import IMGSZ, shared_bundle, shared_static_bundle, torch_model, vocab_embed
from rmpsam_edge.errors import UserError
from rmpsam_edge.media import asset_path
from rmpsam_edge.predictor import Predictor
from rmpsam_edge.preprocess import load_image, normalize_boxes, points_to_boxes, preprocess
from rmpsam_edge.runtime import backends, composite, load, load_runner, placement
from rmpsam_edge.runtime.bundle import Bundle
from rmpsam_edge.spec import ModelSpec

IMAGE = asset_path("images", "chelsea.jpg")  # 451x300 real photo
BACKENDS = ("onnxruntime", "openvino")


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    return shared_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def torch_runner():
    from rmpsam_edge.torch_runner import TorchRunner
    return TorchRunner(torch_model())


@pytest.fixture(scope="module")
def runners(bundle):
    return {b: load_runner(bundle, b, threads=2, verbose=False)[0] for b in BACKENDS}


def features_for(shape_hw):
    """Normalised padded input for chelsea resized to fit (h, w)."""
    img = load_image(IMAGE)
    x, meta = preprocess(img, ModelSpec("r18", input_size=max(shape_hw)))
    return x, meta


def rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(b).max(), 1e-9))


@pytest.mark.parametrize("backend", BACKENDS)
def test_predictor_matches_pytorch_on_real_image(bundle, torch_runner, backend):
    """Same Predictor API, same masks and scores as the PyTorch model (points + boxes, panoptic logits)."""
    p = load(bundle, backend=backend, threads=2, verbose=False)
    ref = Predictor(torch_runner, p.spec)
    points, boxes = [[225, 150], [60, 40], [400, 260]], [[100, 50, 350, 280]]
    out = {}
    for name, pred in (("rt", p), ("torch", ref)):
        meta = pred.set_image(IMAGE)
        masks, scores = pred.predict(points=points, boxes=boxes)
        out[name] = (masks, scores, pred.object_outputs())
    assert meta.pad_shape != meta.img_shape  # 128x85 -> padded 128x96: the non-multiple-of-32 path
    masks, scores, objs = out["rt"]
    assert masks.shape == (4, 300, 451) and masks.dtype == bool
    assert np.mean(masks == out["torch"][0]) >= 0.999
    assert np.abs(scores - out["torch"][1]).max() <= 1e-4
    for got, want in zip(objs, out["torch"][2]):
        assert got.shape == want.shape and rel(got, want) <= 1e-3
    assert p.spec.class_names == ["person", "car", "tree", "sky", "road"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_dynamic_sizes_and_prompt_counts(runners, torch_runner, backend):
    r = runners[backend]
    for size in ((128, 128), (96, 64)):  # two H x W (both multiples of 32)
        x = np.random.default_rng(size[0]).standard_normal((1, 3) + size).astype(np.float32)
        f = r.encode(x)
        f_ref = torch_runner.encode(x)
        assert f.shape == (1, 256, size[0] // 4, size[1] // 4) and rel(f, f_ref) <= 1e-4
        for n in (1, 5):
            pts = np.random.default_rng(n).uniform(0, min(size), (n, 2))
            boxes = normalize_boxes(points_to_boxes(pts), size)
            m, iou = r.decode_prompts(f_ref, boxes)
            m_ref, iou_ref = torch_runner.decode_prompts(f_ref, boxes)
            assert m.shape == (n, size[0] // 4, size[1] // 4) and iou.shape == (n, 1)
            assert rel(m, m_ref) <= 1e-3 and np.abs(iou - iou_ref).max() <= 1e-4


def test_many_prompt_graph_is_used_from_the_threshold_and_agrees(bundle, runners, torch_runner):
    r = runners["onnxruntime"]
    used = []
    run = r._run

    def spy(graph, feeds):
        used.append((graph, feeds["boxes"].shape[0]) if "boxes" in feeds else graph)
        return run(graph, feeds)

    r._run = spy
    try:
        x, meta = features_for((128, 128))
        f = torch_runner.encode(x)
        start = r.bundle.many_prompts_from
        n = start + 2
        pts = np.random.default_rng(3).uniform(0, 80, (n, 2))
        boxes = normalize_boxes(points_to_boxes(pts), meta.img_shape)
        m_many, _ = r.decode_prompts(f, boxes)
        m_few, _ = r.decode_prompts(f, boxes[:3])
    finally:
        r._run = run
    assert used == [("prompt_decoder_many", n), ("prompt_decoder", 3)]
    m_ref, _ = torch_runner.decode_prompts(f, boxes)
    assert rel(m_many, m_ref) <= 1e-3 and rel(m_few, m_ref[:3]) <= 1e-3


def test_prompt_batches_beyond_the_declared_range_run_in_chunks(runners, torch_runner, monkeypatch):
    r = runners["onnxruntime"]
    monkeypatch.setitem(r.bundle.manifest["dynamic_axes"]["Np"], "max", 3)
    x, meta = features_for((128, 128))
    f = torch_runner.encode(x)
    boxes = normalize_boxes(points_to_boxes(np.random.default_rng(5).uniform(0, 80, (7, 2))), meta.img_shape)
    m, iou = r.decode_prompts(f, boxes)
    m_ref, iou_ref = torch_runner.decode_prompts(f, boxes)
    assert m.shape == (7,) + f.shape[2:] and rel(m, m_ref) <= 1e-3 and np.abs(iou - iou_ref).max() <= 1e-4


def test_zero_prompts_give_empty_outputs(runners, torch_runner):
    f = torch_runner.encode(features_for((128, 128))[0])
    m, iou = runners["onnxruntime"].decode_prompts(f, np.zeros((0, 4), np.float32))
    assert m.shape == (0, f.shape[2], f.shape[3]) and iou.shape == (0, 1)


def test_openvino_static_shape_fallback_gives_same_results(runners, torch_runner):
    """When dynamic shapes fail on a device, the graph is reshaped to the call's shapes and compiled."""
    r = runners["openvino"]
    x, _ = features_for((128, 128))
    want = r.encode(x)
    r.graphs["encoder"].dynamic = None  # as after a dynamic-shape failure
    got = r.encode(x)
    assert r.graphs["encoder"].static and rel(got, want) <= 1e-5


def test_static_bundle_pads_chunks_and_crops(tmp_path_factory, torch_runner):
    folder = shared_static_bundle(tmp_path_factory)
    b = Bundle.open(folder)
    assert b.static == {"height": 128, "width": 128, "prompts": 2, "classes": 5, "prototypes": 2}
    assert not b.has_graph("prompt_decoder_many")
    r = load_runner(folder, "onnxruntime", threads=2, verbose=False)[0]
    x, meta = features_for((128, 128))  # chelsea: 128x85 padded to 128x96 < static 128x128
    assert x.shape[2:] == (96, 128)
    f = r.encode(x)
    assert f.shape == (1, 256, 24, 32)
    full = np.zeros((1, 3, 128, 128), np.float32)
    full[:, :, :96, :128] = x
    f_full = torch_runner.encode(full)  # the static graph sees the image padded to its fixed size
    assert rel(f, f_full[:, :, :24, :32]) <= 1e-4
    boxes = normalize_boxes(points_to_boxes(np.asarray([[20, 20], [60, 40], [100, 70]])), meta.img_shape)
    m, iou = r.decode_prompts(f, boxes)  # 3 prompts -> chunks of 2
    m_ref, iou_ref = torch_runner.decode_prompts(f_full, boxes)
    assert m.shape == (3, 24, 32) and rel(m, m_ref[:, :24, :32]) <= 1e-3
    assert np.abs(iou - iou_ref).max() <= 1e-4
    cls, masks, _ = r.decode_objects(f, vocab_embed())
    assert masks.shape == (1, 100, 24, 32)
    # no hidden state links encode and decode: the features carry their full static array with them, so a
    # second image encoded in between changes nothing; a copy of the features is zero-padded instead
    r.encode(np.random.RandomState(0).rand(1, 3, 128, 128).astype(np.float32))
    m2, iou2 = r.decode_prompts(f, boxes)
    assert np.array_equal(m2, m) and np.array_equal(iou2, iou)
    m3, _ = r.decode_prompts(f.copy(), boxes)
    assert m3.shape == m.shape and not np.array_equal(m3, m)
    with pytest.raises(UserError, match="static bundle"):
        r.decode_objects(f, vocab_embed()[:3])
    with pytest.raises(UserError, match="larger than this static bundle"):
        r.encode(np.zeros((1, 3, 160, 128), np.float32))


# ---------------------------------------------------------------------------------------------- backend choice
def test_auto_prints_one_choice_line(bundle, capsys, monkeypatch, tmp_path):
    """No GPU here, both CPU backends installed: each graph on its fastest backend, timed here the first time
    (one line saying so), then from the cache; the placement follows the cached timings."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    runner, _, line = load_runner(bundle, "auto", threads=1)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("rmpsam-edge: measuring each graph on onnxruntime and openvino")
    assert "auto" in err[1] and runner.describe() in err[1] and "fastest per graph, measured here" in err[1]
    runner.deactivate()
    runner, _, line = load_runner(bundle, "auto", threads=1)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fastest per graph, from cache" in err[0] and runner.describe() in err[0]
    with open(placement.cache_path()) as f:
        (entry,) = json.load(f)["entries"].values()
    assert set(entry["ms"]) == {"encoder", "prompt_decoder", "object_decoder"}
    want = composite.plan(BACKENDS, {}, entry["ms"])
    assert getattr(runner, "placement", None) == want or set(want.values()) == {runner.name}
    runner.deactivate()


def test_auto_falls_back_with_one_line_per_failure(bundle, capsys, monkeypatch):
    broken = types.ModuleType("rmpsam_edge_test_broken_backend")

    def create(bundle, device=None, threads=None, auto=False):
        raise RuntimeError("cannot compile encoder for this device\nsecond line of detail")

    broken.create = create
    broken.probe = lambda device=None: (True, "broken 0.1")
    monkeypatch.setitem(sys.modules, broken.__name__, broken)
    row = backends.Backend("broken", (), "pip install broken", "apt install broken", broken.__name__, None)
    load_runner(bundle, "auto", threads=1, verbose=False)[0].deactivate()  # the placement measured (or cached)
    monkeypatch.setattr(backends, "BACKENDS", (row,) + backends.BACKENDS)
    runner, _, line = load_runner(bundle, "auto", threads=1)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert err[0].startswith("rmpsam-edge: broken could not load") and "cannot compile encoder" in err[0]
    assert "falling back" in err[0] and "second line" not in err[0]
    assert "broken failed" in err[1] and runner.describe() in err[1]


def test_explicit_missing_backend_names_the_package(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if openvino were not installed
    monkeypatch.delitem(sys.modules, "rmpsam_edge.runtime.openvino_backend", raising=False)
    with pytest.raises(UserError) as info:
        load(bundle, backend="openvino")
    assert "not installed" in str(info.value) and "pip install openvino" in str(info.value)


def test_auto_skips_a_missing_backend(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.delitem(sys.modules, "rmpsam_edge.runtime.onnxruntime_backend", raising=False)
    runner, _, line = load_runner(bundle, "auto", threads=1)
    assert runner.name == "openvino" and "onnxruntime not installed" in line


def test_tensorrt_row_uses_the_tensorrt_package_entry_points(bundle, monkeypatch, capsys):
    import rmpsam_edge.runtime.tensorrt as trt_backend
    from rmpsam_edge.runtime.base import Runner

    class FakeTrt(Runner):
        name = "tensorrt"

        def __init__(self, path, device, auto):
            self.path, self.device, self.auto, self.active = path, device, auto, False

        def activate(self):
            self.active = True

        def describe(self):
            return "tensorrt fake on GPU %d" % self.device

    def create(b, device=None, threads=None, auto=False, precision=None):
        runner = FakeTrt(b.path, trt_backend.gpu_index(device), auto)
        runner.activate()
        return runner

    monkeypatch.setattr(trt_backend, "probe", lambda device=None: (True, "fake GPU"))
    monkeypatch.setattr(trt_backend, "create", create)
    runner, _, line = load_runner(bundle, "auto")
    assert isinstance(runner, FakeTrt) and runner.active and runner.device == 0
    assert os.path.samefile(runner.path, bundle)
    assert runner.auto is True  # auto never builds engines (minutes on a Jetson): cached ones only
    assert line.startswith("tensorrt fake on GPU 0 (auto")
    runner = load_runner(bundle, "trt", device="cuda:1", verbose=False)[0]
    assert runner.device == 1 and runner.auto is False


def test_tensorrt_missing_here_is_explained(bundle):
    import rmpsam_edge.runtime.tensorrt as trt_backend
    ok, why = trt_backend.probe()
    if ok:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(UserError, match="tensorrt cannot run here"):
        load(bundle, backend="tensorrt")
    assert "tensorrt not installed" in load_runner(bundle, "auto", threads=1, verbose=False)[2]


def test_unknown_backend_and_unavailable_device(bundle):
    with pytest.raises(UserError, match="unknown backend"):
        load(bundle, backend="coreml")
    import onnxruntime as ort
    if "CUDAExecutionProvider" in ort.get_available_providers():  # onnxruntime-gpu: CUDA may well serve
        pytest.skip("onnxruntime here has a CUDA provider; the CPU-only refusal cannot be checked")
    with pytest.raises(UserError, match="cannot run here"):
        load(bundle, backend="onnxruntime", device="cuda")  # CPU-only onnxruntime here


def test_tampered_graph_is_refused_without_fallback(tmp_path, capsys):
    from test_bundle import make_fake_bundle
    folder = make_fake_bundle(str(tmp_path / "b"))
    with open(os.path.join(folder, "encoder.onnx"), "ab") as f:
        f.write(b"x")
    with pytest.raises(UserError, match="sha256"):
        load(folder, backend="auto")
    assert "falling back" not in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- no torch
NO_TORCH = r"""
import sys

class BlockTorch(object):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
        return None

sys.meta_path.insert(0, BlockTorch())
try:
    import torch  # noqa
    raise SystemExit("the torch block does not work")
except ImportError:
    pass
from rmpsam_edge.runtime import load
for backend in ("onnxruntime", "openvino"):
    p = load(sys.argv[1], backend=backend, threads=1)
    p.set_image(sys.argv[2])
    masks, scores = p.predict(points=[[225, 150]], boxes=[[100, 50, 350, 280]])
    assert masks.shape == (2, 300, 451), masks.shape
    pan, segments = p.panoptic(object_mask_thr=0.0)
    assert pan.shape == (300, 451)
assert not [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
print("OK without torch")
"""


def test_runtime_runs_without_torch(bundle):
    res = subprocess.run([sys.executable, "-c", NO_TORCH, bundle, IMAGE], capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "OK without torch" in res.stdout
    assert res.stderr.count("rmpsam-edge: ") == 2  # one choice line per load


# ---------------------------------------------------------------------------------------------- per-graph backends
def test_per_graph_backends_are_exact_and_overridable(bundle, runners, capsys, monkeypatch, tmp_path):
    # timings injected into the placement cache: OpenVINO fastest for the encoder, ONNX Runtime for the decoders
    fake = {"encoder": {"openvino": 1.0, "onnxruntime": 2.0}, "prompt_decoder": {"openvino": 2.0, "onnxruntime": 1.0},
            "object_decoder": {"openvino": 2.0, "onnxruntime": 1.0}}
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    placement.timings(Bundle.open(bundle), list(BACKENDS), 2, measure_fn=lambda *a: fake)
    runner, _, line = load_runner(bundle, "onnxruntime+openvino", threads=2)
    assert runner.placement == {"encoder": "openvino", "prompt_decoder": "onnxruntime",
                                "object_decoder": "onnxruntime"}
    assert "encoder on openvino" in capsys.readouterr().err and "unnamed graphs on the fastest, from cache" in line
    # each sub-runner loaded only its graphs
    assert sorted(runner.runners["openvino"].graphs) == ["encoder"]
    assert "encoder" not in runner.runners["onnxruntime"].sessions
    x, _ = features_for((96, 128))
    f = runner.encode(x)
    assert rel(f, runners["openvino"].encode(x)) <= 1e-5  # the same graph on the same backend (thread noise)
    boxes = normalize_boxes(points_to_boxes(np.array([[40.0, 30.0], [100.0, 60.0]])), (96, 128))
    for got, want in zip(runner.decode_prompts(f, boxes), runners["onnxruntime"].decode_prompts(f, boxes)):
        assert rel(got, want) <= 1e-5
    objs = runners["onnxruntime"].decode_objects(f, vocab_embed())
    for got, want in zip(runner.decode_objects(f, vocab_embed()), objs):
        assert rel(got, want) <= 1e-5
    # up to backend noise the whole pipeline matches one backend
    m_one, _ = runners["onnxruntime"].decode_prompts(runners["onnxruntime"].encode(x), boxes)
    m_two, _ = runner.decode_prompts(f, boxes)
    assert ((m_one > 0) == (m_two > 0)).mean() > 0.99
    runner.deactivate()
    r = load_runner(bundle, "encoder=onnxruntime,prompt_decoder=openvino", threads=2, verbose=False)[0]
    assert r.placement == {"encoder": "onnxruntime", "prompt_decoder": "openvino", "object_decoder": "onnxruntime"}
    r = load_runner(bundle, "auto", threads=2, verbose=False, graphs={"object_decoder": "ov"})[0]
    assert r.name == "openvino"  # graphs not named run on the fastest of the named backends: here the only one
    with pytest.raises(UserError, match="unknown graph"):
        load_runner(bundle, "decoder=openvino", verbose=False)
    with pytest.raises(UserError, match="unknown backend"):
        load_runner(bundle, "encoder=coreml", verbose=False)


def test_per_graph_needs_a_dynamic_bundle(tmp_path_factory):
    static = shared_static_bundle(tmp_path_factory)
    with pytest.raises(UserError, match="per-graph backends need a dynamic bundle"):
        load_runner(static, "onnxruntime+openvino", verbose=False)
    r, _, line = load_runner(static, "auto", verbose=False)  # auto: one backend for a static bundle
    assert r.name in ("onnxruntime", "openvino") and "fastest per graph" not in line


def test_a_new_backend_is_one_registry_row(bundle, monkeypatch):
    """A row naming a module with probe/create is all load, auto and doctor need; auto asks it not to block."""
    calls = []
    mod = types.ModuleType("rmpsam_edge_test_row_backend")

    def create(b, device=None, threads=None, auto=False):
        calls.append(auto)
        from rmpsam_edge.runtime import onnxruntime_backend
        return onnxruntime_backend.create(b, device="cpu", threads=threads)

    mod.create, mod.probe = create, (lambda device=None: (True, "row 1.0"))
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    row = backends.Backend("rowbe", ("rb",), "pip install rowbe", "apt install rowbe", mod.__name__, None)
    monkeypatch.setattr(backends, "BACKENDS", (row,) + backends.BACKENDS)
    assert backends.get("RB") is row and backends.probe(row) == (True, "row 1.0")
    load_runner(bundle, "rb", threads=1, verbose=False)
    load_runner(bundle, "auto", threads=1, verbose=False)
    assert calls == [False, True]
    missing = backends.Backend("gone", (), "pip install gone", "-", "rmpsam_edge_no_such_module_xyz", None)
    assert backends.probe(missing)[0] is False
