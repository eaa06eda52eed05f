"""Export: the bundle the CLI writes (files, manifest, opset, dynamic axes, parity on the shipped image),
the deploy graphs' exactness, --force refusal, failed exports leaving nothing behind."""
import json
import os

import numpy as np
import onnx
import pytest
import torch

from _bundle_fixture import IMGSZ, SEED, VOCAB_NAMES, shared_bundle, torch_model, vocab_embed
from rmpsam_edge.cli import main
from rmpsam_edge.errors import UserError
from rmpsam_edge.export import exporter
from rmpsam_edge.export.graphs import build_graphs
from rmpsam_edge.export.parity import check_parity, parity_images
from rmpsam_edge.runtime.bundle import sha256_file


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    return shared_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def manifest(bundle):
    with open(os.path.join(bundle, "manifest.json")) as f:
        return json.load(f)


def test_bundle_files_and_manifest(bundle, manifest):
    assert manifest["format"] == "rmpsam-edge-bundle" and manifest["format_version"] == 1
    assert manifest["variant"] == "r18" and manifest["opset"] == 17  # the fixture's --opset
    assert manifest["input"]["size"] == IMGSZ and manifest["input"]["mean"] == [123.675, 116.28, 103.53]
    assert manifest["vocabulary"]["names"] == VOCAB_NAMES and manifest["vocabulary"]["num_things"] == 2
    assert manifest["weights"] == {"kind": "random-init", "file": None, "sha256": None, "seed": SEED,
                                   "variant": "r18", "note": "random weights", "vocabulary_source": "tiny_vocab.npy"}
    assert "command" not in manifest and "tools" not in manifest
    (step,) = manifest["provenance"]
    assert step["tool"] == "rmpsam-edge export" and step["argv"][:4] == ["rmpsam-edge", "export", "--random-init",
                                                                          "--seed"]
    assert step["argv"][-2:] == ["--out", bundle] and step["created"][:4] == manifest["created"][:4]
    for tool in ("torch", "onnx", "onnxslim", "rmpsam_edge", "parity_runtime", "numpy", "python"):
        assert step["versions"][tool]
    files = {"encoder", "prompt_decoder", "prompt_decoder_many", "object_decoder"}
    assert set(manifest["graphs"]) == files
    for name, entry in manifest["graphs"].items():
        path = os.path.join(bundle, entry["file"])
        assert sha256_file(path) == entry["sha256"]
        assert not os.path.exists(path + ".data")  # single file
        model = onnx.load(path)
        assert {o.domain or "ai.onnx": o.version for o in model.opset_import}["ai.onnx"] == 17
        assert not any(n.op_type in ("DeformConv", "Einsum") for n in model.graph.node)
    assert sha256_file(os.path.join(bundle, "vocab.npy")) == manifest["vocabulary"]["sha256"]
    parent, name = os.path.split(os.path.abspath(bundle))
    assert not [f for f in os.listdir(parent) if f.startswith("." + name + ".tmp-")]  # staging renamed away


def test_graph_io_matches_runner_interface(manifest):
    g = manifest["graphs"]
    assert g["encoder"]["inputs"]["image"]["shape"] == ["B", 3, "H", "W"]
    assert g["encoder"]["outputs"]["features"]["shape"] == ["B", 256, "h", "w"]
    assert g["prompt_decoder"]["inputs"]["boxes"]["shape"] == ["Np", 4]
    assert g["prompt_decoder"]["outputs"]["mask_logits"]["shape"] == ["Np", "h", "w"]
    assert g["prompt_decoder"]["outputs"]["iou"]["shape"] == ["Np", 1]
    assert g["object_decoder"]["inputs"]["class_embed"]["shape"] == ["K", "P", 768]
    assert g["object_decoder"]["outputs"]["class_logits"]["shape"] == [1, 100, "K+1"]
    assert manifest["dynamic_axes"]["H"]["multiple_of"] == 32
    assert manifest["dynamic_axes"]["H"]["max"] == IMGSZ
    assert manifest["many_prompts_from"] == exporter.MANY_PROMPTS_FROM


def test_parity_recorded_on_two_sizes(manifest):
    parity = manifest["parity"]
    assert parity["ok"] and parity["image"].endswith("astronaut.jpg")
    inputs = {run["input"] for run in parity["runs"]}
    assert any("crop" in i and "padded" in i for i in inputs)  # the non-multiple-of-32 size
    graphs = {run["graph"] for run in parity["runs"]}
    assert graphs == {"encoder", "prompt_decoder", "prompt_decoder_many", "object_decoder"}
    for run in parity["runs"]:
        for row in run["outputs"]:
            assert row["rel"] <= row["tolerance"]
            if row["output"] == "mask_logits":
                assert row["mask_agreement"] >= 0.999


def test_parity_detects_a_wrong_model(bundle, manifest):
    """The same check that gates every export fails for a model the graphs were not made from."""
    other = torch_model().__class__("r18").eval()
    other.load_state_dict(torch_model().state_dict())
    with torch.no_grad():
        other.panoptic_head.prompt_iou.bias.add_(0.5)
        other.neck.loc_conv.bias.add_(0.05)
    embed = np.load(os.path.join(bundle, "vocab.npy"))
    report = check_parity(other, bundle, embed, IMGSZ)
    bad = {(r["graph"], row["output"]) for r in report["runs"] for row in r["outputs"] if not row["ok"]}
    assert not report["ok"]
    assert ("encoder", "features") in bad and ("prompt_decoder", "iou") in bad


