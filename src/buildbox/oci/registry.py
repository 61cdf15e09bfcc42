"""The OCI distribution API's verbs, over one registry's :class:`~buildbox.oci.transport.Transport`.

What publishing, auditing and building need and no more: ping, manifests by tag or digest with
the full Accept header, blobs (exists, get verified, upload in chunks, mount), and the referrers
API. Open one with :func:`open_registry`, the one constructor from the settings (credentials,
CA bundle, retry policy, chunk size), and use it as a context manager: its connections close
with the block.

Every verb is retried as a whole on a transient failure (the transport's policy); each is
idempotent as repeated: a blob upload starts a new upload session, a manifest PUT sends the same
bytes again. Whatever is read by digest (a blob, a manifest or index) is hashed and refused
unless it is that digest's content, before it is returned.
"""

from __future__ import annotations

import io
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self, TypeVar

import requests

from buildbox.digests import digest_of
from buildbox.errors import BuildboxError
from buildbox.http import DEFAULT_RETRIES, RetryPolicy
from buildbox.oci.credentials import Credentials, credentials_for, publishing_host
from buildbox.oci.documents import MANIFEST_ACCEPT, OCI_INDEX
from buildbox.oci.refs import Reference, is_digest
from buildbox.oci.transport import RegistryError, TransientError, Transport
from buildbox.settings import Settings

__all__ = ["DigestMismatchError", "Registry", "RegistryError", "TransientError", "open_registry"]
T = TypeVar("T")


class DigestMismatchError(RegistryError):
    """What a registry served for a digest is other content: refused, not retried."""


