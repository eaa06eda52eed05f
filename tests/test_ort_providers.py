"""ONNX Runtime's GPU providers, with a fake provider list (onnxruntime-gpu on a Jetson or a desktop GPU): ``auto``
takes CUDA EP then CPU and never the TensorRT EP (it builds engines when a session opens); ``--device tensorrt``
gets profile shapes from the bundle's ranges, its engine cache in the bundle's engine folder and one line
before a build. The sessions themselves run on the real CPU provider."""
import json
import os
import shutil

import pytest

ort = pytest.importorskip("onnxruntime")
from rmpsam_edge.weights import SHIPPED_BUNDLE  # noqa: E402
from rmpsam_edge.runtime import onnxruntime_backend as ob  # noqa: E402
from rmpsam_edge.runtime.bundle_runner import BackendUnavailable  # noqa: E402

ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.fixture
def gpu_ort(monkeypatch, tmp_path):
    """onnxruntime-gpu as far as the runner can tell; every session records its providers, runs on the CPU."""
    real = ort.InferenceSession
    opened = []

    class Session(object):
        def __init__(self, path, options=None, providers=None):
            opened.append((os.path.basename(path), providers))
            self.inner = real(path, options, providers=["CPUExecutionProvider"])
            self.names = [p[0] if isinstance(p, tuple) else p for p in providers]

        def get_providers(self):
            return self.names

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(ort, "get_available_providers", lambda: list(ALL))
    monkeypatch.setattr(ort, "InferenceSession", Session)
    bundle = str(tmp_path / "bundle")
    shutil.copytree(SHIPPED_BUNDLE, bundle)
    return bundle, opened


def test_auto_uses_cuda_then_cpu_never_the_tensorrt_ep(gpu_ort, capsys):
    bundle, opened = gpu_ort
    for device in (None, "auto", "cuda", "gpu"):
        assert ob.providers_for(device) == ALL[1:]
    runner = ob.create(bundle, device=None, threads=1, auto=True)
    assert {g for g, _ in opened} == {"encoder.onnx", "prompt_decoder.onnx", "object_decoder.onnx"}
    assert all([name for name, _ in providers] == ALL[1:] for _, providers in opened)
    assert "CUDA EP > CPU EP" in runner.describe() and "TensorRT" not in runner.describe()
    assert "building" not in capsys.readouterr().err
    assert not os.path.exists(os.path.join(bundle, "tensorrt"))
    assert ob.probe()[1].endswith("providers: CUDA EP, CPU EP")


def test_tensorrt_device_gets_profile_shapes_and_the_bundle_engine_cache(gpu_ort, capsys):
    bundle, opened = gpu_ort
    runner = ob.create(bundle, device="tensorrt", threads=1)
    by_graph = {g: providers for g, providers in opened}
    assert all([n for n, _ in p] == ALL for p in by_graph.values())
    enc = by_graph["encoder.onnx"][0][1]
    # the shipped bundle declares H, W 32..192 (opt 192), one image; prompts 1..256 (its Np range:
    # the runner sends larger batches in chunks of that size)
    assert (enc["trt_profile_min_shapes"], enc["trt_profile_opt_shapes"], enc["trt_profile_max_shapes"]) == (
        "image:1x3x32x32", "image:1x3x192x192", "image:1x3x192x192")
    dec = by_graph["prompt_decoder.onnx"][0][1]
    assert dec["trt_profile_min_shapes"] == "boxes:1x4,features:1x256x8x8"
    assert dec["trt_profile_max_shapes"] == "boxes:256x4,features:1x256x48x48"
    obj = by_graph["object_decoder.onnx"][0][1]
    with open(os.path.join(bundle, "manifest.json")) as f:  # class ranges: the bundle's vocabulary K x P
        k, p = json.load(f)["vocabulary"]["shape"][:2]
    assert obj["trt_profile_max_shapes"].startswith("class_embed:%dx%dx768," % (k, p))
    folder = enc["trt_engine_cache_path"]
    assert enc["trt_engine_cache_enable"] is True and os.path.isdir(folder)
    assert os.path.dirname(folder) == os.path.join(bundle, "tensorrt", "onnxruntime")
    err = capsys.readouterr().err
    assert ("onnxruntime: building encoder TensorRT EP engine (none cached in %s); this takes minutes on a Jetson"
            % folder) in err and err.count("this takes minutes") == 3
    assert runner.describe().startswith("onnxruntime %s, TensorRT EP > CUDA EP > CPU EP" % ort.__version__)
    runner.deactivate()
    for options in (p[0][1] for p in by_graph.values()):  # what ORT leaves there after a build
        open(os.path.join(options["trt_engine_cache_path"], "TensorrtExecutionProvider_TRTKernel_0.engine"), "w").close()
    ob.create(bundle, device="tensorrt", threads=1).deactivate()
    assert "building" not in capsys.readouterr().err


def test_cpu_onnxruntime_refuses_gpu_devices(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert ob.providers_for("auto") == ["CPUExecutionProvider"]
    for device in ("cuda", "tensorrt"):
        with pytest.raises(BackendUnavailable, match="no GPU provider"):
            ob.providers_for(device)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ALL[1:])
    with pytest.raises(BackendUnavailable, match="no TensorRT provider"):
        ob.providers_for("tensorrt")
