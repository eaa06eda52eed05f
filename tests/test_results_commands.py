"""Every committed results file names a command that still exists: the commands recorded inside the files
parse with today's CLI (or name a module / script that is there), and the few files that record none are given
their command in a Markdown file of the results folder or the docs."""
import fnmatch
import glob
import importlib.util
import json
import os
import shlex

import pytest

from rmpsam_edge.cli import COMMANDS, build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
# files whose maker does not record its command line inside -> the command prefix documented for them
NO_COMMAND = {"demo_weights_info.json": "rmpsam-edge info --json", "eval_demo_weights.json": "rmpsam-edge eval",
              "fidelity_int8_variants/*.json": "rmpsam-edge quantize --model /tmp/speed/r18",
              "fidelity_cpu_recipes/*.json": "rmpsam-edge quantize --model"}


def _recorded(obj, depth=0):
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "command" and isinstance(value, (str, list)):
                yield value
            elif depth < 2:
                for c in _recorded(value, depth + 1):
                    yield c


def _results():
    files = sorted(glob.glob(os.path.join(RESULTS, "*.json")) + glob.glob(os.path.join(RESULTS, "*", "*.json")))
    assert len(files) > 20
    return [(os.path.relpath(f, RESULTS), json.load(open(f))) for f in files]


def _check(command):
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if argv[0] == "rmpsam-edge":
        assert argv[1] in COMMANDS, command
        build_parser(only=argv[1]).parse_args(argv[1:])  # SystemExit (exit 2) on an unknown flag or value
    elif argv[:2] == ["python", "-m"]:
        assert importlib.util.find_spec(argv[2]) is not None, command
    else:
        assert argv[0] == "python" and os.path.isfile(os.path.join(ROOT, argv[1])), command


@pytest.mark.parametrize("name, data", _results(), ids=lambda v: v if isinstance(v, str) else "")
def test_results_file_names_a_command_that_still_exists(name, data):
    commands = list(_recorded(data))
    if not commands:
        prefix = next(p for pat, p in NO_COMMAND.items() if fnmatch.fnmatch(name, pat))
        docs = glob.glob(os.path.join(ROOT, "docs", "*.md")) + glob.glob(os.path.join(RESULTS, "**", "*.md"),
                                                                          recursive=True)
        stem = os.path.splitext(os.path.basename(name))[0]
        assert any(prefix in t and stem in t for t in (open(d).read() for d in docs)), name
        return
    for command in commands:
        _check(command)
