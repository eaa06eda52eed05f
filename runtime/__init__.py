"""Torch-free runtime: numpy + OpenCV + one backend (ONNX Runtime, OpenVINO, TensorRT). Python 3.8+."""
