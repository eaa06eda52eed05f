"""The CLI as a user runs it: real outputs for prompts/panoptic, and one-line errors (no traceback)."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from _model_helpers import model_shapes, seeded_state_dict, write_mmengine_checkpoint
from rmpsam_edge.media import asset_path

ASTRONAUT = asset_path("images", "astronaut.jpg")


def cli(*args, cwd=None):
    p = subprocess.run([sys.executable, "-m", "rmpsam_edge.cli"] + [str(a) for a in args], capture_output=True,
                       text=True, cwd=cwd, timeout=300)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    ckpt = write_mmengine_checkpoint(str(d / "r18.pth"), seeded_state_dict(model_shapes("r18")))
    vocab = str(d / "vocab.pth")
    torch.save(torch.nn.functional.normalize(torch.randn(6, 2, 768, generator=torch.Generator().manual_seed(0)), dim=-1), vocab)
    with open(str(d / "vocab.json"), "w") as f:
        json.dump({"class_names": ["ball", "box", "cone", "ring", "sky", "road"], "num_things": 4}, f)
    gray = str(d / "gray16.png")
    cv2.imwrite(gray, (np.linspace(0, 65535, 200 * 150).reshape(150, 200)).astype(np.uint16))
    return {"dir": d, "ckpt": ckpt, "vocab": vocab, "gray16": gray}


def test_predict_prompts_writes_overlay_masks_and_json(files):
    out = files["dir"] / "out_prompts"
    rc, so, se = cli("predict", "--checkpoint", files["ckpt"], "--image", ASTRONAUT, "--imgsz", 256,
                     "--points", "256,200", "100,80", "--boxes", "50,60,300,400", "--out", out)
    assert rc == 0, se
    res = json.loads((out / "result.json").read_text())
    assert res["task"] == "prompts" and len(res["results"]) == 3
    assert [r["prompt"]["type"] for r in res["results"]] == ["point", "point", "box"]
    masks = np.load(str(out / "masks.npz"))["masks"]
    assert masks.shape == (3, 512, 512) and masks.dtype == bool
    for r, m in zip(res["results"], masks):
        assert r["area"] == int(m.sum())
    overlay = cv2.imread(str(out / "overlay.png"))
    assert overlay.shape == (512, 512, 3)
    assert (out / "mask_002.png").exists()
    assert res["model"]["variant"] == "r18"
    # all prompts of the image went through one decoder pass: the timings hold one decoder entry
    assert "decoder" in res["timings_ms"] or any("decod" in k for k in res["timings_ms"])


def test_existing_output_is_not_overwritten_without_force(files):
    out = files["dir"] / "out_prompts2"
    args = ["predict", "--checkpoint", files["ckpt"], "--image", ASTRONAUT, "--imgsz", 128, "--points", "10,10",
            "--out", out]
    assert cli(*args)[0] == 0
    rc, _, se = cli(*args)
    assert rc != 0 and "--force" in se and "Traceback" not in se
    assert cli(*(args + ["--force"]))[0] == 0


def test_panoptic_with_random_init_says_random_weights(files):
    out = files["dir"] / "out_pan"
    rc, so, se = cli("predict", "--random-init", "--vocab", files["vocab"], "--image", files["gray16"],
                     "--imgsz", 128, "--task", "panoptic", "--out", out)
    assert rc == 0, se
    res = json.loads((out / "result.json").read_text())
    assert res["weights_note"] == "random weights"
    pan = np.load(str(out / "panoptic.npz"))["pan_seg"]
    assert pan.shape == (150, 200)  # 16-bit grayscale input converted, output at the original size


@pytest.mark.parametrize("args,expect", [
    (["--checkpoint", "missing.pth", "--points", "1,1"], "checkpoint not found"),
    (["--points", "1,1,1"], "bad point"),
    (["--boxes", "1,2,3"], "bad box"),
    (["--points", "9999,10"], "outside"),
    (["--task", "prompts"], "no prompts"),
])
def test_errors_are_one_line(files, args, expect):
    full = ["predict", "--image", ASTRONAUT, "--out", files["dir"] / ("e_%d" % abs(hash(expect)))]
    if "--checkpoint" not in args:
        full += ["--checkpoint", files["ckpt"], "--imgsz", "128"]
    rc, so, se = cli(*(full + args))
    assert rc != 0
    assert expect in se, se
    assert "Traceback" not in se and len(se.strip().splitlines()) <= 2


def test_unreadable_image_and_foreign_checkpoint(files, tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"not an image")
    rc, _, se = cli("predict", "--checkpoint", files["ckpt"], "--image", bad, "--points", "1,1", "--out", tmp_path / "o")
    assert rc != 0 and "cannot read image" in se and "Traceback" not in se
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(3)}}, str(foreign))
    rc, _, se = cli("info", foreign)
    assert rc != 0 and "not an RMP-SAM checkpoint" in se and "Traceback" not in se


def test_info_reports_variant_and_parameters(files):
    rc, so, se = cli("info", files["ckpt"], "--vocab", files["vocab"], "--json")
    assert rc == 0, se
    d = json.loads(so)
    assert d["variant"] == "r18" and d["parameters"] == 20827445
    assert d["vocabulary"]["classes"] == 6 and d["vocabulary"]["things"] == 4


def test_without_opencv_one_line_names_the_package_for_a_desktop_and_jetpacks(tmp_path):
    """No cv2 at all (a Jetson venv made without --system-site-packages, a desktop without an extra)."""
    code = ("import sys; sys.modules['cv2'] = None  # import cv2 now fails as when it is not installed\n"
            "from rmpsam_edge.cli import main; sys.exit(main(sys.argv[1:]))")
    for args in (["demo", "--max-frames", "1", "--out", str(tmp_path / "d.avi")],
                 ["predict", "--image", asset_path("images", "chelsea.jpg"), "--out", str(tmp_path / "p")]):
        p = subprocess.run([sys.executable, "-c", code] + args, capture_output=True, text=True, timeout=120)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
        assert lines[0].startswith("error: OpenCV (cv2) is not importable: on a desktop pip install "
                                   "opencv-python-headless")
        assert "sudo apt install nvidia-opencv" in lines[0] and "not Ubuntu's python3-opencv" in lines[0]


def test_the_default_job_runs_the_shipped_bundle_even_with_torch_installed(tmp_path):
    """torch is importable here; no --model still means the deployed runtime on the shipped bundle, and the PyTorch
    model runs only when asked for (--checkpoint, here the shipped demo weights)."""
    from rmpsam_edge.weights import SHIPPED_BUNDLE
    rc, _, se = cli("predict", "--image", ASTRONAUT, "--points", "256,200", "--threads", 2, "--out", tmp_path / "a")
    assert rc == 0, se
    model = json.loads((tmp_path / "a" / "result.json").read_text())["model"]
    assert model["bundle"] == SHIPPED_BUNDLE and ("onnxruntime" in model["backend"] or "openvino" in model["backend"])
    line = [l for l in se.splitlines() if "no --model" in l]
    assert len(line) == 1 and "running the shipped demo bundle %s" % SHIPPED_BUNDLE in line[0]
    assert "--backend auto" in line[0] and "the PyTorch model runs with --checkpoint" in line[0]
    pth = asset_path("weights", "rmpsam_r18_demo.pth")
    rc, _, se = cli("predict", "--checkpoint", pth, "--image", ASTRONAUT, "--points", "256,200", "--threads", 2,
                    "--out", tmp_path / "b")
    assert rc == 0, se
    model = json.loads((tmp_path / "b" / "result.json").read_text())["model"]
    assert "bundle" not in model and "no --model" not in se
