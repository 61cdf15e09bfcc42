"""Benchmark a push through harsh registry faults: the same image pushed (blobs, manifest, SBOM
referrer, tag, as a release pushes) to a clean loopback registry, through the fault proxy with
no faults (what the proxy itself costs), and through the proxy's harsh mix (about 45 % of
requests fail: 429 with Retry-After: 1, 503, dropped connections, answers lost after the
registry acted, bodies cut short). Medians of a few runs, each into a fresh repository; the
ratios are against the clean push measured in the same run. Needs docker-registry, no engine.

Run: python benchmarks/faults.py [--layers 4] [--layer-mib 8] [--chunk-mib 4] [--runs 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from buildbox.digests import digest_of
from buildbox.http import RetryPolicy
from buildbox.oci.image import Layer, PreparedImage
from buildbox.oci.push import PlatformImage, push
from buildbox.oci.registry import Registry as Client
from fault_proxy import fault_proxy, harsh
from registry import Registry

SBOM = b'{"bomFormat": "CycloneDX", "specVersion": "1.6"}'


def image(directory: Path, layers: int, layer_mib: int, seed: int) -> PreparedImage:
    """Incompressible layers (the registry never opens them), unique per seed."""
    directory.mkdir(parents=True, exist_ok=True)
    made = []
    for number in range(layers):
        raw = seed.to_bytes(4, "big") + bytes(number) + _noise(layer_mib, seed * 100 + number)
        data = gzip.compress(raw, compresslevel=1, mtime=0)
        path = directory / f"layer-{seed}-{number}.gz"
        path.write_bytes(data)
        made.append(Layer(path, digest_of(data), len(data), digest_of(raw)))
    rootfs = {"type": "layers", "diff_ids": [layer.diff_id for layer in made]}
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": rootfs}).encode()
    return PreparedImage(config, tuple(made))


def _noise(mib: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(mib * 1024 * 1024)  # noqa: S311 (test data)


def pushed_in(host: str, prepared: PreparedImage, repository: str, chunk_mib: int) -> float:
    """Seconds to push ``prepared`` as a release does (4 upload workers), default attempts."""
    policy = RetryPolicy(attempts=6, time_limit=300, backoff=0.5)
    started = time.perf_counter()
    with Client(host, policy=policy, chunk_size=chunk_mib * 1024 * 1024) as client:
        entry = PlatformImage("linux/amd64", prepared, SBOM, "sbom.json")
        push(client, repository, "v1", [entry], "1970-01-01T00:00:00Z", workers=4)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--layer-mib", type=int, default=8)
    parser.add_argument("--chunk-mib", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="buildbox-bench-faults-"))
    registry = Registry(scratch / "registry").start()
    times: dict[str, list[float]] = {"clean": [], "proxy": [], "harsh": []}
    shares = []
    try:
        with fault_proxy(registry.url) as plain, fault_proxy(registry.url) as faulty:
            for fault in harsh():
                faulty.add(fault)
            hosts = {"clean": registry.host, "proxy": plain.host, "harsh": faulty.host}
            seed = 0
            for run in range(arguments.runs):
                for name, host in hosts.items():
                    seed += 1
                    layers, mib = arguments.layers, arguments.layer_mib
                    prepared = image(scratch / "images", layers, mib, seed)
                    times[name].append(
                        pushed_in(host, prepared, f"bench/{name}-{run}", arguments.chunk_mib)
                    )
                    shutil.rmtree(scratch / "images")
            shares.append(faulty.failed_share())
    finally:
        registry.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    clean = statistics.median(times["clean"])
    size = arguments.layers * arguments.layer_mib
    print(
        f"push of {arguments.layers} x {arguments.layer_mib} MiB layers ({size} MiB, chunks of "
        f"{arguments.chunk_mib} MiB, 4 workers), medians of {arguments.runs} runs:"
    )
    print(f"  clean registry (baseline):          {clean:7.2f} s")
    through = statistics.median(times["proxy"])
    print(f"  through the proxy, no faults:       {through:7.2f} s  {through / clean:.2f}x")
    harsh_time = statistics.median(times["harsh"])
    print(
        f"  through the harsh mix ({shares[-1]:.0%} failed):  {harsh_time:7.2f} s  "
        f"{harsh_time / clean:.2f}x ({harsh_time / through:.2f}x the proxy without faults)"
    )


if __name__ == "__main__":
    main()
