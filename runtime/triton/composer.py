"""Python-backend BLS model ``rmpsam``: the server-side composition of the three graph models.

A client sends an RGB uint8 frame (any size) with a frame id; this model pre-processes it with the project's
own ``rmpsam_edge.preprocess``, runs the ``encoder`` model (the encode requests of one dynamic batch go as ONE
batched encoder request per input shape), and keeps the features in a small LRU cache keyed by frame id.
Prompt and object requests name the frame id and get decoder outputs back; features never cross the network.
Protocol: ``protocol.py``. Config parameters: ``bundle``, ``cache_frames`` (default 16), ``max_prompts``
(default 1000), ``encoder_max_batch`` (the encoder's max_batch_size), ``decoders``: ``bls`` (call the
``prompt_decoder`` / ``object_decoder`` models: GPU containers) or ``local`` (python platform: run them in this
process on the torch-free runtime, so the features are not copied to another process for every prompt),
``encoder``: ``bls`` (the ``encoder`` model: dynamic batching, instances) or ``local`` (with local decoders: also
in this process, one hop less per frame; written when there is no batching or instance to gain: max batch 1,
1 instance), ``backend`` / ``device`` / ``threads`` for ``local``.
"""
import collections
from typing import Dict, List

import numpy as np

from . import protocol as P
from ._params import bundle_path, load_runner, model_params


class RequestError(Exception):
    """A bad request: answered with an error response, the model stays up."""


