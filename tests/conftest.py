"""Test harness: a real Docker engine, real registries, a real loopback artifact server.

Integration tests fail, never skip, when the engine or the registry is missing and
BUILDBOX_REQUIRE_DOCKER=1 (CI sets it). Without it they skip, so a laptop without Docker can still
run the unit tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import docker
import docker.errors
import pytest
from docker import DockerClient

from artifact_server import ArtifactServer, tarball
from projects import FIXTURES, make_project, write_yaml
from registry import Registry, id_of, push

REQUIRE_DOCKER = os.environ.get("BUILDBOX_REQUIRE_DOCKER") == "1"
#: Fixtures for tests that publish (a git repository pointed at the test registry).
pytest_plugins = ["publishing"]
BUSYBOX = Path("/bin/busybox")
#: This test session. The engine is shared (another session, a developer's own images): the
#: session removes only images it can tell are its own, see :func:`made_by_this_session`.
SESSION = uuid.uuid4().hex[:12]
SESSION_LABEL = "buildbox.test-session"
#: Labels for every image the harness builds itself.
SESSION_LABELS = {SESSION_LABEL: SESSION}
#: The repositories of the base images this session pushed (to its own registry, on a port of
#: its own); the toolkit labels each image it builds with the name of its base.
SESSION_BASES: set[str] = set()
#: The local ids of those base images: the classic builder's untagged intermediate images (no
#: labels) descend from them.
SESSION_BASE_IDS: set[str] = set()
BASE_NAME_LABEL = "org.opencontainers.image.base.name"


def made_by_this_session(labels: dict[str, str]) -> bool:
    """Whether an image with these labels was built by this session: by the harness (its
    session label), or by the toolkit from one of this session's base images."""
    base = labels.get(BASE_NAME_LABEL, "")
    return labels.get(SESSION_LABEL) == SESSION or any(
        base.startswith((f"{repository}@", f"{repository}:")) for repository in SESSION_BASES
    )


def this_sessions_images(entries: list[dict[str, Any]]) -> set[str]:
    """The ids, among the engine's ``entries`` (``images(all=True)``), of this session's images:
    labelled as such, or descending from one (the session's base images are unique to it, so no
    other session builds on them; their own ancestors may be shared and are never counted)."""
    ours = set(SESSION_BASE_IDS) | {
        entry["Id"] for entry in entries if made_by_this_session(entry.get("Labels") or {})
    }
    grew = True
    while grew:
        found = {entry["Id"] for entry in entries if entry.get("ParentId") in ours} - ours
        ours |= found
        grew = bool(found)
    return ours


#: Variables a developer's shell may export that change what the toolkit does: no test inherits
#: them (a test that needs one sets it).
INHERITED = (
    "SOURCE_DATE_EPOCH", "COSIGN_PASSWORD", "BUILDBOX_REGISTRY_USERNAME",
    "BUILDBOX_REGISTRY_PASSWORD", "DOCKER_CONFIG",
)  # fmt: skip


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in INHERITED:
        monkeypatch.delenv(variable, raising=False)
    for variable in [v for v in os.environ if v.startswith("INVOKE_BUILDBOX_")]:
        if variable != "INVOKE_BUILDBOX_BUILDER":  # CI chooses the builder for a whole run
            monkeypatch.delenv(variable)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """An ``engine`` or ``store`` test needs an engine: CI runs the whole suite once and
    selects the other engine configurations' runs by those marks, so each must be marked
    ``integration`` too (and not both: ``engine`` already runs on every configuration)."""
    wrong = []
    for item in items:
        engine, store = (item.get_closest_marker(name) is not None for name in ("engine", "store"))
        if ((engine or store) and not item.get_closest_marker("integration")) or (engine and store):
            wrong.append(item.nodeid)
    if wrong:
        raise pytest.UsageError(
            f"engine or store needs integration, and not both engine and store: {', '.join(wrong)}"
        )


