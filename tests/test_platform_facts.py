"""``runtime/platform_facts``: a fake Jetson (files under ``root``, the board's tools as scripts on PATH) gives the
facts doctor, the benchmark header and the engine cache key show. Every tool output below is quoted in the
format the real tool prints, with its source named."""
import json
import os
import stat

import pytest

from rmpsam_edge.runtime import platform_facts as pf
from rmpsam_edge.runtime.tensorrt import cache

# /etc/nv_tegra_release of L4T 36.4.3 (first line; NVIDIA's format, as jetson_stats' get_nvidia_l4t splits it on
# ", " into "# R36 (release)" and "REVISION: 4.3")
RELEASE = ("# R{major} (release), REVISION: {rev}, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 "
           "01:49:37 UTC 2025\n# KERNEL_VARIANT: oot\nTARGET_USERSPACE_LIB_DIR=nvidia\n")
# `nvpmodel -q`: rbonghi/jetson_stats tests/nvpmodel, show_query (the emulator of the board's tool)
NVPMODEL_Q = "NVPM WARN: fan mode is not set!\nNV Power Mode: MAXN\n0\n"
# `jetson_clocks --show` with the clocks free (DVFS): rbonghi/jetson_stats tests/jetson_clocks, show_tx2
CLOCKS_FREE = """SOC family:tegra186  Machine:quill
Online CPUs: 0,3-5
CPU Cluster Switching: Disabled
cpu0: Online=1 Governor=schedutil MinFreq=345600 MaxFreq=2035200 CurrentFreq=2035200 IdleStates: C1=1 c7=1
cpu1: Online=0 Governor=schedutil MinFreq=345600 MaxFreq=2035200 CurrentFreq=1113600 IdleStates: C1=1 c6=1 c7=1
cpu2: Online=0 Governor=schedutil MinFreq=345600 MaxFreq=2035200 CurrentFreq=1113600 IdleStates: C1=1 c6=1 c7=1
cpu3: Online=1 Governor=schedutil MinFreq=345600 MaxFreq=2035200 CurrentFreq=1881600 IdleStates: C1=1 c7=1
cpu4: Online=1 Governor=schedutil MinFreq=345600 MaxFreq=2035200 CurrentFreq=2035200 IdleStates: C1=1 c7=1
cpu5: Online=1 Governor=schedutil MinFreq=345600 MaxFreq=2035200 CurrentFreq=2035200 IdleStates: C1=1 c7=1
GPU MinFreq=114750000 MaxFreq=1134750000 CurrentFreq=114750000
EMC MinFreq=40800000 MaxFreq=1600000000 CurrentFreq=1600000000 FreqOverride=0
Fan: speed=0
NV Power Mode: MAXP_CORE_ARM
"""
# after `sudo jetson_clocks`: the same lines with min = max = current, as the emulator's `--show` prints them
# once `jetson_clocks` has written the max into the min files (tests/jetson_clocks, write_to_freq_files)
CLOCKS_PINNED = """SOC family:tegra186  Machine:quill
Online CPUs: 0,3-5
cpu0: Online=1 Governor=schedutil MinFreq=2035200 MaxFreq=2035200 CurrentFreq=2035200 IdleStates: WFI=1 c7=1 C1=1
cpu1: Online=0 Governor=schedutil MinFreq=345600 MaxFreq=2035200 CurrentFreq=1113600 IdleStates: C1=1 c6=1 c7=1
cpu3: Online=1 Governor=schedutil MinFreq=2035200 MaxFreq=2035200 CurrentFreq=2035200 IdleStates: WFI=1 c7=1 C1=1
GPU MinFreq=1134750000 MaxFreq=1134750000 CurrentFreq=1134750000
EMC MinFreq=40800000 MaxFreq=1600000000 CurrentFreq=1600000000 FreqOverride=0
NV Power Mode: MAXP_CORE_ARM
"""
# one `tegrastats` line of an AGX Orin: rbonghi/jetson_stats tests/tegrastats, tegrastats_out "Orin" (random
# loads filled in); the real tool keeps printing one such line per interval
TEGRASTATS = ("01-03-2023 16:10:22 RAM 2257/30536MB (lfb 5392x4MB) SWAP 0/15268MB (cached 0MB) CPU [12%@729,3%@729,"
              "0%@729,5%@729,1%@729,0%@729,7%@729,2%@729,0%@729,4%@729,1%@729,0%@729] EMC_FREQ 0% GR3D_FREQ 37% "
              "CV0@-256C CPU@41.375C Tboard@29C SOC2@39C Tdiode@30.75C SOC0@38.906C CV1@-256C GPU@-256C tj@41.468C "
              "SOC1@38.843C CV2@-256C")
