"""Signed releases, checked with Debian's cosign: signatures, SBOM and provenance attestations,
and every refusal verify-release promises. Keys are generated for the test; no transparency log
(the tests reach no network but loopback)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from buildbox.release.record import RECORD_FILE
from conftest import BaseImage, FixtureProject, missing
from projects import run_cli, settle
from publishing import PASSWORD, commit_all, key_pair, publishing  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    if shutil.which("cosign") is None:
        missing("cosign is not installed (Debian 13: apt-get install cosign)")
    root = tmp_path_factory.mktemp("keys")
    return {"release": key_pair(root / "release"), "other": key_pair(root / "other")}


def cosign(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["cosign", *arguments, "--allow-http-registry=true"],
        capture_output=True, text=True, check=False, timeout=120,
        env={"PATH": "/usr/bin:/bin", "COSIGN_PASSWORD": PASSWORD, "HOME": "/nonexistent"},
    )  # fmt: skip


def predicates(output: str) -> list[dict[str, Any]]:
    statements = [
        json.loads(base64.b64decode(json.loads(line)["payload"]))
        for line in output.splitlines()
        if line.startswith("{")
    ]
    return [statement["predicate"] for statement in statements]


def sign_with(project: FixtureProject, key: Path) -> None:
    config = project.root / "invoke.yaml"
    settle(config, signing_key=key, transparency_log="false")
    commit_all(project.root, "sign releases")


@pytest.mark.integration
def test_a_signed_release_that_cosign_and_verify_release_accept(
    publishing: FixtureProject,  # noqa: F811
    keys: dict[str, tuple[Path, Path]],
    busybox_base: BaseImage,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    private, public = keys["release"]
    root = publishing.root
    sign_with(publishing, private)
    monkeypatch.setenv("COSIGN_PASSWORD", PASSWORD)
    released = run_cli(root, "release", "fixture")
    assert released.returncode == 0, released.stdout + released.stderr
    assert "signed with cosign: the release and each image" in released.stdout
    [entry] = json.loads((root / RECORD_FILE).read_text())["releases"]
    image = f"{publishing.registry}/fixture@{entry['digest']}"
    sbom_path = root / entry["platforms"]["linux/amd64"]["sbom_path"]

    # Debian's cosign, on its own: the signature and both attestations, with the public key.
    untrusted = ("--key", str(public), "--insecure-ignore-tlog=true")
    signed = cosign("verify", *untrusted, image)
    assert signed.returncode == 0, signed.stderr
    sbom = cosign("verify-attestation", "--type", "cyclonedx", *untrusted, image)
    assert sbom.returncode == 0, sbom.stderr
    assert predicates(sbom.stdout) == [json.loads(sbom_path.read_text())]
    provenance = cosign("verify-attestation", "--type", "slsaprovenance1", *untrusted, image)
    assert provenance.returncode == 0, provenance.stderr
    [predicate] = predicates(provenance.stdout)
    source = predicate["buildDefinition"]["externalParameters"]["source"]
    assert source["digest"]["gitCommit"] == entry["revision"]
    materials = predicate["buildDefinition"]["resolvedDependencies"]
    assert {
        "uri": f"oci://{busybox_base.repository}",
        "digest": {"sha256": busybox_base.digest[7:]},
    } in materials
    assert any(m.get("name") == "hello@1.0" for m in materials)

    checked = run_cli(root, "verify-release", "fixture", f"--key={public}")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "verify-release: " in checked.stdout
    assert "is signed, attested and as recorded" in checked.stdout
    assert "FAIL" not in checked.stdout

    # The same with the key in invoke.yaml: audit checks signatures too.
    config = root / "invoke.yaml"
    settle(config, signing_public_key=public)
    audited = run_cli(root, "audit", "--box=fixture")
    assert audited.returncode == 0, audited.stdout + audited.stderr

    # Another key signed nothing here.
    other = run_cli(root, "verify-release", "fixture", f"--key={keys['other'][1]}")
    assert other.returncode == 1
    assert "FAIL  signature (release): signed, but not by the trusted key" in other.stdout
    assert "FAIL  SBOM attestation (linux/amd64): " in other.stdout

    # The committed SBOM edited after the release: the signed one is not it.
    original = sbom_path.read_text()
    sbom_path.write_text(original.replace('"fixture"', '"tampered"'))
    edited = run_cli(root, "verify-release", "fixture", f"--key={public}")
    assert edited.returncode == 1
    assert (
        "FAIL  SBOM attestation (linux/amd64): the signed SBOM differs from the committed "
        "sbom/fixture/v1-linux-amd64.cdx.json"
    ) in edited.stdout
    sbom_path.write_text(original)

    # The SBOM attestation replaced by one signed with another key.
    tampered = root / "tampered.json"
    tampered.write_text(original.replace('"fixture"', '"tampered"'))
    replaced = cosign(
        "attest", "--yes", "--replace", "--type", "cyclonedx", "--predicate", str(tampered),
        "--key", str(keys["other"][0]), "--tlog-upload=false", image,
    )  # fmt: skip
    assert replaced.returncode == 0, replaced.stderr
    swapped = run_cli(root, "verify-release", "fixture", f"--key={public}")
    assert swapped.returncode == 1
    assert "FAIL  SBOM attestation (linux/amd64): " in swapped.stdout
    assert "PASS  signature (release)" in swapped.stdout

    # The record names another revision than the one the provenance was made for.
    record_file = root / RECORD_FILE
    record = json.loads(record_file.read_text())
    record["releases"][0]["revision"] = "0" * 40
    record_file.write_text(json.dumps(record))
    moved = run_cli(root, "verify-release", "fixture", f"--key={public}")
    assert (
        f"FAIL  provenance attestation: provenance is for revision {entry['revision']}, the "
        f"release record says {'0' * 40}"
    ) in moved.stdout

    # An image pushed by hand under the tag.
    subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
         f"docker://{busybox_base.ref}", f"docker://{publishing.registry}/fixture:v1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    by_hand = run_cli(root, "verify-release", "fixture", f"--key={public}")
    assert by_hand.returncode == 1
    assert (
        f"FAIL  tag: {publishing.registry}/fixture:v1 points at {busybox_base.digest}, "
        f"not {entry['digest']}"
    ) in by_hand.stdout

    # The password and the private key never reach output, the record or the SBOM.
    secret_key = private.read_text().splitlines()[1]
    seen = capfd.readouterr()
    for text in (
        released.stdout, released.stderr, checked.stdout, seen.out, seen.err, original,
        record_file.read_text(),
    ):  # fmt: skip
        assert PASSWORD not in text
        assert secret_key not in text


@pytest.mark.integration
def test_an_unsigned_release_is_named_unsigned(
    publishing: FixtureProject,  # noqa: F811
    keys: dict[str, tuple[Path, Path]],
) -> None:
    released = run_cli(publishing.root, "release", "fixture")
    assert released.returncode == 0, released.stdout + released.stderr
    config = publishing.root / "invoke.yaml"
    settle(config, transparency_log="false")
    checked = run_cli(publishing.root, "verify-release", "fixture", f"--key={keys['release'][1]}")
    assert checked.returncode == 1
    assert "FAIL  signature (release): not signed" in checked.stdout
    assert "FAIL  provenance attestation: not signed" in checked.stdout
    assert "verify-release: " in checked.stderr
    no_key = run_cli(publishing.root, "verify-release", "fixture")
    assert no_key.returncode == 1
    assert "verify-release needs what to trust: --key=" in no_key.stderr


@pytest.mark.integration
def test_a_wrong_password_fails_the_release_before_the_tag_and_says_nothing_secret(
    publishing: FixtureProject,  # noqa: F811
    keys: dict[str, tuple[Path, Path]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sign_with(publishing, keys["release"][0])
    wrong = "wrong-pw-9c1d"
    monkeypatch.setenv("COSIGN_PASSWORD", wrong)
    released = run_cli(publishing.root, "release", "fixture")
    assert released.returncode == 1
    assert "cosign could not sign" in released.stderr
    assert wrong not in released.stdout + released.stderr
    assert PASSWORD not in released.stdout + released.stderr
    assert "Traceback" not in released.stderr
    assert not (publishing.root / RECORD_FILE).exists()
    tags = subprocess.run(
        ["skopeo", "list-tags", "--tls-verify=false", f"docker://{publishing.registry}/fixture"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert "v1" not in json.loads(tags.stdout)["Tags"]  # nothing unsigned was tagged


@pytest.mark.integration
@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("signing_key: missing.key", "buildbox.signing_key: no key file missing.key"),
        ("signing_key: env://BUILDBOX_TEST_UNSET_KEY", "BUILDBOX_TEST_UNSET_KEY is not set"),
    ],
)
def test_a_signing_key_that_is_not_there_is_one_clear_error(
    publishing: FixtureProject,  # noqa: F811
    setting: str,
    expected: str,
) -> None:
    config = publishing.root / "invoke.yaml"
    settle(config, **dict([setting.split(": ", 1)]))
    commit_all(publishing.root, "sign")
    released = run_cli(publishing.root, "release", "fixture")
    assert released.returncode == 1
    assert expected in released.stderr
    assert "Traceback" not in released.stderr
