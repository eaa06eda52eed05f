"""Which TensorRT's ONNX importer takes a bundle (runtime/tensorrt/importers.py), on real exported graphs: the
default export (opset 16) builds on 8.5, 8.6, 10.x and 11.x; an opset-17 object decoder is refused on 8.5
(LayerNormalization); opset 18 gives Reduce* axes as an input, which 8.5/8.6 ignore; opset 20 GridSample's
'linear' mode, which every importer maps to nearest. info prints the lines, build-engine refuses before parsing
(with or without onnx installed), doctor reports the installed version."""
import json
import os
import shutil
import sys

import numpy as np
import pytest

from _bundle_fixture import shared_bundle, torch_model, vocab_embed
from fakes_tensorrt import FakeGPU, fresh_bundle
from rmpsam_edge.cli import main
from rmpsam_edge.runtime.bundle import Bundle, sha256_file, write_manifest
from rmpsam_edge.runtime.tensorrt import importers

onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="session")
def bundle16(tmp_path_factory):
    return shared_bundle(tmp_path_factory)


@pytest.fixture(scope="session")
def object_decoders(tmp_path_factory):
    """{opset: path} of the test model's object decoder exported at opsets 17 and 18 (no parity: a few seconds)."""
    torch = pytest.importorskip("torch")
    from rmpsam_edge.export.graphs import build_graphs
    from rmpsam_edge.export.onnx_io import export_onnx
    from rmpsam_edge.runtime.base import GRAPHS
    module = build_graphs(torch_model())["object_decoder"]
    ins, outs = GRAPHS["object_decoder"]
    args = (torch.randn(1, 256, 32, 32), torch.from_numpy(vocab_embed()))
    folder = tmp_path_factory.mktemp("object_decoders")
    paths = {}
    for opset in (17, 18):
        paths[opset] = str(folder / ("object_decoder_%d.onnx" % opset))
        export_onnx(module, args, paths[opset], list(ins), list(outs), None, opset=opset)
    return paths


def _record(path):
    return importers.graph_record(onnx.load(path, load_external_data=False))


def test_default_export_is_opset16_and_builds_everywhere(bundle16):
    b = Bundle.open(bundle16)
    graphs = b.manifest["graphs"]
    assert {e["opset"] for e in graphs.values()} == {importers.PORTABLE_OPSET} == {b.manifest["opset"]}
    od = graphs["object_decoder"]
    assert "LayerNormalization" not in od["ops"] and od["ops"]["Pow"] > 0  # LayerNorm decomposed
    assert od["op_forms"]["ReduceMax"] == {"axes=attribute": 1} and od["op_forms"]["ReduceL2"] == {"axes=attribute": 1}
    assert graphs["encoder"]["op_forms"]["GridSample"] == {"mode=bilinear": graphs["encoder"]["ops"]["GridSample"]}
    for name, entry in graphs.items():  # every reduction of every graph: axes as attribute or initializer
        assert set(k for f in entry["op_forms"].values() for k in f if k.startswith("axes=")) <= {
            "axes=attribute", "axes=initializer"}, name
        assert entry["op_forms"] == _record(os.path.join(bundle16, entry["file"]))["op_forms"]
    assert importers.verdicts(b) == ["TensorRT 8.5: builds", "TensorRT 8.6: builds", "TensorRT 10.x: builds",
                                     "TensorRT 11.x: builds"]


