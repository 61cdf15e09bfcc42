"""Refusals and recovery docs/publishing.md promises, asserted by what a user reads: each
message, and that running the release again completes what an interrupted one left."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import requests

from buildbox.oci.documents import fallback_tag
from buildbox.release.record import RECORD_FILE
from conftest import BaseImage, FixtureProject
from fault_proxy import Fault, FaultProxy
from projects import run_cli
from publishing import commit_all, git, point_at, publishing, tag_digest, untag_all  # noqa: F401
from registry import Registry

pytestmark = pytest.mark.integration


def repository(project: FixtureProject) -> str:
    return project.registry.split("/", 1)[1] + "/fixture"


def test_a_floating_base_is_never_released(publishing: FixtureProject) -> None:  # noqa: F811
    publishing.set_box(base="busybox:latest")
    commit_all(publishing.root, "a floating base")
    refused = run_cli(publishing.root, "release", "fixture")
    assert refused.returncode == 1
    assert re.search(
        r"buildboxes/fixture/box.yaml:\d+: base: 'busybox:latest' is not pinned by digest",
        refused.stderr,
    )
    assert not (publishing.root / RECORD_FILE).exists()


def test_an_unbumped_change_is_refused_naming_both_versions(
    publishing: FixtureProject,  # noqa: F811
) -> None:
    assert run_cli(publishing.root, "release", "fixture").returncode == 0
    [first] = json.loads((publishing.root / RECORD_FILE).read_text())["releases"]
    commit_all(publishing.root, "release v1")
    (publishing.box_dir / "motd").write_text("changed without a bump\n")
    commit_all(publishing.root, "change")
    refused = run_cli(publishing.root, "release", "fixture")
    assert refused.returncode == 1
    assert (
        f"fixture v1 was already released with other inputs ({first['inputs_digest']}; now "
        in refused.stderr
    )
    assert "A release is immutable: set `version: 2` in buildboxes/fixture/box.yaml" in (
        refused.stderr
    )


def test_a_release_that_died_before_the_tag_completes_on_rerun(
    proxied: tuple[FixtureProject, FaultProxy], registry: Registry
) -> None:
    project, proxy = proxied
    proxy.add(Fault("PUT", r"/manifests/v1$", 400))  # the tag write fails for good
    died = run_cli(project.root, "release", "fixture")
    assert died.returncode == 1
    assert "HTTP 400 to PUT /v2/" in died.stderr
    blobs = [p for m, p, s in proxy.log if m == "PUT" and "/blobs/uploads/" in p and s == 201]
    assert blobs, "the blobs were pushed before it died"
    assert tag_digest(registry, repository(project), "v1") is None
    assert not (project.root / RECORD_FILE).exists()

    proxy.heal()
    proxy.log.clear()
    again = run_cli(project.root, "release", "fixture")
    assert again.returncode == 0, again.stdout + again.stderr
    [entry] = json.loads((project.root / RECORD_FILE).read_text())["releases"]
    assert tag_digest(registry, repository(project), "v1") == entry["digest"]
    assert not [p for m, p, _ in proxy.log if m == "PUT" and "/blobs/uploads/" in p], (
        "the rerun uploaded no blob again"
    )


def test_a_release_whose_sbom_referrer_is_gone_repairs_it_on_rerun(
    publishing: FixtureProject,  # noqa: F811
    registry: Registry,
) -> None:
    assert run_cli(publishing.root, "release", "fixture").returncode == 0
    [entry] = json.loads((publishing.root / RECORD_FILE).read_text())["releases"]
    index = f"{registry.url}/v2/{repository(publishing)}/manifests/"
    found = requests.head(index + fallback_tag(entry["digest"]), timeout=10, headers={
        "Accept": "application/vnd.oci.image.index.v1+json"})  # fmt: skip
    deleted = requests.delete(index + found.headers["Docker-Content-Digest"], timeout=10)
    assert deleted.status_code == 202
    drifted = run_cli(publishing.root, "audit")
    assert drifted.returncode == 1
    assert f"no SBOM is attached to the linux/amd64 image {entry['digest']}" in drifted.stdout

    repaired = run_cli(publishing.root, "release", "fixture")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "is recorded but incomplete (no SBOM is attached" in repaired.stdout
    assert run_cli(publishing.root, "audit").returncode == 0


def test_the_tag_read_back_catches_someone_else_writing_the_tag(
    proxied: tuple[FixtureProject, FaultProxy], registry: Registry, busybox_base: BaseImage
) -> None:
    project, proxy = proxied

    def someone_else() -> None:
        subprocess.run(
            ["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
             f"docker://{busybox_base.ref}",
             f"docker://{registry.host}/{repository(project)}:v1"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    # Between publish's check of the tag and its write, another writer tags other content.
    proxy.add(Fault("PUT", r"/manifests/v1$", "swallow", action=someone_else))
    raced = run_cli(project.root, "release", "fixture")
    assert raced.returncode == 1
    assert (
        f"after tagging, {proxy.host}/{repository(project)}:v1 points at {busybox_base.digest}"
        in raced.stderr
    )
    assert "someone else wrote the tag at the same time" in raced.stderr
    assert not (project.root / RECORD_FILE).exists()
