"""`invoke build` and `invoke verify` with the real engine, busybox base and loopback artifacts."""

from __future__ import annotations

import dataclasses
import io
import re
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker.errors
import pytest
from docker import DockerClient
from docker.models.images import Image

from artifact_server import ArtifactServer, tarball
from buildbox.build.builder import BuildFailedError, BuildRequest, ClassicBuilder
from buildbox.build.context import assemble
from buildbox.build.engine import Engine
from buildbox.build.labels import labels
from buildbox.define import project
from buildbox.define.inputs import inputs_digest
from buildbox.fetch import Fetcher, wanted_for
from buildbox.output import LogProgress
from buildbox.source import revision
from conftest import HELLO_VERSION, BaseImage, FixtureProject, hello_component
from projects import run_cli, settings_for, write_yaml
from registry import Registry, id_of

pytestmark = pytest.mark.integration


#: How each builder names a step in its log and in a failure: the classic builder's
#: ``Step 3/7 :`` and BuildKit's ``[components 3/3]``.
STEP = r"(?:Step \d+/\d+ :|\[[^\]]*\d+/\d+\])"
#: The first step of a build, as each builder streams it.
STEP_STARTED = re.compile(r"^(?:Step 1/|#\d+ \[)", re.MULTILINE)


def image_or_none(client: DockerClient, reference: str) -> Image | None:
    try:
        return client.images.get(reference)
    except docker.errors.ImageNotFound:
        return None


def run_in(client: DockerClient, image: str, *command: str) -> str:
    output: bytes = client.containers.run(
        image, list(command), network_mode="none", remove=True, stderr=True
    )
    return output.decode()


def add_dockerfile_line(project: FixtureProject, line: str) -> None:
    dockerfile = project.box_dir / "Dockerfile"
    text = dockerfile.read_text()
    marker = "COPY --from=components"
    dockerfile.write_text(text.replace(marker, f"{line}\n{marker}", 1))


@pytest.mark.engine
def test_build_then_verify(fixture_project: FixtureProject, docker_client: DockerClient) -> None:
    built = run_cli(fixture_project.root, "build", "--box=fixture")
    assert built.returncode == 0, built.stdout + built.stderr
    assert re.search(r"built fixture v1 \(linux/amd64\) in [0-9.]+ s: sha256:", built.stdout)
    assert STEP_STARTED.search(built.stdout), "the build log is streamed"

    image = docker_client.images.get(fixture_project.release_tag())
    loaded = project.load(settings_for(fixture_project.root))
    box = loaded.box("fixture")
    expected_digest = inputs_digest(box, loaded.library, loaded.settings, "linux/amd64")
    assert image.labels["dev.buildbox.box"] == "fixture"
    assert image.labels["dev.buildbox.version"] == "1"
    assert image.labels["dev.buildbox.inputs-digest"] == expected_digest
    assert image.labels["org.opencontainers.image.version"] == "v1"
    assert image.labels["org.opencontainers.image.revision"] == "unknown"  # not a git checkout
    assert image.labels["org.opencontainers.image.base.digest"] == box.base.split("@")[1]
    dev_tags = [t for t in image.tags if t.startswith(f"{fixture_project.registry}/fixture-dev:")]
    assert dev_tags == [f"{fixture_project.registry}/fixture-dev:local"]

    image_id = id_of(image)
    assert run_in(docker_client, image_id, "hello") == f"hello {HELLO_VERSION}\n"
    assert run_in(docker_client, image_id, "cat", "/etc/motd").startswith("fixture buildbox")
    leftovers = run_in(docker_client, image_id, "sh", "-c", "ls -d /buildbox /staging 2>&1; true")
    assert "No such file or directory" in leftovers
    archives = run_in(docker_client, image_id, "find", "/", "-xdev", "-name", "*.tar.gz")
    assert archives == "", "no downloaded archive stays in the image"

    verified = run_cli(fixture_project.root, "verify", "--box=fixture")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "PASS  probe hello: `/opt/hello/bin/hello` printed 'hello 1.0'" in verified.stdout
    assert "PASS  label dev.buildbox.inputs-digest" in verified.stdout
    assert "verify: all 5 checks passed" in verified.stdout


