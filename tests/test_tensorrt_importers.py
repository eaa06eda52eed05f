"""Which TensorRT's ONNX importer takes a bundle (runtime/tensorrt/importers.py), on real exported graphs: the
default export (opset 16: the shipped bundle, and an object decoder exported here) builds on 8.5, 8.6, 10.x and
11.x; the opset-17 test bundle is refused on 8.5 (LayerNormalization); opset 18 gives Reduce* axes as an input,
which 8.5/8.6 ignore; opset 20 GridSample's 'linear' mode, which every importer maps to nearest. info prints the
lines, build-engine refuses before parsing (with or without onnx installed), doctor reports the installed
version."""
import json
import os
import sys

import pytest

from _bundle_fixture import shared_bundle, torch_model, vocab_embed
from fakes_tensorrt import FakeGPU, fresh_bundle
from rmpsam_edge.cli import main
from rmpsam_edge.weights import SHIPPED_BUNDLE
from rmpsam_edge.runtime.bundle import Bundle, write_manifest
from rmpsam_edge.runtime.tensorrt import importers

onnx = pytest.importorskip("onnx")
BUILDS = ["TensorRT 8.5: builds", "TensorRT 8.6: builds", "TensorRT 10.x: builds", "TensorRT 11.x: builds"]
REFUSED_85 = ("TensorRT 8.5: cannot import LayerNormalization (24 nodes in prompt_decoder, 28 nodes in "
              "object_decoder, 24 nodes in prompt_decoder_many); export with --opset 16")


@pytest.fixture(scope="session")
def bundle17(tmp_path_factory):
    return shared_bundle(tmp_path_factory)  # exported with --opset 17


@pytest.fixture(scope="session")
def object_decoders(tmp_path_factory):
    """{opset: path} of the test model's object decoder exported at the default opset (None) and at 17 and 18
    (no parity: a few seconds each)."""
    torch = pytest.importorskip("torch")
    from rmpsam_edge.export.graphs import build_graphs
    from rmpsam_edge.export.onnx_io import export_onnx
    from rmpsam_edge.runtime.base import GRAPHS
    module = build_graphs(torch_model())["object_decoder"]
    ins, outs = GRAPHS["object_decoder"]
    args = (torch.randn(1, 256, 32, 32), torch.from_numpy(vocab_embed()))
    folder = tmp_path_factory.mktemp("object_decoders")
    paths = {}
    for opset in (None, 17, 18):
        paths[opset] = str(folder / ("object_decoder_%s.onnx" % opset))
        kw = {} if opset is None else {"opset": opset}
        export_onnx(module, args, paths[opset], list(ins), list(outs), None, **kw)
    return paths


def _record(path):
    return importers.graph_record(onnx.load(path, load_external_data=False))


def test_default_export_is_opset16_and_builds_everywhere(object_decoders):
    """The shipped bundle (exported by the default command) and a default export made here."""
    b = Bundle.open(SHIPPED_BUNDLE)
    assert "--opset" not in b.provenance()[0]["argv"]
    graphs = b.manifest["graphs"]
    assert {e["opset"] for e in graphs.values()} == {importers.PORTABLE_OPSET} == {b.manifest["opset"]} == {16}
    od = graphs["object_decoder"]
    assert "LayerNormalization" not in od["ops"] and od["ops"]["Pow"] == 28  # LayerNorm decomposed
    assert od["op_forms"]["ReduceMax"] == {"axes=attribute": 1} and od["op_forms"]["ReduceL2"] == {"axes=attribute": 1}
    assert graphs["encoder"]["op_forms"]["GridSample"] == {"mode=bilinear": graphs["encoder"]["ops"]["GridSample"]}
    for name, entry in graphs.items():  # every reduction of every graph: axes as attribute or initializer
        assert set(k for f in entry["op_forms"].values() for k in f if k.startswith("axes=")) <= {
            "axes=attribute", "axes=initializer"}, name
        assert entry["op_forms"] == _record(b.graph_path(name))["op_forms"]
    assert importers.verdicts(b) == BUILDS
    rec = _record(object_decoders[None])
    assert rec["opset"] == 16 and "LayerNormalization" not in rec["ops"]
    assert [importers.verdict({"object_decoder": rec}, v) for v in importers.VERSIONS] == BUILDS


def test_fp32_rules_cover_the_decomposed_layernorm():
    """FP16 overflows in Pow(x - mean, 2) unless the whole decomposed chain stays FP32 (TensorRT pins and the
    quantize exclusions read the same rules); checked on the shipped opset-16 graphs."""
    from rmpsam_edge.runtime import sensitive_layers as rules
    b = Bundle.open(SHIPPED_BUNDLE)
    for name in ("prompt_decoder", "object_decoder"):
        g = onnx.load(b.graph_path(name), load_external_data=False).graph
        chosen = rules.select_fp32(rules.nodes_from_onnx(g), [o.name for o in g.output])
        for n in g.node:
            if n.op_type in ("ReduceMean", "Pow", "Sqrt"):
                assert chosen.get(n.name) == "layernorm", (name, n.name)
        prod = {o: n for n in g.node for o in n.output}
        for p in (n for n in g.node if n.op_type == "Pow"):  # Sub before, ReduceMean/Add/Sqrt/Div after: pinned
            sub = prod[p.input[0]]
            assert sub.op_type == "Sub" and chosen.get(sub.name) == "layernorm"
            chain, t = [], p.output[0]
            for _ in range(4):
                (user,) = [n for n in g.node if t in n.input]
                chain.append(user.op_type)
                assert chosen.get(user.name) == "layernorm", (name, user.name)
                t = user.output[0]
            assert chain == ["ReduceMean", "Add", "Sqrt", "Div"], chain


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


