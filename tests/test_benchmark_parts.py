"""Benchmark building blocks: FLOP counting on a hand-made ONNX graph, the system header (real and a fake Jetson
tree), the table and the plot."""
import os

import numpy as np
import pytest

from rmpsam_edge.benchmarks import flops, sysinfo
from rmpsam_edge.benchmarks.plot import plot_rows
from rmpsam_edge.benchmarks.table import format_table


def _graph():
    """x (1,3,H,W) -> Conv 3->8 k3 p1 -> ConvTranspose 8->4 k2 s2 -> reshape (4, 4HW) -> MatMul with (4HW, 5)
    is too big; instead: GlobalAveragePool -> Flatten (1,4) -> Gemm (4->6) ; plus q (N,4) MatMul W (4,7)."""
    pytest.importorskip("onnx", reason="onnx (optional: the export / quantize extras) not installed")
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((8, 4, 2, 2)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal((6, 4)).astype(np.float32), "w3"),
             numpy_helper.from_array(rng.standard_normal((4, 7)).astype(np.float32), "w4")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             helper.make_node("ConvTranspose", ["c1", "w2"], ["c2"], strides=[2, 2], kernel_shape=[2, 2]),
             helper.make_node("GlobalAveragePool", ["c2"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "w3"], ["g"], transB=1),
             helper.make_node("MatMul", ["q", "w4"], ["m"])]
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", "W"]),
                                       helper.make_tensor_value_info("q", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("g", TensorProto.FLOAT, None),
                           helper.make_tensor_value_info("m", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_flops_counts_conv_convtranspose_gemm_matmul_exactly(tmp_path):
    path = tmp_path / "g.onnx"
    model = _graph()
    import onnx
    onnx.save(model, str(path))
    h, w, n = 10, 12, 5
    r = flops.count_graph(str(path), {"x": (1, 3, h, w), "q": (n, 4)})
    conv = h * w * 8 * 3 * 9            # every output element: Cin * k*k
    convt = 1 * 8 * h * w * 4 * 2 * 2   # every input element scattered to Cout * k*k
    gemm = 6 * 4
    mm = n * 4 * 7
    assert r["macs"] == conv + convt + gemm + mm
    assert r["gflops"] == pytest.approx(2 * r["macs"] / 1e9)
    assert r["params"] == 8 * 27 + 8 * 16 + 24 + 28
    assert r["counted_nodes"] == 4 and r["unknown_nodes"] == []
    # the count scales with the input size the benchmark runs at
    r2 = flops.count_graph(str(path), {"x": (1, 3, 2 * h, 2 * w), "q": (n, 4)})
    assert r2["macs"] == 4 * (conv + convt) + gemm + mm


def test_flops_unknown_shape_is_reported_not_guessed():
    r = flops.count_graph(_graph(), {"x": (1, 3, 8, 8)})  # q left dynamic
    assert len(r["unknown_nodes"]) == 1 and r["counted_nodes"] == 3


def test_sysinfo_fields_on_this_machine():
    info = sysinfo.collect(command=["rmpsam-edge", "benchmark", "--runs", "2"], threads=2)
    assert info["command"] == "rmpsam-edge benchmark --runs 2"
    assert info["cores_logical"] == os.cpu_count() and info["python"].count(".") == 2
    assert info["packages"]["numpy"] == np.__version__
    assert info["cpu"] and info["os"]
    lines = sysinfo.header_lines(info)
    text = "\n".join(lines)
    for key in ("command:", "cpu:", "os:", "packages:", "threads: 2", "gpu:"):
        assert key in text
    if not os.path.exists("/etc/nv_tegra_release"):
        assert info["jetson"] == {} and "jetson:" not in text


def test_sysinfo_reads_a_jetson_tree(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text(
        "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n")
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\nmodel name\t: ARMv8 Processor rev 1 (v8l)\n")
    (tmp_path / "proc/meminfo").write_text("MemTotal:        7994272 kB\n")
    info = sysinfo.collect(command=["x"], root=str(tmp_path))
    assert info["jetson"]["l4t"] == "36.4.3" and "Orin Nano" in info["jetson"]["model"]
    assert info["cpu"] == "ARMv8 Processor rev 1 (v8l)" and info["memory_gb"] == 7.6
    assert any(l.startswith("jetson: NVIDIA Jetson Orin Nano") and "L4T 36.4.3" in l
               for l in sysinfo.header_lines(info))
    assert "isa: unknown (no CPU flags readable)" in sysinfo.header_lines(info)
    (tmp_path / "proc/cpuinfo").write_text("model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_vnni\n")
    info = sysinfo.collect(command=["x"], root=str(tmp_path))
    assert info["isa"] == ["avx512", "avx2", "vnni"] and "isa: avx512 avx2 vnni" in sysinfo.header_lines(info)
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\n")
    assert sysinfo.collect(command=["x"], root=str(tmp_path))["isa"] == ["neon", "dotprod"]


def test_nvpmodel_output_parsed():
    from rmpsam_edge.runtime.platform_facts import parse_nvpmodel
    assert parse_nvpmodel("NV Fan Mode:quiet\nNV Power Mode: MAXN\n0\n") == "MAXN (mode 0)"
    assert parse_nvpmodel("NV Power Mode: 15W") == "15W"
    assert parse_nvpmodel("something else") == "something else"


def _s(p50):
    return {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.2, "mean": p50, "n": 2}


ROWS = [
    {"backend": "onnxruntime", "precision": "fp32", "imgsz": 512, "status": "ok", "size_mb": 80.2, "fidelity_iou": 1.0,
     "encoder_ms": _s(87.5), "prompt_ms": {"1": _s(4.0), "16": _s(12.8)}, "object_ms": _s(28.5), "fps": 8.6,
     "mem_mb": 900.0, "fidelity_ref": True, "gpu_mb": None,
     "flops": {"encoder": {"params": 12.4e6, "gflops": 26.5}, "prompt_decoder": {"params": 9e6, "gflops": 4.4},
               "object_decoder": {"params": 9e6, "gflops": 9.3}}},
    {"backend": "openvino", "precision": "int8", "imgsz": 512, "status": "ok", "size_mb": 30.0,
     "fidelity_iou": 0.987, "encoder_ms": _s(28.2), "prompt_ms": {"1": _s(6.4), "16": _s(15.6)},
     "object_ms": _s(26.6), "fps": 18.0, "mem_mb": 1000.0, "gpu_mb": None},
    {"backend": "tensorrt", "precision": "fp16", "imgsz": 512,
     "status": "not installed: No module named 'tensorrt' (pip install tensorrt on a CUDA machine)",
     "size_mb": None, "fidelity_iou": None},
]


def test_table_has_every_row_and_column():
    text = format_table(ROWS, prompts=(1, 16), with_flops=True)
    lines = text.splitlines()
    assert lines[0].startswith("| backend") and "prompt x16 ms" in lines[0] and "GFLOPs" in lines[0]
    body = [l for l in lines[2:] if l.startswith("|")]
    assert len(body) == 3
    assert "87.5 / %.1f / %.1f" % (87.5 * 1.1, 87.5 * 1.2) in body[0] and "26.5 / 4.4 / 9.3" in body[0] and "12.40 / 9.00 / 9.00" in body[0]
    assert "1 (ref)" in body[0] and "0.9870" in body[1] and "18.0" in body[1] and "1000" in body[1]
    assert "| model" not in lines[0]  # one model: no model column
    two = format_table([dict(ROWS[0], model="r18"), dict(ROWS[1], model="r50")], fps_key="fps_enc_obj",
                       fps_label="FPS enc+obj")
    assert two.splitlines()[0].startswith("| model") and "FPS enc+obj" in two
    assert "not installed" in body[2] and body[2].count(" - ") >= 5
    assert any(l.startswith("- tensorrt fp16: not installed: No module named 'tensorrt'") for l in lines)
    # one note per distinct long status, naming every row that has it
    dup = format_table(ROWS + [dict(ROWS[2], precision="int8")])
    notes = [l for l in dup.splitlines() if l.startswith("- ")]
    assert notes == ["- tensorrt fp16, tensorrt int8: " + ROWS[2]["status"]]
    two = format_table([dict(ROWS[2], model="r18"), dict(ROWS[2], model="r50")])
    assert [l for l in two.splitlines() if l.startswith("- ")] == ["- r18 tensorrt fp16, r50 tensorrt fp16: "
                                                                   + ROWS[2]["status"]]
    assert len(set(len(l) for l in lines[:5])) == 1  # aligned


def test_plot_written(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib (optional: the bench extra) not installed")
    path = plot_rows(ROWS, str(tmp_path / "b.png"), prompts=(1, 16), title="test")
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    empty = plot_rows(ROWS[2:], str(tmp_path / "e.png"))
    assert os.path.getsize(empty) > 1000


def test_frame_parts_and_within_run_ratios():
    from rmpsam_edge.benchmarks.row_runs import frame_parts
    from rmpsam_edge.benchmarks.rows import derived_lines
    parts = frame_parts([{"preprocess": 2.0, "encoder": 80.0, "decoder": 10.0, "postprocess": 8.0},
                         {"preprocess": 4.0, "encoder": 90.0, "decoder": 12.0, "postprocess": 6.0}])
    assert parts["host_ms"] == 3.0 + 7.0 and parts["total_ms"] == 3.0 + 85.0 + 11.0 + 7.0
    assert abs(parts["host_share"] - 10.0 / 106.0) < 1e-12
    row = {"model": "r18", "backend": "onnxruntime", "precision": "fp32", "imgsz": 512, "status": "ok",
           "prompt_ms": {"1": _s(4.0), "16": _s(16.0), "64": _s(96.0)}, "frame_parts_ms": parts}
    (line,) = derived_lines([row, dict(row, status="not installed: x")], [1, 16, 64])
    assert "16 prompts in one call = 0.25x of 16 x one prompt" in line  # 16 / (16 * 4)
    assert "64 prompts in one call = 0.38x" in line and "1.50 ms per prompt" in line
    assert "pre/post-processing 9.4 % of a frame" in line


def test_process_gpu_memory_from_nvidia_smi(tmp_path, monkeypatch):
    from rmpsam_edge.benchmarks import row_runs
    assert row_runs.row_gpu_mb(type("R", (), {"gpu_memory_mb": lambda self: 321.0})(), None) == 321.0
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '%d, 1500'\necho '1, 99'\n" % os.getpid())
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + os.environ["PATH"])
    assert row_runs.process_gpu_mb() == 1500.0
    assert row_runs.row_gpu_mb(object(), 1200.0) == 300.0  # the row's growth
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    assert row_runs.process_gpu_mb() is None and row_runs.row_gpu_mb(object(), None) is None