@pytest.mark.engine
def test_unchanged_inputs_skip_the_build_and_force_rebuilds(
    fixture_project: FixtureProject, artifacts: ArtifactServer
) -> None:
    first = run_cli(fixture_project.root, "build", "--box=fixture")
    assert first.returncode == 0, first.stderr
    with artifacts.tally() as seen:
        again = run_cli(fixture_project.root, "build", "--box=fixture")
    assert again.returncode == 0, again.stderr
    assert "fixture v1 (linux/amd64) is up to date" in again.stdout
    assert "nothing was sent to the engine" in again.stdout
    assert not STEP_STARTED.search(again.stdout)
    assert seen.requests == {}, "an up-to-date box downloads nothing"

    forced = run_cli(fixture_project.root, "build", "--box=fixture", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "built fixture v1" in forced.stdout

    (fixture_project.box_dir / "motd").write_text("changed\n")
    changed = run_cli(fixture_project.root, "build", "--box=fixture")
    assert "built fixture v1" in changed.stdout, "a changed input is built"


def test_tampered_download_is_refused_before_the_build(
    fixture_project: FixtureProject, artifacts: ArtifactServer, docker_client: DockerClient
) -> None:
    artifacts.misbehave(f"hello-{HELLO_VERSION}.tar.gz", "wrong-bytes")
    result = run_cli(fixture_project.root, "build", "--box=fixture")
    assert result.returncode == 1
    assert "sha256 mismatch for" in result.stderr
    assert "Traceback" not in result.stderr
    assert image_or_none(docker_client, fixture_project.release_tag()) is None


@pytest.mark.engine
def test_tampered_artifact_in_the_context_fails_inside_the_build(
    fixture_project: FixtureProject, docker_client: DockerClient, tmp_path: Path
) -> None:
    """The second check: the install script re-verifies each artifact inside the build."""
    loaded = project.load(settings_for(fixture_project.root))
    settings = dataclasses.replace(loaded.settings, cache_dir=tmp_path)
    box = loaded.box("fixture")
    [fetched] = Fetcher(settings, LogProgress(io.StringIO())).fetch_all(
        wanted_for([box], loaded.library, "linux/amd64")
    )
    tampered = tmp_path / "tampered.tar.gz"
    shutil.copy(fetched.path, tampered)
    with tampered.open("ab") as extra:
        extra.write(b"\0")
    context = assemble(
        box, loaded.library, settings, "linux/amd64", {fetched.wanted.sha256: tampered}
    )
    request = BuildRequest(
        context, box.base, False, labels(box, "linux/amd64", "x", revision(tmp_path))
    )
    with pytest.raises(BuildFailedError) as caught:
        ClassicBuilder(Engine(docker_client, "test")).build(request, lambda line: None)
    message = str(caught.value)
    assert re.search(r"failed at Step \d+/\d+ : RUN BUILDBOX_ROOT=/staging sh", message)
    assert "RUN BUILDBOX_ROOT=/staging sh /buildbox/install.sh" in message
    assert f"sha256 mismatch for /buildbox/artifacts/hello/hello-{HELLO_VERSION}.tar.gz" in message


@pytest.mark.engine
def test_build_has_no_network_unless_the_box_declares_it(
    fixture_project: FixtureProject, artifacts: ArtifactServer, busybox_base: BaseImage
) -> None:
    # A program that connects on its own, which the Dockerfile rule cannot see into: a
    # verified component, as any tool of a box could be. Only the build's network stops it.
    port = artifacts.base_url.rsplit(":", 1)[1]
    script = f"#!/bin/sh\nexec nc -w 3 127.0.0.1 {port} </dev/null\n"
    name = "netcheck-1.0.tar.gz"
    url = artifacts.add(name, tarball({"n/bin/netcheck": script}, executable=("n/bin/netcheck",)))
    netcheck = {
        **hello_component(artifacts),
        "install": {"kind": "tarball", "dest": "/opt/netcheck", "strip_components": 1},
        "probe": {"command": ["/bin/echo", "netcheck"], "expect": "netcheck"},
        "artifacts": {"linux/amd64": {"url": url, "sha256": artifacts.sha256(name),
                                      "sha256_source": "generated by the test artifact server"}},
    }  # fmt: skip
    components = {"hello": hello_component(artifacts), "netcheck": netcheck}
    write_yaml(fixture_project.root / "shared" / "components.yaml", {"components": components})
    fixture_project.set_box(components=["hello", "netcheck"])
    dockerfile = fixture_project.box_dir / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "RUN /opt/netcheck/bin/netcheck\n")
    hermetic = run_cli(fixture_project.root, "build", "--box=fixture")
    assert hermetic.returncode == 1, hermetic.stderr
    assert "installing netcheck" in hermetic.stdout
    assert re.search(rf"failed at {STEP} RUN /opt/netcheck/bin/netcheck", hermetic.stderr)
    assert "No tag was moved" in hermetic.stderr

    fixture_project.set_box(network=True, components=["hello", "netcheck"])
    networked = run_cli(fixture_project.root, "build", "--box=fixture")
    assert networked.returncode == 0, networked.stdout + networked.stderr


