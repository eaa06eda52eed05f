"""RMP-SAM in plain PyTorch: one small module per part (the spirit of segment-anything's ``modeling/``).

Parameter names follow the official code (GitHub xushilin1/RAP-SAM) so official checkpoints load with
``strict=True``.
"""
from .rmpsam import RMPSAM, build_model, VARIANTS  # noqa: F401
