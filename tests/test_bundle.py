"""Bundle reading (torch-free): validation errors are one line naming the file and the fix; files are checked
against their sha256 before use; the ModelSpec comes from the manifest."""
import json
import os
import shutil

import numpy as np
import pytest

from rmpsam_edge.cli import main
from rmpsam_edge.errors import UserError
from rmpsam_edge.media import asset_path
from rmpsam_edge.runtime.bundle import FORMAT, FORMAT_VERSION, Bundle, sha256_file, write_manifest

NAMES = ("encoder", "prompt_decoder", "object_decoder")


def make_fake_bundle(folder, version=FORMAT_VERSION, vocab=True):
    """A bundle whose graph files are a few bytes (enough for manifest/sha256 checks, not for running)."""
    os.makedirs(folder, exist_ok=True)
    graphs = {}
    for n in NAMES:
        path = os.path.join(folder, n + ".onnx")
        with open(path, "wb") as f:
            f.write(("fake %s graph" % n).encode())
        graphs[n] = {"file": n + ".onnx", "sha256": sha256_file(path)}
    manifest = {"format": FORMAT, "format_version": version, "variant": "r18", "opset": 17,
                "input": {"size": 320, "mean": [1.0, 2.0, 3.0], "std": [4.0, 5.0, 6.0]},
                "graphs": graphs, "weights": {"note": "random weights"}, "static": None}
    if vocab:
        emb = np.ones((3, 2, 768), np.float32) / np.sqrt(768)
        np.save(os.path.join(folder, "vocab.npy"), emb)
        manifest["vocabulary"] = {"file": "vocab.npy", "sha256": sha256_file(os.path.join(folder, "vocab.npy")),
                                  "names": ["a", "b", "c"], "num_things": 1}
    write_manifest(folder, manifest)
    return str(folder)


def one_line_error(fn, *args):
    with pytest.raises(UserError) as info:
        fn(*args)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_valid_bundle_gives_spec(tmp_path):
    b = Bundle.open(make_fake_bundle(str(tmp_path / "b")))
    spec = b.spec()
    assert spec.variant == "r18" and spec.input_size == 320
    assert spec.mean == (1.0, 2.0, 3.0) and spec.std == (4.0, 5.0, 6.0)
    assert spec.class_names == ["a", "b", "c"] and spec.num_things == 1
    assert spec.class_embed.shape == (3, 2, 768) and spec.weights_note == "random weights"
    assert b.graph_path("encoder").endswith("encoder.onnx")
    assert b.prompt_graph(500) == "prompt_decoder"  # no many-prompt graph in this bundle


def test_bundle_without_vocabulary(tmp_path):
    spec = Bundle.open(make_fake_bundle(str(tmp_path / "b"), vocab=False)).spec()
    assert spec.class_embed is None and spec.num_classes == 0


def test_missing_path(tmp_path):
    msg = one_line_error(Bundle.open, str(tmp_path / "nope"))
    assert "not found" in msg and "rmpsam-edge export" in msg


def test_folder_that_is_not_a_bundle(tmp_path):
    (tmp_path / "photos").mkdir()
    msg = one_line_error(Bundle.open, str(tmp_path / "photos"))
    assert "not a model bundle" in msg and "manifest.json" in msg


def test_file_inside_a_bundle_points_to_the_folder(tmp_path):
    folder = make_fake_bundle(str(tmp_path / "b"))
    msg = one_line_error(Bundle.open, os.path.join(folder, "encoder.onnx"))
    assert "pass the bundle folder" in msg and folder in msg


def test_newer_format_version(tmp_path):
    msg = one_line_error(Bundle.open, make_fake_bundle(str(tmp_path / "b"), version=FORMAT_VERSION + 1))
    assert "newer" in msg and "upgrade" in msg


def test_broken_manifest_json(tmp_path):
    folder = make_fake_bundle(str(tmp_path / "b"))
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        f.write("{not json")
    assert "not valid JSON" in one_line_error(Bundle.open, folder)


def test_foreign_manifest(tmp_path):
    folder = str(tmp_path / "b")
    os.makedirs(folder)
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump({"format": "something-else"}, f)
    assert "not an rmpsam-edge bundle" in one_line_error(Bundle.open, folder)


def test_missing_graph_file(tmp_path):
    folder = make_fake_bundle(str(tmp_path / "b"))
    os.remove(os.path.join(folder, "object_decoder.onnx"))
    msg = one_line_error(Bundle.open, folder)
    assert "incomplete" in msg and "object_decoder.onnx" in msg


def test_sha256_mismatch_is_caught_before_use(tmp_path):
    folder = make_fake_bundle(str(tmp_path / "b"))
    b = Bundle.open(folder)  # opening does not hash; using a file does
    with open(os.path.join(folder, "prompt_decoder.onnx"), "ab") as f:
        f.write(b"tampered")
    msg = one_line_error(b.graph_path, "prompt_decoder")
    assert "sha256" in msg and "prompt_decoder.onnx" in msg and "--force" in msg
    b.graph_path("encoder")  # untouched files still pass


def test_vocab_sha256_mismatch(tmp_path):
    folder = make_fake_bundle(str(tmp_path / "b"))
    np.save(os.path.join(folder, "vocab.npy"), np.zeros((3, 2, 768), np.float32))
    assert "sha256" in one_line_error(Bundle.open(folder).spec)


def test_predict_cli_on_bad_bundle_prints_one_line(tmp_path, capsys):
    folder = make_fake_bundle(str(tmp_path / "b"), version=FORMAT_VERSION + 1)
    image = asset_path("images", "chelsea.jpg")
    rc = main(["predict", "--model", folder, "--image", image, "--points", "10,10", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc != 0 and "newer" in err and "Traceback" not in err


def test_copy_of_bundle_keeps_working(tmp_path):
    """Bundles are relocatable: paths in the manifest are relative."""
    folder = make_fake_bundle(str(tmp_path / "a"))
    shutil.copytree(folder, str(tmp_path / "moved"))
    assert Bundle.open(str(tmp_path / "moved")).graph_path("encoder").startswith(str(tmp_path / "moved"))
