"""The release record, ``buildbox.lock.json``: every released box version, committed.

One entry per (box, version): the pinned reference (``host/repo:tag@digest``; the digest of the
OCI index when the box has several platforms), the inputs digest it was built from, the source
revision, and per platform the image digest and its SBOM's path and sha256. Written atomically.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from buildbox.errors import BuildboxError
from buildbox.files import write_atomically

RECORD_FILE = "buildbox.lock.json"


@dataclass(frozen=True)
class PlatformRelease:
    digest: str
    sbom_path: str
    sbom_digest: str


@dataclass(frozen=True)
class Release:
    box: str
    version: str
    reference: str
    digest: str
    inputs_digest: str
    revision: str
    platforms: dict[str, PlatformRelease]

    @property
    def tag(self) -> str:
        return f"v{self.version}"

    def platform_reference(self, platform: str) -> str:
        """``repo:tag@<that platform's image digest>``."""
        found = self.platforms.get(platform)
        if found is None:
            raise BuildboxError(
                f"{self.box} {self.tag} has no {platform} image; it has "
                f"{', '.join(sorted(self.platforms))}"
            )
        return f"{self.reference.rsplit('@', 1)[0]}@{found.digest}"


def _order(release: Release) -> tuple[str, tuple[int, ...]]:
    return (release.box, tuple(int(p) for p in release.version.split(".") if p.isdigit()))


def load(root: Path) -> list[Release]:
    path = root / RECORD_FILE
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["releases"]
        return [
            Release(
                **{
                    **entry,
                    "platforms": {
                        name: PlatformRelease(**facts) for name, facts in entry["platforms"].items()
                    },
                }
            )
            for entry in entries
        ]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BuildboxError(
            f"{RECORD_FILE} cannot be read ({error}); restore it from git"
        ) from None


def find(releases: list[Release], box: str, version: str | None = None) -> Release | None:
    """The release of ``box`` at ``version``, or its latest release when no version is given."""
    mine = sorted((r for r in releases if r.box == box), key=_order)
    if version is None:
        return mine[-1] if mine else None
    wanted = version.removeprefix("v")
    return next((r for r in mine if r.version == wanted), None)


def next_version(releases: list[Release], box: str) -> str:
    """The version to use after the latest released one (1 when none was released)."""
    latest = find(releases, box)
    if latest is None:
        return "1"
    parts = latest.version.split(".")
    parts[-1] = str(int(parts[-1]) + 1) if parts[-1].isdigit() else parts[-1] + ".1"
    return ".".join(parts)


def add(root: Path, release: Release) -> None:
    """Add (or replace) the entry for the release's box and version; atomically."""
    kept = [r for r in load(root) if (r.box, r.version) != (release.box, release.version)]
    releases = sorted([*kept, release], key=_order)
    text = json.dumps({"releases": [asdict(r) for r in releases]}, indent=2) + "\n"
    write_atomically(root / RECORD_FILE, text)
