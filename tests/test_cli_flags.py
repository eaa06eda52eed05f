"""One meaning per flag across commands (rmpsam_edge/commands/common_args.py) and the README's command table."""
import argparse
import os
import re

import pytest

from rmpsam_edge.cli import COMMANDS, build_parser, main
from rmpsam_edge.commands.common_args import DEFAULTS, image_size, input_size
from rmpsam_edge.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _actions(name):
    parser = build_parser(only=name)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    p = sub.choices[name]
    assert not p.get_default("_missing"), "the %s command's module %s does not import" % (name, p.get_default("_missing"))
    return {s: a for a in p._actions for s in a.option_strings}


def test_readme_command_table_is_the_help_text():
    lines = open(os.path.join(ROOT, "README.md")).read().splitlines()
    start = lines.index("| command | does |")
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        name, does = [c.strip() for c in line.strip("|").split("|")]
        rows[name.strip("`")] = does
    assert rows == {name: text for name, (_, text) in COMMANDS.items()}


def test_readme_shared_options_name_the_commands_with_device():
    text = " ".join(open(os.path.join(ROOT, "README.md")).read().split())
    listed = text[text.index("`--device` ("):text.index("`--threads`")]
    for name in COMMANDS:
        has = "--device" in _actions(name)
        assert has == bool(re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(name), listed)), name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_shared_flags_mean_one_thing(name):
    acts = _actions(name)
    if "--model" in acts:
        assert acts["--model"].metavar == "BUNDLE"
    if "--backend" in acts:
        assert acts["--backend"].default == DEFAULTS["backend"]
    if "--force" in acts:
        assert isinstance(acts["--force"], argparse._StoreTrueAction)
        assert acts["--force"].help.startswith("overwrite")
    if "--runs" in acts:
        assert acts["--runs"].default in (DEFAULTS["runs"], DEFAULTS["check_runs"])
    for old in ("--bundle", "--fp32"):
        assert old not in acts


@pytest.mark.parametrize("name", ["predict", "demo", "benchmark", "build-engine", "quantize", "doctor", "serve",
                                  "export-triton"])
def test_device_wherever_a_backend_runs(name):
    assert "--device" in _actions(name)
    need = {"quantize": ["--model", "m", "--out", "o"], "serve": ["--model", "m"], "export-triton": ["--model", "m",
            "--out", "o"], "build-engine": ["--model", "m"], "predict": ["--image", "i"]}.get(name, [])
    assert build_parser(only=name).parse_args([name, "--device", "cpu"] + need).device == "cpu"


