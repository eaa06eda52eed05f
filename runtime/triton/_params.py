"""Reading a python-backend model's ``initialize(args)``: its config parameters and the bundle it serves."""
import json
import os


def model_params(args) -> dict:
    """-> {parameter: string value} from ``args['model_config']`` plus ``name`` and ``dir`` (the model folder)."""
    config = json.loads(args["model_config"])
    params = dict((k, v.get("string_value", "")) for k, v in (config.get("parameters") or {}).items())
    params["name"] = config.get("name", "")
    params["dir"] = args["model_repository"]
    params["max_batch_size"] = str(config.get("max_batch_size", 0))
    return params


def bundle_path(params: dict) -> str:
    """The ``bundle`` parameter: absolute, or relative to the model repository (the parent of the model)."""
    path = params["bundle"]
    if not os.path.isabs(path):
        path = os.path.join(os.path.dirname(os.path.abspath(params["dir"])), path)
    return path


def load_runner(params: dict, bundle):
    """-> (runner, Bundle, line) on the ``backend`` / ``device`` / ``threads`` parameters (serve's flags)."""
    from rmpsam_edge.runtime.loader import load_runner as load
    return load(bundle, params.get("backend") or "auto", device=params.get("device") or None,
                threads=int(params.get("threads") or 0) or None, verbose=False)
