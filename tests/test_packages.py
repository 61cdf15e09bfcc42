"""OS packages pinned like components: `invoke lock` against a real Debian base and archive,
hermetic builds from the verified cache, and the packages in the SBOM.

Boxes with packages install them with `RUN --mount` (BuildKit), so these tests build with
BuildKit whatever builder the run is configured for.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest
from docker import DockerClient

from buildbox.resolve import snapshot_script
from conftest import BaseImage, FixtureProject
from projects import FIXTURES, run_cli
from publishing import published_digest

pytestmark = pytest.mark.integration

PACKAGED_DOCKERFILE = """\
ARG BUILDBOX_BASE
FROM ${BUILDBOX_BASE} AS components
COPY .buildbox/ /buildbox/
RUN BUILDBOX_ROOT=/staging sh /buildbox/install.sh

FROM ${BUILDBOX_BASE}
RUN --mount=type=bind,source=.buildbox,target=/buildbox BUILDBOX_ROOT=/ sh /buildbox/packages.sh
COPY --from=components /staging/ /
COPY motd /etc/motd
"""
#: `file` brings its library (libmagic1) and that library's data (libmagic-mgc) with it.
PACKAGES = ["make", "file"]


@pytest.fixture
def packaged(
    fixture_project: FixtureProject, debian_base: BaseImage, monkeypatch: pytest.MonkeyPatch
) -> FixtureProject:
    monkeypatch.setenv("INVOKE_BUILDBOX_BUILDER", "buildkit")
    project = dataclasses.replace(fixture_project, base=debian_base.ref)
    (project.box_dir / "Dockerfile").write_text(PACKAGED_DOCKERFILE)
    project.set_box(packages=PACKAGES)
    return project


def lock_of(project: FixtureProject) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((project.box_dir / "packages.lock").read_text())
    return data


def run_in(docker_client: DockerClient, image: str, *command: str) -> str:
    output: bytes = docker_client.containers.run(
        image, list(command), network_mode="none", remove=True, stderr=True
    )
    return output.decode()


@pytest.mark.store
def test_lock_build_verify_and_sbom(packaged: FixtureProject, docker_client: DockerClient) -> None:
    root = packaged.root
    unlocked = run_cli(root, "check")
    assert unlocked.returncode == 1
    assert "buildboxes/fixture/packages.lock: missing; the box lists packages: run " in (
        unlocked.stdout
    )

    locked = run_cli(root, "lock", "fixture")
    assert locked.returncode == 0, locked.stdout + locked.stderr
    assert re.search(
        r"wrote buildboxes/fixture/packages\.lock: packages linux/amd64: \d+", locked.stdout
    )
    lock = lock_of(packaged)
    assert lock["requested"] == sorted(PACKAGES)
    [(platform, facts)] = lock["platforms"].items()
    assert platform == "linux/amd64"
    assert lock["base"] == packaged.base
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", facts["base_image"]), "the platform's image"
    names = {p["name"]: p for p in facts["packages"]}
    assert {"make", "file", "libmagic1", "libmagic-mgc"} <= names.keys(), "dependencies too"
    assert "libc6" not in names, "the base has it already"
    for package in facts["packages"]:
        assert re.fullmatch(r"[0-9a-f]{64}", package["sha256"])
        assert package["url"].startswith("http://deb.debian.org/debian/pool/main/")
        assert package["url"].endswith(f"_{package['architecture']}.deb")
    assert run_cli(root, "check").returncode == 0

    # The box builds with no network (network: true is not set) from the verified packages.
    built = run_cli(root, "build", "fixture", "--no-cache")
    assert built.returncode == 0, built.stdout + built.stderr
    assert "buildbox: installing the locked packages:" in built.stdout
    image = packaged.release_tag()
    assert run_in(docker_client, image, "make", "--version").startswith("GNU Make 4.3")
    assert "ASCII text" in run_in(docker_client, image, "file", "/etc/motd")
    verified = run_cli(root, "verify", "fixture")
    assert verified.returncode == 0, verified.stdout

    described = run_cli(root, "sbom", "fixture", "--output=-")
    assert described.returncode == 0, described.stderr
    components = {c["name"]: c for c in json.loads(described.stdout)["components"]}
    make = components["make"]
    assert make["purl"].startswith(f"pkg:deb/debian/make@{names['make']['version']}?")
    assert "arch=amd64" in make["purl"]
    assert "distro=debian-12" in make["purl"]
    assert make["hashes"] == [{"alg": "SHA-256", "content": names["make"]["sha256"]}]
    assert make["externalReferences"][0]["url"] == names["make"]["url"]
    assert "hashes" not in components["bash"], "base packages are listed, not pinned by us"


@pytest.mark.engine
def test_verify_fails_when_the_image_is_not_what_the_lock_says(packaged: FixtureProject) -> None:
    """Image equals lock: a locked package the Dockerfile never installs, and a file of one that
    it changes afterwards, fail verify, each naming the package."""
    root = packaged.root
    packaged.set_box(packages=["hello"])
    locked = run_cli(root, "lock", "fixture")
    assert locked.returncode == 0, locked.stdout + locked.stderr
    [hello] = lock_of(packaged)["platforms"]["linux/amd64"]["packages"]
    assert hello["name"] == "hello"

    # The fixture's own Dockerfile: it never runs packages.sh.
    (packaged.box_dir / "Dockerfile").write_text((FIXTURES / "box" / "Dockerfile").read_text())
    assert run_cli(root, "build", "fixture").returncode == 0
    verified = run_cli(root, "verify", "fixture")
    assert verified.returncode == 1, verified.stdout
    assert (
        f"FAIL  package hello: locked {hello['version']} (amd64); the image does not have it "
        "(the Dockerfile never installed it?)"
    ) in verified.stdout.splitlines()
    beyond = r"^INFO  packages not in the lock: \d+, the base's .*: .*bash, "
    assert re.search(beyond, verified.stdout, re.MULTILINE)

    # Installed from the lock, then changed: dpkg --verify's findings, as failure or information.
    (packaged.box_dir / "Dockerfile").write_text(
        PACKAGED_DOCKERFILE + "RUN echo changed >> /usr/bin/hello && echo edited >> /etc/issue"
        " && rm /usr/share/doc/hello/copyright\n"
    )
    assert run_cli(root, "build", "fixture").returncode == 0
    changed = run_cli(root, "verify", "fixture").stdout.splitlines()
    differs = "files differ from what dpkg installed: /usr/bin/hello (content differs)"
    assert [line for line in changed if line.startswith("FAIL")] == [
        f"FAIL  package hello: {differs}"
    ]
    assert (
        "PASS  packages: 1 of 1 locked packages installed, at their versions and architectures"
    ) in changed
    assert ("INFO  edited conffiles: 1, changed after install: /etc/issue (base-files)") in changed
    assert (
        "INFO  absent files: 1 installed by packages (path-exclude, or deleted): "
        "/usr/share/doc/hello/copyright"
    ) in changed


def test_dry_run_shows_changes_and_writes_nothing(packaged: FixtureProject) -> None:
    shown = run_cli(packaged.root, "lock", "fixture", "--dry-run")
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^linux/amd64\s+added\s+libmagic1\s+\S+", shown.stdout, re.MULTILINE)
    assert "dry run: buildboxes/fixture/packages.lock is unchanged" in shown.stdout
    assert not (packaged.box_dir / "packages.lock").exists()


@pytest.mark.store
def test_unlocked_missing_and_tampered_packages_are_refused(
    packaged: FixtureProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = packaged.root
    assert run_cli(root, "lock", "fixture").returncode == 0
    assert run_cli(root, "build", "fixture").returncode == 0

    # Everything is in the cache now: a rebuild needs no network at all.
    offline = run_cli(root, "build", "fixture", "--offline", "--no-cache")
    assert offline.returncode == 0, offline.stdout + offline.stderr

    # A cached .deb that changed is not used: it is dropped, and offline that is an error.
    lock = lock_of(packaged)
    make = next(p for p in lock["platforms"]["linux/amd64"]["packages"] if p["name"] == "make")
    cached = packaged.cache / "sha256" / make["sha256"]
    cached.write_bytes(cached.read_bytes()[:-10] + b"tampered!!")
    refused = run_cli(root, "build", "fixture", "--offline", "--no-cache")
    assert refused.returncode == 1
    assert f"make {make['version']} (linux/amd64) sha256:{make['sha256']}" in refused.stderr

    # A package added to box.yaml but not locked.
    packaged.set_box(packages=[*PACKAGES, "patch"])
    unlocked = run_cli(root, "build", "fixture")
    assert unlocked.returncode == 1
    assert "packages.lock: requested: patch not in the lock; run `invoke lock fixture`" in (
        unlocked.stderr
    )

    # A lock that misses a dependency fails the build, naming it.
    packaged.set_box(packages=PACKAGES)
    lock["platforms"]["linux/amd64"]["packages"] = [
        p for p in lock["platforms"]["linux/amd64"]["packages"] if p["name"] != "libmagic1"
    ]
    (packaged.box_dir / "packages.lock").write_text(json.dumps(lock))
    broken = run_cli(root, "build", "fixture")
    assert broken.returncode == 1
    assert "libmagic1" in broken.stderr
    assert "No tag was moved" in broken.stderr


@pytest.mark.store
def test_two_builds_of_a_locked_box_give_one_digest(
    packaged: FixtureProject, registry: Any
) -> None:
    from publishing import commit_all, git, point_at

    project = point_at(packaged, registry)
    assert run_cli(project.root, "lock", "fixture").returncode == 0
    (project.root / ".gitignore").write_text("*.part\n")
    git(project.root, "init", "-q")
    commit_all(project.root, "packaged")
    digests = []
    for _ in range(2):
        built = run_cli(project.root, "build", "fixture", "--no-cache")
        assert built.returncode == 0, built.stdout + built.stderr
        published = run_cli(project.root, "publish", "fixture", "--dev")
        assert published.returncode == 0, published.stderr
        digests.append(published_digest(published.stdout))
    assert digests[0] == digests[1]


def test_lock_of_a_box_without_packages_says_so(fixture_project: FixtureProject) -> None:
    result = run_cli(fixture_project.root, "lock", "fixture")
    assert result.returncode == 1
    assert "box fixture lists no packages: nothing to lock" in result.stderr


def test_lock_needs_apt_in_the_base(
    fixture_project: FixtureProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixture_project.set_box(packages=["make"])  # the busybox base has no apt
    result = run_cli(fixture_project.root, "lock", "fixture")
    assert result.returncode == 1
    assert "apt could not resolve make for fixture (linux/amd64)" in result.stderr
    assert "no apt-get in the base" in result.stderr


def test_a_snapshot_points_apt_at_the_archive_snapshot(
    debian_base: BaseImage, docker_client: DockerClient
) -> None:
    """The sources a snapshot lock resolves against, written in the real base (snapshot.debian.org
    itself is not reachable from this CI, so the resolution there is not run)."""
    script = "\n".join([*snapshot_script("20250520T000000Z"), "cat /etc/apt/sources.list"])
    written = run_in(docker_client, debian_base.ref, "sh", "-c", script)
    snapshot = "[check-valid-until=no] http://snapshot.debian.org/archive"
    assert written.splitlines() == [
        f"deb {snapshot}/debian/20250520T000000Z bookworm main",
        f"deb {snapshot}/debian/20250520T000000Z bookworm-updates main",
        f"deb {snapshot}/debian-security/20250520T000000Z bookworm-security main",
    ]
