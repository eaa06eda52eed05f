"""The one adapter to ``tensorrt`` (8.5 to 11): every call that differs between versions, checked against NVIDIA's
real bindings by tests/test_tensorrt_real_bindings.py. Nothing is imported at import."""
import collections
import importlib
import re
from typing import List, Optional, Sequence, Tuple

import numpy as np

from rmpsam_edge.errors import UserError

MIN_VERSION = (8, 5)  # named-tensor API (set_input_shape / set_tensor_address / execute_async_v3)
NOT_INSTALLED = ("tensorrt not installed (Jetson: comes with JetPack, never pip: `sudo apt install "
                 "python3-libnvinfer`, then the system python3 or a --system-site-packages venv; desktop GPU: pip install "
                 "\"tensorrt-cu12<11\" for 10.x, or pip install tensorrt for 11.x: strongly typed, no DLA)")


def import_tensorrt():
    try:
        return importlib.import_module("tensorrt")
    except ImportError as exc:
        raise UserError("%s (%s)" % (NOT_INSTALLED, exc))


def parse_version(text: str) -> Tuple[int, ...]:
    """'8.6.2.3+cuda12' -> (8, 6, 2, 3)."""
    m = re.match(r"\d+(\.\d+)*", str(text))
    return tuple(int(p) for p in m.group(0).split(".")) if m else (0,)


# TensorRT DataType name -> numpy dtype (trt.nptype exists in 8.6 and 10 but not for every type).
_NP_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "BOOL": np.bool_,
              "UINT8": np.uint8, "INT64": np.int64}


# LayerType -> kind, or (subclass, op enum, ((op, kind), ...), kind of any other op)
_LAYER_KINDS = {
    "NORMALIZATION": "layernorm", "SOFTMAX": "softmax", "MATRIX_MULTIPLY": "matmul", "FULLY_CONNECTED": "matmul",
    "SHUFFLE": "reshape", "IDENTITY": "cast", "CAST": "cast", "GATHER": "gather", "SLICE": "slice",
    "CONCATENATION": "concat", "CONSTANT": "constant", "SHAPE": "shape", "ACTIVATION": "activation",
    "CONVOLUTION": "conv", "DECONVOLUTION": "conv", "GRID_SAMPLE": "grid_sample", "RESIZE": "resize",
    "ELEMENTWISE": ("IElementWiseLayer", "ElementWiseOperation", (("GREATER", "greater"), ("PROD", "mul"),
                    ("DIV", "div"), ("SUM", "add"), ("SUB", "sub"), ("POW", "pow")), "elementwise"),
    "REDUCE": ("IReduceLayer", "ReduceOperation", (("MAX", "reduce_max"), ("SUM", "reduce_sum"),
               ("AVG", "reduce_mean")), "reduce"),
    "UNARY": ("IUnaryLayer", "UnaryOperation", (("SQRT", "sqrt"),), "unary"),
}


