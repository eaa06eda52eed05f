"""The TensorRT runner where it used to break on a Jetson, on the fakes (per-thread pycuda context stacks,
abort at exit): the demo pipeline (capture + inference threads, rmpsam_edge/demo/pipeline.py) and a
`predict --backend tensorrt` SUBPROCESS that never deactivates anything must exit 0 with no abort."""
import os
import subprocess
import sys

import numpy as np

from fakes_tensorrt import FakeGPU, bundle, tiny_bundle  # noqa: F401 (fixtures)
from rmpsam_edge.runtime import tensorrt as trt_pkg
from rmpsam_edge.demo.pipeline import run_pipeline
from rmpsam_edge.runtime.tensorrt import profiles

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
IMAGE = os.path.join(ROOT, "rmpsam_edge", "assets", "images", "chelsea.jpg")
RANGES = profiles.make_ranges((64, 64), prompts=(1, 1, 8), classes=(1, 5, 8), protos=(1, 2, 2))


class Frames(object):
    live = False

    def __init__(self, n):
        self.rng, self.n = np.random.default_rng(0), n

    def read(self):
        if self.n == 0:
            return None
        self.n -= 1
        return self.rng.standard_normal((1, 3, 64, 64)).astype(np.float32)


def test_demo_pipeline_runs_tensorrt_in_its_inference_thread(bundle, monkeypatch):
    fake = FakeGPU("10.3.0").install(monkeypatch)
    got = []
    with trt_pkg.create_runner(bundle, precision="fp16", ranges=RANGES) as r:  # activated in the main thread
        def process(frame, stats):
            feats = r.encode(frame)
            return r.decode_prompts(feats, np.array([[0.1, 0.1, 0.6, 0.6]], np.float32))[0]

        res = run_pipeline(Frames(5), process, lambda item, stats: got.append(item.result) or True)
    assert res.stats.get("inferred") == 5 and len(got) == 5 and got[0].shape == (1, 16, 16)
    assert {c[1] for c in fake.calls if c[0] == "ctx.push"} >= {"demo-inference"}
    assert fake.leftover() == [] and not fake.live_contexts


SITE = """
import sys, types
sys.path.insert(0, %(tests)r)
from fakes_tensorrt import FakeGPU
fake = FakeGPU("10.3.0", abort_at_exit=True)  # pycuda aborts (exit 134) with a context left on a stack
pkg = types.ModuleType("pycuda"); pkg.driver = fake.cuda
sys.modules.update({"tensorrt": fake.trt, "pycuda": pkg, "pycuda.driver": fake.cuda})
"""


def test_predict_backend_tensorrt_subprocess_exits_cleanly(bundle, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE % {"tests": TESTS})
    env = dict(os.environ, PYTHONPATH=str(site) + os.pathsep + ROOT)
    code = "import sys; from rmpsam_edge.cli import main; sys.exit(main())"
    p = subprocess.run([sys.executable, "-c", code, "predict", "--model", bundle, "--backend", "tensorrt",
                        "--image", IMAGE, "--boxes", "50,50,200,200", "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "context stack was not empty" not in p.stderr and "tensorrt 10.3.0, Orin (sm 8.7)" in p.stderr
    assert os.listdir(str(tmp_path / "out"))
