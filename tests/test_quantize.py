"""rmpsam-edge quantize end to end on a real exported bundle (R18, 128 px, 2 calibration images): INT8 through
ONNX Runtime and OpenVINO/NNCF, FP16, the fidelity report, --fail-below, refusals, --auto-fallback."""
import json
import os
import sys

import numpy as np
import onnx
import pytest

from _bundle_fixture import shared_bundle
from rmpsam_edge.cli import main
from rmpsam_edge.quantize import sensitivity
from rmpsam_edge.runtime.bundle import sha256_file

FAST = ["--calib-count", "2", "--holdout", "1", "--runs", "1"]


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    return shared_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("quant")


def _quantize(bundle, out, *extra):
    return main(["quantize", "--model", bundle, "--out", str(out)] + FAST + list(extra))


def _manifest(path):
    with open(os.path.join(str(path), "manifest.json")) as f:
        return json.load(f)


def _report(path):
    with open(os.path.join(str(path), "fidelity.json")) as f:
        return json.load(f)


def _check_loads_and_predicts(path, backend):
    from rmpsam_edge.runtime import load
    pred = load(str(path), backend=backend, verbose=False)
    img = (np.random.RandomState(0).rand(90, 120, 3) * 255).astype(np.uint8)
    pred.set_image(img)
    masks, scores = pred.predict(points=[[60, 45]], boxes=[[10, 10, 80, 70]])
    assert masks.shape == (2, 90, 120) and np.isfinite(scores).all()
    seg, _ = pred.panoptic()
    assert seg.shape == (90, 120)
    return pred


@pytest.fixture(scope="module")
def int8_decoders(bundle, work):
    out = work / "int8_dec"
    assert _quantize(bundle, out, "--precision", "int8", "--backend", "ort", "--quantize-decoders") == 0
    return out


def test_ort_int8_bundle_loads_and_reports(bundle, int8_decoders):
    m = _manifest(int8_decoders)
    assert m["precision"] == "int8" and m["quantization"]["backend"] == "onnxruntime"
    assert {g["precision"] for g in m["graphs"].values()} == {"int8"}
    for g in m["graphs"].values():  # every new file is hashed, so the runtime's sha256 check covers it
        assert sha256_file(os.path.join(str(int8_decoders), g["file"])) == g["sha256"]
    assert m["quantization"]["calibration"]["count"] == 2 and m["quantization"]["calibration"]["default_samples"]
    _check_loads_and_predicts(int8_decoders, "onnxruntime")
    rep = _report(int8_decoders)
    for key in ("feature_cosine", "feature_max_abs_error", "mask_iou_mean", "mask_iou_worst_decile",
                "iou_score_abs_error", "panoptic_class_agreement", "matched_segment_iou", "query_class_agreement"):
        assert np.isfinite(rep["metrics"][key]), key
    assert 0.9 < rep["metrics"]["feature_cosine"] < 1.0  # INT8 features differ, but stay close
    assert rep["size_mb"]["quantized"] < 0.5 * rep["size_mb"]["fp32"]
    assert set(rep["latency"]) >= {"fp32", "quantized", "setting"}
    md = open(os.path.join(str(int8_decoders), "fidelity.md")).read()
    assert "random weights" in md and "| prompt-mask IoU, mean |" in md
    assert all(line.count("|") == 5 for line in md.splitlines() if line.startswith("|"))  # 4-column tables, intact


def test_ort_int8_sensitive_nodes_compute_in_fp32(int8_decoders):
    m = _manifest(int8_decoders)
    for name in ("prompt_decoder", "object_decoder"):
        kept = set(m["quantization"]["graphs"][name]["kept_fp32"])
        g = onnx.load(os.path.join(str(int8_decoders), name + ".onnx")).graph
        prod = {o: n for n in g.node for o in n.output}
        ln = [n for n in g.node if n.op_type in ("LayerNormalization", "Softmax")]
        assert ln and all(n.name in kept for n in ln)
        assert any(n.op_type == "DequantizeLinear" for n in g.node)
        checked = 0
        for n in g.node:
            if n.name in kept:
                checked += 1
                assert not any(prod.get(i) is not None and prod[i].op_type == "DequantizeLinear" for i in n.input), \
                    "%s reads an INT8-rounded input" % n.name
        assert checked == len(kept)


@pytest.fixture(scope="module")
def gated(bundle, work):
    out = work / "int8_gate"
    rc = _quantize(bundle, out, "--min-mask-iou", "1.01", "--fail-below")
    return rc, out


def test_fail_below_exits_nonzero_but_writes_the_bundle(gated, capsys):
    rc, out = gated
    assert rc == 3
    rep = _report(out)
    assert rep["pass"] is False and rep["verdicts"]["mask_iou_mean"]["threshold"] == 1.01
    assert any(f.startswith("mask_iou_mean") for f in rep["failed"])
    m = _manifest(out)
    assert m["graphs"]["encoder"]["precision"] == "int8"  # default recipe: encoder only
    assert {m["graphs"][g]["precision"] for g in ("prompt_decoder", "object_decoder")} == {"fp32"}


