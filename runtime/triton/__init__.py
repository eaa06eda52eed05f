"""Serving bundles on NVIDIA Triton Inference Server (docs/triton.md). No torch, Python 3.8.

    protocol.py     model/tensor names and tasks shared by the repository, the server models and the client
    repository.py   write a Triton model repository for a bundle (python / onnxruntime / tensorrt platforms)
    graph_model.py  python-backend model running ONE bundle graph on the torch-free runtime
    composer.py     python-backend BLS model ``rmpsam``: frames in, decoder outputs out, features kept server-side
    server.py       find and run the real ``tritonserver`` binary of the nvidia-pytriton wheel
    client.py       ``TritonRunner`` / ``TritonPredictor``: ``load("grpc://host:8001")``
"""
