"""Torch-free runtime: numpy + OpenCV + one backend (ONNX Runtime, OpenVINO, TensorRT). Python 3.8+.

    from rmpsam_edge.runtime import load
    predictor = load("bundles/r18", backend="auto")
    predictor.set_image(frame); masks, scores = predictor.predict(points=[[320, 240]])

Nothing is imported until ``load`` is called, so importing this package costs nothing and never needs a backend.
"""


def load(bundle, backend="auto", device=None, threads=None, verbose=True, graphs=None):
    """Load a model bundle on a backend -> Predictor (see ``rmpsam_edge.runtime.loader.load``)."""
    from .loader import load as _load
    return _load(bundle, backend=backend, device=device, threads=threads, verbose=verbose, graphs=graphs)


def load_runner(bundle, backend="auto", device=None, threads=None, verbose=True, graphs=None):
    """-> (activated Runner, Bundle, choice line) without a Predictor (benchmarks, custom pipelines)."""
    from .loader import load_runner as _load_runner
    return _load_runner(bundle, backend=backend, device=device, threads=threads, verbose=verbose, graphs=graphs)
