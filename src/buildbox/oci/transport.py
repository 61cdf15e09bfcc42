"""HTTP to one registry, beneath the distribution verbs (``oci.registry``): the address and TLS
trust, authentication (basic, or bearer tokens from the registry's token service, kept per
scope), the error a user reads, and retrying per the shared :class:`~buildbox.http.RetryPolicy`.

Layered as go-containerregistry layers its transports: a request goes out with the token of its
scope; a 401 asks :class:`Auth` for a new one (at most twice, see :meth:`Transport.request`);
a failure worth repeating is a :class:`TransientError`, which :meth:`Transport.retrying` repeats
with backoff (Retry-After honoured) within the policy's attempts. Time is the command's: one
:class:`Clock` per transport, shared by every thread and operation, runs while any registry
request is under way and bounds them all by ``registry_time_limit``; each request's timeout is
cut to what is left. Credentials never appear in a message.
"""

from __future__ import annotations

import base64
import email.utils
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests

from buildbox.errors import BuildboxError
from buildbox.http import (
    DEFAULT_RETRIES,
    TRANSIENT_STATUSES,
    RetryPolicy,
    is_loopback,
    reason,
    retrying_session,
)
from buildbox.oci.credentials import Credentials

T = TypeVar("T")
#: Fresh tokens a request may be sent with before a 401 is final: a token can be refused right
#: after it was issued (parallel uploads renew at the same moment, or the service rotates keys).
AUTHENTICATIONS = 2


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


class GaveUpError(RegistryError):
    """An operation that kept failing transiently until the retry policy's limits: the registry
    is unreachable, or too unwell to use now."""

    def __init__(self, message: str, last: TransientError | None):
        super().__init__(message, last.status if last else None)
        self.last = last


