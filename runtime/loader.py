"""``load(bundle, backend="auto")``: pick a backend (or one per graph), load the bundle on it, return a Predictor.

Backends come from the one registry (``runtime/backends.py``). ``auto`` walks it best first and takes the first
backend that loads; a backend whose package is not installed, or that cannot serve the device
(``BackendUnavailable``: no GPU, no cached TensorRT engine, ...), is skipped; one that fails while loading the
bundle is a fallback and gets one line on stderr. Without a GPU backend, ``auto`` puts each graph of a dynamic
FP32 bundle on its fastest installed CPU backend, timed on this machine the first time and cached
(``runtime/placement.py``). The choice gets one line, saying "measured here" or "from cache". An explicitly requested backend that is missing is a ``UserError`` naming the package to install.

``backend`` spellings: ``auto``, a registry name or alias (``onnxruntime``/``ort``, ``openvino``/``ov``,
``tensorrt``/``trt``), ``onnxruntime+openvino`` (each graph on the faster of the two), or a placement
``encoder=openvino,prompt_decoder=onnxruntime`` (graphs not named: the faster here of the named backends); the
keyword ``graphs={"encoder": "openvino"}`` does the same from Python.
"""
import sys
from typing import Dict, List, Optional

from rmpsam_edge.errors import UserError

from . import backends as registry
from . import composite, placement
from .bundle import Bundle
from .bundle_runner import BackendUnavailable


def _say(line: str) -> None:
    sys.stderr.write("rmpsam-edge: %s\n" % line)
    sys.stderr.flush()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def parse_backend(backend, graphs: Optional[Dict[str, str]] = None):
    """-> ('auto', None, None) | ('single', row, None) | ('per-graph', [rows], {graph: name} overrides)."""
    text = str(backend).strip().lower()
    overrides = {}  # type: Dict[str, str]
    if "=" in text:
        for item in text.split(","):
            graph, _, name = item.strip().partition("=")
            overrides[graph.strip()] = registry.get(name.strip()).name
        names = []  # type: List[str]
    elif "+" in text:
        names = [registry.get(n).name for n in text.split("+") if n.strip()]
    elif text == "auto":
        names = []
    else:
        names = [registry.get(text).name]
    for graph, name in (graphs or {}).items():
        overrides[graph] = registry.get(name).name
    for name in overrides.values():
        if name not in names:
            names.append(name)
    if not names:
        return "auto", None, None
    if len(names) == 1 and not overrides:
        return "single", registry.get(names[0]), None
    return "per-graph", [registry.get(n) for n in names], overrides


def check_device(backend, device) -> None:
    """One line when none of the backends ``backend`` names (every one for 'auto') can run on ``device`` here;
    for a command to say so before it starts work (``--device``)."""
    if device is None:
        return
    kind, rows, _ = parse_backend(backend)
    rows = registry.BACKENDS if kind == "auto" else (rows if kind == "per-graph" else [rows])
    why = [registry.probe(r, device) for r in rows]
    if not any(ok for ok, _ in why):
        raise UserError("--device %s: no backend of --backend %s can run on it here (%s)"
                        % (device, backend, "; ".join(detail for _, detail in why)))


def load_runner(bundle, backend: str = "auto", device: Optional[str] = None, threads: Optional[int] = None,
                verbose: bool = True, graphs: Optional[Dict[str, str]] = None):
    """-> (activated Runner, Bundle, the line describing the choice). See ``load``."""
    remote = registry.remote_module(bundle)
    if remote is not None:  # a served model (Triton): the server chose the backend
        runner, b, line = remote.load_runner(bundle, verbose=verbose)
        if verbose:
            _say(line)
        return runner, b, line
    b = Bundle.open(bundle)
    kind, rows, overrides = parse_backend(backend, graphs)
    if kind == "auto":
        runner, line = _auto(b, device, threads, verbose)
    elif kind == "single":
        runner = _explicit(rows, b, device, threads)
        line = "%s (requested)" % runner.describe()
    else:
        runner, source = _per_graph(b, rows, overrides, device, threads, auto=False, verbose=verbose)
        line = "%s (requested%s)" % (runner.describe(), "; unnamed graphs on the fastest, %s" % source
                                     if source else "")
    if verbose:
        _say(line)
    return runner, b, line


def _explicit(row, b: Bundle, device, threads, graphs_of: Optional[Bundle] = None):
    try:
        return registry.create(row, graphs_of or b, device=device, threads=threads)
    except BackendUnavailable as exc:
        raise UserError("backend %s cannot run here: %s" % (row.name, exc))
    except (UserError, ValueError) as exc:
        raise UserError(str(exc))


