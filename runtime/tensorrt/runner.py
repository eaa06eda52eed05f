"""TensorRT runner (pycuda): the same ``Runner`` interface and outputs as the other backends.

One CUDA context and one stream per runner. Each graph's engine is loaded (or built) the first time it
is used; its page-locked host buffers and device buffers are allocated once, at the engine profile's
MAX shapes, and reused for every shape inside the profile. A call: set_input_shape -> async H2D copies
-> execute_async_v3 -> async D2H copies -> one stream sync. The decoders read the encoder's features
straight from the encoder's device buffer when they get the array the encoder just returned (no copy).
Named-tensor API only (TensorRT 8.5+; the bindings API is gone in 10).
"""
from typing import Dict, List, Optional, Tuple

import numpy as np

from rmpsam_edge.errors import UserError

from ..base import GRAPHS, Runner
from . import compat as compat_mod
from .engines import Bundle, Choices, Session, graph_precision, stderr_log
from .profiles import check_within


def plan_buffers(compat, engine, context) -> Dict[str, Tuple[np.dtype, Tuple[int, ...], bool]]:
    """{tensor: (dtype, max shape, is_input)}: inputs at the profile max, outputs as TensorRT infers them
    from those max input shapes."""
    plan = {}
    io = compat.io_tensors(engine)
    for name, is_input, dtype in io:
        if is_input:
            hi = compat.profile_shapes(engine, name)[2]
            if not context.set_input_shape(name, hi):
                raise UserError("TensorRT refused input '%s' at the profile max %s" % (name, list(hi)))
            plan[name] = (dtype, hi, True)
    for name, is_input, dtype in io:
        if not is_input:
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise UserError("output '%s' has no fixed size at the profile max (%s)" % (name, list(shape)))
            plan[name] = (dtype, shape, False)
    return plan


class _Graph(object):
    def __init__(self, name, engine, context, plan, profiles, host, device):
        self.name, self.engine, self.context, self.plan = name, engine, context, plan
        self.profiles, self.host, self.device = profiles, host, device
        self.inputs = [n for n, p in plan.items() if p[2]]
        self.outputs = [n for n, p in plan.items() if not p[2]]


