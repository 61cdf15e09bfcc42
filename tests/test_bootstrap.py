"""Bases bootstrapped from locked packages: mmdebstrap from the real Debian archive to lock,
then offline from the verified cache to build, reproducibly."""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile

import pytest
from docker import DockerClient

from conftest import FixtureProject
from projects import run_cli, write_yaml
from registry import id_of

pytestmark = pytest.mark.integration

BOOTSTRAP = {
    "suite": "bookworm",
    "variant": "minbase",
    "mirror": "http://deb.debian.org/debian",
    "packages": ["make"],
}


def base_images(docker_client: DockerClient, box: str) -> list[str]:
    return [
        tag
        for entry in docker_client.api.images()
        for tag in entry.get("RepoTags") or []
        if tag.startswith(f"buildbox-base.invalid/{box}:")
    ]


@pytest.mark.engine
def test_a_bootstrapped_base_locks_builds_offline_and_reproduces(
    fixture_project: FixtureProject, docker_client: DockerClient
) -> None:
    root = fixture_project.root
    write_yaml(
        fixture_project.box_dir / "box.yaml",
        {"version": 1, "platforms": ["linux/amd64"], "components": ["hello"],
         "bootstrap": BOOTSTRAP},
    )  # fmt: skip
    locked = run_cli(root, "lock", "fixture")
    assert locked.returncode == 0, locked.stdout + locked.stderr
    lock = json.loads((fixture_project.box_dir / "packages.lock").read_text())
    names = {p["name"] for p in lock["platforms"]["linux/amd64"]["packages"]}
    assert {"make", "libc6", "dpkg", "apt", "base-files"} <= names, "the whole base is locked"
    assert run_cli(root, "check").returncode == 0

    built = run_cli(root, "build", "fixture", "--no-cache")
    assert built.returncode == 0, built.stdout + built.stderr
    image = docker_client.images.get(fixture_project.release_tag())
    content = image.labels["org.opencontainers.image.base.digest"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", content)
    assert image.labels["org.opencontainers.image.base.name"] == "bootstrap:bookworm/minbase"
    output = docker_client.containers.run(
        id_of(image), ["make", "--version"], network_mode="none", remove=True
    )
    assert output.decode().startswith("GNU Make 4.3")
    assert run_cli(root, "verify", "fixture").returncode == 0

    described = run_cli(root, "sbom", "fixture", "--output=-")
    assert described.returncode == 0, described.stderr
    [base] = [c for c in json.loads(described.stdout)["components"] if c["bom-ref"].startswith(
        "base:")]  # fmt: skip
    assert base["hashes"] == [{"alg": "SHA-256", "content": content.removeprefix("sha256:")}]

    # `docker import` of the uncompressed rootfs keeps it as the one layer: its diff_id is the
    # tarball's sha256, which is what lets a base be verified by image id.
    [base_tag] = base_images(docker_client, "fixture")
    assert docker_client.images.get(base_tag).attrs["RootFS"]["Layers"] == [content]

    # A tag planted with a forged label is never read: the base is found by its image id.
    forged = "sha256:" + "f" * 64
    docker_client.images.remove(base_tag, force=True)
    empty = io.BytesIO()
    tarfile.open(fileobj=empty, mode="w").close()
    planted = docker_client.api.import_image_from_data(
        empty.getvalue(), repository=base_tag.rpartition(":")[0], tag=base_tag.rpartition(":")[2],
        changes=[f"LABEL dev.buildbox.base-content={forged}"],
    )  # fmt: skip
    assert planted
    again = run_cli(root, "build", "fixture", "--no-cache", "--offline")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "importing the base of fixture (linux/amd64) again" in again.stdout
    rebuilt = docker_client.images.get(fixture_project.release_tag())
    assert rebuilt.labels["org.opencontainers.image.base.digest"] == content

    # The same lock and epoch give the same base, bootstrapped again from the cache, offline.
    for tag in base_images(docker_client, "fixture"):
        docker_client.images.remove(tag, force=True)
    shutil.rmtree(fixture_project.cache / "bases")
    again = run_cli(root, "build", "fixture", "--no-cache", "--offline")
    assert again.returncode == 0, again.stdout + again.stderr
    rebuilt = docker_client.images.get(fixture_project.release_tag())
    assert rebuilt.labels["org.opencontainers.image.base.digest"] == content
    for tag in base_images(docker_client, "fixture"):
        docker_client.images.remove(tag, force=True)


def test_base_and_bootstrap_together_are_refused(fixture_project: FixtureProject) -> None:
    fixture_project.set_box(bootstrap=BOOTSTRAP)
    result = run_cli(fixture_project.root, "check")
    assert result.returncode == 1
    assert "base: a box has either `base:`" in result.stdout
    assert "not both" in result.stdout