def test_deploy_graphs_equal_model_in_torch():
    """The restructured modules (BN folding, per-tap DCN, folded attention, both prompt forms) are exact."""
    model = torch_model()
    g = build_graphs(model)
    g_std = build_graphs(model, per_tap=False)
    x = torch.from_numpy(parity_images(96)[1][1])
    with torch.no_grad():
        f = model.encode(x)
        assert (g["encoder"](x) - f).abs().max() <= 1e-5
        assert (g_std["encoder"](x) - f).abs().max() <= 1e-5
        boxes = torch.tensor([[0.5, 0.5, 0.05, 0.05], [0.3, 0.6, 0.4, 0.5], [0.9, 0.1, 0.1, 0.2]])
        m, i = model.decode_prompts(f, boxes)
        for name in ("prompt_decoder", "prompt_decoder_many"):
            m2, i2 = g[name](f, boxes)
            assert (m2 - m).abs().max() <= 1e-4 * m.abs().max() + 1e-5
            assert (i2 - i).abs().max() <= 1e-5
        c, ms, q = model.decode_objects(f)
        c2, ms2, q2 = g["object_decoder"](f, torch.from_numpy(vocab_embed()))
        assert c2.shape == c.shape and (c2[..., -1] == 0).all()
        assert (c2 - c).abs().max() <= 1e-4 * c.abs().max()
        assert (ms2 - ms).abs().max() <= 1e-4 * ms.abs().max()


def test_existing_bundle_is_not_overwritten_without_force(bundle, capsys):
    before = sha256_file(os.path.join(bundle, "manifest.json"))
    rc = main(["export", "--random-init", "--imgsz", "64", "--out", bundle])
    err = capsys.readouterr().err
    assert rc != 0 and "already exists" in err and "--force" in err
    assert err.count("\n") == 1  # one line, no traceback
    assert sha256_file(os.path.join(bundle, "manifest.json")) == before


def test_force_never_replaces_a_folder_that_is_not_a_bundle(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("user data")
    rc = main(["export", "--random-init", "--imgsz", "64", "--force", "--out", str(tmp_path / "mine")])
    assert rc != 0 and "not a model bundle" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "user data"


def test_failed_export_leaves_nothing(tmp_path, monkeypatch):
    def failing(*args, **kwargs):
        raise UserError("export failed parity against PyTorch: encoder/features (rel 1e-2)")

    monkeypatch.setattr(exporter, "_write", failing)
    out = str(tmp_path / "b")
    with pytest.raises(UserError, match="parity"):
        exporter.export_bundle(torch_model(), out, input_size=64)
    assert os.listdir(str(tmp_path)) == []  # neither the bundle nor its staging folder


def test_export_takes_separate_h_and_w_bounds(tmp_path, monkeypatch):
    seen = {}

    def stop(*args):
        seen["hw_range"] = args[9]
        raise UserError("stopped before tracing")

    monkeypatch.setattr(exporter, "_write", stop)
    argv = ["export", "--random-init", "--imgsz", "64", "--out", str(tmp_path / "b")]
    assert main(argv + ["--max-size", "64x128", "--min-size", "64"]) == 2
    assert seen["hw_range"] == ((64, 64), (64, 128))  # (min H, W), (max H, W): the manifest's dynamic_axes H / W
    assert main(argv) == 2
    assert seen["hw_range"] == ((32, 32), (64, 64))  # default: 32 .. imgsz on both sides


@pytest.mark.parametrize("argv, message", [
    (["--imgsz", "16"], "too small"),
    (["--imgsz", "big"], "--imgsz"),
    (["--opset", "13"], "--opset"),
    (["--static", "--imgsz", "official"], "--static needs"),
    (["--imgsz", "640", "--max-size", "320"], "outside the declared range"),
    (["--imgsz", "640", "--max-size", "320x320"], "outside the declared range"),
    (["--imgsz", "64", "--min-size", "96x32"], "outside the declared range"),
    (["--max-size", "100"], "--max-size 100: sides must be multiples of 32"),
])
def test_bad_export_arguments_are_one_line_errors(tmp_path, capsys, argv, message):
    rc = main(["export", "--random-init", "--out", str(tmp_path / "b")] + argv)
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1
    assert not os.path.exists(str(tmp_path / "b"))


def test_fp16_storage_manifest_appends_a_step(bundle, manifest, tmp_path):
    from rmpsam_edge.export.fp16_storage import convert_bundle
    out = str(tmp_path / "fp16")
    m = convert_bundle(bundle, out)
    with open(os.path.join(out, "manifest.json")) as f:
        assert json.load(f) == m
    assert m["provenance"][:-1] == manifest["provenance"] and m["weights"] == manifest["weights"]
    step = m["provenance"][-1]
    assert step["tool"] == "rmpsam_edge.export.fp16_storage" and step["versions"]["onnx"]
    assert step["argv"] == ["python", "-m", "rmpsam_edge.export.fp16_storage", bundle, out, "--drop",
                            "prompt_decoder_many"]
