"""The old entry point of ``rmpsam-edge benchmark --preset collect-fidelity`` (benchmarks/collect_fidelity.py),
kept because committed results files record it (their quantized bundles are not in the repository):

    python -m rmpsam_edge.quantize.bench --collect BUNDLE [BUNDLE ...] [--out FILE.json]

runs ``rmpsam-edge benchmark --preset collect-fidelity --from BUNDLE ... [--json FILE.json --force]``.
"""
import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    new = {"--collect": "--from", "--out": "--json"}
    from rmpsam_edge.cli import main as cli
    out = ["--force"] if "--out" in argv else []  # the old entry point overwrote its --out
    return cli(["benchmark", "--preset", "collect-fidelity"] + [new.get(a, a) for a in argv] + out)


if __name__ == "__main__":
    sys.exit(main())
