"""`rmpsam-edge benchmark --soak N` (short CI version): N frames of the demo pipeline on the looped clip,
RSS at start / after warm-up / end and FPS drift reported; memory stays flat after warm-up."""
import json

from rmpsam_edge.cli import main


def test_soak_short(tmp_path, capsys):
    js, md = tmp_path / "soak.json", tmp_path / "soak.md"
    rc = main(["benchmark", "--soak", "70", "--random-init", "--imgsz", "64", "--threads", "1",
               "--json", str(js), "--md", str(md)])
    out = capsys.readouterr().out
    assert rc == 0 and "RSS start" in out and "drift" in out
    r = json.loads(js.read_text())
    assert r["frames"] == 70 and r["clip_loops"] >= 1  # the 60-frame clip was looped
    assert set(r["rss_mb"]) == {"start", "after_warmup", "end"}
    assert r["rss_mb"]["after_warmup"] > r["rss_mb"]["start"] > 0
    assert abs(r["rss_growth_after_warmup_mb"]) < 64  # no per-frame leak of any size
    assert r["fps_first_quarter"] > 0 and r["fps_last_quarter"] > 0
    assert "Command: `" in md.read_text()


def test_soak_needs_enough_frames(capsys):
    rc = main(["benchmark", "--soak", "5", "--random-init"])
    assert rc != 0 and "at least 40 frames" in capsys.readouterr().err
