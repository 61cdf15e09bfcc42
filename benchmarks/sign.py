"""Benchmark what signing costs a release: publish with and without cosign's signature and
attestations (what `invoke release` does for a one-platform box: sign the image, attest its
SBOM and the SLSA provenance), same image, same registry, same run; fresh repositories each time.

The baseline is the plain publish; the figure is the signed publish's median and the ratio.
Run: python benchmarks/sign.py [--runs 5] [--payload-mib 16]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import docker

from buildbox.build.engine import Engine
from buildbox.oci.cosign import Cosign
from buildbox.oci.image import prepare
from buildbox.oci.push import PlatformImage
from buildbox.oci.push import push as push_release
from buildbox.oci.registry import Registry as RegistryClient
from buildbox.settings import from_config
from registry import Registry, id_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--payload-mib", type=int, default=16)
    arguments = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="buildbox-bench-sign-"))
    os.environ["COSIGN_PASSWORD"] = "benchmark"  # noqa: S105 (a key made for this run)
    subprocess.run(["cosign", "generate-key-pair"], cwd=scratch, check=True, capture_output=True)
    key = str(scratch / "cosign.key")
    registry = Registry(scratch / "registry").start()
    client = docker.DockerClient(version="auto", timeout=600)
    engine = Engine(client, "default")
    tag = f"{registry.host}/bench/signed:local"
    try:
        context = scratch / "context"
        context.mkdir()
        shutil.copy("/bin/busybox", context / "busybox")
        noise = random.Random(0).randbytes(arguments.payload_mib * 1024 * 1024)  # noqa: S311
        (context / "payload").write_bytes(noise)
        (context / "Dockerfile").write_text("FROM scratch\nCOPY busybox /bin/\nCOPY payload /\n")
        image, _ = client.images.build(path=str(context), tag=tag, network_mode="none")
        image_id = id_of(image)
        prepared = prepare(functools.partial(engine.save, image_id), image_id, scratch / "cache", 0)
        sbom = json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1}).encode()
        provenance = json.dumps(
            {
                "buildDefinition": {"buildType": "urn:bench", "externalParameters": {}},
                "runDetails": {"builder": {"id": "urn:bench"}},
            }
        ).encode()
        remote = RegistryClient(registry.host)
        settings = from_config({"root": str(scratch), "registry": f"{registry.host}/bench"})
        entry = PlatformImage("linux/amd64", prepared, sbom, "sbom.json")

        def sign(repository: str, digest: str, platforms: dict[str, str]) -> None:
            with Cosign(registry.host, settings, http=True) as cosign:
                image_ref = f"{repository}@{digest}"
                cosign.sign(image_ref, key, transparency_log=False)
                cosign.attest(image_ref, sbom, "cyclonedx", key, transparency_log=False)
                cosign.attest(image_ref, provenance, "slsaprovenance1", key, transparency_log=False)

        def once(number: int, signed: bool) -> float:
            repository = f"bench/{'signed' if signed else 'plain'}{number}"
            started = time.perf_counter()
            push_release(
                remote, repository, "v1", [entry], "1970-01-01T00:00:00Z",
                sign=sign if signed else None,
            )  # fmt: skip
            return time.perf_counter() - started

        plain = [once(n, False) for n in range(arguments.runs)]
        signed = [once(n, True) for n in range(arguments.runs)]
        remote.close()
    finally:
        client.images.remove(tag, force=True)
        client.close()
        registry.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    base, with_signing = statistics.median(plain), statistics.median(signed)
    print(
        f"publish of a {arguments.payload_mib} MiB image to a fresh repository, median of "
        f"{arguments.runs}:"
    )
    print(f"  plain publish:                    {base:6.2f} s")
    print(
        f"  signed (1 signature, 2 attests):  {with_signing:6.2f} s  "
        f"({with_signing / base:.2f}x, +{with_signing - base:.2f} s per release)"
    )


if __name__ == "__main__":
    main()
