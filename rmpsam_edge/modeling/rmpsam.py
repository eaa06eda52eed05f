"""RMP-SAM model: backbone + YOSO neck (the encoder) and the shared decoder head with its two adapters.

The three entry points mirror the exported graphs:
    encode(image (B,3,H,W) normalised, padded to /32)     -> features (B,256,H/4,W/4)
    decode_prompts(features (1,256,h,w), boxes (Np,4))    -> mask logits (Np,h,w), IoU (Np,1)
    decode_objects(features (1,256,h,w))                  -> class logits (1,100,K+1), mask logits
                                                             (1,100,h,w), query embeddings (1,100,256)
Boxes are normalised (cx, cy, w, h) of the resized un-padded image (see ``rmpsam_edge.preprocess``).
"""
from typing import Optional, Tuple

import torch
from torch import nn

from .backbone import ResNet
from .head import RapSAMHead
from .neck import YOSONeck

VARIANTS = {
    "r18": {"depth": 18, "backbone_shape": [64, 128, 256, 512]},
    "r50": {"depth": 50, "backbone_shape": [256, 512, 1024, 2048]},
}
UNSUPPORTED_VARIANTS = {
    "convnext_l": "ConvNeXt-L (OpenCLIP backbone) has no published RMP-SAM weights and needs open_clip",
    "topformer": "TopFormer exists only in the paper: no code and no weights were published",
}


class RMPSAM(nn.Module):
    def __init__(self, variant: str = "r18"):
        super().__init__()
        if variant in UNSUPPORTED_VARIANTS:
            raise ValueError("variant %r is not supported: %s; use r18 or r50" % (variant, UNSUPPORTED_VARIANTS[variant]))
        if variant not in VARIANTS:
            raise ValueError("unknown variant %r; use one of %s" % (variant, ", ".join(VARIANTS)))
        cfg = VARIANTS[variant]
        self.variant = variant
        self.backbone = ResNet(cfg["depth"])
        self.neck = YOSONeck(cfg["backbone_shape"])
        self.panoptic_head = RapSAMHead()

    def train(self, mode: bool = True):
        super().train(mode)
        # mmdet norm_eval=True: BatchNorm statistics stay frozen in the backbone, as in the official recipe.
        for m in self.backbone.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def set_vocabulary(self, class_embed: torch.Tensor) -> None:
        self.panoptic_head.set_vocabulary(class_embed)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.neck(self.backbone(image))

    def decode_prompts(self, feats: torch.Tensor, boxes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        squeeze = boxes.dim() == 2
        if squeeze:
            boxes = boxes.unsqueeze(0)
        out = self.panoptic_head.forward_prompts(feats, boxes)
        if squeeze:
            return out["masks"][0], out["iou"][0]
        return out["masks"], out["iou"]

    def decode_objects(self, feats: torch.Tensor, fc_cls: Optional[torch.Tensor] = None):
        out = self.panoptic_head.forward_objects(feats, fc_cls)
        return out["cls"], out["masks"], out["query"]


def build_model(variant: str = "r18", class_embed: Optional[torch.Tensor] = None) -> RMPSAM:
    model = RMPSAM(variant)
    if class_embed is not None:
        model.set_vocabulary(class_embed)
    return model.eval()
