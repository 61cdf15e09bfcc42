"""Benchmark `invoke build` and `invoke verify` on the real engine.

Prints, for the classic builder and BuildKit side by side on the same box: a cold build
(--no-cache), a cached rebuild (--force: every step from the engine's layer cache) and a no-op
rebuild (unchanged inputs: skipped); a plain `docker build` of the same context with a warm
layer cache as the baseline; the image size against base + installed payload; and verify of 20
probes in one container against one container per probe. DOCKER_HOST picks the engine.

Run: python benchmarks/build.py [--payload-mib 32]   (needs dockerd and docker-registry)
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import docker

from artifact_server import ArtifactServer, tarball
from buildbox.build.build import build_box
from buildbox.build.builder import Builder, ClassicBuilder
from buildbox.build.buildkit import BuildKitBuilder
from buildbox.build.context import assemble, write_tar
from buildbox.build.engine import Engine
from buildbox.define import project
from buildbox.define.inputs import box_components
from buildbox.define.library import Component
from buildbox.fetch import Fetcher, wanted_for
from buildbox.output import LogProgress
from buildbox.source import revision
from buildbox.verify import probe_script
from projects import FIXTURES, make_project, settings_for, write_yaml
from registry import Registry, push


def seconds(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def run(client: docker.DockerClient, image: str, script: str) -> None:
    client.containers.run(
        image, ["-c", script], entrypoint=["/bin/sh"], network_mode="none", remove=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--payload-mib", type=int, default=32)
    parser.add_argument("--probes", type=int, default=20)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="buildbox-bench-"))
    registry = Registry(scratch / "registry").start()
    server = ArtifactServer().start()
    client = docker.from_env(version="auto", timeout=600)
    engine = Engine(client, os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))
    try:
        base_context = scratch / "base"
        base_context.mkdir()
        shutil.copy("/bin/busybox", base_context / "busybox")
        (base_context / "Dockerfile").write_text(
            "FROM scratch\nCOPY busybox /bin/busybox\n"
            'RUN ["/bin/busybox", "mkdir", "-p", "/sbin", "/usr/bin", "/usr/sbin", "/tmp"]\n'
            'RUN ["/bin/busybox", "--install", "-s"]\n'
        )
        repository = f"{registry.host}/bench-base"
        client.images.build(path=str(base_context), tag=f"{repository}:latest", network_mode="none")
        base_ref = f"{repository}@{push(client, repository, 'latest')}"
        base_size = client.images.get(base_ref).attrs["Size"]

        payload = random.Random(0).randbytes(args.payload_mib * 1024 * 1024)  # noqa: S311
        script = '#!/bin/sh\necho "hello 1.0"\n'
        url = server.add(
            "hello.tar.gz",
            tarball(
                {"hello/bin/hello": script, "hello/share/payload": payload}, ("hello/bin/hello",)
            ),
        )
        hello = {
            "version": "1.0",
            "license": "MIT",
            "install": {"kind": "tarball", "dest": "/opt/hello", "strip_components": 1},
            "probe": {"command": ["/opt/hello/bin/hello"], "expect": "hello 1.0"},
            "artifacts": {
                "linux/amd64": {
                    "url": url,
                    "sha256": server.sha256("hello.tar.gz"),
                    "sha256_source": "bench",
                }
            },
        }
        root = make_project(scratch / "project", components={"hello": hello}, boxes={})
        shutil.copytree(FIXTURES / "box", root / "buildboxes" / "bench")
        (root / "buildboxes" / "bench" / "motd").write_text(f"bench {time.time()}\n")
        write_yaml(
            root / "buildboxes" / "bench" / "box.yaml",
            {"version": 1, "base": base_ref, "platforms": ["linux/amd64"], "components": ["hello"]},
        )
        settings = dataclasses.replace(
            settings_for(root), cache_dir=scratch / "cache", registry=f"{registry.host}/bench"
        )
        loaded = project.load(settings)
        box = loaded.box("bench")
        fetcher = Fetcher(settings, LogProgress(io.StringIO()))
        source = revision(root)

        def build(builder: Builder, no_cache: bool = False, force: bool = False) -> str:
            return build_box(
                loaded,
                box,
                "linux/amd64",
                engine=engine,
                fetcher=fetcher,
                revision=source,
                builder=builder,
                log=lambda line: None,
                no_cache=no_cache,
                force=force,
            ).image_id

        timings = {}
        for name, builder in (
            ("classic", ClassicBuilder(engine)),
            ("BuildKit", BuildKitBuilder(engine)),
        ):
            cold = seconds(lambda: build(builder, no_cache=True))  # noqa: B023 (called at once)
            cached = seconds(lambda: build(builder, force=True))  # noqa: B023
            noop = seconds(lambda: build(builder))  # noqa: B023
            timings[name] = (cold, cached, noop)

        # The plain baseline: the same context through `docker build` with every layer cached.
        context_tar = scratch / "context.tar"
        fetched = fetcher.fetch_all(wanted_for([box], loaded.library, "linux/amd64"))
        artifacts = {f.wanted.sha256: f.path for f in fetched}
        with context_tar.open("wb") as stream:
            write_tar(assemble(box, loaded.library, settings, "linux/amd64", artifacts), stream)
        plain_command = [
            "docker",
            "build",
            "-q",
            "--network=none",
            f"--build-arg=BUILDBOX_BASE={base_ref}",
            "-",
        ]

        def plain_build() -> None:
            with context_tar.open("rb") as stdin:
                subprocess.run(plain_command, stdin=stdin, check=True, capture_output=True)

        plain_build()  # warm the layer cache
        plain = seconds(plain_build)

        image_id = build(ClassicBuilder(engine))
        image_size = client.images.get(image_id).attrs["Size"]
        installed = len(payload) + len(script)

        components = box_components(box, loaded.library)
        many: tuple[Component, ...] = components * args.probes
        one_container = seconds(lambda: run(client, image_id, probe_script(many)))

        def one_per_probe() -> None:
            for _ in range(args.probes):
                run(client, image_id, probe_script(components))

        per_probe = seconds(one_per_probe)
    finally:
        for image in client.images.list():  # the registry's port dies with this run: untag
            for tag in image.tags:
                if tag.startswith(registry.host):
                    client.images.remove(tag)
        client.close()
        server.stop()
        registry.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    mib = 1024 * 1024
    print(f"build benchmark: busybox base + one {args.payload_mib} MiB tarball")
    print(f"{'':44s}{'classic':>10s}{'BuildKit':>10s}")
    for row, index in (
        ("cold build (--no-cache)", 0),
        ("cached rebuild (--force, layer cache)", 1),
        ("no-op rebuild (inputs unchanged, skipped)", 2),
    ):
        values = "".join(f"{timings[name][index]:9.3f}s" for name in ("classic", "BuildKit"))
        print(f"{row:44s}{values}")
    print(f"  cold: BuildKit / classic: {timings['BuildKit'][0] / timings['classic'][0]:.2f}x")
    print(f"plain `docker build`, warm layer cache:     {plain:.3f} s")
    noop = timings["classic"][2]
    print(f"  no-op rebuild / plain warm docker build: {noop / plain:.2f}x")
    print(
        f"image size: {image_size / mib:.1f} MiB; base {base_size / mib:.1f} MiB + installed "
        f"payload {installed / mib:.1f} MiB = {(base_size + installed) / mib:.1f} MiB"
    )
    print(f"  image / (base + payload): {image_size / (base_size + installed):.3f}")
    print(f"verify, {args.probes} probes in one container:   {one_container:.2f} s")
    print(f"verify, one container per probe:       {per_probe:.2f} s")
    print(f"  one container / one per probe: {one_container / per_probe:.2f}x")


if __name__ == "__main__":
    main()