def _bundle(bundle17, folder, record=True):
    """A fresh copy of the opset-17 test bundle; record=False: as exported before the op forms were recorded."""
    path = fresh_bundle(bundle17, folder)
    if not record:
        with open(os.path.join(path, "manifest.json")) as f:
            m = json.load(f)
        for e in m["graphs"].values():
            e.pop("op_forms")
        write_manifest(path, m)
    return path


def test_info_prints_one_line_per_version(bundle17, tmp_path, capsys):
    assert main(["info", SHIPPED_BUNDLE]) == 0
    assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("TensorRT")] == BUILDS
    assert main(["info", bundle17]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith("TensorRT")] == [REFUSED_85] + BUILDS[1:]
    assert main(["info", _bundle(bundle17, tmp_path / "old", record=False)]) == 0
    out = capsys.readouterr().out.splitlines()  # onnx installed: the old bundle's graphs are read
    assert [line for line in out if line.startswith("TensorRT")] == [REFUSED_85] + BUILDS[1:]


@pytest.mark.parametrize("record,with_onnx", [(True, True), (True, False), (False, False)])
def test_build_engine_refuses_before_parsing(bundle17, tmp_path, monkeypatch, capsys, record, with_onnx):
    path = _bundle(bundle17, tmp_path / "b", record)
    fake = FakeGPU("8.5.2").install(monkeypatch)
    if not with_onnx:
        monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["build-engine", "--model", path, "--imgsz", "64", "--max-prompts", "4"]) == 2
    assert capsys.readouterr().err == "error: %s: %s\n" % (path, REFUSED_85)
    assert "parse_from_file" not in fake.names() and "build_serialized_network" not in fake.names()


def test_build_engine_checks_only_the_graphs_it_builds(bundle17, tmp_path, monkeypatch, capsys):
    path = _bundle(bundle17, tmp_path / "b")
    fake = FakeGPU("8.5.2").install(monkeypatch)
    assert main(["build-engine", "--model", path, "--imgsz", "64", "--max-prompts", "4", "--graphs", "encoder"]) == 0
    assert fake.names().count("build_serialized_network") == 1
    assert main(["build-engine", "--model", path, "--imgsz", "64", "--graphs", "object_decoder"]) == 2
    assert capsys.readouterr().err.endswith("cannot import LayerNormalization (28 nodes in object_decoder); "
                                            "export with --opset 16\n")


def test_doctor_reports_the_installed_version(bundle17, monkeypatch):
    from rmpsam_edge.commands.doctor import tensorrt_import
    b = Bundle.open(bundle17)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert tensorrt_import(b) == [REFUSED_85] + BUILDS[1:]
    FakeGPU("8.5.2").install(monkeypatch)
    assert tensorrt_import(b) == [REFUSED_85]
    FakeGPU("10.3.0").install(monkeypatch)
    assert tensorrt_import(b) == ["TensorRT 10.x: builds"]


def test_version_keys():
    assert [importers.version_key(v) for v in ("8.5.2.2", "8.6.1", "10.3.0", "10.13.0.35", "11.4.0.106", "9.0.1",
                                               "7.1.3")] == ["8.5", "8.6", "10.x", "10.x", "11.x", None, None]


def test_runtime_build_refuses_before_parsing(bundle17, tmp_path, monkeypatch):
    """The runtime path (predict / demo --backend tensorrt builds on first use) checks each graph where its build
    starts: the opset-17 prompt decoder is refused on 8.5 before the parser sees it."""
    from rmpsam_edge.errors import UserError
    from rmpsam_edge.runtime import tensorrt as trt_pkg
    from rmpsam_edge.runtime.tensorrt import profiles
    path = _bundle(bundle17, tmp_path / "b")
    fake = FakeGPU("8.5.2").install(monkeypatch)
    ranges = profiles.make_ranges((64, 64), prompts=(1, 1, 4), classes=(1, 5, 8), protos=(1, 2, 2))
    with pytest.raises(UserError, match=r"TensorRT 8\.5: cannot import LayerNormalization \(24 nodes in "
                                        r"prompt_decoder\); export with --opset 16"):
        trt_pkg.create_runner(path, precision="fp32", ranges=ranges).activate()
    parsed = [c for c in fake.calls if c[0] == "parse_from_file"]
    assert len(parsed) == 1 and parsed[0][1].endswith("encoder.onnx")  # only the encoder reached the parser