class Registry:
    """The verbs of one registry host (options as :class:`Transport` takes them)."""

    def __init__(
        self,
        host: str,
        credentials: Credentials | None = None,
        *,
        insecure: bool | None = None,
        timeout: float = 60,
        ca_bundle: Path | None = None,
        policy: RetryPolicy = DEFAULT_RETRIES,
        chunk_size: int = 16 * 1024 * 1024,
    ) -> None:
        self.transport = Transport(
            host, credentials, insecure=insecure, timeout=timeout, ca_bundle=ca_bundle,
            policy=policy,
        )  # fmt: skip
        self.host = host
        #: Blobs larger than this are uploaded in chunks of this size (PATCH), resumable.
        self.chunk_size = chunk_size

    @property
    def base(self) -> str:
        return self.transport.base

    @property
    def verify(self) -> str | bool:
        return self.transport.verify

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def retrying(self, what: str, operation: Callable[[], T]) -> T:
        """``operation`` repeated on transient failures per the transport's policy."""
        return self.transport.retrying(what, operation)

    def ping(self) -> None:
        self.transport.retrying(
            f"reaching {self.host}",
            lambda: self.transport.request("GET", "/v2/", "registry:catalog:*"),
        )

    def _manifest(self, method: str, repository: str, reference: str) -> requests.Response | None:
        """HEAD or GET a manifest with the full Accept header; None when there is none."""
        response = self.transport.retrying(
            f"{method} {repository}:{reference}",
            lambda: self.transport.request(
                method,
                f"/v2/{repository}/manifests/{reference}",
                _pull(repository),
                ok=(200, 404),
                headers={"Accept": MANIFEST_ACCEPT},
            ),
        )
        return None if response.status_code == 404 else response

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest a tag (or digest) names, or None when there is no such manifest."""
        response = self._manifest("HEAD", repository, reference)
        if response is None:
            return None
        stated = response.headers.get("Docker-Content-Digest")
        if is_digest(reference) and stated not in (None, reference):
            raise DigestMismatchError(self._mismatch(repository, reference, stated or ""))
        return stated

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str] | None:
        """The manifest's bytes and media type, or None when there is no such manifest; read
        by digest, they are refused unless they hash to it."""
        response = self._manifest("GET", repository, reference)
        if response is None:
            return None
        if is_digest(reference):
            self._check(repository, reference, response.content)
        return response.content, response.headers.get("Content-Type", "")

    def _check(self, repository: str, digest: str, body: bytes) -> None:
        """Refuse ``body`` unless it is the content ``digest`` names: whatever a registry
        serves for a digest is hashed before anything reads it."""
        if digest_of(body) != digest:
            raise DigestMismatchError(self._mismatch(repository, digest, digest_of(body)))

    def _mismatch(self, repository: str, digest: str, found: str) -> str:
        return (
            f"the registry {self.host} served other content for {self.host}/{repository}@"
            f"{digest}: it hashes to {found}; refused (the registry, a mirror or a proxy "
            "changed it)"
        )

    def put_manifest(
        self, repository: str, reference: str, body: bytes, media_type: str
    ) -> requests.Response:
        """PUT a manifest; the registry's digest must be the sha256 of exactly these bytes.

        Repeated as is on a transient failure: the same bytes under the same reference.
        """
        response = self.transport.retrying(
            f"PUT {repository}:{reference}",
            lambda: self.transport.request(
                "PUT",
                f"/v2/{repository}/manifests/{reference}",
                _push(repository),
                ok=(201,),
                data=body,
                headers={"Content-Type": media_type},
            ),
        )
        stored = response.headers.get("Docker-Content-Digest")
        if stored and stored != digest_of(body):
            raise RegistryError(
                f"the registry {self.host} stored {repository}:{reference} as {stored}, "
                f"not {digest_of(body)}"
            )
        return response

    def has_blob(self, repository: str, digest: str) -> bool:
        response = self.transport.retrying(
            f"HEAD blob {digest} in {repository}",
            lambda: self.transport.request(
                "HEAD", f"/v2/{repository}/blobs/{digest}", _pull(repository), ok=(200, 404)
            ),
        )
        return response.status_code == 200

    def get_blob(self, repository: str, digest: str) -> bytes:
        response = self.transport.retrying(
            f"GET blob {digest} from {repository}",
            lambda: self.transport.request(
                "GET", f"/v2/{repository}/blobs/{digest}", _pull(repository)
            ),
        )
        # A body cut short fails in the request (Content-Length); whole, other bytes are not
        # worth asking for again.
        self._check(repository, digest, response.content)
        return response.content

    def upload_blob(
        self,
        repository: str,
        digest: str,
        source: Path | bytes,
        sent: Callable[[int], None] | None = None,
    ) -> bool:
        """Upload a blob (in chunks when large), unless the registry already has it: whether it
        was uploaded. A failed attempt starts a new upload session. ``sent`` is told the bytes
        of this blob the registry has taken so far (it may go back when an attempt restarts)."""
        return self.transport.retrying(
            f"uploading {digest} to {repository}",
            lambda: self._upload_blob(repository, digest, source, sent or _ignore),
        )

    def _upload_blob(
        self, repository: str, digest: str, source: Path | bytes, sent: Callable[[int], None]
    ) -> bool:
        if self.has_blob(repository, digest):
            return False
        start = self.transport.request(
            "POST", f"/v2/{repository}/blobs/uploads/", _push(repository), ok=(202,)
        )
        location = self.transport.absolute(start.headers["Location"])
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        if size > self.chunk_size:
            location = self._upload_chunks(repository, location, source, size, sent)
            source = b""  # the closing PUT carries no data
        with _opened(source) as stream:
            # Empty as bytes, so that requests sends Content-Length: 0 rather than chunks.
            data: IO[bytes] | _Counted | bytes = _Counted(stream, sent) if source else b""
            self.transport.request(
                "PUT",
                _with_query(location, f"digest={digest}"),
                _push(repository),
                ok=(201,),
                data=data,
                headers={"Content-Type": "application/octet-stream"},
            )
        sent(size)
        return True

    def mount_blob(self, repository: str, digest: str, source_repository: str) -> bool:
        """Ask the registry to link ``digest`` from another of its repositories instead of an
        upload; False when it declines (it then opened an upload session, left to expire)."""
        response = self.transport.retrying(
            f"mounting {digest} from {source_repository} into {repository}",
            lambda: self.transport.request(
                "POST",
                f"/v2/{repository}/blobs/uploads/?mount={digest}&from={source_repository}",
                f"{_push(repository)} {_pull(source_repository)}",
                ok=(201, 202),
            ),
        )
        return response.status_code == 201

    def _upload_chunks(
        self,
        repository: str,
        location: str,
        source: Path | bytes,
        size: int,
        sent: Callable[[int], None],
    ) -> str:
        """PATCH ``source`` in chunks of ``chunk_size`` (memory stays bounded by one chunk); after
        a transient failure, ask the registry how much it has and go on from there. Returns the
        location to close the upload at."""
        offset, resumes = 0, 0
        with _opened(source) as stream:
            while offset < size:
                stream.seek(offset)
                chunk = stream.read(self.chunk_size)
                try:
                    response = self.transport.request(
                        "PATCH", location, _push(repository), ok=(202,), data=chunk,
                        headers={
                            "Content-Type": "application/octet-stream",
                            "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                        },
                    )  # fmt: skip
                except TransientError:
                    resumes += 1
                    if resumes >= self.transport.policy.attempts:
                        raise
                    time.sleep(self.transport.policy.backoff * random.uniform(0.5, 1.5))  # noqa: S311
                    location, offset = self._upload_status(repository, location)
                    continue
                location = self.transport.absolute(response.headers.get("Location", location))
                offset = _range_end(response.headers.get("Range"), offset + len(chunk) - 1) + 1
                sent(offset)
        return location

    def _upload_status(self, repository: str, location: str) -> tuple[str, int]:
        """Where an interrupted upload stands: (its location, the next offset to send)."""
        response = self.transport.request("GET", location, _pull(repository), ok=(204,))
        resumed = _range_end(response.headers.get("Range"), -1) + 1
        return self.transport.absolute(response.headers.get("Location", location)), resumed

    def referrers(self, repository: str, digest: str) -> dict[str, Any] | None:
        """The referrers index of ``digest``, or None when the registry has no referrers API."""
        response = self.transport.retrying(
            f"GET referrers of {digest} in {repository}",
            lambda: self.transport.request(
                "GET",
                f"/v2/{repository}/referrers/{digest}",
                _pull(repository),
                ok=(200, 404),
                headers={"Accept": OCI_INDEX},
            ),
        )
        if response.status_code == 404 or "json" not in response.headers.get("Content-Type", ""):
            return None
        index: dict[str, Any] = response.json()
        return index


def _with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


def _range_end(value: str | None, default: int) -> int:
    """The last byte a registry has of an upload, from its ``Range: 0-<end>`` header."""
    if value and "-" in value:
        end = value.rsplit("-", 1)[1]
        if end.isdigit():
            return int(end)
    return default


def _pull(repository: str) -> str:
    return f"repository:{repository}:pull"


def _push(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def _ignore(count: int) -> None:
    """Nobody is told the bytes sent."""


class _Counted:
    """A stream that tells ``sent`` how far requests has read it (at most once a MiB): bytes
    sent, for progress. Seekable, so that requests can measure it and repeat it after a 401."""

    def __init__(self, stream: IO[bytes], sent: Callable[[int], None]) -> None:
        self.stream = stream
        self.reported = 0
        self.sent = sent

    def read(self, count: int = -1) -> bytes:
        data = self.stream.read(count)
        position = self.stream.tell()
        if position - self.reported >= 1024 * 1024:
            self.reported = position
            self.sent(position)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.reported = 0
        return self.stream.seek(offset, whence)

    def tell(self) -> int:
        return self.stream.tell()


@contextmanager
def _opened(source: Path | bytes) -> Iterator[IO[bytes]]:
    """A file or bytes as a readable stream for requests (which then streams it), closed after."""
    with source.open("rb") if isinstance(source, Path) else io.BytesIO(source) as stream:
        yield stream


def open_registry(where: str | Reference, settings: Settings) -> Registry:
    """The client for the registry of ``where`` (a host or a reference): its own credentials, and
    retrying and uploading as the settings say (buildbox.registry_*); the CA bundle applies to
    the publishing registry only."""
    host = where.host if isinstance(where, Reference) else where
    ca_bundle = registry_ca_bundle(settings) if host == publishing_host(settings) else None
    policy = RetryPolicy(
        settings.registry_attempts, settings.registry_time_limit, settings.registry_backoff
    )
    return Registry(
        host,
        credentials_for(host, settings),
        policy=policy,
        chunk_size=settings.registry_chunk_mib * 1024 * 1024,
        ca_bundle=ca_bundle,
    )


def registry_ca_bundle(settings: Settings) -> Path | None:
    """The CA bundle the publishing registry's certificate is checked against, if one is set."""
    if not settings.registry_ca_bundle:
        return None
    bundle = settings.root / settings.registry_ca_bundle
    if not bundle.is_file():
        raise BuildboxError(
            f"invoke.yaml: buildbox.registry_ca_bundle: {settings.shown(bundle)} is not a file; "
            "point it at the PEM file of the CA that signed the registry's certificate"
        )
    return bundle