# /usr/local/cuda/version.json of the CUDA toolkit (CUDA >= 11.1 installs it; first entry shown)
CUDA_JSON = {"cuda": {"name": "CUDA SDK", "version": "12.6.68"}, "cuda_cudart": {"name": "CUDA Runtime (cudart)",
                                                                                 "version": "12.6.68"}}
# `nvcc --version` of JetPack 5.1.x (CUDA 11.4)
NVCC = ("nvcc: NVIDIA (R) Cuda compiler driver\nCopyright (c) 2005-2022 NVIDIA Corporation\nBuilt on "
        "Sun_Oct_23_22:16:07_PDT_2022\nCuda compilation tools, release 11.4, V11.4.315\nBuild "
        "cuda_11.4.r11.4/compiler.31964100_0\n")


def _tool(folder, name, text, rc=0, keep_running=False):
    path = os.path.join(str(folder), name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\necho \"$0 $*\" >> %s/calls.log\ncat <<'EOF'\n%sEOF\n" % (folder, text.rstrip("\n") + "\n"))
        f.write("while true; do sleep 1; done\n" if keep_running else "exit %d\n" % rc)
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)


def _board(tmp_path, monkeypatch, model=b"NVIDIA Jetson AGX Orin Developer Kit\x00", major=35, rev="6.1",
           clocks=CLOCKS_FREE, clocks_rc=0):
    root, bin_ = tmp_path / "root", tmp_path / "bin"
    (root / "etc").mkdir(parents=True)
    (root / "proc/device-tree").mkdir(parents=True)
    bin_.mkdir()
    if model is not None:
        (root / "proc/device-tree/model").write_bytes(model)
    if major is not None:
        (root / "etc/nv_tegra_release").write_text(RELEASE.format(major=major, rev=rev))
    _tool(bin_, "nvpmodel", NVPMODEL_Q)
    _tool(bin_, "jetson_clocks", clocks if clocks_rc == 0 else "Error: Please run as root", rc=clocks_rc)
    _tool(bin_, "tegrastats", TEGRASTATS, keep_running=True)
    monkeypatch.setenv("PATH", "%s%s/usr/bin%s/bin" % (bin_, os.pathsep, os.pathsep))
    return str(root), bin_


def test_a_jetson_from_its_files_and_tools(tmp_path, monkeypatch):
    root, bin_ = _board(tmp_path, monkeypatch)
    facts = pf.jetson(root)
    assert facts == {"l4t": "35.6.1", "jetpack": "5.1.5", "module": "NVIDIA Jetson AGX Orin Developer Kit",
                     "nvpmodel": "MAXN (mode 0)",
                     "jetson_clocks": "off (CPU, GPU below a fixed maximum; sudo jetson_clocks pins them)",
                     "ram_mb": 30536, "swap_mb": 15268}
    calls = (bin_ / "calls.log").read_text()
    assert "nvpmodel -q" in calls and "jetson_clocks --show" in calls and "tegrastats --interval" in calls


@pytest.mark.parametrize("major,rev,l4t,jetpack", [(35, "6.0", "35.6.0", "5.1.4"), (35, "6.1", "35.6.1", "5.1.5"),
                                                   (36, "4.3", "36.4.3", "6.2"), (36, "4.0", "36.4.0", "6.1"),
                                                   (38, "2.0", "38.2.0", "7.0"), (36, "9.9", "36.9.9", None)])
def test_jetpack_from_the_full_l4t_release(tmp_path, monkeypatch, major, rev, l4t, jetpack):
    root, _ = _board(tmp_path, monkeypatch, major=major, rev=rev)
    facts = pf.jetson(root)
    assert (facts["l4t"], facts["jetpack"]) == (l4t, jetpack)


def test_clocks_state_from_the_frequency_lines(tmp_path, monkeypatch):
    assert pf.parse_jetson_clocks(CLOCKS_PINNED) == "on"
    assert pf.parse_jetson_clocks(CLOCKS_FREE).startswith("off (CPU, GPU ")
    emc_low = CLOCKS_PINNED.replace("CurrentFreq=1600000000", "CurrentFreq=40800000")
    assert pf.parse_jetson_clocks(emc_low).startswith("off (EMC ")
    assert pf.parse_jetson_clocks("SOC family:tegra234  Machine:x\n").startswith("unknown")
    root, _ = _board(tmp_path, monkeypatch, clocks=CLOCKS_PINNED)
    assert pf.jetson(root)["jetson_clocks"] == "on"