def test_refusals_force_and_already_quantized(bundle, gated, capsys):
    _, out = gated
    manifest = os.path.join(str(out), "manifest.json")
    with open(manifest, "rb") as f:
        before = f.read()
    stale = os.path.join(str(out), "stale-by-the-user.txt")  # a file the new bundle does not have
    with open(stale, "w") as f:
        f.write("x")
    capsys.readouterr()
    assert _quantize(bundle, out) == 2  # no --force: refused, the existing bundle untouched
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err and err.count("\n") == 1
    with open(manifest, "rb") as f:
        assert f.read() == before
    assert os.path.exists(stale)
    assert _report(out)["verdicts"]["mask_iou_mean"]["threshold"] == 1.01  # still the gated run's report
    assert _quantize(bundle, out, "--force") == 0  # no --fail-below: below threshold is reported, exit 0
    assert not os.path.exists(stale)  # --force replaced the whole folder ...
    assert _report(out)["verdicts"]["mask_iou_mean"]["threshold"] != 1.01  # ... with this run's bundle
    capsys.readouterr()
    assert _quantize(str(out), str(out) + "_again") == 2
    err = capsys.readouterr().err
    assert "already a INT8 bundle" in err and err.count("\n") == 1
    assert not os.path.exists(str(out) + "_again")


def test_fp16_bundle_and_its_provenance_step(bundle, work, capsys):
    out = work / "fp16"
    capsys.readouterr()
    assert _quantize(bundle, out, "--precision", "fp16") == 0
    err = capsys.readouterr().err
    assert "no calibration needed" in err and "tiny set" not in err
    m, src = _manifest(out), _manifest(bundle)
    assert m["precision"] == "fp16" and m["quantization"]["calibration"] is None
    assert m["weights"] == src["weights"] and "command" not in m
    assert m["provenance"][:-1] == src["provenance"] and len(m["provenance"]) == 2  # export, then quantize
    step = m["provenance"][-1]
    assert step["tool"] == "rmpsam-edge quantize" and step["versions"]["onnx"] and step["versions"]["onnxruntime"]
    assert step["argv"] == ["rmpsam-edge", "quantize", "--model", bundle, "--out", str(out)] + FAST + [
        "--precision", "fp16"]
    g = onnx.load(os.path.join(str(out), "encoder.onnx")).graph
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in g.initializer)
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in g.input)  # FP32 I/O
    kept = m["quantization"]["graphs"]["prompt_decoder"]["kept_fp32"]
    pd = onnx.load(os.path.join(str(out), "prompt_decoder.onnx")).graph
    assert {n.name for n in pd.node if n.op_type == "LayerNormalization"} <= set(kept)
    _check_loads_and_predicts(out, "onnxruntime")
    rep = _report(out)
    assert rep["metrics"]["feature_cosine"] > 0.999 and rep["metrics"]["mask_iou_mean"] > 0.9


def test_openvino_nncf_bundle(bundle, work):
    out = work / "ov"
    assert _quantize(bundle, out, "--backend", "openvino") == 0
    m = _manifest(out)
    enc = m["graphs"]["encoder"]
    assert enc["file"] == "encoder.xml" and enc["format"] == "openvino-ir" and enc["precision"] == "int8"
    assert sha256_file(os.path.join(str(out), enc["weights"]["file"])) == enc["weights"]["sha256"]
    assert m["quantization"]["backend"] == "openvino"
    _check_loads_and_predicts(out, "openvino")
    rep = _report(out)
    assert np.isfinite(rep["metrics"]["mask_iou_mean"]) and rep["latency"]["setting"].startswith("openvino")


def test_one_line_errors(bundle, work, tmp_path, capsys, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["--calib", str(empty)], "has no images"),
        (["--calib", str(tmp_path / "missing")], "does not exist"),
        (["--imgsz", "official"], "--imgsz official needs 1344 pixels but"),  # the 128-px test bundle
    ]
    for extra, msg in cases:
        capsys.readouterr()
        assert main(["quantize", "--model", bundle, "--out", str(work / "never")] + extra) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
    assert main(["quantize", "--model", bundle, "--out", str(work / "never"), "--calib-count", "99"]) == 2
    assert "fewer than --calib-count 99" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "nncf", None)  # makes "import nncf" fail like an uninstalled package
    assert main(["quantize", "--model", bundle, "--out", str(work / "never"), "--backend", "openvino"]) == 2
    err = capsys.readouterr().err
    assert "nncf is not installed" in err and err.count("\n") == 1
    assert not os.path.exists(str(work / "never"))
    assert not [p for p in os.listdir(str(work)) if p.startswith(".never")]  # no staging leftovers