class TritonPythonModel(object):
    def initialize(self, args):
        from rmpsam_edge.runtime.bundle import Bundle
        params = model_params(args)
        self.bundle = Bundle.open(bundle_path(params))
        self.spec = self.bundle.spec()
        with open(self.bundle.path + "/manifest.json", "rb") as f:
            self.manifest = f.read()
        embed = self.spec.class_embed
        self.class_embed = embed if embed is not None else np.zeros((0, 1, 768), np.float32)
        self.cache_frames = max(1, int(params.get("cache_frames") or 16))
        self.max_prompts = int(params.get("max_prompts") or 1000)
        self.encoder_max_batch = max(1, int(params.get("encoder_max_batch") or 1))
        self.runner = None
        if params.get("decoders") == "local":
            self.runner = load_runner(params, self.bundle)[0]
        self.local_graphs = ("prompt_decoder", "object_decoder") + (
            ("encoder",) if self.runner is not None and params.get("encoder") == "local" else ())
        self.cache = collections.OrderedDict()  # frame id -> (features (1, C, h, w), meta row)

    # ------------------------------------------------------------------ Triton entry point
    def execute(self, requests):
        import triton_python_backend_utils as pb_utils
        parsed, results = [], [None] * len(requests)  # type: List, List
        for i, r in enumerate(requests):
            try:
                parsed.append(self._parse(r, pb_utils))
            except Exception as exc:  # noqa: BLE001
                parsed.append(None)
                results[i] = exc
        self._encode_all([i for i, p in enumerate(parsed) if p and p[0] == P.ENCODE], parsed, results, pb_utils)
        for i, p in enumerate(parsed):
            if p is None or p[0] == P.ENCODE:
                continue
            try:
                results[i] = self._decode(p, pb_utils)
            except Exception as exc:  # noqa: BLE001
                results[i] = exc
        out = []
        for res in results:
            if isinstance(res, Exception):
                out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(_line(res))))
            else:
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in res]))
        return out

    # ------------------------------------------------------------------ parts
    def _parse(self, request, pb_utils):
        vals = {}
        for name in P.INPUTS:
            t = pb_utils.get_input_tensor_by_name(request, name)
            if t is None:
                raise RequestError("input %s is missing (send TASK, FRAME_ID, IMAGE, BOXES)" % name)
            vals[name] = t.as_numpy()
        task, frame = int(vals["TASK"].reshape(-1)[0]), int(vals["FRAME_ID"].reshape(-1)[0])
        if task not in P.OUTPUTS:
            raise RequestError("unknown TASK %d (0 encode, 1 prompts, 2 objects, 3 spec)" % task)
        image, boxes = vals["IMAGE"], vals["BOXES"]
        if task == P.ENCODE:
            if image.ndim != 4 or image.shape[0] != 1 or image.shape[3] != 3 or min(image.shape[1:3]) < 1:
                raise RequestError("IMAGE must be one non-empty RGB uint8 frame [1, H, W, 3], got %s"
                                   % (list(image.shape),))
            return task, frame, image[0], None
        if task == P.PROMPTS:
            if boxes.ndim != 3 or boxes.shape[0] != 1 or boxes.shape[2] != 4 or boxes.shape[1] < 1:
                raise RequestError("BOXES must be [1, N, 4] with N >= 1, got %s" % (list(boxes.shape),))
            if boxes.shape[1] > self.max_prompts:
                raise RequestError("%d prompts in one request; the server takes at most %d (max_prompts)"
                                   % (boxes.shape[1], self.max_prompts))
            if not np.all(np.isfinite(boxes)):
                raise RequestError("BOXES contain NaN or infinite values")
        return task, frame, None, boxes[0] if boxes.ndim == 3 else None

    def _encode_all(self, idx, parsed, results, pb_utils):
        from rmpsam_edge.preprocess import preprocess
        groups = collections.OrderedDict()  # type: Dict[tuple, List]
        for i in idx:
            try:
                x, meta = preprocess(parsed[i][2], self.spec)
                groups.setdefault(x.shape, []).append((i, x, meta))
            except Exception as exc:  # noqa: BLE001
                results[i] = exc
        for items in groups.values():
            for s in range(0, len(items), self.encoder_max_batch):
                chunk = items[s:s + self.encoder_max_batch]
                try:
                    feats = self._call(pb_utils, "encoder", {"image": np.concatenate([c[1] for c in chunk])},
                                       ["features"])["features"]
                except Exception as exc:  # noqa: BLE001
                    for c in chunk:
                        results[c[0]] = exc
                    continue
                for j, (i, _, meta) in enumerate(chunk):
                    row = np.asarray([list(meta.ori_shape) + list(meta.img_shape) + list(meta.pad_shape)],
                                     dtype=np.int32)
                    self._remember(parsed[i][1], np.array(feats[j:j + 1]), row)
                    results[i] = [("META", row)]

    def _remember(self, frame, features, row):
        self.cache[frame] = (features, row)
        self.cache.move_to_end(frame)
        while len(self.cache) > self.cache_frames:
            self.cache.popitem(last=False)

    def _decode(self, p, pb_utils):
        task, frame, _, boxes = p
        if task == P.SPEC:
            return [("MANIFEST", np.array([[self.manifest]], dtype=np.object_)),
                    ("CLASS_EMBED", self.class_embed[None])]
        if frame not in self.cache:
            raise RequestError("%s %d: send the frame (TASK 0) again; the server keeps the last %d frames"
                               % (P.UNKNOWN_FRAME, frame, self.cache_frames))
        self.cache.move_to_end(frame)
        features = self.cache[frame][0]
        if task == P.PROMPTS:
            out = self._call(pb_utils, "prompt_decoder",
                             {"features": features, "boxes": np.ascontiguousarray(boxes, np.float32)},
                             ["mask_logits", "iou"])
            return [("MASK_LOGITS", out["mask_logits"][None]), ("IOU", out["iou"].reshape(1, -1))]
        if self.class_embed.shape[0] == 0:
            raise RequestError("this model has no class vocabulary; panoptic/instances need one (export with --vocab)")
        out = self._call(pb_utils, "object_decoder", {"features": features, "class_embed": self.class_embed},
                         ["class_logits", "mask_logits", "query_embed"])
        return [("CLASS_LOGITS", out["class_logits"]), ("OBJ_MASK_LOGITS", out["mask_logits"]),
                ("QUERY_EMBED", out["query_embed"])]

    def _call(self, pb_utils, model, feeds, outputs):
        if self.runner is not None and model in self.local_graphs:
            out = self.runner.infer(model, feeds)
            return dict((n, out[n]) for n in outputs)
        req = pb_utils.InferenceRequest(model_name=model, requested_output_names=outputs,
                                        inputs=[pb_utils.Tensor(k, np.ascontiguousarray(v)) for k, v in feeds.items()])
        resp = req.exec()
        if resp.has_error():
            raise RuntimeError("%s: %s" % (model, resp.error().message()))
        return dict((n, np.array(pb_utils.get_output_tensor_by_name(resp, n).as_numpy())) for n in outputs)

    def finalize(self):
        self.cache.clear()


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return first if isinstance(exc, RequestError) else "%s: %s" % (type(exc).__name__, first)
