"""Benchmark `invoke publish` on each image store: first publish, re-publish, and `docker push`.

The re-publish finds every blob in the registry and every compressed layer in the cache, so it
exports and re-hashes, but compresses and uploads nothing. The baseline is `docker push` of the
same image to the same registry (another repository), on the same engine, in the same run.
Run: python benchmarks/publish.py [--payload-mib 64] [--engines SOCKET ...]
(default: the legacy and the containerd engine that .ci/run starts, where they answer).
"""

from __future__ import annotations

import argparse
import functools
import os
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
from buildbox.oci.push import PlatformImage
from buildbox.oci.push import push as push_release
from buildbox.oci.registry import Registry as RegistryClient
from registry import Registry, id_of, push

ENGINES = ("unix:///var/run/docker.sock", "unix:///var/run/docker-containerd.sock")


def bench(where: str, payload_mib: int) -> tuple[str, float, float, float]:
    """(image store, first publish, best re-publish, docker push) on the engine at ``where``."""
    scratch = Path(tempfile.mkdtemp(prefix="buildbox-bench-"))
    registry = Registry(scratch / "registry").start()
    client = docker.DockerClient(base_url=where, version="auto", timeout=600)
    engine = Engine(client, where)
    tag = f"{registry.host}/bench/payload:local"
    try:
        context = scratch / "context"
        context.mkdir()
        shutil.copy("/bin/busybox", context / "busybox")
        noise = random.Random(0).randbytes(payload_mib * 1024 * 1024)  # noqa: S311
        (context / "payload").write_bytes(noise)
        (context / "Dockerfile").write_text(
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY payload /payload\n"
        )
        image, _ = client.images.build(path=str(context), tag=tag, network_mode="none")
        image_id = id_of(image)
        remote = RegistryClient(registry.host)
        sbom = b'{"bomFormat": "CycloneDX", "specVersion": "1.6"}'

        def publish_once() -> float:
            started = time.perf_counter()
            prepared = prepare(
                functools.partial(engine.save, image_id), image_id, scratch / "cache", 0
            )
            entry = PlatformImage("linux/amd64", prepared, sbom, "sbom.json")
            push_release(remote, "bench/payload", "v1", [entry], "1970-01-01T00:00:00Z")
            return time.perf_counter() - started

        first = publish_once()
        again = min(publish_once() for _ in range(3))
        remote.close()
        started = time.perf_counter()
        push(client, f"{registry.host}/bench/payload", "local")
        docker_push = time.perf_counter() - started
        store = engine.describe().store
    finally:
        client.images.remove(tag, force=True)
        client.close()
        registry.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return store, first, again, docker_push


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--payload-mib", type=int, default=64)
    parser.add_argument("--engines", nargs="*", default=None)
    args = parser.parse_args()
    engines = args.engines or [
        where for where in ENGINES if os.path.exists(where.removeprefix("unix://"))
    ]
    print(f"publish benchmark: busybox + {args.payload_mib} MiB layer, loopback registry")
    for where in engines:
        store, first, again, docker_push = bench(where, args.payload_mib)
        print(f"{store} image store ({where}):")
        print(f"  first publish (export, compress, upload): {first:.2f} s")
        print(f"  re-publish, unchanged (all blobs there):   {again:.3f} s")
        print(f"  docker push of the same image (baseline):  {docker_push:.2f} s")
        print(f"  first publish / docker push: {first / docker_push:.2f}x")
        print(f"  re-publish / first publish:  {again / first:.3f}x")


if __name__ == "__main__":
    main()
