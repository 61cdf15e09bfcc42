"""`invoke bump`: move a component to a new version with pins taken from the publisher.

The new sha256 of each artifact comes from the publisher's checksum file (the component's
``upstream.checksums``), never from bytes we downloaded ourselves; the artifact is then downloaded
and must hash to that published value (cross-check). shared/components.yaml is rewritten in place
with its comments and order kept, atomically.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from ruamel.yaml import YAML

from buildbox.define.project import Project
from buildbox.errors import BuildboxError
from buildbox.fetch import Fetcher, Wanted
from buildbox.files import write_atomically
from buildbox.http import reason

_HEX64 = re.compile(r"\b[0-9a-f]{64}\b")


class NothingToBump(Exception):  # noqa: N818 (not an error: see below)
    """The component is already at the version asked for: not a failure (a scheduled bump to
    the latest release finds nothing new), and nothing is downloaded or written."""


@dataclass(frozen=True)
class NewPin:
    platform: str
    url: str
    sha256: str
    checksums_url: str


@dataclass(frozen=True)
class Bump:
    component: str
    old_version: str
    new_version: str
    pins: tuple[NewPin, ...]
    #: Boxes that take the component: each needs a version bump to release the change.
    boxes: tuple[str, ...]


def plan(project: Project, name: str, version: str, fetcher: Fetcher) -> Bump:
    """Work out the new pins from the publisher's checksum files and verify the downloads."""
    component = project.library.get(name)
    if component is None:
        raise BuildboxError(f"no component named {name!r} in shared/components.yaml")
    upstream = component.upstream
    if upstream is None:
        raise BuildboxError(
            f"components.{name} has no `upstream` block (url and checksums templates), so bump "
            "cannot find the published checksums. Add one, or edit the pin by hand, copying the "
            "sha256 from the publisher's checksum file and recording it in sha256_source."
        )
    if version == component.version:
        raise NothingToBump(
            f"{name} is already at version {version} in shared/components.yaml; nothing to bump"
        )
    pins = []
    for platform in component.platforms:
        url = upstream.artifact_url(platform, version)
        checksums_url = upstream.checksums_url(platform, version)
        sha256 = published_sha256(fetcher, checksums_url, url)
        pins.append(NewPin(platform, url, sha256, checksums_url))
    # Cross-check: the bytes must hash to what the publisher says, or nothing is written.
    fetcher.fetch_all([Wanted(name, version, p.platform, p.url, p.sha256) for p in pins])
    boxes = tuple(b.name for b in project.boxes if name in b.components)
    return Bump(name, component.version, version, tuple(pins), boxes)


def published_sha256(fetcher: Fetcher, checksums_url: str, artifact_url: str) -> str:
    """The sha256 the checksum file at ``checksums_url`` gives for the artifact."""
    filename = artifact_url.rsplit("/", 1)[-1]
    try:
        response = fetcher.http.get(checksums_url, timeout=fetcher.settings.fetch_timeout)
    except requests.RequestException as error:
        raise BuildboxError(
            f"cannot read the checksum file {checksums_url}: {reason(error)}"
        ) from None
    if response.status_code != 200:
        raise BuildboxError(
            f"cannot read the checksum file {checksums_url}: HTTP {response.status_code} "
            f"{response.reason} (does version exist upstream?)"
        )
    return parse_checksums(response.text, filename, checksums_url)


def parse_checksums(text: str, filename: str, source: str) -> str:
    """Find ``filename``'s sha256 in a checksum file (``sha256sum`` lines, or a lone digest)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        fields = line.split()
        named = len(fields) >= 2 and fields[-1].lstrip("*").rsplit("/", 1)[-1] == filename
        if named and _HEX64.fullmatch(fields[0].lower()):
            return fields[0].lower()
    digests = {d.lower() for d in _HEX64.findall(text.lower())}
    if len(lines) == 1 and len(digests) == 1:  # e.g. Go's <file>.sha256: just the digest
        return str(digests.pop())
    raise BuildboxError(f"the checksum file {source} has no sha256 for {filename}")


def apply(bump: Bump, components_file: Path) -> None:
    """Write the bump into components.yaml, keeping comments and order; all or nothing."""
    yaml = _round_trip()
    text = components_file.read_text(encoding="utf-8")
    document = yaml.load(text)
    entry = document["components"][bump.component]
    old, new = bump.old_version, bump.new_version
    entry["version"] = _like(entry["version"], new)
    if isinstance(entry.get("purl"), str):
        entry["purl"] = entry["purl"].replace(old, new)
    entry["probe"]["expect"] = _like(
        entry["probe"]["expect"], entry["probe"]["expect"].replace(old, new)
    )
    for pin in bump.pins:
        artifact = entry["artifacts"][pin.platform]
        artifact["url"] = pin.url
        artifact["sha256"] = pin.sha256
        artifact["sha256_source"] = pin.checksums_url
    if document == yaml.load(text):  # nothing new: leave the file (and its mtime) alone
        return
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    write_atomically(components_file, buffer.getvalue())


def _round_trip() -> YAML:
    yaml = YAML(typ="rt")
    yaml.width = 4096  # never re-wrap long URLs
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _like(old: Any, new: str) -> Any:
    """``new`` in the same scalar style (quoted stays quoted) as ``old``."""
    return type(old)(new) if isinstance(old, str) else new
