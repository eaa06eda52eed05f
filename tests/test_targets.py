"""benchmarks/targets.py: the CPU targets from one benchmark JSON (rows of one run) and quantize reports, for the
ISA the benchmark header names; no figure from another machine enters (no --reference)."""
import json

import pytest

from rmpsam_edge.benchmarks import targets


def _row(backend, precision, enc, prm):
    return {"backend": backend, "precision": precision, "status": "ok", "encoder_ms": {"p50": enc},
            "prompt_ms": {"1": {"p50": prm}}, "object_ms": {"p50": 1.0}}


def _report(tmp_path, name, size, iou, precision="int8"):
    path = tmp_path / (name + ".json")
    path.write_text(json.dumps({
        "quantization": {"precision": precision, "backend": "onnxruntime", "recipe": {"name": "u8s8"}},
        "metrics": {"mask_iou_mean": iou, "mask_iou_worst_decile": iou - 0.3},
        "latency": {"setting": "onnxruntime CPU, 2 threads, input %dx%d, 1 prompt" % (size, size)}}))
    return str(path)


def test_ratios_come_from_the_rows_and_the_isa_from_the_header(tmp_path):
    bench = {"header": {"cpu": "AMD EPYC", "isa": ["avx512", "avx2", "vnni", "bf16"], "cores_logical": 2,
                        "load_average_start": [3.8, 6.9, 6.5], "load_average_end": [5.7, 6.1, 6.2]},
             "rows": [_row("torch", "fp32", 300.0, 50.0), _row("torch", "int8", 1.0, 1.0),
                      _row("ort", "fp32", 130.0, 4.0), _row("openvino", "fp32", 125.0, 10.0),
                      _row("openvino", "int8", 46.0, 10.0), dict(_row("ort", "int8", 1.0, 1.0), status="failed")]}
    reps = [_report(tmp_path, "a", 512, 0.91), _report(tmp_path, "b", 512, 0.93), _report(tmp_path, "c", 192, 0.96),
            _report(tmp_path, "d", 512, 0.99, precision="fp16")]
    t = targets.compute(bench, reps)
    assert t["eager_enc_plus_1"] == 350.0 and t["fast_prompt_1"] == 4.0
    assert t["t1"]["ms"] == 50.0 and "openvino int8" in t["t1"]["path"]  # torch and failed rows never count
    assert t["t1"]["speedup_vs_eager"] == pytest.approx(7.0) and t["t1"]["met"]
    assert t["t2"]["ms"] == 129.0 and "openvino fp32" in t["t2"]["path"] and not t["t2"]["met"]  # 2.71x < 3x
    assert t["t2"]["speedup_vs_eager"] == pytest.approx(350.0 / 129.0)
    # IoU at 512 only, INT8 only: the 192 report and the FP16 one are listed, not used
    assert t["t3"]["best"]["report"].endswith("b.json") and not t["t3"]["met"]
    assert [r["input"] for r in t["t3"]["reports"]] == [512, 512, 192, 512]
    md = targets.markdown(t, "cmd", "bench")
    assert md.startswith("# CPU targets on AMD EPYC, ISA: avx512 avx2 vnni bf16")
    assert md.count("| avx512 avx2 vnni bf16 |") == 3 and "reference" not in md
    assert "2 cores shared, load average (1/5/15 min) [3.8, 6.9, 6.5] at the start, [5.7, 6.1, 6.2] at the end" in md


def test_a_header_without_isa_says_so():
    bench = {"header": {}, "rows": [_row("torch", "fp32", 300.0, 50.0), _row("ort", "fp32", 100.0, 5.0)]}
    t = targets.compute(bench, [])
    assert t["t1"]["path"] == "no row" and not t["t1"]["met"] and t["t2"]["met"]
    md = targets.markdown(t, "cmd", "bench")
    assert "ISA: unknown (the benchmark header has no isa)" in md and "no report at 512" in md


def test_preset_targets_reads_from_and_writes_the_report(tmp_path, capsys):
    from rmpsam_edge.cli import main
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"header": {"isa": ["avx2"]}, "rows": [
        _row("torch", "fp32", 300.0, 50.0), _row("onnxruntime", "int8", 40.0, 5.0)]}))
    rep = _report(tmp_path, "a", 512, 0.96)
    out = tmp_path / "t.json"
    assert main(["benchmark", "--preset", "targets", "--from", str(bench), rep, "--json", str(out)]) == 0
    t = json.loads(out.read_text())
    assert t["t1"]["met"] and t["t3"]["met"] and t["command"].startswith("rmpsam-edge benchmark --preset targets")
    assert "--from %s %s" % (bench, rep) in t["command"]
    assert main(["benchmark", "--preset", "targets"]) == 2 and "pass --from" in capsys.readouterr().err


def test_preset_collect_fidelity_gathers_quantize_reports_and_the_old_entry_point_runs_it(tmp_path):
    import os
    import shutil

    from rmpsam_edge.cli import main
    from rmpsam_edge.quantize import bench
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    src = os.path.join(root, "benchmarks", "results", "fidelity_cpu_recipes", "int8_512_auto.json")
    (tmp_path / "q8").mkdir()
    shutil.copy(src, str(tmp_path / "q8" / "fidelity.json"))
    rep = json.load(open(src))
    out = tmp_path / "c.json"
    assert main(["benchmark", "--preset", "collect-fidelity", "--from", str(tmp_path / "q8"), "--json", str(out)]) == 0
    got = json.loads(out.read_text())["fidelity"]["q8"]
    assert got["metrics"]["mask_iou_mean"] == rep["metrics"]["mask_iou_mean"] and got["pass"] == rep["pass"]
    assert got["latency_setting"] == rep["latency"]["setting"]
    assert bench.main(["--collect", str(tmp_path / "q8"), "--out", str(out)]) == 0  # overwrites, as it did
    cmd = json.loads(out.read_text())["command"]
    assert cmd.startswith("rmpsam-edge benchmark --preset collect-fidelity --force --from %s" % (tmp_path / "q8"))
    assert main(["benchmark", "--preset", "collect-fidelity", "--from", str(tmp_path)]) == 2  # no fidelity.json
