"""Benchmark publishing a large image: first publish (export, compress, upload) with one and with
several upload workers, against `docker push` of the same image in the same run; peak memory of
the publishing process; and a publish to a second repository that mounts every blob instead of
uploading it. The payload is incompressible and split over several layers, or a built box's
image (`--image`).

The first publish is split into its two steps (export and compress; upload), and two of its parts
are measured alone in the same run: `docker save`, and the toolkit's gzip over as much data.

Run: python benchmarks/upload.py [--payload-mib 1024] [--layers 4] [--workers 4]
     python benchmarks/upload.py --image 127.0.0.1:5000/buildbox/debian13:v1 (a built box)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import multiprocessing
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import docker
import docker.errors
from docker.models.images import Image

from buildbox.build.engine import Engine
from buildbox.digests import digest_of
from buildbox.oci.image import COMPRESS_LEVEL, prepare
from buildbox.oci.pgzip import ParallelGzipWriter
from buildbox.oci.push import PlatformImage
from buildbox.oci.push import push as push_release
from buildbox.oci.registry import Registry as RegistryClient
from registry import Registry, id_of, push

SBOM = b'{"bomFormat": "CycloneDX", "specVersion": "1.6"}'


def publish_once(
    steps: Connection,
    host: str,
    image_id: str,
    cache: str,
    repository: str,
    workers: int,
    mount_from: str,
) -> None:
    """One publish, in a process of its own (so that its peak memory is its own); sends back
    how long its export-and-compress step took."""
    client = docker.DockerClient(version="auto", timeout=900)
    engine = Engine(client, "default")
    started = time.perf_counter()
    prepared = prepare(functools.partial(engine.save, image_id), image_id, Path(cache), 0)
    steps.send(time.perf_counter() - started)
    blobs = [digest_of(prepared.config), *(layer.digest for layer in prepared.layers)]
    mounts = dict.fromkeys(blobs, mount_from) if mount_from else None
    with RegistryClient(host) as remote:
        entry = PlatformImage("linux/amd64", prepared, SBOM, "sbom.json")
        push_release(
            remote, repository, "v1", [entry], "1970-01-01T00:00:00Z", workers=workers,
            mounts=mounts,
        )  # fmt: skip
    client.close()


def timed(*arguments: object) -> tuple[float, float, float]:
    """(seconds, of which export and compress, peak resident MiB) of one publish in a child
    process."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    started = time.perf_counter()
    process = context.Process(target=publish_once, args=(sender, *arguments))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise SystemExit(f"publish failed with exit code {process.exitcode}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return time.perf_counter() - started, receiver.recv(), peak


def compression_seconds(mib: int) -> float:
    """The toolkit's gzip (``oci.pgzip``, on every core) over ``mib`` MiB of incompressible data,
    written nowhere: the least its export-and-compress step can take, after `docker save`."""
    block = random.Random(1).randbytes(1024 * 1024)  # noqa: S311 (test data, not secrets)
    cores = os.cpu_count() or 1
    started = time.perf_counter()
    with (
        open(os.devnull, "wb") as nowhere,
        ThreadPoolExecutor(max_workers=cores) as pool,
        ParallelGzipWriter(nowhere, COMPRESS_LEVEL, pool, 2 * cores) as sink,
    ):
        for _ in range(mib):
            sink.write(block)
    return time.perf_counter() - started


def save_seconds(client: docker.DockerClient, image_id: str) -> float:
    """`docker save` of the image, read to the end and thrown away."""
    started = time.perf_counter()
    for _ in Engine(client, "default").save(image_id):
        pass
    return time.perf_counter() - started


def synthetic_image(
    client: docker.DockerClient, context: Path, tag: str, payload_mib: int, layers: int
) -> Image:
    """busybox and ``payload_mib`` MiB of incompressible data in ``layers`` layers, built."""
    context.mkdir()
    shutil.copy("/bin/busybox", context / "busybox")
    dockerfile = ["FROM scratch", "COPY busybox /bin/busybox"]
    noise = random.Random(0)  # noqa: S311 (test data, not secrets)
    for number in range(layers):
        with (context / f"payload{number}").open("wb") as payload:
            for _ in range(payload_mib // layers):
                payload.write(noise.randbytes(1024 * 1024))
        dockerfile.append(f"COPY payload{number} /payload{number}")
    (context / "Dockerfile").write_text("\n".join(dockerfile) + "\n")
    image, _ = client.images.build(path=str(context), tag=tag, network_mode="none")
    shutil.rmtree(context)
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--payload-mib", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--image", help="publish this local image (a built box) instead of the synthetic one"
    )
    arguments = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="buildbox-bench-upload-"))
    registry = Registry(scratch / "registry").start()
    client = docker.DockerClient(version="auto", timeout=900)
    tag = f"{registry.host}/bench/large:local"
    try:
        if arguments.image:
            image = client.images.get(arguments.image)
            image.tag(f"{registry.host}/bench/large", "local")
            described = f"{arguments.image} ({image.attrs['Size'] / 2**20:.0f} MiB)"
        else:
            image = synthetic_image(
                client, scratch / "context", tag, arguments.payload_mib, arguments.layers
            )
            described = (
                f"busybox + {arguments.payload_mib} MiB incompressible in {arguments.layers} layers"
            )

        host, image_id = registry.host, id_of(image)
        one, prepare_one, peak_one = timed(
            host, image_id, str(scratch / "cache1"), "bench/one", 1, ""
        )
        many, prepare_many, peak_many = timed(
            host, image_id, str(scratch / "cache2"), "bench/many", arguments.workers, ""
        )
        mounted, _, _ = timed(
            host, image_id, str(scratch / "cache2"), "bench/mounted", arguments.workers,
            "bench/many",
        )  # fmt: skip
        uploaded_again, _, _ = timed(
            host, image_id, str(scratch / "cache2"), "bench/again", arguments.workers, ""
        )
        started = time.perf_counter()
        push(client, f"{registry.host}/bench/large", "local")
        docker_push = time.perf_counter() - started
        save = save_seconds(client, image_id)
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(tag, force=True)
        client.close()
        registry.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"publish of {described}, loopback registry (docker-registry):")
    print(f"  docker push (baseline):                 {docker_push:7.2f} s")
    print(
        f"  first publish, 1 worker:                {one:7.2f} s  {one / docker_push:.2f}x, "
        f"peak {peak_one:.0f} MiB resident; export and compress {prepare_one:.2f} s, "
        f"upload {one - prepare_one:.2f} s"
    )
    print(
        f"  first publish, {arguments.workers} workers:               {many:7.2f} s  "
        f"{many / docker_push:.2f}x, peak {peak_many:.0f} MiB resident; export and compress "
        f"{prepare_many:.2f} s, upload {many - prepare_many:.2f} s"
    )
    if not arguments.image:
        compress = compression_seconds(arguments.payload_mib)
        print(f"  compression alone (oci.pgzip):          {compress:7.2f} s")
    print(f"  docker save alone:                      {save:7.2f} s")
    print(f"  to a 2nd repository, compressed layers cached, upload: {uploaded_again:7.2f} s")
    print(
        f"  to a 2nd repository, compressed layers cached, mounts: {mounted:7.2f} s "
        f"({uploaded_again / mounted:.1f}x faster)"
    )


if __name__ == "__main__":
    main()
