"""Get a usable engine for each graph of a bundle: reuse the cached one, or rebuild it with one line saying why.

    wanted key (this machine + the user's build choices) --cache.check--> usable? -> engine bytes
                                                                  no  -> --no-build: UserError naming what differs
                                                                         foreign engine file: UserError unless --force
                                                                         else build (build.py), store, one log line

When the caller gives no build choices (``predict --backend tensorrt``), the choices recorded in the
existing sidecar are kept, so an engine built with a custom profile is reused, and rebuilt with the same
profile after a TensorRT or GPU change.
"""
import json
import os
import re
import sys
from typing import Callable, Dict, Optional, Sequence, Tuple

from rmpsam_edge.errors import UserError

from . import build as builder
from . import cache, calibrator, precision, profiles

GRAPH_SYMBOLS = {"encoder": ("B", "H", "W"), "prompt_decoder": ("B", "h", "w", "Np"),
                 "object_decoder": ("B", "h", "w", "K", "P")}
GRAPH_ORDER = ("encoder", "prompt_decoder", "object_decoder")
DEFAULT_IMGSZ = 640
DEFAULT_MEAN = (123.675, 116.28, 103.53)
DEFAULT_STD = (58.395, 57.12, 57.375)


def stderr_log(line: str) -> None:
    sys.stderr.write("tensorrt: %s\n" % line)


def graph_precision(graph: str, precision: str) -> str:
    """int8 applies to the encoder only; the decoders of an int8 build are fp16 (with FP32 pins)."""
    return "fp16" if precision == "int8" and graph != "encoder" else precision


class Choices(object):
    """The user's build choices; None = not given (take the stored sidecar's, else the default)."""

    def __init__(self, precision: Optional[str] = None, ranges: Optional[Dict[str, tuple]] = None,
                 dla_core: Optional[int] = None, fp32_layers: Optional[Sequence[str]] = None,
                 calib: Optional[str] = None, calib_count: int = 64, workspace_gib: float = 2.0,
                 verbose: bool = False):
        self.precision, self.ranges, self.dla_core = precision, ranges, dla_core
        self.fp32_layers, self.calib, self.calib_count = fp32_layers, calib, calib_count
        self.workspace_gib, self.verbose = workspace_gib, verbose


class Bundle(object):
    """The few things the engine code reads from a bundle directory (manifest.json is optional)."""

    def __init__(self, path):
        path = getattr(path, "path", None) or getattr(path, "root", None) or path
        self.dir = os.path.abspath(str(path))
        if not os.path.isdir(self.dir):
            raise UserError("--model %s: not a bundle folder (export one with `rmpsam-edge export`)" % path)
        self.manifest = {}
        mpath = os.path.join(self.dir, "manifest.json")
        if os.path.isfile(mpath):
            try:
                with open(mpath) as f:
                    self.manifest = json.load(f)
            except ValueError as exc:
                raise UserError("%s is not valid JSON (%s)" % (mpath, exc))

    def graph_path(self, graph: str) -> str:
        files = _lookup(self.manifest, ("graphs", graph, "file"), ("graphs", graph, "path"), ("files", graph),
                        ("graphs", graph))
        name = files if isinstance(files, str) else graph + ".onnx"
        return os.path.join(self.dir, name)

    def engine_dir(self) -> str:
        return os.path.join(self.dir, cache.ENGINE_DIR)

    def input_size(self) -> Optional[int]:
        v = _lookup(self.manifest, ("input_size",), ("preprocess", "input_size"), ("spec", "input_size"))
        return int(v) if isinstance(v, (int, float)) and v else None

    def mean_std(self):
        mean = _lookup(self.manifest, ("preprocess", "mean"), ("spec", "mean"), ("mean",)) or DEFAULT_MEAN
        std = _lookup(self.manifest, ("preprocess", "std"), ("spec", "std"), ("std",)) or DEFAULT_STD
        return tuple(mean), tuple(std)

    def vocab_shape(self) -> Tuple[Optional[int], Optional[int]]:
        """(K, P) of the bundle's class embeddings, when the manifest says."""
        shape = _lookup(self.manifest, ("vocabulary", "shape"), ("class_embed", "shape"), ("class_embed_shape",))
        if isinstance(shape, (list, tuple)) and len(shape) == 3:
            return int(shape[0]), int(shape[1])
        k = _lookup(self.manifest, ("vocabulary", "num_classes"), ("num_classes",))
        p = _lookup(self.manifest, ("vocabulary", "num_prototypes"), ("num_prototypes",))
        return (int(k) if k else None), (int(p) if p else None)


