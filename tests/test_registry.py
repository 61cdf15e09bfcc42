"""The registry client's authentication: bearer tokens and the Docker config, secrets kept out."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from buildbox.errors import BuildboxError
from buildbox.http import reason
from buildbox.oci.credentials import Credentials, credentials_for
from buildbox.oci.refs import Reference
from buildbox.oci.registry import Registry, RegistryError, open_registry
from buildbox.settings import from_config

SECRET = "s3cr3t-token-password"


class TokenRegistry:
    """A loopback stand-in for a registry behind a token service (as Docker Hub or GHCR are).

    Only the challenge-and-token protocol lives here; it is the client's logic under test.
    """

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.scopes: list[str] = []
        #: The password the token service takes for user "ci".
        self.password = SECRET
        #: What the token service answers instead of a token: (Content-Type, body).
        self.answer: tuple[str, bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

            def do_GET(self) -> None:
                if self.path.startswith("/token"):
                    pair = f"ci:{outer.password}".encode()
                    expected = "Basic " + base64.b64encode(pair).decode()
                    if self.headers.get("Authorization") != expected:
                        self._send(401, b"{}")
                        return
                    outer.scopes.append(self.path)
                    if outer.answer is not None:
                        kind, body = outer.answer
                        self._send(200, body, {"Content-Type": kind})
                        return
                    self._send(200, json.dumps({"token": "granted"}).encode())
                elif self.headers.get("Authorization") == "Bearer granted":
                    self._send(200, b"{}")
                else:
                    realm = f"http://{outer.host}/token"
                    challenge = f'Bearer realm="{realm}",service="test",scope="registry:catalog:*"'
                    self._send(401, b"{}", {"WWW-Authenticate": challenge})

            def _send(
                self, status: int, body: bytes, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


@pytest.fixture
def token_registry() -> Iterator[TokenRegistry]:
    registry = TokenRegistry()
    registry.thread.start()
    yield registry
    registry.server.shutdown()
    registry.server.server_close()


def test_bearer_token_flow(token_registry: TokenRegistry) -> None:
    client = Registry(token_registry.host, Credentials("ci", SECRET))
    try:
        client.ping()
    finally:
        client.close()
    assert token_registry.scopes == ["/token?service=test&scope=registry%3Acatalog%3A%2A"]


def test_refused_token_names_the_user_not_the_secret(token_registry: TokenRegistry) -> None:
    client = Registry(token_registry.host, Credentials("ci", "wrong-" + SECRET))
    with pytest.raises(RegistryError) as caught:
        client.ping()
    client.close()
    message = str(caught.value)
    assert f"the token service of {token_registry.host} refused the credentials for user 'ci'" in (
        message
    )
    assert SECRET not in message


TOKEN = "eyJ0b2tlbi1zM2NyM3Q"


@pytest.mark.parametrize(
    ("kind", "body", "says"),
    [
        (
            "application/json",
            json.dumps({"token": TOKEN + "\n"}).encode(),
            "a token that cannot go in an HTTP header",
        ),
        ("application/json", json.dumps({"token": TOKEN + " x"}).encode(), "cannot go in an HTTP"),
        ("text/html", b"<html><body>Sign in</body></html>", "HTTP 200 with text/html, not a JSON"),
        ("application/json", b'["a list"]', "HTTP 200 with application/json, not a JSON token"),
        ("application/json", b'{"expires_in": 300}', "answered without a token"),
    ],
    ids=["a line break", "a space", "HTML", "not an object", "no token"],
)
def test_a_token_service_answer_without_a_usable_token_is_one_line(
    token_registry: TokenRegistry, kind: str, body: bytes, says: str
) -> None:
    """What a login page, a proxy or a broken token service answers with 200: one line naming
    the token service, never the token (requests would print it inside InvalidHeader)."""
    token_registry.answer = (kind, body)
    with (
        Registry(token_registry.host, Credentials("ci", SECRET)) as client,
        pytest.raises(RegistryError) as caught,
    ):
        client.ping()
    message = str(caught.value)
    assert f"the token service of {token_registry.host} (http://{token_registry.host}/token)" in (
        message
    )
    assert says in message
    assert TOKEN not in message
    assert SECRET not in message


def test_a_password_beyond_latin_1_is_sent_in_utf_8(token_registry: TokenRegistry) -> None:
    """As docker sends it (requests would encode basic auth in Latin-1 and fail)."""
    token_registry.password = "pässwörd-€-" + SECRET
    with Registry(token_registry.host, Credentials("ci", token_registry.password)) as client:
        client.ping()
    assert token_registry.scopes


def test_a_password_that_is_not_text_names_where_it_came_from(
    token_registry: TokenRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A byte that is not UTF-8 in the environment (a shell in another encoding) reaches Python
    as a lone surrogate, which no encoding sends."""
    monkeypatch.setenv("BUILDBOX_REGISTRY_USERNAME", "ci")
    monkeypatch.setenv("BUILDBOX_REGISTRY_PASSWORD", SECRET + "\udce9")
    settings = from_config({"root": str(tmp_path), "registry": f"{token_registry.host}/buildbox"})
    with (
        open_registry(token_registry.host, settings) as client,
        pytest.raises(RegistryError) as caught,
    ):
        client.ping()
    message = str(caught.value)
    assert message == (
        "the registry credentials from BUILDBOX_REGISTRY_USERNAME/BUILDBOX_REGISTRY_PASSWORD "
        "hold bytes that are not UTF-8 text, so they cannot be sent; set them again as UTF-8"
    )


