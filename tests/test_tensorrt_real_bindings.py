"""Conformance against NVIDIA's REAL TensorRT Python bindings (8.6.1, 10.3.0, 10.13.0.35, 11.4.0.106), no GPU.

The bindings wheels (~1 MB, proprietary: downloaded at test time into the ignored .cache/trt-bindings/, never
committed) need libnvinfer, libnvinfer_plugin, libnvonnxparser (and libnvparsers on 8.6). Stub libraries
compiled here with gcc define exactly the symbols ``nm -D --undefined-only`` lists for the bindings .so and
return NULL, so the real module imports; ``trt.Builder(logger)`` then raises TypeError (factory returned
nullptr). In a subprocess per version (the real module aliased as ``tensorrt``) the checks are: every
attribute, enum member and method the project touches exists with that kind or is guarded where absent (the
strongly typed path of 10.x / 11.x: STRONGLY_TYPED; the weak-typed names of 8.6 / 10.x: FP16, INT8,
OBEY_PRECISION_CONSTRAINTS, layer precision); the project's logger subclass instantiates against the real pybind
base; the version-dependent branches (``compat.typed``, network flags) pick right; the fakes (tests/fakes_tensorrt.py) expose nothing the real module of their version
lacks. Skipped only when the package index cannot be reached.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
CACHE = os.path.join(ROOT, ".cache", "trt-bindings")
VERSIONS = [("tensorrt-bindings", "8.6.1"), ("tensorrt-cu12-bindings", "10.3.0"),
            ("tensorrt-cu11-bindings", "10.13.0.35"), ("tensorrt-cu12-bindings", "11.4.0.106")]


def _prepare(package, version):
    """-> (site dir holding tensorrt_bindings/, stub library dir); downloads and compiles once."""
    home = os.path.join(CACHE, "%s-%s-py%d%d" % (package, version, sys.version_info[0], sys.version_info[1]))
    site, stubs = os.path.join(home, "site"), os.path.join(home, "stubs")
    if os.path.isfile(os.path.join(home, "ready")):
        return site, stubs
    if not shutil.which("gcc") or not shutil.which("nm"):
        pytest.skip("needs gcc and nm to compile the TensorRT stub libraries")
    shutil.rmtree(home, ignore_errors=True)
    os.makedirs(home)
    dl = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                         "%s==%s" % (package, version), "-d", home], capture_output=True, text=True, timeout=300)
    wheels = glob.glob(os.path.join(home, "*.whl"))
    if dl.returncode != 0 or not wheels:
        shutil.rmtree(home, ignore_errors=True)
        pytest.skip("package index unreachable for %s==%s: %s" % (package, version, (dl.stderr or "")[-200:]))
    with zipfile.ZipFile(wheels[0]) as z:
        z.extractall(site)
    so = glob.glob(os.path.join(site, "tensorrt_bindings", "tensorrt*.so"))[0]
    needed = [line.split("[")[1].rstrip("]") for line in
              subprocess.run(["readelf", "-d", so], capture_output=True, text=True).stdout.splitlines()
              if "NEEDED" in line and "libnv" in line]
    symbols = [l.split()[-1] for l in subprocess.run(["nm", "-D", "--undefined-only", so], capture_output=True,
                                                     text=True).stdout.splitlines()
               if l.split()[0] == "U" and "@" not in l]
    symbols = [s for s in symbols if not s.startswith(("Py", "_Py", "dl"))]
    os.makedirs(stubs)
    src = os.path.join(stubs, "stub.c")
    with open(src, "w") as f:
        f.write("".join("void *%s(void) { return 0; }\n" % s for s in symbols))
    for lib in needed:
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", os.path.join(stubs, lib), src], check=True)
    with open(os.path.join(home, "ready"), "w") as f:
        json.dump({"needed": needed, "symbols": symbols}, f)
    return site, stubs


CHECK = r'''
import inspect, json, sys, types
sys.path[:0] = [SITE, TESTS, ROOT]
import tensorrt_bindings as trt
sys.modules["tensorrt"] = trt
from rmpsam_edge.runtime.tensorrt import compat
major = int(trt.__version__.split(".")[0])
problems = []

def kind(owner, name):
    if not hasattr(owner, name):
        return None
    raw = inspect.getattr_static(owner, name)
    return "property" if isinstance(raw, property) or type(raw).__name__ == "property" else (
        "callable" if callable(raw) else "value")

# (owner, attribute, kind, present in which majors; absent elsewhere means the project guards it)
T = [
 ("", "__version__", "value", "all"), ("", "ILogger", "callable", "all"), ("", "Logger", "callable", "all"),
 ("", "Builder", "callable", "all"), ("", "Runtime", "callable", "all"), ("", "OnnxParser", "callable", "all"),
 ("", "init_libnvinfer_plugins", "callable", "all"),
 ("", "ParserError", "callable", "all"), ("", "float32", "value", "all"), ("", "float16", "value", "all"),
 ("BuilderFlag", "FP16", "value", "<11"), ("BuilderFlag", "INT8", "value", "<11"),
 ("BuilderFlag", "OBEY_PRECISION_CONSTRAINTS", "value", "<11"), ("BuilderFlag", "GPU_FALLBACK", "value", "all"),
 ("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH", "value", "<11"),
 ("NetworkDefinitionCreationFlag", "STRONGLY_TYPED", "value", ">=10"), ("MemoryPoolType", "WORKSPACE", "value", "all"),
 ("DeviceType", "DLA", "value", "all"), ("TensorIOMode", "INPUT", "value", "all"),
 ("LayerType", "ELEMENTWISE", "value", "all"), ("LayerType", "REDUCE", "value", "all"),
 ("LayerType", "UNARY", "value", "all"), ("UnaryOperation", "SQRT", "value", "all"),
 ("Builder", "create_network", "callable", "all"), ("Builder", "create_builder_config", "callable", "all"),
 ("Builder", "create_optimization_profile", "callable", "all"),
 ("Builder", "build_serialized_network", "callable", "all"), ("Builder", "num_DLA_cores", "property", "all"),
 ("Builder", "platform_has_fast_fp16", "property", "<11"),
 ("IBuilderConfig", "set_memory_pool_limit", "callable", "all"), ("IBuilderConfig", "set_flag", "callable", "all"),
 ("IBuilderConfig", "add_optimization_profile", "callable", "all"),
 ("IBuilderConfig", "create_timing_cache", "callable", "all"), ("IBuilderConfig", "set_timing_cache", "callable", "all"),
 ("IBuilderConfig", "get_timing_cache", "callable", "all"),
 ("IBuilderConfig", "default_device_type", "property", "all"), ("IBuilderConfig", "DLA_core", "property", "all"),
 ("IOptimizationProfile", "set_shape", "callable", "all"), ("ITimingCache", "serialize", "callable", "all"),
 ("OnnxParser", "parse_from_file", "callable", "all"), ("OnnxParser", "num_errors", "property", "all"),
 ("OnnxParser", "get_error", "callable", "all"), ("ParserError", "desc", "callable", "all"),
 ("ParserError", "node", "callable", "all"), ("ParserError", "node_name", "callable", ">=10"),
 ("ParserError", "node_operator", "callable", ">=10"),
 ("INetworkDefinition", "num_layers", "property", "all"), ("INetworkDefinition", "get_layer", "callable", "all"),
 ("INetworkDefinition", "num_inputs", "property", "all"), ("INetworkDefinition", "get_input", "callable", "all"),
 ("INetworkDefinition", "num_outputs", "property", "all"), ("INetworkDefinition", "get_output", "callable", "all"),
 ("ILayer", "name", "property", "all"), ("ILayer", "type", "property", "all"), ("ILayer", "num_inputs", "property", "all"),
 ("ILayer", "get_input", "callable", "all"), ("ILayer", "num_outputs", "property", "all"),
 ("ILayer", "get_output", "callable", "all"), ("ILayer", "precision", "property", "<11"),
 ("ILayer", "set_output_type", "callable", "<11"), ("ITensor", "name", "property", "all"),
 ("ITensor", "shape", "property", "all"), ("ITensor", "dtype", "property", "all"),
 ("IElementWiseLayer", "op", "property", "all"), ("IReduceLayer", "op", "property", "all"),
 ("IUnaryLayer", "op", "property", "all"),
 ("Runtime", "deserialize_cuda_engine", "callable", "all"), ("Runtime", "DLA_core", "property", "all"),
 ("ICudaEngine", "num_io_tensors", "property", "all"), ("ICudaEngine", "get_tensor_name", "callable", "all"),
 ("ICudaEngine", "get_tensor_mode", "callable", "all"), ("ICudaEngine", "get_tensor_dtype", "callable", "all"),
 ("ICudaEngine", "get_tensor_profile_shape", "callable", "all"),
 ("ICudaEngine", "create_execution_context", "callable", "all"),
 ("IExecutionContext", "set_input_shape", "callable", "all"), ("IExecutionContext", "set_tensor_address", "callable", "all"),
 ("IExecutionContext", "get_tensor_shape", "callable", "all"), ("IExecutionContext", "execute_async_v3", "callable", "all"),
 # activation memory shared by the contexts: 8.x without_device_memory + device_memory, 10.x+ USER_MANAGED
 ("ICudaEngine", "create_execution_context_without_device_memory", "callable", "<11"),
 ("ICudaEngine", "device_memory_size", "property", "<11"), ("ICudaEngine", "device_memory_size_v2", "property", ">=10"),
 ("", "ExecutionContextAllocationStrategy", "callable", ">=10"),
 ("ExecutionContextAllocationStrategy", "USER_MANAGED", "value", ">=10"),
 ("IExecutionContext", "device_memory", "property", "all"), ("IExecutionContext", "set_device_memory", "callable", ">=10"),
 ("IBuilderConfig", "can_run_on_DLA", "callable", "all"),
]
def wanted(where):
    return where == "all" or (where == "<11" and major < 11) or (where == ">=10" and major >= 10)
for owner, name, k, where in T:
    obj = getattr(trt, owner, None) if owner else trt
    got = None if obj is None else kind(obj, name)
    if wanted(where) and got != k:
        problems.append("%s.%s: %s, expected %s" % (owner or "trt", name, got, k))
    if not wanted(where) and got is not None:
        problems.append("%s.%s exists on %s: the project's guard is never taken" % (owner or "trt", name, trt.__version__))
for name in ("ElementWiseOperation", "ReduceOperation"):
    for m in {"ElementWiseOperation": ("GREATER", "PROD", "DIV", "SUM", "SUB", "POW"),
              "ReduceOperation": ("MAX", "SUM", "AVG")}[name]:
        if not hasattr(getattr(trt, name), m):
            problems.append("%s.%s missing" % (name, m))
dtypes = sorted(n for n in trt.DataType.__members__)
# the project's subclasses against the real pybind bases
c = compat.Compat(trt)
logger = c.logger([])
logger.log(trt.ILogger.Severity.ERROR, "x")
# version branches
class B(object):
    def create_network(self, flags): return flags
flags = [c.create_network(B(), typed) for typed in (False, True)] if major >= 10 else [c.create_network(B())]
try:
    trt.Builder(logger)
    builder_error = "no error"
except TypeError as exc:
    builder_error = "TypeError"
# the fakes of this version expose nothing the real module lacks
from fakes_tensorrt import FakeGPU
fake = FakeGPU(".".join(trt.__version__.split(".")[:3])).trt
extra = []
for name, value in vars(fake).items():
    if name.startswith("_"):
        continue
    if not hasattr(trt, name):
        extra.append(name)
        continue
    real = getattr(trt, name)
    if isinstance(value, type):
        members = getattr(value, "__members__", None)
        if members is not None:
            extra += ["%s.%s" % (name, m) for m in members if not hasattr(real, m)]
        else:
            extra += ["%s.%s" % (name, a) for a in vars(value) if not a.startswith("_") and not hasattr(real, a)]
print(json.dumps({"version": trt.__version__, "problems": problems, "weak_typing": c.weak_typing,
                  "typed": [c.typed(False), c.typed(True)], "network_flags": flags,
                  "builder": builder_error, "fake_extra": extra, "dtypes": dtypes}))
'''


@pytest.mark.parametrize("package,version", VERSIONS)
def test_project_against_real_tensorrt_bindings(package, version):
    site, stubs = _prepare(package, version)
    env = dict(os.environ, LD_LIBRARY_PATH=stubs + os.pathsep + os.environ.get("LD_LIBRARY_PATH", ""))
    code = "SITE, TESTS, ROOT = %r, %r, %r\n" % (site, TESTS, ROOT) + CHECK
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    major = int(version.split(".")[0])
    assert r["version"].startswith(version[:4]) and r["problems"] == []
    assert r["weak_typing"] == (major < 11)
    # strongly typed from 10.x (DLA on 10.x stays weak), weak typing on 8.x
    assert r["typed"] == [major >= 10, major >= 11]
    # 8.x: 1 << EXPLICIT_BATCH; 10.x: 0 weak, 1 << STRONGLY_TYPED (= 1) typed; 11.x: STRONGLY_TYPED is 0
    assert r["network_flags"] == {8: [1], 10: [0, 2], 11: [0, 1]}[major]
    assert r["builder"] == "TypeError"  # the stub factory returns NULL: pybind raises, nothing crashes
    assert r["fake_extra"] == []
    assert ("INT64" in r["dtypes"]) == (major >= 10)
