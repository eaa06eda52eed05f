"""``rmpsam-edge info BUNDLE``: variant, weights and the provenance steps, for new and old manifests."""
import json
import os

from test_bundle import make_fake_bundle
from rmpsam_edge.cli import main
from rmpsam_edge.commands.predict import SHIPPED_BUNDLE
from rmpsam_edge.runtime.bundle import write_manifest


def test_info_shows_the_shipped_bundle_provenance(capsys):
    assert main(["info", SHIPPED_BUNDLE]) == 0
    out = capsys.readouterr().out
    assert "kind: demo" in out and "provenance:" in out
    assert "1. rmpsam-edge export (2026-12-07T13:34:10Z): rmpsam-edge export --no-many-prompts-graph" in out
    assert "2. rmpsam_edge.export.fp16_storage (2026-12-07T13:34:24Z): python -m rmpsam_edge.export.fp16_storage" in out
    assert "TensorRT 8.5: builds" in out.splitlines()  # exported at opset 16
    assert main(["info", SHIPPED_BUNDLE, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["kind"] == "bundle" and d["weights"]["kind"] == "demo" and len(d["provenance"]) == 2


def test_info_reads_an_old_manifest(tmp_path, capsys):
    path = make_fake_bundle(str(tmp_path / "b"))
    with open(os.path.join(path, "manifest.json")) as f:
        m = json.load(f)
    m.update(weights={"source": "random-init (seed 4)", "sha256": None, "note": "random weights"},
             command="rmpsam-edge export --random-init --seed 4")
    write_manifest(path, m)
    assert main(["info", path, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["weights"]["kind"] == "random-init" and d["weights"]["seed"] == 4
    assert d["provenance"][0]["command"] == "rmpsam-edge export --random-init --seed 4"


def test_info_shows_the_demo_weights_training_record(capsys):
    import pytest
    pytest.importorskip("torch")
    assert main(["info", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["path"] == os.path.join("rmpsam_edge", "assets", "weights", "rmpsam_r18_demo.pth")
    assert d["training"]["steps"] > 0 and d["training"]["train_config"]["imgsz"] == 192
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "benchmarks", "results", "demo_weights_info.json")) as f:
        assert json.load(f) == d  # docs/training.md's figures: `rmpsam-edge info --json > that file`