def test_credentials_never_show_in_repr() -> None:
    assert SECRET not in repr(Credentials("ci", SECRET))


def test_credentials_from_the_environment_for_the_publishing_host_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BUILDBOX_REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("BUILDBOX_REGISTRY_PASSWORD", raising=False)
    auth = base64.b64encode(f"robot:{SECRET}".encode()).decode()
    config = {"auths": {"r.example.org": {"auth": auth}, "base.example.org": {"auth": auth}}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    settings = from_config({"root": str(tmp_path), "registry": "r.example.org/buildbox"})
    assert credentials_for("r.example.org", settings) == Credentials("robot", SECRET)
    assert credentials_for("other.example.org", settings) is None
    monkeypatch.setenv("BUILDBOX_REGISTRY_USERNAME", "ci")
    monkeypatch.setenv("BUILDBOX_REGISTRY_PASSWORD", "from-env")
    assert credentials_for("r.example.org", settings) == Credentials("ci", "from-env")
    assert credentials_for("base.example.org", settings) == Credentials("robot", SECRET)
    assert credentials_for("other.example.org", settings) is None


def test_references() -> None:
    parsed = Reference.parse("127.0.0.1:5000/buildbox/centos7:v3@sha256:" + "a" * 64)
    assert (parsed.host, parsed.repository, parsed.tag) == (
        "127.0.0.1:5000",
        "buildbox/centos7",
        "v3",
    )
    assert str(parsed) == "127.0.0.1:5000/buildbox/centos7:v3@sha256:" + "a" * 64
    with pytest.raises(BuildboxError, match="does not name a registry host"):
        Reference.parse("centos:7")


def test_a_ca_bundle_means_https_on_loopback_too(tmp_path: Path) -> None:
    assert Registry("127.0.0.1:5000").base == "http://127.0.0.1:5000"
    bundle = tmp_path / "ca.pem"
    tls = Registry("127.0.0.1:5000", ca_bundle=bundle)
    assert (tls.base, tls.verify) == ("https://127.0.0.1:5000", str(bundle))
    assert Registry("ghcr.io").verify is True, "True: requests honours REQUESTS_CA_BUNDLE"


def test_the_ca_bundle_setting_applies_to_the_publishing_registry_only(tmp_path: Path) -> None:
    config = {"root": str(tmp_path), "registry": "127.0.0.1:5443/buildbox"}
    settings = from_config({**config, "registry_ca_bundle": "certs/ca.pem"})
    with pytest.raises(BuildboxError, match=r"registry_ca_bundle: certs/ca.pem is not a file"):
        open_registry("127.0.0.1:5443", settings=settings)
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("PEM\n")
    with open_registry("127.0.0.1:5443", settings=settings) as publishing:
        assert publishing.verify == str(tmp_path / "certs" / "ca.pem")
    with open_registry("127.0.0.1:5000", settings=settings) as bases:
        assert (bases.base, bases.verify) == ("http://127.0.0.1:5000", True)


def test_an_untrusted_certificate_has_a_short_reason() -> None:
    error = Exception(
        "HTTPSConnectionPool(host='127.0.0.1', port=5443): Max retries exceeded with url: /v2/ "
        "(Caused by SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] "
        "certificate verify failed: self-signed certificate in certificate chain (_ssl.c:992)')))"
    )
    assert reason(error) == (
        "its TLS certificate does not verify (self-signed certificate in certificate chain)"
    )
