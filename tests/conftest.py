"""Test harness: a real Docker engine, real registries, a real loopback artifact server.

Integration tests fail, never skip, when the engine or the registry is missing and
BUILDBOX_REQUIRE_DOCKER=1 (CI sets it). Without it they skip, so a laptop without Docker can still
run the unit tests.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import docker
import docker.errors
import pytest

from artifact_server import ArtifactServer, tarball
from projects import FIXTURES, make_project, write_yaml
from registry import Registry

REQUIRE_DOCKER = os.environ.get("BUILDBOX_REQUIRE_DOCKER") == "1"
BUSYBOX = Path("/bin/busybox")


def missing(what: str) -> NoReturn:
    """Fail under BUILDBOX_REQUIRE_DOCKER=1, otherwise skip: a missing engine is never a pass."""
    if REQUIRE_DOCKER:
        pytest.fail(f"{what} (BUILDBOX_REQUIRE_DOCKER=1: integration tests must run)")
    pytest.skip(what)


def push(client: Any, repository: str, tag: str, auth: dict[str, str] | None = None) -> str:
    """Push ``repository:tag`` through the engine; the pushed manifest's digest.

    docker-py reports push failures as error chunks inside a successful stream, so read them all.
    """
    digest = None
    for chunk in client.api.push(repository, tag, stream=True, decode=True, auth_config=auth):
        if "error" in chunk or "errorDetail" in chunk:
            raise RuntimeError(f"push of {repository}:{tag} failed: {chunk.get('error', chunk)}")
        digest = chunk.get("aux", {}).get("Digest", digest)
    if digest is None:
        raise RuntimeError(f"push of {repository}:{tag} reported no digest")
    return str(digest)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    try:
        client = docker.from_env(version="auto", timeout=120)
        client.ping()
    except docker.errors.DockerException as error:
        missing(f"no Docker engine: {error}")
    yield client
    client.close()


def _start(registry: Registry) -> Registry:
    try:
        return registry.start()
    except FileNotFoundError as error:
        missing(str(error))


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry without auth, on a free 127.0.0.1 port, with its own storage."""
    running = _start(Registry(tmp_path_factory.mktemp("registry")))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry that requires a username and password (htpasswd)."""
    if shutil.which("htpasswd") is None:
        missing("htpasswd is not installed (apt-get install apache2-utils)")
    running = _start(
        Registry(tmp_path_factory.mktemp("auth-registry"), username="ci", password="pa55-w0rd")
    )
    yield running
    running.stop()


@pytest.fixture(scope="session")
def artifact_server() -> Iterator[ArtifactServer]:
    server = ArtifactServer().start()
    yield server
    server.stop()


@pytest.fixture
def artifacts(artifact_server: ArtifactServer) -> Iterator[ArtifactServer]:
    """The shared artifact server, behaving again after each test."""
    yield artifact_server
    artifact_server.behave()


@dataclass(frozen=True)
class BaseImage:
    repository: str
    digest: str

    @property
    def ref(self) -> str:
        """The base pinned by digest, as a box.yaml names it."""
        return f"{self.repository}@{self.digest}"


@pytest.fixture(scope="session")
def busybox_base(
    docker_client: Any, registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BaseImage]:
    """A tiny base image built FROM scratch with Debian's static busybox, pushed and pinned."""
    if not BUSYBOX.is_file():
        missing(f"{BUSYBOX} is missing (apt-get install busybox-static)")
    context = tmp_path_factory.mktemp("busybox-base")
    shutil.copy(BUSYBOX, context / "busybox")
    (context / "Dockerfile").write_text(
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "mkdir", "-p", "/sbin", "/usr/bin", "/usr/sbin", "/tmp"]\n'
        'RUN ["/bin/busybox", "--install", "-s"]\n'
    )
    repository = f"{registry.host}/busybox-base"
    image, _ = docker_client.images.build(
        path=str(context), tag=f"{repository}:latest", network_mode="none", rm=True
    )
    yield BaseImage(repository, push(docker_client, repository, "latest"))
    # The registry's port differs every run: leave no image behind under a dead name.
    docker_client.images.remove(image.id, force=True)


HELLO_VERSION = "1.0"


@pytest.fixture
def fixture_project(tmp_path: Path, artifacts: ArtifactServer, busybox_base: BaseImage) -> Path:
    """A project holding the fixture box: busybox base, one tool from the artifact server."""
    name = f"hello-{HELLO_VERSION}.tar.gz"
    script = f'#!/bin/sh\necho "hello {HELLO_VERSION}"\n'
    url = artifacts.add(name, tarball({"hello/bin/hello": script}, executable=("hello/bin/hello",)))
    hello = {
        "version": HELLO_VERSION,
        "license": "MIT",
        "install": {"kind": "tarball", "dest": "/opt/hello", "strip_components": 1},
        "probe": {"command": ["/opt/hello/bin/hello"], "expect": f"hello {HELLO_VERSION}"},
        "artifacts": {
            "linux/amd64": {
                "url": url,
                "sha256": artifacts.sha256(name),
                "sha256_source": "generated by the test artifact server",
            }
        },
    }
    root = make_project(tmp_path / "project", components={"hello": hello}, boxes={})
    box_dir = root / "buildboxes" / "fixture"
    shutil.copytree(FIXTURES / "box", box_dir)
    write_yaml(
        box_dir / "box.yaml",
        {
            "description": "test fixture",
            "version": 1,
            "base": busybox_base.ref,
            "platforms": ["linux/amd64"],
            "components": ["hello"],
        },
    )
    return root
