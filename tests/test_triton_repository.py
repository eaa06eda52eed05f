"""export-triton writes a complete Triton model repository (no server needed): one model per graph plus the
``rmpsam`` BLS composition, dynamic batching settable on the encoder, instance groups, the three platforms,
atomic + --force, one-line errors."""
import os

import pytest

from _bundle_fixture import shared_bundle
from rmpsam_edge.cli import main


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    return shared_bundle(tmp_path_factory)


def _config(repo, model):
    with open(os.path.join(repo, model, "config.pbtxt")) as f:
        return f.read()


def test_python_repository(bundle, tmp_path):
    repo = str(tmp_path / "repo")
    assert main(["export-triton", "--model", bundle, "--out", repo, "--max-batch", "8", "--queue-delay-us", "500"]) == 0
    assert sorted(os.listdir(repo)) == ["encoder", "object_decoder", "prompt_decoder", "rmpsam"]
    enc = _config(repo, "encoder")
    assert 'backend: "python"' in enc and "max_batch_size: 8" in enc
    assert "dynamic_batching { max_queue_delay_microseconds: 500 }" in enc and "KIND_CPU" in enc
    assert "dynamic_batching" not in _config(repo, "prompt_decoder") and "max_batch_size: 0" in _config(repo, "object_decoder")
    comp = _config(repo, "rmpsam")
    assert 'key: "encoder_max_batch" value: { string_value: "8" }' in comp and "count: 1 kind: KIND_CPU" in comp
    assert 'key: "decoders" value: { string_value: "local" }' in comp  # features stay in the composer process
    assert 'key: "encoder" value: { string_value: "bls" }' in comp  # batching: through the encoder model
    assert 'string_value: "rmpsam/1/bundle"' in enc  # the bundle is copied into the repository, hashes intact
    assert os.path.isfile(os.path.join(repo, "rmpsam", "1", "bundle", "manifest.json"))
    with open(os.path.join(repo, "encoder", "1", "model.py")) as f:
        assert "rmpsam_edge.runtime.triton.graph_model" in f.read()
    # nothing the user made is overwritten without --force
    assert main(["export-triton", "--model", bundle, "--out", repo]) != 0
    assert "max_batch_size: 8" in _config(repo, "encoder")
    assert main(["export-triton", "--model", bundle, "--out", repo, "--force", "--max-batch", "1"]) == 0
    assert "max_batch_size: 1" in _config(repo, "encoder")
    assert 'key: "encoder" value: { string_value: "local" }' in _config(repo, "rmpsam")  # no batching: in process


def test_container_platforms(bundle, tmp_path):
    repo = str(tmp_path / "ort")
    assert main(["export-triton", "--model", bundle, "--out", repo, "--platform", "onnxruntime",
                 "--instance-kind", "gpu", "--instances", "2"]) == 0
    enc = _config(repo, "encoder")
    assert 'platform: "onnxruntime_onnx"' in enc and "count: 2 kind: KIND_GPU" in enc
    assert os.path.getsize(os.path.join(repo, "encoder", "1", "model.onnx")) == \
        os.path.getsize(os.path.join(bundle, "encoder.onnx"))
    comp = _config(repo, "rmpsam")  # the composition is python BLS on every platform, calling the GPU models
    assert 'backend: "python"' in comp and 'key: "decoders" value: { string_value: "bls" }' in comp
    trt = str(tmp_path / "trt")
    assert main(["export-triton", "--model", bundle, "--out", trt, "--platform", "tensorrt"]) == 0
    assert 'platform: "tensorrt_plan"' in _config(trt, "object_decoder")
    assert os.path.isfile(os.path.join(trt, "encoder", "1", "PUT_MODEL_PLAN_HERE.txt"))


def test_bad_arguments(bundle, tmp_path, capsys):
    assert main(["export-triton", "--model", bundle, "--out", str(tmp_path / "r"), "--max-batch", "0"]) == 2
    assert main(["export-triton", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert "--max-batch" in err and "not found" in err and "Traceback" not in err
    assert not os.path.exists(str(tmp_path / "r")) and not os.path.exists(str(tmp_path / "r2"))


def test_serve_without_tritonserver_is_one_line(bundle, tmp_path, capsys):
    rc = main(["serve", "--model", bundle, "--tritonserver", str(tmp_path / "no_tritonserver")])
    err = capsys.readouterr().err
    assert rc == 2 and "pip install nvidia-pytriton==0.7.0" in err and "Traceback" not in err
