"""ONNX export of RMP-SAM into a model bundle (needs torch)."""
