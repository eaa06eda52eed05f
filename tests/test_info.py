"""``rmpsam-edge info BUNDLE | CHECKPOINT``: variant, weights and the provenance steps (new and old manifests); a
checkpoint's hash, parameter count and training record."""
import json
import os

from test_bundle import make_fake_bundle
from rmpsam_edge.cli import main
from rmpsam_edge.weights import SHIPPED_BUNDLE
from rmpsam_edge.runtime.bundle import provenance_step, write_manifest


def test_info_shows_each_provenance_step(tmp_path, capsys):
    path = make_fake_bundle(str(tmp_path / "b"))
    with open(os.path.join(path, "manifest.json")) as f:
        m = json.load(f)
    m["provenance"] = [dict(provenance_step("rmpsam-edge export", ["rmpsam-edge", "export", "--out", "my dir"]),
                            created="2026-01-02T03:04:05Z"),
                       dict(provenance_step("rmpsam-edge quantize", ["rmpsam-edge", "quantize", "--model", "b"]),
                            created="2026-01-02T04:00:00Z")]
    write_manifest(path, m)
    assert main(["info", path]) == 0
    lines = capsys.readouterr().out.splitlines()
    i = lines.index("provenance:")
    assert lines[i + 1:i + 3] == ["  1. rmpsam-edge export (2026-01-02T03:04:05Z): rmpsam-edge export --out 'my dir'",
                                  "  2. rmpsam-edge quantize (2026-01-02T04:00:00Z): rmpsam-edge quantize --model b"]


def test_info_on_the_shipped_bundle(capsys):
    assert main(["info", SHIPPED_BUNDLE]) == 0
    out = capsys.readouterr().out
    assert "kind: demo" in out and "provenance:" in out
    assert "TensorRT 8.5: builds" in out.splitlines()  # exported at opset 16: JetPack 5's TensorRT builds it
    assert main(["info", SHIPPED_BUNDLE, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["kind"] == "bundle" and d["weights"]["kind"] == "demo" and d["provenance"]
    assert all(s["tool"] and s["argv"] and s["created"] for s in d["provenance"])


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
    """The fields docs/training.md cites (`rmpsam-edge info --json` regenerates its results file), read from the
    shipped weights themselves: the hash of the file, the parameter count by part, the training record."""
    import hashlib
    import pytest
    pytest.importorskip("torch")
    assert main(["info", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["path"] == os.path.join("rmpsam_edge", "assets", "weights", "rmpsam_r18_demo.pth")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, d["path"]), "rb") as f:
        assert d["sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert d["variant"] == "r18" and d["parameters"] == sum(d["parameters_by_part"].values())
    t = d["training"]
    assert 0 < t["steps"] <= t["train_config"]["steps"] and t["train_seconds"] > 0
    assert t["train_config"]["imgsz"] == 192 and d["input_policy"] == "long side 192 px, pad to /32"
