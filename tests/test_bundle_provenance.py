"""Structured weights and provenance in bundle manifests: one reader for new and old (free-text) manifests,
the steps derived bundles append, and model_for_bundle rebuilding the PyTorch weights a bundle came from."""
import json
import os

import pytest

from test_bundle import make_fake_bundle
from rmpsam_edge.runtime.bundle import Bundle, add_step, provenance, weights_info, write_manifest

OLD_COMMAND = "rmpsam-edge export --random-init --out b; then python -m rmpsam_edge.export.fp16_storage SRC OUT"


def _with(folder, **fields):
    path = make_fake_bundle(folder)
    with open(os.path.join(path, "manifest.json")) as f:
        m = json.load(f)
    m.update(fields)
    write_manifest(path, m)
    return Bundle.open(path)


def test_new_manifest_weights_are_read_as_written(tmp_path):
    w = {"kind": "checkpoint", "file": "mine.pth", "sha256": "ab" * 32, "seed": None, "variant": "r50",
         "note": "fine-tuned", "vocabulary_source": "coco.pth"}
    assert _with(str(tmp_path / "b"), weights=w).weights_info() == w


@pytest.mark.parametrize("source, kind, file, seed", [
    ("random-init (seed 7)", "random-init", None, 7),
    ("random-init", "random-init", None, 0),
    ("rmpsam_r18_demo.pth", "demo", "rmpsam_r18_demo.pth", None),
    ("/abs/path/rapsam_r50_12e.pth", "checkpoint", "rapsam_r50_12e.pth", None),
])
def test_old_manifest_weights_source_string(tmp_path, source, kind, file, seed):
    info = _with(str(tmp_path / "b"), weights={"source": source, "sha256": None, "note": "n"}).weights_info()
    assert (info["kind"], info["file"], info["seed"], info["variant"], info["note"]) == (kind, file, seed, "r18", "n")


def test_unrecorded_weights_have_no_kind():
    assert weights_info({"variant": "r18"})["kind"] is None and weights_info({"weights": {"note": "x"}})["note"] == "x"


def test_old_command_becomes_the_first_step_and_steps_append(tmp_path):
    b = _with(str(tmp_path / "b"), command=OLD_COMMAND, created="2026-01-01T00:00:00Z", tools={"onnx": "1.0"})
    assert b.provenance() == [{"tool": None, "argv": None, "command": OLD_COMMAND,
                               "created": "2026-01-01T00:00:00Z", "versions": {"onnx": "1.0"}}]
    m = add_step(dict(b.manifest), "rmpsam-edge quantize", ["rmpsam-edge", "quantize", "--model", "b"])
    assert "command" not in m and "tools" not in m
    steps = provenance(m)
    assert [s["tool"] for s in steps] == [None, "rmpsam-edge quantize"] and steps[0]["command"] == OLD_COMMAND
    assert steps[1]["argv"] == ["rmpsam-edge", "quantize", "--model", "b"] and steps[1]["versions"]["numpy"]
    assert provenance(b.manifest)[0]["command"] == OLD_COMMAND  # the source manifest is unchanged


def test_shipped_bundle_manifest_is_structured():
    from rmpsam_edge.weights import SHIPPED_BUNDLE
    b = Bundle.open(SHIPPED_BUNDLE)
    assert "command" not in b.manifest and "source" not in b.manifest["weights"]
    assert b.weights_info()["kind"] == "demo" and b.weights_info()["file"] == "rmpsam_r18_demo.pth"
    assert [s["tool"] for s in b.provenance()] == ["rmpsam-edge export", "rmpsam_edge.export.fp16_storage"]


# ------------------------------------------------------------------------------------------ model_for_bundle
def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all((sa[k] == sb[k]).all() for k in sa)


def test_model_for_bundle_random_init_uses_the_seed():
    pytest.importorskip("torch")
    from rmpsam_edge import checkpoint as ck
    model, why = ck.model_for_bundle({"kind": "random-init", "seed": 3}, "r18")
    assert why is None and _same(model, ck.random_model("r18", seed=3)[0])
    assert not _same(model, ck.random_model("r18", seed=0)[0])


def test_model_for_bundle_demo_weights_by_sha256():
    pytest.importorskip("torch")
    from rmpsam_edge import checkpoint as ck
    sha = ck.sha256_file(ck.DEFAULT_WEIGHTS)
    model, why = ck.model_for_bundle({"kind": "checkpoint", "file": "renamed.pth", "sha256": sha}, "r18")
    assert why is None and _same(model, ck.load_checkpoint(None)[0])
    model, why = ck.model_for_bundle({"kind": "demo", "sha256": sha}, "r50")
    assert model is None and "r18" in why and "r50" in why


def test_model_for_bundle_unknown_weights_say_why(tmp_path):
    pytest.importorskip("torch")
    from rmpsam_edge import checkpoint as ck
    for w in ({"kind": "checkpoint", "file": "rapsam_r50.pth", "sha256": "0" * 64}, {"kind": None},
              {"kind": "random-init", "seed": None}):
        model, why = ck.model_for_bundle(w, "r18")
        assert model is None and why and "\n" not in why
    assert "rapsam_r50.pth" in ck.model_for_bundle({"kind": "checkpoint", "file": "rapsam_r50.pth"}, "r18")[1]
    # a checkpoint whose sha256 is not the bundle's is refused
    model, why = ck.model_for_bundle({"kind": "checkpoint", "sha256": "0" * 64}, "r18", ck.DEFAULT_WEIGHTS)
    assert model is None and "not the checkpoint" in why