class Compat(object):
    """Version-dispatching facade over one ``tensorrt`` module."""

    def __init__(self, trt):
        self.trt = trt
        self.version_string = str(getattr(trt, "__version__", "0"))
        self.version = parse_version(self.version_string)
        self.major = self.version[0]
        if self.version[:2] < MIN_VERSION:
            raise UserError("TensorRT %s is too old: this runtime needs TensorRT 8.5 or newer (named-tensor API; "
                            "JetPack 5.1+ ships 8.5/8.6)" % self.version_string)
        flags = trt.BuilderFlag
        # 8.5 to 10.x have weak typing (FP16/INT8 builder flags, layer pins); 11.x is strongly typed only.
        self.weak_typing = hasattr(flags, "FP16") and hasattr(flags, "OBEY_PRECISION_CONSTRAINTS")

    # ---------------------------------------------------------------- building
    def logger(self, sink: List[Tuple[str, str]], verbose: bool = False):
        """An ``ILogger`` keeping (severity, message) pairs in ``sink``."""
        trt = self.trt
        keep = ("INTERNAL_ERROR", "ERROR", "WARNING") + (("INFO", "VERBOSE") if verbose else ())

        class _Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)

            def log(self, severity, msg):
                name = getattr(severity, "name", str(severity)).split(".")[-1]  # Severity.ERROR -> ERROR
                if name in keep:
                    sink.append((name, str(msg)))

        return _Logger()

    def typed(self, dla: bool = False) -> bool:
        """The one precision decision per version: a STRONGLY_TYPED network (the graph's types are the precision)
        on 10.x and 11.x; weak typing (FP16/INT8 flags, FP32 pins) on 8.5 / 8.6 and for DLA on 10.x."""
        return not self.weak_typing or (self.major >= 10 and not dla)

    def create_network(self, builder, typed: bool = False):
        """8.x: EXPLICIT_BATCH requested (10.x+: always); STRONGLY_TYPED from 10.0 (11: every network)."""
        ncf = self.trt.NetworkDefinitionCreationFlag
        flags = 1 << int(ncf.EXPLICIT_BATCH) if self.major < 10 else 0
        if typed:
            flags |= 1 << int(ncf.STRONGLY_TYPED)
        return builder.create_network(flags)

    def set_workspace(self, config, nbytes: int) -> None:  # max_workspace_size: removed in 10
        config.set_memory_pool_limit(self.trt.MemoryPoolType.WORKSPACE, int(nbytes))

    def set_precision(self, config, precision: str, pinned: bool, typed: bool = False) -> None:
        """Weak typing only: FP16 (+ OBEY_PRECISION_CONSTRAINTS with pins); int8 adds INT8 (8.x quantizes a Q/DQ
        graph only with that flag)."""
        trt = self.trt
        if precision == "fp32" or typed:
            return
        config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
        if pinned:
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)

    def pin_fp32(self, layer) -> bool:
        """-> whether pinned: only layers whose outputs are all FLOAT/HALF (with OBEY_PRECISION_CONSTRAINTS a pin
        on an INT32/BOOL layer fails the build)."""
        trt = self.trt
        outs = [layer.get_output(i) for i in range(layer.num_outputs)]
        if not outs or any(t.dtype not in (trt.float32, trt.float16) for t in outs):
            return False
        layer.precision = trt.float32
        for i in range(layer.num_outputs):
            layer.set_output_type(i, trt.float32)
        return True

    def use_dla(self, builder, config, core: int, network) -> str:
        """Put the network on DLA core ``core`` with GPU fallback -> one line naming the layers left on the GPU
        (``IBuilderConfig.can_run_on_DLA``). Orin Nano / Orin Nano Super and desktop GPUs have no DLA cores."""
        trt = self.trt
        cores = int(getattr(builder, "num_DLA_cores", 0))
        if cores <= 0:
            raise UserError("--dla %d: this GPU has no DLA (only Jetson AGX Xavier, Xavier NX, AGX Orin and Orin NX "
                            "have DLA cores; Orin Nano, Orin Nano Super and desktop GPUs do not); build without --dla"
                            % core)
        if core >= cores:
            raise UserError("--dla %d: this machine has %d DLA core(s) (0..%d)" % (core, cores, cores - 1))
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        layers = [network.get_layer(i) for i in range(network.num_layers)]
        gpu_kinds = collections.Counter(str(getattr(l.type, "name", l.type)) for l in layers if not config.can_run_on_DLA(l))
        kinds = ", ".join("%s x%d" % (k, n) for k, n in sorted(gpu_kinds.items(), key=lambda kv: (-kv[1], kv[0])))
        return "DLA core %d runs %d of %d layers; on the GPU (each switch costs a transfer): %s" % (
            core, len(layers) - sum(gpu_kinds.values()), len(layers), kinds or "none")

    def parser_error_line(self, error, node_names: Optional[Sequence[Tuple[str, str]]] = None) -> str:
        """One line per parser error naming the failing node. 10.x: node_name()/node_operator(); 8.6: only the
        node index, mapped to (name, op) through ``node_names`` when the caller could read the ONNX file."""
        desc = str(error.desc()).strip()
        index = int(error.node()) if hasattr(error, "node") else -1
        name, op = "", ""
        if hasattr(error, "node_name"):
            name, op = str(error.node_name() or ""), str(error.node_operator() or "")
        if not name and node_names is not None and 0 <= index < len(node_names):
            name, op = node_names[index]
        where = "node %d" % index if index >= 0 else ("node" if name or op else "the graph")
        return "%s%s: %s" % (where, " '%s' (%s)" % (name, op) if name or op else "", desc)

    def layer_kind(self, layer) -> str:
        """Normalised op kind of a network layer (the kinds of ``sensitive_layers.ONNX_KINDS``)."""
        lt = self.trt.LayerType
        for name, kind in _LAYER_KINDS.items():
            if hasattr(lt, name) and layer.type == getattr(lt, name):
                if not isinstance(kind, tuple):
                    return kind
                cls, enum, ops, other = kind
                # network.get_layer() returns the ILayer base; polygraphy's downcast reaches the subclass's op
                layer.__class__ = getattr(self.trt, cls)
                return next((k for op, k in ops if layer.op == getattr(getattr(self.trt, enum), op)), other)
        return "other"

    # ---------------------------------------------------------------- engines
    def deserialize(self, runtime, data: bytes):
        """-> ICudaEngine or None (TensorRT returns None and logs an error for a bad or foreign plan)."""
        try:
            return runtime.deserialize_cuda_engine(data)
        except Exception:  # some versions raise instead of returning None
            return None

    def np_dtype(self, trt_dtype):
        name = getattr(trt_dtype, "name", str(trt_dtype)).split(".")[-1].upper()
        if name not in _NP_DTYPES:
            raise UserError("engine tensor type %s is not supported by this runtime" % name)
        return np.dtype(_NP_DTYPES[name])

    def io_tensors(self, engine) -> List[Tuple[str, bool, np.dtype]]:
        """[(name, is_input, numpy dtype)] through the named-tensor API."""
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        return [(n, engine.get_tensor_mode(n) == self.trt.TensorIOMode.INPUT, self.np_dtype(engine.get_tensor_dtype(n)))
                for n in names]

    def profile_shapes(self, engine, name: str) -> Tuple[Tuple[int, ...], ...]:
        """(min, opt, max) of one input in profile 0."""
        return tuple(tuple(int(d) for d in dims) for dims in engine.get_tensor_profile_shape(name, 0))

    def context_without_memory(self, engine):
        """-> (an execution context without its own activation memory, the bytes it needs): 10.x+ the
        USER_MANAGED allocation strategy, 8.x ``create_execution_context_without_device_memory``."""
        if hasattr(self.trt, "ExecutionContextAllocationStrategy"):
            return (engine.create_execution_context(self.trt.ExecutionContextAllocationStrategy.USER_MANAGED),
                    int(engine.device_memory_size_v2))
        return engine.create_execution_context_without_device_memory(), int(engine.device_memory_size)

    @staticmethod
    def give_memory(context, address: int, size: int) -> None:
        if hasattr(context, "set_device_memory"):  # 10.x+
            context.set_device_memory(address, size)
        else:
            context.device_memory = address
