"""Benchmark start-up: `invoke --list` and `invoke check` on this repository, whole process.

Run: python benchmarks/startup.py [--runs 7]
Baselines measured in the same run: a bare interpreter (`python -c pass`) and invoke without
any project (`python -m invoke --version`). Medians of --runs runs after one warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def median_seconds(command: list[str], runs: int) -> float:
    times = []
    for attempt in range(runs + 1):
        started = time.perf_counter()
        subprocess.run(command, cwd=REPO, check=True, capture_output=True)
        if attempt:  # the first run only warms the file cache
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    python = [sys.executable]
    measured = {
        "python -c pass (baseline)": median_seconds([*python, "-c", "pass"], args.runs),
        "invoke --version (baseline)": median_seconds(
            [*python, "-m", "invoke", "--version"], args.runs
        ),
        "invoke --list": median_seconds([*python, "-m", "invoke", "--list"], args.runs),
        "invoke check": median_seconds([*python, "-m", "invoke", "check"], args.runs),
    }
    invoke_alone = measured["invoke --version (baseline)"]
    print(f"start-up benchmark: median of {args.runs} whole-process runs")
    for what, seconds in measured.items():
        print(f"{what:30s} {seconds:6.3f} s  = {seconds / invoke_alone:4.1f}x invoke alone")


if __name__ == "__main__":
    main()
