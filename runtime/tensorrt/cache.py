"""Engine cache: ``<bundle>/tensorrt/<graph>.<precision>[.dlaN].engine`` + a ``.json`` sidecar whose key says what
the engine was built for (TensorRT, GPU, graph sha256, profile, ...) plus its size and sha256; ``check`` reads the key
before TensorRT sees the (untrusted) bytes."""
import collections
import contextlib
import hashlib
import json
import os
import re
from typing import Dict, List, Optional, Tuple

from rmpsam_edge.atomic import _alive, atomic_file, file_lock
from rmpsam_edge.runtime.bundle import sha256_file

FORMAT = 1
ENGINE_DIR = "tensorrt"

# key field -> how it is named in a mismatch line
FIELDS = (("format", "sidecar format"), ("tensorrt", "TensorRT version"), ("gpu", "GPU"),
          ("compute_capability", "compute capability"), ("gpu_memory_mb", "GPU memory MiB"), ("sm_count", "SM count"),
          ("module", "Jetson module"), ("graph", "graph"), ("onnx_sha256", "ONNX graph sha256"),
          ("precision", "precision"), ("dla_core", "DLA core"), ("profiles", "optimisation profile"),
          ("fp32_policy", "FP32 pinning rules"), ("fp32_layers", "--fp32-layers patterns"))


def engine_dir(bundle_dir: str) -> str:
    """``<bundle>/tensorrt`` when the bundle folder is writable; else (a bundle shipped inside site-packages,
    a read-only mount) ``$XDG_CACHE_HOME/rmpsam_edge/engines/<sha256 of the bundle manifest>``."""
    local = os.path.join(str(bundle_dir), ENGINE_DIR)
    if not os.path.isdir(str(bundle_dir)) or os.access(local if os.path.isdir(local) else str(bundle_dir), os.W_OK):
        return local
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "rmpsam_edge", "engines", sha256_file(os.path.join(str(bundle_dir), "manifest.json")))


def engine_paths(bundle_dir: str, graph: str, precision: str, dla_core: Optional[int] = None) -> Tuple[str, str]:
    name = "%s.%s%s.engine" % (graph, precision, "" if dla_core is None else ".dla%d" % int(dla_core))
    path = os.path.join(engine_dir(bundle_dir), name)
    return path, path + ".json"