def _per_graph(b: Bundle, rows, overrides, device, threads, auto: bool, verbose: bool = True, measure_fn=None):
    """-> (runner, 'measured here' | 'from cache' | None when nothing was left to time). ``measure_fn``: see
    ``placement.timings``."""
    if b.static:
        raise UserError("%s is a static-shape bundle: per-graph backends need a dynamic bundle (or pick one "
                        "backend)" % b.path)
    names = [r.name for r in rows]
    ms, source = {}, None
    if len(names) > 1 and any(g not in overrides for g in composite.GRAPHS):
        ms, source = placement.timings(b, names, threads, measure_fn=measure_fn or placement.measure,
                                       say=_say if verbose else None)
    placement_ = composite.plan(names, overrides, ms)
    runners = {}
    try:
        for name in sorted(set(placement_.values()), key=lambda n: list(placement_.values()).index(n)):
            subset = composite.GraphSubset(b, [g for g, n in placement_.items() if n == name])
            row = registry.get(name)
            runners[name] = (registry.create(row, subset, device=device, threads=threads, auto=True) if auto
                             else _explicit(row, b, device, threads, graphs_of=subset))
    except BaseException:
        for r in runners.values():
            r.deactivate()
        raise
    if len(runners) == 1:
        return next(iter(runners.values())), source
    return composite.CompositeRunner(runners, placement_), source


def _auto_per_graph_rows(b: Bundle, device):
    """The CPU backends that are installed, when ``auto`` may split graphs (no device named,
    a dynamic FP32 ONNX bundle, no GPU provider in ONNX Runtime); else []."""
    if device is not None or b.static or str(b.manifest.get("precision", "fp32")) != "fp32":
        return []
    if any(b.graph_format(g) != "onnx" for g in b.graph_names()):
        return []
    rows = []
    for name in composite.CPU_BACKENDS:
        row = registry.get(name)
        if registry.import_module(row)[0] is None or not registry.probe(row)[0]:
            return []
        rows.append(row)
    if registry.probe(registry.get("onnxruntime"), "cuda")[0]:
        return []  # ONNX Runtime would run on a GPU: today's GPU rules (TensorRT EP > CUDA EP) apply
    return rows


def _auto(b: Bundle, device: Optional[str], threads: Optional[int], verbose: bool):
    skipped, failed = [], []  # type: List[str], List[str]
    split_tried = False
    for row in registry.BACKENDS:
        if not split_tried and row.name in composite.CPU_BACKENDS:
            split_tried = True
            rows = _auto_per_graph_rows(b, device)
            if rows:
                try:
                    runner, source = _per_graph(b, rows, {}, None, threads, auto=True, verbose=verbose)
                    why = "; ".join(skipped + ["%s failed" % f for f in failed])
                    return runner, "%s (auto: fastest per graph, %s%s)" % (
                        runner.describe(), source, "; skipped: " + why if why else "")
                except UserError:
                    raise
                except Exception as exc:  # noqa: BLE001 - fall back to one backend for all graphs
                    if verbose:
                        _say("per-graph backends could not load %s (%s); using one backend" % (b.path,
                                                                                             _first_line(exc)))
        dev = device if device is not None else row.auto_device
        mod, absent = registry.import_module(row)
        if mod is None:
            if absent == "not installed":
                skipped.append("%s not installed" % row.name)
            continue
        try:
            runner = registry.create(row, b, device=dev, threads=threads, auto=True)
        except BackendUnavailable as exc:
            text = _first_line(exc)
            skipped.append("%s not installed" % row.name if "not installed" in text else text)
            continue
        except UserError:
            raise  # the bundle itself is bad (sha256, ...): no backend can help
        except Exception as exc:  # noqa: BLE001 - any backend failure means: try the next one
            failed.append(row.name)
            if verbose:
                _say("%s could not load %s (%s); falling back to the next backend" % (row.name, b.path,
                                                                                      _first_line(exc)))
            continue
        why = "; ".join(skipped + ["%s failed" % f for f in failed])
        return runner, "%s (auto: first to load of %s%s)" % (runner.describe(), registry.ORDER_TEXT,
                                                              "; skipped: " + why if why else "")
    raise UserError("no backend could load %s (%s); install one: %s"
                    % (b.path, "; ".join(skipped + ["%s failed" % f for f in failed]) or "none installed",
                       ", ".join(r.pip for r in registry.BACKENDS if r.name != "tensorrt")))


def load(bundle, backend: str = "auto", device: Optional[str] = None, threads: Optional[int] = None,
         verbose: bool = True, graphs: Optional[Dict[str, str]] = None):
    """Load a model bundle on a backend -> ``rmpsam_edge.predictor.Predictor``.

    backend: 'auto' (best installed: TensorRT > ONNX Runtime (CUDA EP > CPU) > OpenVINO, each graph
    on its fastest CPU backend when there is no GPU, falling back when one fails to load), a backend name,
    'onnxruntime+openvino' or 'encoder=openvino,prompt_decoder=onnxruntime' (see the module docstring).
    device: backend device ('cpu', 'gpu', 'cuda', 'tensorrt' for ONNX Runtime; 'CPU', 'GPU', 'AUTO' for
    OpenVINO). threads: intra-op threads (None: backend default). graphs: {graph: backend} placement.
    Prints one line on stderr: which backend(s), device and precision, and why.
    """
    from rmpsam_edge.predictor import Predictor

    remote = registry.remote_module(bundle)
    if remote is not None:
        return remote.load(bundle, verbose=verbose)
    runner, b, _ = load_runner(bundle, backend, device, threads, verbose, graphs=graphs)
    return Predictor(runner, b.spec())
