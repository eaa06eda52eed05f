"""The demo weights shipped as a small bundle (rmpsam_edge/assets/bundle: FP16-stored weights computed in FP32, no
prompt_decoder_many): valid, small, faithful to the FP32 export, and what demo/predict run when torch is missing."""
import glob
import os
import subprocess
import sys

import numpy as np
import pytest

from rmpsam_edge.weights import SHIPPED_BUNDLE
from rmpsam_edge.runtime import load
from rmpsam_edge.runtime.bundle import Bundle

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = sorted(glob.glob(os.path.join(ROOT, "rmpsam_edge", "assets", "images", "*.jpg")))
NO_TORCH = os.path.join(ROOT, "tests", "data", "notorch")  # a sitecustomize that makes `import torch` fail
CLI = [sys.executable, "-m", "rmpsam_edge.cli"]


def test_shipped_bundle_is_valid_and_small():
    b = Bundle.open(SHIPPED_BUNDLE)
    assert b.graph_names() == ["encoder", "prompt_decoder", "object_decoder"]
    for g in b.graph_names():
        b.graph_path(g)  # sha256 checked
        assert b.manifest["graphs"][g]["fp16_initializers"] > 0
    assert b.class_embed() is not None and b.static is None
    assert b.size_mb() < 55  # the FP32 export of the same weights is ~100 MB
    from rmpsam_edge.runtime.tensorrt.importers import VERSIONS, verdicts
    assert b.manifest["opset"] == 16 and verdicts(b) == ["TensorRT %s: builds" % v for v in VERSIONS]


@pytest.fixture(scope="module")
def fp32_demo_bundle(tmp_path_factory):
    pytest.importorskip("torch")
    out = str(tmp_path_factory.mktemp("demo32") / "b")
    subprocess.run(CLI + ["export", "--no-many-prompts-graph", "--out", out], check=True, stdout=subprocess.DEVNULL)
    return out


def test_shipped_bundle_matches_the_fp32_export(fp32_demo_bundle):
    ref = load(fp32_demo_bundle, backend="onnxruntime", device="cpu", threads=2, verbose=False)
    got = load(SHIPPED_BUNDLE, backend="onnxruntime", device="cpu", threads=2, verbose=False)
    ious, cosines = [], []
    for img in IMAGES:
        ref.set_image(img)
        got.set_image(img)
        a, b = ref.features.ravel(), got.features.ravel()
        cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
        h, w = ref.meta.ori_shape[:2]
        points = [[w * 0.3, h * 0.4], [w * 0.6, h * 0.5], [w * 0.5, h * 0.7]]
        ma, _ = ref.predict(points=points)
        mb, _ = got.predict(points=points)
        ious += [(x & y).sum() / max((x | y).sum(), 1) for x, y in zip(ma, mb)]
        pa, pb = ref.panoptic()[0], got.panoptic()[0]
        assert (pa == pb).mean() > 0.95
    assert min(cosines) > 0.9999, cosines
    assert np.mean(ious) > 0.98 and min(ious) > 0.9, ious


def _no_torch_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = NO_TORCH + os.pathsep + ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_demo_and_predict_run_without_torch(tmp_path):
    env = _no_torch_env()
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "blocked" in check.stderr
    out = str(tmp_path / "demo.avi")
    p = subprocess.run(CLI + ["demo", "--max-frames", "3", "--threads", "2", "--out", out], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "no --model: running the shipped demo bundle" in p.stderr and os.path.getsize(out) > 0
    p = subprocess.run(CLI + ["predict", "--image", IMAGES[0], "--points", "200,150", "--out", str(tmp_path / "p"),
                              "--threads", "2"], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert os.path.isfile(str(tmp_path / "p" / "overlay.png"))
    # an explicit checkpoint still needs torch: one line, no traceback
    p = subprocess.run(CLI + ["predict", "--image", IMAGES[0], "--random-init", "--out", str(tmp_path / "q")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "Traceback" not in p.stderr and "torch" in p.stderr
