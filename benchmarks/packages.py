"""Benchmark fetching a box's locked OS packages: cold and warm cache, against `apt-get download`.

Run: python benchmarks/packages.py [--packages gcc make git]   (needs dockerd and the Debian
archive; bootstraps, or reuses, the Debian 12 minbase the tests use)
Resolves the packages as `invoke lock` does, in a container of the base; then times the
toolkit's verified, parallel fetch into an empty cache (cold), the same again (warm: every file
re-hashed from the cache), and `apt-get download` of the same packages in the same base
(after its own `apt-get update`, which is not timed).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import docker

from buildbox.build.engine import Engine
from buildbox.fetch import Fetcher, Wanted
from buildbox.output import LogProgress
from buildbox.resolve import parse_resolution, resolve_script
from projects import settings_for

TARBALL = Path("/var/cache/buildbox-test/debian-bookworm-minbase-1700000000.tar")
IMAGE = "buildbox-bench/debian:bookworm"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packages", nargs="+", default=["gcc", "make", "git"])
    args = parser.parse_args()
    if not TARBALL.is_file():
        TARBALL.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar",
             "--skip=output/dev", "bookworm", str(TARBALL), "http://deb.debian.org/debian"],
            check=True, capture_output=True, env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"},
        )  # fmt: skip
    client = docker.from_env(version="auto", timeout=600)
    engine = Engine(client, os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))
    scratch = Path(tempfile.mkdtemp(prefix="buildbox-bench-"))
    try:
        client.api.import_image_from_file(str(TARBALL), repository=IMAGE.split(":")[0],
                                          tag="bookworm")  # fmt: skip
        output, status = engine.run_script(
            IMAGE, resolve_script(tuple(args.packages)), 1800, "bench", network="host"
        )
        assert status == 0, output[-2000:]
        locked = parse_resolution(output)
        wanted = [Wanted(p.name, p.version, "linux/amd64", p.url, p.sha256) for p in locked]
        total = sum(p.size for p in locked)
        settings = dataclasses.replace(settings_for(scratch), cache_dir=scratch / "cache")

        def fetch() -> float:
            started = time.perf_counter()
            Fetcher(settings, LogProgress(io.StringIO())).fetch_all(wanted)
            return time.perf_counter() - started

        cold = fetch()
        warm = fetch()
        names = " ".join(f"{p.name}={p.version}" for p in locked)
        script = (
            "apt-get update -q >/dev/null && cd /tmp && start=$(date +%s.%N) && "
            f"apt-get download -q {names} >/dev/null && end=$(date +%s.%N) && "
            'echo "$start $end"'
        )
        timed, status = engine.run_script(IMAGE, script, 1800, "bench", network="host")
        assert status == 0, timed[-2000:]
        start, end = map(float, timed.split()[-2:])
        apt = end - start
    finally:
        client.images.remove(IMAGE, force=True)
        client.close()
        shutil.rmtree(scratch, ignore_errors=True)
    mib = total / 1024 / 1024
    print(f"packages benchmark: {' '.join(args.packages)} -> {len(locked)} packages, {mib:.1f} MiB")
    print(f"toolkit fetch, cold cache (verified, parallel): {cold:.2f} s")
    print(f"toolkit fetch, warm cache (re-hashed):          {warm:.2f} s")
    print(f"apt-get download, same packages and base:       {apt:.2f} s")
    print(
        f"  cold / apt-get download: {cold / apt:.2f}x; warm / apt-get download: {warm / apt:.2f}x"
    )


if __name__ == "__main__":
    main()
