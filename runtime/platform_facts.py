"""Platform facts, read once for ``rmpsam-edge doctor``, the benchmark header and the TensorRT engine cache key:
Jetson (L4T/JetPack release, module, nvpmodel mode, jetson_clocks), GPU (name, memory, SM count, driver, CUDA),
each read where it can be and ``None`` with the reason where it cannot. Reads files and runs nvidia-smi /
nvpmodel / jetson_clocks with short timeouts; ``root`` points the file reads at a fake tree in tests; no torch.
"""
import os
import platform
import re
import shutil
import subprocess
from typing import Dict, Optional

TEGRA_RELEASE = "/etc/nv_tegra_release"
DEVICE_TREE_MODEL = "/proc/device-tree/model"
# L4T release -> JetPack (NVIDIA's JetPack archive); the L4T line is the fact, this only names it
JETPACK = {"35.1": "5.0.2", "35.2": "5.1", "35.3": "5.1.1", "35.4": "5.1.2", "35.5": "5.1.3", "35.6": "5.1.4",
           "36.2": "6.0 DP", "36.3": "6.0", "36.4": "6.1/6.2", "38.2": "7.0"}


def read_text(path: str) -> Optional[str]:
    """A small system file's text (NULs dropped, stripped), or None when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").replace("\x00", "").strip()
    except (OSError, IOError):
        return None


def run(cmd, timeout: float = 10.0) -> Optional[str]:
    """A command's output when it exists and succeeds, else None."""
    if not shutil.which(cmd[0]):
        return None
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    text = p.stdout.decode("utf-8", "replace").strip()
    return text if p.returncode == 0 and text else None


def parse_nvpmodel(text: str) -> str:
    """``nvpmodel -q`` output ("NV Power Mode: MAXN\\n0") -> "MAXN (mode 0)"."""
    m = re.search(r"NV Power Mode:[ \t]*(\S+)[ \t]*(?:\r?\n\s*(\d+))?", text)
    if not m:
        return text.strip().splitlines()[0] if text.strip() else "unknown"
    return "%s (mode %s)" % (m.group(1), m.group(2)) if m.group(2) else m.group(1)


def _files(root: str):
    return (os.path.join(root, DEVICE_TREE_MODEL.lstrip("/")), os.path.join(root, TEGRA_RELEASE.lstrip("/")))


def jetson_module(root: str = "/") -> str:
    """The engine cache key's module part: 'NVIDIA Jetson AGX Orin Developer Kit | # R36 (release), REVISION:
    4.0' on a Jetson (every Orin module reports GPU 'Orin', sm 8.7), '' elsewhere."""
    model, release = (read_text(p) for p in _files(root))
    parts = [model.splitlines()[0].strip() if model else "",
             ",".join(release.splitlines()[0].split(",")[:2]).strip() if release else ""]  # not the build date
    return " | ".join(p for p in parts if p)


def jetson(root: str = "/") -> Dict[str, Optional[str]]:
    model_path, release_path = _files(root)
    release = read_text(release_path)
    out = {"l4t": None, "jetpack": None, "module": read_text(model_path), "nvpmodel": None, "jetson_clocks": None}
    if release:
        m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", release)
        if m:
            out["l4t"] = "%s.%s" % (m.group(1), m.group(2))
            out["jetpack"] = JETPACK.get("%s.%s" % (m.group(1), m.group(2).split(".")[0]))
        else:
            out["l4t"] = release.splitlines()[0][:80]
    if (release or out["module"]) and root == "/":
        q = run(["nvpmodel", "-q"])
        out["nvpmodel"] = parse_nvpmodel(q) if q else "not readable (nvpmodel -q failed or is missing)"
        c = run(["jetson_clocks", "--show"])
        out["jetson_clocks"] = (c.splitlines()[0] if c else "not readable (jetson_clocks --show needs root)")
    return out


def gpu() -> Dict[str, Optional[object]]:
    """nvidia-smi when present (desktop GPUs); pycuda for the SM count (and on Jetson, where nvidia-smi is thin)."""
    out = {"name": None, "memory_mb": None, "sm_count": None, "compute_capability": None, "driver": None,
           "cuda": None, "source": None, "why_not": None}
    q = run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"])
    if q:
        parts = [p.strip() for p in q.splitlines()[0].split(",")]
        out.update(name=parts[0], driver=parts[-1], source="nvidia-smi")
        try:
            out["memory_mb"] = int(float(parts[1]))
        except (ValueError, IndexError):
            pass
        head = run(["nvidia-smi"]) or ""
        m = re.search(r"CUDA Version:\s*([\d.]+)", head)
        out["cuda"] = m.group(1) if m else None
    try:
        import pycuda.driver as cuda
        cuda.init()
        dev = cuda.Device(0)
        attr = cuda.device_attribute
        out.update(name=out["name"] or dev.name(), memory_mb=out["memory_mb"] or dev.total_memory() // 1048576,
                   sm_count=dev.get_attribute(attr.MULTIPROCESSOR_COUNT),
                   compute_capability="%d.%d" % dev.compute_capability(),
                   driver=out["driver"] or str(cuda.get_driver_version()), source=(out["source"] or "") + "+pycuda")
    except ImportError as exc:
        out["why_not"] = "pycuda not importable: %s" % str(exc).splitlines()[0][:120]
    except Exception as exc:  # noqa: BLE001 - pycuda present but no driver/GPU
        out["why_not"] = "pycuda: %s" % str(exc).splitlines()[0][:120]
    if out["name"] is None and not q:
        out["why_not"] = "no NVIDIA GPU found (no nvidia-smi; %s)" % (out["why_not"] or "no pycuda")
    return out


def collect() -> dict:
    return {"machine": platform.machine(), "system": platform.system(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "jetson": jetson(), "gpu": gpu()}
