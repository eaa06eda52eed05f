"""Device and page-locked bytes the TensorRT runner allocates for its buffers, from the allocation log of the fake
TensorRT + pycuda (tests/fakes_tensorrt.py; no GPU needed: buffer sizes follow from the engines' profiles and the
graphs' output shapes, which the fake computes with ONNX Runtime). Activation memory is counted as areas: its
bytes come from TensorRT's tactics (``device_memory_size``), which only a GPU can report.

    python benchmarks/tensorrt_memory.py --model BUNDLE --label after [--checkout DIR]

runs the runner of the checkout whose Python runs it (``--checkout``: where its tests/fakes_tensorrt.py is) at
max sizes 512, 640 and 1024 (default profile otherwise: the bundle's vocabulary, 64 prompts) and stores the label's
rows in benchmarks/results/tensorrt_memory.json; with rows for 'before' and 'after' it also writes the .md table.
Not a ``rmpsam-edge benchmark`` preset: it runs the fake TensorRT of a source checkout's tests/ (no GPU), and the
committed file's 'before' rows come from an older checkout.
"""
import argparse
import json
import os
import sys
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "tensorrt_memory")
SIZES = (512, 640, 1024)


def allocations(bundle: str, size: int, checkout: str) -> dict:
    sys.path.insert(0, os.path.join(checkout, "tests"))
    from fakes_tensorrt import FakeGPU
    from rmpsam_edge.runtime.bundle import Bundle
    from rmpsam_edge.runtime.tensorrt import create_runner, engines, profiles
    fake = FakeGPU("10.3.0", memory_mb=1 << 20)
    pkg = types.ModuleType("pycuda")
    pkg.driver = fake.cuda
    sys.modules.update({"tensorrt": fake.trt, "pycuda": pkg, "pycuda.driver": fake.cuda})
    ranges = dict(engines.default_ranges(Bundle.open(bundle)))
    hw = profiles.make_ranges((size, size))
    ranges.update({k: hw[k] for k in ("H", "W", "h", "w")})
    runner = create_runner(bundle, precision="fp32", ranges=ranges)
    runner.activate()
    try:
        calls = list(fake.calls)
    finally:
        runner.deactivate()
    shared = [c[2] for c in calls if c[0] == "device_memory"][:1]  # the one shared activation area (after)
    contexts = [c for c in calls if c[0] == "create_execution_context"]
    own = [c for c in contexts if len(c) == 1 or c[1] == "STATIC"]
    pinned = sum(int(np.prod(c[1])) * np.dtype(c[2]).itemsize for c in calls if c[0] == "pagelocked_empty")
    return {"max_size": size, "device_buffer_bytes": sum(c[1] for c in calls if c[0] == "mem_alloc") - sum(shared),
            "pinned_host_bytes": pinned, "engines": len(contexts),
            "activation_areas": len(own) + len(shared), "class_embed_max": list(ranges["K"][2:]) + list(ranges["P"][2:])}


def write_md(data: dict) -> None:
    rows = {(label, r["max_size"]): r for label, rs in data["rows"].items() for r in rs}
    lines = ["Command: `%s`" % data["command"], "",
             "| max size | device buffers before | after | page-locked host before | after | activation areas "
             "before | after |", "|---|---|---|---|---|---|---|"]
    mib = lambda b: "%.1f MiB" % (b / 1048576.0)  # noqa: E731
    for size in SIZES:
        b, a = rows.get(("before", size)), rows.get(("after", size))
        if b and a:
            lines.append("| %d | %s | %s | %s | %s | %d | %d |" % (
                size, mib(b["device_buffer_bytes"]), mib(a["device_buffer_bytes"]), mib(b["pinned_host_bytes"]),
                mib(a["pinned_host_bytes"]), b["activation_areas"], a["activation_areas"]))
    with open(RESULTS + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--checkout", default=os.path.dirname(HERE))
    args = p.parse_args(argv)
    data = {"rows": {}}
    if os.path.isfile(RESULTS + ".json"):
        with open(RESULTS + ".json") as f:
            data = json.load(f)
    data["command"] = ("rmpsam-edge export --imgsz 512 --out BUNDLE; python benchmarks/tensorrt_memory.py --model "
                       "BUNDLE --label after; OLD/.venv/bin/python benchmarks/tensorrt_memory.py --model BUNDLE "
                       "--label before --checkout OLD (OLD: a checkout of the runner before the shared buffers)")
    data["rows"][args.label] = [allocations(args.model, s, args.checkout) for s in SIZES]
    with open(RESULTS + ".json", "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    write_md(data)
    print(json.dumps(data["rows"][args.label]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
