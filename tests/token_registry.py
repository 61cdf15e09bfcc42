"""What the registries users push to have, for the test registry: TLS with a CA made for the
session, and bearer tokens from a token service that grants per-repository pull/push scopes.

The registry is still Debian's docker-registry; it checks the tokens itself (its ``auth: token``
configuration: realm, service, issuer, root certificate bundle), so what passes here is what
the distribution registry accepts. The token service is the harness's: a few lines over
PyJWT, signing ES256 tokens with a certificate the session CA issued (sent in the ``x5c``
header, which the registry checks against the bundle).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SERVICE = "buildbox-test-registry"
ISSUER = "buildbox-test-token-service"


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM files."""

    certificate: Path
    key: Path


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA made for the session; ``bundle`` is what clients trust."""

    directory: Path
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, directory: Path, name: str = "buildbox test CA") -> CertificateAuthority:
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        ca = cls(directory, key, certificate)
        ca.bundle.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return ca

    @property
    def bundle(self) -> Path:
        return self.directory / "ca.pem"

    def issue(self, name: str, address: str | None = None) -> Issued:
        """A leaf certificate for ``name`` (and the IP ``address``, for a TLS server)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if address is not None:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]),
                critical=False,
            ).add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        certificate = builder.sign(self.key, hashes.SHA256())
        issued = Issued(self.directory / f"{name}.pem", self.directory / f"{name}.key")
        issued.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        issued.key.chmod(0o600)
        return issued


@dataclass(frozen=True)
class Account:
    """A user of the token service: a password and the actions granted per repository prefix."""

    password: str
    grants: dict[str, frozenset[str]]

    def allowed(self, repository: str) -> frozenset[str]:
        return frozenset().union(
            *(actions for prefix, actions in self.grants.items() if repository.startswith(prefix))
        )


@dataclass
class TokenService:
    """``GET /token?service=…&scope=repository:<name>:pull,push`` with basic auth, over TLS:
    a token granting what was asked and the account allows (anonymous: nothing)."""

    ca: CertificateAuthority
    accounts: dict[str, Account]
    #: (user or "", scopes asked, access granted, the token) for every token issued, in order.
    issued: list[tuple[str, str, list[dict[str, Any]], str]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        signer = self.ca.issue("token-signer")
        self._key = serialization.load_pem_private_key(signer.key.read_bytes(), password=None)
        der = x509.load_pem_x509_certificate(signer.certificate.read_bytes()).public_bytes(
            serialization.Encoding.DER
        )
        self._x5c = [base64.b64encode(der).decode()]
        self._tls = self.ca.issue("token-service", address="127.0.0.1")

    @property
    def realm(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.server_address[1]}/token"

    def mint(self, user: str, scopes: list[str]) -> tuple[str, list[dict[str, Any]]]:
        """A signed token for ``user`` ("" for anonymous) with what ``scopes`` ask and it allows."""
        account = self.accounts.get(user)
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind != "repository" or not name:
                continue
            allowed = account.allowed(name) if account else frozenset()
            granted = sorted(set(actions.split(",")) & allowed)
            access.append({"type": "repository", "name": name, "actions": granted})
        now = int(time.time())
        claims = {
            "iss": ISSUER, "sub": user, "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
            "iat": now, "jti": secrets.token_hex(8), "access": access,
        }  # fmt: skip
        token = jwt.encode(claims, self._key, algorithm="ES256", headers={"x5c": self._x5c})  # type: ignore[arg-type]
        return token, access

    def start(self) -> TokenService:
        server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._tls.certificate, self._tls.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                user = self._user()
                if url.path != "/token" or query.get("service") != [SERVICE] or user is None:
                    self._answer(401, {"details": "unknown user, wrong password or service"})
                    return
                scopes = [word for value in query.get("scope", []) for word in value.split()]
                token, access = service.mint(user, scopes)
                service.issued.append((user, " ".join(scopes), access, token))
                self._answer(200, {"token": token, "access_token": token, "expires_in": 300})

            def _user(self) -> str | None:
                """The authenticated user, "" when anonymous, None when the password is wrong."""
                header = self.headers.get("Authorization", "")
                if not header:
                    return ""
                kind, _, encoded = header.partition(" ")
                name, _, password = base64.b64decode(encoded).decode().partition(":")
                account = service.accounts.get(name)
                valid = kind == "Basic" and account is not None
                if valid and account and secrets.compare_digest(account.password, password):
                    return name
                return None

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