def test_auto_fallback_keeps_fewest_sensitive_layers(bundle, work):
    """The gate is set between what all-INT8 reaches and FP32 (1.0), so the fallback must run and must pass (the
    whole encoder in FP32 reaches the FP32 result); what it keeps is the smallest passing prefix of the ranking
    it searched, however many layers this CPU's INT8 kernels make that."""
    plain = work / "fallback_plain"
    assert _quantize(bundle, plain) == 0
    gate = (_report(plain)["metrics"]["mask_iou_mean"] + 1.0) / 2
    out = work / "fallback"
    assert _quantize(bundle, out, "--min-mask-iou", "%.6f" % gate, "--auto-fallback", "--fail-below") == 0
    rep = _report(out)
    fb = rep["auto_fallback"]
    assert fb["passes"] and rep["pass"] and rep["metrics"]["mask_iou_mean"] >= gate
    k = len(fb["kept_fp32"])
    assert 1 <= k <= fb["layers_ranked"]
    assert fb["tried"][str(k)] is True  # the kept prefix passed ...
    assert k == 1 or fb["tried"][str(k - 1)] is False  # ... and one layer fewer did not
    assert all(x.startswith("encoder: ") for x in fb["kept_fp32"])
    assert "all_int8" in rep["latency"]  # what the fallback cost, same run
    m = _manifest(out)
    assert ["encoder: " + n for n in m["quantization"]["graphs"]["encoder"]["fallback_fp32"]] == fb["kept_fp32"]
    assert m["quantization"]["graphs"]["encoder"]["kept_fp32"] == []  # the encoder has no pattern matches
    assert "Auto-fallback" in open(os.path.join(str(out), "fidelity.md")).read()


def test_fewest_search_is_logarithmic():
    calls = []

    def passes(k):
        calls.append(k)
        return k >= 11

    assert sensitivity.fewest(list("abcdefghijklmnopqrstuvwxyz"), passes) == 11
    assert len(set(calls)) <= 9
    assert sensitivity.fewest(list("abc"), lambda k: False) is None


def test_ort_calibration_methods_on_a_real_graph(bundle, tmp_path):
    """entropy / percentile ranges go through the same path; an unknown method is a one-line error."""
    import onnxruntime as ort
    from rmpsam_edge.errors import UserError
    from rmpsam_edge.quantize import ort_quant
    prep = str(tmp_path / "pd.prep.onnx")
    ort_quant.prepare(os.path.join(bundle, "prompt_decoder.onnx"), prep)
    rng = np.random.RandomState(0)
    feeds = [{"features": rng.randn(1, 256, 8, 8 + 4 * i).astype(np.float32),  # images differ in shape
              "boxes": np.array([[0.5, 0.5, 0.3, 0.3], [0.3, 0.6, 0.2, 0.4]], np.float32)} for i in range(2)]
    ref = ort.InferenceSession(prep).run(None, feeds[0])[0]
    for method in ("entropy", "percentile"):
        dst = str(tmp_path / ("pd_%s.onnx" % method))
        ort_quant.quantize(prep, dst, feeds, method, ort_quant.sensitive_nodes(prep))
        out = ort.InferenceSession(dst).run(None, feeds[0])[0]
        assert out.shape == ref.shape and np.isfinite(out).all() and not np.array_equal(out, ref)
    with pytest.raises(UserError, match="unknown --calib-method"):
        ort_quant.calibration_method("kl")


def test_openvino_ignored_convs_really_stay_fp32(bundle, tmp_path):
    """A biased Conv is two OpenVINO ops ('<name>/WithoutBiases' + an Add '<name>'): ignoring the ONNX node name
    must keep the Convolution itself out of INT8 (no FakeQuantize on its inputs)."""
    import openvino as ov
    from rmpsam_edge.quantize import ov_quant
    src = os.path.join(bundle, "encoder.onnx")
    g = onnx.load(src, load_external_data=False).graph
    convs = [n.name for n in g.node if n.op_type == "Conv"]
    keep = convs[:2]
    rng = np.random.RandomState(0)
    feeds = [{"image": rng.randn(1, 3, 64, 64).astype(np.float32)} for _ in range(2)]
    dst = str(tmp_path / "enc.xml")
    info = ov_quant.quantize(src, dst, feeds, ignored_names=keep)
    assert any(n.endswith("/WithoutBiases") for n in info["extra_excluded"])
    model = ov.Core().read_model(dst)
    fq_fed = {}
    for op in model.get_ops():
        if op.get_type_name() == "Convolution":
            srcs = [op.input_value(i).get_node().get_type_name() for i in range(op.get_input_size())]
            fq_fed[op.get_friendly_name()] = "FakeQuantize" in srcs or "Convert" in srcs
    kept_ops = [n for n in fq_fed if any(n in (k, k + "/WithoutBiases") for k in keep)]
    assert kept_ops and not any(fq_fed[n] for n in kept_ops)
    assert any(fq_fed[n] for n in fq_fed if n not in kept_ops)  # the other convolutions are INT8
