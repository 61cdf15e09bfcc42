"""Smoke tests of the integration harness: the real engine, registries and base image work."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests
from docker import DockerClient

from conftest import SESSION_LABELS, BaseImage
from registry import Registry, id_of, push

pytestmark = pytest.mark.integration


def skopeo_inspect(reference: str, *extra: str) -> dict[str, Any]:
    result = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", *extra, f"docker://{reference}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_base_image_is_pinned_in_the_registry(busybox_base: BaseImage, registry: Registry) -> None:
    assert busybox_base.digest.startswith("sha256:")
    assert len(busybox_base.digest) == len("sha256:") + 64
    assert skopeo_inspect(busybox_base.ref)["Digest"] == busybox_base.digest


@pytest.mark.engine
def test_build_push_and_pull_back_by_digest(
    docker_client: DockerClient, registry: Registry, busybox_base: BaseImage, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text(
        f'FROM {busybox_base.ref}\nRUN echo smoke > /smoke.txt\nCMD ["cat", "/smoke.txt"]\n'
    )
    repository = f"{registry.host}/smoke"
    image, _ = docker_client.images.build(
        path=str(tmp_path), tag=f"{repository}:test", network_mode="none", rm=True,
        labels=SESSION_LABELS,
    )  # fmt: skip
    digest = push(docker_client, repository, "test")
    docker_client.images.remove(id_of(image), force=True)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(f"{repository}:test")

    pulled = docker_client.images.pull(f"{repository}@{digest}")
    assert f"{repository}@{digest}" in pulled.attrs["RepoDigests"]
    try:
        output = docker_client.containers.run(id_of(pulled), network_mode="none", remove=True)
        assert output == b"smoke\n"
        assert skopeo_inspect(f"{repository}:test")["Digest"] == digest
    finally:
        docker_client.images.remove(id_of(pulled), force=True)


def test_auth_registry_needs_the_password(
    docker_client: DockerClient,
    auth_registry: Registry,
    busybox_base: BaseImage,
    request: pytest.FixtureRequest,
) -> None:
    assert requests.get(f"{auth_registry.url}/v2/", timeout=5).status_code == 401
    wrong = requests.get(f"{auth_registry.url}/v2/", auth=("ci", "not-it"), timeout=5)
    assert wrong.status_code == 401
    assert requests.get(f"{auth_registry.url}/v2/", auth=auth_registry.auth, timeout=5).ok

    repository = f"{auth_registry.host}/busybox-base"
    docker_client.images.get(busybox_base.ref).tag(repository, "latest")
    request.addfinalizer(lambda: docker_client.images.remove(f"{repository}:latest"))
    with pytest.raises(RuntimeError, match=r"no basic auth credentials|unauthorized"):
        push(docker_client, repository, "latest")
    username, password = auth_registry.auth or ("", "")
    digest = push(
        docker_client, repository, "latest", auth={"username": username, "password": password}
    )
    assert digest == busybox_base.digest
    creds = f"--creds={username}:{password}"
    assert skopeo_inspect(f"{repository}@{digest}", creds)["Digest"] == digest
