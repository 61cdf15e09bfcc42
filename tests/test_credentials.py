"""Credentials go to their own host only: BUILDBOX_REGISTRY_USERNAME/PASSWORD to the publishing
registry, the Docker config's entry to its host, and never to a token service on another host or
over plain http. Against a loopback registry whose token service records what it receives."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from buildbox.build.build import platform_base
from buildbox.errors import BuildboxError
from buildbox.oci.documents import OCI_INDEX, OCI_MANIFEST
from buildbox.oci.registry import open_registry
from buildbox.oci.transport import may_receive_credentials
from buildbox.settings import Settings, from_config
from recording_registry import RecordingRegistry, index_of

#: What the release workflow's variables hold there: the job's GITHUB_TOKEN.
SECRET = "ghs_n3ver-leaves-the-publishing-host"
AMD64 = "sha256:" + "a" * 64
ARM64 = "sha256:" + "b" * 64


@pytest.fixture(autouse=True)
def environment_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUILDBOX_REGISTRY_USERNAME", "ci-actor")
    monkeypatch.setenv("BUILDBOX_REGISTRY_PASSWORD", SECRET)
    (tmp_path / "docker").mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))  # empty: no logins


def settings_for(tmp_path: Path, registry: str) -> Settings:
    return from_config({"root": str(tmp_path), "registry": registry, "cache_dir": str(tmp_path)})


def carries_secret(headers: list[str]) -> bool:
    basic = [h.removeprefix("Basic ") for h in headers if h.startswith("Basic ")]
    return any(SECRET in base64.b64decode(encoded).decode() for encoded in basic)


def an_index(registry: RecordingRegistry) -> str:
    return registry.serve("library/base", "1", index_of(("linux/amd64", AMD64)), OCI_INDEX)


def test_a_token_service_on_another_host_never_receives_the_password(tmp_path: Path) -> None:
    # The publishing registry's 401 names a token service elsewhere (here the same server by
    # another name): the password stays home; an anonymous token is asked for instead.
    with RecordingRegistry() as registry:
        registry.realm_host = f"localhost:{registry.port}"
        digest = registry.serve("buildbox/box", "v1", b'{"schemaVersion": 2}', OCI_MANIFEST)
        settings = settings_for(tmp_path, f"{registry.host}/buildbox")
        with open_registry(registry.host, settings) as client:
            found = client.get_manifest("buildbox/box", digest)
    assert found is not None, "public content still reads with an anonymous token"
    assert registry.token_requests, "the token service was asked"
    assert not carries_secret(registry.received), registry.received


def test_a_refusal_then_says_the_credentials_were_kept_back(tmp_path: Path) -> None:
    with RecordingRegistry(anonymous=False) as registry:
        registry.realm_host = f"localhost:{registry.port}"
        settings = settings_for(tmp_path, f"{registry.host}/buildbox")
        with (
            open_registry(registry.host, settings) as client,
            pytest.raises(BuildboxError) as caught,
        ):
            client.get_manifest("buildbox/box", "v1")
    assert str(caught.value) == (
        f"the token service of {registry.host} refused anonymous access (HTTP 401): its token "
        f"service http://localhost:{registry.port}/token is not on {registry.host} over https, "
        "so buildbox did not send it the credentials (they go to their own host only)"
    )
    assert not carries_secret(registry.received)


def test_the_publishing_registry_own_token_service_gets_them(tmp_path: Path) -> None:
    with RecordingRegistry() as registry:
        digest = registry.serve("buildbox/box", "v1", b'{"schemaVersion": 2}', OCI_MANIFEST)
        settings = settings_for(tmp_path, f"{registry.host}/buildbox")
        with open_registry(registry.host, settings) as client:
            assert client.get_manifest("buildbox/box", digest) is not None
    assert carries_secret(registry.token_requests)


def test_a_base_on_another_registry_gets_no_environment_credentials(tmp_path: Path) -> None:
    with RecordingRegistry() as registry:
        digest = an_index(registry)
        settings = settings_for(tmp_path, "ghcr.invalid/example/buildbox")
        base = f"{registry.host}/library/base@{digest}"
        assert platform_base(base, "linux/amd64", settings) == (
            f"{registry.host}/library/base@{AMD64}"
        )
    assert registry.token_requests, "the token service was asked"
    assert registry.token_requests == ["" for _ in registry.token_requests], registry.received


def test_a_base_registry_gets_what_the_docker_config_has_for_it(tmp_path: Path) -> None:
    with RecordingRegistry() as registry:
        auth = base64.b64encode(b"puller:for-the-base-only").decode()
        config = {"auths": {registry.host: {"auth": auth}, "other.invalid": {"auth": "eDp5"}}}
        (tmp_path / "docker" / "config.json").write_text(json.dumps(config))
        digest = an_index(registry)
        settings = settings_for(tmp_path, "ghcr.invalid/example/buildbox")
        platform_base(f"{registry.host}/library/base@{digest}", "linux/amd64", settings)
    assert set(registry.token_requests) == {f"Basic {auth}"}


@pytest.mark.parametrize(
    ("host", "realm", "sent"),
    [
        ("ghcr.io", "https://ghcr.io/token", True),
        ("ghcr.io", "https://GHCR.io:443/token", True),
        ("registry.example:5000", "https://registry.example:5001/token", True),
        ("docker.io", "https://auth.docker.io/token", True),
        ("127.0.0.1:5000", "http://127.0.0.1:5001/token", True),
        ("[::1]:5000", "http://[::1]:5001/token", True),
        ("ghcr.io", "http://ghcr.io/token", False),
        ("ghcr.io", "https://evil.example/token", False),
        ("ghcr.io", "https://ghcr.io.evil.example/token", False),
        ("evil.example", "https://auth.docker.io/token", False),
        ("registry.example", "https://registry.example@evil.example/token", False),
        ("127.0.0.1:5000", "http://localhost:5000/token", False),
        ("registry.example", "ftp://registry.example/token", False),
        ("registry.example", "/token", False),
    ],
)
def test_which_token_services_may_receive_credentials(host: str, realm: str, sent: bool) -> None:
    assert may_receive_credentials(host, realm) is sent
