"""A small client for the OCI distribution API, over requests.

It does what publishing needs and no more: ping, authenticate (basic, or bearer tokens from the
registry's token service), manifests by tag or digest with the full Accept header, blobs (exists,
upload), and the referrers API with the tag-schema fallback. Credentials come from the
environment or the Docker config (including credential helpers) and never appear in messages.
"""

from __future__ import annotations

import base64
import hashlib
import io
import ipaddress
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import docker.auth
import docker.errors
import requests
import requests.adapters
from urllib3.util.retry import Retry

from buildbox.errors import BuildboxError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
#: Without the OCI types the distribution registry answers MANIFEST_UNKNOWN for OCI manifests,
#: and a client would wrongly believe a tag is absent.
MANIFEST_ACCEPT = f"{OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST}, {DOCKER_LIST}"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)  # never printed, not even by repr()


def credentials_for(host: str) -> Credentials | None:
    """Credentials for ``host``: BUILDBOX_REGISTRY_USERNAME/PASSWORD, else the Docker config.

    The Docker config (``~/.docker/config.json``, ``DOCKER_CONFIG``) is read with docker-py,
    which also asks credential helpers (``credsStore``, ``credHelpers``).
    """
    username = os.environ.get("BUILDBOX_REGISTRY_USERNAME")
    password = os.environ.get("BUILDBOX_REGISTRY_PASSWORD")
    if username and password:
        return Credentials(username, password)
    try:
        found = docker.auth.load_config().resolve_authconfig(host)
    except (docker.errors.DockerException, OSError, ValueError):
        return None
    if not found:
        return None
    # config.json entries come back lower-case, credential helpers' answers capitalised.
    username = found.get("username") or found.get("Username")
    password = found.get("password") or found.get("Password")
    return Credentials(username, password) if username and password else None


class RegistryError(BuildboxError):
    """The registry refused or failed a request; the message never holds a secret."""


