"""Results files name paths relative to the checkout (never a machine's worktree folder) and their command."""
import json
import os
import re

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


def test_committed_results_name_no_worktree():
    folder = os.path.join(ROOT, "benchmarks", "results")
    bad = []
    for base, _, files in os.walk(folder):
        for name in files:
            if name.endswith((".json", ".md")):
                with open(os.path.join(base, name)) as f:
                    text = f.read()
                if ROOT + os.sep in text or re.search(r"/work/(main|wt)/", text):  # this or another checkout
                    bad.append(name)
    assert not bad, bad
