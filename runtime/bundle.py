"""A model bundle on disk: read and validate ``manifest.json``, check each file's sha256 before use, build the
``ModelSpec`` (no torch, Python 3.8, numpy 1.x).

A bundle is a folder::

    manifest.json             format, version, variant, input policy, vocabulary names, graphs + sha256, ...
    encoder.onnx              image (B,3,H,W) -> features (B,256,H/4,W/4)
    prompt_decoder.onnx       features (1,256,h,w), boxes (Np,4) -> mask_logits (Np,h,w), iou (Np,1)
    prompt_decoder_many.onnx  (optional) the same with projected keys/values, used when Np > many_prompts_from - 1
    object_decoder.onnx       features, class_embed (K,P,768) -> class_logits, mask_logits, query_embed
    vocab.npy                 (optional) class embeddings (K,P,768) float32; names in the manifest

Every problem is one ``UserError`` line naming the file and the fix.
"""
import datetime
import hashlib
import json
import os
import platform
import re
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from rmpsam_edge.errors import UserError
from rmpsam_edge.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec

FORMAT = "rmpsam-edge-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
VOCAB_FILE = "vocab.npy"
REQUIRED_GRAPHS = ("encoder", "prompt_decoder", "object_decoder")
OPTIONAL_GRAPHS = ("prompt_decoder_many",)
EXPORT_HINT = "export one with: rmpsam-edge export --out %s"
DEMO_WEIGHTS_FILE = "rmpsam_r18_demo.pth"  # the shipped demo weights (rmpsam_edge/assets/weights)
WEIGHTS_KEYS = ("kind", "file", "sha256", "seed", "variant", "note", "vocabulary_source")


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def is_bundle(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, MANIFEST))


