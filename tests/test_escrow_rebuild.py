"""A release rebuilt later from the registry alone: its upstreams gone, the cache empty.

The box has what a real one has: a component from an artifact server, one built from its source
tarball, and a base bootstrapped from Debian packages locked from the real archive (with the
lock's Packages indices). After the release, the artifact server forgets the files (404), every
other host is unreachable (a proxy that does not answer; loopback goes direct), and the cache
is new: `invoke reproduce` takes every input from the release's escrow and gives the same digest.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import docker.errors
import pytest
from docker import DockerClient

from artifact_server import ArtifactServer
from conftest import FixtureProject, hello_component
from projects import run_cli, settle, write_yaml
from publishing import commit_all
from registry import free_port
from test_bootstrap import BOOTSTRAP, base_images
from test_source_builds import RECIPE, greet_component

pytestmark = pytest.mark.integration


@pytest.fixture
def bases_removed(docker_client: DockerClient) -> Iterator[None]:
    """The bootstrapped bases the test made leave the engine with it (another test counts
    the fixture box's bases)."""
    before = set(base_images(docker_client, "fixture"))
    yield
    for tag in set(base_images(docker_client, "fixture")) - before:
        with contextlib.suppress(docker.errors.APIError):
            docker_client.images.remove(tag, force=True)


@pytest.mark.usefixtures("bases_removed")
def test_a_release_is_rebuilt_bit_for_bit_with_every_upstream_gone(
    publishing: FixtureProject, artifacts: ArtifactServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = publishing.root
    write_yaml(
        root / "shared" / "components.yaml",
        {"components": {"hello": hello_component(artifacts), "greet": greet_component(artifacts)}},
    )
    (root / "shared" / "build").mkdir(exist_ok=True)
    (root / "shared" / "build" / "greet.sh").write_text(RECIPE.replace('touch "$RECIPE_RAN"\n', ""))
    write_yaml(
        publishing.box_dir / "box.yaml",
        {"version": 1, "platforms": ["linux/amd64"], "components": ["hello", "greet"],
         "bootstrap": BOOTSTRAP},
    )  # fmt: skip
    locked = run_cli(root, "lock", "fixture")
    assert locked.returncode == 0, locked.stdout + locked.stderr
    commit_all(root, "a box with components, a source build and locked packages")
    released = run_cli(root, "release", "--box=fixture")
    assert released.returncode == 0, released.stdout + released.stderr
    [entry] = json.loads((root / "buildbox.lock.json").read_text())["releases"]
    assert entry["escrow"], "the release names its inputs manifest"
    listed = run_cli(root, "escrow", "--box=fixture")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    for name in ("hello", "greet", "make", "libc6"):
        assert f" {name} " in listed.stdout, listed.stdout
    commit_all(root, "the release record")

    # Every upstream gone: the artifact server answers 404, any other host is unreachable, and
    # the cache (downloads and bootstrapped bases) is empty.
    artifacts.files.pop("hello-1.0.tar.gz")
    artifacts.files.pop("greet-2.0.tar.gz")
    dead = f"http://127.0.0.1:{free_port()}"
    for variable in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(variable, dead)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    settle(root / "invoke.yaml", cache_dir=str(publishing.cache.parent / "empty-cache"))

    with artifacts.tally() as tally:
        rebuilt = run_cli(root, "reproduce", "--box=fixture")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "reproduce: fixture v1 reproduced bit for bit" in rebuilt.stdout
    # The upstream was asked first, and said 404.
    assert tally.requests["hello-1.0.tar.gz"] > 0
    assert tally.requests["greet-2.0.tar.gz"] > 0
    assert "(escrow)" in rebuilt.stdout + rebuilt.stderr
