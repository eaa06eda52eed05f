"""Each graph on its own backend: ``CompositeRunner`` holds one runner per backend, each loading only the graphs it
answers, and routes ``infer(graph, ...)`` to the runner that holds the graph. Exact: every graph computes what it
computes on its backend alone (the features are plain numpy arrays handed from one runner to the next).

``plan()`` turns a spec and per-graph timings ({graph: {backend: ms}}, measured on this machine by
``runtime/placement.py``) into {graph: backend name}. No torch, Python 3.8.
"""
from typing import Dict, Iterable, Optional

from rmpsam_edge.errors import UserError

from .base import GRAPHS, Runner
from .bundle import Bundle

CPU_BACKENDS = ("onnxruntime", "openvino")  # the backends ``auto`` may split a bundle over (no GPU)
FOLLOWERS = {"prompt_decoder_many": "prompt_decoder"}  # runs wherever its main graph runs


def fastest(graph: str, candidates: Iterable[str], ms: Dict[str, Dict[str, float]]) -> str:
    """The fastest of ``candidates`` for ``graph`` by ``ms`` (the first candidate when none was timed)."""
    cands = list(candidates)
    timed = [(ms.get(graph, {}).get(c), i, c) for i, c in enumerate(cands)]
    known = [t for t in timed if t[0] is not None]
    return min(known)[2] if known else cands[0]


def plan(candidates: Iterable[str], overrides: Optional[Dict[str, str]] = None,
         ms: Optional[Dict[str, Dict[str, float]]] = None) -> Dict[str, str]:
    """{graph: backend} for the three graphs: ``overrides`` first, the rest the fastest of ``candidates`` by
    ``ms``."""
    overrides = dict(overrides or {})
    for graph in overrides:
        if graph not in GRAPHS:
            raise UserError("unknown graph %r in the backend placement; graphs are %s" % (graph, ", ".join(GRAPHS)))
    cands = list(candidates) or sorted(set(overrides.values()))
    return {g: overrides.get(g) or fastest(g, cands, ms or {}) for g in GRAPHS}


class GraphSubset(Bundle):
    """The same bundle, showing only some graphs (a runner activated on it loads only those)."""

    def __init__(self, bundle: Bundle, graphs: Iterable[str]):
        Bundle.__init__(self, bundle.path, bundle.manifest)
        self._verified = bundle._verified
        self.only = set(graphs)
        self.only.update(f for f, main in FOLLOWERS.items() if main in self.only)

    def graph_names(self):
        return [g for g in Bundle.graph_names(self) if g in self.only]


class CompositeRunner(Runner):
    """``runners``: {backend name: activated runner}; ``placement``: {graph: backend name}."""

    def __init__(self, runners: Dict[str, Runner], placement: Dict[str, str]):
        self.runners = dict(runners)
        self.placement = dict(placement)
        self.name = "+".join(sorted(self.runners))

    @property
    def precision(self) -> str:
        return getattr(next(iter(self.runners.values())), "precision", "fp32")

    def activate(self) -> None:
        for r in self.runners.values():
            r.activate()

    def deactivate(self) -> None:
        for r in self.runners.values():
            r.deactivate()

    def infer(self, graph, feeds):
        return self.runners[self.placement[FOLLOWERS.get(graph, graph)]].infer(graph, feeds)

    def describe(self) -> str:
        parts = []
        for name, r in self.runners.items():
            graphs = [g for g in GRAPHS if self.placement[g] == name]
            parts.append("%s on %s" % ("+".join(graphs), r.describe()))
        return "per graph: " + "; ".join(parts)