@pytest.mark.engine
def test_failing_run_step_names_the_step_and_moves_no_tag(
    fixture_project: FixtureProject, docker_client: DockerClient
) -> None:
    assert run_cli(fixture_project.root, "build", "--box=fixture").returncode == 0
    good = docker_client.images.get(fixture_project.release_tag()).id

    add_dockerfile_line(fixture_project, "RUN echo about to fail && exit 3")
    failed = run_cli(fixture_project.root, "build", "--box=fixture")
    assert failed.returncode == 1
    assert re.search(
        rf"build of box fixture failed at {STEP} RUN echo about to fail && exit 3",
        failed.stderr,
    )
    assert re.search(r"returned a non-zero code: 3|exit code: 3", failed.stderr)
    assert "  | about to fail" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert docker_client.images.get(fixture_project.release_tag()).id == good


def test_probe_with_the_wrong_version_fails_verify(
    fixture_project: FixtureProject, artifacts: ArtifactServer
) -> None:
    hello = hello_component(artifacts)
    hello["probe"]["expect"] = "hello 9.9"
    write_yaml(fixture_project.root / "shared/components.yaml", {"components": {"hello": hello}})
    assert run_cli(fixture_project.root, "build", "--box=fixture").returncode == 0
    result = run_cli(fixture_project.root, "verify", "--box=fixture")
    assert result.returncode == 1
    assert (
        "FAIL  probe hello: `/opt/hello/bin/hello` exited 0 and printed 'hello 1.0'; "
        "expected 'hello 9.9'"
    ) in result.stdout
    assert "verify: 1 of 5 checks failed" in result.stderr


@pytest.mark.engine
def test_verify_runs_one_container_for_all_probes(
    fixture_project: FixtureProject, artifacts: ArtifactServer, docker_client: DockerClient
) -> None:
    components = {f"tool{i}": hello_component(artifacts, f"1.{i}") for i in range(5)}
    for index, component in enumerate(components.values()):
        component["install"]["dest"] = f"/opt/tool{index}"
        component["probe"]["command"] = [f"/opt/tool{index}/bin/hello"]
    write_yaml(fixture_project.root / "shared/components.yaml", {"components": components})
    fixture_project.set_box(components=list(components))
    assert run_cli(fixture_project.root, "build", "--box=fixture").returncode == 0
    since = datetime.now(UTC)
    result = run_cli(fixture_project.root, "verify", "--box=fixture")
    until = datetime.now(UTC) + timedelta(seconds=1)  # the engine counts whole seconds
    assert result.returncode == 0, result.stdout
    assert result.stdout.count("PASS  probe tool") == 5
    events = docker_client.events(
        since=since,
        until=until,
        decode=True,
        filters={
            "type": "container",
            "event": "create",
            "label": "dev.buildbox.container=verify",
            "image": docker_client.images.get(fixture_project.release_tag()).id,
        },
    )
    try:
        created = list(events)
    finally:
        events.close()
    assert len(created) == 1


def test_verify_another_image_reports_wrong_labels(
    fixture_project: FixtureProject, busybox_base: BaseImage
) -> None:
    result = run_cli(fixture_project.root, "verify", "--box=fixture", f"--image={busybox_base.ref}")
    assert result.returncode == 1
    assert "FAIL  label dev.buildbox.box: expected 'fixture', image has None" in result.stdout
    assert "FAIL  probe hello" in result.stdout


def test_verify_without_an_image_says_to_build(fixture_project: FixtureProject) -> None:
    result = run_cli(fixture_project.root, "verify", "--box=fixture")
    assert result.returncode == 1
    assert f"no local image {fixture_project.release_tag()}; build it first" in result.stderr


