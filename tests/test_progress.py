"""Progress output: plain periodic lines (no carriage returns) when the stream is not a terminal."""
import io

import pytest

from rmpsam_edge.progress import Progress, progress


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_not_a_terminal_gives_a_few_plain_lines():
    out = io.StringIO()
    assert list(progress(range(1000), 1000, "calibrate", out, every_s=3600)) == list(range(1000))
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0] == "calibrate: 0/1000" and lines[-1] == "calibrate: 1000/1000 done"
    assert len(lines) == 5  # start, three quarters, done


def test_lines_every_interval_with_the_note():
    out = io.StringIO()
    bar = Progress(10 ** 6, "train", out, initial=5, every_s=0.0)  # every update is due
    bar.update(1, "loss 0.5")
    bar.update(1)
    bar.close()
    assert out.getvalue().splitlines() == ["train: 5/1000000", "train: 6/1000000 loss 0.5",
                                           "train: 7/1000000 loss 0.5", "train: 7/1000000 loss 0.5"]


def test_terminal_uses_tqdm():
    pytest.importorskip("tqdm", reason="tqdm (optional; in the dev extra) not installed")
    out = FakeTerminal()
    list(progress(range(50), 50, "fidelity", out))
    assert "\r" in out.getvalue()
