"""Python-backend model serving ONE graph of a bundle on the torch-free runtime (ONNX Runtime or OpenVINO).

The repository's ``encoder``, ``prompt_decoder`` and ``object_decoder`` model.py files import
``TritonPythonModel`` from here. Config parameters: ``bundle`` (folder, relative to the repository or
absolute), ``backend`` (auto / onnxruntime / openvino), ``device`` (empty: the backend's), ``threads`` (0:
default). Bundle file hashes are checked when the runner loads. The encoder has ``max_batch_size`` > 0: Triton
hands ``execute`` every request of a dynamic batch and they run as ONE encoder call per input shape.
"""
from typing import Dict, List

import numpy as np

from ._params import bundle_path, load_runner, model_params


class TritonPythonModel(object):
    def initialize(self, args):
        from rmpsam_edge.runtime.base import GRAPHS
        params = model_params(args)
        self.graph = params["name"]
        if self.graph not in GRAPHS:
            raise ValueError("model %r is not a bundle graph (%s)" % (self.graph, ", ".join(GRAPHS)))
        self.inputs, self.outputs = GRAPHS[self.graph]
        self.runner, self.bundle, _ = load_runner(params, bundle_path(params))
        self.batched = int(params["max_batch_size"]) > 0
        self.one_by_one = bool(self.bundle.static)  # a static encoder has a fixed batch of 1

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils
        feeds = [dict((n, pb_utils.get_input_tensor_by_name(r, n).as_numpy()) for n in self.inputs)
                 for r in requests]
        results = [None] * len(requests)  # type: List
        if self.batched and not self.one_by_one:
            groups = {}  # type: Dict[tuple, List[int]]
            for i, f in enumerate(feeds):
                groups.setdefault(f["image"].shape[1:], []).append(i)
            for idx in groups.values():
                self._run_group(idx, feeds, results)
        else:
            for i in range(len(requests)):
                self._run_group([i], feeds, results)
        responses = []
        for res in results:
            if isinstance(res, Exception):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(_line(res))))
            else:
                responses.append(pb_utils.InferenceResponse(
                    [pb_utils.Tensor(n, np.ascontiguousarray(res[n])) for n in self.outputs]))
        return responses

    def _run_group(self, idx, feeds, results):
        try:
            if len(idx) == 1:
                out = self.runner.infer(self.graph, feeds[idx[0]])
                results[idx[0]] = out
                return
            image = np.concatenate([feeds[i]["image"] for i in idx])
            feats = self.runner.infer(self.graph, {"image": image})["features"]
            start = 0
            for i in idx:
                n = feeds[i]["image"].shape[0]
                results[i] = {"features": feats[start:start + n]}
                start += n
        except Exception as exc:  # noqa: BLE001 - one bad request must not take the model down
            for i in idx:
                results[i] = exc

    def finalize(self):
        self.runner.deactivate()


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return "%s: %s" % (type(exc).__name__, text[0] if text else "")
