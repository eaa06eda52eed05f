"""TensorRT runner (the shape of polygraphy's TrtRunner): load one engine per graph (``engines.Session``: cached,
or built once), then run them. Buffers are allocated once all engines are loaded, each I/O tensor at its profile
max, except ``features``: ONE device buffer and one page-locked staging buffer shared by every graph (the
encoder writes it, the decoders read it in place). The execution contexts share one activation area, the
largest engine's (calls run one at a time on one stream). A call is set_input_shape -> async H2D ->
execute_async_v3 -> async D2H -> one sync. Prompt chunks and fixed-size padding: ``BundleRunner``."""
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from rmpsam_edge.errors import UserError

from ..bundle_runner import BackendUnavailable, BundleRunner
from . import compat as compat_mod
from .cuda_context import CudaContext
from .engines import Choices, Session, graph_precision, stored_precision
from .profiles import check_within

SHARED = "features"
GROW = {"image": "--max-size", SHARED: "--max-size", "class_embed": "--max-classes"}


class EngineUnavailable(BackendUnavailable, UserError):
    """An engine cannot be built or loaded here: ``auto`` moves on to the next backend; bundle problems
    (missing file, sha256) stay plain ``UserError``s, since no backend can run such a bundle."""


def plan_buffers(compat, engine, context) -> Dict[str, Tuple[np.dtype, Tuple[int, ...], Optional[tuple]]]:
    """{tensor: (dtype, max shape, (min, opt, max) for an input, None for an output)}: inputs at the profile
    max, outputs as TensorRT infers them from those max input shapes."""
    plan = {}
    io = compat.io_tensors(engine)
    for name, is_input, dtype in io:
        if is_input:
            profile = compat.profile_shapes(engine, name)
            if not context.set_input_shape(name, profile[2]):
                raise UserError("TensorRT refused input '%s' at the profile max %s" % (name, list(profile[2])))
            plan[name] = (dtype, profile[2], profile)
    for name, is_input, dtype in io:
        if not is_input:
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise UserError("output '%s' has no fixed size at the profile max (%s)" % (name, list(shape)))
            plan[name] = (dtype, shape, None)
    return plan


class _Graph(object):
    def __init__(self, engine, context, activation, plan):
        self.engine, self.context, self.activation, self.plan = engine, context, activation, plan
        self.profiles = {n: p[2] for n, p in plan.items() if p[2]}
        self.outputs = [n for n, p in plan.items() if not p[2]]
        self.host, self.device = {}, {}  # type: (Dict[str, np.ndarray], Dict[str, object])


