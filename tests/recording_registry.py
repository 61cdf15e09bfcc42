"""A loopback registry in Python for what the client must refuse, which a real registry never
serves: a token service on a host the test chooses, which records every Authorization header it
receives, and documents served under a digest they do not hash to (a tampered mirror or proxy).

It speaks the distribution API's read side only: ``GET``/``HEAD`` of manifests and blobs by tag
or digest, behind a bearer challenge; any token the service issued is accepted, anonymous ones
too (as public images are served) unless ``anonymous`` is off.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

from buildbox.digests import digest_of
from buildbox.oci.documents import OCI_INDEX, OCI_MANIFEST

#: What the token service issues, to anyone.
TOKEN = "recording-token"


@dataclass(frozen=True)
class Served:
    """What the registry answers for a reference: a body, its media type, and the digest it
    claims in Docker-Content-Digest."""

    body: bytes
    media_type: str
    digest: str


class RecordingRegistry:
    """``with RecordingRegistry() as registry:``; ``realm_host`` is where its 401s send clients
    for a token (default: itself, ``127.0.0.1:<port>``; ``localhost:<port>`` is the same server
    under another host name)."""

    def __init__(self, realm_host: str | None = None, *, anonymous: bool = True) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.realm_host = realm_host or self.host
        #: Whether the token service gives a token to a request without credentials.
        self.anonymous = anonymous
        #: repository -> reference (tag or digest) -> what is served.
        self.documents: dict[str, dict[str, Served]] = {}
        #: The Authorization header of every token request ("" when it had none).
        self.token_requests: list[str] = []
        #: The Authorization header of every other request ("" when it had none).
        self.registry_requests: list[str] = []

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def received(self) -> list[str]:
        """Every Authorization header anything here received."""
        return self.token_requests + self.registry_requests

    def serve(
        self, repository: str, reference: str, body: bytes, media_type: str, claimed: str = ""
    ) -> str:
        """Serve ``body`` as ``repository:reference`` (also under its own digest), claiming
        ``claimed`` as its digest (default: the true one); returns the true digest."""
        true = digest_of(body)
        served = Served(body, media_type, claimed or true)
        self.documents.setdefault(repository, {}).update({reference: served, true: served})
        return true

    def __enter__(self) -> Self:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

            def do_HEAD(self) -> None:
                self._serve(with_body=False)

            def do_GET(self) -> None:
                if self.path.startswith("/token"):
                    authorization = self.headers.get("Authorization", "")
                    outer.token_requests.append(authorization)
                    if not (authorization or outer.anonymous):
                        self._send(401, b"{}", {})
                        return
                    self._send(200, json.dumps({"token": TOKEN}).encode(), {})
                    return
                self._serve(with_body=True)

            def _serve(self, with_body: bool) -> None:
                authorization = self.headers.get("Authorization", "")
                outer.registry_requests.append(authorization)
                if authorization != f"Bearer {TOKEN}":
                    realm = f"http://{outer.realm_host}/token"
                    challenge = f'Bearer realm="{realm}",service="recording"'
                    self._send(401, b"{}", {"WWW-Authenticate": challenge})
                    return
                if self.path == "/v2/":
                    self._send(200, b"{}", {})
                    return
                name, kind, reference = self._parts()
                served = outer.documents.get(name, {}).get(reference)
                if kind not in ("manifests", "blobs") or served is None:
                    self._send(404, b'{"errors": [{"code": "MANIFEST_UNKNOWN"}]}', {})
                    return
                headers = {"Content-Type": served.media_type}
                headers["Docker-Content-Digest"] = served.digest
                self._send(200, served.body, headers, with_body)

            def _parts(self) -> tuple[str, str, str]:
                """``/v2/<name>/<manifests|blobs>/<reference>`` split."""
                path = self.path.removeprefix("/v2/")
                name, _, rest = path.rpartition("/")
                name, _, kind = name.rpartition("/")
                return name, kind, rest

            def _send(
                self, status: int, body: bytes, headers: dict[str, str], with_body: bool = True
            ) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

        return Handler


def index_of(*platforms: tuple[str, str]) -> bytes:
    """An OCI image index naming a manifest digest per ``(platform, digest)``."""
    manifests = [
        {
            "mediaType": OCI_MANIFEST,
            "digest": digest,
            "size": 100,
            "platform": {"os": platform.split("/")[0], "architecture": platform.split("/")[1]},
        }
        for platform, digest in platforms
    ]
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).encode()
