"""One box for linux/amd64 and linux/arm64 (under emulation), released under one index tag."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker import DockerClient

from artifact_server import ArtifactServer
from buildbox.build.emulation import check_emulation
from buildbox.errors import BuildboxError
from buildbox.oci.referrers import find_sbom
from buildbox.oci.registry import Registry as RegistryClient
from conftest import BaseImage, FixtureProject, hello_component, missing
from projects import run_cli, settle, write_yaml
from publishing import PASSWORD, commit_all, git, key_pair, point_at, skopeo, untag_all
from registry import Registry, id_of

pytestmark = pytest.mark.integration
PLATFORMS = ["linux/amd64", "linux/arm64"]


@pytest.fixture
def both(
    fixture_project: FixtureProject,
    multiarch_base: BaseImage,
    registry: Registry,
    artifacts: ArtifactServer,
    docker_client: DockerClient,
) -> Iterator[FixtureProject]:
    project = point_at(fixture_project, registry)
    hello = hello_component(artifacts)
    # The tool is a shell script: the same artifact serves both platforms.
    hello["artifacts"]["linux/arm64"] = dict(hello["artifacts"]["linux/amd64"])
    write_yaml(project.root / "shared/components.yaml", {"components": {"hello": hello}})
    project = project.__class__(project.root, project.registry, project.cache, multiarch_base.ref)
    project.set_box(platforms=PLATFORMS)
    git(project.root, "init", "-q")
    commit_all(project.root, "multi-platform fixture")
    yield project
    untag_all(docker_client, project.registry)


def uname(client: DockerClient, image: str, platform: str) -> str:
    output: bytes = client.containers.run(
        image, ["uname", "-m"], platform=platform, network_mode="none", remove=True
    )
    return output.decode().strip()


@pytest.mark.engine
def test_build_verify_publish_and_release_both_platforms(
    both: FixtureProject, registry: Registry, docker_client: DockerClient
) -> None:
    built = run_cli(both.root, "build", "--box=fixture")
    assert built.returncode == 0, built.stdout + built.stderr
    times = dict(re.findall(r"built fixture v1 \((linux/\w+)\) in ([0-9.]+) s", built.stdout))
    assert set(times) == set(PLATFORMS)
    print(f"build time per platform: {times}")  # shown with -s; quoted in the issue note

    amd64 = docker_client.images.get(both.release_tag())
    arm64 = docker_client.images.get(f"{both.release_tag()}-linux-arm64")
    assert (amd64.attrs["Architecture"], arm64.attrs["Architecture"]) == ("amd64", "arm64")
    assert uname(docker_client, id_of(arm64), "linux/arm64") == "aarch64"

    verified = run_cli(both.root, "verify", "--box=fixture")
    assert verified.returncode == 0, verified.stdout
    assert "verify: all 10 checks passed (2 image(s))" in verified.stdout
    assert "(linux/arm64):" in verified.stdout

    released = run_cli(both.root, "release", "--box=fixture")
    assert released.returncode == 0, released.stdout + released.stderr
    [entry] = json.loads((both.root / "buildbox.lock.json").read_text())["releases"]
    assert sorted(entry["platforms"]) == PLATFORMS
    index_ref = f"{both.registry}/fixture:v1"

    raw = skopeo(index_ref, "--raw")
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert sorted(m["platform"]["architecture"] for m in raw["manifests"]) == ["amd64", "arm64"]

    for platform, arch in (("linux/arm64", "aarch64"), ("linux/amd64", "x86_64")):
        pulled = docker_client.images.pull(index_ref, platform=platform)
        assert uname(docker_client, id_of(pulled), platform) == arch
        assert pulled.attrs["Architecture"] == platform.split("/")[1]

    client = RegistryClient(registry.host)
    repository = both.registry.split("/", 1)[1] + "/fixture"
    for platform, facts in entry["platforms"].items():
        attached = find_sbom(client, repository, facts["digest"])
        assert attached is not None
        assert attached == (both.root / facts["sbom_path"]).read_bytes()
        document = json.loads(attached)
        properties = {p["name"]: p["value"] for p in document["properties"]}
        assert properties["buildbox:platform"] == platform
    client.close()

    assert run_cli(both.root, "ref", "--box=fixture").stdout.strip() == entry["reference"]
    arm = run_cli(both.root, "ref", "--box=fixture", "--platform=linux/arm64").stdout.strip()
    assert arm == f"{index_ref}@{entry['platforms']['linux/arm64']['digest']}"
    audited = run_cli(both.root, "audit")
    assert audited.returncode == 0, audited.stdout


def test_missing_emulation_is_a_clear_message(tmp_path: Path) -> None:
    """Against a binfmt directory made for the test, not the machine's handlers."""
    (tmp_path / "qemu-riscv64").write_text("disabled\ninterpreter /usr/bin/qemu-riscv64\n")
    (tmp_path / "qemu-s390x").write_text("enabled\ninterpreter /usr/bin/qemu-s390x\n")
    check_emulation("linux/s390x", binfmt_dir=tmp_path)
    for platform in ("linux/riscv64", "linux/ppc64le"):  # disabled, and not registered at all
        with pytest.raises(BuildboxError) as caught:
            check_emulation(platform, binfmt_dir=tmp_path)
        assert "needs emulation" in str(caught.value)
        assert "apt-get install qemu-user-static binfmt-support" in str(caught.value)


def test_a_signed_two_platform_release_verifies(
    both: FixtureProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index and each platform image are signed; each image carries its own SBOM."""
    if shutil.which("cosign") is None:
        missing("cosign is not installed (Debian 13: apt-get install cosign)")
    private, public = key_pair(tmp_path / "keys")
    config = both.root / "invoke.yaml"
    settle(config, signing_key=private, transparency_log="false")
    commit_all(both.root, "sign")
    monkeypatch.setenv("COSIGN_PASSWORD", PASSWORD)
    released = run_cli(both.root, "release", "fixture")
    assert released.returncode == 0, released.stdout + released.stderr
    checked = run_cli(both.root, "verify-release", "fixture", f"--key={public}")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    passed = [line.split(":")[0] for line in checked.stdout.splitlines() if line.startswith("PASS")]
    assert passed == [
        "PASS  tag",
        "PASS  signature (release)",
        "PASS  signature (linux/amd64)",
        "PASS  signature (linux/arm64)",
        "PASS  SBOM attestation (linux/amd64)",
        "PASS  SBOM attestation (linux/arm64)",
        "PASS  provenance attestation",
        "PASS  signature (inputs manifest)",
        "PASS  inputs manifest",
    ]
