"""Publishing to a registry like the ones users push to: HTTPS with a certificate from a CA made
for the session, and bearer tokens with per-repository scopes from a token service (GHCR,
Docker Hub, ECR and Harbor all work so). The registry is Debian's docker-registry, checking the
tokens itself. Release, ref, audit and the SBOM referrer pass through it; no push scope, a
wrong password and an untrusted certificate are each one clear error; no secret is printed."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from docker import DockerClient

from buildbox.oci.documents import MANIFEST_ACCEPT
from buildbox.release.record import RECORD_FILE
from conftest import FixtureProject, missing
from projects import CliResult, run_cli, settle
from publishing import commit_all, git, point_at, untag_all
from registry import Registry, Tls, TokenAuth
from token_registry import ISSUER, SERVICE, Account, CertificateAuthority, TokenService

pytestmark = pytest.mark.integration

CI_PASSWORD = "ci-7d41b0-never-shown"
READER_PASSWORD = "reader-9a27c3-never-shown"
SBOM_TYPE = "application/vnd.cyclonedx+json"


@pytest.fixture(scope="module")
def session_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path_factory.mktemp("session-ca"))


@pytest.fixture(scope="module")
def token_service(session_ca: CertificateAuthority) -> Iterator[TokenService]:
    everything = {"": frozenset({"pull", "push"})}
    accounts = {
        "ci": Account(CI_PASSWORD, everything),
        "reader": Account(READER_PASSWORD, {"": frozenset({"pull"})}),
    }
    service = TokenService(session_ca, accounts).start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def tls_registry(
    tmp_path_factory: pytest.TempPathFactory,
    session_ca: CertificateAuthority,
    token_service: TokenService,
) -> Iterator[Registry]:
    served = session_ca.issue("registry", address="127.0.0.1")
    registry = Registry(
        tmp_path_factory.mktemp("tls-registry"),
        tls=Tls(served.certificate, served.key, session_ca.bundle),
        token_auth=TokenAuth(token_service.realm, SERVICE, ISSUER, session_ca.bundle),
    )
    try:
        registry.start()
    except FileNotFoundError as error:
        missing(str(error))
    yield registry
    registry.stop()


@pytest.fixture
def tls_project(
    fixture_project: FixtureProject,
    tls_registry: Registry,
    session_ca: CertificateAuthority,
    docker_client: DockerClient,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[FixtureProject]:
    """The fixture project in git, publishing as user "ci" to the TLS token-auth registry."""
    project = point_at(fixture_project, tls_registry)
    configure(project, session_ca.bundle)
    monkeypatch.setenv("BUILDBOX_REGISTRY_USERNAME", "ci")
    monkeypatch.setenv("BUILDBOX_REGISTRY_PASSWORD", CI_PASSWORD)
    (project.root / ".gitignore").write_text("*.part\n")
    git(project.root, "init", "-q")
    commit_all(project.root, "fixture")
    yield project
    untag_all(docker_client, project.registry)


def configure(project: FixtureProject, ca_bundle: Path) -> None:
    config = project.root / "invoke.yaml"
    settle(config, registry_ca_bundle=ca_bundle)


def repository(project: FixtureProject) -> str:
    return project.registry.split("/", 1)[1] + "/fixture"


def read(
    registry: Registry, tokens: TokenService, project: FixtureProject, path: str
) -> requests.Response:
    """GET ``/v2/<repository>/<path>`` as "ci" would, with a token the service mints."""
    name = repository(project)
    token, _ = tokens.mint("ci", [f"repository:{name}:pull"])
    return requests.get(
        f"{registry.url}/v2/{name}/{path}",
        headers={"Authorization": f"Bearer {token}", "Accept": MANIFEST_ACCEPT},
        verify=registry.verify,
        timeout=30,
    )


def assert_no_secret(result: CliResult, tokens: TokenService) -> None:
    printed = result.stdout + result.stderr
    assert "Traceback" not in printed
    for secret in (CI_PASSWORD, READER_PASSWORD, "wrong-b4c9-password"):
        assert secret not in printed
    for *_, token in tokens.issued:
        assert token not in printed
        assert token.split(".")[2] not in printed


def test_release_ref_audit_and_the_sbom_referrer_through_tls_and_tokens(
    tls_project: FixtureProject,
    tls_registry: Registry,
    token_service: TokenService,
    session_ca: CertificateAuthority,
) -> None:
    root = tls_project.root
    already = len(token_service.issued)
    released = run_cli(root, "release", "--box=fixture")
    assert released.returncode == 0, released.stdout + released.stderr
    assert_no_secret(released, token_service)
    [entry] = json.loads((root / RECORD_FILE).read_text())["releases"]

    # The registry itself serves the tag, over TLS, to a bearer of a token.
    tag = read(tls_registry, token_service, tls_project, "manifests/v1")
    assert tag.status_code == 200, tag.text
    assert tag.headers["Docker-Content-Digest"] == entry["digest"]
    # The toolkit got its push scope from the token service, as user "ci".
    name = repository(tls_project)
    granted = [
        access["actions"]
        for user, _, accesses, _ in token_service.issued[already:]
        for access in accesses
        if user == "ci" and access["name"] == name
    ]
    assert ["pull", "push"] in granted, token_service.issued[already:]

    # An independent client finds the SBOM referrer through TLS and tokens.
    discovered = subprocess.run(
        ["oras", "discover", "--ca-file", str(session_ca.bundle), "--username", "ci",
         "--password-stdin", "--distribution-spec", "v1.1-referrers-tag",
         "--artifact-type", SBOM_TYPE, "--format", "json",
         f"{tls_project.registry}/fixture@{entry['digest']}"],
        input=CI_PASSWORD, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert discovered.returncode == 0, discovered.stderr
    [referrer] = json.loads(discovered.stdout)["manifests"]
    sbom = read(tls_registry, token_service, tls_project, f"manifests/{referrer['digest']}")
    sbom_digest = entry["platforms"]["linux/amd64"]["sbom_digest"]
    assert sbom.json()["layers"][0]["digest"] == sbom_digest

    pinned = run_cli(root, "ref", "--box=fixture")
    assert pinned.returncode == 0, pinned.stderr
    assert pinned.stdout.strip() == entry["reference"]
    audited = run_cli(root, "audit")
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert f"PASS  {entry['reference']}" in audited.stdout
    assert_no_secret(audited, token_service)


def test_a_token_without_push_scope_is_one_clear_error(
    tls_project: FixtureProject,
    tls_registry: Registry,
    token_service: TokenService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BUILDBOX_REGISTRY_USERNAME", "reader")
    monkeypatch.setenv("BUILDBOX_REGISTRY_PASSWORD", READER_PASSWORD)
    refused = run_cli(tls_project.root, "release", "--box=fixture")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    name = repository(tls_project)
    assert (
        f"the registry {tls_registry.host} did not grant user 'reader' pull,push access to "
        f"{name} (HTTP 401 insufficient_scope on POST /v2/{name}/blobs/uploads/"
    ) in refused.stderr
    assert_no_secret(refused, token_service)
    assert read(tls_registry, token_service, tls_project, "manifests/v1").status_code == 404
    assert not (tls_project.root / RECORD_FILE).exists()


def test_a_wrong_password_is_one_clear_error(
    tls_project: FixtureProject,
    tls_registry: Registry,
    token_service: TokenService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BUILDBOX_REGISTRY_PASSWORD", "wrong-b4c9-password")
    refused = run_cli(tls_project.root, "release", "--box=fixture")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert (
        f"the token service of {tls_registry.host} refused the credentials for user 'ci' (HTTP 401)"
    ) in refused.stderr
    assert_no_secret(refused, token_service)
    assert not (tls_project.root / RECORD_FILE).exists()


def test_an_untrusted_certificate_is_one_clear_error(
    tls_project: FixtureProject,
    tls_registry: Registry,
    token_service: TokenService,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Trusting another CA (here: only the machine's own) is what a missing CA looks like.
    trusted = "INVOKE_BUILDBOX_REGISTRY_CA_BUNDLE"
    monkeypatch.setenv(trusted, "/etc/ssl/certs/ca-certificates.crt")
    refused = run_cli(tls_project.root, "release", "--box=fixture")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert (
        f"the registry {tls_registry.host} cannot be trusted: its TLS certificate does not "
        "verify (unable to get local issuer certificate); if a private CA signed its "
        "certificate, set buildbox.registry_ca_bundle"
    ) in refused.stderr
    assert "gave up after" not in refused.stderr, "a certificate is not retried"
    assert_no_secret(refused, token_service)
    assert not (tls_project.root / RECORD_FILE).exists()

    monkeypatch.setenv(trusted, str(tmp_path / "no-such-ca.pem"))
    missing_bundle = run_cli(tls_project.root, "release", "--box=fixture")
    assert missing_bundle.returncode == 1
    assert (
        f"invoke.yaml: buildbox.registry_ca_bundle: {tmp_path / 'no-such-ca.pem'} is not a file"
    ) in missing_bundle.stderr
    assert "Traceback" not in missing_bundle.stderr
