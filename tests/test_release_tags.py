"""Release tags only through `invoke release`, and verify-release holding the signed provenance
to the release record: an old signed digest re-tagged as a new version is refused."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from buildbox.define import project as project_stage
from buildbox.define.inputs import inputs_digest
from buildbox.digests import digest_of
from buildbox.oci.documents import (
    OCI_MANIFEST,
)
from buildbox.oci.registry import Registry as Client
from buildbox.release import record, signing
from buildbox.release.signing import provenance_mismatch
from buildbox.source import revision
from conftest import missing
from projects import make_project, run_cli, settings_for, settle
from publishing import PASSWORD, commit_all, git, key_pair, tiny_image
from registry import Registry

SOURCE = "https://github.com/example-org/boxes"
COMMIT = "1" * 40
INDEX = "sha256:" + "a" * 64
AMD64 = "sha256:" + "b" * 64
ARM64 = "sha256:" + "c" * 64
INPUTS = "sha256:" + "d" * 64

RELEASE = record.Release(
    box="demo",
    version="2",
    reference=f"r.example/boxes/demo:v2@{INDEX}",
    digest=INDEX,
    inputs_digest=INPUTS,
    revision=COMMIT,
    platforms={
        "linux/amd64": record.PlatformRelease(AMD64, "sbom/demo/v2-linux-amd64.cdx.json", INDEX),
        "linux/arm64": record.PlatformRelease(ARM64, "sbom/demo/v2-linux-arm64.cdx.json", INDEX),
    },
)


def predicate() -> dict[str, Any]:
    """The provenance `invoke release` signs for RELEASE (signing.provenance's shape)."""
    return {
        "buildDefinition": {
            "externalParameters": {
                "box": "demo",
                "version": "2",
                "source": {"uri": SOURCE, "digest": {"gitCommit": COMMIT}},
            },
            "internalParameters": {
                "inputsDigest": INPUTS,
                "epoch": 1700000000,
                "platforms": {"linux/amd64": AMD64, "linux/arm64": ARM64},
            },
        }
    }


def changed(path: str, value: Any) -> dict[str, Any]:
    found = copy.deepcopy(predicate())
    *parents, last = path.split(".")
    where = found["buildDefinition"]
    for key in parents:
        where = where[key]
    where[last] = value
    return found


def test_the_provenance_of_this_release_matches() -> None:
    assert provenance_mismatch(predicate(), RELEASE, SOURCE, COMMIT) is None


@pytest.mark.parametrize(
    ("path", "value", "line"),
    [
        ("externalParameters.box", "other",
         "provenance names box other, the release record says demo"),
        ("externalParameters.version", "1",
         "provenance names version 1, the release record says 2"),
        ("internalParameters.inputsDigest", "sha256:" + "e" * 64,
         f"provenance names inputs digest sha256:{'e' * 64}, the release record says {INPUTS}"),
        ("internalParameters.platforms", {"linux/amd64": AMD64},
         (f"provenance names platform digests linux/amd64={AMD64}, the release record says "
         f"linux/amd64={AMD64}, linux/arm64={ARM64}")),
        ("internalParameters.platforms", {"linux/amd64": ARM64, "linux/arm64": AMD64},
         (f"provenance names platform digests linux/amd64={ARM64}, linux/arm64={AMD64}, the "
         f"release record says linux/amd64={AMD64}, linux/arm64={ARM64}")),
        ("externalParameters.source", {"uri": SOURCE, "digest": {"gitCommit": "2" * 40}},
         f"provenance is for revision {'2' * 40}, the release record says {COMMIT}"),
        ("externalParameters.source", {"uri": "https://evil.invalid/x", "digest": {}},
         f"provenance names the source 'https://evil.invalid/x', not {SOURCE!r}"),
        ("internalParameters", "not an object",
         f"provenance names inputs digest nothing, the release record says {INPUTS}"),
    ],
)  # fmt: skip
def test_each_field_that_differs_is_named_with_both_values(
    path: str, value: Any, line: str
) -> None:
    assert provenance_mismatch(changed(path, value), RELEASE, SOURCE, COMMIT) == line


def test_a_provenance_without_fields_names_the_first_missing_one() -> None:
    assert provenance_mismatch({}, RELEASE, SOURCE, COMMIT) == (
        f"provenance names the source None, not {SOURCE!r}"
    )


def test_publish_writes_no_release_tag(tmp_path: Path) -> None:
    """Before any engine or registry is touched: the release tag is `invoke release`'s."""
    root = make_project(tmp_path / "p")
    result = run_cli(root, "publish", "demo")
    assert result.returncode == 1
    refusal = (
        "buildbox: invoke publish writes development tags only (<registry>/demo-dev:<commit>): "
        "add --dev. The release tag demo:v1 is written by `invoke release --box=demo` (a clean "
        f"commit, signed, recorded in {record.RECORD_FILE})"
    )
    assert result.stderr.strip().splitlines() == [refusal]
    assert "Traceback" not in result.stderr


@pytest.mark.integration
def test_an_old_signed_digest_recorded_as_a_new_version_is_refused(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """v1 released and signed as usual; then its digest tagged v2 and recorded as v2. Tag,
    signatures and SBOM all check out; only the signed provenance says it is v1."""
    if shutil.which("cosign") is None:
        missing("cosign is not installed (Debian 13: apt-get install cosign)")
    private, public = key_pair(tmp_path / "keys")
    monkeypatch.setenv("COSIGN_PASSWORD", PASSWORD)
    root = make_project(tmp_path / "p")
    prefix = f"{registry.host}/t{uuid.uuid4().hex[:8]}"
    config = root / "invoke.yaml"
    settle(config, registry=f'"{prefix}"', transparency_log="false")
    git(root, "init", "-q")
    commit_all(root, "demo v1")

    settings = dataclasses.replace(
        settings_for(root), registry=prefix, signing_key=str(private), transparency_log=False
    )
    project = project_stage.load(settings)
    [box] = project.boxes
    source = revision(root)
    inputs = inputs_digest(box, project.library, settings)
    manifest, blobs = tiny_image()
    digest = digest_of(manifest)
    repository = f"{prefix.split('/', 1)[1]}/demo"
    with Client(registry.host) as client:
        for blob_digest, blob in blobs:
            client.upload_blob(repository, blob_digest, blob)
        for reference in (digest, "v1", "v2"):
            client.put_manifest(repository, reference, manifest, OCI_MANIFEST)
    sbom = {"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1}
    sbom_text = json.dumps(sbom)
    sign = signing.signer(project, box, source, inputs, {"linux/amd64": sbom_text})
    assert sign is not None
    sign(f"{registry.host}/{repository}", digest, {"linux/amd64": digest})

    def entry(version: str, inputs_digest: str) -> record.Release:
        sbom_path = f"sbom/demo/v{version}-linux-amd64.cdx.json"
        (root / sbom_path).parent.mkdir(parents=True, exist_ok=True)
        (root / sbom_path).write_text(sbom_text)
        return record.Release(
            box="demo", version=version,
            reference=f"{registry.host}/{repository}:v{version}@{digest}", digest=digest,
            inputs_digest=inputs_digest, revision=source.label,
            platforms={"linux/amd64": record.PlatformRelease(
                digest, sbom_path, digest_of(sbom_text.encode()))},
            epoch=source.epoch,
        )  # fmt: skip

    record.add(root, [], entry("1", inputs))
    record.add(root, record.load(settings), entry("2", "sha256:" + "e" * 64))

    genuine = run_cli(root, "verify-release", "demo", "--version=1", f"--key={public}")
    assert genuine.returncode == 0, genuine.stdout + genuine.stderr
    assert "PASS  provenance attestation: signed" in genuine.stdout
    # Recorded without escrow (as every release before it was): said, and not a failure.
    assert (
        "NOTE  inputs manifest: not escrowed: released before escrow or with escrow off"
    ) in genuine.stdout.splitlines()

    retagged = run_cli(root, "verify-release", "demo", "--version=2", f"--key={public}")
    assert "PASS  tag: " in retagged.stdout
    assert "PASS  signature (release)" in retagged.stdout
    assert "PASS  SBOM attestation (linux/amd64)" in retagged.stdout
    assert (
        "FAIL  provenance attestation: provenance names version 1, the release record says 2"
    ) in retagged.stdout, retagged.stdout
    assert retagged.returncode == 1
