"""Benchmark publishing a large image: first publish (export, compress, upload) with one and with
several upload workers, against `docker push` of the same image in the same run; peak memory of
the publishing process; and a publish to a second repository that mounts every blob instead of
uploading it. The payload is incompressible and split over several layers.

Run: python benchmarks/upload.py [--payload-mib 1024] [--layers 4] [--workers 4]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import multiprocessing
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import docker
import docker.errors

from buildbox.build.engine import Engine
from buildbox.digests import digest_of
from buildbox.oci.image import prepare
from buildbox.oci.registry import Registry as RegistryClient
from buildbox.release.publish import PlatformImage, publish
from registry import Registry, push

SBOM = b'{"bomFormat": "CycloneDX", "specVersion": "1.6"}'


def publish_once(
    host: str, image_id: str, cache: str, repository: str, workers: int, mount_from: str
) -> None:
    """One publish, in a process of its own (so that its peak memory is its own)."""
    client = docker.DockerClient(version="auto", timeout=900)
    engine = Engine(client, "default")
    prepared = prepare(functools.partial(engine.save, image_id), image_id, Path(cache), 0)
    blobs = [digest_of(prepared.config), *(layer.digest for layer in prepared.layers)]
    mounts = dict.fromkeys(blobs, mount_from) if mount_from else None
    with RegistryClient(host) as remote:
        entry = PlatformImage("linux/amd64", prepared, SBOM, "sbom.json")
        publish(remote, repository, "v1", [entry], "1970-01-01T00:00:00Z", workers=workers,
                mounts=mounts)  # fmt: skip
    client.close()


def timed(*arguments: object) -> tuple[float, float]:
    """(seconds, peak resident MiB) of one publish in a child process."""
    started = time.perf_counter()
    process = multiprocessing.get_context("fork").Process(target=publish_once, args=arguments)
    process.start()
    process.join()
    if process.exitcode != 0:
        raise SystemExit(f"publish failed with exit code {process.exitcode}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return time.perf_counter() - started, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--payload-mib", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--workers", type=int, default=4)
    arguments = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="buildbox-bench-upload-"))
    registry = Registry(scratch / "registry").start()
    client = docker.DockerClient(version="auto", timeout=900)
    tag = f"{registry.host}/bench/large:local"
    try:
        context = scratch / "context"
        context.mkdir()
        shutil.copy("/bin/busybox", context / "busybox")
        dockerfile = ["FROM scratch", "COPY busybox /bin/busybox"]
        each = arguments.payload_mib // arguments.layers
        noise = random.Random(0)  # noqa: S311 (test data, not secrets)
        for number in range(arguments.layers):
            with (context / f"payload{number}").open("wb") as payload:
                for _ in range(each):
                    payload.write(noise.randbytes(1024 * 1024))
            dockerfile.append(f"COPY payload{number} /payload{number}")
        (context / "Dockerfile").write_text("\n".join(dockerfile) + "\n")
        image, _ = client.images.build(path=str(context), tag=tag, network_mode="none")
        shutil.rmtree(context)

        host = registry.host
        one, peak_one = timed(host, image.id, str(scratch / "cache1"), "bench/one", 1, "")
        many, peak_many = timed(
            host, image.id, str(scratch / "cache2"), "bench/many", arguments.workers, ""
        )
        mounted, _ = timed(
            host, image.id, str(scratch / "cache2"), "bench/mounted", arguments.workers,
            "bench/many",
        )  # fmt: skip
        uploaded_again, _ = timed(
            host, image.id, str(scratch / "cache2"), "bench/again", arguments.workers, ""
        )
        started = time.perf_counter()
        push(client, f"{registry.host}/bench/large", "local")
        docker_push = time.perf_counter() - started
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(tag, force=True)
        client.close()
        registry.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"publish of busybox + {arguments.payload_mib} MiB incompressible in "
        f"{arguments.layers} layers, loopback registry (docker-registry):"
    )
    print(f"  docker push (baseline):                 {docker_push:7.2f} s")
    print(
        f"  first publish, 1 worker:                {one:7.2f} s  {one / docker_push:.2f}x, "
        f"peak {peak_one:.0f} MiB resident"
    )
    print(
        f"  first publish, {arguments.workers} workers:               {many:7.2f} s  "
        f"{many / docker_push:.2f}x, peak {peak_many:.0f} MiB resident"
    )
    print(f"  to a 2nd repository, compressed layers cached, upload: {uploaded_again:7.2f} s")
    print(
        f"  to a 2nd repository, compressed layers cached, mounts: {mounted:7.2f} s "
        f"({uploaded_again / mounted:.1f}x faster)"
    )


if __name__ == "__main__":
    main()
