"""What the tools write into results files: paths relative to the checkout (never a machine's folder) and
the command that made them."""
import json
import os

import pytest

from rmpsam_edge.media import asset_path, repo_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_repo_path_is_relative_inside_the_checkout_only():
    assert repo_path(asset_path("weights", "x.pth")) == os.path.join("rmpsam_edge", "assets", "weights", "x.pth")
    assert repo_path("/somewhere/else/b") == "/somewhere/else/b"
    assert repo_path(ROOT + "_sibling/b") == ROOT + "_sibling/b"  # a sibling folder sharing the prefix


def test_eval_json_has_a_relative_checkpoint_and_its_command(tmp_path):
    pytest.importorskip("torch")
    from rmpsam_edge.cli import main
    out = str(tmp_path / "e.json")
    argv = ["eval", "--images", "1", "--clips", "0", "--imgsz", "64", "--threads", "1", "--json", out]
    assert main(argv) == 0
    with open(out) as f:
        res = json.load(f)
    assert res["checkpoint"] == os.path.join("rmpsam_edge", "assets", "weights", "rmpsam_r18_demo.pth")
    assert res["command"] == "rmpsam-edge " + " ".join(argv) and res["split"] == "eval"

