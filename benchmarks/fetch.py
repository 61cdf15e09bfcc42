"""Benchmark `invoke fetch`: cold parallel vs one-by-one, warm (cached) vs plain sha256sum.

Run: python benchmarks/fetch.py [--artifacts 8] [--size-mib 4] [--latency 0.1]
The upstream is the test suite's loopback artifact server with a per-request latency.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from artifact_server import ArtifactServer
from buildbox.fetch import Fetched, Fetcher, Wanted
from buildbox.settings import Settings


class Quiet:
    def started(self, wanted: Wanted, url: str, total: int | None) -> None: ...
    def advanced(self, wanted: Wanted, size: int) -> None: ...
    def finished(self, fetched: Fetched) -> None: ...
    def failed(self, wanted: Wanted, error: Exception) -> None: ...


def timed(action: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` runs of ``action()``."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--artifacts", type=int, default=8)
    parser.add_argument("--size-mib", type=float, default=4.0)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per request")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    server = ArtifactServer().start()
    server.latency = args.latency
    noise = random.Random(0)  # noqa: S311 (test data, not secrets)
    wanted = []
    for index in range(args.artifacts):
        name = f"artifact-{index}.bin"
        url = server.add(name, noise.randbytes(int(args.size_mib * 1024 * 1024)))
        wanted.append(Wanted(f"c{index}", "1", "linux/amd64", url, server.sha256(name)))

    with tempfile.TemporaryDirectory() as scratch:
        base = Settings(
            root=Path(scratch),
            registry="unused",
            cache_dir=Path(scratch) / "cache",
            platforms=("linux/amd64",),
        )
        runs = iter(range(10_000))

        def cold(workers: int) -> None:
            settings = dataclasses.replace(
                base, cache_dir=Path(scratch) / f"cold-{next(runs)}", fetch_workers=workers
            )
            Fetcher(settings, Quiet()).fetch_all(wanted)

        parallel = timed(lambda: cold(base.fetch_workers), args.repeat)
        serial = timed(lambda: cold(1), args.repeat)

        warm_fetcher = Fetcher(base, Quiet())
        files = [str(f.path) for f in warm_fetcher.fetch_all(wanted)]
        warm = timed(lambda: warm_fetcher.fetch_all(wanted), args.repeat * 3)
        plain = timed(
            lambda: subprocess.run(["sha256sum", *files], check=True, capture_output=True),
            args.repeat * 3,
        )
    server.stop()

    total = args.artifacts * args.size_mib
    print(
        f"fetch benchmark: {args.artifacts} artifacts x {args.size_mib:g} MiB "
        f"({total:g} MiB), {args.latency * 1000:g} ms latency per request, loopback server"
    )
    print(f"cold, {base.fetch_workers} parallel downloads: {parallel:.3f} s")
    print(f"cold, one by one:              {serial:.3f} s")
    print(f"  parallel speed-up: {serial / parallel:.2f}x")
    print(f"warm (all cached, re-hashed):  {warm:.3f} s")
    print(f"plain sha256sum of the files:  {plain:.3f} s")
    print(f"  warm fetch / sha256sum: {warm / plain:.2f}x")


if __name__ == "__main__":
    main()