def timing_cache_name(tensorrt: str, gpu: str, module: str = "") -> str:
    """'timing-trt10.3.0-orin-nvidia-jetson-orin-nano-developer-kit.cache': per TensorRT version, GPU name and
    Jetson module (the device-tree model before ' | '), since every Orin module reports the GPU name 'Orin'."""
    name = " ".join(p for p in (gpu, str(module or "").split(" | ")[0]) if p)
    return "timing-trt%s-%s.cache" % (tensorrt, re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-").lower())


def make_key(tensorrt: str, gpu: str, compute_capability: str, graph: str, onnx_sha256: str, precision: str,
             profiles: Dict[str, list], dla_core: Optional[int] = None, fp32_policy: Optional[str] = None,
             fp32_layers=(), gpu_memory_mb: Optional[int] = None, sm_count: Optional[int] = None,
             module: str = "") -> Dict[str, object]:
    return {"format": FORMAT, "tensorrt": str(tensorrt), "gpu": str(gpu),
            "compute_capability": str(compute_capability), "gpu_memory_mb": gpu_memory_mb, "sm_count": sm_count,
            "module": str(module or ""), "graph": graph, "onnx_sha256": onnx_sha256,
            "precision": precision, "dla_core": None if dla_core is None else int(dla_core),
            "profiles": json.loads(json.dumps(profiles)), "fp32_policy": fp32_policy,
            "fp32_layers": list(fp32_layers or [])}


def differences(stored: Dict[str, object], wanted: Dict[str, object]) -> List[str]:
    """['TensorRT version 8.6.1 (engine) != 10.3.0 (here)', ...] for every differing key field."""
    out = []
    for field, label in FIELDS:
        a, b = stored.get(field), wanted.get(field)
        if a == b:
            continue
        if field == "profiles":
            out.append("%s %s" % (label, _profile_diff(a or {}, b or {})))
        elif field == "onnx_sha256":
            out.append("%s changed (%s != %s)" % (label, _show(a, 12), _show(b, 12)))
        else:
            out.append("%s %s (engine) != %s (here)" % (label, _show(a), _show(b)))
    return out


def _show(v, cut: int = 0) -> str:
    if v is None or cut:
        return "none" if v is None else str(v)[:cut] + ".."
    return "'%s'" % v if isinstance(v, str) and " " in v else str(v)


def _profile_diff(a: Dict[str, list], b: Dict[str, list]) -> str:
    for n in sorted(set(a) | set(b)):
        if a.get(n) != b.get(n):
            pa, pb = ("none" if p is None else "min %s opt %s max %s" % tuple(p) for p in (a.get(n), b.get(n)))
            return "for %s: %s (engine) != %s (wanted)" % (n, pa, pb)
    return "differs"


# ok: ``data`` (the engine bytes) can go to TensorRT; else ``reason`` is one line, ``foreign`` marks an engine file
# without a sidecar (not ours: never overwritten without --force).
Verdict = collections.namedtuple("Verdict", "ok reason data foreign", defaults=("", None, False))


def read_sidecar(sidecar_path: str) -> Tuple[Optional[dict], str]:
    """-> (sidecar dict or None, reason when None)."""
    if not os.path.isfile(sidecar_path):
        return None, "no engine built yet"
    try:
        with open(sidecar_path, "r") as f:
            side = json.load(f)
        if not isinstance(side, dict) or not isinstance(side.get("key"), dict):
            raise ValueError("no 'key' object")
        int(side["engine_bytes"]), str(side["engine_sha256"])
        return side, ""
    except (ValueError, KeyError, TypeError, OSError) as exc:
        return None, "engine sidecar %s is unreadable (%s)" % (os.path.basename(sidecar_path), exc)


def check(engine_path: str, sidecar_path: str, wanted: Dict[str, object]) -> Verdict:
    """Key first, then size and sha256; the engine bytes are read only when the key matches."""
    side, why = read_sidecar(sidecar_path)
    if side is None:
        if os.path.isfile(engine_path) and not os.path.isfile(sidecar_path):
            return Verdict(False, "%s has no sidecar key (not built by rmpsam-edge)" % os.path.basename(engine_path),
                           foreign=True)
        return Verdict(False, why)
    diff = differences(side["key"], wanted)
    if diff:
        return Verdict(False, "; ".join(diff))
    if not os.path.isfile(engine_path):
        return Verdict(False, "engine file %s is missing" % os.path.basename(engine_path))
    size, expected = os.path.getsize(engine_path), int(side["engine_bytes"])
    if size != expected:
        return Verdict(False, "engine file is truncated or changed (%d bytes, sidecar says %d)" % (size, expected))
    with open(engine_path, "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != side["engine_sha256"]:
        return Verdict(False, "engine file is corrupt (sha256 differs from its sidecar)")
    return Verdict(True, data=data)


def write(engine_path: str, sidecar_path: str, data: bytes, key: Dict[str, object], extra=None) -> None:
    """Under a lock (two processes building the same engine wait for each other), each file written whole
    (atomic_file); the old sidecar goes first and the new one last, so a half-made pair never looks valid."""
    data = bytes(data)
    side = {"key": key, "engine_bytes": len(data), "engine_sha256": hashlib.sha256(data).hexdigest()}
    side.update(extra or {})
    with file_lock(engine_path):
        if os.path.exists(sidecar_path):
            os.remove(sidecar_path)
        write_bytes(engine_path, data)
        write_bytes(sidecar_path, (json.dumps(side, indent=1, sort_keys=True) + "\n").encode())


def write_bytes(path: str, data: bytes) -> None:
    """``path`` written whole or not at all (atomic_file)."""
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


@contextlib.contextmanager
def building(engine_path: str):
    """``<engine>.building`` holds this process's id while it builds, removed however the build ends in Python:
    only a process killed outright (SIGKILL, the kernel's out-of-memory killer) leaves it behind."""
    os.makedirs(os.path.dirname(engine_path), exist_ok=True)
    with open(engine_path + ".building", "w") as f:
        f.write(str(os.getpid()))
    try:
        yield
    finally:
        try:
            os.remove(engine_path + ".building")
        except OSError:  # a concurrent build of the same engine removed it first
            pass


def killed_build(engine_path: str) -> Optional[int]:
    """The id of a process that died while building ``engine_path`` (its marker left behind), else None."""
    try:
        with open(engine_path + ".building") as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return None if _alive(pid) else pid
