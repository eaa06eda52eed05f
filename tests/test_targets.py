"""benchmarks/targets.py: the issue-14 ratios from a benchmark JSON (rows of one run)."""
from rmpsam_edge.benchmarks import targets


def _row(backend, precision, enc, prm, obj):
    return {"backend": backend, "precision": precision, "status": "ok", "encoder_ms": {"p50": enc},
            "prompt_ms": {"1": {"p50": prm}}, "object_ms": {"p50": obj},
            "flops": {"encoder": {"gflops": 26.0}, "object_decoder": {"gflops": 9.0}}}


def test_ratios_come_from_the_rows():
    bench = {"rows": [_row("torch", "fp32", 150.0, 50.0, 90.0), _row("ort", "fp32", 87.0, 4.0, 30.0),
                      _row("openvino", "fp32", 70.0, 10.0, 35.0), _row("openvino", "int8", 30.0, 10.0, 35.0),
                      _row("openvino", "bf16", 40.0, 9.0, 24.0),
                      dict(_row("ort", "bf16", 1, 1, 1), status="n/a")]}
    t = targets.compute(bench, [], targets.Reference(48.5, 8.8, 87.0, 449.0))
    assert t["nanosam_reference"]["load_scale"] == 1.0  # ORT FP32 encoder equals the 87.0
    assert t["t1"]["ms"] == 34.0 and "openvino int8" in t["t1"]["path"]  # INT8 encoder + fastest prompt (ORT)
    assert abs(t["t1"]["speedup_vs_eager"] - 200.0 / 34.0) < 1e-9
    assert t["t2"]["ms"] == 74.0 and "openvino fp32" in t["t2"]["path"]
    assert t["t3"]["ms"] == 24.0 and abs(t["t3"]["vs_nanosam_enc_issue"] - 24.0 / 48.5) < 1e-9
    assert "openvino fp32" in t["t5"]["path"] and abs(t["t5"]["gflops_per_s"] - 26000.0 / 70.0) < 1e-9
    assert t["t5"]["bf16_ms"] == 40.0  # shown beside, not used for the FP32 comparison
    md = targets.markdown(t, "cmd", "bench")
    assert "not this run" in md and md.count("\n| ") >= 6
