"""compat.py: the one adapter between TensorRT 8.5 / 8.6 / 10.x / 11.x and the rest of the package."""
import sys

import numpy as np
import pytest

from fakes_tensorrt import FakeGPU
from rmpsam_edge.errors import UserError
from rmpsam_edge.runtime import tensorrt as trt_pkg
from rmpsam_edge.runtime.tensorrt import compat, cuda_context


# version -> (typed on the GPU, typed with DLA, network flags of that decision: GPU, DLA)
DECISIONS = {"8.5.2": (False, False, 1, 1), "8.6.1": (False, False, 1, 1), "10.3.0": (True, False, 2, 0),
             "11.4.0": (True, True, 1, 1)}


@pytest.mark.parametrize("version", sorted(DECISIONS))
def test_precision_decision_and_network_flags_per_version(version):
    """8.x: weak typing (1 << EXPLICIT_BATCH); 10.x: STRONGLY_TYPED (1 << 1), weak for DLA; 11.x: STRONGLY_TYPED
    is member 0 and every network is typed."""
    fake = FakeGPU(version)
    c = compat.Compat(fake.trt)
    typed, typed_dla, flags, flags_dla = DECISIONS[version]
    assert (c.typed(), c.typed(dla=True)) == (typed, typed_dla)
    builder = fake.trt.Builder(fake.trt.Logger())
    c.create_network(builder, c.typed())
    c.create_network(builder, c.typed(dla=True))
    assert [x[1] for x in fake.calls if x[0] == "create_network"] == [flags, flags_dla]


def test_version_features():
    assert compat.Compat(FakeGPU("8.6.1").trt).weak_typing and compat.Compat(FakeGPU("10.3.0").trt).weak_typing
    assert not compat.Compat(FakeGPU("11.0.0").trt).weak_typing
    with pytest.raises(UserError, match=r"TensorRT 8\.4\.3 is too old.*8\.5"):
        compat.Compat(FakeGPU("8.4.3").trt)
    assert compat.parse_version("10.3.0.26") == (10, 3, 0, 26)
    assert compat.parse_version("8.6.2.3+cuda12") == (8, 6, 2, 3)


@pytest.mark.parametrize("version", ["8.5.2", "8.6.1", "10.3.0"])
def test_precision_flags_and_workspace(version):
    fake = FakeGPU(version)
    c = compat.Compat(fake.trt)
    cfg = fake.trt.IBuilderConfig()
    c.set_workspace(cfg, 3 << 30)
    c.set_precision(cfg, "int8", pinned=True)
    assert cfg.pools == {fake.trt.MemoryPoolType.WORKSPACE: 3 << 30}
    assert {f.name for f in cfg.flags} == {"FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"}
    cfg2 = fake.trt.IBuilderConfig()
    c.set_precision(cfg2, "fp16", pinned=False)
    assert {f.name for f in cfg2.flags} == {"FP16"}
    cfg3 = fake.trt.IBuilderConfig()
    c.set_precision(cfg3, "fp32", pinned=True)
    assert cfg3.flags == set()
    cfg4 = fake.trt.IBuilderConfig()  # a strongly typed network takes its precision from the graph: no flags
    c.set_precision(cfg4, "int8", pinned=False, typed=True)
    assert cfg4.flags == set()


def test_parser_error_lines_name_the_failing_node():
    fake10, fake8 = FakeGPU("10.3.0"), FakeGPU("8.6.1")
    err10 = fake10.trt.ParserError(17, "/mask_heads.0/MatMul", "MatMul", "bad shapes")
    assert compat.Compat(fake10.trt).parser_error_line(err10) == "node 17 '/mask_heads.0/MatMul' (MatMul): bad shapes"
    err8 = fake8.trt.ParserError(2, "ignored", "ignored", "No importer registered for op: Foo")
    assert not hasattr(err8, "node_name")  # 8.6: only the index
    c8 = compat.Compat(fake8.trt)
    assert c8.parser_error_line(err8, [("a", "Conv"), ("b", "Relu"), ("/x/Foo", "Foo")]) == \
        "node 2 '/x/Foo' (Foo): No importer registered for op: Foo"
    assert c8.parser_error_line(err8) == "node 2: No importer registered for op: Foo"
    err = fake8.trt.ParserError(-1, "", "", "Network must have explicit batch dimension")
    assert c8.parser_error_line(err) == "the graph: Network must have explicit batch dimension"


