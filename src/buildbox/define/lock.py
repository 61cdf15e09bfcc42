"""A box's OS package lock, ``buildboxes/<box>/packages.lock``: every package it installs, pinned.

Written by ``invoke lock`` (``buildbox.resolve``), read by everything else. Per platform: each
package's name, version, architecture, download URL, sha256 and size, as the archive's index
gives them (apt verified that index against the archive's signature), and the base image they
were resolved against. JSON with sorted keys and entries, so a re-lock diffs cleanly in review.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from buildbox.errors import Problem

LOCK_FILE = "packages.lock"
SCHEMA = "buildbox-packages/1"
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: ``name`` or ``name=version``, as apt-get install takes them.
_SPEC = re.compile(r"^([a-z0-9][a-z0-9+.-]+)(?:=([A-Za-z0-9.+~:-]+))?$")


@dataclass(frozen=True, order=True)
class LockedPackage:
    name: str
    version: str
    architecture: str
    url: str
    sha256: str
    size: int

    @property
    def filename(self) -> str:
        """The .deb's name in the build context: the archive's (``name_version_arch.deb``, the
        version without its epoch; apt reads a ``%3a`` in a path as an escape)."""
        return posixpath.basename(unquote(urlsplit(self.url).path))


@dataclass(frozen=True)
class PlatformLock:
    #: The platform image of the base the packages were resolved against.
    base_image: str
    packages: tuple[LockedPackage, ...]


@dataclass(frozen=True)
class PackageLock:
    #: The box's base (as box.yaml pins it) when the lock was made.
    base: str
    #: What box.yaml asked for (names, or name=version), sorted.
    requested: tuple[str, ...]
    platforms: dict[str, PlatformLock]
    #: The archive snapshot resolved against ("" for the live archive).
    snapshot: str = ""

    def render(self) -> str:
        document = {
            "schema": SCHEMA,
            "base": self.base,
            "requested": sorted(self.requested),
            "snapshot": self.snapshot,
            "platforms": {
                platform: {
                    "base_image": lock.base_image,
                    "packages": [asdict(p) for p in sorted(lock.packages)],
                }
                for platform, lock in sorted(self.platforms.items())
            },
        }
        return json.dumps(document, indent=2, sort_keys=True) + "\n"


def parse_spec(spec: str) -> tuple[str, str | None] | None:
    """``make`` -> (make, None); ``make=4.3-4.1`` -> (make, 4.3-4.1); None when malformed."""
    found = _SPEC.match(spec)
    return (found.group(1), found.group(2)) if found else None


def read(path: Path) -> PackageLock:
    """The lock at ``path``; ValueError (with a reason a person can act on) when malformed."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot be read: {error}") from None
    except ValueError as error:
        raise ValueError(f"is not JSON: {error}") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise ValueError(f"is not a package lock (schema {SCHEMA!r} expected)")
    try:
        platforms = {
            str(platform): PlatformLock(
                _text(facts["base_image"]), tuple(_package(p) for p in facts["packages"])
            )
            for platform, facts in document["platforms"].items()
        }
        return PackageLock(
            _text(document["base"]),
            tuple(map(_text, document["requested"])),
            platforms,
            _text(document.get("snapshot", "")),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise ValueError(f"is malformed ({type(error).__name__}: {error})") from None


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {value!r}")
    return value


def _package(entry: Any) -> LockedPackage:
    fields = {key: entry[key] for key in ("name", "version", "architecture", "url", "sha256")}
    for value in fields.values():
        _text(value)
    if not _SHA256.fullmatch(fields["sha256"]):
        raise ValueError(f"{fields['name']}: sha256 must be 64 lowercase hex characters")
    size = entry["size"]
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"{fields['name']}: size must be a whole number")
    return LockedPackage(**fields, size=size)


def problems(
    lock_path: Path,
    shown: str,
    base: str,
    snapshot: str,
    requested: tuple[str, ...],
    platforms: tuple[str, ...],
    box: str,
) -> tuple[PackageLock | None, list[Problem]]:
    """The lock of a box that lists ``requested`` packages, and what is wrong with it."""
    hint = f"run `invoke lock {box}`"
    if not lock_path.is_file():
        return None, [Problem(shown, None, "", f"missing; the box lists packages: {hint}")]
    try:
        lock = read(lock_path)
    except ValueError as error:
        return None, [Problem(shown, None, "", f"{error}; {hint} to write it again")]
    found = []
    if lock.base != base:
        found.append(
            Problem(shown, None, "base", f"resolved against another base ({lock.base}); {hint}")
        )
    if lock.snapshot != snapshot:
        was = lock.snapshot or "the live archive"
        found.append(
            Problem(
                shown,
                None,
                "snapshot",
                f"resolved against {was}, not {snapshot or 'the live archive'}; {hint}",
            )
        )
    missing = sorted(set(requested) - set(lock.requested))
    if missing:
        found.append(
            Problem(shown, None, "requested", f"{', '.join(missing)} not in the lock; {hint}")
        )
    extra = sorted(set(lock.requested) - set(requested))
    if extra:
        found.append(
            Problem(shown, None, "requested", f"{', '.join(extra)} no longer in box.yaml; {hint}")
        )
    for platform in platforms:
        if platform not in lock.platforms:
            found.append(Problem(shown, None, "platforms", f"no lock for {platform}; {hint}"))
    return lock, found
