"""OpenVINO IR graphs in a bundle (written by `quantize --backend openvino`): both files are hash-checked, and
ONNX Runtime declines them with a line that names the backend to use."""
import json
import os

import pytest

from rmpsam_edge.errors import UserError

from rmpsam_edge.runtime.bundle import MANIFEST, Bundle, sha256_file, write_manifest
from rmpsam_edge.runtime.bundle_runner import BackendUnavailable

from test_bundle import make_fake_bundle


def make_ir_bundle(folder):
    make_fake_bundle(folder)
    with open(os.path.join(str(folder), MANIFEST)) as f:
        manifest = json.load(f)
    for ext, text in (("xml", b"<net/>"), ("bin", b"\x00\x01weights")):
        with open(os.path.join(str(folder), "encoder." + ext), "wb") as f:
            f.write(text)
    manifest["graphs"]["encoder"] = {
        "file": "encoder.xml", "sha256": sha256_file(os.path.join(str(folder), "encoder.xml")),
        "format": "openvino-ir",
        "weights": {"file": "encoder.bin", "sha256": sha256_file(os.path.join(str(folder), "encoder.bin"))}}
    write_manifest(str(folder), manifest)
    return str(folder)


def test_ir_weights_file_is_hash_checked(tmp_path):
    folder = make_ir_bundle(tmp_path / "b")
    b = Bundle.open(folder)
    assert b.graph_format("encoder") == "openvino-ir" and b.graph_format("prompt_decoder") == "onnx"
    assert b.graph_path("encoder").endswith("encoder.xml")
    with open(os.path.join(folder, "encoder.bin"), "ab") as f:
        f.write(b"tampered")
    with pytest.raises(UserError, match=r"encoder\.bin does not match its sha256"):
        Bundle.open(folder).graph_path("encoder")


def test_onnxruntime_declines_ir_graphs(tmp_path):
    pytest.importorskip("onnxruntime")
    from rmpsam_edge.runtime.onnxruntime_backend import OnnxRuntimeRunner
    folder = make_ir_bundle(tmp_path / "b")
    runner = OnnxRuntimeRunner(Bundle.open(folder))
    with pytest.raises(BackendUnavailable, match="backend='openvino'"):
        runner._load("encoder", Bundle.open(folder).graph_path("encoder"))