def test_fp32_rules_cover_the_decomposed_layernorm(bundle16):
    """FP16 overflows in Pow(x - mean, 2) unless the whole decomposed chain stays FP32 (TensorRT pins and the
    quantize exclusions read the same rules)."""
    from rmpsam_edge.runtime import sensitive_layers as rules
    for name in ("prompt_decoder", "object_decoder"):
        g = onnx.load(os.path.join(bundle16, name + ".onnx"), load_external_data=False).graph
        chosen = rules.select_fp32(rules.nodes_from_onnx(g), [o.name for o in g.output])
        for n in g.node:
            if n.op_type in ("ReduceMean", "Pow", "Sqrt"):
                assert chosen.get(n.name) == "layernorm", (name, n.name)
        pows = [n for n in g.node if n.op_type == "Pow"]
        prod = {o: n for n in g.node for o in n.output}
        for p in pows:  # Pow's input is the Sub of the same LayerNorm, its consumer the ReduceMean: all pinned
            sub = prod[p.input[0]]
            assert sub.op_type == "Sub" and chosen.get(sub.name) == "layernorm"
            users = [n for n in g.node if p.output[0] in n.input]
            assert users and all(chosen.get(u.name) == "layernorm" for u in users)


def test_opset17_is_refused_on_85_and_opset18_reduce_axes_on_8x(object_decoders):
    r17, r18 = _record(object_decoders[17]), _record(object_decoders[18])
    assert r17["ops"]["LayerNormalization"] == 28 and r17["op_forms"]["ReduceMax"] == {"axes=attribute": 1}
    g17, g18 = {"object_decoder": r17}, {"object_decoder": r18}
    assert importers.verdict(g17, "8.5") == ("TensorRT 8.5: cannot import LayerNormalization (28 nodes in "
                                             "object_decoder); export with --opset 16")
    assert [importers.verdict(g17, v) for v in ("8.6", "10.x", "11.x")] == [
        "TensorRT 8.6: builds", "TensorRT 10.x: builds", "TensorRT 11.x: builds"]
    # opset 18: ReduceMax / ReduceL2 take axes as an input (an initializer): 8.x reduce over all axes
    assert r18["op_forms"]["ReduceMax"] == {"axes=initializer": 1} and r18["op_forms"]["ReduceL2"] == {
        "axes=initializer": 1}
    assert importers.problems(g18, "8.6") == [
        "reduces over all axes (axes input ignored) in ReduceMax (1 node in object_decoder)",
        "reduces over all axes (axes input ignored) in ReduceL2 (1 node in object_decoder)"]
    assert importers.problems(g18, "8.5")[0].startswith("cannot import LayerNormalization")
    assert importers.problems(g18, "10.x") == importers.problems(g18, "11.x") == []


def test_computed_axes_and_opset20_gridsample():
    """10.x requires Reduce* axes to be an initializer; opset 20 GridSample's 'linear' maps to nearest."""
    torch = pytest.importorskip("torch")
    from onnx import helper
    shape = helper.make_node("Shape", ["x"], ["s"])
    red = helper.make_node("ReduceMax", ["x", "s"], ["y"], keepdims=0)
    g = helper.make_graph([shape, red], "g", [helper.make_tensor_value_info("x", 1, [2, 2])],
                          [helper.make_tensor_value_info("y", 1, None)])
    rec = importers.graph_record(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]))
    assert rec["op_forms"] == {"ReduceMax": {"axes=input": 1}}
    assert importers.problems({"g": rec}, "10.x") == ["cannot import ReduceMax (1 node in g)"]

    class Sample(torch.nn.Module):
        def forward(self, x, grid):
            return torch.nn.functional.grid_sample(x, grid, align_corners=False)

    import io
    import warnings
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation warning
        torch.onnx.export(Sample(), (torch.randn(1, 2, 4, 4), torch.rand(1, 3, 3, 2)), buf, opset_version=20,
                          dynamo=False)
    rec = importers.graph_record(onnx.load_from_string(buf.getvalue()))
    assert rec["op_forms"] == {"GridSample": {"mode=linear": 1}}
    assert importers.verdict({"encoder": rec}, "10.x") == ("TensorRT 10.x: samples nearest instead of linear in "
                                                           "GridSample (1 node in encoder); export with --opset 16")


