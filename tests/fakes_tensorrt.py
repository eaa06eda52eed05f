"""Fake ``tensorrt`` and ``pycuda.driver`` modules for CPU tests (no GPU or TensorRT can be installed here).

They follow the real Python APIs the runtime uses (names and signatures as in TensorRT 8.5 / 8.6 / 10.x / 11
and pycuda 2022+), record every call in ``FakeGPU.calls``, and behave enough like the real thing to make
wrong code fail:

* pycuda contexts: one stack per thread, the ``ctx_flags`` a context was made with recorded, and ``detach`` as
  pycuda's (a non-current context detached off its thread is leaked, ``FakeGPU.leaked``);
* execution contexts made without activation memory (8.x ``..._without_device_memory``, 10.x+ USER_MANAGED)
  refuse to run until it is given;

* ``OnnxParser.parse_from_file`` reads a REAL ONNX file and makes one layer per node (ReduceL2 split the
  way TensorRT's ONNX parser does it), so layer names and types are the exported graph's;
* TensorRT 8.x networks without the EXPLICIT_BATCH flag cannot parse; 11 has no FP16/INT8 flags, no layer
  precision and no calibrator; 8.6 parser errors have only ``node()``; a strongly typed network (10.x flag, always
  on 11) fails to build with precision flags or pins; Q/DQ needs symmetric int8 zero points, and on weak typing
  the INT8 flag;
* a plan is bytes that only the same fake TensorRT version deserialises (corrupt bytes -> None);
* pycuda copies and ``execute_async_v3`` are queued on their stream and only happen at
  ``Stream.synchronize()``; async copies from memory that is not page-locked raise;
* the execution context runs the engine's ONNX graph with ONNX Runtime, so outputs are real numbers.
"""
import atexit
import enum
import itertools
import json
import os
import sys
import threading
import types

import numpy as np
import pytest

MAGIC = b"FAKE-TRT-PLAN\n"


class _Tensor(object):
    def __init__(self, name, dtype, shape=()):
        self.name, self.dtype, self.shape = name, dtype, tuple(shape)


