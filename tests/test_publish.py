"""publish, release, ref and audit against the real registry (plain and htpasswd)."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from docker import DockerClient

from artifact_server import ArtifactServer, tarball
from buildbox.oci.documents import MANIFEST_ACCEPT, SBOM_TYPE
from buildbox.release.record import RECORD_FILE
from conftest import BaseImage, FixtureProject, hello_component
from projects import run_cli, write_yaml
from publishing import (
    build,
    commit_all,
    git,
    point_at,
    published_digest,
    skopeo,
    tag_digest,
    untag_all,
)
from registry import Registry, id_of

pytestmark = pytest.mark.integration


@pytest.mark.engine
def test_publish_pull_by_digest_and_find_the_sbom(
    publishing: FixtureProject, registry: Registry, docker_client: DockerClient
) -> None:
    result = run_cli(publishing.root, "release", "--box=fixture")
    assert result.returncode == 0, result.stdout + result.stderr
    [entry] = json.loads((publishing.root / RECORD_FILE).read_text())["releases"]
    digest = entry["digest"]
    repository = publishing.registry.split("/", 1)[1] + "/fixture"
    assert f"released {publishing.registry}/fixture:v1@{digest}" in result.stdout

    assert skopeo(f"{publishing.registry}/fixture:v1")["Digest"] == digest
    pulled = docker_client.images.pull(f"{publishing.registry}/fixture@{digest}")
    output = docker_client.containers.run(
        id_of(pulled), ["hello"], network_mode="none", remove=True
    )
    assert output == b"hello 1.0\n"

    # The SBOM, found the way an OCI client without a referrers API finds it.
    fallback = requests.get(
        f"{registry.url}/v2/{repository}/manifests/{digest.replace(':', '-')}",
        headers={"Accept": "application/vnd.oci.image.index.v1+json"},
        timeout=10,
    ).json()
    # Beside the inputs manifest (the one image is also what the tag names: its escrow's
    # subject).
    [entry] = [m for m in fallback["manifests"] if m["artifactType"] == SBOM_TYPE]
    assert len(fallback["manifests"]) == 2
    artifact = requests.get(
        f"{registry.url}/v2/{repository}/manifests/{entry['digest']}",
        headers={"Accept": MANIFEST_ACCEPT},
        timeout=10,
    ).json()
    assert artifact["subject"]["digest"] == digest
    assert artifact["config"]["digest"] == (
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    )
    blob = requests.get(
        f"{registry.url}/v2/{repository}/blobs/{artifact['layers'][0]['digest']}", timeout=10
    ).json()
    image = blob["metadata"]["component"]
    assert image["hashes"] == [{"alg": "SHA-256", "content": digest.removeprefix("sha256:")}]
    assert image["purl"].startswith(f"pkg:oci/fixture@{digest}?")

    again = run_cli(publishing.root, "release", "--box=fixture")
    assert again.returncode == 0, again.stderr
    assert f"fixture v1 is already released: {publishing.registry}/fixture:v1@{digest}" in (
        again.stdout
    )


def test_other_content_under_a_released_version_is_refused(
    publishing: FixtureProject, registry: Registry
) -> None:
    assert run_cli(publishing.root, "release", "--box=fixture").returncode == 0
    first = json.loads((publishing.root / RECORD_FILE).read_text())["releases"][0]["digest"]
    # Another clone's release of v1, from other content (its record is not this one).
    (publishing.root / RECORD_FILE).unlink()
    (publishing.box_dir / "motd").write_text("something else\n")
    commit_all(publishing.root, "other content, same version")
    refused = run_cli(publishing.root, "release", "--box=fixture")
    assert refused.returncode == 1
    assert f"fixture:v1 already points at {first}; this release is sha256:" in refused.stderr
    assert "The registry was not changed" in refused.stderr
    repository = publishing.registry.split("/", 1)[1] + "/fixture"
    assert tag_digest(registry, repository, "v1") == first


@pytest.mark.engine
def test_dev_publish_goes_to_the_mutable_dev_repository(
    publishing: FixtureProject, registry: Registry
) -> None:
    build(publishing)
    result = run_cli(publishing.root, "publish", "--box=fixture", "--dev")
    assert result.returncode == 0, result.stderr
    assert f"published: {publishing.registry}/fixture-dev:" in result.stdout
    repository = publishing.registry.split("/", 1)[1]
    assert tag_digest(registry, f"{repository}/fixture", "v1") is None
    (publishing.box_dir / "motd").write_text("dev change\n")
    build(publishing)
    assert run_cli(publishing.root, "publish", "--box=fixture", "--dev").returncode == 0


def test_registry_stopped_mid_publish_then_rerun_completes(
    fixture_project: FixtureProject,
    artifacts: ArtifactServer,
    busybox_base: BaseImage,
    docker_client: DockerClient,
    tmp_path: Path,
) -> None:
    own = Registry(tmp_path / "own-registry").start()
    project = point_at(fixture_project, own)
    (project.root / ".gitignore").write_text("*.part\n")
    git(project.root, "init", "-q")
    try:
        big = hello_component(artifacts, "1.5")
        name = "big-payload.tar.gz"
        noise = random.Random(1).randbytes(48 * 1024 * 1024)
        url = artifacts.add(name, tarball({"payload/blob": noise}))
        big["artifacts"]["linux/amd64"].update(url=url, sha256=artifacts.sha256(name))
        big["install"]["dest"] = "/opt/payload"
        big["probe"] = {"command": ["ls", "/opt/payload/blob"], "expect": "/opt/payload/blob"}
        small = hello_component(artifacts)
        write_yaml(
            project.root / "shared/components.yaml", {"components": {"hello": small, "big": big}}
        )
        project.set_box(components=["hello", "big"])
        commit_all(project.root, "fixture")
        # The base image lives in the session registry; this one starts empty. It is stopped
        # once a blob is wholly in (its link written in the repository): stopped as its data
        # lands, it could die before that link is written and leave the link empty, which it
        # then answers with HTTP 500 for good (the registry writes links in place; CI saw it).
        links = own.workdir / "data" / "docker" / "registry" / "v2" / "repositories"
        publishing = subprocess.Popen(
            [sys.executable, "-m", "invoke", "--search-root", str(project.root), "release",
             "--box=fixture"],
            cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 300  # the release builds first
        while time.monotonic() < deadline and not any(
            link.stat().st_size for link in links.glob("*/*/_layers/sha256/*/link")
        ):
            time.sleep(0.02)
        own.stop()
        _, stderr = publishing.communicate(timeout=120)
        assert publishing.returncode == 1, stderr
        assert f"cannot reach the registry {own.host}" in stderr
        assert "Traceback" not in stderr

        own.start()
        repository = project.registry.split("/", 1)[1] + "/fixture"
        assert tag_digest(own, repository, "v1") is None, "no release tag until complete"
        rerun = run_cli(project.root, "release", "--box=fixture")
        assert rerun.returncode == 0, rerun.stderr
        [entry] = json.loads((project.root / RECORD_FILE).read_text())["releases"]
        assert tag_digest(own, repository, "v1") == entry["digest"]
    finally:
        own.stop()
        untag_all(docker_client, project.registry)


def test_wrong_password_is_refused_and_never_printed(
    fixture_project: FixtureProject,
    auth_registry: Registry,
    docker_client: DockerClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = point_at(fixture_project, auth_registry)
    try:
        build(project)
        wrong = "hunter2-wrong-secret"
        monkeypatch.setenv("BUILDBOX_REGISTRY_USERNAME", "ci")
        monkeypatch.setenv("BUILDBOX_REGISTRY_PASSWORD", wrong)
        refused = run_cli(project.root, "publish", "--box=fixture", "--dev")
        assert refused.returncode == 1
        assert f"the registry {auth_registry.host} refused the credentials for user 'ci'" in (
            refused.stderr
        )
        assert wrong not in refused.stdout + refused.stderr

        username, password = auth_registry.auth or ("", "")
        monkeypatch.setenv("BUILDBOX_REGISTRY_PASSWORD", password)
        accepted = run_cli(project.root, "publish", "--box=fixture", "--dev")
        assert accepted.returncode == 0, accepted.stderr
        assert password not in accepted.stdout + accepted.stderr
        digest = published_digest(accepted.stdout)
        seen = skopeo(f"{project.registry}/fixture-dev@{digest}", f"--creds={username}:{password}")
        assert seen["Digest"] == digest
    finally:
        untag_all(docker_client, project.registry)


def test_release_record_ref_check_and_audit(
    publishing: FixtureProject, registry: Registry, busybox_base: BaseImage
) -> None:
    root = publishing.root
    released = run_cli(root, "release", "--box=fixture")
    assert released.returncode == 0, released.stdout + released.stderr
    # The long step between build and upload is announced, then summed up.
    assert "preparing linux/amd64: exporting and compressing its layers" in released.stdout
    assert re.search(
        r"prepared linux/amd64: \d+ layers, [\d.]+ \w*B compressed, in [\d.]+ s", released.stdout
    )
    record = json.loads((root / RECORD_FILE).read_text())
    [entry] = record["releases"]
    assert entry["box"] == "fixture"
    assert entry["version"] == "1"
    assert entry["reference"].startswith(f"{publishing.registry}/fixture:v1@sha256:")
    [(platform, facts)] = entry["platforms"].items()
    assert platform == "linux/amd64"
    assert facts["digest"] == entry["digest"], "one platform: the tag names the image itself"
    assert facts["sbom_path"] == "sbom/fixture/v1-linux-amd64.cdx.json"
    assert (root / facts["sbom_path"]).is_file()
    assert skopeo(f"{publishing.registry}/fixture:v1")["Digest"] == entry["digest"]

    assert run_cli(root, "ref", "--box=fixture").stdout.strip() == entry["reference"]
    as_json = json.loads(run_cli(root, "ref", "--box=fixture", "--version=v1", "--json").stdout)
    assert as_json["digest"] == entry["digest"]

    again = run_cli(root, "release", "--box=fixture")
    assert again.returncode == 0, again.stderr
    assert f"fixture v1 is already released: {entry['reference']}" in again.stdout

    # `invoke sbom` after a release leaves the committed SBOM alone: only release writes sbom/.
    committed = (root / facts["sbom_path"]).read_bytes()
    described = run_cli(root, "sbom", "--box=fixture")
    assert described.returncode == 0, described.stderr
    assert "wrote dist/sbom/fixture/v1-linux-amd64.cdx.json" in described.stdout
    assert (root / facts["sbom_path"]).read_bytes() == committed
    into_committed = run_cli(root, "sbom", "--box=fixture", f"--output={root / facts['sbom_path']}")
    assert into_committed.returncode == 1
    assert "only `invoke release` writes" in into_committed.stderr
    assert (root / facts["sbom_path"]).read_bytes() == committed

    audited = run_cli(root, "audit")
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert f"PASS  {entry['reference']}" in audited.stdout

    commit_all(root, "release v1")
    (publishing.box_dir / "motd").write_text("new content, same version\n")
    commit_all(root, "change without a bump")
    checked = run_cli(root, "check")
    assert checked.returncode == 1
    assert "buildboxes/fixture/box.yaml:" in checked.stdout
    assert "version: v1 was released with other inputs" in checked.stdout
    assert "set `version: 2`" in checked.stdout
    refused = run_cli(root, "release", "--box=fixture")
    assert refused.returncode == 1

    # Drift: the tag moved in the registry, and the committed SBOM was edited.
    subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
         f"docker://{busybox_base.ref}", f"docker://{publishing.registry}/fixture:v1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    sbom_file = root / facts["sbom_path"]
    sbom_file.write_text(sbom_file.read_text().replace('"fixture"', '"tampered"'))
    drifted = run_cli(root, "audit", "--box=fixture")
    assert drifted.returncode == 1
    assert f"FAIL  {entry['reference']}" in drifted.stdout
    assert f"points at {busybox_base.digest}, recorded {entry['digest']}" in drifted.stdout
    assert "differs from the recorded sha256" in drifted.stdout
    assert "audit: 1 of 1 releases drifted" in drifted.stderr


def test_release_refuses_a_dirty_tree(publishing: FixtureProject) -> None:
    (publishing.box_dir / "motd").write_text("uncommitted\n")
    result = run_cli(publishing.root, "release", "--box=fixture")
    assert result.returncode == 1
    assert "the git tree has uncommitted changes" in result.stderr
    assert "buildboxes/fixture/motd" in result.stderr


def test_ref_without_a_release(publishing: FixtureProject) -> None:
    result = run_cli(publishing.root, "ref", "--box=fixture")
    assert result.returncode == 1
    assert f"no release of fixture (any version) in {RECORD_FILE}" in result.stderr


def test_credentials_from_the_docker_config(
    fixture_project: FixtureProject,
    auth_registry: Registry,
    docker_client: DockerClient,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import base64

    project = point_at(fixture_project, auth_registry)
    username, password = auth_registry.auth or ("", "")
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    (tmp_path / "docker-config").mkdir()
    (tmp_path / "docker-config" / "config.json").write_text(
        json.dumps({"auths": {auth_registry.host: {"auth": token}}})
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.delenv("BUILDBOX_REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("BUILDBOX_REGISTRY_PASSWORD", raising=False)
    try:
        build(project)
        result = run_cli(project.root, "publish", "--box=fixture", "--dev")
        assert result.returncode == 0, result.stderr
        assert password not in result.stdout + result.stderr
    finally:
        untag_all(docker_client, project.registry)


@pytest.mark.engine
def test_a_release_pulls_back_by_digest_and_oras_finds_its_sbom(publishing: FixtureProject) -> None:
    """Independent clients read what a release published: skopeo by digest, oras the SBOM."""
    released = run_cli(publishing.root, "release", "fixture")
    assert released.returncode == 0, released.stdout + released.stderr
    [entry] = json.loads((publishing.root / RECORD_FILE).read_text())["releases"]
    reference = f"{publishing.registry}/fixture@{entry['digest']}"
    assert skopeo(reference)["Digest"] == entry["digest"]
    discovered = subprocess.run(
        ["oras", "discover", "--plain-http", "--distribution-spec", "v1.1-referrers-tag",
         "--artifact-type", SBOM_TYPE, "--format", "json", reference],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    [referrer] = json.loads(discovered.stdout)["manifests"]
    assert referrer["artifactType"] == SBOM_TYPE
    sbom_digest = entry["platforms"]["linux/amd64"]["sbom_digest"]
    artifact = subprocess.run(
        ["oras", "manifest", "fetch", "--plain-http",
         f"{publishing.registry}/fixture@{referrer['digest']}"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert json.loads(artifact.stdout)["layers"][0]["digest"] == sbom_digest
    # Its inputs are escrowed beside it, and listed from the registry.
    assert entry["escrow"].startswith(f"{publishing.registry}/fixture@sha256:")
    listed = run_cli(publishing.root, "escrow", "--box=fixture")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert ["component", "hello"] in [row[:2] for row in rows]
    assert listed.stdout.splitlines()[-1].endswith(f"in {entry['escrow']}")