def test_layer_kind_downcasts_like_polygraphy():
    fake = FakeGPU("10.3.0")
    trt = fake.trt
    c = compat.Compat(trt)
    t = trt.float32

    def layer(cls, ltype, op=None):
        return cls("x", trt.LayerType[ltype], [], [], op)
    assert c.layer_kind(layer(trt.ILayer, "NORMALIZATION")) == "layernorm"
    assert c.layer_kind(layer(trt.ILayer, "SHUFFLE")) == "reshape"
    # get_layer() hands out the ILayer base class; the op is only readable after the downcast
    lay = layer(trt.IElementWiseLayer, "ELEMENTWISE", trt.ElementWiseOperation.GREATER)
    lay.__class__ = trt.ILayer
    assert not hasattr(lay, "op")
    assert c.layer_kind(lay) == "greater"
    assert c.layer_kind(layer(trt.IReduceLayer, "REDUCE", trt.ReduceOperation.MAX)) == "reduce_max"
    assert c.layer_kind(layer(trt.IUnaryLayer, "UNARY", trt.UnaryOperation.SQRT)) == "sqrt"
    assert c.layer_kind(layer(trt.ILayer, "PLUGIN_V2")) == "other"
    assert t == trt.DataType.FLOAT


def test_np_dtype_and_unknown_type():
    c = compat.Compat(FakeGPU().trt)
    assert c.np_dtype(c.trt.float16) == np.float16 and c.np_dtype(c.trt.bool) == np.bool_
    with pytest.raises(UserError, match="not supported"):
        c.np_dtype(type("T", (), {"name": "FP8"})())


def test_missing_packages_give_one_line_naming_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(UserError) as err:
        compat.import_tensorrt()
    assert "comes with JetPack, never pip: `sudo apt install python3-libnvinfer`" in str(err.value) and \
        'pip install "tensorrt-cu12<11" for 10.x, or pip install tensorrt for 11.x: strongly typed' in str(err.value)
    with pytest.raises(UserError, match="pip install pycuda"):
        cuda_context.import_pycuda()
    ok, why = trt_pkg.probe()
    assert not ok and why == str(err.value)  # the same one line wherever TensorRT is missing
    monkeypatch.setitem(sys.modules, "tensorrt", FakeGPU().trt)
    ok, why = trt_pkg.probe()
    assert not ok and why.startswith("pycuda not installed (pip install pycuda")


def test_available_and_device_info(monkeypatch):
    fake = FakeGPU("10.3.0", gpu="NVIDIA GeForce RTX 4090", cc=(8, 9)).install(monkeypatch)
    assert trt_pkg.probe() == (True, "TensorRT 10.3.0 on NVIDIA GeForce RTX 4090 (sm 8.9, 7620 MiB, 8 SMs)")
    assert trt_pkg.probe("cpu") == (False, "tensorrt runs on a CUDA GPU, not on 'cpu'")
    fake.devices = 0
    ok, why = trt_pkg.probe()
    assert not ok and "no CUDA GPU 0 found" in why


def test_dla_requires_cores():
    fake = FakeGPU("8.6.1", dla_cores=0)
    c = compat.Compat(fake.trt)
    builder, cfg = fake.trt.Builder(fake.trt.Logger()), fake.trt.IBuilderConfig()
    net = builder.create_network(1)
    with pytest.raises(UserError, match="no DLA .*Orin Nano"):
        c.use_dla(builder, cfg, 0, net)
    fake.dla_cores = 2
    builder = fake.trt.Builder(fake.trt.Logger())
    with pytest.raises(UserError, match=r"2 DLA core\(s\) \(0\.\.1\)"):
        c.use_dla(builder, cfg, 2, net)
    assert c.use_dla(builder, cfg, 1, net) == "DLA core 1 runs 0 of 0 layers; on the GPU (each switch costs a transfer): none"
    assert cfg.default_device_type == fake.trt.DeviceType.DLA and cfg.DLA_core == 1
    assert {f.name for f in cfg.flags} == {"GPU_FALLBACK"}


def test_pycuda_without_libcuda_is_reported_as_such(monkeypatch):
    import importlib
    fake = FakeGPU().install(monkeypatch)
    real = importlib.import_module

    def fail(name, *a):
        if name == "pycuda.driver":  # what pycuda's compiled _driver raises on a machine without the NVIDIA driver
            raise ImportError("libcuda.so.1: cannot open shared object file: No such file or directory")
        return fake.trt if name == "tensorrt" else real(name, *a)
    monkeypatch.setattr(cuda_context.importlib, "import_module", fail)
    ok, why = trt_pkg.probe()
    assert not ok and why.startswith("pycuda is installed but cannot load the CUDA driver library (libcuda.so.1")
    with pytest.raises(UserError, match="pycuda is installed but cannot load the CUDA driver library"):
        cuda_context.import_pycuda()
