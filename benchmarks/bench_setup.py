"""Measure the two README commands against their budgets.

1. Installation on a fresh machine: a new virtual environment and
   ``pip install -e ".[book,dev]"`` (budget 300 s).
2. ``make test`` with the environment already installed (budget 600 s on 2 cores).

Prints one line per measurement with the ratio to its budget, then a JSON line.
Usage: ``python benchmarks/bench_setup.py [--skip-install] [--skip-test]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUDGETS = {"install_s": 300.0, "make_test_s": 600.0}


def _timed(cmd: list[str], **kw) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, **kw)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-install", action="store_true")
    parser.add_argument("--skip-test", action="store_true")
    args = parser.parse_args()
    results: dict[str, float] = {}
    if not args.skip_install:
        with tempfile.TemporaryDirectory() as tmp:
            venv = Path(tmp) / "venv"
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
            subprocess.run([*pip, "-e", ".[book,dev]"], cwd=REPO, check=True)
            results["install_s"] = time.perf_counter() - t0
    if not args.skip_test:
        results["make_test_s"] = _timed(["make", "test"], cwd=REPO)
    for name, value in results.items():
        ratio = value / BUDGETS[name]
        print(
            f"{name:>12}: {value:7.1f} s  budget {BUDGETS[name]:.0f} s  ratio {ratio:.2f}"
        )
    print(json.dumps({k: round(v, 1) for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
