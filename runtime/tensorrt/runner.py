"""TensorRT runner: a ``BundleRunner`` running one engine per graph. Buffers are allocated once at the profile's
max shapes; a call is set_input_shape -> async H2D -> execute_async_v3 -> async D2H -> one sync. The decoders read
the encoder's features from its device buffer (no copy); more prompts than a profile's max run in exact chunks."""
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from rmpsam_edge.errors import UserError

from ..bundle_runner import BackendUnavailable, BundleRunner
from . import compat as compat_mod
from .cuda_context import CudaContext
from .engines import Choices, Session, graph_precision, stderr_log, stored_precision
from .profiles import check_within


class EngineUnavailable(BackendUnavailable, UserError):
    """An engine cannot be built or loaded here: ``auto`` moves on to the next backend; bundle problems
    (missing file, sha256) stay plain ``UserError``s, since no backend can run such a bundle."""


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
    def __init__(self, engine, context, plan, profiles, host, device):
        self.engine, self.context, self.plan, self.profiles = engine, context, plan, profiles
        self.host, self.device = host, device
        self.inputs = [n for n, p in plan.items() if p[2]]
        self.outputs = [n for n, p in plan.items() if not p[2]]


class _GpuState(object):
    """What lives in the runner's CUDA context; ``release`` runs inside it (CudaContext.close)."""

    def __init__(self):
        self.stream, self.runtime, self.graphs = None, None, {}  # type: (object, object, Dict[str, _Graph])

    def release(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()
        for g in self.graphs.values():
            for buf in g.device.values():
                buf.free()
            for arr in g.host.values():
                base = getattr(arr, "base", None)
                if hasattr(base, "free"):
                    base.free()  # pycuda HostAllocation
            g.context = g.engine = None
        self.graphs, self.runtime, self.stream = {}, None, None


class TensorRTRunner(BundleRunner):
    """``device``: CUDA device index. One CUDA context, pushed around every build, execute and release."""
    name = "tensorrt"

    def __init__(self, bundle, choices: Optional[Choices] = None, build: bool = True, device: int = 0,
                 log=stderr_log, trt=None, cuda=None):
        super(TensorRTRunner, self).__init__(bundle)
        self.choices, self.build, self.device_index, self.log = choices or Choices(), build, device, log
        self._trt, self._cuda = trt, cuda
        self._ctx = None  # type: Optional[CudaContext]
        self._gpu = _GpuState()
        self._features = None  # (array returned by the encoder, its device buffer)
        self._gpu_bytes = 0

    # ------------------------------------------------------------------ lifecycle
    def activate(self) -> None:
        if self.active:
            return
        trt = self._trt or compat_mod.import_tensorrt()
        cuda = self._cuda or compat_mod.import_pycuda()
        self.compat = compat_mod.Compat(trt)
        self.gpu = self.compat.device_info(cuda, self.device_index)
        self.cuda = cuda
        self._ctx = CudaContext(cuda, self.device_index)
        self._gpu = _GpuState()
        self._ctx.own(self._gpu.release)
        try:
            with self._ctx:
                self._gpu.stream = cuda.Stream()
                self._messages = []  # type: List[Tuple[str, str]]
                self._logger = self.compat.logger(self._messages)  # kept alive as long as the runtime
                self._gpu.runtime = trt.Runtime(self._logger)
                self.session = Session(self.compat, self.gpu, self.bundle, cuda, self.log)
                self.choices = self.session.fill_choices(self.choices)
                free = cuda.mem_get_info()[0]
                super(TensorRTRunner, self).activate()  # _load() for every graph of the bundle
                self._gpu_bytes = free - cuda.mem_get_info()[0]  # engines, activations, buffers
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        if self._ctx is not None:
            self._ctx.close()  # releases _GpuState inside the context, then pops and detaches it
        self._ctx, self._features = None, None

    def deactivate(self) -> None:
        super(TensorRTRunner, self).deactivate()
        self._release()

    def infer(self, graph: str, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if self._ctx is None:
            raise UserError("the TensorRT runner is not active (use `with runner:` or runner.activate())")
        with self._ctx:  # pushed on THIS thread's context stack; one call at a time
            return super(TensorRTRunner, self).infer(graph, feeds)

    def gpu_memory_mb(self) -> Optional[float]:
        """GPU memory the active runner's engines, their activation memory and its buffers took when loaded
        (the drop of the device's free memory, ``cuMemGetInfo``; the CUDA context itself not counted)."""
        return None if self._ctx is None else self._gpu_bytes / 1048576.0

    def describe(self) -> str:
        if self._ctx is None:
            return "tensorrt (not active)"
        dla = ", DLA %d" % self.choices.dla_core if self.choices.dla_core is not None else ""
        return "tensorrt %s, %s (sm %s)%s, %s" % (self.compat.version_string, self.gpu[0], self.gpu[1], dla,
                                                 self.engine_precision("encoder"))

    def engine_precision(self, graph: str) -> str:
        return graph_precision(graph, self.choices.precision, stored_precision(self.bundle, graph))

    # ------------------------------------------------------------------ BundleRunner hooks
    def _load(self, graph: str, path: str) -> None:
        try:
            engine = self.session.load_engine(self._gpu.runtime, graph, self.choices, build=self.build)[0]
            context = engine.create_execution_context()
            plan = plan_buffers(self.compat, engine, context)
        except EngineUnavailable:
            raise
        except UserError as exc:  # the graph file itself was checked by BundleRunner.activate already
            raise EngineUnavailable("TensorRT could not prepare the %s engine: %s" % (graph, exc))
        profiles = {n: self.compat.profile_shapes(engine, n) for n, p in plan.items() if p[2]}
        host, device = {}, {}
        for name, (dtype, shape, _) in plan.items():
            count = int(np.prod(shape))
            host[name] = self.cuda.pagelocked_empty(count, dtype)
            device[name] = self.cuda.mem_alloc(max(1, count * dtype.itemsize))
            context.set_tensor_address(name, int(device[name]))
        self._gpu.graphs[graph] = _Graph(engine, context, plan, profiles, host, device)

    def _unload(self) -> None:
        self._features = None  # the buffers go with the context (_release)

    def _run(self, graph: str, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        g = self._gpu.graphs[graph]
        if "boxes" in g.profiles:
            lo, _, hi = g.profiles["boxes"]
            n = int(np.shape(feeds["boxes"])[0])
            if n > hi[0]:  # more prompts than the profile: exact chunks, each on the graph that fits it
                outs = [self._run(self.bundle.prompt_graph(min(hi[0], n - i)),
                                  dict(feeds, boxes=feeds["boxes"][i:i + hi[0]])) for i in range(0, n, hi[0])]
                return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
            if n < lo[0] and graph != "prompt_decoder" and self.bundle.has_graph("prompt_decoder"):
                return self._run("prompt_decoder", feeds)
        return self._execute(graph, g, feeds)

    # ------------------------------------------------------------------ one engine call
    def _execute(self, graph: str, g: _Graph, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        cuda, stream, ctx = self.cuda, self._gpu.stream, g.context
        hint = "; rebuild with `rmpsam-edge build-engine --model %s` and a larger --max-size" % os.path.abspath(self.bundle.path)
        for name in g.inputs:
            arr = feeds[name]
            shape = tuple(int(d) for d in np.shape(arr))
            check_within(graph, name, shape, g.profiles[name], hint)
            if not ctx.set_input_shape(name, shape):
                raise UserError("TensorRT refused %s input '%s' shape %s" % (graph, name, list(shape)))
            last = self._features
            if name == "features" and last is not None and arr is last[0] and g.plan[name][0] == arr.dtype:
                ctx.set_tensor_address(name, int(last[1]))  # features still on the GPU: no copy
                continue
            ctx.set_tensor_address(name, int(g.device[name]))
            n = int(np.prod(shape))
            np.copyto(g.host[name][:n].reshape(shape), arr, casting="unsafe")
            cuda.memcpy_htod_async(g.device[name], g.host[name][:n], stream)
        shapes = {n: tuple(int(d) for d in ctx.get_tensor_shape(n)) for n in g.outputs}
        if not ctx.execute_async_v3(stream.handle):
            raise UserError("TensorRT failed to run the %s engine: %s" % (graph, self._last_error()))
        for name in g.outputs:
            cuda.memcpy_dtoh_async(g.host[name][:int(np.prod(shapes[name]))], g.device[name], stream)
        stream.synchronize()
        out = {n: g.host[n][:int(np.prod(s))].reshape(s).copy() for n, s in shapes.items()}
        if graph == "encoder":
            out["features"].flags.writeable = False  # it may be read again from the device buffer
            self._features = (out["features"], g.device["features"])
        return out

    def _last_error(self) -> str:
        errors = [m for s, m in self._messages if s in ("ERROR", "INTERNAL_ERROR")]
        return errors[-1] if errors else "no reason given"
