"""rpm for real: an image whose rpm database holds a package built here with rpmbuild and
installed with rpm, read by `invoke sbom` (which runs `rpm -qa` in the image)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docker import DockerClient

from conftest import BaseImage, debian_image, missing, remove_image
from projects import run_cli
from registry import Registry

pytestmark = pytest.mark.integration

SPEC = """\
Name: buildbox-greeting
Version: 1.2
Release: 3
Summary: A package made for the test
License: MIT
BuildArch: noarch

%description
A package made for the test.

%install
mkdir -p %{buildroot}/usr/share/buildbox-greeting
echo hello > %{buildroot}/usr/share/buildbox-greeting/hello

%files
/usr/share/buildbox-greeting/hello
"""


@pytest.fixture(scope="module")
def rpm_base(docker_client: DockerClient, registry: Registry) -> Iterator[BaseImage]:
    """Debian 12 minbase with Debian's rpm tools in it."""
    base = debian_image(docker_client, registry, "debian-rpm-base", ("rpm",))
    yield base
    remove_image(docker_client, base)


def built_rpm(directory: Path) -> Path:
    if shutil.which("rpmbuild") is None:
        missing("rpmbuild is not installed (apt-get install rpm)")
    (directory / "SPECS").mkdir(parents=True)
    spec = directory / "SPECS" / "greeting.spec"
    spec.write_text(SPEC)
    subprocess.run(
        ["rpmbuild", "-bb", "--define", f"_topdir {directory}", str(spec)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    [package] = (directory / "RPMS" / "noarch").glob("*.rpm")
    return package


@pytest.mark.engine
def test_an_rpm_database_is_read_into_the_sbom(
    fixture_project: Any, rpm_base: BaseImage, tmp_path: Path
) -> None:
    package = built_rpm(tmp_path / "rpmbuild")
    shutil.copy(package, fixture_project.box_dir / "greeting.rpm")
    dockerfile = fixture_project.box_dir / "Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text()
        + "COPY greeting.rpm /tmp/greeting.rpm\n"
        + "RUN rpm -i --nodeps /tmp/greeting.rpm && rm /tmp/greeting.rpm\n"
    )
    fixture_project.set_box(base=rpm_base.ref)
    for command in ("build", "verify", "sbom"):
        result = run_cli(fixture_project.root, command, "fixture")
        assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(
        (fixture_project.root / "dist/sbom/fixture/v1-linux-amd64.cdx.json").read_text()
    )
    [greeting] = [c for c in document["components"] if c["name"] == "buildbox-greeting"]
    assert greeting["version"] == "1.2-3"
    assert greeting["purl"] == "pkg:rpm/debian/buildbox-greeting@1.2-3?arch=noarch&distro=debian-12"
    assert greeting["licenses"] == [{"expression": "MIT"}]
    debs = [c["purl"] for c in document["components"] if c.get("purl", "").startswith("pkg:deb/")]
    assert any(purl.startswith("pkg:deb/debian/rpm@") for purl in debs), "dpkg's is read too"