class FakeGPU(object):
    """One fake machine: ``.trt`` and ``.cuda`` (pycuda.driver) share the device memory and the call log."""

    def __init__(self, version="10.3.0", gpu="Orin", cc=(8, 7), dla_cores=2, devices=1, memory_mb=7620, sm_count=8,
                 abort_at_exit=False):
        self.version, self.gpu, self.cc, self.dla_cores, self.devices = version, gpu, cc, dla_cores, devices
        self.memory_mb, self.sm_count = memory_mb, sm_count
        self._tls = threading.local()
        self.all_stacks = []      # every thread's context stack
        self.live_contexts = set()
        self.leaked = []          # contexts detached off their thread while not current (pycuda leaks them)
        if abort_at_exit:         # what pycuda does at module cleanup with a context still on a stack
            atexit.register(self._abort_if_left)
        self.major = int(version.split(".")[0])
        self.calls = []
        self.memory = {}          # device address -> bytearray
        self.pinned = []          # page-locked host arrays
        self.streams = {}         # handle -> list of pending operations
        self.unsupported_ops = {"LayerNormalization"} if version.startswith("8.5") else set()
        self.fail_build = None
        self.timing_cache_fails = False
        self.fast_fp16 = True
        self.builds = []          # one dict per build_serialized_network call
        self._addr = itertools.count(0x10000, 0x10000)
        self.trt = self._make_trt()
        self.cuda = self._make_cuda()

    def install(self, monkeypatch):
        pkg = types.ModuleType("pycuda")
        pkg.driver = self.cuda
        monkeypatch.setitem(sys.modules, "tensorrt", self.trt)
        monkeypatch.setitem(sys.modules, "pycuda", pkg)
        monkeypatch.setitem(sys.modules, "pycuda.driver", self.cuda)
        return self

    def stack(self):
        """The calling thread's context stack (pycuda keeps one per thread)."""
        st = getattr(self._tls, "stack", None)
        if st is None:
            st = self._tls.stack = []
            self.all_stacks.append(st)
        return st

    def leftover(self):
        """Contexts still pushed on some thread's stack (pycuda would abort the process at exit)."""
        return [c for st in self.all_stacks for c in st]

    def _abort_if_left(self):
        if self.leftover():
            sys.stderr.write("PyCUDA ERROR: The context stack was not empty upon module cleanup.\n"
                             "-------------------------------------------------------------------\n"
                             "A context was still active when the context stack was being\ncleaned up.\n")
            sys.stderr.flush()
            os._exit(134)

    def log(self, *call):
        self.calls.append(call)

    def names(self):
        return [c[0] for c in self.calls]

    # ================================================================== pycuda.driver
    def _make_cuda(self):
        gpu = self
        cuda = types.ModuleType("pycuda.driver")

        class Error(Exception):
            pass

        class DeviceAllocation(object):
            def __init__(self, nbytes):
                self.addr = next(gpu._addr)
                self.nbytes = nbytes
                gpu.memory[self.addr] = bytearray(nbytes)

            def __int__(self):
                return self.addr

            def free(self):
                _require_context()
                gpu.log("free", self.addr)
                gpu.memory.pop(self.addr, None)

        class Context(object):
            """pycuda's Context: one context STACK PER THREAD; ``pop`` is static (pops the calling thread's
            top); a context left on any stack aborts the process at exit (see ``FakeGPU.leftover``).
            ``detach`` as pycuda's context::detach (src/cpp/cuda.hpp): a context current on the calling thread
            is destroyed and popped; else one made on this thread is destroyed; else it is leaked
            ("leaked out-of-thread context": never destroyed, see ``FakeGPU.leaked``)."""

            def __init__(self, flags):
                self.detached, self.flags, self.thread = False, flags, threading.get_ident()

            def push(self):
                gpu.log("ctx.push", threading.current_thread().name)
                assert not self.detached, "pushing a detached context"
                gpu.stack().append(self)

            @staticmethod
            def pop():
                gpu.log("ctx.pop", threading.current_thread().name)
                stack = gpu.stack()
                if not stack:
                    raise Error("cuCtxPopCurrent failed: invalid device context")
                stack.pop()

            @staticmethod
            def get_current():
                stack = gpu.stack()
                return stack[-1] if stack else None

            def detach(self):
                gpu.log("ctx.detach", threading.current_thread().name)
                if self.detached:
                    raise Error("context::detach: cannot detach from invalid context")
                stack = gpu.stack()
                if stack and stack[-1] is self:
                    stack.pop()  # detach_internal pops it; current_context(this) drops it from pycuda's stack
                    gpu.live_contexts.discard(self)
                elif self.thread == threading.get_ident():
                    gpu.live_contexts.discard(self)
                else:
                    gpu.leaked.append(self)
                self.detached = True

        class Device(object):
            def __init__(self, index):
                if index >= gpu.devices:
                    raise Error("cuDeviceGet failed: invalid device ordinal")
                self.index = index

            @staticmethod
            def count():
                return gpu.devices

            def name(self):
                return gpu.gpu

            def compute_capability(self):
                return tuple(gpu.cc)

            def total_memory(self):
                return int(gpu.memory_mb) << 20

            def get_attribute(self, attr):
                assert attr == device_attribute.MULTIPROCESSOR_COUNT
                return gpu.sm_count

            def make_context(self, flags=0):
                gpu.log("make_context", self.index, ctx_flags(int(flags)))
                ctx = Context(ctx_flags(int(flags)))
                gpu.stack().append(ctx)  # like cuCtxCreate: pushed on the CALLING thread's stack
                gpu.live_contexts.add(ctx)
                return ctx

        device_attribute = enum.IntEnum("device_attribute", "MULTIPROCESSOR_COUNT TOTAL_CONSTANT_MEMORY")
        cuda.device_attribute = device_attribute
        # pycuda's ctx_flags (wrap_cudadrv.cpp): 0 = SCHED_AUTO spins in synchronize while the GPU is busy
        ctx_flags = enum.IntFlag("ctx_flags", {"SCHED_AUTO": 0, "SCHED_SPIN": 1, "SCHED_YIELD": 2,
                                               "SCHED_BLOCKING_SYNC": 4, "MAP_HOST": 8, "LMEM_RESIZE_TO_MAX": 16})
        cuda.ctx_flags = ctx_flags

        class Stream(object):
            def __init__(self, flags=0):
                _require_context()
                self.handle = next(gpu._addr)
                gpu.streams[self.handle] = []
                gpu.log("Stream", self.handle)

            def synchronize(self):
                _require_context()
                gpu.log("synchronize", self.handle)
                ops, gpu.streams[self.handle] = gpu.streams[self.handle], []
                for op in ops:
                    op()

        def _require_context():
            if not gpu.stack():
                raise Error("cuMemcpyHtoDAsync failed: invalid device context")

        def init(flags=0):
            gpu.log("init")

        def mem_alloc(nbytes):
            _require_context()
            gpu.log("mem_alloc", int(nbytes))
            return DeviceAllocation(int(nbytes))

        def mem_get_info():
            """(free, total) bytes of the current context's device, as cuMemGetInfo."""
            _require_context()
            total = int(gpu.memory_mb) << 20
            return total - sum(len(m) for m in gpu.memory.values()), total

        def pagelocked_empty(shape, dtype, order="C", mem_flags=0):
            _require_context()
            arr = np.empty(shape, dtype, order=order)
            gpu.pinned.append(arr)
            gpu.log("pagelocked_empty", tuple(np.atleast_1d(shape)), np.dtype(dtype).name)
            return arr

        def _check_pinned(host):
            if not any(np.shares_memory(host, p) for p in gpu.pinned):
                raise Error("async copy with pageable host memory (use pagelocked_empty)")

        def _write(dest, data):
            mem = gpu.memory[int(dest)]
            assert len(data) <= len(mem), "copy of %d bytes into a %d-byte device buffer" % (len(data), len(mem))
            mem[:len(data)] = data

        def memcpy_htod(dest, src):
            _write(dest, np.ascontiguousarray(src).tobytes())
            gpu.log("memcpy_htod", int(dest), np.asarray(src).nbytes)

        def memcpy_htod_async(dest, src, stream=None):
            _require_context()
            _check_pinned(src)
            gpu.log("memcpy_htod_async", int(dest), src.nbytes)
            gpu.streams[stream.handle].append(lambda: _write(dest, src.tobytes()))

        def memcpy_dtoh_async(dest, src, stream=None):
            _require_context()
            _check_pinned(dest)
            gpu.log("memcpy_dtoh_async", int(src), dest.nbytes)

            def op():
                raw = bytes(gpu.memory[int(src)][:dest.nbytes])
                dest[...] = np.frombuffer(raw, dest.dtype).reshape(dest.shape)
            gpu.streams[stream.handle].append(op)

        for fn in (init, mem_alloc, mem_get_info, pagelocked_empty, memcpy_htod, memcpy_htod_async, memcpy_dtoh_async):
            setattr(cuda, fn.__name__, fn)
        cuda.Device, cuda.Stream, cuda.Context, cuda.Error = Device, Stream, Context, Error
        cuda.DeviceAllocation = DeviceAllocation
        return cuda

    def read(self, addr, shape, dtype):
        dtype = np.dtype(dtype)
        n = int(np.prod(shape)) * dtype.itemsize
        return np.frombuffer(bytes(self.memory[int(addr)][:n]), dtype).reshape(shape).copy()

    # ================================================================== tensorrt
    def _make_trt(self):
        gpu = self
        trt = types.ModuleType("tensorrt")
        trt.__version__ = self.version
        major = self.major

        # INT64 tensors: TensorRT 10+ (8.5/8.6 have no INT64; the ONNX parser casts to INT32)
        DataType = enum.IntEnum("DataType", "FLOAT HALF INT8 INT32 BOOL UINT8" + (" INT64" if major >= 10 else ""))
        trt.DataType = DataType
        trt.float32, trt.float16, trt.int8, trt.int32 = DataType.FLOAT, DataType.HALF, DataType.INT8, DataType.INT32
        trt.bool = DataType.BOOL
        if major >= 10:
            trt.int64 = DataType.INT64
        index_type = DataType.INT64 if major >= 10 else DataType.INT32
        onnx_types = {1: DataType.FLOAT, 10: DataType.HALF, 6: DataType.INT32, 7: index_type, 9: DataType.BOOL}
        np_types = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT32: np.int32,
                    DataType.BOOL: np.bool_, index_type: np.int64 if major >= 10 else np.int32}
        trt.TensorIOMode = enum.IntEnum("TensorIOMode", "NONE INPUT OUTPUT")
        trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", "WORKSPACE DLA_MANAGED_SRAM DLA_LOCAL_DRAM DLA_GLOBAL_DRAM")
        trt.DeviceType = enum.IntEnum("DeviceType", "GPU DLA")
        flags = ["DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "TF32", "SPARSE_WEIGHTS", "DIRECT_IO"]
        if major < 11:  # weak typing: removed in TensorRT 11
            flags += ["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"]
        trt.BuilderFlag = enum.IntEnum("BuilderFlag", " ".join(flags))
        net_flags = {8: "EXPLICIT_BATCH EXPLICIT_PRECISION", 10: "EXPLICIT_BATCH STRONGLY_TYPED"}.get(major, "STRONGLY_TYPED")
        trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", net_flags, start=0)
        # 8.5 (JetPack 5.1): named tensors, but no INormalizationLayer and no ONNX LayerNormalization importer
        trt.LayerType = enum.IntEnum("LayerType", "CONVOLUTION ACTIVATION ELEMENTWISE REDUCE UNARY SHUFFLE SOFTMAX "
                                     "MATRIX_MULTIPLY CAST IDENTITY GATHER SLICE CONCATENATION CONSTANT SHAPE "
                                     "RESIZE GRID_SAMPLE PLUGIN_V2 QUANTIZE DEQUANTIZE" + ("" if self.version.startswith("8.5") else
                                                                       " NORMALIZATION"))
        trt.ElementWiseOperation = enum.IntEnum("ElementWiseOperation", "SUM PROD MAX MIN SUB DIV POW GREATER LESS")
        trt.ReduceOperation = enum.IntEnum("ReduceOperation", "SUM PROD MAX MIN AVG")
        trt.UnaryOperation = enum.IntEnum("UnaryOperation", "EXP LOG SQRT RECIP ABS NEG SIN COS")

        class Severity(enum.IntEnum):
            INTERNAL_ERROR = 0
            ERROR = 1
            WARNING = 2
            INFO = 3
            VERBOSE = 4

        sev = Severity

        class ILogger(object):
            Severity = sev
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = list(sev)

            def __init__(self):
                self._pybind_init = True  # a pybind base: a subclass must call ILogger.__init__(self)

            def log(self, severity, msg):
                pass

        def _check_base(obj, base):
            if not getattr(obj, "_pybind_init", False):
                raise TypeError("%s.__init__() must be called when overriding __init__" % base)

        class Logger(ILogger):
            def __init__(self, min_severity=Severity.WARNING):
                ILogger.__init__(self)

        trt.ILogger, trt.Logger = ILogger, Logger

        def init_libnvinfer_plugins(logger, namespace):
            gpu.log("init_libnvinfer_plugins")
            return True
        trt.init_libnvinfer_plugins = init_libnvinfer_plugins

        # ---------------------------------------------------------- network and layers
        class ILayer(object):
            def __init__(self, name, ltype, inputs, outputs, op=None):
                self.name, self.type, self._inputs, self._outputs, self._op = name, ltype, inputs, outputs, op
                self._precision = None
                self.output_types = {}

            num_inputs = property(lambda self: len(self._inputs))
            num_outputs = property(lambda self: len(self._outputs))

            def get_input(self, i):
                return self._inputs[i]

            def get_output(self, i):
                return self._outputs[i]

            @property
            def precision(self):
                return self._precision if self._precision is not None else DataType.FLOAT

            @precision.setter
            def precision(self, value):
                if major >= 11:
                    raise AttributeError("layer precision was removed in TensorRT 11 (strong typing)")
                gpu.log("layer.precision", self.name, value)
                self._precision = value

            def set_output_type(self, index, dtype):
                if major >= 11:
                    raise AttributeError("set_output_type was removed in TensorRT 11")
                assert self._outputs[index].dtype in (DataType.FLOAT, DataType.HALF), \
                    "set_output_type(float) on %s output of %s" % (self._outputs[index].dtype.name, self.name)
                self.output_types[index] = dtype

        if major >= 11:  # strong typing only: no layer precision, no output types (absent in the real 11.4)
            del ILayer.precision, ILayer.set_output_type

        class IElementWiseLayer(ILayer):
            op = property(lambda self: self._op)

        class IReduceLayer(ILayer):
            op = property(lambda self: self._op)

        class IUnaryLayer(ILayer):
            op = property(lambda self: self._op)

        trt.ILayer, trt.IElementWiseLayer, trt.IReduceLayer, trt.IUnaryLayer = (
            ILayer, IElementWiseLayer, IReduceLayer, IUnaryLayer)

        class INetworkDefinition(object):
            def __init__(self, flags):
                self.flags, self.layers, self.inputs, self.outputs, self.source = flags, [], [], [], None

            num_layers = property(lambda self: len(self.layers))
            num_inputs = property(lambda self: len(self.inputs))
            num_outputs = property(lambda self: len(self.outputs))

            def get_layer(self, i):
                layer = self.layers[i]
                layer.__class__ = ILayer  # like pybind: the base class until the caller downcasts
                return layer

            def get_input(self, i):
                return self.inputs[i]

            def get_output(self, i):
                return self.outputs[i]

        class ParserError(object):
            def __init__(self, index, name, op, desc):
                self._index, self._name, self._op, self._desc = index, name, op, desc

            def desc(self):
                return self._desc

            def node(self):
                return self._index

            def code(self):
                return 8  # UNSUPPORTED_NODE

        if major >= 10:  # node_name / node_operator exist from TensorRT 10.0
            ParserError.node_name = lambda self: self._name
            ParserError.node_operator = lambda self: self._op

        class OnnxParser(object):
            def __init__(self, network, logger):
                _check_base(logger, "ILogger")
                self.network, self.errors = network, []

            num_errors = property(lambda self: len(self.errors))

            def get_error(self, i):
                return self.errors[i]

            def parse_from_file(self, path):
                import onnx
                gpu.log("parse_from_file", path)
                self.network.source = str(path)  # the fake plan keeps it to run the graph with ONNX Runtime
                if major < 10 and not self.network.flags & (1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)):
                    self.errors.append(ParserError(-1, "", "", "Network must have explicit batch dimension"))
                    return False
                try:
                    model = onnx.load(path)
                except Exception as exc:
                    self.errors.append(ParserError(-1, "", "", "Failed to parse ONNX model: %s" % exc))
                    return False
                _populate(self.network, model, self.errors)
                return not self.errors

        def _populate(network, model, errors):
            inits = {i.name for i in model.graph.initializer}
            tensors = {}

            def tensor(name, dtype=DataType.FLOAT):
                if name not in tensors:
                    tensors[name] = _Tensor(name, dtype)
                return tensors[name]

            for inp in model.graph.input:
                if inp.name in inits:
                    continue
                dims = [d.dim_value if d.HasField("dim_value") else -1 for d in inp.type.tensor_type.shape.dim]
                t = tensor(inp.name, onnx_types[inp.type.tensor_type.elem_type])  # FP16 ONNX -> HALF I/O
                t.shape = tuple(dims)
                network.inputs.append(t)
            kinds = {"LayerNormalization": ("NORMALIZATION", None), "Softmax": ("SOFTMAX", None),
                     "MatMul": ("MATRIX_MULTIPLY", None), "Gemm": ("MATRIX_MULTIPLY", None),
                     "Greater": ("ELEMENTWISE", "GREATER"), "Mul": ("ELEMENTWISE", "PROD"),
                     "Div": ("ELEMENTWISE", "DIV"), "Add": ("ELEMENTWISE", "SUM"), "Sub": ("ELEMENTWISE", "SUB"),
                     "Pow": ("ELEMENTWISE", "POW"), "Cast": ("CAST" if major >= 10 else "IDENTITY", None),
                     "Identity": ("IDENTITY", None), "Reshape": ("SHUFFLE", None), "Transpose": ("SHUFFLE", None),
                     "Squeeze": ("SHUFFLE", None), "Unsqueeze": ("SHUFFLE", None), "Flatten": ("SHUFFLE", None),
                     "Gather": ("GATHER", None), "Slice": ("SLICE", None), "Concat": ("CONCATENATION", None),
                     "Constant": ("CONSTANT", None), "Shape": ("SHAPE", None), "ReduceMax": ("REDUCE", "MAX"),
                     "ReduceMean": ("REDUCE", "AVG"), "ReduceSum": ("REDUCE", "SUM"), "Sqrt": ("UNARY", "SQRT"),
                     "Relu": ("ACTIVATION", None), "Sigmoid": ("ACTIVATION", None), "Conv": ("CONVOLUTION", None),
                     "GridSample": ("GRID_SAMPLE", None), "Resize": ("RESIZE", None),
                     "QuantizeLinear": ("QUANTIZE", None), "DequantizeLinear": ("DEQUANTIZE", None)}
            ops = {"ELEMENTWISE": trt.ElementWiseOperation, "REDUCE": trt.ReduceOperation, "UNARY": trt.UnaryOperation}
            classes = {"ELEMENTWISE": IElementWiseLayer, "REDUCE": IReduceLayer, "UNARY": IUnaryLayer}

            def add(name, ltype, op, ins, outs):
                layer = classes.get(ltype, ILayer)(name, trt.LayerType[ltype], ins, outs,
                                                   ops[ltype][op] if op else None)
                network.layers.append(layer)

            for index, node in enumerate(model.graph.node):
                if node.op_type in gpu.unsupported_ops:
                    errors.append(ParserError(index, node.name, node.op_type,
                                               "No importer registered for op: %s" % node.op_type))
                    continue
                if node.op_type in ("QuantizeLinear", "DequantizeLinear") and not _symmetric_int8(model, node):
                    errors.append(ParserError(index, node.name, node.op_type, "Assertion failed: TensorRT only "
                                              "supports symmetric INT8 quantization (zero point 0, type INT8)"))
                    continue
                ins = [tensor(i) for i in node.input if i]
                out_dtype = {"Greater": DataType.BOOL, "Shape": index_type}.get(node.op_type, DataType.FLOAT)
                outs = [tensor(o, out_dtype) for o in node.output]
                if node.op_type == "ReduceL2":  # TensorRT's parser: sqrt(reduce_sum(x * x))
                    sq, sm = tensor(node.name + "_sq"), tensor(node.name + "_sum")
                    add(node.name + "_square", "ELEMENTWISE", "PROD", [ins[0], ins[0]], [sq])
                    add(node.name + "_reduce", "REDUCE", "SUM", [sq], [sm])
                    add(node.name, "UNARY", "SQRT", [sm], outs)
                    continue
                ltype, op = kinds.get(node.op_type, ("PLUGIN_V2", None))
                add(node.name, ltype, op, ins, outs)
            network.outputs = [tensor(o.name, onnx_types[o.type.tensor_type.elem_type]) for o in model.graph.output]

        def _symmetric_int8(model, node):
            zp = {i.name: i for i in model.graph.initializer}.get(node.input[2] if len(node.input) > 2 else "")
            return zp is not None and zp.data_type == 3 and not any(onnx_numpy(zp).ravel())  # 3: INT8

        def onnx_numpy(t):
            from onnx import numpy_helper
            return numpy_helper.to_array(t)

        trt.INetworkDefinition, trt.OnnxParser, trt.ParserError = INetworkDefinition, OnnxParser, ParserError

        # ---------------------------------------------------------- builder
        class IOptimizationProfile(object):
            def __init__(self):
                self.shapes = {}

            def set_shape(self, input, min, opt, max):
                min, opt, max = tuple(min), tuple(opt), tuple(max)
                assert all(a <= b <= c for a, b, c in zip(min, opt, max)), "profile %s: min<=opt<=max" % input
                gpu.log("set_shape", input, min, opt, max)
                self.shapes[input] = (min, opt, max)

        class ITimingCache(object):
            def __init__(self, data):
                self.data = bytes(data)

            def serialize(self):
                return self.data + b"+"

        class IBuilderConfig(object):
            def __init__(self):
                self.flags, self.profiles, self.pools = set(), [], {}
                self.default_device_type, self.DLA_core = trt.DeviceType.GPU, -1
                self.timing_cache = None

            def set_memory_pool_limit(self, pool, pool_size):
                gpu.log("set_memory_pool_limit", pool, pool_size)
                self.pools[pool] = pool_size

            def set_flag(self, flag):
                gpu.log("set_flag", flag.name)
                self.flags.add(flag)

            def get_flag(self, flag):
                return flag in self.flags

            def add_optimization_profile(self, profile):
                self.profiles.append(profile)
                return len(self.profiles) - 1

            def create_timing_cache(self, serialized_timing_cache):
                gpu.log("create_timing_cache", bytes(serialized_timing_cache))
                if gpu.timing_cache_fails:  # real TensorRT may return None (polygraphy guards it)
                    return None
                return ITimingCache(serialized_timing_cache)

            def set_timing_cache(self, cache, ignore_mismatch):
                if cache is None:
                    raise TypeError("set_timing_cache(): incompatible function arguments")
                self.timing_cache = cache
                return True

            def get_timing_cache(self):
                return self.timing_cache

            def can_run_on_DLA(self, layer):
                """Layer kinds on NVIDIA's DLA supported-layers list (GridSample, Gather, Shape, Cast, MatMul and
                normalisation are not: they fall back to the GPU)."""
                return layer.type.name in ("CONVOLUTION", "ACTIVATION", "ELEMENTWISE", "CONCATENATION", "RESIZE",
                                           "SHUFFLE", "SLICE", "SOFTMAX", "REDUCE", "UNARY")

        class Builder(object):
            def __init__(self, logger):
                _check_base(logger, "ILogger")
                self.logger = logger
                if major < 11:  # gone in 11 (strong typing only)
                    self.platform_has_fast_fp16 = gpu.fast_fp16
                self.num_DLA_cores = gpu.dla_cores

            def create_network(self, flags=0):
                gpu.log("create_network", flags)
                return INetworkDefinition(flags)

            def create_builder_config(self):
                return IBuilderConfig()

            def create_optimization_profile(self):
                return IOptimizationProfile()

            def build_serialized_network(self, network, config):
                gpu.log("build_serialized_network")
                if gpu.fail_build:
                    self.logger.log(Severity.ERROR, gpu.fail_build)
                    return None
                for t in network.inputs:
                    if any(d < 0 for d in t.shape) and not any(t.name in p.shapes for p in config.profiles):
                        self.logger.log(Severity.ERROR, "%s: dynamic input without a profile" % t.name)
                        return None
                obey = trt.BuilderFlag.__members__.get("OBEY_PRECISION_CONSTRAINTS") in config.flags
                for l in network.layers:  # real TensorRT: a FLOAT pin on an INT32/BOOL layer fails under OBEY
                    if obey and l._precision is not None and any(
                            o.dtype not in (DataType.FLOAT, DataType.HALF) for o in l._outputs):
                        self.logger.log(Severity.ERROR, "%s: no implementation obeys reformatting-free rules "
                                        "(precision FLOAT on a %s layer)" % (l.name, l._outputs[0].dtype.name))
                        return None
                # strongly typed (10.x with the flag; always on 11): precision flags and layer pins are build errors
                typed = major >= 11 or (major >= 10 and bool(network.flags & (1 << int(
                    trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))))
                weak = {trt.BuilderFlag.__members__.get(n) for n in ("FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS")}
                if typed and (weak & config.flags or any(l._precision is not None for l in network.layers)):
                    self.logger.log(Severity.ERROR, "precision flags or layer precisions on a strongly typed network")
                    return None
                qdq = any(l.type.name in ("QUANTIZE", "DEQUANTIZE") for l in network.layers)
                if qdq and not typed and trt.BuilderFlag.INT8 not in config.flags:  # 8.x explicit quantization
                    self.logger.log(Severity.ERROR, "Q/DQ layers in the network but the INT8 builder flag is not set")
                    return None
                profile = config.profiles[0].shapes
                record = {"flags": sorted(f.name for f in config.flags), "profile": profile, "typed": typed,
                          "source": network.source,
                          "pinned": [l.name for l in network.layers if l._precision is not None],
                          "output_types": {l.name: list(l.output_types) for l in network.layers if l.output_types},
                          "device": config.default_device_type.name, "dla_core": config.DLA_core}
                gpu.builds.append(record)
                return _plan(network, profile, record)

        def _plan(network, profile, record):
            body = {"version": gpu.version, "inputs": [(t.name, list(t.shape)) for t in network.inputs],
                    "outputs": [t.name for t in network.outputs],
                    "dtypes": {t.name: t.dtype.name for t in network.inputs + network.outputs}, "source": network.source,
                    "profile": {k: [list(s) for s in v] for k, v in profile.items()}, "build": record}
            return MAGIC + json.dumps(body).encode()

        trt.Builder, trt.IBuilderConfig, trt.IOptimizationProfile = Builder, IBuilderConfig, IOptimizationProfile

        # ---------------------------------------------------------- runtime
        class ICudaEngine(object):
            def __init__(self, body):
                self.body = body
                self.inputs = [n for n, _ in body["inputs"]]
                self.names = self.inputs + body["outputs"]

            num_io_tensors = property(lambda self: len(self.names))
            num_optimization_profiles = 1

            def get_tensor_name(self, i):
                return self.names[i]

            def get_tensor_mode(self, name):
                return trt.TensorIOMode.INPUT if name in self.inputs else trt.TensorIOMode.OUTPUT

            def get_tensor_dtype(self, name):
                return DataType[self.body["dtypes"][name]]

            def get_tensor_shape(self, name):  # dynamic axes read -1
                shapes = dict(self.body["inputs"])
                return tuple(shapes[name]) if name in shapes else None

            def get_tensor_profile_shape(self, name, profile_index):
                assert profile_index == 0
                return [tuple(s) for s in self.body["profile"][name]]

            def _activation_bytes(self):
                """A stand-in for the activation memory real TensorRT sizes from its tactics: the inputs' bytes at
                the profile max (it grows with the profile, as the real one does)."""
                return sum(4 * int(np.prod(s[2])) for s in self.body["profile"].values())

            device_memory_size = property(_activation_bytes)

            def _context(self, how, own_memory):
                gpu.log("create_execution_context", how)
                return IExecutionContext(self, own_memory)

            def create_execution_context(self, strategy=None):  # 8.x: no argument
                name = "STATIC" if strategy is None else trt.ExecutionContextAllocationStrategy(strategy).name
                return self._context(name, name != "USER_MANAGED")

            def create_execution_context_without_device_memory(self):
                return self._context("without_device_memory", False)

        if major >= 10:
            trt.ExecutionContextAllocationStrategy = enum.IntEnum("ExecutionContextAllocationStrategy",
                                                                  "STATIC ON_PROFILE_CHANGE USER_MANAGED", start=0)
            ICudaEngine.device_memory_size_v2 = property(ICudaEngine._activation_bytes)
        if major >= 11:  # the pre-v2 names are gone in 11
            del ICudaEngine.device_memory_size, ICudaEngine.create_execution_context_without_device_memory

        class IExecutionContext(object):
            def __init__(self, engine, own_memory=True):
                self.engine, self.shapes, self.addresses, self._session, self._out_shapes = engine, {}, {}, None, {}
                self._memory = None if own_memory else 0  # 0: the caller must give activation memory

            def _give(self, memory, size):
                assert size >= self.engine._activation_bytes(), "activation memory smaller than the engine needs"
                assert len(gpu.memory[int(memory)]) >= size, "activation memory beyond its allocation"
                gpu.log("device_memory", int(memory), int(size))
                self._memory = int(memory)

            device_memory = property(lambda self: self._memory,
                                     lambda self, memory: self._give(memory, self.engine._activation_bytes()))

            if major >= 10:
                def set_device_memory(self, memory, size):
                    self._give(memory, size)

            def set_input_shape(self, name, shape):
                shape = tuple(int(d) for d in shape)
                lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
                if len(shape) != len(lo) or not all(a <= d <= b for d, a, b in zip(shape, lo, hi)):
                    return False  # the real one logs an error and returns False
                self.shapes[name] = shape
                return True

            def set_tensor_address(self, name, memory):
                self.addresses[name] = int(memory)
                return True

            def _session_(self):
                if self._session is None:
                    import onnxruntime as ort
                    self._session = ort.InferenceSession(self.engine.body["source"], providers=["CPUExecutionProvider"])
                return self._session

            def _np(self, name):
                return np_types[self.engine.get_tensor_dtype(name)]

            def _run(self, feeds):
                names = self.engine.body["outputs"]
                return dict(zip(names, self._session_().run(names, feeds)))

            def get_tensor_shape(self, name):
                if name in self.engine.inputs:  # an input not set yet reads its dynamic axes as -1, like the real one
                    return self.shapes.get(name, self.engine.get_tensor_shape(name))
                key = tuple(sorted(self.shapes.items()))
                if key not in self._out_shapes:  # shape inference: a dry run on zeros
                    feeds = {n: np.zeros(s, self._np(n)) for n, s in self.shapes.items()}
                    self._out_shapes[key] = {n: v.shape for n, v in self._run(feeds).items()}
                return self._out_shapes[key][name]

            def execute_async_v3(self, stream_handle):
                gpu.log("execute_async_v3", stream_handle)
                assert self._memory != 0, "execute without activation memory (context made without it)"
                missing = [n for n in self.engine.names if n not in self.addresses]
                assert not missing, "tensor addresses not set: %s" % missing
                shapes = {n: self.get_tensor_shape(n) for n in self.engine.body["outputs"]}

                def op():
                    feeds = {n: gpu.read(self.addresses[n], self.shapes[n], self._np(n)) for n in self.engine.inputs}
                    for name, value in self._run(feeds).items():
                        assert value.shape == tuple(shapes[name])
                        data = np.ascontiguousarray(value, self._np(name)).tobytes()
                        mem = gpu.memory[self.addresses[name]]
                        assert len(data) <= len(mem), "output %s overflows its device buffer" % name
                        mem[:len(data)] = data
                gpu.streams[stream_handle].append(op)
                return True

        class Runtime(object):
            def __init__(self, logger):
                _check_base(logger, "ILogger")
                self.logger, self.DLA_core = logger, -1

            def deserialize_cuda_engine(self, serialized_engine):
                data = bytes(serialized_engine)
                gpu.log("deserialize_cuda_engine", len(data))
                try:
                    assert data.startswith(MAGIC)
                    body = json.loads(data[len(MAGIC):].decode())
                except Exception:
                    self.logger.log(Severity.ERROR, "1: [stdArchiveReader.cpp] Serialization assertion failed")
                    return None
                if body["version"] != gpu.version:
                    self.logger.log(Severity.ERROR, "The engine plan file is not compatible with this version of TensorRT")
                    return None
                return ICudaEngine(body)

        trt.Runtime, trt.ICudaEngine, trt.IExecutionContext = Runtime, ICudaEngine, IExecutionContext

        return trt


# ====================================================================== a real bundle for the tests
def fresh_bundle(src, dst):
    """A new bundle folder at ``dst`` holding the exported bundle ``src`` (graphs and vocabulary hard-linked, or
    copied across file systems; symlinks out of a bundle are refused), so each test gets its own engine cache."""
    import os
    import shutil
    os.makedirs(str(dst))
    for name in os.listdir(str(src)):
        if name.endswith((".onnx", ".npy")):
            try:
                os.link(os.path.join(str(src), name), os.path.join(str(dst), name))
            except OSError:
                shutil.copyfile(os.path.join(str(src), name), os.path.join(str(dst), name))
    shutil.copy(os.path.join(str(src), "manifest.json"), os.path.join(str(dst), "manifest.json"))
    return str(dst)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """The session's exported tiny R18 bundle (tests/_bundle_fixture.py)."""
    from _bundle_fixture import shared_bundle
    return shared_bundle(tmp_path_factory)


@pytest.fixture
def bundle(tmp_path, tiny_bundle):
    """A fresh bundle folder (graphs linked from the session export) with its own engine cache."""
    return fresh_bundle(tiny_bundle, tmp_path / "r18")
