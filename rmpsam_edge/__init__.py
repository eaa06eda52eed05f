"""rmpsam_edge: RMP-SAM from a PyTorch checkpoint to fast deployment (ONNX Runtime, OpenVINO, TensorRT).

Importing this package imports no torch: the pre/post-processing, the Predictor and ``rmpsam_edge.runtime``
run with numpy + OpenCV + one backend (Python 3.8+). The model itself lives in ``rmpsam_edge.modeling``.
"""
__version__ = "0.1.0"
