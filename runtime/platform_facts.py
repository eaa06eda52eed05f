"""Platform facts, read once for ``rmpsam-edge doctor``, the benchmark header and the TensorRT engine cache key:
Jetson (L4T/JetPack release, module, nvpmodel mode, jetson_clocks state, RAM/swap), GPU (name, memory, SM count,
driver, CUDA), each read where it can be and ``None`` with the reason where it cannot. Reads files under ``root``
(tests point it at a fake board) and runs the board's tools (nvpmodel, jetson_clocks, tegrastats, nvidia-smi,
nvcc) from PATH with short timeouts; no torch.
"""
import json
import os
import platform
import re
import shutil
import subprocess
import threading
from typing import Dict, Optional

TEGRA_RELEASE = "/etc/nv_tegra_release"
DEVICE_TREE_MODEL = "/proc/device-tree/model"
CUDA_VERSION_JSON = "/usr/local/cuda/version.json"
# Full L4T release -> JetPack, as jetson_stats keys it (rbonghi/jetson_stats, jtop/core/jetson_variables.py,
# NVIDIA_JETPACK; NVIDIA's JetPack archive). The L4T release is the fact, this only names it.
JETPACK = {"35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.0": "5.1.1 PRE", "35.3.1": "5.1.1", "35.4.1": "5.1.2",
           "35.5.0": "5.1.3", "35.6.0": "5.1.4", "35.6.1": "5.1.5", "35.6.2": "5.1.5", "35.6.3": "5.1.5",
           "35.6.4": "5.1.6", "36.0.0": "6.0 EA", "36.2.0": "6.0 DP", "36.3.0": "6.0", "36.4.0": "6.1",
           "36.4.2": "6.1 (rev1)", "36.4.3": "6.2", "36.4.4": "6.2.1", "36.4.7": "6.2.1", "36.5.0": "6.2.2",
           "38.2.0": "7.0", "38.2.1": "7.0", "38.2.2": "7.0", "38.4.0": "7.1", "39.0.0": "7.2 EA", "39.2.0": "7.2 GA"}

# JetPack's OpenCV (built with GStreamer: csi:// cameras) is NVIDIA's apt package, not the pip wheel, not Ubuntu's
OPENCV_JETSON = ("sudo apt install nvidia-opencv (JetPack's OpenCV with GStreamer, Python module from "
                 "libopencv-python; not Ubuntu's python3-opencv) and a venv made with --system-site-packages")
OPENCV_RESTORE = "pip uninstall -y opencv-python opencv-python-headless opencv-contrib-python; " + OPENCV_JETSON
NO_OPENCV = ("OpenCV (cv2) is not importable: on a desktop pip install opencv-python-headless (or the ort / "
             "openvino extra); on a Jetson JetPack provides it: " + OPENCV_JETSON + " (docs/jetson.md)")


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


def first_line(cmd, timeout: float = 5.0) -> Optional[str]:
    """The first output line of a command that keeps printing (tegrastats), then the command is stopped."""
    if not shutil.which(cmd[0]):
        return None
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError:
        return None
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    try:
        line = p.stdout.readline().decode("utf-8", "replace").strip()
    finally:
        timer.cancel()
        p.kill()
        p.wait()
        p.stdout.close()
    return line or None


def parse_nvpmodel(text: str) -> str:
    """``nvpmodel -q`` output ("NV Power Mode: MAXN\\n0") -> "MAXN (mode 0)"."""
    m = re.search(r"NV Power Mode:[ \t]*(\S+)[ \t]*(?:\r?\n\s*(\d+))?", text)
    if not m:
        return text.strip().splitlines()[0] if text.strip() else "unknown"
    return "%s (mode %s)" % (m.group(1), m.group(2)) if m.group(2) else m.group(1)


_FREQ = re.compile(r"^(?P<name>[A-Za-z0-9_]+):? .*MinFreq=(?P<min>\d+) MaxFreq=(?P<max>\d+) "
                   r"CurrentFreq=(?P<cur>\d+)")


def parse_jetson_clocks(text: str) -> str:
    """``jetson_clocks --show`` -> 'on' when the clocks are pinned at their maximum, else 'off (...)'.

    As jetson_stats decides it (jtop/core/jetson_clocks.py, jetson_clocks_alive): every online CPU and the GPU
    run with MinFreq == MaxFreq, EMC and the other engines at CurrentFreq == MaxFreq."""
    loose, seen = [], 0
    for line in text.splitlines():
        m = _FREQ.match(line.strip())
        if not m or "Online=0" in line:
            continue
        seen += 1
        name, lo, hi, cur = m.group("name"), int(m.group("min")), int(m.group("max")), int(m.group("cur"))
        group = "CPU" if name.lower().startswith("cpu") else name
        pinned = lo == hi if group in ("CPU", "GPU") else cur == hi
        if not pinned and group not in loose:
            loose.append(group)
    if not seen:
        return "unknown (no frequency lines in jetson_clocks --show)"
    return "on" if not loose else "off (%s below a fixed maximum; sudo jetson_clocks pins them)" % ", ".join(loose)


def parse_tegrastats(line: str) -> Dict[str, Optional[int]]:
    """One tegrastats line ('RAM 2257/30536MB (lfb 5392x4MB) SWAP 0/15268MB ...') -> RAM and swap totals, MB."""
    ram, swap = re.search(r"\bRAM (\d+)/(\d+)MB", line), re.search(r"\bSWAP (\d+)/(\d+)MB", line)
    return {"ram_mb": int(ram.group(2)) if ram else None, "swap_mb": int(swap.group(2)) if swap else None}


