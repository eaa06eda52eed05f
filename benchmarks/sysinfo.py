"""The benchmark header: exact command, CPU model, cores, OS, Python, package versions, threads, GPU, and on a
Jetson the power mode (nvpmodel), L4T/JetPack and TensorRT versions. Published numbers are not reproducible
without these (EfficientViT #52, SAM3-TensorRT #25).

    collect(command=None, threads=None, root="/") -> dict        (every value a str, int or None)
    header_lines(info) -> list of "key: value" lines
``root`` lets tests point the /proc and /etc reads at a fake tree. Python 3.8.
"""
import datetime
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
from typing import Dict, List, Optional

from rmpsam_edge.runtime import cpu_features, platform_facts

PACKAGES = ("rmpsam_edge", "numpy", "opencv-python-headless", "opencv-python", "onnx", "onnxruntime",
            "onnxruntime-gpu", "openvino", "nncf", "torch", "tensorrt", "matplotlib")
THREAD_VARS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


_read, _run = platform_facts.read_text, platform_facts.run


def package_versions(names=PACKAGES) -> Dict[str, str]:
    """Installed distribution versions (only those present)."""
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8
        return {}
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except Exception:  # noqa: BLE001 - PackageNotFoundError and broken metadata alike
            continue
    return found


def cpu_model(root: str = "/") -> str:
    text = _read(os.path.join(root, "proc/cpuinfo")) or ""
    for key in ("model name", "Hardware", "Processor", "cpu model"):
        m = re.search(r"^%s\s*:\s*(.+)$" % key, text, re.M)
        if m and m.group(1).strip():
            return m.group(1).strip()
    return platform.processor() or platform.machine() or "unknown"


def jetson_info(root: str = "/") -> Dict[str, Optional[str]]:
    """{} when not a Jetson. Otherwise: model, l4t (from /etc/nv_tegra_release), jetpack (nvidia-jetpack
    package), power_mode (nvpmodel -q), tensorrt (python module or libnvinfer package)."""
    facts = platform_facts.jetson(root)
    model = facts["module"]
    if not facts["l4t"] and not (model and ("jetson" in model.lower() or "orin" in model.lower())):
        return {}
    info = {"model": model, "l4t": facts["l4t"], "jetpack": None, "power_mode": facts["nvpmodel"]}
    if root == "/":
        info["jetpack"] = _run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"]) or facts["jetpack"]
        if not package_versions(("tensorrt",)):
            info["tensorrt_deb"] = _run(["dpkg-query", "-W", "-f=${Version}", "libnvinfer8"]) or \
                _run(["dpkg-query", "-W", "-f=${Version}", "libnvinfer10"])
    return info


def gpu_info() -> Optional[str]:
    """'name, driver, memory' per NVIDIA GPU (nvidia-smi), or None."""
    return _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])


def memory_total_gb(root: str = "/") -> Optional[float]:
    text = _read(os.path.join(root, "proc/meminfo")) or ""
    m = re.search(r"^MemTotal:\s*(\d+)\s*kB", text, re.M)
    return round(int(m.group(1)) / 1048576.0, 1) if m else None


def collect(command: Optional[List[str]] = None, threads: Optional[int] = None, root: str = "/") -> dict:
    """Everything the header shows. ``command``: argv of the run (default: this process's argv)."""
    argv = list(sys.argv if command is None else command)
    if argv and os.path.basename(argv[0]) in ("rmpsam-edge", "__main__.py", "cli.py"):
        argv[0] = "rmpsam-edge"
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = os.cpu_count()
    info = {
        "command": " ".join(shlex.quote(a) for a in argv),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(root),
        "isa": _isa(root),
        "cores_logical": os.cpu_count(),
        "cores_usable": affinity,
        "memory_gb": memory_total_gb(root),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "threads": threads,
        "thread_env": {k: os.environ[k] for k in THREAD_VARS if k in os.environ},
        "gpu": gpu_info(),
        "jetson": jetson_info(root),
    }
    return info


def _isa(root: str) -> Optional[List[str]]:
    """What the CPU paths can use (cpu_features.isa), None when /proc/cpuinfo lists no flags."""
    cpu = cpu_features.read(os.path.join(root, "proc/cpuinfo"))
    return cpu_features.isa(cpu) if cpu.arch else None


def isa_text(info: dict) -> str:
    """'avx512 avx2 vnni bf16' (what the CPU paths can use, from /proc/cpuinfo), 'unknown' for a header without."""
    isa = info.get("isa")
    return " ".join(isa) if isa else ("none of avx512/avx2/vnni/bf16 (neon/dotprod on ARM)" if isa == [] else
                                      "unknown (no CPU flags readable)")


def header_lines(info: dict) -> List[str]:
    """Human-readable header, one 'key: value' per line (the table's preamble in the terminal and .md)."""
    pk = info.get("packages") or {}
    lines = [
        "command: %s" % info.get("command"),
        "date: %s" % info.get("date_utc"),
        "cpu: %s (%s logical cores, %s usable), %s GB RAM" % (info.get("cpu"), info.get("cores_logical"),
                                                             info.get("cores_usable"), info.get("memory_gb")),
        "isa: %s" % isa_text(info),
        "os: %s, python %s" % (info.get("os"), info.get("python")),
        "packages: %s" % (", ".join("%s %s" % kv for kv in sorted(pk.items())) or "none found"),
        "threads: %s%s" % (info.get("threads") if info.get("threads") else "backend default",
                           "".join(", %s=%s" % kv for kv in sorted((info.get("thread_env") or {}).items()))),
        "gpu: %s" % (info.get("gpu") or "none"),
    ]
    j = info.get("jetson") or {}
    if j:
        lines.append("jetson: %s, L4T %s, JetPack %s, power mode %s, TensorRT %s"
                     % (j.get("model"), j.get("l4t"), j.get("jetpack") or "unknown", j.get("power_mode"),
                        pk.get("tensorrt") or j.get("tensorrt_deb") or "unknown"))
    return lines
