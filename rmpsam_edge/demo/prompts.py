"""The demo's prompts file (``--prompts-file``): ``{"points": [[x, y], ...], "boxes": [[x1, y1, x2, y2], ...]}``."""
import json

import numpy as np

from rmpsam_edge.errors import UserError


def read_prompts_file(path: str):
    """A prompts file -> (points (Np, 2), boxes (Nb, 4)) float64 in frame pixels; UserError naming the file."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise UserError("cannot read prompts file %s (%s); expected JSON like "
                        '{"points": [[320, 240]], "boxes": [[10, 10, 200, 200]]}' % (path, exc))
    if not isinstance(data, dict) or not set(data) <= {"points", "boxes"}:
        raise UserError('prompts file %s: expected an object with "points" and/or "boxes" lists' % path)
    try:
        points = np.asarray(data.get("points", []), dtype=np.float64).reshape(-1, 2)
        boxes = np.asarray(data.get("boxes", []), dtype=np.float64).reshape(-1, 4)
    except (TypeError, ValueError):
        raise UserError('prompts file %s: "points" must be [[x, y], ...] and "boxes" [[x1, y1, x2, y2], ...]'
                        % path)
    return points, boxes