class Bundle(object):
    """An opened, validated bundle. ``path`` the folder, ``manifest`` the parsed JSON (dict).

    Files are verified against their sha256 the first time they are used (``file_path``)."""

    def __init__(self, path: str, manifest: dict):
        self.path = path
        self.manifest = manifest
        self._verified = set()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path) -> "Bundle":
        if isinstance(path, Bundle):
            return path
        path = os.fspath(path)
        if not os.path.exists(path):
            raise UserError("model bundle not found: %s; %s" % (path, EXPORT_HINT % path))
        if os.path.isfile(path):
            parent = os.path.dirname(os.path.abspath(path))
            if is_bundle(parent):
                raise UserError("%s is a file inside a bundle; pass the bundle folder %s instead" % (path, parent))
            raise UserError("%s is a file, not a model bundle folder; %s" % (path, EXPORT_HINT % "DIR"))
        mpath = os.path.join(path, MANIFEST)
        if not os.path.isfile(mpath):
            raise UserError("%s is not a model bundle (no %s); %s" % (path, MANIFEST, EXPORT_HINT % path))
        try:
            with open(mpath, "r") as f:
                manifest = json.load(f)
        except ValueError as exc:
            raise UserError("%s is not valid JSON (%s); re-export the bundle (--force overwrites it)" % (mpath, exc))
        except (OSError, IOError) as exc:
            raise UserError("cannot read %s: %s" % (mpath, exc))
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise UserError("%s is not an rmpsam-edge bundle manifest (format %r); %s"
                            % (mpath, manifest.get("format") if isinstance(manifest, dict) else None,
                               EXPORT_HINT % path))
        version = manifest.get("format_version")
        if not isinstance(version, int):
            raise UserError("%s has no integer format_version; re-export the bundle (--force overwrites it)" % mpath)
        if version > FORMAT_VERSION:
            raise UserError("%s has bundle format version %d, newer than this rmpsam_edge reads (%d); "
                            "upgrade rmpsam_edge (pip install -U rmpsam_edge) or re-export with this version"
                            % (path, version, FORMAT_VERSION))
        graphs = manifest.get("graphs")
        if not isinstance(graphs, dict):
            raise UserError("%s lists no graphs; re-export the bundle (--force overwrites it)" % mpath)
        for name in REQUIRED_GRAPHS:
            entry = graphs.get(name)
            if not isinstance(entry, dict) or "file" not in entry or "sha256" not in entry:
                raise UserError("%s has no %s graph entry; re-export the bundle (--force overwrites it)"
                                % (mpath, name))
        _check_declared(mpath, manifest)
        bundle = cls(path, manifest)
        for name in bundle.graph_names():
            for rel in [graphs[name]["file"]] + ([graphs[name]["weights"].get("file")]
                                                 if isinstance(graphs[name].get("weights"), dict) else []):
                inside(path, rel, mpath)
            f = os.path.join(path, graphs[name]["file"])
            if not os.path.isfile(f):
                raise UserError("bundle %s is incomplete: %s is missing; re-export it (--force overwrites it)"
                                % (path, graphs[name]["file"]))
        return bundle

    # ------------------------------------------------------------------ files
    def graph_names(self):
        """Names of the graphs this bundle holds (required ones first)."""
        g = self.manifest["graphs"]
        return [n for n in REQUIRED_GRAPHS + OPTIONAL_GRAPHS if n in g]

    def has_graph(self, name: str) -> bool:
        return name in self.manifest["graphs"]

    def file_path(self, rel: str, sha256: Optional[str]) -> str:
        """Absolute path of a bundle file, after checking its sha256 against the manifest (once)."""
        p = inside(self.path, rel, os.path.join(self.path, MANIFEST))
        if p in self._verified:
            return p
        if not os.path.isfile(p):
            raise UserError("bundle %s is incomplete: %s is missing; re-export it (--force overwrites it)"
                            % (self.path, rel))
        if not sha256:
            raise UserError("%s has no sha256 in %s; re-export the bundle (--force overwrites it)" % (rel, MANIFEST))
        if sha256_file(p) != sha256:
            raise UserError("%s does not match its sha256 in %s (changed or corrupt); re-export the bundle (--force "
                            "overwrites it)" % (p, MANIFEST))
        self._verified.add(p)
        return p

    def graph_path(self, name: str) -> str:
        """Verified path of graph ``name`` (e.g. 'encoder'). A graph with a separate weights file (OpenVINO IR:
        ``.xml`` + ``.bin``) has both files checked."""
        entry = self.manifest["graphs"].get(name)
        if entry is None:
            raise UserError("bundle %s has no %s graph; re-export it" % (self.path, name))
        weights = entry.get("weights")
        if weights:
            self.file_path(weights["file"], weights.get("sha256"))
        return self.file_path(entry["file"], entry.get("sha256"))

    def size_mb(self) -> float:
        """Size on disk of the graph files (OpenVINO IR weights included), in MB."""
        total = 0
        for entry in self.manifest["graphs"].values():
            total += os.path.getsize(os.path.join(self.path, entry["file"]))
            if entry.get("weights"):
                total += os.path.getsize(os.path.join(self.path, entry["weights"]["file"]))
        return total / 1e6

    def graph_format(self, name: str) -> str:
        """'onnx' (default) or 'openvino-ir' (written by ``quantize --backend openvino``)."""
        return self.manifest["graphs"].get(name, {}).get("format", "onnx")

    # ------------------------------------------------------------------ contents
    @property
    def variant(self) -> str:
        return self.manifest.get("variant", "?")

    @property
    def static(self) -> Optional[dict]:
        """None for dynamic shapes, else {'height': H, 'width': W, 'prompts': Np, 'classes': K or None}."""
        return self.manifest.get("static")

    @property
    def many_prompts_from(self) -> Optional[int]:
        """Prompt count from which ``prompt_decoder_many`` answers (None: the bundle has no such graph)."""
        if not self.has_graph("prompt_decoder_many"):
            return None
        return int(self.manifest.get("many_prompts_from", 0)) or None

    @property
    def max_prompts(self) -> int:
        """Largest prompt batch of one decoder call (the declared Np range); larger batches run in chunks."""
        axes = self.manifest.get("dynamic_axes") or {}
        return int((axes.get("Np") or {}).get("max", 256))

    def prompt_graph(self, num_prompts: int) -> str:
        """Which prompt graph answers ``num_prompts`` prompts in one call."""
        start = self.many_prompts_from
        return "prompt_decoder_many" if start is not None and num_prompts >= start else "prompt_decoder"

    def class_embed(self) -> Optional[np.ndarray]:
        """The vocabulary embeddings (K, P, 768) float32, or None when the bundle has none."""
        voc = self.manifest.get("vocabulary")
        if not voc:
            return None
        p = self.file_path(voc.get("file", VOCAB_FILE), voc.get("sha256"))
        try:
            arr = np.load(p, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - any parse error means a broken file
            raise UserError("%s is not a readable numpy array (%s); re-export the bundle (--force overwrites it)"
                            % (p, exc))
        if arr.ndim != 3 or arr.shape[-1] != 768:
            raise UserError("%s has shape %s, expected (K, P, 768); re-export the bundle" % (p, arr.shape))
        return arr.astype(np.float32)

    def spec(self) -> ModelSpec:
        """The ModelSpec the pre/post-processing and the Predictor need."""
        m = self.manifest
        inp = m.get("input", {})
        voc = m.get("vocabulary") or {}
        embed = self.class_embed()
        return ModelSpec(m.get("variant", "r18"), input_size=inp.get("size"), mean=inp.get("mean", IMAGENET_MEAN),
                         std=inp.get("std", IMAGENET_STD), class_embed=embed,
                         class_names=voc.get("names") if embed is not None else None,
                         num_things=voc.get("num_things") if embed is not None else None,
                         weights_note=self.weights_info()["note"])

    def weights_info(self) -> dict:
        """The weights this bundle was exported from; see ``weights_info``."""
        return weights_info(self.manifest)

    def provenance(self) -> List[dict]:
        """The steps that wrote this bundle, oldest first; see ``provenance``."""
        return provenance(self.manifest)

    def describe(self) -> str:
        m = self.manifest
        shapes = "static %dx%d" % (self.static["height"], self.static["width"]) if self.static else "dynamic shapes"
        return "%s bundle %s (%s, input %s, opset %s)" % (self.variant, self.path, shapes,
                                                         m.get("input", {}).get("size") or "official keep-ratio",
                                                         m.get("opset"))


def weights_info(manifest: dict) -> dict:
    """The manifest's ``weights`` as {"kind": "checkpoint" | "random-init" | "demo" | None (not recorded),
    "file": checkpoint basename or None, "sha256", "seed": int or None, "variant", "note", "vocabulary_source"}.

    The one reader of ``manifest["weights"]``. Bundles written before these fields (format_version 1 with
    {"source": "random-init (seed N)" | "<checkpoint>.pth", ...}) are read here for backward compatibility:
    this is the only place that parses the old "random-init (seed N)" string."""
    w = manifest.get("weights") if isinstance(manifest.get("weights"), dict) else {}
    out = {k: w.get(k) for k in WEIGHTS_KEYS}
    out["variant"] = out["variant"] or manifest.get("variant")
    source = w.get("source")
    if out["kind"] is None and isinstance(source, str) and source:  # an old manifest
        old = re.match(r"random-init(?: \(seed (-?\d+)\))?$", source)
        if old:
            out.update(kind="random-init", file=None, seed=int(old.group(1) or 0))
        else:
            out["file"] = os.path.basename(source)
            out["kind"] = "demo" if out["file"] == DEMO_WEIGHTS_FILE else "checkpoint"
    return out


def provenance(manifest: dict) -> List[dict]:
    """The steps that wrote the bundle, oldest first: [{"tool", "argv", "created", "versions"}, ...] (one per
    export, quantize, fp16_storage, ...). An old manifest's free-text "command" is read as one step
    {"tool": None, "argv": None, "command": text, "created": the manifest's "created", "versions": its "tools"}."""
    steps = manifest.get("provenance")
    if isinstance(steps, list):
        return [dict(s) for s in steps if isinstance(s, dict)]
    if manifest.get("command"):
        return [{"tool": None, "argv": None, "command": str(manifest["command"]), "created": manifest.get("created"),
                 "versions": manifest.get("tools")}]
    return []


def provenance_step(tool: str, argv: Optional[Sequence[str]] = None, modules: Sequence[str] = (),
                    versions: Optional[dict] = None) -> dict:
    """One provenance entry: ``tool`` (e.g. "rmpsam-edge export"), the full command line ``argv`` (default: this
    process's), the UTC time, and the versions of rmpsam_edge, python, numpy, the ``modules`` that are imported,
    and ``versions``."""
    from rmpsam_edge import __version__
    if argv is None:
        argv = [os.path.basename(sys.argv[0])] + sys.argv[1:]
    v = {"rmpsam_edge": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for name in modules:
        if sys.modules.get(name) is not None:
            v[name] = str(getattr(sys.modules[name], "__version__", "?"))
    v.update(versions or {})
    return {"tool": tool, "argv": [str(a) for a in argv], "versions": v,
            "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def add_step(manifest: dict, tool: str, argv: Optional[Sequence[str]] = None, modules: Sequence[str] = (),
             versions: Optional[dict] = None) -> dict:
    """``manifest`` (changed in place and returned) with a provenance step appended for a bundle written from
    it; an old free-text "command" (and its "tools") becomes the first step."""
    manifest["provenance"] = provenance(manifest) + [provenance_step(tool, argv, modules, versions)]
    manifest.pop("command", None)
    manifest.pop("tools", None)
    return manifest


def inside(bundle_dir: str, rel, mpath: str) -> str:
    """``bundle_dir/rel`` when it stays inside the bundle (no absolute path, no '..', no symlink out)."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or rel.startswith(("/", "\\")):
        raise UserError("%s names the file %r, which is not a path inside the bundle; refusing to load it "
                        "(re-export the bundle)" % (mpath, rel))
    root = os.path.realpath(bundle_dir)
    real = os.path.realpath(os.path.join(bundle_dir, rel))
    if not real.startswith(root + os.sep):
        raise UserError("%s names %r, which leaves the bundle folder (%s); refusing to load a graph from "
                        "outside it (re-export the bundle)" % (mpath, rel, real))
    return os.path.join(bundle_dir, rel)


_MAX_SIDE = 16384  # pixels; larger declared inputs are a broken or hostile manifest
_MAX_PROMPTS = 65536


def _check_declared(mpath: str, m: dict) -> None:
    """Declared sizes (input size, static shape, dynamic-axis ranges) are positive integers of sane size."""
    def need(value, what, top):
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
            raise UserError("%s declares %s = %r; expected an integer from 1 to %d (a corrupt or hand-edited "
                            "manifest: re-export the bundle)" % (mpath, what, value, top))
    inp = m.get("input", {})
    if not isinstance(inp, dict):
        raise UserError("%s: 'input' must be an object; re-export the bundle" % mpath)
    need(inp.get("size"), "input.size", _MAX_SIDE)
    st = m.get("static")
    if st is not None:
        if not isinstance(st, dict):
            raise UserError("%s: 'static' must be an object; re-export the bundle" % mpath)
        for k, top in (("height", _MAX_SIDE), ("width", _MAX_SIDE), ("prompts", _MAX_PROMPTS),
                       ("classes", _MAX_PROMPTS), ("prototypes", _MAX_PROMPTS)):
            need(st.get(k), "static.%s" % k, top)
    axes = m.get("dynamic_axes") or {}
    if not isinstance(axes, dict):
        raise UserError("%s: 'dynamic_axes' must be an object; re-export the bundle" % mpath)
    for name, rng in axes.items():
        if not isinstance(rng, dict):  # e.g. "h": "H / 4" (a note)
            continue
        top = _MAX_SIDE if name in ("H", "W") else _MAX_PROMPTS
        need(rng.get("min"), "dynamic_axes.%s.min" % name, top)
        need(rng.get("max"), "dynamic_axes.%s.max" % name, top)
        if isinstance(rng.get("min"), int) and isinstance(rng.get("max"), int) and rng["min"] > rng["max"]:
            raise UserError("%s declares dynamic_axes.%s min %d > max %d; re-export the bundle"
                            % (mpath, name, rng["min"], rng["max"]))


def write_manifest(path: str, manifest: Dict) -> None:
    """Write ``manifest.json`` (sorted keys, 2-space indent) into bundle folder ``path``."""
    with open(os.path.join(path, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
