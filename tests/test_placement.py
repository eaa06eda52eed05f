"""``auto``'s measured per-graph placement: the fastest backend by the timings (injected through ``measure_fn``,
never wall-clock), the cache (hit, miss, a key change measures again, an unreadable file is ignored with one
line), and the feeds at the bundle's opt size."""
import json

import numpy as np
import pytest

from _bundle_fixture import shared_bundle
from rmpsam_edge.runtime import composite, loader, placement
from rmpsam_edge.runtime import backends as registry
from rmpsam_edge.runtime.bundle import Bundle

CPUS = ["onnxruntime", "openvino"]


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    return shared_bundle(tmp_path_factory)


class FakeMeasure(object):
    """measure_fn returning fixed timings and counting its calls."""

    def __init__(self, ms):
        self.ms, self.calls = ms, []

    def __call__(self, bundle, backends, threads):
        self.calls.append((tuple(backends), threads))
        return self.ms


def _ms(encoder, prompt, objects):
    """{graph: {backend: ms}} from (onnxruntime, openvino) pairs."""
    return {g: dict(zip(CPUS, pair)) for g, pair in
            (("encoder", encoder), ("prompt_decoder", prompt), ("object_decoder", objects))}


def test_measured_placement_picks_the_faster_backend(bundle, tmp_path, monkeypatch):
    b = Bundle.open(bundle)
    rows = [registry.get(n) for n in CPUS]
    for ms, want in ((_ms((9, 3), (1, 2), (5, 4)), {"encoder": "openvino", "prompt_decoder": "onnxruntime",
                                                    "object_decoder": "openvino"}),
                     (_ms((3, 9), (2, 1), (4, 5)), {"encoder": "onnxruntime", "prompt_decoder": "openvino",
                                                    "object_decoder": "onnxruntime"})):
        fake = FakeMeasure(ms)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / ("%d" % len(list(tmp_path.iterdir())))))
        runner, source = loader._per_graph(b, rows, {}, None, 1, auto=True, verbose=False, measure_fn=fake)
        assert source == "measured here" and fake.calls == [(tuple(CPUS), 1)]
        assert runner.placement == want
        for name, r in runner.runners.items():  # each backend loaded only the graphs placed on it
            assert set(r.bundle.graph_names()) - {"prompt_decoder_many"} == {g for g, n in want.items() if n == name}
        runner.deactivate()
    # an override wins over the timings; untimed graphs go to the first candidate
    assert composite.plan(CPUS, {"encoder": "onnxruntime"}, _ms((9, 3), (1, 2), (5, 4)))["encoder"] == "onnxruntime"
    assert composite.plan(["openvino", "onnxruntime"], {}, {}) == {g: "openvino" for g in composite.GRAPHS}


def test_cache_hit_miss_and_key_change(bundle, tmp_path, monkeypatch):
    b = Bundle.open(bundle)
    path = str(tmp_path / "placement.json")
    fake = FakeMeasure(_ms((9, 3), (1, 2), (5, 4)))
    lines = []
    ms, source = placement.timings(b, CPUS, 2, measure_fn=fake, path=path, say=lines.append)
    assert (ms, source, len(fake.calls)) == (fake.ms, "measured here", 1)
    assert len(lines) == 1 and lines[0].startswith("measuring each graph on onnxruntime and openvino")
    with open(path) as f:
        (entry,) = json.load(f)["entries"].values()
    assert entry["ms"] == fake.ms and entry["key"]["threads"] == 2 and entry["key"]["cores"] >= 1
    assert entry["key"]["graphs"]["encoder"] == b.manifest["graphs"]["encoder"]["sha256"]
    lines[:] = []
    assert placement.timings(b, CPUS, 2, measure_fn=fake, path=path, say=lines.append) == (fake.ms, "from cache")
    assert len(fake.calls) == 1 and lines == []
    # each part of the key measures again: threads, the bundle's graphs, a backend version, the CPU
    placement.timings(b, CPUS, 1, measure_fn=fake, path=path)
    other = Bundle(b.path, json.loads(json.dumps(b.manifest)))
    other.manifest["graphs"]["encoder"]["sha256"] = "0" * 64
    placement.timings(other, CPUS, 2, measure_fn=fake, path=path)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Some Other CPU\nflags\t\t: sse2 avx2\n")
    placement.timings(b, CPUS, 2, measure_fn=fake, path=path, cpuinfo=str(cpuinfo))
    monkeypatch.setattr(placement, "_version", lambda name: "0.0-other")
    placement.timings(b, CPUS, 2, measure_fn=fake, path=path)
    assert len(fake.calls) == 5
    with open(path) as f:
        assert len(json.load(f)["entries"]) == 5  # all kept: switching back is a hit
    monkeypatch.undo()
    assert placement.timings(b, CPUS, 1, measure_fn=fake, path=path)[1] == "from cache"


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\xff\xfe binary"])
def test_unreadable_cache_is_ignored_with_one_line_and_rewritten(bundle, tmp_path, content):
    b = Bundle.open(bundle)
    path = tmp_path / "placement.json"
    path.write_bytes(content.encode("latin-1"))
    fake = FakeMeasure(_ms((1, 2), (1, 2), (1, 2)))
    lines = []
    assert placement.timings(b, CPUS, 1, measure_fn=fake, path=str(path), say=lines.append)[1] == "measured here"
    assert len(lines) == 2 and lines[0].startswith("ignoring the unreadable placement cache %s (" % path)
    assert placement.timings(b, CPUS, 1, measure_fn=fake, path=str(path))[1] == "from cache"


def test_cache_path_honours_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert placement.cache_path() == str(tmp_path / "rmpsam_edge" / "placement.json")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert placement.cache_path() == str(tmp_path / "home" / ".cache" / "rmpsam_edge" / "placement.json")


def test_feeds_at_the_bundles_opt_size(bundle):
    b = Bundle.open(bundle)
    axes = b.manifest["dynamic_axes"]
    f = placement.feeds(b)
    assert f["encoder"]["image"].shape == (1, 3, axes["H"]["opt"], axes["W"]["opt"])
    assert f["prompt_decoder"]["features"].shape == (1, 256, axes["H"]["opt"] // 4, axes["W"]["opt"] // 4)
    assert f["prompt_decoder"]["boxes"].shape == (axes["Np"]["opt"], 4)
    assert np.array_equal(f["object_decoder"]["class_embed"], b.class_embed())


def test_real_measure_times_every_graph_on_every_backend(bundle):
    ms = placement.measure(Bundle.open(bundle), CPUS, 1)
    assert set(ms) == {"encoder", "prompt_decoder", "object_decoder"}
    assert all(set(v) == set(CPUS) and all(t > 0 for t in v.values()) for v in ms.values())
