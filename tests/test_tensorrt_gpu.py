"""Real TensorRT on a real GPU (skipped, saying why, where TensorRT, pycuda or a GPU is missing).

Builds FP32 and FP16 engines of the shared test bundle (tests/_bundle_fixture.py, input 128) with the real builder,
runs a real photo through them and compares with ONNX Runtime CPU FP32 on what a user sees:
  * encoder features: cosine similarity;
  * prompt decoder: IoU of each binarised prompt mask, and the predicted IoU scores;
  * object decoder: IoU of the binarised masks of the most confident queries, and their class agreement;
then the pycuda parts: the runner used from a second thread, two runners at once, and a process that never
deactivates its runner exits 0 (pycuda aborts with 134 when a context is left on a stack).
Run on a Jetson or a GPU machine: `pytest -q tests/test_tensorrt_gpu.py`."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from _bundle_fixture import shared_bundle
from fakes_tensorrt import fresh_bundle
from rmpsam_edge.runtime import tensorrt as trt_pkg

OK, WHY = trt_pkg.probe()
pytestmark = pytest.mark.skipif(not OK, reason="needs TensorRT + pycuda + an NVIDIA GPU (%s)" % WHY)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = os.path.join(ROOT, "rmpsam_edge", "assets", "images", "chelsea.jpg")
# precision: (min feature cosine, min prompt-mask IoU, max |predicted IoU diff|, min object-mask IoU,
#             min class agreement). FP16 keeps LayerNorm/Softmax/mask pooling/logits in FP32 (precision.py), so a
#             mask differs only along its border.
TOL = {"fp32": (0.99999, 0.99, 0.005, 0.99, 1.0), "fp16": (0.999, 0.95, 0.03, 0.93, 0.95)}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return fresh_bundle(shared_bundle(tmp_path_factory), tmp_path_factory.mktemp("gpu") / "r18")


@pytest.fixture(scope="module")
def inputs(bundle):
    from rmpsam_edge.preprocess import load_image, preprocess
    from rmpsam_edge.runtime.bundle import Bundle
    b = Bundle.open(bundle)
    x, _ = preprocess(load_image(IMAGE), b.spec())
    boxes = np.array([[0.1, 0.1, 0.6, 0.7], [0.3, 0.2, 0.9, 0.9], [0.0, 0.0, 1.0, 1.0], [0.4, 0.4, 0.5, 0.5]],
                     np.float32)
    return x, boxes, b.class_embed()


def _ort(bundle, graph, feeds):
    import onnxruntime as ort
    s = ort.InferenceSession(os.path.join(bundle, graph + ".onnx"), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def _iou(a, b):
    a, b = a > 0, b > 0
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum()) / union


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_engines_agree_with_onnxruntime_on_masks(bundle, inputs, precision):
    cos_min, prompt_iou, score_diff, obj_iou, cls_agree = TOL[precision]
    x, boxes, vocab = inputs
    ref_f = _ort(bundle, "encoder", {"image": x})[0]
    ref_m, ref_s = _ort(bundle, "prompt_decoder", {"features": ref_f, "boxes": boxes})
    ref_c, ref_o = _ort(bundle, "object_decoder", {"features": ref_f, "class_embed": vocab})[:2]
    with trt_pkg.create(bundle, precision=precision) as r:
        f = r.encode(x)
        cos = float((f * ref_f).sum() / (np.linalg.norm(f) * np.linalg.norm(ref_f)))
        assert cos >= cos_min, "feature cosine %.6f" % cos
        m, s = r.decode_prompts(f, boxes)
        assert np.isfinite(m).all() and np.isfinite(s).all()
        ious = [_iou(m[i], ref_m[i]) for i in range(len(boxes))]
        assert min(ious) >= prompt_iou, "prompt-mask IoU %s" % ious
        assert np.abs(s - ref_s).max() <= score_diff
        c, o = r.decode_objects(f, vocab)[:2]
        assert np.isfinite(c).all() and np.isfinite(o).all()
        top = np.argsort(-ref_c[0, :, :-1].max(-1))[:10]  # the 10 most confident queries (last column: no object)
        assert np.mean(c[0, top].argmax(-1) == ref_c[0, top].argmax(-1)) >= cls_agree
        oious = [_iou(o[0, q], ref_o[0, q]) for q in top]
        assert np.mean(oious) >= obj_iou, "object-mask IoU %s" % oious


def test_pycuda_context_from_a_second_thread_and_two_runners(bundle, inputs, tmp_path_factory):
    x, boxes, _ = inputs
    other = fresh_bundle(shared_bundle(tmp_path_factory), tmp_path_factory.mktemp("gpu2") / "r18")
    a, b = trt_pkg.create(bundle, precision="fp32"), trt_pkg.create(other, precision="fp32")
    try:
        ref = a.decode_prompts(a.encode(x), boxes)[0]
        out, errors = [], []

        def work(r):
            try:
                out.append(r.decode_prompts(r.encode(x), boxes)[0])
            except Exception as exc:  # noqa: BLE001
                errors.append(repr(exc))
        threads = [threading.Thread(target=work, args=(r,)) for r in (a, b, a)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and len(out) == 3
        for m in out:
            assert _iou(m, ref) >= 0.999
    finally:
        a.deactivate()
        b.deactivate()


def test_process_that_never_deactivates_exits_cleanly(bundle):
    code = ("from rmpsam_edge.runtime import tensorrt as t; import numpy as np\n"
            "r = t.create(%r, precision='fp32')\n"
            "r.encode(np.zeros((1, 3, 128, 128), np.float32)); print('ok')\n" % bundle)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert p.returncode == 0 and "ok" in p.stdout, p.stderr[-2000:]
    assert "context stack was not empty" not in p.stderr
