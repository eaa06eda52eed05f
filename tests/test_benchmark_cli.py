"""`rmpsam-edge benchmark` end to end on the tiny test bundle with --runs 2: rows for every backend x precision
(made, n/a, not installed), JSON + Markdown + plot, reuse of the quantized bundle on the second run."""
import json
import os

import pytest

from _bundle_fixture import shared_bundle
from rmpsam_edge.cli import main


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return shared_bundle(tmp_path_factory)


def test_benchmark_table_json_plot(bundle, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    work = tmp_path / "work"
    out = {k: str(tmp_path / ("bench." + k)) for k in ("json", "md", "png")}
    argv = ["benchmark", "--model", bundle, "--backends", "torch,ort,tensorrt", "--precisions", "fp32,fp16",
            "--imgsz", "128", "--prompts", "1", "4", "--runs", "2", "--warmup", "1", "--threads", "1",
            "--fidelity-images", "1", "--work", str(work), "--json", out["json"], "--md", out["md"],
            "--plot", out["png"]]
    assert main(argv) == 0
    text = capsys.readouterr().out
    data = json.load(open(out["json"]))
    rows = {(r["backend"], r["precision"]): r for r in data["rows"]}
    assert sorted(rows) == sorted((b, p) for b in ("torch", "onnxruntime", "tensorrt") for p in ("fp32", "fp16"))
    for key in (("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "fp16")):
        r = rows[key]
        assert r["status"] == "ok", r["status"]
        assert r["encoder_ms"]["n"] == 2 and r["encoder_ms"]["p50"] > 0 and len(r["encoder_ms"]["samples"]) == 2
        assert set(r["prompt_ms"]) == {"1", "4"} and r["object_ms"]["n"] == 2 and r["fps"] > 0
        assert r["input_shape"] == [128, 128] and r["size_mb"] > 0
        assert r["flops"]["encoder"]["gflops"] > 0 and r["flops"]["encoder"]["params"] > 1e6
    assert rows[("onnxruntime", "fp32")]["fidelity_ref"] is True
    assert rows[("torch", "fp32")]["fidelity_iou"] > 0.99  # same weights, two runtimes
    assert 0.9 < rows[("onnxruntime", "fp16")]["fidelity_iou"] <= 1.0
    assert rows[("onnxruntime", "fp16")]["bundle"] == str(work / "fp16")
    assert rows[("torch", "fp16")]["status"].startswith("n/a")
    from rmpsam_edge.runtime import tensorrt as trt_pkg
    trt_ok, _ = trt_pkg.probe()
    if not trt_ok:  # no TensorRT (or no GPU) here: the row says so; where TensorRT runs, it is measured
        assert rows[("tensorrt", "fp32")]["status"].startswith("not installed")
    else:
        assert rows[("tensorrt", "fp32")]["status"] == "ok", rows[("tensorrt", "fp32")]["status"]
    h = data["header"]
    assert h["threads"] == 1 and h["command"].startswith("rmpsam-edge benchmark --model")
    assert any(c.startswith("rmpsam-edge quantize") for c in h["bundle_commands"])
    # printed and Markdown table: one line per row, statuses in it
    md = open(out["md"]).read()
    assert md.strip() == text.strip()
    table = [l for l in md.splitlines() if l.startswith("| ")]
    assert len(table) == 1 + 6 and ("not installed" in md or trt_ok) and "n/a" in md
    assert open(out["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"

    # second run: the FP16 bundle is reused, nothing is quantized again; outputs need --force
    assert main(argv) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(argv + ["--force", "--backends", "ort", "--precisions", "fp16"]) == 0
    data2 = json.load(open(out["json"]))
    assert data2["header"]["bundle_commands"] == []
    assert [r["status"] for r in data2["rows"]] == ["ok"]
    assert os.path.isfile(work / "fp16" / "manifest.json")


def test_benchmark_bad_lists_are_one_line(bundle, capsys):
    assert main(["benchmark", "--model", bundle, "--backends", "ort,tflite"]) == 2
    err = capsys.readouterr().err
    assert "unknown backend 'tflite'" in err and err.count("\n") == 1
    assert main(["benchmark", "--model", "/nonexistent/bundle"]) == 2
    assert "not a model bundle" in capsys.readouterr().err


def test_opset_speed_preset_needs_two_bundles_and_the_old_entry_point_maps_onto_it(monkeypatch, capsys):
    import rmpsam_edge.cli as cli
    from rmpsam_edge.benchmarks import opset_speed
    assert cli.main(["benchmark", "--preset", "opset-speed", "--model", "a"]) == 2
    assert "--model BUNDLE_A --model BUNDLE_B" in capsys.readouterr().err
    seen = []
    monkeypatch.setattr(cli, "main", lambda argv: seen.append(argv) or 0)
    assert opset_speed.main(["A", "B", "--threads", "3", "--runs", "40", "--out", "r/x", "--force"]) == 0
    args = cli.build_parser(only="benchmark").parse_args(seen[0])
    assert (args.preset, args.model, args.threads, args.runs) == ("opset-speed", ["A", "B"], 3, 40)
    assert (args.json, args.md, args.force) == ("r/x.json", "r/x.md", True)