def _opset17_bundle(bundle16, object_decoders, folder, record=True):
    """A copy of the test bundle whose object decoder is the opset-17 export (LayerNormalization)."""
    path = fresh_bundle(bundle16, folder)
    dst = os.path.join(path, "object_decoder.onnx")
    if os.path.lexists(dst):
        os.remove(dst)
    shutil.copyfile(object_decoders[17], dst)
    with open(os.path.join(path, "manifest.json")) as f:
        m = json.load(f)
    entry = m["graphs"]["object_decoder"]
    entry.update(_record(dst), sha256=sha256_file(dst), bytes=os.path.getsize(dst))
    if not record:  # a bundle exported before the op forms were recorded
        for e in m["graphs"].values():
            e.pop("op_forms")
    write_manifest(path, m)
    return path


def test_info_prints_one_line_per_version(bundle16, object_decoders, tmp_path, capsys):
    assert main(["info", bundle16]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith("TensorRT")] == [
        "TensorRT 8.5: builds", "TensorRT 8.6: builds", "TensorRT 10.x: builds", "TensorRT 11.x: builds"]
    old = _opset17_bundle(bundle16, object_decoders, tmp_path / "b17")
    assert main(["info", old]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "TensorRT 8.5: cannot import LayerNormalization (28 nodes in object_decoder); export with --opset 16" in out
    assert "TensorRT 8.6: builds" in out


@pytest.mark.parametrize("record,with_onnx", [(True, True), (True, False), (False, False)])
def test_build_engine_refuses_before_parsing(bundle16, object_decoders, tmp_path, monkeypatch, capsys, record,
                                             with_onnx):
    path = _opset17_bundle(bundle16, object_decoders, tmp_path / "b", record)
    fake = FakeGPU("8.5.2").install(monkeypatch)
    if not with_onnx:
        monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["build-engine", "--model", path, "--imgsz", "64", "--max-prompts", "4"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: %s: TensorRT 8.5: cannot import LayerNormalization (28 nodes in object_decoder); "
                   "export with --opset 16\n" % path)
    assert "parse_from_file" not in fake.names() and "build_serialized_network" not in fake.names()


def test_build_engine_checks_only_the_graphs_it_builds(bundle16, object_decoders, tmp_path, monkeypatch, capsys):
    path = _opset17_bundle(bundle16, object_decoders, tmp_path / "b")
    fake = FakeGPU("8.5.2").install(monkeypatch)
    assert main(["build-engine", "--model", path, "--imgsz", "64", "--max-prompts", "4", "--graphs", "encoder"]) == 0
    assert fake.names().count("build_serialized_network") == 1
    FakeGPU("8.6.2").install(monkeypatch)
    assert main(["build-engine", "--model", path, "--imgsz", "64", "--max-prompts", "4", "--graphs",
                 "object_decoder", "--precision", "fp32"]) == 0
    capsys.readouterr()


def test_doctor_reports_the_installed_version(bundle16, object_decoders, tmp_path, monkeypatch):
    from rmpsam_edge.commands.doctor import tensorrt_import
    b = Bundle.open(_opset17_bundle(bundle16, object_decoders, tmp_path / "b"))
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert tensorrt_import(b)[0].startswith("TensorRT 8.5: cannot import") and len(tensorrt_import(b)) == 4
    FakeGPU("8.5.2").install(monkeypatch)
    assert tensorrt_import(b) == ["TensorRT 8.5: cannot import LayerNormalization (28 nodes in object_decoder); "
                                  "export with --opset 16"]
    FakeGPU("10.3.0").install(monkeypatch)
    assert tensorrt_import(b) == ["TensorRT 10.x: builds"]


def test_version_keys():
    assert [importers.version_key(v) for v in ("8.5.2.2", "8.6.1", "10.3.0", "10.13.0.35", "11.4.0.106", "9.0.1",
                                               "7.1.3")] == ["8.5", "8.6", "10.x", "10.x", "11.x", None, None]
    assert np.all([v in importers.VERSIONS for v in ("8.5", "8.6", "10.x", "11.x")])
