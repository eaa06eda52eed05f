"""What a ``TensorRTRunner`` holds on the GPU, allocated once every engine is loaded: each I/O tensor at its profile
max (a device buffer + a page-locked staging buffer), except ``features``: ONE pair shared by every graph (the
encoder writes it, the decoders read it in place); and one activation area, the largest engine's, shared by the
execution contexts (calls run one at a time on one stream)."""
from typing import Dict, Optional, Tuple

import numpy as np

from rmpsam_edge.errors import UserError

SHARED = "features"


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


class Graph(object):
    """One engine, its execution context (no activation memory of its own) and its buffers."""

    def __init__(self, compat, engine):
        self.engine = engine
        self.context, self.activation = compat.context_without_memory(engine)
        self.plan = plan_buffers(compat, engine, self.context)
        self.profiles = {n: p[2] for n, p in self.plan.items() if p[2]}
        self.outputs = [n for n, p in self.plan.items() if not p[2]]
        self.host, self.device_mem = {}, {}  # type: (Dict[str, np.ndarray], Dict[str, object])


class DeviceMemory(object):
    """The stream, runtime, graphs and every allocation; ``release`` runs inside the CUDA context (CudaContext.own)."""

    def __init__(self, cuda):
        self.cuda, self.stream, self.runtime = cuda, None, None
        self.graphs = {}  # type: Dict[str, Graph]
        self._device_mem, self._pinned = [], []

    def _alloc(self, nbytes: int, pinned: bool = False):
        nbytes = max(1, int(nbytes))
        buf = self.cuda.pagelocked_empty(nbytes, np.uint8) if pinned else self.cuda.mem_alloc(nbytes)
        (self._pinned if pinned else self._device_mem).append(buf)
        return buf

    def allocate(self, compat) -> None:
        graphs = list(self.graphs.values())
        nbytes = {(id(g), n): int(np.prod(p[1])) * p[0].itemsize for g in graphs for n, p in g.plan.items()}
        shared = max([b for (_, n), b in nbytes.items() if n == SHARED] + [1])
        shared = (self._alloc(shared, pinned=True), self._alloc(shared))
        for g in graphs:
            for name, (dtype, _, _) in g.plan.items():
                n = nbytes[id(g), name]
                host, device_buf = shared if name == SHARED else (self._alloc(n, pinned=True), self._alloc(n))
                g.host[name], g.device_mem[name] = host.view(dtype), device_buf
                g.context.set_tensor_address(name, int(device_buf))
        area = max(g.activation for g in graphs)
        if area:
            address = int(self._alloc(area))
            for g in graphs:
                compat.give_memory(g.context, address, area)

    def release(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()
        self.graphs.clear()  # contexts and engines before the memory they use
        for buf in self._device_mem:
            buf.free()
        for arr in self._pinned:
            getattr(arr.base, "free", lambda: None)()  # pycuda HostAllocation
        self._device_mem, self._pinned, self.runtime, self.stream = [], [], None, None
