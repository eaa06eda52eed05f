"""ONNX Runtime session options: spinning off and the arena on by default (measured:
benchmarks/results/ort_session_options_r18_512.md), both switchable per runner."""
import pytest

from _bundle_fixture import shared_bundle

ort_backend = pytest.importorskip("rmpsam_edge.runtime.onnxruntime_backend")


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
