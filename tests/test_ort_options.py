"""ONNX Runtime session options: spinning off and the arena on by default (measured:
benchmarks/results/ort_session_options_r18_512.md), both switchable per runner."""
import pytest

from _bundle_fixture import shared_bundle

pytest.importorskip("onnxruntime")  # optional (the ort extra); a broken backend module fails, never skips
from rmpsam_edge.runtime import onnxruntime_backend as ort_backend  # noqa: E402


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    return shared_bundle(tmp_path_factory)


def test_defaults_and_switches(bundle):
    r = ort_backend.OnnxRuntimeRunner(bundle, device="cpu", threads=1)
    so = r._options()
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0" and so.enable_cpu_mem_arena
    r = ort_backend.OnnxRuntimeRunner(bundle, device="cpu", threads=1, spinning=True, arena=False)
    so = r._options()
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "1" and not so.enable_cpu_mem_arena
    r.activate()
    assert r.sessions["encoder"].get_session_options().enable_cpu_mem_arena is False
    r.deactivate()


def test_ort_options_and_profile_presets(bundle, tmp_path, capsys):
    import json

    from rmpsam_edge.cli import main
    js, md = tmp_path / "o.json", tmp_path / "o.md"
    assert main(["benchmark", "--preset", "ort-options", "--model", bundle, "--imgsz", "64", "--runs", "2",
                 "--threads", "1", "--json", str(js), "--md", str(md)]) == 0
    doc = json.load(open(js))
    assert set(doc["p50_ms"]) == {"encoder", "prompt_decoder_1", "object_decoder", "encoder_plus_prompt_1"}
    assert all(len(v) == 4 for v in doc["p50_ms"].values()) and doc["command"].startswith(
        "rmpsam-edge benchmark --model %s --preset ort-options" % bundle)
    assert md.read_text().count("\n| spin ") == 4
    prof = tmp_path / "p.md"
    assert main(["benchmark", "--preset", "profile", "--model", bundle, "--graph", "prompt_decoder", "--imgsz", "64",
                 "--runs", "2", "--threads", "1", "--md", str(prof)]) == 0
    text = prof.read_text()
    assert "# ONNX Runtime profile: prompt_decoder, 64x64" in text and "| op type | share |" in text
    capsys.readouterr()
    assert main(["benchmark", "--preset", "profile", "--imgsz", "64"]) == 2
    assert "pass --model BUNDLE" in capsys.readouterr().err
