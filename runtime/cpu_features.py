"""The one reader of the CPU's features (``/proc/cpuinfo``): x86 ``flags`` or ARM ``Features``, the model name.
INT8 picks its recipe from it (quantize), OpenVINO's bf16 check and NNCF's overflow fix read it, ``auto``'s
placement cache is keyed by it and the benchmark names the ISA from it. ``path`` points it at a fake file in
tests. No torch, Python 3.8.
"""
import hashlib
from typing import FrozenSet, List, NamedTuple, Optional

CPUINFO = "/proc/cpuinfo"
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # x86: 8-bit dot products without saturation
BF16_FLAGS = ("avx512_bf16", "amx_bf16")              # x86: native bf16 math
DOTPROD_FLAG = "asimddp"                               # ARM: SDOT/UDOT


class CpuInfo(NamedTuple):
    arch: Optional[str]      # 'x86' (a ``flags`` line), 'arm' (a ``Features`` line) or None (unreadable / neither)
    flags: FrozenSet[str]
    model: str               # 'model name' (x86), else 'Hardware' / 'CPU part' (ARM), '' when absent


def read(path: str = CPUINFO) -> CpuInfo:
    """The first CPU's features; ``CpuInfo(None, frozenset(), '')`` when the file cannot be read."""
    arch, flags, model = None, frozenset(), ""  # type: Optional[str], FrozenSet[str], str
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except (OSError, IOError, UnicodeDecodeError):
        return CpuInfo(None, frozenset(), "")
    for line in lines:
        key, _, value = line.partition(":")
        key = key.strip()
        if arch is None and key in ("flags", "Features"):
            arch, flags = ("x86" if key == "flags" else "arm"), frozenset(value.split())
        elif not model and key in ("model name", "Hardware", "CPU part"):
            model = value.strip()
    return CpuInfo(arch, flags, model)


def has_vnni(info: CpuInfo) -> bool:
    return info.arch == "x86" and any(f in info.flags for f in VNNI_FLAGS)


def has_dotprod(info: CpuInfo) -> bool:
    return info.arch == "arm" and DOTPROD_FLAG in info.flags


def isa(info: CpuInfo) -> List[str]:
    """What the CPU paths use, for a table header: x86 ['avx512', 'avx2', 'vnni', 'bf16'] (those present),
    ARM ['neon', 'dotprod', 'bf16'] (those present), [] when unknown."""
    if info.arch == "x86":
        have = [("avx512", "avx512f" in info.flags), ("avx2", "avx2" in info.flags), ("vnni", has_vnni(info)),
                ("bf16", any(f in info.flags for f in BF16_FLAGS))]
    elif info.arch == "arm":
        have = [("neon", "asimd" in info.flags), ("dotprod", has_dotprod(info)), ("bf16", "bf16" in info.flags)]
    else:
        have = []
    return [name for name, ok in have if ok]


def fingerprint(info: CpuInfo) -> str:
    """A short hash of the model name and the flags: equal on machines of the same CPU."""
    text = "%s|%s|%s" % (info.arch, info.model, " ".join(sorted(info.flags)))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
