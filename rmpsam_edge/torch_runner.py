"""The PyTorch model behind the same Runner interface as every runtime backend (needs torch).

With it the Predictor, the demo and the benchmark run the eager model exactly like an exported bundle, which is
how parity and speed are compared.
"""
from typing import Dict, Optional

import numpy as np
import torch

from rmpsam_edge.modeling.classifier import with_background
from rmpsam_edge.runtime.base import Runner


class TorchRunner(Runner):
    name = "torch"

    def __init__(self, model: torch.nn.Module, threads: Optional[int] = None, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.device = device
        self.threads = threads
        self._vocab_key = None
        self._fc_cls = None

    def activate(self) -> None:
        if self.threads:
            torch.set_num_threads(int(self.threads))

    def describe(self) -> str:
        return "torch %s eager on %s, fp32, %d threads" % (torch.__version__, self.device, torch.get_num_threads())

    def _classifier(self, class_embed: np.ndarray) -> torch.Tensor:
        key = (class_embed.shape, class_embed.ctypes.data, float(class_embed.ravel()[:16].sum()))
        if key != self._vocab_key:
            self._fc_cls = with_background(torch.from_numpy(np.ascontiguousarray(class_embed, np.float32))).to(self.device)
            self._vocab_key = key
        return self._fc_cls

    @torch.no_grad()
    def infer(self, graph: str, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        t = {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device) for k, v in feeds.items()}
        m = self.model
        if graph == "encoder":
            return {"features": m.encode(t["image"]).cpu().numpy()}
        if graph == "prompt_decoder":
            masks, iou = m.decode_prompts(t["features"], t["boxes"])
            return {"mask_logits": masks.cpu().numpy(), "iou": iou.cpu().numpy()}
        if graph == "object_decoder":
            cls, masks, query = m.decode_objects(t["features"], self._classifier(feeds["class_embed"]))
            return {"class_logits": cls.cpu().numpy(), "mask_logits": masks.cpu().numpy(),
                    "query_embed": query.cpu().numpy()}
        raise KeyError("unknown graph %r" % graph)
