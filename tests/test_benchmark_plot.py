"""The benchmark figure reads at a glance: a column per input size, colour = backend, hatch/marker = precision,
the legend outside the panels."""
import numpy as np
import pytest

pytest.importorskip("matplotlib")
from rmpsam_edge.benchmarks.plot import figure, plot_rows  # noqa: E402


def _s(p50):
    return {"p50": p50, "p90": p50 * 1.1, "mean": p50}


def _row(backend, precision, imgsz, enc):
    return {"backend": backend, "precision": precision, "imgsz": imgsz, "status": "ok", "fidelity_iou": 0.99,
            "encoder_ms": _s(enc), "prompt_ms": {"1": _s(3.0), "16": _s(9.0)}, "object_ms": _s(20.0)}


ROWS = [_row(b, p, size, 10.0 + i) for size in (320, 512) for i, (b, p) in enumerate(
    [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8"),
     ("tensorrt", "fp16"), ("torch", "fp32")])] + [{"backend": "triton", "precision": "fp16", "imgsz": 512,
                                                      "status": "not installed"}]


def test_one_column_per_size_colour_by_backend_hatch_by_precision(tmp_path):
    import matplotlib.pyplot as plt
    fig = figure(ROWS, prompts=(1, 16), title="t")
    axes = fig.get_axes()
    assert len(axes) == 4 and {a.get_title().split(":")[0] for a in axes} == {"input 320", "input 512"}
    bars = axes[3].patches  # the 512 per-stage panel: 6 rows x 4 stages
    assert len(bars) == 24
    by_backend, by_precision = {}, {}
    for i, bar in enumerate(bars):
        r = ROWS[6 + i // 4]
        by_backend.setdefault(r["backend"], set()).add(tuple(np.round(bar.get_facecolor(), 3)))
        by_precision.setdefault(r["precision"], set()).add(bar.get_hatch())
    assert all(len(c) == 1 for c in by_backend.values())  # one colour per backend ...
    assert len({next(iter(c)) for c in by_backend.values()}) == 4  # ... and a different one for each
    assert all(len(h) == 1 for h in by_precision.values()) and len({next(iter(h)) for h in by_precision.values()}) == 3
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["onnxruntime", "openvino", "tensorrt", "torch", "fp32",
                                                        "int8", "fp16"]
    fig.canvas.draw()
    box = legend.get_window_extent()
    assert all(box.x0 >= a.get_window_extent().x1 for a in axes)  # outside every panel
    plt.close(fig)
    path = plot_rows(ROWS, str(tmp_path / "b.png"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_no_rows_still_renders(tmp_path):
    path = plot_rows(ROWS[-1:], str(tmp_path / "e.png"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
