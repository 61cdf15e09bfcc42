"""The release record, ``buildbox.lock.json``: every released box version, committed.

One entry per (box, version): the pinned reference (``host/repo:tag@digest``; the digest of the
OCI index when the box has several platforms), the inputs digest it was built from, the source
revision and the time it was built as (``epoch``: SOURCE_DATE_EPOCH, else the commit's time), and
per platform the image digest and its SBOM's path and sha256. Written atomically.

Only the commands that deal with releases read it (check's version rule, release, ref, audit,
reproduce, matrix); a broken record is a clear message there and nowhere else.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from buildbox.define import yamldoc
from buildbox.define.boxes import BOX_FILE, Box
from buildbox.define.inputs import inputs_digest
from buildbox.define.project import Project
from buildbox.errors import BuildboxError, Problem
from buildbox.files import write_atomically
from buildbox.oci.refs import Reference
from buildbox.sbom.paths import COMMITTED_DIR, filename

RECORD_FILE = "buildbox.lock.json"


def committed_sbom(root: Path, box: Box, platform: str) -> Path:
    """Where the release of the box's current version commits its SBOM for ``platform``."""
    return root / COMMITTED_DIR / box.name / filename(box, platform)


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
    #: The time the release was built as (SOURCE_DATE_EPOCH or the commit's time); None in
    #: records written before it was kept: reproduce then takes the commit's time.
    epoch: int | None = None

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
        return str(Reference.parse(self.reference).with_digest(found.digest))


def _order(release: Release) -> tuple[str, tuple[int, ...]]:
    return (release.box, tuple(int(p) for p in release.version.split(".") if p.isdigit()))


def load(root: Path) -> list[Release]:
    """Every recorded release; a record that cannot be read is one clear error."""
    path = root / RECORD_FILE
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["releases"]
        return [_release(entry) for entry in entries]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise BuildboxError(
            f"{RECORD_FILE} cannot be read ({type(error).__name__}: {error}); restore it from "
            f"git (`git checkout -- {RECORD_FILE}`)"
        ) from None


def _release(entry: dict[str, Any]) -> Release:
    """One record entry, every field of the type the dataclasses declare (else TypeError)."""
    platforms = {
        str(name): PlatformRelease(**_strings(facts)) for name, facts in entry["platforms"].items()
    }
    epoch = entry.get("epoch")
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int)):
        raise TypeError(f"epoch must be a whole number, not {epoch!r}")
    fields = _strings({k: v for k, v in entry.items() if k not in ("platforms", "epoch")})
    return Release(**fields, platforms=platforms, epoch=epoch)


def _strings(fields: dict[str, Any]) -> dict[str, str]:
    wrong = {key: value for key, value in fields.items() if not isinstance(value, str)}
    if wrong:
        raise TypeError(f"expected text in {', '.join(sorted(wrong))}")
    return fields


def find(releases: list[Release], box: str, version: str | None = None) -> Release | None:
    """The release of ``box`` at ``version``, or its latest release when no version is given."""
    mine = sorted((r for r in releases if r.box == box), key=_order)
    if version is None:
        return mine[-1] if mine else None
    wanted = version.removeprefix("v")
    return next((r for r in mine if r.version == wanted), None)


def require(root: Path, box: str, version: str | None = None) -> Release:
    """The release of ``box`` at ``version`` (default: the latest); an error when there is none."""
    found = find(load(root), box, version)
    if found is None:
        which = f"version {version}" if version else "any version"
        raise BuildboxError(f"no release of {box} ({which}) in {RECORD_FILE}")
    return found


def next_version(releases: list[Release], box: str) -> str:
    """The version to use after the latest released one (1 when none was released)."""
    latest = find(releases, box)
    if latest is None:
        return "1"
    parts = latest.version.split(".")
    parts[-1] = str(int(parts[-1]) + 1) if parts[-1].isdigit() else parts[-1] + ".1"
    return ".".join(parts)


def add(root: Path, releases: list[Release], release: Release) -> None:
    """Write the record: ``releases`` (as loaded) with the entry for the release's box and
    version added or replaced; atomically."""
    kept = [r for r in releases if (r.box, r.version) != (release.box, release.version)]
    ordered = sorted([*kept, release], key=_order)
    text = json.dumps({"releases": [asdict(r) for r in ordered]}, indent=2) + "\n"
    write_atomically(root / RECORD_FILE, text)


def unbumped_versions(project: Project) -> list[Problem]:
    """The version-bump rule: a released version's inputs never change."""
    try:
        releases = load(project.settings.root)
    except BuildboxError as error:
        return [Problem(RECORD_FILE, None, "", str(error))]
    found = []
    for box in project.boxes:
        released = find(releases, box.name, box.version)
        if released is None:
            continue
        digest = inputs_digest(box, project.library, project.settings)
        if digest != released.inputs_digest:
            box_file = box.directory / BOX_FILE
            shown = project.settings.shown(box_file)
            line = yamldoc.line_of(yamldoc.load(box_file, shown, []), ("version",))
            found.append(
                Problem(
                    shown,
                    line,
                    "version",
                    f"{box.release_tag} was released with other inputs ({released.inputs_digest}; "
                    f"now {digest}); set `version: {next_version(releases, box.name)}`",
                )
            )
    return found
