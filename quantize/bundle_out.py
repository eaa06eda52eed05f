"""Writing the quantized bundle: same manifest format as the FP32 bundle, precision recorded, new files hashed.

The bundle is assembled in a temporary folder next to ``--out`` and moved into place only when complete, so a
failed run never leaves a half-written bundle and never touches an existing one (``--force`` overwrites it, and
only after the new one is complete).

Manifest changes against the source bundle:
    "precision": "int8" | "fp16"                         (top level: what the runtime reports)
    "graphs"[name]: {"file", "sha256", "precision", ...}  for every graph; an OpenVINO IR graph also gets
        "format": "openvino-ir", "weights": {"file": "<name>.bin", "sha256": ...}
    "quantization": {"tool", "precision", "backend", "source_bundle", "source_manifest_sha256",
                     "calibration": {...}, "graphs": {name: {"precision", "kept_fp32": [...]}}}
    "provenance": the source's steps + {"tool": "rmpsam-edge quantize", "argv", "created", "versions"}
"""
import os
import shutil
from typing import Dict, Optional

from rmpsam_edge.errors import UserError

ALREADY_QUANTIZED = "%s is already a %s bundle; quantize the FP32 bundle it was made from (%s)"


def source_precision(manifest: dict) -> str:
    return str(manifest.get("precision", "fp32")).lower()


def check_source(bundle) -> None:
    prec = source_precision(bundle.manifest)
    if prec != "fp32" or bundle.manifest.get("quantization"):
        src = (bundle.manifest.get("quantization") or {}).get("source_bundle", "the original export")
        raise UserError(ALREADY_QUANTIZED % (bundle.path, prec.upper(), src))


def check_output(out: str, force: bool, source_path: str) -> None:
    if os.path.abspath(out) == os.path.abspath(source_path):
        raise UserError("--out %s is the input bundle; write the quantized bundle to a new folder" % out)
    if os.path.exists(out):
        if not force:
            raise UserError("%s already exists; pass --force to overwrite it or choose another --out" % out)
        if not os.path.isdir(out):
            raise UserError("%s exists and is not a folder; remove it or choose another --out" % out)
        if os.listdir(out) and not os.path.isfile(os.path.join(out, "manifest.json")):
            raise UserError("%s exists and is not a model bundle; refusing to overwrite it even with --force "
                            "(choose another --out)" % out)


def copy_unchanged(src_bundle, staging: str, skip_graphs) -> None:
    """Copy every file the source manifest references (graphs not in ``skip_graphs``, vocabulary)."""
    m = src_bundle.manifest
    for name, entry in m["graphs"].items():
        if name in skip_graphs:
            continue
        p = src_bundle.file_path(entry["file"], entry.get("sha256"))
        shutil.copyfile(p, os.path.join(staging, entry["file"]))
    voc = m.get("vocabulary")
    if voc and voc.get("file"):
        p = src_bundle.file_path(voc["file"], voc.get("sha256"))
        shutil.copyfile(p, os.path.join(staging, voc["file"]))


def graph_entry(old: dict, staging: str, file: str, precision: str, weights: Optional[str] = None) -> dict:
    from rmpsam_edge.runtime.bundle import sha256_file
    entry = dict(old)
    entry.update({"file": file, "sha256": sha256_file(os.path.join(staging, file)), "precision": precision})
    entry.pop("format", None)
    entry.pop("weights", None)
    entry["bytes"] = os.path.getsize(os.path.join(staging, file))
    for key in ("nodes", "ops", "opset", "op_forms"):
        entry.pop(key, None)
    if file.endswith(".onnx"):
        import onnx
        from rmpsam_edge.runtime.tensorrt.importers import graph_record
        entry.update(graph_record(onnx.load(os.path.join(staging, file), load_external_data=False)))
    if weights is not None:
        entry["format"] = "openvino-ir"
        entry["weights"] = {"file": weights, "sha256": sha256_file(os.path.join(staging, weights))}
    return entry


def write_manifest(src_bundle, staging: str, entries: Dict[str, dict], precision: str, info: dict,
                   argv=None) -> dict:
    """The quantized bundle's manifest (written into ``staging``), with a provenance step for ``argv``."""
    from rmpsam_edge.media import repo_path
    from rmpsam_edge.runtime.bundle import MANIFEST, add_step, sha256_file, write_manifest as _write
    m = dict(src_bundle.manifest)
    graphs = {}
    for name, entry in m["graphs"].items():
        graphs[name] = entries.get(name) or dict(entry, precision="fp32")
    m["graphs"] = graphs
    m["precision"] = precision
    info = dict(info)
    info["source_bundle"] = repo_path(os.path.abspath(src_bundle.path))
    info["source_manifest_sha256"] = sha256_file(os.path.join(src_bundle.path, MANIFEST))
    m["quantization"] = info
    add_step(m, "rmpsam-edge quantize", argv, modules=("onnx", "onnxruntime", "openvino", "nncf"))
    _write(staging, m)
    return m