class TensorRTRunner(Runner):
    name = "tensorrt"

    def __init__(self, bundle, choices: Optional[Choices] = None, build: bool = True, device: int = 0,
                 log=stderr_log, trt=None, cuda=None):
        self.bundle = Bundle(bundle)
        self.choices, self.build, self.device_index, self.log = choices or Choices(), build, device, log
        self._trt, self._cuda = trt, cuda
        self._ctx = None
        self._graphs = {}  # type: Dict[str, _Graph]
        self._last_features = None  # (array returned by the encoder, its device buffer)

    # ------------------------------------------------------------------ lifecycle
    def activate(self) -> None:
        if self._ctx is not None:
            return
        trt = self._trt or compat_mod.import_tensorrt()
        cuda = self._cuda or compat_mod.import_pycuda()
        self.compat = compat_mod.Compat(trt)
        self.gpu = self.compat.device_info(cuda, self.device_index)
        self.cuda = cuda
        self._ctx = cuda.Device(self.device_index).make_context()
        try:
            self.stream = cuda.Stream()
            self._messages = []  # type: List[Tuple[str, str]]
            self.runtime = trt.Runtime(self.compat.logger(self._messages))
            self.session = Session(self.compat, self.gpu, self.bundle, cuda, self.log)
            self.choices = self.session.fill_choices(self.choices)
        except BaseException:
            self.deactivate()
            raise

    def deactivate(self) -> None:
        if self._ctx is None:
            return
        try:
            if getattr(self, "stream", None) is not None:
                self.stream.synchronize()
            for g in self._graphs.values():
                for buf in g.device.values():
                    buf.free()
            self._graphs, self._last_features = {}, None
            self.runtime = None
        finally:
            self._ctx.pop()
            self._ctx.detach()
            self._ctx = None

    def describe(self) -> str:
        if self._ctx is None:
            return "tensorrt (not active)"
        return "tensorrt %s %s on %s (sm %s)" % (self.compat.version_string, self.choices.precision, self.gpu[0],
                                                  self.gpu[1])

    # ------------------------------------------------------------------ engines and buffers
    def _graph(self, graph: str) -> _Graph:
        if graph in self._graphs:
            return self._graphs[graph]
        if graph not in GRAPHS:
            raise UserError("unknown graph '%s' (one of %s)" % (graph, ", ".join(GRAPHS)))
        if self._ctx is None:
            self.activate()
        if graph == "encoder" and self.choices.dla_core is not None:
            self.runtime.DLA_core = int(self.choices.dla_core)  # before deserialising a DLA engine
        engine = self.session.load_engine(self.runtime, graph, self.choices, build=self.build)
        context = engine.create_execution_context()
        plan = plan_buffers(self.compat, engine, context)
        profiles = {n: self.compat.profile_shapes(engine, n) for n, p in plan.items() if p[2]}
        host, device = {}, {}
        for name, (dtype, shape, _) in plan.items():
            count = int(np.prod(shape))
            host[name] = self.cuda.pagelocked_empty(count, dtype)
            device[name] = self.cuda.mem_alloc(max(1, count * dtype.itemsize))
            context.set_tensor_address(name, int(device[name]))
        g = _Graph(graph, engine, context, plan, profiles, host, device)
        self._graphs[graph] = g
        return g

    # ------------------------------------------------------------------ inference
    def infer(self, graph: str, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        g = self._graph(graph)
        cuda, stream, ctx = self.cuda, self.stream, g.context
        missing = [n for n in g.inputs if n not in feeds]
        if missing:
            raise UserError("%s needs input(s) %s" % (graph, ", ".join(missing)))
        hint = "; rebuild with `rmpsam-edge build-engine --model %s` and a larger --max-size / --max-prompts" \
               % self.bundle.dir
        for name in g.inputs:
            arr = feeds[name]
            check_within(graph, name, np.shape(arr), g.profiles[name], hint)
            if not ctx.set_input_shape(name, tuple(int(d) for d in np.shape(arr))):
                raise UserError("TensorRT refused %s input '%s' shape %s" % (graph, name, list(np.shape(arr))))
            dtype = g.plan[name][0]
            last = self._last_features
            if name == "features" and last is not None and arr is last[0] and dtype == last[0].dtype:
                ctx.set_tensor_address(name, int(last[1]))  # features still on the GPU: no copy
                continue
            ctx.set_tensor_address(name, int(g.device[name]))
            n = int(np.prod(np.shape(arr)))
            np.copyto(g.host[name][:n].reshape(np.shape(arr)), arr, casting="unsafe")
            cuda.memcpy_htod_async(g.device[name], g.host[name][:n], stream)
        shapes = {n: tuple(int(d) for d in ctx.get_tensor_shape(n)) for n in g.outputs}
        if not ctx.execute_async_v3(stream.handle):
            raise UserError("TensorRT failed to run the %s engine: %s" % (graph, self._last_error()))
        for name in g.outputs:
            cuda.memcpy_dtoh_async(g.host[name][:int(np.prod(shapes[name]))], g.device[name], stream)
        stream.synchronize()
        out = {n: g.host[n][:int(np.prod(s))].reshape(s).copy() for n, s in shapes.items()}
        if graph == "encoder" and "features" in out:
            out["features"].flags.writeable = False  # it may be read again from the device buffer
            self._last_features = (out["features"], g.device["features"])
        return out

    def _last_error(self) -> str:
        errors = [m for s, m in self._messages if s in ("ERROR", "INTERNAL_ERROR")]
        return errors[-1] if errors else "no reason given"

    def engine_precision(self, graph: str) -> str:
        return graph_precision(graph, self.choices.precision)
