"""Benchmark `invoke publish`: the first publish against re-publishing an unchanged image.

The re-publish finds every blob in the registry and every compressed layer in the cache, so it
exports, compresses and uploads nothing. Run: python benchmarks/publish.py [--payload-mib 64]
(needs dockerd and docker-registry).
"""

from __future__ import annotations

import argparse
import functools
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import docker

from buildbox.build.engine import Engine
from buildbox.oci.image import prepare
from buildbox.oci.registry import Registry as RegistryClient
from buildbox.release.publish import PlatformImage, publish
from registry import Registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--payload-mib", type=int, default=64)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="buildbox-bench-"))
    registry = Registry(scratch / "registry").start()
    client = docker.from_env(version="auto", timeout=600)
    engine = Engine(client, "benchmark")
    tag = f"{registry.host}/bench/payload:local"
    try:
        context = scratch / "context"
        context.mkdir()
        shutil.copy("/bin/busybox", context / "busybox")
        noise = random.Random(0).randbytes(args.payload_mib * 1024 * 1024)  # noqa: S311
        (context / "payload").write_bytes(noise)
        (context / "Dockerfile").write_text(
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY payload /payload\n"
        )
        image, _ = client.images.build(path=str(context), tag=tag, network_mode="none")
        remote = RegistryClient(registry.host)
        sbom = b'{"bomFormat": "CycloneDX", "specVersion": "1.6"}'

        def publish_once() -> float:
            started = time.perf_counter()
            prepared = prepare(
                functools.partial(engine.save, image.id), image.id, scratch / "cache", 0
            )
            entry = PlatformImage("linux/amd64", prepared, sbom, "sbom.json")
            publish(remote, "bench/payload", "v1", [entry], "1970-01-01T00:00:00Z")
            return time.perf_counter() - started

        first = publish_once()
        again = min(publish_once() for _ in range(3))
        remote.close()
    finally:
        client.images.remove(tag, force=True)
        client.close()
        registry.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"publish benchmark: busybox + {args.payload_mib} MiB layer, loopback registry")
    print(f"first publish (export, compress, upload): {first:.2f} s")
    print(f"re-publish, unchanged (all blobs there):   {again:.3f} s")
    print(f"  re-publish / first publish: {again / first:.3f}x")


if __name__ == "__main__":
    main()
