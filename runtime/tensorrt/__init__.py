"""TensorRT backend (pycuda): engine building, engine cache, runner."""
