"""Benchmark the cost of normalising layers for reproducible digests, against a plain push.

Ours: export the image from the engine, rewrite every layer deterministically, gzip it, push.
Plain: `docker push` of the same image (the engine compresses and pushes as it likes).
Both go to a fresh loopback registry. Prints seconds per GiB of layers and the ratio.

Run: python benchmarks/normalise.py [--payload-mib 256]   (needs dockerd and docker-registry)
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
from buildbox.oci.push import PlatformImage
from buildbox.oci.push import push as push_release
from buildbox.oci.registry import Registry as RegistryClient
from registry import Registry, id_of, push


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--payload-mib", type=int, default=256)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="buildbox-bench-"))
    plain_registry = Registry(scratch / "plain").start()
    ours_registry = Registry(scratch / "ours").start()
    client = docker.from_env(version="auto", timeout=600)
    engine = Engine(client, "benchmark")
    tag = f"{plain_registry.host}/bench/normalise:latest"
    try:
        context = scratch / "context"
        context.mkdir()
        shutil.copy("/bin/busybox", context / "busybox")
        # Half random (incompressible), half text (compressible): like real tool trees.
        rng = random.Random(0)  # noqa: S311 (test data)
        half = args.payload_mib * 1024 * 1024 // 2
        (context / "random.bin").write_bytes(rng.randbytes(half))
        (context / "text.txt").write_bytes(
            b"".join(b"line %d of text\n" % i for i in range(half // 16))
        )
        (context / "Dockerfile").write_text(
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY random.bin text.txt /payload/\n"
        )
        image, _ = client.images.build(path=str(context), tag=tag, network_mode="none")
        image_id = id_of(image)
        layer_bytes = int(image.attrs["Size"])  # all layers, uncompressed

        started = time.perf_counter()
        push(client, tag.rsplit(":", 1)[0], "latest")
        plain = time.perf_counter() - started

        remote = RegistryClient(ours_registry.host)
        started = time.perf_counter()
        prepared = prepare(
            functools.partial(engine.save, image_id), image_id, scratch / "cache", 1_700_000_000
        )
        entry = PlatformImage("linux/amd64", prepared, b"{}", "sbom.json")
        push_release(remote, "bench/normalise", "v1", [entry], "2023-11-14T22:13:20Z")
        ours = time.perf_counter() - started
        remote.close()
    finally:
        client.images.remove(tag, force=True)
        client.close()
        plain_registry.stop()
        ours_registry.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    gib = layer_bytes / 2**30
    print(f"normalise benchmark: {layer_bytes / 2**20:.0f} MiB of layers, loopback registry")
    print(f"plain `docker push`:                {plain:.2f} s = {plain / gib:.1f} s per GiB")
    print(f"export + normalise + gzip + push:   {ours:.2f} s = {ours / gib:.1f} s per GiB")
    print(f"  normalised publish / plain push: {ours / plain:.2f}x")


if __name__ == "__main__":
    main()