class _GpuState(object):
    """What lives in the runner's CUDA context; ``release`` runs inside it (CudaContext.close)."""

    def __init__(self):
        self.stream, self.runtime, self.graphs = None, None, {}  # type: (object, object, Dict[str, _Graph])
        self.device, self.pinned = [], []  # every allocation, freed once

    def release(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()
        self.graphs.clear()  # contexts and engines before the memory they use
        for buf in self.device:
            buf.free()
        for arr in self.pinned:
            getattr(arr.base, "free", lambda: None)()  # pycuda HostAllocation
        self.device, self.pinned, self.runtime, self.stream = [], [], None, None


class TensorRTRunner(BundleRunner):
    """``device``: CUDA device index. One CUDA context, pushed around every build, execute and release."""
    name = "tensorrt"

    def __init__(self, bundle, choices: Optional[Choices] = None, build: bool = True, device: int = 0):
        super(TensorRTRunner, self).__init__(bundle)
        self.choices, self.build, self.device_index = choices or Choices(), build, device
        self._ctx = None  # type: Optional[CudaContext]
        self._gpu = _GpuState()
        self._on_device = None  # (array, dtype) whose values the shared features buffer holds
        self._gpu_bytes = 0

    # ------------------------------------------------------------------ lifecycle
    def activate(self) -> None:
        if self.active:
            return
        trt, cuda = compat_mod.import_tensorrt(), compat_mod.import_pycuda()
        self.cuda = cuda
        self.compat = compat_mod.Compat(trt)
        self.gpu = self.compat.device_info(cuda, self.device_index)
        self._ctx, self._gpu = CudaContext(cuda, self.device_index), _GpuState()
        self._ctx.own(self._gpu.release)
        try:
            with self._ctx:
                self._gpu.stream = cuda.Stream()
                self._messages = []  # type: List[Tuple[str, str]]
                self._logger = self.compat.logger(self._messages)  # kept alive as long as the runtime
                self._gpu.runtime = trt.Runtime(self._logger)
                self.session = Session(self.compat, self.gpu, self.bundle, cuda)
                self.choices = self.session.fill_choices(self.choices)
                free = cuda.mem_get_info()[0]
                super(TensorRTRunner, self).activate()  # _load() for every graph of the bundle
                self._allocate()
                self._gpu_bytes = free - cuda.mem_get_info()[0]  # engines, activations, buffers
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        if self._ctx is not None:
            self._ctx.close()  # releases _GpuState inside the context, then detaches it
        self._ctx, self._on_device = None, None

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
                                                 self.engine_precision(self.bundle.graph_names()[0]))

    def engine_precision(self, graph: str) -> str:
        return graph_precision(graph, self.choices.precision, stored_precision(self.bundle, graph))

    # ------------------------------------------------------------------ loading
    def _load(self, graph: str, path: str) -> None:
        try:
            engine = self.session.load_engine(self._gpu.runtime, graph, self.choices, build=self.build)[0]
            context, activation = self.compat.context_without_memory(engine)
            self._gpu.graphs[graph] = _Graph(engine, context, activation, plan_buffers(self.compat, engine, context))
        except EngineUnavailable:
            raise
        except UserError as exc:  # the graph file itself was checked by BundleRunner.activate already
            raise EngineUnavailable("TensorRT could not prepare the %s engine: %s" % (graph, exc))

    def _alloc(self, nbytes: int, pinned: bool = False):
        buf = self.cuda.pagelocked_empty(max(1, nbytes), np.uint8) if pinned else self.cuda.mem_alloc(max(1, nbytes))
        (self._gpu.pinned if pinned else self._gpu.device).append(buf)
        return buf

    def _allocate(self) -> None:
        graphs = self._gpu.graphs.values()
        sizes = [(n, int(np.prod(p[1])) * p[0].itemsize) for g in graphs for n, p in g.plan.items()]
        shared = max([b for n, b in sizes if n == SHARED] + [1])
        shared = (self._alloc(shared, pinned=True), self._alloc(shared))
        for g in graphs:
            for name, (dtype, shape, _) in g.plan.items():
                nbytes = int(np.prod(shape)) * dtype.itemsize
                host, dev = shared if name == SHARED else (self._alloc(nbytes, pinned=True), self._alloc(nbytes))
                g.host[name], g.device[name] = host.view(dtype), dev
                g.context.set_tensor_address(name, int(dev))
        area = max(g.activation for g in graphs)
        address = int(self._alloc(area)) if area else 0
        for g in graphs if area else ():
            self.compat.give_memory(g.context, address, area)

    # ------------------------------------------------------------------ BundleRunner hooks
    def _max_prompts(self, graph: str) -> int:
        g = self._gpu.graphs.get(graph)
        return int(g.profiles["boxes"][2][0]) if g is not None else super(TensorRTRunner, self)._max_prompts(graph)

    def _image_size(self) -> Optional[Tuple[int, int, str]]:
        """A static bundle's size, or the one size of an encoder engine built for one (DLA)."""
        g = self._gpu.graphs.get("encoder")
        if self.bundle.static or g is None or g.profiles["image"][0] != g.profiles["image"][2]:
            return super(TensorRTRunner, self)._image_size()
        h, w = g.profiles["image"][2][2:]
        return h, w, "the %dx%d the encoder engine runs (DLA runs one size); use an input size <= %d or rebuild " \
                     "it with `rmpsam-edge build-engine --model %s` and a larger --opt-size" \
                     % (w, h, min(h, w), os.path.abspath(self.bundle.path))

    def _run(self, graph: str, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        g = self._gpu.graphs[graph]
        cuda, stream, ctx = self.cuda, self._gpu.stream, g.context
        for name, profile in g.profiles.items():
            arr, dtype = feeds[name], g.plan[name][0]
            shape = tuple(int(d) for d in np.shape(arr))
            check_within(graph, name, shape, profile, "; rebuild with `rmpsam-edge build-engine --model %s` and a "
                         "larger %s" % (os.path.abspath(self.bundle.path), GROW.get(name, "profile")))
            if not ctx.set_input_shape(name, shape):
                raise UserError("TensorRT refused %s input '%s' shape %s" % (graph, name, list(shape)))
            if name == SHARED and self._on_device is not None and self._on_device[0] is arr \
                    and self._on_device[1] == dtype:
                continue  # the encoder's features, still in the shared buffer: no copy
            n = int(np.prod(shape))
            np.copyto(g.host[name][:n].reshape(shape), arr, casting="unsafe")
            cuda.memcpy_htod_async(g.device[name], g.host[name][:n], stream)
            if name == SHARED:  # only a read-only array cannot change behind the copy
                self._on_device = None if arr.flags.writeable else (arr, dtype)
        shapes = {n: tuple(int(d) for d in ctx.get_tensor_shape(n)) for n in g.outputs}
        if not ctx.execute_async_v3(stream.handle):
            raise UserError("TensorRT failed to run the %s engine: %s" % (graph, self._last_error()))
        for name in g.outputs:
            cuda.memcpy_dtoh_async(g.host[name][:int(np.prod(shapes[name]))], g.device[name], stream)
        stream.synchronize()
        out = {n: g.host[n][:int(np.prod(s))].reshape(s).copy() for n, s in shapes.items()}
        if SHARED in out:
            out[SHARED].flags.writeable = False  # read again from the device buffer: it must not change
            self._on_device = (out[SHARED], g.plan[SHARED][0])
        return out

    def _last_error(self) -> str:
        errors = [m for s, m in self._messages if s in ("ERROR", "INTERNAL_ERROR")]
        return errors[-1] if errors else "no reason given"
