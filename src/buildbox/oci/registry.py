"""A small client for the OCI distribution API, over requests.

It does what publishing needs and no more: ping, authenticate (basic, or bearer tokens from the
registry's token service), manifests by tag or digest with the full Accept header, blobs (exists,
upload), and the referrers API. Credentials (``oci.credentials``) never appear in messages.
Open one with :func:`open_registry` and use it as a context manager: its connections close with
the block.

Every operation is retried as a whole on a transient failure (connection refused or reset, a
timeout, a body cut short, HTTP 408, 429, 500, 502, 503, 504) with exponential backoff and
jitter, honouring ``Retry-After``, within a number of attempts and a total time (``RetryPolicy``).
Each operation is idempotent as repeated: a blob upload starts a new upload session, a manifest
PUT sends the same bytes again. Any other 4xx fails at once, naming the request. A bearer token
that expires mid-push (401 after earlier success) is renewed and the request repeated; a token
can be refused right after it was issued (parallel uploads renew at the same moment, or the
service rotates its keys), so a request is sent with at most two fresh tokens before a 401 is
final.
"""

from __future__ import annotations

import base64
import email.utils
import io
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self, TypeVar

import requests

from buildbox.digests import digest_of
from buildbox.errors import BuildboxError
from buildbox.http import TRANSIENT_STATUSES, is_loopback, reason, retrying_session
from buildbox.oci.credentials import Credentials, credentials_for
from buildbox.oci.documents import MANIFEST_ACCEPT, OCI_INDEX
from buildbox.oci.refs import Reference
from buildbox.settings import Settings

T = TypeVar("T")


class RegistryError(BuildboxError):
    """The registry refused or failed a request; the message never holds a secret."""

    def __init__(
        self, message: str, status: int | None = None, codes: frozenset[str] = frozenset()
    ):
        super().__init__(message)
        self.status = status
        #: The OCI error codes the registry answered with (BLOB_UNKNOWN, ...).
        self.codes = codes


class TransientError(RegistryError):
    """A failure that may not happen again: the operation is worth repeating."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message, status)
        #: Seconds the registry asked to wait (Retry-After), if it did.
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts per operation, the total time for one, the first backoff."""

    attempts: int = 6
    time_limit: float = 300.0
    backoff: float = 0.5


def is_plain_http(host: str) -> bool:
    """Loopback registries speak plain http (as the Docker engine assumes); others https."""
    return is_loopback(host.rsplit(":", 1)[0] if not host.endswith("]") else host)


