"""The OCI distribution API's verbs, over one registry's :class:`~buildbox.oci.transport.Transport`.

What publishing, auditing and building need and no more: ping, manifests by tag or digest with
the full Accept header, blobs (exists, get verified, upload in chunks, mount), and the referrers
API. Open one with :func:`open_registry`, the one constructor from the settings (credentials,
CA bundle, retry policy, chunk size), and use it as a context manager: its connections close
with the block.

Each request is retried on its own on a transient failure (the transport's policy), as it is
the same when repeated: a HEAD or GET, a manifest PUT (the same bytes again), starting or
mounting an upload. A blob upload goes on after a failure from what the registry reports it
has (``GET`` on the upload, its ``Range``: the distribution spec's resumable upload), in a new
session only when the registry lost the old one. All of it within the command's registry time
(``registry_time_limit``, see :class:`~buildbox.oci.transport.Clock`). Whatever is read by
digest (a blob, a manifest or index) is hashed and refused unless it is that digest's content,
before it is returned.
"""

from __future__ import annotations

import io
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
#: What a registry answers about an upload session it no longer has (expired, or its state
#: token stale after an answer was lost), or data it did not take where it was sent.
_UPLOAD_LOST = frozenset({"BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID", "RANGE_INVALID"})


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

    def where(self, repository: str, reference: str = "") -> str:
        """``host/repository``, with ``:tag`` or ``@digest``: what a message names."""
        at = "@" if is_digest(reference) else ":"
        return f"{self.host}/{repository}{at + reference if reference else ''}"

    def ping(self) -> None:
        self.transport.call(f"reaching {self.host}", "GET", "/v2/", "registry:catalog:*")

    def _manifest(self, method: str, repository: str, reference: str) -> requests.Response | None:
        """HEAD or GET a manifest with the full Accept header; None when there is none."""
        doing = "checking" if method == "HEAD" else "reading"
        response = self.transport.call(
            f"{doing} {self.where(repository, reference)}",
            method,
            f"/v2/{repository}/manifests/{reference}",
            _pull(repository),
            ok=(200, 404),
            headers={"Accept": MANIFEST_ACCEPT},
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
        self, repository: str, reference: str, body: bytes, media_type: str, *, once: bool = False
    ) -> requests.Response:
        """PUT a manifest; the registry's digest must be the sha256 of exactly these bytes.

        Repeated as is on a transient failure: the same bytes under the same reference; with
        ``once``, a transient failure is the caller's to repeat (a tag is checked again first).
        """
        path = f"/v2/{repository}/manifests/{reference}"
        options: dict[str, Any] = {"data": body, "headers": {"Content-Type": media_type}}
        if once:
            response = self.transport.request("PUT", path, _push(repository), ok=(201,), **options)
        else:
            response = self.transport.call(
                f"writing {self.where(repository, reference)}", "PUT", path, _push(repository),
                ok=(201,), **options,
            )  # fmt: skip
        stored = response.headers.get("Docker-Content-Digest")
        if stored and stored != digest_of(body):
            raise RegistryError(
                f"the registry {self.host} stored {repository}:{reference} as {stored}, "
                f"not {digest_of(body)}"
            )
        return response

    def has_blob(self, repository: str, digest: str) -> bool:
        response = self.transport.call(
            f"checking for {digest} in {self.where(repository)}",
            "HEAD", f"/v2/{repository}/blobs/{digest}", _pull(repository), ok=(200, 404),
        )  # fmt: skip
        return response.status_code == 200

    def get_blob(self, repository: str, digest: str) -> bytes:
        response = self.transport.call(
            f"reading {digest} from {self.where(repository)}",
            "GET", f"/v2/{repository}/blobs/{digest}", _pull(repository),
        )  # fmt: skip
        # A body cut short fails in the request (Content-Length); whole, other bytes are not
        # worth asking for again.
        self._check(repository, digest, response.content)
        return response.content

    @contextmanager
    def blob_stream(self, repository: str, digest: str) -> Iterator[requests.Response]:
        """A blob's answer, its body not yet read: for a blob too large to hold in memory. The
        caller streams it and must hash what it reads, refusing it unless it is ``digest``."""
        response = self.transport.call(
            f"reading {digest} from {self.where(repository)}",
            "GET", f"/v2/{repository}/blobs/{digest}", _pull(repository), stream=True,
        )  # fmt: skip
        with response:
            yield response

    def upload_blob(
        self,
        repository: str,
        digest: str,
        source: Path | bytes,
        sent: Callable[[int], None] | None = None,
    ) -> bool:
        """Upload a blob (in chunks of ``chunk_size`` when larger), unless the registry already
        has it: whether it was uploaded. After a failure it goes on from what the registry
        reports it has. ``sent`` is told the bytes of this blob the registry has taken so far
        (it may go back when the registry lost an upload and it starts again)."""
        if self.has_blob(repository, digest):
            return False
        what = f"uploading {digest} to {self.where(repository)}"
        with self.transport.clock.running():
            self._upload(what, repository, digest, source, sent or _ignore)
        return True

    def _upload(
        self,
        what: str,
        repository: str,
        digest: str,
        source: Path | bytes,
        sent: Callable[[int], None],
    ) -> None:
        """The upload's data requests, each repeated as is when the registry refused it (an
        HTTP 429 or 5xx: nothing was taken); after a connection failure, or when the registry
        says the upload is not where it was sent, ask where it stands and go on from there.
        The policy's attempts count failures in a row without new bytes taken."""
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        location, offset = self._start_upload(what, repository), 0
        started, attempt = time.monotonic(), 0
        while True:
            try:
                if offset < size and (size > self.chunk_size or offset > 0):
                    location, offset = self._send_chunk(repository, location, source, offset, size)
                    sent(offset)
                    attempt = 0  # the registry took new bytes: the failures so far are forgiven
                    continue
                # The whole blob in the closing PUT when it fits in a chunk; else no data.
                self._close_upload(repository, location, digest, source if offset == 0 else b"",
                                   sent)  # fmt: skip
                break
            except TransientError as error:
                attempt += 1
                self.transport.pause(what, attempt, error, started)
                if error.status is not None:
                    continue  # refused, so not taken: the same request again
            except RegistryError as error:
                if not (error.codes & _UPLOAD_LOST or error.status == 416):
                    raise
                attempt += 1
                self.transport.pause(what, attempt, TransientError(str(error)), started)
            standing = self._upload_status(what, repository, location)
            if standing is None:  # the registry no longer has this upload
                if self.has_blob(repository, digest):  # it was completed; its answer was lost
                    break
                location, offset = self._start_upload(what, repository), 0
            else:
                location, offset = standing
        sent(size)

    def _start_upload(self, what: str, repository: str) -> str:
        """A new upload session's location (a repeated POST only opens another, left to
        expire)."""
        response = self.transport.call(
            what,
            "POST", f"/v2/{repository}/blobs/uploads/", _push(repository), ok=(202,),
        )  # fmt: skip
        return self.transport.absolute(response.headers["Location"])

    def _send_chunk(
        self, repository: str, location: str, source: Path | bytes, offset: int, size: int
    ) -> tuple[str, int]:
        """PATCH the chunk at ``offset`` (memory stays bounded by one chunk); the upload's next
        location and offset, as the registry reports them."""
        with _opened(source) as stream:
            stream.seek(offset)
            chunk = stream.read(min(self.chunk_size, size - offset))
        response = self.transport.request(
            "PATCH", location, _push(repository), ok=(202,), data=chunk,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
            },
        )  # fmt: skip
        taken = _range_end(response.headers.get("Range"), offset + len(chunk) - 1) + 1
        return self.transport.absolute(response.headers.get("Location", location)), taken

    def _close_upload(
        self,
        repository: str,
        location: str,
        digest: str,
        source: Path | bytes,
        sent: Callable[[int], None],
    ) -> None:
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

    def _upload_status(self, what: str, repository: str, location: str) -> tuple[str, int] | None:
        """Where an interrupted upload stands: (its location, the next offset to send); None
        when the registry no longer has it."""
        try:
            response = self.transport.call(what, "GET", location, _pull(repository), ok=(204,))
        except RegistryError as error:
            if error.status in (400, 404, 416) or error.codes & _UPLOAD_LOST:
                return None
            raise
        stated = response.headers.get("Range")
        # "0-0" is what the distribution registry says of an empty upload (and of one byte).
        taken = 0 if stated in (None, "0-0") else _range_end(stated, -1) + 1
        return self.transport.absolute(response.headers.get("Location", location)), taken

    def mount_blob(self, repository: str, digest: str, source_repository: str) -> bool:
        """Ask the registry to link ``digest`` from another of its repositories instead of an
        upload; False when it declines (it then opened an upload session, left to expire)."""
        response = self.transport.call(
            f"mounting {digest} from {source_repository} into {self.where(repository)}",
            "POST",
            f"/v2/{repository}/blobs/uploads/?mount={digest}&from={source_repository}",
            f"{_push(repository)} {_pull(source_repository)}",
            ok=(201, 202),
        )
        return response.status_code == 201

    def referrers(self, repository: str, digest: str) -> dict[str, Any] | None:
        """The referrers index of ``digest``, or None when the registry has no referrers API."""
        response = self.transport.call(
            f"reading the referrers of {self.where(repository, digest)}",
            "GET",
            f"/v2/{repository}/referrers/{digest}",
            _pull(repository),
            ok=(200, 404),
            headers={"Accept": OCI_INDEX},
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