def missing(what: str) -> NoReturn:
    """Fail under BUILDBOX_REQUIRE_DOCKER=1, otherwise skip: a missing engine is never a pass."""
    if REQUIRE_DOCKER:
        pytest.fail(f"{what} (BUILDBOX_REQUIRE_DOCKER=1: integration tests must run)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[DockerClient]:
    try:
        client = docker.from_env(version="auto", timeout=120)
        client.ping()
    except docker.errors.DockerException as error:
        missing(f"no Docker engine: {error}")
    before = set(client.api.images(all=True, quiet=True))
    yield client
    # A rebuild leaves the image it replaces untagged, the classic builder its intermediate
    # images: remove the ones this session made, and only those (another process's untagged
    # images on this engine are not ours to remove).
    ours = this_sessions_images(client.api.images(all=True))
    # First their names (the toolkit tags what it builds from a session base: fixture:v1, ...;
    # they name this session's registries, gone after it), so that the images become dangling.
    for image_id, tags in tagged_images(client):
        if image_id in ours and image_id not in before:
            for tag in tags:
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(tag)
    removed = True
    while removed:  # an intermediate image can go only once the image built on it has gone
        removed = False
        for image_id in client.api.images(filters={"dangling": True}, quiet=True):
            if image_id in ours and image_id not in before:
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(image_id)
                    removed = True
    client.close()


def tagged_images(client: DockerClient) -> list[tuple[str, list[str]]]:
    """(id, tags) of every local image, in one call (no per-image look-up that can race)."""
    return [(entry["Id"], entry.get("RepoTags") or []) for entry in client.api.images()]


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
    """The shared artifact server, behaving again after each test.

    A test counts requests with ``artifacts.tally()``: nothing it does resets another's counts.
    """
    errors_before = len(artifact_server.errors)
    yield artifact_server
    artifact_server.behave()
    new_errors = artifact_server.errors[errors_before:]
    assert not new_errors, "the artifact server failed:\n" + "".join(new_errors)


@dataclass(frozen=True)
class BaseImage:
    repository: str
    digest: str

    @property
    def ref(self) -> str:
        """The base pinned by digest, as a box.yaml names it."""
        return f"{self.repository}@{self.digest}"


def session_base(repository: str, digest: str) -> BaseImage:
    """A base image this session pushed: what the toolkit builds on it is this session's."""
    SESSION_BASES.add(repository)
    return BaseImage(repository, digest)


@pytest.fixture(scope="session")
def busybox_base(
    docker_client: DockerClient, registry: Registry, tmp_path_factory: pytest.TempPathFactory
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
        path=str(context), tag=f"{repository}:latest", network_mode="none", rm=True,
        labels=SESSION_LABELS,
    )  # fmt: skip
    SESSION_BASE_IDS.add(id_of(image))
    base = session_base(repository, push(docker_client, repository, "latest"))
    yield base
    # The registry's port differs every run: leave no name behind that points at a dead registry.
    for name in (f"{repository}:latest", base.ref):
        with contextlib.suppress(docker.errors.APIError):
            docker_client.images.remove(name)


ARM64_BUSYBOX = Path(
    os.environ.get("BUILDBOX_TEST_BUSYBOX_ARM64", "/var/cache/buildbox-test/busybox-arm64")
)
BASE_DOCKERFILE = (
    "FROM scratch\n"
    "COPY busybox /bin/busybox\n"
    'RUN ["/bin/busybox", "mkdir", "-p", "/sbin", "/usr/bin", "/usr/sbin", "/tmp"]\n'
    'RUN ["/bin/busybox", "--install", "-s"]\n'
)


@pytest.fixture(scope="session")
def multiarch_base(
    docker_client: DockerClient, registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BaseImage]:
    """A busybox base for linux/amd64 and linux/arm64, pushed as one OCI index, pinned by digest.

    The arm64 busybox comes from Debian (`apt-get download busybox-static:arm64`; .ci/run fetches
    it), and its RUN steps run under qemu-user-static emulation.
    """
    from buildbox.build.emulation import check_emulation
    from buildbox.errors import BuildboxError
    from buildbox.oci.documents import OCI_INDEX
    from buildbox.oci.registry import Registry as RegistryClient

    if not ARM64_BUSYBOX.is_file():
        missing(f"{ARM64_BUSYBOX} is missing (.ci/run extracts it from busybox-static:arm64)")
    try:
        check_emulation("linux/arm64")
    except BuildboxError as error:
        missing(str(error))
    repository = f"{registry.host}/multiarch-base"
    entries = []
    client = RegistryClient(registry.host)
    for platform, busybox in (("linux/amd64", BUSYBOX), ("linux/arm64", ARM64_BUSYBOX)):
        arch = platform.split("/")[1]
        context = tmp_path_factory.mktemp(f"base-{arch}")
        shutil.copy(busybox, context / "busybox")
        (context / "Dockerfile").write_text(BASE_DOCKERFILE)
        image, _ = docker_client.images.build(
            path=str(context),
            tag=f"{repository}:{arch}",
            network_mode="none",
            platform=platform,
            rm=True,
            labels=SESSION_LABELS,
        )
        SESSION_BASE_IDS.add(id_of(image))
        digest = push(docker_client, repository, arch)
        found = client.get_manifest("multiarch-base", digest)
        assert found is not None
        entries.append(
            {"mediaType": found[1], "digest": digest, "size": len(found[0]),
             "platform": {"architecture": arch, "os": "linux"}}
        )  # fmt: skip
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    client.put_manifest("multiarch-base", "latest", index, OCI_INDEX)
    client.close()
    yield session_base(repository, "sha256:" + hashlib.sha256(index).hexdigest())
    for arch in ("amd64", "arm64"):
        with contextlib.suppress(docker.errors.APIError):
            docker_client.images.remove(f"{repository}:{arch}")


DEBIAN_CACHE = Path(os.environ.get("BUILDBOX_TEST_CACHE", "/var/cache/buildbox-test"))
#: The Debian base's time: mmdebstrap gives the same tarball for the same packages and epoch.
DEBIAN_EPOCH = "1700000000"


def debian_image(
    docker_client: DockerClient, registry: Registry, name: str, include: tuple[str, ...] = ()
) -> BaseImage:
    """A real Debian 12 minbase image (plus ``include``), bootstrapped with mmdebstrap from the
    Debian archive, imported into the engine, pushed to the test registry and pinned by digest.

    The tarball is kept under /var/cache/buildbox-test, so later sessions import it again
    instead of bootstrapping; mmdebstrap makes it reproducible with SOURCE_DATE_EPOCH.
    """
    if shutil.which("mmdebstrap") is None:
        missing("mmdebstrap is not installed (apt-get install mmdebstrap)")
    extra = "".join(f"-{package}" for package in include)
    tarball = DEBIAN_CACHE / f"debian-bookworm-minbase{extra}-{DEBIAN_EPOCH}.tar"
    if not tarball.is_file():
        DEBIAN_CACHE.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".part")
        subprocess.run(
            ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar",
             "--skip=output/dev", *(f"--include={package}" for package in include),
             "bookworm", str(partial), "http://deb.debian.org/debian"],
            check=True, capture_output=True, timeout=900,
            env={**os.environ, "SOURCE_DATE_EPOCH": DEBIAN_EPOCH},
        )  # fmt: skip
        partial.replace(tarball)
    repository = f"{registry.host}/{name}"
    # Not in SESSION_BASE_IDS: the same tarball is the same image id in every session.
    docker_client.api.import_image_from_file(str(tarball), repository=repository, tag="bookworm")
    return session_base(repository, push(docker_client, repository, "bookworm"))


