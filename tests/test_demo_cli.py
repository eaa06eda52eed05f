"""`rmpsam-edge demo` end to end on the shipped clip / images: a fake runner (track ids, everything, panoptic)
and the real PyTorch model with random weights (small input), outputs and one-line errors."""
import json
import os

import cv2
import numpy as np
import pytest

import rmpsam_edge.weights as weights
from rmpsam_edge.cli import main
from rmpsam_edge.media import asset_path
from rmpsam_edge.postprocess import rle_decode
from rmpsam_edge.predictor import Predictor
from rmpsam_edge.runtime.base import Runner
from rmpsam_edge.demo.sources import default_source
from rmpsam_edge.spec import ModelSpec

ASSETS = asset_path()
CLIP = os.path.join(ASSETS, "video", "vtest_clip.avi")


class SceneRunner(Runner):
    """A fake model of a scene with 4 vertical stripes. encoder: features (1, 3, h, w), channels 0/1 = the
    resized image height/width (found from the zero padding). object decoder: 4 queries, one per stripe
    (identities 0,1 = things of class 0/1, 2 = stuff class 2, 3 = background); the query ORDER is rotated on
    every call, the query embeddings follow the identity, so only a tracker that matches queries keeps ids.
    prompt decoder: a prompt's mask is the image half (left/right) its centre is in."""

    name = "scene"

    def __init__(self):
        self.object_calls = 0
        self.prompt_batches = []

    def describe(self):
        return "scene fake runner"

    def infer(self, graph, feeds):
        return getattr(self, "_" + graph)(**feeds)

    def _encoder(self, image):
        _, _, H, W = image.shape
        valid = np.any(image[0] != 0, axis=0)
        f = np.zeros((1, 3, H // 4, W // 4), np.float32)
        f[0, 0] = np.flatnonzero(valid.any(axis=1)).max() + 1
        f[0, 1] = np.flatnonzero(valid.any(axis=0)).max() + 1
        return {"features": f}

    def _xs(self, features):
        return (np.arange(features.shape[3]) * 4 + 1.5) / float(features[0, 1, 0, 0])  # 0..1 across the image

    def _object_decoder(self, features, class_embed):
        k = class_embed.shape[0]
        h, w = features.shape[2:]
        xs = self._xs(features)
        order = np.roll(np.arange(4), self.object_calls)  # query q holds identity order[q]
        self.object_calls += 1
        cls = np.full((1, 4, k + 1), -10.0, np.float32)
        masks = np.zeros((1, 4, h, w), np.float32)
        query = np.zeros((1, 4, 256), np.float32)
        for q, ident in enumerate(order):
            cls[0, q, [0, 1, 2, k][ident]] = 10.0
            stripe = np.floor(xs * 4) == ident
            masks[0, q] = np.where(stripe, 8.0, -8.0)[None, :]
            query[0, q, ident] = 1.0
        return {"class_logits": cls, "mask_logits": masks, "query_embed": query}

    def _prompt_decoder(self, features, boxes):
        self.prompt_batches.append(len(boxes))
        xs = self._xs(features)
        h = features.shape[2]
        out = np.zeros((len(boxes), h, features.shape[3]), np.float32)
        for i, (cx, cy, bw, bh) in enumerate(boxes):
            right = cx >= 0.5
            out[i] = np.where((xs >= 0.5) == right, 5.0, -5.0)[None, :]
        return {"mask_logits": out, "iou": (0.5 + 0.1 * boxes[:, :1]).astype(np.float32)}


@pytest.fixture
def fake_model(monkeypatch):
    runner = SceneRunner()
    spec = ModelSpec("r18", input_size=192, class_embed=np.ones((3, 1, 768), np.float32),
                     class_names=["person", "car", "road"], num_things=2, weights_note="fake runner")

    def build(*args, **kwargs):
        return Predictor(runner, spec), {"variant": "r18", "weights_note": "fake runner"}

    monkeypatch.setattr(weights, "load_predictor", build)  # the one factory: predict, demo and soak use it
    return runner


def _read_jsonl(path):
    lines = [json.loads(l) for l in open(path).read().splitlines()]
    assert "header" in lines[0] and "summary" in lines[-1]
    return lines[0]["header"], lines[1:-1], lines[-1]["summary"]


def _count_frames(path):
    cap = cv2.VideoCapture(str(path))
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            return n
        n += 1


def test_track_mode_ids_stable_on_shipped_clip(fake_model, tmp_path, capsys):
    out = tmp_path / "track.avi"
    rc = main(["demo", "--mode", "track", "--max-frames", "3", "--out", str(out), "--score-thr", "0.3"])
    assert rc == 0
    header, frames, summary = _read_jsonl(tmp_path / "track.jsonl")
    assert header["source"] == default_source() and header["mode"] == "track"
    assert [f["frame"] for f in frames] == [0, 1, 2] and summary["frames"] == 3
    assert fake_model.object_calls == 3  # the query order really changed between frames
    id_to_stripe = []
    for f in frames:
        segs = f["segments"]
        assert sorted(s["name"] for s in segs) == ["car", "person"]  # stuff and background are not tracked
        m = {}
        for s in segs:
            mask = rle_decode(s["rle"])
            assert mask.shape == (288, 384)
            m[s["id"]] = int(np.nonzero(mask)[1].mean() * 4 // 384)  # which stripe
        id_to_stripe.append(m)
    assert id_to_stripe[0] == id_to_stripe[1] == id_to_stripe[2] and sorted(id_to_stripe[0].values()) == [0, 1]
    assert _count_frames(out) == 3
    text = capsys.readouterr().out
    assert "demo summary: 3 frames" in text and "[fake runner]" in text and str(out) in text


def test_everything_mode_one_batch_and_nms(fake_model, tmp_path):
    out = tmp_path / "e.avi"
    rc = main(["demo", "--mode", "everything", "--grid", "4", "--max-frames", "2", "--out", str(out)])
    assert rc == 0
    assert fake_model.prompt_batches == [16, 16]  # 16 grid prompts, ONE decoder call per frame
    _, frames, _ = _read_jsonl(tmp_path / "e.jsonl")
    for f in frames:
        assert len(f["segments"]) == 2  # 16 masks, two distinct (left/right half): NMS removed 14
        halves = sorted(int(np.nonzero(rle_decode(s["rle"]))[1].mean() > 192) for s in f["segments"])
        assert halves == [0, 1]


def test_panoptic_mode_on_image_glob(fake_model, tmp_path):
    out = tmp_path / "p.avi"
    rc = main(["demo", "--source", os.path.join(ASSETS, "images", "*.jpg"), "--mode", "panoptic",
               "--out", str(out), "--max-frames", "2"])
    assert rc == 0
    _, frames, _ = _read_jsonl(tmp_path / "p.jsonl")
    assert len(frames) == 2
    names = sorted(s["name"] for s in frames[0]["segments"])
    assert names == ["car", "person", "road"]
    assert _count_frames(out) == 2


def test_existing_output_needs_force(fake_model, tmp_path, capsys):
    out = tmp_path / "x.avi"
    out.write_bytes(b"mine")
    rc = main(["demo", "--mode", "everything", "--max-frames", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "exists; pass --force" in err and out.read_bytes() == b"mine"
    assert main(["demo", "--mode", "everything", "--max-frames", "1", "--out", str(out), "--force"]) == 0
    assert _count_frames(out) == 1


def test_default_output_is_numbered_not_overwritten(fake_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert main(["demo", "--mode", "everything", "--grid", "2", "--max-frames", "1"]) == 0
    files = sorted(os.listdir(tmp_path / "runs" / "demo"))
    assert files == ["vtest_clip_everything.avi", "vtest_clip_everything.jsonl",
                     "vtest_clip_everything_2.avi", "vtest_clip_everything_2.jsonl"]


@pytest.mark.parametrize("argv, message", [
    (["--source", "nothing/*.jpg"], "no images match"),
    (["--source", __file__], "not a readable video"),
    (["--source", "63"], "camera 63 could not be opened"),
    (["--source", "csi://0"], "GStreamer"),
    (["--mode", "points"], "needs prompts"),
    (["--mode", "points", "--points", "1,2,3"], "bad point"),
    (["--out", "result.gif"], ".avi"),
])
def test_errors_are_one_line(fake_model, tmp_path, capsys, argv, message):
    rc = main(["demo"] + argv + ["--max-frames", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_real_model_points_and_boxes_random_weights(tmp_path, capsys):
    """The PyTorch path end to end (random weights, 128 px input): prompts from arguments and a JSON file."""
    pytest.importorskip("torch")
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"points": [[100, 80]], "boxes": [[200, 50, 300, 250]]}))
    out = tmp_path / "pts.avi"
    rc = main(["demo", "--random-init", "--imgsz", "128", "--threads", "1", "--mode", "points",
               "--points", "50,60", "--prompts-file", str(prompts), "--max-frames", "2", "--out", str(out)])
    assert rc == 0
    header, frames, summary = _read_jsonl(tmp_path / "pts.jsonl")
    assert header["weights_note"] == "random weights"
    assert len(frames) == 2 and all(len(f["segments"]) == 3 for f in frames)
    for s in frames[0]["segments"]:
        assert rle_decode(s["rle"]).shape == (288, 384)
    assert {"preprocess", "encoder", "decoder", "postprocess"} <= set(frames[0]["timings_ms"])
    assert summary["frames"] == 2 and "model.encoder" in summary["stages"]
    assert "[random weights]" in capsys.readouterr().out


def test_demo_preset_runs_and_reports_both_ratios(fake_model, tmp_path, monkeypatch, capsys):
    out, md = tmp_path / "t.json", tmp_path / "t.md"
    assert main(["benchmark", "--preset", "demo", "--frames", "4", "--runs", "2", "--rounds", "1", "--json", str(out),
                 "--md", str(md)]) == 0
    data = json.load(open(out))
    assert len(data["rounds"]) == 1 and data["rounds"][0]["pipelined_fps"] > 0
    assert data["ratio_pipelined_vs_encoder"] > 0 and data["ratio_everything_vs_single"] > 0
    assert data["everything_prompts"] == 64 and 64 in fake_model.prompt_batches  # one call with 64 prompts
    assert isinstance(data["target_everything_met"], bool) and data["backend"] == "scene fake runner"
    assert data["command"].startswith("rmpsam-edge benchmark --preset demo")
    text = md.read_text()
    assert "| everything (64 prompts, one batch)" in text and text.strip() in capsys.readouterr().out
    # an existing report is never overwritten without --force (one line, nothing run)
    assert main(["benchmark", "--preset", "demo", "--frames", "4", "--json", str(out)]) == 2
    assert "pass --force" in capsys.readouterr().err


def test_boxes_partly_outside_warn_once_point_outside_is_one_line(fake_model, tmp_path, capsys):
    out = tmp_path / "b.avi"
    assert main(["demo", "--mode", "boxes", "--boxes", "300,100,900,250", "--max-frames", "3",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("partly outside the 384x288 frame") == 1
    _, frames, _ = _read_jsonl(tmp_path / "b.jsonl")
    assert len(frames) == 3 and all(len(f["segments"]) == 1 for f in frames)
    rc = main(["demo", "--mode", "points", "--points", "500,100", "--max-frames", "2", "--out",
               str(tmp_path / "p.avi")])
    err = capsys.readouterr().err
    assert rc == 2 and "outside the image" in err and "Traceback" not in err