@pytest.mark.parametrize("argv", [["quantize", "--model", "m", "--out", "o"], ["serve", "--model", "m"]])
def test_a_device_the_backend_cannot_use_is_one_line(capsys, argv):
    assert main(argv + ["--device", "no-such-device"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --device no-such-device: no backend of --backend") and err.count("\n") == 1


def test_doctor_checks_only_the_device_given(monkeypatch, tmp_path, capsys):
    from rmpsam_edge.runtime import backends as registry
    seen = []
    monkeypatch.setattr(registry, "probe", lambda row, device=None: seen.append((row.name, device)) or (False, "no"))
    assert main(["doctor", "--device", "cpu", "--json", str(tmp_path / "d.json")]) == 2
    assert seen and all(d == "cpu" for _, d in seen)
    assert "no backend can run on --device cpu here" in capsys.readouterr().err


def test_size_grammar_is_one():
    assert image_size("640", "--max-size") == (640, 640) and image_size(" 384 X 640 ", "--max-size") == (384, 640)
    for bad, msg in (("630", "multiples of 32"), ("16x32", "multiples of 32"), ("abc", "give a size in pixels"),
                     ("384x", "give a size in pixels"), ("384*640", "give a size in pixels")):
        with pytest.raises(UserError, match=msg):
            image_size(bad, "--max-size")


@pytest.mark.parametrize("value", ["100", "big", "384x630"])
def test_bad_size_is_the_same_line_in_export_and_build_engine(capsys, tmp_path, value):
    errs = []
    for argv in (["export", "--random-init", "--out", str(tmp_path / "b")], ["build-engine", "--model", "none"]):
        assert main(argv + ["--max-size", value]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --max-size ") and err.count("\n") == 1 and "Traceback" not in err
        errs.append(err)
    assert errs[0] == errs[1]
    assert not os.path.exists(str(tmp_path / "b"))


def test_build_engine_size_flags_set_the_profile():
    from rmpsam_edge.commands import build_engine as cli
    from rmpsam_edge.runtime.tensorrt import profiles
    base = profiles.make_ranges((640, 640), prompts=(1, 1, 64))
    p = build_parser(only="build-engine")
    args = p.parse_args(["build-engine", "--model", "m", "--max-size", "384x640", "--min-size", "64"])
    r = cli.ranges_from_args(args, cli.image_flags(args), base)
    assert (r["H"], r["W"]) == ((64, 384, 384), (64, 640, 640))
    args = p.parse_args(["build-engine", "--model", "m", "--imgsz", "100", "--opt-size", "64x96"])
    r = cli.ranges_from_args(args, cli.image_flags(args), base)
    assert (r["H"], r["W"]) == ((32, 64, 128), (32, 96, 128))  # --imgsz is rounded up to 32, as in export


def test_force_messages_say_overwrite():
    bad = []
    for top in ("rmpsam_edge", "runtime", "export", "quantize", "benchmarks"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if f.endswith(".py"):
                    text = open(os.path.join(folder, f)).read()
                    for m in re.finditer(r"(\w+) with --force|--force to (\w+)|--force`?`? (\w+)", text):
                        if m.group(1) not in (None, "even") or m.group(2) not in (None, "overwrite") or \
                                m.group(3) not in (None, "overwrites", "and"):
                            bad.append("%s: %s" % (f, m.group(0)))
    assert not bad


def test_imgsz_grammar():
    assert input_size("640") == 640 and input_size("OFFICIAL") is None
    for bad, msg in (("16", "too small"), ("abc", "a number of pixels"), ("-1", "too small")):
        with pytest.raises(UserError, match=msg):
            input_size(bad)


def test_bad_imgsz_is_one_line_in_predict(capsys, tmp_path):
    img = os.path.join(ROOT, "rmpsam_edge", "assets", "images", "astronaut.jpg")
    bundle = os.path.join(ROOT, "rmpsam_edge", "assets", "bundle")
    assert main(["predict", "--image", img, "--model", bundle, "--imgsz", "big", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --imgsz must be a number of pixels") and err.count("\n") == 1


def test_prompts_has_one_meaning():
    """--prompts is the benchmark's prompt counts only; the demo's file and train's count have their own names."""
    assert "--prompts" in _actions("benchmark")
    for name in COMMANDS:
        if name != "benchmark":
            assert "--prompts" not in _actions(name), name
    assert "--prompts-file" in _actions("demo") and "--prompts-per-frame" in _actions("train")


def test_predict_rejects_device_on_the_torch_path(capsys, tmp_path):
    pytest.importorskip("torch")
    img = os.path.join(ROOT, "rmpsam_edge", "assets", "images", "astronaut.jpg")
    assert main(["predict", "--image", img, "--random-init", "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    assert "--device applies to an exported bundle" in capsys.readouterr().err


@pytest.mark.parametrize("argv, backend", [([], "onnxruntime"), (["--precision", "bf16"], "openvino"),
                                           (["--rest", "bf16"], "openvino"), (["--backend", "openvino"], "openvino")])
def test_quantize_backend_auto_picks_the_toolkit(monkeypatch, argv, backend):
    seen = {}
    from rmpsam_edge.quantize import pipeline
    monkeypatch.setattr(pipeline, "quantize_bundle", lambda opts: seen.setdefault("backend", opts.backend) and 0)
    assert main(["quantize", "--model", "m", "--out", "o"] + argv) == 0
    assert seen["backend"] == backend


def _bench_args(argv):
    from rmpsam_edge.commands import benchmark as bench
    from rmpsam_edge.cli import build_parser
    return bench.apply_preset(build_parser(only="benchmark").parse_args(["benchmark"] + argv))


def test_benchmark_presets_fill_only_what_was_not_given():
    a = _bench_args(["--preset", "stages"])
    assert (a.backends, a.precisions, a.prompts, a.imgsz, a.threads, a.flops) == (
        "torch,onnxruntime,openvino", "fp32", [1, 16, 64], [512], 2, True)
    a = _bench_args(["--preset", "stages", "--threads", "1", "--prompts", "4", "--imgsz", "256"])
    assert (a.threads, a.prompts, a.imgsz, a.backends) == (1, [4], [256], "torch,onnxruntime,openvino")
    a = _bench_args([])  # the table with the base defaults
    assert (a.preset, a.backends, a.prompts, a.threads, a.runs) == ("table", "torch,onnxruntime,openvino,tensorrt", [1, 16],
                                                                     None, DEFAULTS["runs"])
    a = _bench_args(["--soak", "70"])
    assert (a.preset, a.frames) == ("soak", 70)
    assert _bench_args(["--preset", "soak"]).frames == 1000 and _bench_args(["--preset", "demo"]).frames == 30
    assert _bench_args(["--paper"]).preset == "paper"
    a = _bench_args(["--model", "b", "--preset", "quantize"])
    assert a.model == ["b"] and a.precisions == "fp32,fp16,int8" and a.backends == "onnxruntime,openvino"


def test_old_harness_modules_are_gone():
    import importlib.util
    for mod in ("rmpsam_edge.benchmarks.stage_speed", "rmpsam_edge.demo.targets"):
        assert importlib.util.find_spec(mod) is None, mod


def test_demo_harness_import_leaves_the_environment_alone(monkeypatch):
    import importlib

    from rmpsam_edge.benchmarks import demo_targets
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    importlib.reload(demo_targets)
    assert "OPENBLAS_NUM_THREADS" not in os.environ


def test_every_benchmark_preset_is_documented():
    from rmpsam_edge.commands.benchmark import PRESETS
    doc = open(os.path.join(ROOT, "docs", "benchmark_demo.md")).read()
    rows = [l for l in doc.splitlines() if l.startswith("| `")]
    assert sorted(l.split("`")[1] for l in rows if l.split("`")[1] in PRESETS) == sorted(PRESETS)


def test_benchmark_and_quantize_imgsz_take_the_shared_grammar(monkeypatch, capsys):
    assert _bench_args(["--imgsz", "192", "official"]).imgsz == [192, "official"]
    assert _bench_args(["--preset", "paper"]).imgsz == ["official"]  # the paper's protocol is the official policy
    assert main(["benchmark", "--imgsz", "16"]) == 2
    assert "--imgsz 16 is too small" in capsys.readouterr().err
    assert main(["benchmark", "--preset", "profile", "--model", "b", "--imgsz", "official"]) == 2
    assert "give --imgsz in pixels" in capsys.readouterr().err
    seen = {}
    from rmpsam_edge.quantize import pipeline
    monkeypatch.setattr(pipeline, "quantize_bundle", lambda opts: seen.setdefault("imgsz", opts.imgsz) and 0)
    assert main(["quantize", "--model", "m", "--out", "o", "--imgsz", "official"]) == 0 and seen["imgsz"] == "official"
    assert main(["quantize", "--model", "m", "--out", "o", "--imgsz", "abc"]) == 2
    assert "a number of pixels (e.g. 640) or 'official'" in capsys.readouterr().err
