"""Image references, ``[host/]repository[:tag][@sha256:<hex>]``: the one place that splits them."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from buildbox.errors import BuildboxError

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
#: Where an image named without a registry host lives (as the Docker engine reads such names).
DEFAULT_HOST = "docker.io"


def is_digest(text: str) -> bool:
    """Whether ``text`` is a digest (``sha256:<64 hex>``), not a tag."""
    return _DIGEST.fullmatch(text) is not None


def is_pinned(reference: str) -> bool:
    """Whether ``reference`` names exactly one image: it ends in ``@sha256:<64 hex>``."""
    _, at, digest = reference.rpartition("@")
    return bool(at) and is_digest(digest)


def _looks_like_host(part: str) -> bool:
    return "." in part or ":" in part or part == "localhost"


@dataclass(frozen=True)
class Reference:
    """``host/repository[:tag][@digest]``, split."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str, *, default_host: bool = False) -> Reference:
        """Split ``text``; without a registry host it is an error, or Docker Hub's image when
        ``default_host`` (``ubuntu:22.04`` is ``docker.io/library/ubuntu:22.04``)."""
        name, at, digest = text.partition("@")
        if at and not _DIGEST.fullmatch(digest):
            raise BuildboxError(f"{text!r}: the digest must be sha256:<64 lowercase hex>")
        tag = None
        if ":" in name.rsplit("/", 1)[-1]:
            name, tag = name.rsplit(":", 1)
        first, slash, rest = name.partition("/")
        if slash and _looks_like_host(first):
            host, repository = first, rest
        elif default_host:
            host, repository = DEFAULT_HOST, name if slash else f"library/{name}"
        else:
            raise BuildboxError(
                f"{text!r} does not name a registry host: expected host[:port]/repository"
            )
        if not repository:
            raise BuildboxError(f"{text!r} names no repository: expected host[:port]/repository")
        return cls(host, repository, tag, digest or None)

    @property
    def name(self) -> str:
        """``host/repository``, without tag or digest."""
        return f"{self.host}/{self.repository}"

    def with_digest(self, digest: str) -> Reference:
        return replace(self, digest=digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text
