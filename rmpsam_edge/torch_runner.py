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
    """threads: torch intra-op threads for this runner's calls only (None: leave torch's setting alone). They
    are set around each ``infer`` and the previous value is restored after it, so the rest of the process
    (and other runners) keep theirs."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, threads: Optional[int] = None, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.device = device
        self.threads = threads
        self._vocab_key = None
        self._fc_cls = None

    def describe(self) -> str:
        return "torch %s eager on %s, fp32, %d threads" % (torch.__version__, self.device,
                                                           self.threads or torch.get_num_threads())

    def _classifier(self, class_embed: np.ndarray) -> torch.Tensor:
        key = (class_embed.shape, class_embed.ctypes.data, float(class_embed.ravel()[:16].sum()))
        if key != self._vocab_key:
            self._fc_cls = with_background(torch.from_numpy(np.ascontiguousarray(class_embed, np.float32))).to(self.device)
            self._vocab_key = key
        return self._fc_cls

    def infer(self, graph: str, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        before = torch.get_num_threads()
        if not self.threads or int(self.threads) == before:
            return self._infer(graph, feeds)
        torch.set_num_threads(int(self.threads))
        try:
            return self._infer(graph, feeds)
        finally:
            torch.set_num_threads(before)

    @torch.no_grad()
    def _infer(self, graph: str, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
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


def torch_predictor(checkpoint=None, vocab=None, random_init=False, variant="r18", input_size=None,
                    threads=None, seed=0):
    """The PyTorch path in one call -> (Predictor, info).

    checkpoint None and random_init False -> the shipped demo weights and their vocabulary. An official
    checkpoint without ``vocab`` still answers prompts; panoptic/instances then ask for a vocabulary.
    input_size None -> what the checkpoint recommends (demo weights) or the official keep-ratio rule.
    """
    from rmpsam_edge import checkpoint as ck
    from rmpsam_edge.predictor import Predictor
    from rmpsam_edge.spec import ModelSpec, RANDOM_WEIGHTS_NOTE

    if vocab is None and checkpoint is None:
        vocab = ck.DEFAULT_VOCAB if (not random_init and __import__("os").path.isfile(ck.DEFAULT_VOCAB)) else None
    class_embed, names, num_things = ck.load_vocabulary(vocab) if vocab else (None, None, None)
    if random_init:
        model, info = ck.random_model(variant, seed=seed, class_embed=class_embed)
        info["weights_note"] = RANDOM_WEIGHTS_NOTE
    else:
        model, info = ck.load_checkpoint(checkpoint, class_embed=class_embed)
    info["vocabulary"] = None if vocab is None else {"path": vocab, "classes": len(names), "things": num_things}
    size = input_size if input_size is not None else info.get("input_size")
    spec = ModelSpec(info["variant"], input_size=size, class_embed=class_embed, class_names=names,
                     num_things=num_things, weights_note=info.get("weights_note"))
    runner = TorchRunner(model, threads=threads)
    runner.activate()
    return Predictor(runner, spec), info
