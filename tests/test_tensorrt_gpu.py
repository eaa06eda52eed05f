"""Real TensorRT on a real GPU (skipped on CPU machines and in CI: only these lines need a GPU).

Builds FP32 and FP16 engines of the shared test bundle (tests/_bundle_fixture.py) with the real builder and checks the runner's
outputs against ONNX Runtime. Run on a Jetson or a desktop GPU with `pytest tests/test_tensorrt_gpu.py`."""
import os

import numpy as np
import pytest

from _bundle_fixture import shared_bundle
from fakes_tensorrt import fresh_bundle
from rmpsam_edge.runtime import tensorrt as trt_pkg
from rmpsam_edge.runtime.tensorrt import profiles

OK, WHY = trt_pkg.available()
pytestmark = pytest.mark.skipif(not OK, reason="needs TensorRT + pycuda + an NVIDIA GPU (%s)" % WHY)

RANGES = profiles.make_ranges((64, 64), prompts=(1, 1, 8), classes=(1, 5, 8), protos=(1, 2, 2))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return fresh_bundle(shared_bundle(tmp_path_factory), tmp_path_factory.mktemp("gpu") / "r18")


def _ort(bundle, graph, feeds):
    import onnxruntime as ort
    s = ort.InferenceSession(os.path.join(bundle, graph + ".onnx"), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


@pytest.mark.parametrize("precision,tol", [("fp32", 2e-3), ("fp16", 5e-2)])
def test_real_engines_match_onnxruntime(bundle, precision, tol):
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    boxes = rng.uniform(0.2, 0.8, (4, 4)).astype(np.float32)
    vocab = rng.standard_normal((5, 2, 768)).astype(np.float32)
    vocab /= np.linalg.norm(vocab, axis=-1, keepdims=True)
    with trt_pkg.create_runner(bundle, precision=precision, ranges=RANGES) as r:
        feats = r.encode(image)
        ref = _ort(bundle, "encoder", {"image": image})[0]
        assert np.abs(feats - ref).max() <= tol * np.abs(ref).max()
        masks, iou = r.decode_prompts(feats, boxes)
        ref_m, ref_i = _ort(bundle, "prompt_decoder", {"features": ref, "boxes": boxes})
        assert np.isfinite(masks).all() and np.abs(masks - ref_m).max() <= tol * np.abs(ref_m).max()
        cls, omasks, _ = r.decode_objects(feats, vocab)
        ref_c = _ort(bundle, "object_decoder", {"features": ref, "class_embed": vocab})[0]
        assert np.isfinite(cls).all() and np.abs(cls - ref_c).max() <= tol * 100
