"""The main job on a fresh setup: release to a registry the toolkit runs itself on loopback."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from docker import DockerClient

from conftest import FixtureProject
from projects import run_cli
from publishing import commit_all, git, untag_all
from registry import free_port, id_of

pytestmark = pytest.mark.integration


def verify_containers(client: DockerClient, image: str, since: datetime, until: datetime) -> int:
    """How many probe containers the engine created from ``image`` between the two times."""
    events = client.events(
        since=since,
        until=until,
        decode=True,
        filters={"type": "container", "event": "create", "image": image,
                 "label": "dev.buildbox.container=verify"},
    )  # fmt: skip
    try:
        return len(list(events))
    finally:
        events.close()


def test_main_releases_to_its_own_registry_and_prints_what_a_user_needs(
    fixture_project: FixtureProject, docker_client: DockerClient
) -> None:
    root, port = fixture_project.root, free_port()
    (root / "invoke.yaml").write_text(
        f'buildbox:\n  registry: ""\n  local_registry_port: {port}\n'
        f"  cache_dir: {fixture_project.cache}\n"
    )
    (root / ".gitignore").write_text("*.part\n")
    git(root, "init", "-q")
    commit_all(root, "fixture")
    try:
        since = datetime.now(UTC)
        first = run_cli(root, "main", "fixture")
        until = datetime.now(UTC) + timedelta(seconds=1)  # the engine counts whole seconds
        assert first.returncode == 0, first.stdout + first.stderr
        image = id_of(docker_client.images.get(f"127.0.0.1:{port}/buildbox/fixture:v1"))
        assert verify_containers(docker_client, image, since, until) == 1, "verified once"
        assert f"main: releasing to the local registry 127.0.0.1:{port}" in first.stdout
        assert "PASS  probe hello: `/opt/hello/bin/hello` printed 'hello 1.0'" in first.stdout
        assert "released: fixture v1" in first.stdout
        assert "SBOM (linux/amd64): sbom/fixture/v1-linux-amd64.cdx.json" in first.stdout
        ref = re.search(rf"^ref: (127\.0\.0\.1:{port}/buildbox/fixture:v1@sha256:\S+)$",
                        first.stdout, re.MULTILINE)  # fmt: skip
        assert ref, first.stdout
        assert (fixture_project.cache / "registry" / "data").is_dir(), "data under the cache"

        again = run_cli(root, "main", "fixture")
        assert again.returncode == 0, again.stderr
        assert "already released: fixture v1" in again.stdout
        assert f"ref: {ref.group(1)}" in again.stdout
        assert run_cli(root, "ref", "fixture").stdout.strip() == ref.group(1)
    finally:
        stopped = run_cli(root, "registry", "--stop")
        untag_all(docker_client, f"127.0.0.1:{port}/")
    assert "local registry stopped" in stopped.stdout
    assert (fixture_project.cache / "registry" / "data").is_dir(), "stop keeps the data"
    reset = run_cli(root, "registry", "--reset")
    assert reset.returncode == 0, reset.stderr
    assert not (fixture_project.cache / "registry").exists(), "reset deletes it"