@dataclass(frozen=True)
class Reference:
    """``host/repository[:tag][@digest]``, split."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        name, _, digest = text.partition("@")
        tag = None
        last = name.rsplit("/", 1)[-1]
        if ":" in last:
            name, tag = name.rsplit(":", 1)
        host, _, repository = name.partition("/")
        if not repository or not ("." in host or ":" in host or host == "localhost"):
            raise BuildboxError(
                f"{text!r} does not name a registry host: expected host[:port]/repository"
            )
        return cls(host, repository, tag, digest or None)

    @property
    def name(self) -> str:
        return f"{self.host}/{self.repository}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def as_dict(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_plain_http(host: str) -> bool:
    """Loopback registries speak plain http (as the Docker engine assumes); others https."""
    hostname = host.rsplit(":", 1)[0].strip("[]")
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


class Registry:
    """One registry host. ``insecure`` hosts are reached over plain http."""

    def __init__(
        self,
        host: str,
        credentials: Credentials | None = None,
        insecure: bool | None = None,
        timeout: float = 60,
    ) -> None:
        self.host = host
        self.credentials = credentials
        scheme = "http" if (is_plain_http(host) if insecure is None else insecure) else "https"
        # Docker Hub's images are named docker.io/...; its API answers at registry-1.docker.io.
        api_host = "registry-1.docker.io" if host in ("docker.io", "index.docker.io") else host
        self.base = f"{scheme}://{api_host}"
        self.timeout = timeout
        self.http = requests.Session()
        retry = Retry(total=3, connect=3, read=0, status=0, backoff_factor=0.2,
                      allowed_methods=frozenset({"GET", "HEAD"}))  # fmt: skip
        self.http.mount("http://", requests.adapters.HTTPAdapter(max_retries=retry))
        self.http.mount("https://", requests.adapters.HTTPAdapter(max_retries=retry))
        self._token: dict[str, str] = {}

    def close(self) -> None:
        self.http.close()

    # --- transport and authentication ----------------------------------------------------

    def _request(
        self, method: str, url: str, scope: str, *, ok: tuple[int, ...] = (200,), **options: Any
    ) -> requests.Response:
        url = url if url.startswith("http") else f"{self.base}{url}"
        for attempt in range(2):
            headers = dict(options.pop("headers", {}) or {})
            if token := self._token.get(scope):
                headers["Authorization"] = token
            try:
                response = self.http.request(
                    method, url, headers=headers, timeout=self.timeout, **options
                )
            except requests.RequestException as error:
                raise RegistryError(
                    f"cannot reach the registry {self.host}: {_plain(error)}"
                ) from None
            if response.status_code == 401 and attempt == 0:
                self._authenticate(response, scope)
                options["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
                if "data" in options and hasattr(options["data"], "seek"):
                    options["data"].seek(0)
                continue
            break
        if response.status_code not in ok:
            raise RegistryError(self._explain(method, url, response))
        return response

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
                    fields["realm"], params=query, auth=auth, timeout=self.timeout
                )
            except (KeyError, requests.RequestException):
                raise RegistryError(
                    f"the registry {self.host} asked for a token, but its token service failed"
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

    def _explain(self, method: str, url: str, response: requests.Response) -> str:
        path = url.removeprefix(self.base)
        if response.status_code == 401:
            who = (
                f"the credentials for user {self.credentials.username!r}"
                if self.credentials
                else "anonymous access"
            )
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
        self._request("GET", "/v2/", "registry:catalog:*")

    def _manifest(self, method: str, repository: str, reference: str) -> requests.Response | None:
        """HEAD or GET a manifest with the full Accept header; None when there is none."""
        response = self._request(
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
        """PUT a manifest; the registry's digest must be the sha256 of exactly these bytes."""
        response = self._request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            _push(repository),
            ok=(201,),
            data=body,
            headers={"Content-Type": media_type},
        )
        stored = response.headers.get("Docker-Content-Digest")
        if stored and stored != digest_of(body):
            raise RegistryError(
                f"the registry {self.host} stored {repository}:{reference} as {stored}, "
                f"not {digest_of(body)}"
            )
        return response

    def has_blob(self, repository: str, digest: str) -> bool:
        response = self._request(
            "HEAD", f"/v2/{repository}/blobs/{digest}", _pull(repository), ok=(200, 404)
        )
        return response.status_code == 200

    def get_blob(self, repository: str, digest: str) -> bytes:
        response = self._request("GET", f"/v2/{repository}/blobs/{digest}", _pull(repository))
        if digest_of(response.content) != digest:
            raise RegistryError(f"the registry {self.host} served other bytes for {digest}")
        return response.content

    def upload_blob(self, repository: str, digest: str, source: Path | bytes) -> None:
        """Upload a blob in one PUT (monolithic), unless the registry already has it."""
        if self.has_blob(repository, digest):
            return
        start = self._request(
            "POST", f"/v2/{repository}/blobs/uploads/", _push(repository), ok=(202,)
        )
        location = start.headers["Location"]
        if location.startswith("/"):
            location = f"{self.base}{location}"
        separator = "&" if "?" in location else "?"
        with _opened(source) as data:
            self._request(
                "PUT",
                f"{location}{separator}digest={digest}",
                _push(repository),
                ok=(201,),
                data=data,
                headers={"Content-Type": "application/octet-stream"},
            )

    def referrers(self, repository: str, digest: str) -> dict[str, Any] | None:
        """The referrers index of ``digest``, or None when the registry has no referrers API."""
        response = self._request(
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


def fallback_tag(digest: str) -> str:
    """The referrers tag schema: ``sha256-<hex>`` names the index of what refers to ``digest``."""
    return digest.replace(":", "-")


def _pull(repository: str) -> str:
    return f"repository:{repository}:pull"


def _push(repository: str) -> str:
    return f"repository:{repository}:pull,push"


@contextmanager
def _opened(source: Path | bytes) -> Iterator[IO[bytes]]:
    """A file or bytes as a readable stream for requests (which then streams it), closed after."""
    with source.open("rb") if isinstance(source, Path) else io.BytesIO(source) as stream:
        yield stream


def _plain(error: Exception) -> str:
    text = str(error)
    for marker in (
        "Connection refused",
        "Connection reset",
        "timed out",
        "Name or service not known",
    ):
        if marker in text:
            return marker.lower()
    return text
