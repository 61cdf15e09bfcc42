"""Helpers for tests that publish: git repositories, registry look-ups, clean-up."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import json
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import docker.errors
import pytest
import requests
from docker import DockerClient

from buildbox.digests import digest_of
from buildbox.oci.documents import (
    MANIFEST_ACCEPT,
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    Descriptor,
    image_manifest,
)
from conftest import FixtureProject, tagged_images
from fault_proxy import FaultProxy, fault_proxy
from projects import run_cli, settle
from registry import Registry

GIT = ["git", "-c", "user.email=ci@example.org", "-c", "user.name=CI"]


def git(root: Path, *args: str) -> None:
    subprocess.run([*GIT, "-C", str(root), *args], check=True, capture_output=True)


def commit_all(root: Path, message: str = "change") -> None:
    git(root, "add", "-A")
    git(root, "commit", "-q", "--allow-empty", "-m", message)


class HasHost(Protocol):
    @property
    def host(self) -> str: ...


def point_at(project: FixtureProject, registry: HasHost) -> FixtureProject:
    """The project publishing to ``registry`` under a prefix no other test uses."""
    prefix = f"{registry.host}/t{uuid.uuid4().hex[:8]}"
    text = (project.root / "invoke.yaml").read_text().replace(project.registry, prefix)
    (project.root / "invoke.yaml").write_text(text)
    return dataclasses.replace(project, registry=prefix)


def untag_all(client: DockerClient, prefix: str) -> None:
    for _, tags in tagged_images(client):
        for tag in tags:
            if tag.startswith(prefix):
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(tag)


def skopeo(reference: str, *extra: str) -> dict[str, Any]:
    result = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", *extra, f"docker://{reference}"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def tag_digest(registry: Registry, repository: str, tag: str, auth: Any = None) -> str | None:
    answer = requests.head(
        f"{registry.url}/v2/{repository}/manifests/{tag}",
        headers={"Accept": MANIFEST_ACCEPT},
        auth=auth,
        timeout=10,
        verify=registry.verify,
    )
    return answer.headers.get("Docker-Content-Digest") if answer.status_code == 200 else None


#: The password of the cosign key pairs tests make: it must never appear in any output.
PASSWORD = "pw-5f0c1e-never-shown"


def key_pair(directory: Path) -> tuple[Path, Path]:
    """A cosign key pair made for the test: (private key, public key)."""
    directory.mkdir(parents=True)
    subprocess.run(
        ["cosign", "generate-key-pair"], cwd=directory, check=True, capture_output=True,
        env={"PATH": "/usr/bin:/bin", "COSIGN_PASSWORD": PASSWORD}, timeout=60,
    )  # fmt: skip
    return directory / "cosign.key", directory / "cosign.pub"


def build(project: FixtureProject) -> None:
    result = run_cli(project.root, "build", "--box=fixture")
    assert result.returncode == 0, result.stdout + result.stderr


def published_digest(stdout: str) -> str:
    line = next(line for line in stdout.splitlines() if "published" in line)
    return line.rsplit("@", 1)[1]


@pytest.fixture
def publishing(
    fixture_project: FixtureProject, registry: Registry, docker_client: DockerClient
) -> Iterator[FixtureProject]:
    """The fixture project in a git repository, publishing to the plain test registry."""
    project = point_at(fixture_project, registry)
    (project.root / ".gitignore").write_text("*.part\n")
    git(project.root, "init", "-q")
    commit_all(project.root, "fixture")
    yield project
    untag_all(docker_client, project.registry)


@pytest.fixture
def proxied(
    fixture_project: FixtureProject, registry: Registry, docker_client: DockerClient
) -> Iterator[tuple[FixtureProject, FaultProxy]]:
    """The fixture project in git, publishing through a fault proxy to the test registry."""
    with fault_proxy(registry.url) as proxy:
        project = point_at(fixture_project, proxy)
        config = project.root / "invoke.yaml"
        settle(config, registry_backoff=0.05)
        (project.root / ".gitignore").write_text("*.part\n")
        git(project.root, "init", "-q")
        commit_all(project.root, "fixture")
        yield project, proxy
        untag_all(docker_client, project.registry)


def tiny_image() -> tuple[bytes, list[tuple[str, bytes]]]:
    """An image manifest and its blobs (config, one empty layer): no engine needed."""
    tar = io.BytesIO()
    tarfile.open(fileobj=tar, mode="w").close()
    layer = gzip.compress(tar.getvalue(), mtime=0)
    config = json.dumps(
        {"architecture": "amd64", "os": "linux",
         "rootfs": {"type": "layers", "diff_ids": [digest_of(tar.getvalue())]}}
    ).encode()  # fmt: skip
    manifest = image_manifest(
        Descriptor.of(OCI_CONFIG, config), [Descriptor.of(OCI_LAYER_GZIP, layer)]
    )
    return manifest, [(digest_of(config), config), (digest_of(layer), layer)]
