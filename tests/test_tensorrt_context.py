"""The runner's CUDA context on the fake pycuda (per-thread context stacks, static Context.pop, abort at exit):
usable from another thread, several runners per process, nothing left on any stack, released at exit."""
import os
import subprocess
import sys
import threading

import numpy as np

from fakes_tensorrt import FakeGPU, bundle, tiny_bundle  # noqa: F401 (fixtures)
from rmpsam_edge.runtime import tensorrt as trt_pkg
from rmpsam_edge.runtime.tensorrt import profiles

RANGES = profiles.make_ranges((64, 64), prompts=(1, 1, 8), classes=(1, 5, 8), protos=(1, 2, 2))
TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


def test_fake_pycuda_is_per_thread_like_the_real_one(monkeypatch):
    fake = FakeGPU().install(monkeypatch)
    cuda = fake.cuda
    ctx = cuda.Device(0).make_context()
    errors = []

    def other():
        try:
            cuda.mem_alloc(4)
        except cuda.Error as exc:
            errors.append(str(exc))
    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert errors and "invalid device context" in errors[0]  # the context is current only where it was made
    cuda.Context.pop()
    try:
        cuda.Context.pop()
        raise AssertionError("pop of an empty stack must fail")
    except cuda.Error:
        pass
    ctx.detach()


def test_runner_used_from_another_thread_and_two_runners(bundle, tmp_path, tiny_bundle, monkeypatch):  # noqa: F811
    from fakes_tensorrt import fresh_bundle
    fake = FakeGPU("10.3.0").install(monkeypatch)
    image = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    other = fresh_bundle(tiny_bundle, tmp_path / "second")
    a = trt_pkg.create_runner(bundle, precision="fp32", ranges=RANGES)
    b = trt_pkg.create_runner(other, precision="fp32", ranges=RANGES)
    a.activate()
    b.activate()
    assert fake.leftover() == []  # activate popped its context right after loading
    results, errors = {}, []

    def work(name, r):
        try:
            f = r.encode(image)
            results[name] = r.decode_prompts(f, np.array([[0.2, 0.2, 0.7, 0.7]], np.float32))[0]
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))
    threads = [threading.Thread(target=work, args=(n, r), name="demo-inference-%s" % n) for n, r in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    np.testing.assert_array_equal(results["a"], results["b"])
    pushes = [c for c in fake.calls if c[0] == "ctx.push"]
    assert {c[1] for c in pushes} >= {"demo-inference-a", "demo-inference-b"}
    a.deactivate()
    b.deactivate()
    assert fake.leftover() == [] and not fake.live_contexts and fake.memory == {}


def test_context_made_on_one_thread_is_destroyed_from_another_and_blocks(bundle, monkeypatch):  # noqa: F811
    """pycuda leaks a context detached off its thread while not current: the runner pushes it first."""
    fake = FakeGPU("10.3.0").install(monkeypatch)
    r = trt_pkg.create_runner(bundle, precision="fp32", ranges=RANGES)
    t = threading.Thread(target=r.activate, name="loader")
    t.start()
    t.join()
    assert r.active
    made = [c for c in fake.calls if c[0] == "make_context"]
    assert made and all(c[2] == fake.cuda.ctx_flags.SCHED_BLOCKING_SYNC for c in made)  # not 0 (spin)
    r.deactivate()  # on the main thread, not the loader
    assert fake.leaked == [] and not fake.live_contexts and fake.leftover() == [] and fake.memory == {}


SCRIPT = """
import sys
sys.path.insert(0, %(tests)r)
from fakes_tensorrt import FakeGPU
import types
fake = FakeGPU("10.3.0", abort_at_exit=True)
pkg = types.ModuleType("pycuda"); pkg.driver = fake.cuda
sys.modules.update({"tensorrt": fake.trt, "pycuda": pkg, "pycuda.driver": fake.cuda})
from rmpsam_edge.runtime import tensorrt as trt_pkg
from rmpsam_edge.runtime.tensorrt import profiles
r = trt_pkg.create_runner(%(bundle)r, precision="fp32",
                          ranges=profiles.make_ranges((64, 64), prompts=(1, 1, 8), classes=(1, 5, 8), protos=(1, 2, 2)))
r.activate()
%(leak)s
print("done")
"""


def _run(bundle, leak):
    code = SCRIPT % {"tests": TESTS, "bundle": bundle, "leak": leak}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_no_abort_at_exit_without_deactivate_and_the_fake_aborts_on_a_leak(bundle):
    ok = _run(bundle, "")  # never deactivated: released by weakref.finalize at exit
    assert ok.returncode == 0 and "done" in ok.stdout, ok.stderr[-2000:]
    leak = _run(bundle, "fake.cuda.Device(0).make_context()")  # a context left pushed: pycuda aborts
    assert leak.returncode == 134 and "context stack was not empty" in leak.stderr
