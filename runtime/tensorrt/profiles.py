"""Optimisation-profile shapes (min / opt / max) from a few named sizes: every dynamic axis of a graph input is a
symbol of ``AXES`` (h = H / 4, w = W / 4; Np prompts, K classes, P prototypes per class), matched from the right
so (1, Np, 4) works as well as (Np, 4). Any other dynamic axis stops the build with a line naming it.
"""
from typing import Dict, Optional, Sequence, Tuple

from rmpsam_edge.errors import UserError

AXES = {
    "image": ("B", 3, "H", "W"),
    "features": ("B", 256, "h", "w"),
    "boxes": ("Np", 4),
    "class_embed": ("K", "P", 768),
}
STRIDE = 4   # features are 1/4 of the padded image
ALIGN = 32   # the padded image is a multiple of 32

Range = Tuple[int, int, int]
Shape = Tuple[int, ...]


def make_ranges(max_hw: Tuple[int, int], opt_hw: Optional[Tuple[int, int]] = None,
                min_hw: Optional[Tuple[int, int]] = None, prompts: Range = (1, 1, 64),
                classes: Optional[Range] = None, protos: Optional[Range] = None) -> Dict[str, Range]:
    """Symbol -> (min, opt, max). opt defaults to max, min to 32x32 (any aspect ratio up to the max side)."""
    opt_hw = opt_hw or max_hw
    min_hw = min_hw or (ALIGN, ALIGN)
    ranges = {"B": (1, 1, 1),
              "H": (min_hw[0], opt_hw[0], max_hw[0]), "W": (min_hw[1], opt_hw[1], max_hw[1]),
              "Np": tuple(int(v) for v in prompts)}
    if classes is not None:
        ranges["K"] = tuple(int(v) for v in classes)
    if protos is not None:
        ranges["P"] = tuple(int(v) for v in protos)
    ranges["h"] = tuple(v // STRIDE for v in ranges["H"])
    ranges["w"] = tuple(v // STRIDE for v in ranges["W"])
    names = {"H": "image height (--min-size/--opt-size/--max-size)", "W": "image width (--min-size/--opt-size/--max-size)",
             "Np": "prompts (--max-prompts)", "K": "classes (--max-classes)", "P": "prototypes per class"}
    for sym, (lo, opt, hi) in ranges.items():
        if not (1 <= lo <= opt <= hi):
            raise UserError("profile for %s must satisfy 1 <= min <= opt <= max, got %d / %d / %d"
                            % (names.get(sym, sym), lo, opt, hi))
    return ranges


def input_profile(graph: str, name: str, shape: Sequence[int], ranges: Dict[str, Range]) -> Tuple[Shape, Shape, Shape]:
    """(min, opt, max) for one network input whose dynamic axes are -1."""
    shape = tuple(int(d) for d in shape)
    spec = AXES.get(name, ())
    rows = []
    for axis, dim in enumerate(shape):
        k = axis - (len(shape) - len(spec))
        sym = spec[k] if 0 <= k < len(spec) else ("B" if k < 0 and spec else None)
        if dim >= 0:
            rows.append((dim, dim, dim))
        elif isinstance(sym, str) and sym in ranges:
            rows.append(ranges[sym])
        else:
            what = ("'%s'" % sym) if isinstance(sym, str) else "an axis the builder has no size for"
            raise UserError("%s input '%s' %s: axis %d is dynamic and is %s; re-export with that axis static "
                            "or pass its size" % (graph, name, list(shape), axis, what))
    return tuple(zip(*rows)) if rows else ((), (), ())


def check_within(graph: str, name: str, shape: Sequence[int], profile: Tuple[Shape, Shape, Shape],
                 hint: str = "") -> None:
    """Raise a one-line UserError when ``shape`` is outside an engine profile (min, opt, max)."""
    lo, _, hi = profile
    shape = tuple(int(d) for d in shape)
    if len(shape) == len(lo) and all(a <= d <= b for d, a, b in zip(shape, lo, hi)):
        return
    raise UserError("%s input '%s' has shape %s, outside the engine's optimisation profile (min %s, max %s)%s"
                    % (graph, name, list(shape), list(lo), list(hi), hint))


def as_json(profile: Dict[str, Tuple[Shape, Shape, Shape]]) -> Dict[str, list]:
    return {k: [list(s) for s in v] for k, v in sorted(profile.items())}
