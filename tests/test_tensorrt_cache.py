"""cache.py: engine sidecar keys, every mismatch line, corrupt / truncated / foreign engine files."""
import json
import os

import pytest

from rmpsam_edge.runtime.tensorrt import cache

PROFILES = {"B": [1, 1, 1], "H": [32, 640, 640], "W": [32, 640, 640]}


def key(**over):
    args = dict(tensorrt="8.6.2", gpu="Orin", compute_capability="8.7", graph="encoder", onnx_sha256="a" * 64,
                precision="fp16", profiles=PROFILES, dla_core=None, fp32_policy="fp32-pins-v1",
                fp32_layers=[])
    args.update(over)
    return cache.make_key(**args)


@pytest.fixture
def stored(tmp_path):
    eng, side = cache.engine_paths(str(tmp_path), "encoder", "fp16")
    cache.write(eng, side, b"PLAN" * 1000, key(), {"note": "x"})
    return eng, side


def test_paths_and_write(tmp_path, stored):
    eng, side = stored
    assert eng == os.path.join(str(tmp_path), "tensorrt", "encoder.fp16.engine") and side == eng + ".json"
    assert cache.engine_paths("b", "encoder", "int8", 0)[0] == os.path.join("b", "tensorrt", "encoder.int8.dla0.engine")
    with open(side) as f:
        s = json.load(f)
    assert s["engine_bytes"] == 4000 and s["key"] == key() and s["note"] == "x"
    assert sorted(os.listdir(os.path.dirname(eng))) == ["encoder.fp16.engine", "encoder.fp16.engine.json",
                                                        "encoder.fp16.engine.lock"]  # no temp files
    v = cache.check(eng, side, key())
    assert v.ok and v.data == b"PLAN" * 1000


@pytest.mark.parametrize("field,value,line", [
    ("tensorrt", "10.3.0", "TensorRT version 8.6.2 (engine) != 10.3.0 (here)"),
    ("gpu", "NVIDIA GeForce RTX 4090", "GPU Orin (engine) != 'NVIDIA GeForce RTX 4090' (here)"),
    ("compute_capability", "8.9", "compute capability 8.7 (engine) != 8.9 (here)"),
    ("precision", "int8", "precision fp16 (engine) != int8 (here)"),
    ("dla_core", 0, "DLA core none (engine) != 0 (here)"),
    ("onnx_sha256", "b" * 64, "ONNX graph sha256 changed (aaaaaaaaaaaa.. != bbbbbbbbbbbb..)"),
    ("fp32_policy", "fp32-pins-v2", "FP32 pinning rules fp32-pins-v1 (engine) != fp32-pins-v2 (here)"),
    ("fp32_layers", ["conv"], "--fp32-layers patterns [] (engine) != ['conv'] (here)"),
    ("profiles", dict(PROFILES, H=[32, 640, 1024]),
     "optimisation profile for H: min 32 opt 640 max 640 (engine) != min 32 opt 640 max 1024 (wanted)"),
])
def test_every_key_mismatch_is_one_line(stored, field, value, line):
    eng, side = stored
    v = cache.check(eng, side, key(**{field: value}))
    assert not v.ok and v.reason == line and v.data is None


def test_an_engine_keyed_with_the_old_calibration_field_stays_usable(tmp_path):
    eng, side = cache.engine_paths(str(tmp_path), "encoder", "fp16")
    cache.write(eng, side, b"PLAN", dict(key(), calibration=None))  # sidecars written before INT8 became Q/DQ
    assert cache.check(eng, side, key()).ok


def test_several_differences_in_one_line(stored):
    v = cache.check(*stored, wanted=key(tensorrt="10.3.0", gpu="Thor"))
    assert v.reason == "TensorRT version 8.6.2 (engine) != 10.3.0 (here); GPU Orin (engine) != Thor (here)"


def test_truncated_and_corrupt_engines_are_detected_before_tensorrt(stored):
    eng, side = stored
    with open(eng, "r+b") as f:
        f.truncate(1234)
    v = cache.check(eng, side, key())
    assert not v.ok and v.reason == "engine file is truncated or changed (1234 bytes, sidecar says 4000)"
    with open(eng, "wb") as f:
        f.write(b"PLAN" * 999 + b"PLAX")
    v = cache.check(eng, side, key())
    assert not v.ok and v.reason == "engine file is corrupt (sha256 differs from its sidecar)" and v.data is None
    os.remove(eng)
    assert cache.check(eng, side, key()).reason == "engine file encoder.fp16.engine is missing"


def test_missing_unreadable_and_foreign(tmp_path):
    eng, side = cache.engine_paths(str(tmp_path), "encoder", "fp16")
    assert cache.check(eng, side, key()).reason == "no engine built yet"
    os.makedirs(os.path.dirname(eng))
    with open(eng, "wb") as f:
        f.write(b"someone's trtexec engine")
    v = cache.check(eng, side, key())
    assert v.foreign and v.reason == "encoder.fp16.engine has no sidecar key (not built by rmpsam-edge)"
    for text in ("{not json", json.dumps({"key": {}}), json.dumps([1, 2])):
        with open(side, "w") as f:
            f.write(text)
        v = cache.check(eng, side, key())
        assert not v.ok and not v.foreign and v.reason.startswith("engine sidecar encoder.fp16.engine.json is unreadable (")


def test_read_only_bundle_caches_engines_in_xdg_cache(tmp_path, monkeypatch):
    import hashlib
    b = tmp_path / "shipped"
    b.mkdir()
    (b / "manifest.json").write_text('{"format": 1}')
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.engine_dir(str(b)) == str(b / "tensorrt")  # writable: next to the bundle
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # like site-packages for a normal user
    sha = hashlib.sha256(b'{"format": 1}').hexdigest()
    eng, side = cache.engine_paths(str(b), "encoder", "fp16")
    assert eng == str(tmp_path / "xdg" / "rmpsam_edge" / "engines" / sha / "encoder.fp16.engine")
    cache.write(eng, side, b"PLAN", key())
    assert cache.check(eng, side, key()).ok and not (b / "tensorrt").exists()


def test_two_writers_of_one_engine_take_turns(tmp_path):
    import threading
    from rmpsam_edge.atomic import file_lock
    eng, side = cache.engine_paths(str(tmp_path), "encoder", "fp16")
    os.makedirs(os.path.dirname(eng))
    done = []
    with file_lock(eng):  # another process is writing this engine
        t = threading.Thread(target=lambda: (cache.write(eng, side, b"B" * 8, key()), done.append(1)))
        t.start()
        t.join(0.5)
        assert not done and not os.path.exists(side)  # the second writer waits for the lock
    t.join(10)
    assert done and cache.check(eng, side, key()).data == b"B" * 8
