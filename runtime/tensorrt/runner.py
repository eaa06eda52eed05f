"""TensorRT runner (the shape of polygraphy's TrtRunner): load one engine per graph from the loader
(``engines.Session``: cached, or built once), allocate (``buffers``), then run. A call is set_input_shape ->
async H2D -> execute_async_v3 -> async D2H -> one sync. Prompt chunks and fixed-size padding: ``BundleRunner``."""
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from rmpsam_edge.errors import UserError

from ..bundle_runner import BackendUnavailable, BundleRunner
from . import compat
from .buffers import SHARED, DeviceMemory, Graph
from .cuda_context import CudaContext, device_info, import_pycuda
from .engines import Choices, Session
from .profiles import check_within

GROW = {"image": "--max-size", SHARED: "--max-size", "class_embed": "--max-classes"}


class EngineUnavailable(BackendUnavailable, UserError):
    """An engine cannot be built or loaded here: ``auto`` moves on to the next backend; bundle problems
    (missing file, sha256) stay plain ``UserError``s, since no backend can run such a bundle."""


class TensorRTRunner(BundleRunner):
    """``device_index``: CUDA device ordinal. One CUDA context, pushed around every build, execute and release."""
    name = "tensorrt"

    def __init__(self, bundle, choices: Optional[Choices] = None, build: bool = True, device_index: int = 0):
        super(TensorRTRunner, self).__init__(bundle)
        self.choices, self.build, self.device_index = choices or Choices(), build, device_index
        self._ctx, self._mem = None, DeviceMemory(None)  # type: (Optional[CudaContext], DeviceMemory)
        self._on_device = None  # (array, dtype) whose values the shared features buffer holds
        self._gpu_bytes = 0

    def activate(self) -> None:
        if self.active:
            return
        trt, cuda = compat.import_tensorrt(), import_pycuda()
        self.compat, self.gpu_info = compat.Compat(trt), device_info(cuda, self.device_index)
        self._ctx, self._mem = CudaContext(cuda, self.device_index), DeviceMemory(cuda)
        self._ctx.own(self._mem.release)
        try:
            with self._ctx:
                self._mem.stream = cuda.Stream()
                self._messages = []  # type: List[Tuple[str, str]]
                self._logger = self.compat.logger(self._messages)  # kept alive as long as the runtime
                self._mem.runtime = trt.Runtime(self._logger)
                self.session = Session(self.compat, self.gpu_info, self.bundle)
                self.choices = self.session.fill_choices(self.choices)
                free = cuda.mem_get_info()[0]
                super(TensorRTRunner, self).activate()  # _load() for every graph of the bundle
                self._mem.allocate(self.compat)
                self._gpu_bytes = free - cuda.mem_get_info()[0]  # engines, activations, buffers
        except BaseException:
            self._release()
            raise

    def _load(self, graph: str, path: str) -> None:  # the graph file itself was checked by BundleRunner.activate
        try:
            engine = self.session.load_engine(self._mem.runtime, graph, self.choices, build=self.build)[0]
            self._mem.graphs[graph] = Graph(self.compat, engine)
        except EngineUnavailable:
            raise
        except UserError as exc:
            raise EngineUnavailable("TensorRT could not prepare the %s engine: %s" % (graph, exc))

    def _release(self) -> None:
        if self._ctx is not None:
            self._ctx.close()  # releases DeviceMemory inside the context, then detaches it
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
        """What loading took from the GPU's free memory (``cuMemGetInfo``): engines, activations, buffers."""
        return None if self._ctx is None else self._gpu_bytes / 1048576.0

    def describe(self) -> str:
        if self._ctx is None:
            return "tensorrt (not active)"
        dla = ", DLA %d" % self.choices.dla_core if self.choices.dla_core is not None else ""
        return "tensorrt %s, %s (sm %s)%s, %s" % (self.compat.version_string, self.gpu_info.name, self.gpu_info.cc, dla,
                                                 self.session.precision(self.bundle.graph_names()[0], self.choices))

    def _max_prompts(self, graph: str) -> int:
        g = self._mem.graphs.get(graph)
        return int(g.profiles["boxes"][2][0]) if g is not None else super(TensorRTRunner, self)._max_prompts(graph)

    def _image_size(self) -> Optional[Tuple[int, int, str]]:
        """A static bundle's size, or the one size of an encoder engine built for one (DLA)."""
        g = self._mem.graphs.get("encoder")
        if self.bundle.static or g is None or g.profiles["image"][0] != g.profiles["image"][2]:
            return super(TensorRTRunner, self)._image_size()
        h, w = g.profiles["image"][2][2:]
        return h, w, "the %dx%d the encoder engine runs (DLA runs one size); use an input size <= %d or rebuild " \
                     "it with `rmpsam-edge build-engine --model %s` and a larger --opt-size" \
                     % (w, h, min(h, w), os.path.abspath(self.bundle.path))

    def _run(self, graph: str, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        g, cuda, stream = self._mem.graphs[graph], self._mem.cuda, self._mem.stream
        for name, profile in g.profiles.items():
            arr, dtype = feeds[name], g.plan[name][0]
            shape = tuple(int(d) for d in np.shape(arr))
            check_within(graph, name, shape, profile, "; rebuild with `rmpsam-edge build-engine --model %s` and a "
                         "larger %s" % (os.path.abspath(self.bundle.path), GROW.get(name, "profile")))
            if not g.context.set_input_shape(name, shape):
                raise UserError("TensorRT refused %s input '%s' shape %s" % (graph, name, list(shape)))
            if name == SHARED and self._on_device is not None and self._on_device[0] is arr \
                    and self._on_device[1] == dtype:
                continue  # the encoder's features, still in the shared buffer: no copy
            n = int(np.prod(shape))
            np.copyto(g.host[name][:n].reshape(shape), arr, casting="unsafe")
            cuda.memcpy_htod_async(g.device_mem[name], g.host[name][:n], stream)
            if name == SHARED:  # only a read-only array cannot change behind the copy
                self._on_device = None if arr.flags.writeable else (arr, dtype)
        shapes = {n: tuple(int(d) for d in g.context.get_tensor_shape(n)) for n in g.outputs}
        if not g.context.execute_async_v3(stream.handle):
            errors = [m for s, m in self._messages if s in ("ERROR", "INTERNAL_ERROR")]
            raise UserError("TensorRT failed to run the %s engine: %s" % (graph, (errors or ["no reason given"])[-1]))
        for name in g.outputs:
            cuda.memcpy_dtoh_async(g.host[name][:int(np.prod(shapes[name]))], g.device_mem[name], stream)
        stream.synchronize()
        out = {n: g.host[n][:int(np.prod(s))].reshape(s).copy() for n, s in shapes.items()}
        if SHARED in out:
            out[SHARED].flags.writeable = False  # read again from the device buffer: it must not change
            self._on_device = (out[SHARED], g.plan[SHARED][0])
        return out