class Registry:
    """One registry host. ``insecure`` hosts are reached over plain http."""

    def __init__(
        self,
        host: str,
        credentials: Credentials | None = None,
        insecure: bool | None = None,
        timeout: float = 60,
        ca_bundle: Path | None = None,
        policy: RetryPolicy = RetryPolicy(),
        chunk_size: int = 16 * 1024 * 1024,
    ) -> None:
        self.host = host
        self.policy = policy
        #: Blobs larger than this are uploaded in chunks of this size (PATCH), resumable.
        self.chunk_size = chunk_size
        # Per thread: blobs may upload in parallel, each operation with its own time limit.
        self._state = threading.local()
        self.credentials = credentials
        # A CA bundle means TLS, on loopback too (where plain http is otherwise assumed).
        plain = is_plain_http(host) and ca_bundle is None if insecure is None else insecure
        scheme = "http" if plain else "https"
        #: What TLS certificates are checked against: the bundle, else the system's (True lets
        #: requests honour REQUESTS_CA_BUNDLE).
        self.verify: str | bool = str(ca_bundle) if ca_bundle else True
        # Docker Hub's images are named docker.io/...; its API answers at registry-1.docker.io.
        api_host = "registry-1.docker.io" if host in ("docker.io", "index.docker.io") else host
        self.base = f"{scheme}://{api_host}"
        self.timeout = timeout
        # No retries below: every operation is retried as a whole (see retrying).
        self.http = retrying_session(retries=0, backoff=0, statuses=())
        self._token: dict[str, str] = {}

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- transport and authentication ----------------------------------------------------

    def _request(
        self, method: str, url: str, scope: str, *, ok: tuple[int, ...] = (200,), **options: Any
    ) -> requests.Response:
        url = url if url.startswith("http") else f"{self.base}{url}"
        authentications = 2
        for attempt in range(authentications + 1):
            headers = dict(options.pop("headers", {}) or {})
            if token := self._token.get(scope):
                headers["Authorization"] = token
            try:
                response = self.http.request(
                    method,
                    url,
                    headers=headers,
                    timeout=self._timeout(),
                    verify=self.verify,
                    **options,
                )
            except requests.exceptions.SSLError as error:  # never better on a second try
                raise RegistryError(self._untrusted(f"the registry {self.host}", error)) from None
            except requests.RequestException as error:
                raise TransientError(
                    f"cannot reach the registry {self.host} ({method} "
                    f"{url.removeprefix(self.base)}): {reason(error)}"
                ) from None
            if response.status_code == 401 and attempt < authentications:
                self._authenticate(response, scope)
                options["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
                if "data" in options and hasattr(options["data"], "seek"):
                    options["data"].seek(0)
                continue
            break
        if response.status_code not in ok:
            if response.status_code in TRANSIENT_STATUSES:
                raise TransientError(
                    self._explain(method, url, response),
                    response.status_code,
                    _retry_after(response.headers.get("Retry-After")),
                )
            raise RegistryError(
                self._explain(method, url, response), response.status_code, _codes(response)
            )
        return response

    def _timeout(self) -> float:
        """A request's timeout: the client's, or less when the operation's time is running out."""
        deadline: float | None = getattr(self._state, "deadline", None)
        if deadline is None:
            return self.timeout
        return max(0.5, min(self.timeout, deadline - time.monotonic()))

    def retrying(self, what: str, operation: Callable[[], T]) -> T:
        """``operation`` (idempotent as a whole), repeated on transient failures per the policy."""
        if getattr(self._state, "deadline", None) is not None:  # inside a retried operation
            return operation()
        policy = self.policy
        started = time.monotonic()
        deadline = self._state.deadline = started + policy.time_limit
        try:
            for attempt in range(1, policy.attempts + 1):
                try:
                    return operation()
                except TransientError as error:
                    last = error
                    delay = error.retry_after
                    if delay is None:  # exponential, with jitter so that clients spread out
                        delay = policy.backoff * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)  # noqa: S311
                    if attempt == policy.attempts or time.monotonic() + delay > deadline:
                        break
                    time.sleep(delay)
        finally:
            self._state.deadline = None
        elapsed = time.monotonic() - started
        raise RegistryError(
            f"{what}: gave up after {attempt} attempt(s) in {elapsed:.1f} s (limits: "
            f"{policy.attempts} attempts, {policy.time_limit:g} s); the last failure: {last}",
            last.status,
        )

    def _authenticate(self, challenge: requests.Response, scope: str) -> None:
        header = challenge.headers.get("WWW-Authenticate", "")
        kind, _, params = header.partition(" ")
        if kind.lower() == "basic":
            if self.credentials is None:
                raise RegistryError(
                    f"the registry {self.host} needs credentials: set BUILDBOX_REGISTRY_USERNAME "
                    f"and BUILDBOX_REGISTRY_PASSWORD, or `docker login {self.host}`"
                )
            pair = f"{self.credentials.username}:{self.credentials.password}".encode()
            self._token[scope] = "Basic " + base64.b64encode(pair).decode()
        elif kind.lower() == "bearer":
            fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
            query = {"service": fields.get("service", ""), "scope": fields.get("scope", scope)}
            auth = (
                (self.credentials.username, self.credentials.password) if self.credentials else None
            )
            try:
                answer = self.http.get(
                    fields["realm"],
                    params=query,
                    auth=auth,
                    timeout=self.timeout,
                    verify=self.verify,
                )
            except KeyError:
                raise RegistryError(
                    f"the registry {self.host} asked for a token without naming its token service"
                ) from None
            except requests.exceptions.SSLError as error:
                service = f"the token service of {self.host} ({fields['realm']})"
                raise RegistryError(self._untrusted(service, error)) from None
            except requests.RequestException as error:
                raise RegistryError(
                    f"the registry {self.host} asked for a token, but its token service "
                    f"{fields['realm']} failed: {reason(error)}"
                ) from None
            if answer.status_code != 200:
                who = f" for user {self.credentials.username!r}" if self.credentials else ""
                raise RegistryError(
                    f"the token service of {self.host} refused the credentials{who} "
                    f"(HTTP {answer.status_code})"
                )
            body = answer.json()
            self._token[scope] = "Bearer " + (body.get("token") or body.get("access_token", ""))
        else:
            raise RegistryError(f"the registry {self.host} asks for unsupported auth {kind!r}")

    def _untrusted(self, what: str, error: Exception) -> str:
        return (
            f"{what} cannot be trusted: {reason(error)}; if a private CA signed its certificate, "
            "set buildbox.registry_ca_bundle (or REQUESTS_CA_BUNDLE) to that CA's PEM file"
        )

    def _explain(self, method: str, url: str, response: requests.Response) -> str:
        path = url.removeprefix(self.base)
        if response.status_code == 401:
            user = f"user {self.credentials.username!r}" if self.credentials else "anonymous access"
            challenge = dict(
                re.findall(r'(\w+)="([^"]*)"', response.headers.get("WWW-Authenticate", ""))
            )
            if challenge.get("error") == "insufficient_scope":
                # The token service answered, but without the access this request needs.
                _, name, asked = (challenge.get("scope", "") + "::").split(":")[:3]
                # Sorted: the registry lists the actions in no fixed order.
                actions = ",".join(sorted(a for a in asked.split(",") if a))
                return (
                    f"the registry {self.host} did not grant {user} {actions or 'the'} access "
                    f"to {name or path} (HTTP 401 insufficient_scope on {method} {path}): ask "
                    "its administrators for that permission, or publish where you have it"
                )
            who = f"the credentials for {user}" if self.credentials else user
            return f"the registry {self.host} refused {who} (HTTP 401 on {method} {path})"
        if response.status_code == 403:
            return f"the registry {self.host} denied {method} {path} (HTTP 403): no permission"
        try:
            errors = response.json().get("errors", [])
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
        except ValueError:
            detail = response.text[:200]
        status = response.status_code
        return f"the registry {self.host} answered HTTP {status} to {method} {path}: {detail}"

    # --- API ------------------------------------------------------------------------------

    def ping(self) -> None:
        self.retrying(
            f"reaching {self.host}", lambda: self._request("GET", "/v2/", "registry:catalog:*")
        )

    def _manifest(self, method: str, repository: str, reference: str) -> requests.Response | None:
        """HEAD or GET a manifest with the full Accept header; None when there is none."""
        response = self.retrying(
            f"{method} {repository}:{reference}",
            lambda: self._request(
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
        return response.headers.get("Docker-Content-Digest") if response is not None else None

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str] | None:
        """The manifest's bytes and media type, or None when there is no such manifest."""
        response = self._manifest("GET", repository, reference)
        if response is None:
            return None
        return response.content, response.headers.get("Content-Type", "")

    def put_manifest(
        self, repository: str, reference: str, body: bytes, media_type: str
    ) -> requests.Response:
        """PUT a manifest; the registry's digest must be the sha256 of exactly these bytes.

        Repeated as is on a transient failure: the same bytes under the same reference.
        """
        response = self.retrying(
            f"PUT {repository}:{reference}",
            lambda: self._request(
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
        response = self.retrying(
            f"HEAD blob {digest} in {repository}",
            lambda: self._request(
                "HEAD", f"/v2/{repository}/blobs/{digest}", _pull(repository), ok=(200, 404)
            ),
        )
        return response.status_code == 200

    def get_blob(self, repository: str, digest: str) -> bytes:
        def get() -> bytes:
            response = self._request("GET", f"/v2/{repository}/blobs/{digest}", _pull(repository))
            if digest_of(response.content) != digest:  # a body cut short, or other bytes
                raise TransientError(f"the registry {self.host} served other bytes for {digest}")
            return response.content

        return self.retrying(f"GET blob {digest} from {repository}", get)

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
        return self.retrying(
            f"uploading {digest} to {repository}",
            lambda: self._upload_blob(repository, digest, source, sent or _ignore),
        )

    def _upload_blob(
        self, repository: str, digest: str, source: Path | bytes, sent: Callable[[int], None]
    ) -> bool:
        if self.has_blob(repository, digest):
            return False
        start = self._request(
            "POST", f"/v2/{repository}/blobs/uploads/", _push(repository), ok=(202,)
        )
        location = self._absolute(start.headers["Location"])
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        if size > self.chunk_size:
            location = self._upload_chunks(repository, location, source, size, sent)
            source = b""  # the closing PUT carries no data
        with _opened(source) as stream:
            # Empty as bytes, so that requests sends Content-Length: 0 rather than chunks.
            data: IO[bytes] | _Counted | bytes = _Counted(stream, sent) if source else b""
            self._request(
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
        response = self.retrying(
            f"mounting {digest} from {source_repository} into {repository}",
            lambda: self._request(
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
                    response = self._request(
                        "PATCH", location, _push(repository), ok=(202,), data=chunk,
                        headers={
                            "Content-Type": "application/octet-stream",
                            "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                        },
                    )  # fmt: skip
                except TransientError:
                    resumes += 1
                    if resumes >= self.policy.attempts:
                        raise
                    time.sleep(self.policy.backoff * random.uniform(0.5, 1.5))  # noqa: S311
                    location, offset = self._upload_status(repository, location)
                    continue
                location = self._absolute(response.headers.get("Location", location))
                offset = _range_end(response.headers.get("Range"), offset + len(chunk) - 1) + 1
                sent(offset)
        return location

    def _upload_status(self, repository: str, location: str) -> tuple[str, int]:
        """Where an interrupted upload stands: (its location, the next offset to send)."""
        response = self._request("GET", location, _pull(repository), ok=(204,))
        resumed = _range_end(response.headers.get("Range"), -1) + 1
        return self._absolute(response.headers.get("Location", location)), resumed

    def _absolute(self, location: str) -> str:
        return f"{self.base}{location}" if location.startswith("/") else location

    def referrers(self, repository: str, digest: str) -> dict[str, Any] | None:
        """The referrers index of ``digest``, or None when the registry has no referrers API."""
        response = self.retrying(
            f"GET referrers of {digest} in {repository}",
            lambda: self._request(
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


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (a number of seconds, or an HTTP date)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _codes(response: requests.Response) -> frozenset[str]:
    try:
        return frozenset(str(e.get("code")) for e in response.json().get("errors", []))
    except (ValueError, AttributeError):
        return frozenset()


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


def open_registry(
    where: str | Reference, timeout: float = 60, settings: Settings | None = None
) -> Registry:
    """A client for the registry of ``where`` (a host or a reference), with its credentials,
    retrying and uploading as the settings say (buildbox.registry_*; defaults without)."""
    host = where.host if isinstance(where, Reference) else where
    if settings is None:
        return Registry(host, credentials_for(host), timeout=timeout)
    ca_bundle = registry_ca_bundle(settings) if host == settings.registry.split("/")[0] else None
    policy = RetryPolicy(
        settings.registry_attempts, settings.registry_time_limit, settings.registry_backoff
    )
    chunk = settings.registry_chunk_mib * 1024 * 1024
    return Registry(
        host,
        credentials_for(host),
        timeout=timeout,
        policy=policy,
        chunk_size=chunk,
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