def remove_image(docker_client: DockerClient, base: BaseImage) -> None:
    for name in (f"{base.repository}:bookworm", base.ref):
        with contextlib.suppress(docker.errors.APIError):
            docker_client.images.remove(name)


@pytest.fixture(scope="session")
def debian_base(docker_client: DockerClient, registry: Registry) -> Iterator[BaseImage]:
    """A real Debian 12 minbase image (see :func:`debian_image`)."""
    base = debian_image(docker_client, registry, "debian-base")
    yield base
    remove_image(docker_client, base)


@pytest.fixture(scope="session")
def debian_compiler_base(docker_client: DockerClient, registry: Registry) -> Iterator[BaseImage]:
    """Debian 12 minbase with a small C compiler (tcc) and libc headers: a first stage that can
    build a component from source."""
    base = debian_image(docker_client, registry, "debian-cc-base", ("tcc", "libc6-dev"))
    yield base
    remove_image(docker_client, base)


HELLO_VERSION = "1.0"


@dataclass(frozen=True)
class FixtureProject:
    """The fixture box in a project of its own, with a registry prefix no other test uses."""

    root: Path
    registry: str
    cache: Path
    base: str

    @property
    def box_dir(self) -> Path:
        return self.root / "buildboxes" / "fixture"

    def release_tag(self, version: int = 1) -> str:
        return f"{self.registry}/fixture:v{version}"

    def set_box(self, **changes: Any) -> None:
        box = {
            "description": "test fixture",
            "version": 1,
            "base": self.base,
            "platforms": ["linux/amd64"],
            "components": ["hello"],
        }
        box.update(changes)
        write_yaml(self.box_dir / "box.yaml", box)


def hello_component(artifacts: ArtifactServer, version: str = HELLO_VERSION) -> dict[str, Any]:
    """A component whose tarball, served by the artifact server, prints `hello <version>`."""
    name = f"hello-{version}.tar.gz"
    script = f'#!/bin/sh\necho "hello {version}"\n'
    url = artifacts.add(name, tarball({"hello/bin/hello": script}, executable=("hello/bin/hello",)))
    return {
        "version": version,
        "license": "MIT",
        "install": {"kind": "tarball", "dest": "/opt/hello", "strip_components": 1},
        "probe": {"command": ["/opt/hello/bin/hello"], "expect": f"hello {version}"},
        "artifacts": {
            "linux/amd64": {
                "url": url,
                "sha256": artifacts.sha256(name),
                "sha256_source": "generated by the test artifact server",
            }
        },
    }


@pytest.fixture
def fixture_project(
    tmp_path: Path, artifacts: ArtifactServer, busybox_base: BaseImage, docker_client: DockerClient
) -> Iterator[FixtureProject]:
    """A project holding the fixture box: busybox base, one tool from the artifact server.

    Its motd is unique, so its inputs digest is too: no test reuses another test's image.
    Every image tagged under its registry prefix is removed afterwards.
    """
    run = uuid.uuid4().hex[:10]
    root = make_project(
        tmp_path / "project", components={"hello": hello_component(artifacts)}, boxes={}
    )
    project = FixtureProject(
        root, f"localhost/test-{run}/buildbox", tmp_path / "cache", busybox_base.ref
    )
    shutil.copytree(FIXTURES / "box", project.box_dir)
    (project.box_dir / "motd").write_text(f"fixture buildbox {run}\n")
    project.set_box()
    (root / "invoke.yaml").write_text(
        f"buildbox:\n  registry: {project.registry}\n  cache_dir: {project.cache}\n"
        "  fetch_backoff: 0.01\n"
    )
    yield project
    for image_id, tags in tagged_images(docker_client):
        if any(tag.startswith(project.registry) for tag in tags):
            with contextlib.suppress(docker.errors.APIError):
                docker_client.images.remove(image_id, force=True)