@pytest.mark.engine
def test_floating_base_needs_the_flag_and_is_marked(
    fixture_project: FixtureProject, busybox_base: BaseImage, docker_client: DockerClient
) -> None:
    fixture_project.set_box(base=f"{busybox_base.repository}:latest")
    refused = run_cli(fixture_project.root, "build", "--box=fixture")
    assert refused.returncode == 1
    assert "base: " in refused.stderr
    assert "is not pinned by digest" in refused.stderr
    allowed = run_cli(fixture_project.root, "build", "--box=fixture", "--allow-floating-base")
    assert allowed.returncode == 0, allowed.stderr
    image = docker_client.images.get(fixture_project.release_tag())
    assert image.labels["dev.buildbox.floating-base"] == "true"


def test_unreachable_base_image_is_a_clear_message(fixture_project: FixtureProject) -> None:
    missing = "127.0.0.1:9/nowhere/base@sha256:" + "d" * 64
    fixture_project.set_box(base=missing)
    started = time.monotonic()
    result = run_cli(fixture_project.root, "build", "--box=fixture")
    assert result.returncode == 1
    assert f"cannot pull the base image {missing}" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 60


def test_a_base_registry_that_refuses_is_named_not_passed_to_the_engine(
    fixture_project: FixtureProject, auth_registry: Registry
) -> None:
    """Only an unreachable base registry falls back to the engine; a refusal is the answer."""
    fixture_project.set_box(base=f"{auth_registry.host}/private/base@sha256:" + "d" * 64)
    result = run_cli(fixture_project.root, "build", "--box=fixture")
    assert result.returncode == 1
    assert f"the registry {auth_registry.host} needs credentials" in result.stderr
    assert "cannot pull the base image" not in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_engine_is_a_clear_message(
    fixture_project: FixtureProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result = run_cli(fixture_project.root, "build", "--box=fixture")
    assert result.returncode == 1
    assert "cannot reach the Docker engine at unix:///nonexistent/docker.sock" in result.stderr
    assert "Traceback" not in result.stderr


CLASSIC_STEP = re.compile(r"^Step 1/\d+ : ARG BUILDBOX_BASE$", re.MULTILINE)
BUILDKIT_STEP = re.compile(
    r"^#\d+ \[components \d+/\d+\] COPY \.buildbox/ /buildbox/$", re.MULTILINE
)


@pytest.mark.parametrize(
    ("builder", "log_line"), [("classic", CLASSIC_STEP), ("buildkit", BUILDKIT_STEP)]
)
@pytest.mark.store
def test_the_builder_setting_chooses_the_builder(
    fixture_project: FixtureProject,
    monkeypatch: pytest.MonkeyPatch,
    builder: str,
    log_line: re.Pattern[str],
) -> None:
    monkeypatch.setenv("INVOKE_BUILDBOX_BUILDER", builder)
    built = run_cli(fixture_project.root, "build", "fixture", "--force")
    assert built.returncode == 0, built.stdout + built.stderr
    assert log_line.search(built.stdout), built.stdout
    verified = run_cli(fixture_project.root, "verify", "fixture")
    assert verified.returncode == 0, verified.stdout


def test_an_unknown_builder_is_a_clear_error(
    fixture_project: FixtureProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INVOKE_BUILDBOX_BUILDER", "kaniko")
    result = run_cli(fixture_project.root, "build", "fixture")
    assert result.returncode == 1
    assert "INVOKE_BUILDBOX_BUILDER: expected one of auto, buildkit, classic, got 'kaniko'" in (
        result.stderr
    )


@pytest.mark.engine
def test_a_build_step_sees_only_loopback_unless_the_box_declares_network(
    fixture_project: FixtureProject, docker_client: DockerClient
) -> None:
    """Read from inside a RUN step which network interfaces it has: only `lo` in a hermetic
    build (whatever the builder), the host's too in a `network: true` box."""
    add_dockerfile_line(fixture_project, "RUN ls /sys/class/net > /interfaces")

    def interfaces() -> list[str]:
        built = run_cli(fixture_project.root, "build", "--box=fixture", "--no-cache")
        assert built.returncode == 0, built.stdout + built.stderr
        output: bytes = docker_client.containers.run(
            fixture_project.release_tag(), ["cat", "/interfaces"], network_mode="none",
            remove=True,
        )  # fmt: skip
        return output.decode().split()

    assert interfaces() == ["lo"]
    fixture_project.set_box(network=True)
    host = sorted(path.name for path in Path("/sys/class/net").iterdir())
    assert sorted(interfaces()) == host
    assert host != ["lo"], "this machine has a network interface besides loopback"
