"""The command lines recorded in the ``command`` fields of the results files still parse with today's CLI.

A check of the parser, not of the files: a flag renamed or removed, or a subcommand gone, would leave the
recorded way of regenerating a result broken. ``rmpsam-edge ...`` goes through the real argument parser of its
subcommand (SystemExit 2 on an unknown flag or value); ``python -m MODULE`` must import; ``python SCRIPT`` must
exist. A field may hold several commands separated by ``;``."""
import glob
import importlib.util
import json
import os
import shlex

import pytest

from rmpsam_edge.cli import COMMANDS, build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def _recorded(obj, depth=0):
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "command" and isinstance(value, (str, list)):
                yield value
            elif depth < 2:
                for c in _recorded(value, depth + 1):
                    yield c


def _commands():
    """-> [(results file, one command line as argv)], each distinct command line once."""
    seen, out = set(), []
    for path in sorted(glob.glob(os.path.join(RESULTS, "*.json")) + glob.glob(os.path.join(RESULTS, "*", "*.json"))):
        with open(path) as f:
            data = json.load(f)
        for command in _recorded(data):
            parts = [shlex.split(c) for c in command.split(";")] if isinstance(command, str) else [list(command)]
            for argv in parts:
                if argv and tuple(argv) not in seen:
                    seen.add(tuple(argv))
                    out.append((os.path.relpath(path, RESULTS), argv))
    return out


@pytest.mark.parametrize("name, argv", _commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_recorded_command_parses_with_todays_cli(name, argv):
    program = os.path.basename(argv[0])
    if program == "rmpsam-edge":
        assert argv[1] in COMMANDS, argv
        build_parser(only=argv[1]).parse_args(argv[1:])  # SystemExit (exit 2) on an unknown flag or value
    elif program.startswith("python") and argv[1] == "-m":
        assert importlib.util.find_spec(argv[2]) is not None, argv
    else:
        assert program.startswith("python") and os.path.isfile(os.path.join(ROOT, argv[1])), argv