def _lookup(d, *paths):
    for path in paths:
        cur = d
        for k in path:
            cur = cur.get(k) if isinstance(cur, dict) else None
        if cur is not None:
            return cur
    return None


def default_ranges(bundle: Bundle, imgsz: Optional[int] = None, max_prompts: int = 64) -> Dict[str, tuple]:
    size = imgsz or bundle.input_size() or DEFAULT_IMGSZ
    size = int(-(-size // profiles.ALIGN) * profiles.ALIGN)
    k, p = bundle.vocab_shape()
    return profiles.make_ranges((size, size), prompts=(1, 1, max_prompts),
                                classes=(1, k or 133, max(k or 133, 133)), protos=(1, p or 1, max(p or 1, 16)))


def profile_key(graph: str, ranges: Dict[str, tuple]) -> Dict[str, list]:
    return {s: list(ranges[s]) for s in GRAPH_SYMBOLS[graph] if s in ranges}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


class Session(object):
    """One machine (TensorRT module + GPU) and one bundle. ``log`` gets one line per build/rebuild."""

    def __init__(self, compat, device: Tuple[str, str], bundle: Bundle, cuda=None,
                 log: Callable[[str], None] = stderr_log):
        self.compat, self.gpu, self.cc = compat, device[0], device[1]
        self.bundle, self.cuda, self.log = bundle, cuda, log

    def timing_cache_path(self) -> str:
        return os.path.join(self.bundle.engine_dir(), "timing-trt%s-%s.cache"
                            % (self.compat.version_string, _slug(self.gpu)))

    def stored_encoder_choices(self) -> Optional[dict]:
        """The newest encoder sidecar key in the bundle (what `build-engine` made last), or None."""
        edir = self.bundle.engine_dir()
        best = None
        if os.path.isdir(edir):
            for name in os.listdir(edir):
                if name.startswith("encoder.") and name.endswith(".engine.json"):
                    path = os.path.join(edir, name)
                    side, _ = cache.read_sidecar(path)
                    if side and (best is None or os.path.getmtime(path) > best[0]):
                        best = (os.path.getmtime(path), side["key"])
        return best[1] if best else None

    def fill_choices(self, requested: Choices) -> Choices:
        """Fill what the caller left out: precision and DLA core from the last encoder build (else fp16, or
        fp32 on a strongly typed TensorRT), profile ranges from the stored sidecars (else the defaults)."""
        c = Choices(**vars(requested))
        if c.precision is None:
            stored = self.stored_encoder_choices()
            c.precision = stored["precision"] if stored else ("fp16" if self.compat.weak_typing else "fp32")
            if stored and c.dla_core is None:
                c.dla_core = stored.get("dla_core")
        if c.ranges is None:
            ranges, found = dict(default_ranges(self.bundle)), set()
            for graph in GRAPH_ORDER:
                dla = c.dla_core if graph == "encoder" else None
                side, _ = cache.read_sidecar(cache.engine_paths(self.bundle.dir, graph,
                                                                graph_precision(graph, c.precision), dla)[1])
                for k, v in ((side or {}).get("key", {}).get("profiles") or {}).items():
                    ranges[k] = tuple(v)
                    found.add(k)
            if "H" in found and "h" not in found:  # decoders follow the encoder's image sizes
                ranges["h"] = tuple(v // profiles.STRIDE for v in ranges["H"])
                ranges["w"] = tuple(v // profiles.STRIDE for v in ranges["W"])
            c.ranges = ranges
        return c

    # ------------------------------------------------------------------ one graph
    def engine_bytes(self, graph: str, choices: Choices, build: bool = True, force: bool = False,
                     reason_prefix: str = "") -> Tuple[bytes, str]:
        """-> (plan bytes, 'cached' | 'built')."""
        if choices.precision is None or choices.ranges is None:
            choices = self.fill_choices(choices)
        gp = graph_precision(graph, choices.precision)
        dla = choices.dla_core if graph == "encoder" else None
        onnx_path = self.bundle.graph_path(graph)
        if not os.path.isfile(onnx_path):
            raise UserError("%s graph %s is missing from the bundle" % (graph, onnx_path))
        onnx_sha = cache.sha256_graph(onnx_path)
        engine_path, side_path = cache.engine_paths(self.bundle.dir, graph, gp, dla)
        stored_side, _ = cache.read_sidecar(side_path)
        stored = stored_side["key"] if stored_side else {}

        ranges = choices.ranges
        pins = list(choices.fp32_layers if choices.fp32_layers is not None else stored.get("fp32_layers") or [])
        calib_key, calib_files = None, None
        if gp == "int8":
            calib_key, calib_files = self._calibration(choices, ranges, onnx_sha, stored, stored_side)
        key = cache.make_key(self.compat.version_string, self.gpu, self.cc, graph, onnx_sha, gp,
                             profile_key(graph, ranges), dla, calib_key,
                             precision.POLICY if gp != "fp32" else None, pins if gp != "fp32" else [])
        verdict = cache.check(engine_path, side_path, key)
        if verdict.ok and not force:
            return verdict.data, "cached"
        if verdict.foreign and not force:
            raise UserError("%s; pass --force to replace it" % verdict.reason)
        why = reason_prefix or ("--force" if verdict.ok else verdict.reason)
        if not build:
            raise UserError("the %s engine cannot be used: %s; build it with `rmpsam-edge build-engine --model %s`"
                            % (graph, why, self.bundle.dir))
        if gp == "int8" and calib_key is None:
            raise UserError("--precision int8 needs calibration images: add --calib FOLDER (or a video or glob)")
        if dla is not None and gp == "fp32":
            raise UserError("--dla runs FP16 or INT8 only: add --precision fp16 (or int8)")
        self.log("building %s %s engine (%s); this takes minutes on a Jetson" % (graph, gp, why))
        cal = None
        if gp == "int8":
            cal = self._make_calibrator(ranges, calib_files, choices, onnx_sha, calib_key)
        settings = builder.BuildSettings(gp, ranges, int(choices.workspace_gib * (1 << 30)), dla, pins, cal,
                                         self.timing_cache_path(), choices.verbose)
        try:
            result = builder.BUILDERS[graph](self.compat, onnx_path, settings, self.log)
        finally:
            if cal is not None:
                cal.free()
        extra = {"tensor_profiles": profiles.as_json(result.profile), "fp32_pinned": len(result.pinned),
                 "calib_source": choices.calib or (stored_side or {}).get("calib_source")}
        cache.write(engine_path, side_path, result.data, key, extra)
        self.log("%s engine saved: %s (%.1f MB)" % (graph, engine_path, len(result.data) / 1e6))
        return result.data, "built"

    def load_engine(self, runtime, graph: str, choices: Choices, build: bool = True):
        """Deserialise the cached engine; a plan TensorRT rejects (corrupt, foreign) is rebuilt once."""
        data, status = self.engine_bytes(graph, choices, build=build)
        engine = self.compat.deserialize(runtime, data)
        if engine is None and status == "cached":
            data, status = self.engine_bytes(graph, choices, build=build, force=True,
                                             reason_prefix="TensorRT could not deserialise the cached engine")
            engine = self.compat.deserialize(runtime, data)
        if engine is None:
            raise UserError("TensorRT %s could not deserialise the %s engine it just built"
                            % (self.compat.version_string, graph))
        return engine

    # ------------------------------------------------------------------ INT8
    def _calibration(self, choices, ranges, onnx_sha, stored, stored_side):
        if not choices.calib:
            if stored.get("calibration"):  # keep the stored calibration (its cache file is in the bundle)
                src = (stored_side or {}).get("calib_source")
                files = calibrator.list_calibration_files(src) if src and os.path.exists(str(src)) else None
                return stored["calibration"], files
            return None, None  # nothing to compare with; building will ask for --calib
        files = calibrator.list_calibration_files(choices.calib)
        shape = self._calib_shape(ranges)
        mean, std = self.bundle.mean_std()
        fp = calibrator.data_fingerprint(files, choices.calib_count, shape, "%s|%s" % (list(mean), list(std)))
        _, key = calibrator.cache_path(self.bundle.engine_dir(), onnx_sha, fp)
        return key, files

    @staticmethod
    def _calib_shape(ranges) -> Tuple[int, int, int, int]:
        return 1, 3, int(ranges["H"][1]), int(ranges["W"][1])

    def _make_calibrator(self, ranges, files, choices, onnx_sha, calib_key):
        path = os.path.join(self.bundle.engine_dir(), "calib-%s.cache" % calib_key[:16])
        if files is None and not os.path.isfile(path):
            raise UserError("the INT8 encoder must be rebuilt and its calibration images are gone: "
                            "run build-engine --precision int8 --calib FOLDER")
        shape = self._calib_shape(ranges)
        mean, std = self.bundle.mean_std()
        feed = calibrator.feeder(files or [], shape[2:], mean, std, choices.calib_count)
        if self.cuda is None:
            raise UserError("INT8 calibration needs pycuda (`pip install pycuda`)")
        return calibrator.make_calibrator(self.compat.trt, self.cuda, feed, shape, path, choices.calib_count)