def l4t_release(text: str) -> Optional[str]:
    """'# R35 (release), REVISION: 6.1, GCID: ...' -> '35.6.1' (a two-part revision gets '.0')."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?", text)
    return "%s.%s.%s" % (m.group(1), m.group(2), m.group(3) or "0") if m else None


def _files(root: str):
    return (os.path.join(root, DEVICE_TREE_MODEL.lstrip("/")), os.path.join(root, TEGRA_RELEASE.lstrip("/")))


def jetson_module(root: str = "/") -> str:
    """The engine cache key's module part: 'NVIDIA Jetson AGX Orin Developer Kit | # R36 (release), REVISION:
    4.0' on a Jetson (every Orin module reports GPU 'Orin', sm 8.7), '' elsewhere."""
    model, release = (read_text(p) for p in _files(root))
    parts = [model.splitlines()[0].strip() if model else "",
             ",".join(release.splitlines()[0].split(",")[:2]).strip() if release else ""]  # not the build date
    return " | ".join(p for p in parts if p)


def module_name(root: str = "/") -> str:
    """The device-tree model alone ('NVIDIA Jetson Orin Nano Developer Kit'), '' when there is none."""
    model = read_text(_files(root)[0])
    return model.splitlines()[0].strip() if model else ""


def jetson(root: str = "/") -> Dict[str, Optional[object]]:
    """Files from ``root``, the board's tools from PATH. All None off a Jetson."""
    model_path, release_path = _files(root)
    release, model = read_text(release_path), read_text(model_path)
    out = {"l4t": None, "jetpack": None, "module": model, "nvpmodel": None, "jetson_clocks": None,
           "ram_mb": None, "swap_mb": None}
    if not release and not (model and re.search(r"jetson|orin|thor|xavier", model, re.I)):
        return out
    if release:
        out["l4t"] = l4t_release(release) or release.splitlines()[0][:80]
        out["jetpack"] = JETPACK.get(out["l4t"])
    q = run(["nvpmodel", "-q"])
    out["nvpmodel"] = parse_nvpmodel(q) if q else "not readable (nvpmodel -q failed or is missing)"
    c = run(["jetson_clocks", "--show"])
    out["jetson_clocks"] = parse_jetson_clocks(c) if c else "not readable (jetson_clocks --show needs root: sudo)"
    line = first_line(["tegrastats", "--interval", "100"])
    if line:
        out.update(parse_tegrastats(line))
    return out


def cuda_toolkit(root: str = "/") -> Optional[str]:
    """The CUDA toolkit version: ``/usr/local/cuda/version.json`` (CUDA >= 11.1), else ``nvcc --version``."""
    text = read_text(os.path.join(root, CUDA_VERSION_JSON.lstrip("/")))
    if text:
        try:
            return str(json.loads(text)["cuda"]["version"])
        except (ValueError, KeyError, TypeError):
            pass
    m = re.search(r"release ([\d.]+)", run(["nvcc", "--version"]) or "")
    return m.group(1) if m else None


def driver_api_version(value: int) -> str:
    """cuDriverGetVersion's integer (12060) -> '12.6' (the newest CUDA the driver runs)."""
    return "%d.%d" % (int(value) // 1000, int(value) % 1000 // 10)


def gpu(root: str = "/") -> Dict[str, Optional[object]]:
    """nvidia-smi when present (desktop GPUs, JetPack 6+); pycuda for the SM count (and on JetPack 5, which has no
    nvidia-smi). ``driver``: nvidia-smi's driver version, else 'CUDA x.y driver' from the driver API;
    ``cuda``: the toolkit's version, else the newest CUDA the driver runs."""
    out = {"name": None, "memory_mb": None, "sm_count": None, "compute_capability": None, "driver": None,
           "cuda": cuda_toolkit(root), "source": None, "why_not": None}
    q = run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"])
    if q:
        parts = [p.strip() for p in q.splitlines()[0].split(",")]
        out.update(name=parts[0], driver=parts[-1], source="nvidia-smi")
        try:
            out["memory_mb"] = int(float(parts[1]))
        except (ValueError, IndexError):
            pass
        m = re.search(r"CUDA Version:\s*([\d.]+)", run(["nvidia-smi"]) or "")
        out["cuda"] = out["cuda"] or (m.group(1) if m else None)
    try:
        import pycuda.driver as cuda
        cuda.init()
        dev = cuda.Device(0)
        attr = cuda.device_attribute
        api = driver_api_version(cuda.get_driver_version())
        out.update(name=out["name"] or dev.name(), memory_mb=out["memory_mb"] or dev.total_memory() // 1048576,
                   sm_count=dev.get_attribute(attr.MULTIPROCESSOR_COUNT),
                   compute_capability="%d.%d" % dev.compute_capability(),
                   driver=out["driver"] or "CUDA %s driver" % api, cuda=out["cuda"] or api,
                   source=(out["source"] or "") + "+pycuda")
    except ImportError as exc:
        out["why_not"] = "pycuda not importable: %s" % str(exc).splitlines()[0][:120]
    except Exception as exc:  # noqa: BLE001 - pycuda present but no driver/GPU
        out["why_not"] = "pycuda: %s" % str(exc).splitlines()[0][:120]
    if out["name"] is None and not q:
        out["why_not"] = "no NVIDIA GPU found (no nvidia-smi; %s)" % (out["why_not"] or "no pycuda")
    return out


def collect(root: str = "/") -> dict:
    return {"machine": platform.machine(), "system": platform.system(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "jetson": jetson(root), "gpu": gpu(root)}
