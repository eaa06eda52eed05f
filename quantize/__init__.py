"""FP16 / INT8 quantization of model bundles, with a fidelity report."""