def test_jetson_clocks_without_root_says_so(tmp_path, monkeypatch):
    root, _ = _board(tmp_path, monkeypatch, clocks_rc=1)
    assert pf.jetson(root)["jetson_clocks"].startswith("not readable (jetson_clocks --show needs root")


def test_not_a_jetson_runs_no_board_tool(tmp_path, monkeypatch):
    root, bin_ = _board(tmp_path, monkeypatch, model=None, major=None)
    assert set(pf.jetson(root).values()) == {None}
    assert not (bin_ / "calls.log").exists()
    root, bin_ = _board(tmp_path / "pi", monkeypatch, model=b"Raspberry Pi 4 Model B Rev 1.4\x00", major=None)
    assert pf.jetson(root)["l4t"] is None and not (bin_ / "calls.log").exists()


def test_cuda_version_and_driver_on_a_jetson_without_nvidia_smi(tmp_path, monkeypatch):
    from fakes_tensorrt import FakeGPU
    root, bin_ = _board(tmp_path, monkeypatch)
    fake = FakeGPU("8.5.2", memory_mb=62841, sm_count=16).install(monkeypatch)
    fake.cuda.get_driver_version = lambda: 11040     # cuDriverGetVersion of JetPack 5.1 (CUDA 11.4)
    _tool(bin_, "nvcc", NVCC)
    g = pf.gpu(root)
    assert (g["name"], g["memory_mb"], g["sm_count"], g["compute_capability"]) == ("Orin", 62841, 16, "8.7")
    assert (g["cuda"], g["driver"]) == ("11.4", "CUDA 11.4 driver")
    (tmp_path / "root/usr/local/cuda").mkdir(parents=True)
    (tmp_path / "root/usr/local/cuda/version.json").write_text(json.dumps(CUDA_JSON, indent=3))
    assert pf.gpu(root)["cuda"] == "12.6.68"
    os.remove(str(bin_ / "nvcc"))
    (tmp_path / "root/usr/local/cuda/version.json").unlink()
    assert pf.gpu(root)["cuda"] == "11.4"  # no toolkit found: the newest CUDA the driver runs


def test_pycuda_that_cannot_reach_the_driver(tmp_path, monkeypatch):
    from fakes_tensorrt import FakeGPU
    root, _ = _board(tmp_path, monkeypatch)
    fake = FakeGPU().install(monkeypatch)

    def init(flags=0):
        raise fake.cuda.Error("cuInit failed: no CUDA-capable device is detected")
    fake.cuda.init = init
    g = pf.gpu(root)
    assert g["name"] is None and "pycuda: cuInit failed: no CUDA-capable device" in g["why_not"]


def test_timing_cache_and_engine_key_tell_orin_modules_apart(tmp_path, monkeypatch):
    root, _ = _board(tmp_path, monkeypatch, model=b"NVIDIA Jetson AGX Orin Developer Kit\x00", major=36, rev="4.3")
    agx = pf.jetson_module(root)
    root2, _ = _board(tmp_path / "nano", monkeypatch, model=b"NVIDIA Jetson Orin Nano Developer Kit\x00",
                      major=36, rev="4.3")
    nano = pf.jetson_module(root2)
    assert agx != nano and agx.startswith("NVIDIA Jetson AGX Orin Developer Kit | # R36 (release), REVISION: 4.3")
    names = {cache.timing_cache_name("10.3.0", "Orin", m) for m in (agx, nano)}
    assert names == {"timing-trt10.3.0-orin-nvidia-jetson-agx-orin-developer-kit.cache",
                     "timing-trt10.3.0-orin-nvidia-jetson-orin-nano-developer-kit.cache"}
    assert cache.timing_cache_name("10.3.0", "NVIDIA GeForce RTX 4090") == "timing-trt10.3.0-nvidia-geforce-rtx-4090.cache"
    keys = [cache.make_key("10.3.0", "Orin", "8.7", "encoder", "x", "fp16", {}, module=m) for m in (agx, nano)]
    assert any("Jetson module" in d for d in cache.differences(keys[0], keys[1]))