class Clock:
    """The registry time of one command, shared by its threads: it runs while any registry
    operation is under way (not while the command builds or signs), up to ``limit`` seconds."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._running = 0
        self._since = 0.0
        self._spent = 0.0

    @contextmanager
    def running(self) -> Iterator[None]:
        """The clock runs inside (operations nest and overlap: it counts wall time once)."""
        with self._lock:
            if self._running == 0:
                self._since = time.monotonic()
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                if self._running == 0:
                    self._spent += time.monotonic() - self._since

    def left(self) -> float:
        """Seconds left of the limit."""
        with self._lock:
            running = time.monotonic() - self._since if self._running else 0.0
            return self.limit - self._spent - running


def is_plain_http(host: str) -> bool:
    """Loopback registries speak plain http (as the Docker engine assumes); others https."""
    return is_loopback(host.rsplit(":", 1)[0] if not host.endswith("]") else host)


#: Registries whose token service is on another host of the same operator (Docker Hub's).
_TOKEN_HOSTS = {"docker.io": "auth.docker.io", "index.docker.io": "auth.docker.io"}


def may_receive_credentials(host: str, realm: str) -> bool:
    """Whether the token service at ``realm`` may be sent the credentials of the registry
    ``host``: only on the registry's own host name (any port; Docker Hub's auth.docker.io),
    over https, or plain http on loopback. A registry's 401 names its token service, so
    anything else would hand the password to whatever host a registry or proxy names."""
    url = urlsplit(realm)
    if url.username is not None or url.hostname is None:
        return False
    own = urlsplit(f"//{host}").hostname
    same = url.hostname in (own, _TOKEN_HOSTS.get(own or ""))
    secure = url.scheme == "https" or (url.scheme == "http" and is_loopback(url.hostname))
    return same and secure


class Auth:
    """The registry's authentication: the Authorization header of each scope, renewed from a
    401's challenge (basic with the credentials, or a bearer token from the token service)."""

    def __init__(
        self,
        host: str,
        credentials: Credentials | None,
        http: requests.Session,
        timeout: Callable[[], float],
        verify: str | bool,
    ) -> None:
        self.host = host
        self.credentials = credentials
        #: The timeout of the next request (the transport's, cut to the command's time left).
        self._timeout = timeout
        self._http, self._verify = http, verify
        self._headers: dict[str, str] = {}  # scope -> Authorization header
        #: The token service the credentials were kept from (another host, or plain http).
        self.withheld: str | None = None

    def header(self, scope: str) -> str | None:
        return self._headers.get(scope)

    def renew(self, challenge: requests.Response, scope: str) -> None:
        """Answer a 401's ``WWW-Authenticate`` challenge for ``scope``."""
        kind, _, params = challenge.headers.get("WWW-Authenticate", "").partition(" ")
        if kind.lower() == "basic":
            self._headers[scope] = self._basic()
        elif kind.lower() == "bearer":
            self._headers[scope] = "Bearer " + self._token(_challenge(params), scope)
        else:
            raise RegistryError(f"the registry {self.host} asks for unsupported auth {kind!r}")

    def _basic(self) -> str:
        if self.credentials is None:
            raise RegistryError(
                f"the registry {self.host} needs credentials: `docker login {self.host}` (or a "
                "credential helper); BUILDBOX_REGISTRY_USERNAME and BUILDBOX_REGISTRY_PASSWORD "
                "are for the publishing registry (buildbox.registry) only"
            )
        return basic(self.credentials)

    def kept_back(self) -> str:
        """Why the token service was asked without the credentials."""
        return (
            f"its token service {self.withheld} is not on {self.host} over https, so buildbox "
            "did not send it the credentials (they go to their own host only)"
        )

    def _token(self, fields: dict[str, str], scope: str) -> str:
        realm = fields.get("realm")
        if realm is None:
            raise RegistryError(
                f"the registry {self.host} asked for a token without naming its token service"
            )
        query = {"service": fields.get("service", ""), "scope": fields.get("scope", scope)}
        credentials = self.credentials
        if credentials is not None and not may_receive_credentials(self.host, realm):
            # Asked anonymously: public content still reads, and a refusal says why (_explain).
            self.withheld = realm
            credentials = None
        headers = {"Authorization": basic(credentials)} if credentials else {}
        try:
            answer = self._http.get(
                realm, params=query, headers=headers, timeout=self._timeout(), verify=self._verify
            )
        except requests.exceptions.SSLError as error:
            raise RegistryError(
                untrusted(f"the token service of {self.host} ({realm})", error)
            ) from None
        except requests.RequestException as error:
            raise TransientError(
                f"the registry {self.host} asked for a token, but its token service {realm} "
                f"failed: {reason(error)}"
            ) from None
        if answer.status_code in TRANSIENT_STATUSES:
            raise TransientError(
                f"the token service of {self.host} ({realm}) answered HTTP {answer.status_code}",
                answer.status_code,
                _retry_after(answer.headers.get("Retry-After")),
            )
        if answer.status_code != 200:
            if self.withheld is not None:
                raise RegistryError(
                    f"the token service of {self.host} refused anonymous access (HTTP "
                    f"{answer.status_code}): {self.kept_back()}"
                )
            who = f" for user {credentials.username!r}" if credentials else ""
            raise RegistryError(
                f"the token service of {self.host} refused the credentials{who} "
                f"(HTTP {answer.status_code})"
            )
        return _token_of(answer, f"the token service of {self.host} ({realm})")


def basic(credentials: Credentials) -> str:
    """The ``Authorization: Basic`` value of ``credentials``, in UTF-8 as docker sends it (RFC
    7617); one clear line, naming where they came from, when they cannot be sent at all."""
    try:
        pair = f"{credentials.username}:{credentials.password}".encode()
    except UnicodeEncodeError:  # bytes that are not text (an environment in another encoding)
        raise RegistryError(
            f"the registry credentials from {credentials.origin or 'the configuration'} hold "
            "bytes that are not UTF-8 text, so they cannot be sent; set them again as UTF-8"
        ) from None
    return "Basic " + base64.b64encode(pair).decode()


#: What a bearer token may hold (RFC 6750's b64token, and JWTs): no spaces or control characters.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def _token_of(answer: requests.Response, service: str) -> str:
    """The bearer token in a token service's 200 answer; one clear line (never the token) when
    there is none or it could not be sent in a header."""
    try:
        body = answer.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        kind = answer.headers.get("Content-Type", "no Content-Type").split(";")[0]
        raise RegistryError(
            f"{service} answered HTTP 200 with {kind}, not a JSON token: is its realm a login "
            "page, or a proxy in the way? Check the registry's address and its token service"
        )
    token = body.get("token") or body.get("access_token")
    if not isinstance(token, str) or not token:
        raise RegistryError(f"{service} answered without a token (no token or access_token)")
    if not _TOKEN.fullmatch(token):
        raise RegistryError(
            f"{service} answered a token that cannot go in an HTTP header (it holds spaces, "
            "line breaks or other characters a bearer token may not; not shown): check the "
            "token service"
        )
    return token


