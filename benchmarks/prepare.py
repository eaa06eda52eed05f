"""Which bundle each benchmark row runs, and making the missing ones (export / quantize as subprocesses, so their
memory and threads do not leak into the measurements; their output streams to stderr as progress).

    plan_rows(backends, precisions) -> [(backend, precision, source)]  source: "torch" | "fp32" | "fp16" |
                                                                        "int8_ort" | "int8_tensorrt" | "int8_openvino" |
                                                                        "bf16_openvino" | "int8_bf16_openvino" |
                                                                        None (n/a)
    ensure_base(...)    -> FP32 bundle path (given, found in the work folder, or exported there)
    ensure_derived(...) -> (bundle path or None, failure status or None)

Derived bundles live in the work folder (default ``<model>.bench/``) as ``fp16``, ``int8_ort``, ``int8_tensorrt``,
``int8_openvino``, ``bf16_openvino``, ``int8_bf16_openvino`` (bf16 rows: OpenVINO on CPUs with AVX512-BF16 or
AMX; elsewhere their quantize step fails with its one line and the row says so); one made from a different FP32 bundle (its manifest sha256 differs) is rebuilt.
"""
import os
import shlex
import subprocess
import sys
from typing import List, Optional, Tuple

from rmpsam_edge.errors import UserError

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")  # runtime.backends names (+ torch, the reference)
PRECISIONS = ("fp32", "fp16", "int8", "bf16", "int8+bf16")
# (backend, precision) -> which bundle runs it. TensorRT builds FP16 from the FP32 ONNX (weak typing + pins on 8.x,
# the typed FP16 graph it derives on 10+) and INT8 from the symmetric Q/DQ bundle of `quantize --target tensorrt`.
SOURCES = {
    ("torch", "fp32"): "torch",
    ("onnxruntime", "fp32"): "fp32", ("onnxruntime", "fp16"): "fp16", ("onnxruntime", "int8"): "int8_ort",
    ("openvino", "fp32"): "fp32", ("openvino", "fp16"): "fp16", ("openvino", "int8"): "int8_openvino",
    ("openvino", "bf16"): "bf16_openvino", ("openvino", "int8+bf16"): "int8_bf16_openvino",
    ("tensorrt", "fp32"): "fp32", ("tensorrt", "fp16"): "fp32", ("tensorrt", "int8"): "int8_tensorrt",
}
QUANTIZE = {"fp16": ("fp16", "onnxruntime"), "int8_ort": ("int8", "onnxruntime"),
            "int8_tensorrt": ("int8", "onnxruntime", "--target", "tensorrt"), "int8_openvino": ("int8", "openvino"),
            "bf16_openvino": ("bf16", "openvino"), "int8_bf16_openvino": ("int8", "openvino", "--rest", "bf16")}


def canonical(name: str) -> str:
    """A backend name or alias (``ort``, ``ov``, ``trt``, ``pytorch``) -> its runtime.backends name; anything else
    lower-cased."""
    from rmpsam_edge.runtime import backends as registry
    row = registry.find(name)
    return row.name if row else {"pytorch": "torch"}.get(name.lower(), name.lower())


def parse_list(text: str, allowed, what: str) -> List[str]:
    out = []
    for item in str(text).replace(" ", "").split(","):
        if not item:
            continue
        item = canonical(item)
        if item not in allowed:
            raise UserError("unknown %s %r; use a comma-separated list of %s" % (what, item, ", ".join(allowed)))
        if item not in out:
            out.append(item)
    if not out:
        raise UserError("empty --%s list; use e.g. %s" % (what + "s", ",".join(allowed)))
    return out


def plan_rows(backends, precisions) -> List[Tuple[str, str, Optional[str]]]:
    return [(b, p, SOURCES.get((b, p))) for b in backends for p in precisions]


def _run(cmd: List[str], log: List[str]) -> Tuple[bool, str]:
    """Run one rmpsam-edge command, its output to stderr. -> (ok, last output line)."""
    shown = "rmpsam-edge " + " ".join(shlex.quote(c) for c in cmd)
    log.append(shown)
    sys.stderr.write("benchmark: running %s\n" % shown)
    sys.stderr.flush()
    proc = subprocess.Popen([sys.executable, "-m", "rmpsam_edge.cli"] + cmd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    last = ""
    for raw in iter(proc.stdout.readline, b""):
        line = raw.decode("utf-8", "replace")
        sys.stderr.write("  | " + line)
        if line.strip():
            last = line.strip()
    proc.wait()
    return proc.returncode == 0, last


def _manifest(path: str) -> Optional[dict]:
    import json
    try:
        with open(os.path.join(path, "manifest.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def ensure_base(model: Optional[str], work: str, weights_args: List[str], imgsz, log: List[str]) -> str:
    """The FP32 bundle: ``model`` when given; else ``<work>/fp32`` (exported there when absent, at ``imgsz``:
    pixels, 'official', or None for the export's default)."""
    if model:
        if _manifest(model) is None:
            raise UserError("--model %s is not a model bundle (no manifest.json); export one with rmpsam-edge "
                            "export, or leave --model out to export into %s" % (model, work))
        return model
    path = os.path.join(work, "fp32")
    if _manifest(path) is not None:
        sys.stderr.write("benchmark: using the bundle exported earlier: %s\n" % path)
        return path
    cmd = ["export", "--out", path] + weights_args + (["--imgsz", str(imgsz)] if imgsz else [])
    ok, last = _run(cmd, log)
    if not ok:
        raise UserError("export failed (%s); run the command above to see why" % last)
    return path


def ensure_derived(base: str, source: str, work: str, threads: Optional[int], log: List[str]) -> Tuple[
        Optional[str], Optional[str]]:
    """A quantized bundle made from ``base`` (reused when it is already there and made from this base)."""
    from rmpsam_edge.runtime.bundle import MANIFEST, sha256_file
    path = os.path.join(work, source)
    base_sha = sha256_file(os.path.join(base, MANIFEST))
    m = _manifest(path)
    if m is not None and (m.get("quantization") or {}).get("source_manifest_sha256") == base_sha:
        sys.stderr.write("benchmark: using %s (made earlier from this bundle)\n" % path)
        return path, None
    precision, backend = QUANTIZE[source][:2]
    cmd = ["quantize", "--model", base, "--precision", precision, "--backend", backend] + list(
        QUANTIZE[source][2:]) + ["--out", path,
           "--runs", "3"] + (["--force"] if m is not None else []) + (["--threads", str(threads)] if threads else [])
    ok, last = _run(cmd, log)
    if not ok:
        return None, "quantize failed: %s" % last
    return path, None