class Transport:
    """Requests to one registry host: ``insecure`` hosts are reached over plain http, others
    over TLS checked against ``ca_bundle`` (else the system's CAs)."""

    def __init__(
        self,
        host: str,
        credentials: Credentials | None = None,
        *,
        insecure: bool | None = None,
        timeout: float = 60,
        ca_bundle: Path | None = None,
        policy: RetryPolicy = DEFAULT_RETRIES,
    ) -> None:
        self.host = host
        self.policy = policy
        self.timeout = timeout
        # A CA bundle means TLS, on loopback too (where plain http is otherwise assumed).
        plain = is_plain_http(host) and ca_bundle is None if insecure is None else insecure
        #: What TLS certificates are checked against: the bundle, else the system's (True lets
        #: requests honour REQUESTS_CA_BUNDLE).
        self.verify: str | bool = str(ca_bundle) if ca_bundle else True
        # Docker Hub's images are named docker.io/...; its API answers at registry-1.docker.io.
        api_host = "registry-1.docker.io" if host in ("docker.io", "index.docker.io") else host
        self.base = f"{'http' if plain else 'https'}://{api_host}"
        # No retries below: each request is retried here (see retrying), within the clock.
        self.http = retrying_session(retries=0, backoff=0, statuses=())
        self.auth = Auth(host, credentials, self.http, self._request_timeout, self.verify)
        #: The command's registry time, shared by every thread and operation.
        self.clock = Clock(policy.time_limit)
        #: Transient failures in a row, all threads' requests counted (a success resets it).
        self._failures = 0
        self._failures_lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    def absolute(self, location: str) -> str:
        return f"{self.base}{location}" if location.startswith("/") else location

    def request(
        self, method: str, url: str, scope: str, *, ok: tuple[int, ...] = (200,), **options: Any
    ) -> requests.Response:
        """One request (``url`` absolute or a path), authenticated for ``scope``; a status not in
        ``ok`` is a :class:`RegistryError` (a :class:`TransientError` when worth repeating)."""
        url = self.absolute(url)
        for attempt in range(AUTHENTICATIONS + 1):
            headers = dict(options.pop("headers", {}) or {})
            if token := self.auth.header(scope):
                headers["Authorization"] = token
            try:
                response = self.http.request(
                    method, url, headers=headers, timeout=self._request_timeout(),
                    verify=self.verify, **options,
                )  # fmt: skip
            except requests.exceptions.SSLError as error:  # never better on a second try
                raise RegistryError(untrusted(f"the registry {self.host}", error)) from None
            except requests.exceptions.InvalidHeader:  # its message holds the header's value
                raise RegistryError(
                    f"a header of {method} {self._path(url)} to the registry {self.host} is not "
                    "valid HTTP (not shown: it may hold a credential)"
                ) from None
            except requests.RequestException as error:
                raise TransientError(
                    f"cannot reach the registry {self.host} ({method} {self._path(url)}): "
                    f"{reason(error)}"
                ) from None
            if response.status_code == 401 and attempt < AUTHENTICATIONS:
                self.auth.renew(response, scope)
                options["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
                if "data" in options and hasattr(options["data"], "seek"):
                    options["data"].seek(0)
                continue
            break
        if response.status_code not in ok:
            message = self._explain(method, url, response)
            if response.status_code in TRANSIENT_STATUSES:
                asked = _retry_after(response.headers.get("Retry-After"))
                raise TransientError(message, response.status_code, asked)
            raise RegistryError(message, response.status_code, _codes(response))
        with self._failures_lock:
            self._failures = 0
        return response

    def call(
        self,
        what: str,
        method: str,
        url: str,
        scope: str,
        *,
        ok: tuple[int, ...] = (200,),
        **options: Any,
    ) -> requests.Response:
        """:meth:`request`, repeated on transient failures per the policy: for requests that
        are the same when repeated (HEAD, GET, a manifest PUT, starting an upload)."""
        return self.retrying(what, lambda: self.request(method, url, scope, ok=ok, **options))

    def _request_timeout(self) -> float:
        """A request's timeout: the client's, or less when the command's time is running out."""
        return max(0.1, min(self.timeout, self.clock.left()))

    def retrying(self, what: str, operation: Callable[[], T]) -> T:
        """``operation`` (the same when repeated), repeated on transient failures per the
        policy's attempts, within the command's time (:class:`Clock`); ``what`` names it in
        the error a user reads."""
        started = time.monotonic()
        attempt = 0
        with self.clock.running():
            while True:
                if self.clock.left() <= 0:
                    raise self.out_of_time(what, None)
                attempt += 1
                try:
                    return operation()
                except TransientError as error:
                    self.pause(what, attempt, error, started)

    def pause(self, what: str, attempt: int, error: TransientError, started: float) -> None:
        """Wait before the attempt after ``attempt`` failed with ``error``; or give up: when
        that was the policy's last attempt and no request succeeded meanwhile (the last
        ``attempts`` requests all failed; while others succeed the registry is working, and
        only the time limit ends a request), or when the command's time would run out first."""
        policy = self.policy
        with self._failures_lock:
            self._failures += 1
            in_a_row = self._failures
        if attempt >= policy.attempts and in_a_row >= policy.attempts:
            raise GaveUpError(
                f"{what}: gave up after {attempt} attempt(s) in {time.monotonic() - started:.1f} "
                f"s (limits: {policy.attempts} attempts a request, {policy.time_limit:g} s for "
                f"the command's registry requests); the last failure: {error}",
                error,
            )
        delay = policy.delay(attempt, error.retry_after)
        if delay >= self.clock.left():
            raise self.out_of_time(what, error)
        time.sleep(delay)

    def out_of_time(self, what: str, last: TransientError | None) -> GaveUpError:
        """The command's registry time has run out, while ``what`` (after ``last``)."""
        limit = (
            f"buildbox.registry_time_limit ({self.policy.time_limit:g} s for all the registry "
            "requests of this command)"
        )
        failing = last is not None and last.status is not None  # it answers, with errors
        state = f"still failing when {limit} ran out" if failing else f"no answer within {limit}"
        after = f"; the last failure: {last}" if last is not None else ""
        return GaveUpError(
            f"{what}: {state}{after}; rerun when {self.host} recovers, or raise "
            "buildbox.registry_time_limit",
            last,
        )

    def _path(self, url: str) -> str:
        """``url`` as a message shows it: its path on the registry, without the query (an
        upload's state token is long and says nothing to a user)."""
        return url.removeprefix(self.base).split("?", 1)[0]

    def _explain(self, method: str, url: str, response: requests.Response) -> str:
        path = self._path(url)
        status = response.status_code
        withheld = self.auth.withheld
        credentials = self.auth.credentials if withheld is None else None
        if status in (401, 403) and withheld is not None:
            return (
                f"the registry {self.host} refused anonymous access (HTTP {status} on {method} "
                f"{path}): {self.auth.kept_back()}"
            )
        if status == 401:
            user = f"user {credentials.username!r}" if credentials else "anonymous access"
            challenge = _challenge(response.headers.get("WWW-Authenticate", ""))
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
            who = f"the credentials for {user}" if credentials else user
            return f"the registry {self.host} refused {who} (HTTP 401 on {method} {path})"
        if status == 403:
            return f"the registry {self.host} denied {method} {path} (HTTP 403): no permission"
        try:
            errors = response.json().get("errors", [])
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
        except ValueError:
            detail = response.text[:200]
        return f"the registry {self.host} answered HTTP {status} to {method} {path}: {detail}"


def untrusted(what: str, error: Exception) -> str:
    return (
        f"{what} cannot be trusted: {reason(error)}; if a private CA signed its certificate, "
        "set buildbox.registry_ca_bundle (or REQUESTS_CA_BUNDLE) to that CA's PEM file"
    )


def _challenge(params: str) -> dict[str, str]:
    """The ``key="value"`` pairs of a ``WWW-Authenticate`` header."""
    return dict(re.findall(r'(\w+)="([^"]*)"', params))


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
