"""The release record, ``buildbox.lock.json``: every released box version, committed.

One entry per (box, version): the pinned reference (``host/repo:tag@digest``; the digest of the
OCI index when the box has several platforms), the inputs digest it was built from, the source
revision and the time it was built as (``epoch``: SOURCE_DATE_EPOCH, else the commit's time), and
per platform the image digest and its SBOM's path and sha256, and where its inputs are escrowed
(the inputs manifest, by digest). Written atomically.

Only the commands that deal with releases read it (check's version rule, release, ref, audit,
verify-release, reproduce, matrix); a broken record is a clear message there and nowhere else.
It is held to what a release writes when it is loaded (a hand edit is refused, not trusted):
its schema (schemas/record.schema.json), the reference on the configured registry and naming
the recorded digest, the SBOM paths inside sbom/.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from buildbox.define import yamldoc
from buildbox.define.boxes import BOX_FILE, Box
from buildbox.define.inputs import inputs_digest
from buildbox.define.project import Project
from buildbox.define.yamldoc import FieldPath
from buildbox.errors import BuildboxError, Problem
from buildbox.files import write_atomically
from buildbox.oci.refs import Reference
from buildbox.sbom.paths import COMMITTED_DIR, filename
from buildbox.settings import Settings

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
    #: Where the release's inputs are escrowed: ``host/repository@<inputs manifest digest>``
    #: (``oci.inputs``); None when they were not (escrow off, or a record from before it).
    escrow: str | None = None

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


def load(settings: Settings) -> list[Release]:
    """Every recorded release, each held to the record's schema and to what a release writes:
    its reference ``<buildbox.registry>/<box>:v<version>@<digest>``, at least one platform, each
    SBOM path inside ``sbom/``. A record that cannot be read, or any entry that does not hold, is
    one clear error (a line per violation): nothing a hand edit put there is trusted."""
    path = settings.root / RECORD_FILE
    if not path.exists():
        return []
    try:
        document = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_no_duplicates)
    except (OSError, ValueError, RecursionError) as error:
        raise BuildboxError(
            f"{RECORD_FILE} cannot be read ({type(error).__name__}: {error}); {_RESTORE}"
        ) from None
    problems = _violations(document, settings)
    if problems:
        raise InvalidRecordError(problems)
    return [_release(entry) for entry in document["releases"]]


def _release(entry: dict[str, Any]) -> Release:
    """One record entry, already held to the schema (``_violations``)."""
    platforms = {name: PlatformRelease(**facts) for name, facts in entry["platforms"].items()}
    epoch = entry.get("epoch")
    fields = {k: v for k, v in entry.items() if k not in ("platforms", "epoch")}
    # JSON Schema's integer admits 1.0: the record's dataclass holds an int.
    return Release(**fields, platforms=platforms, epoch=None if epoch is None else int(epoch))


_RESTORE = f"restore it from git (`git checkout -- {RECORD_FILE}`)"


class InvalidRecordError(BuildboxError):
    """The record does not hold: each violation, one line naming the release and the field."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(map(str, self.problems)))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object; a key written twice is refused (json keeps the last one, silently)."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"duplicate key {key!r}")
        found[key] = value
    return found


def _violations(document: Any, settings: Settings) -> list[Problem]:
    """Every way ``document`` is not a record a release wrote: the schema's findings, then the
    consistency the schema cannot express, for the fields the schema let through."""
    flagged: dict[FieldPath, str] = {
        path: problem.message for path, problem in yamldoc.validate(document, "record", RECORD_FILE)
    }
    entries = document.get("releases") if isinstance(document, dict) else None
    found = dict(flagged)
    seen: set[tuple[Any, Any]] = set()
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        if not isinstance(entry, dict):
            continue
        key = (entry.get("box"), entry.get("version"))
        if key in seen:
            found.setdefault(("releases", index, "version"), "recorded twice")
        seen.add(key)
        for path, message in _inconsistencies(entry, settings):
            full = ("releases", index, *path)
            if not any(full[: len(f)] == f for f in flagged):  # the schema said it already
                found.setdefault(full, message)
    return sorted(_problem(entries, path, message) for path, message in found.items())


def _problem(entries: Any, path: FieldPath, message: str) -> Problem:
    """``buildbox.lock.json: release <box> v<version>, <field>: <what>; <what to do>``."""
    if path[:1] != ("releases",) or len(path) < 3 or not isinstance(path[1], int):
        return Problem(RECORD_FILE, None, yamldoc.field_name(path), f"{message}; {_RESTORE}")
    entry = entries[path[1]]
    box, version = entry.get("box"), entry.get("version")
    named = isinstance(box, str) and isinstance(version, str)
    which = f"release {box} v{version}" if named else f"releases[{path[1]}]"
    again = f"`invoke release {box}`" if named else "`invoke release`"
    return Problem(
        RECORD_FILE,
        None,
        f"{which}, {yamldoc.field_name(path[2:])}",
        f"{message}; {_RESTORE}, or delete the entry and run {again} again",
    )


def _inconsistencies(entry: dict[str, Any], settings: Settings) -> Iterator[tuple[FieldPath, str]]:
    """What the schema cannot say about one entry: its reference against the configured
    registry and its own fields, a platform at least, each SBOM path inside ``sbom/``."""
    reference, box, version, digest = (
        entry.get(k) for k in ("reference", "box", "version", "digest")
    )
    if isinstance(reference, str):
        problem = _reference_problem(reference, f"{settings.registry}/{box}", f"v{version}", digest)
        if problem:
            yield ("reference",), problem
    platforms = entry.get("platforms")
    if platforms == {}:
        yield ("platforms",), "no platform's image is recorded; a release has at least one"
    for name, facts in platforms.items() if isinstance(platforms, dict) else ():
        where = facts.get("sbom_path") if isinstance(facts, dict) else None
        if isinstance(where, str):
            problem = _sbom_path_problem(settings.root, where)
            if problem:
                yield ("platforms", name, "sbom_path"), problem


def _reference_problem(reference: str, name: str, tag: str, digest: Any) -> str | None:
    """Why ``reference`` is not ``<name>:<tag>@<digest>`` (None when it is)."""
    registry = name.rsplit("/", 1)[0]
    try:
        parsed = Reference.parse(reference)
    except BuildboxError as error:
        return str(error)
    if parsed.name != name:
        return f"names {parsed.name}, not {name} (buildbox.registry: {registry})"
    if parsed.tag != tag:
        return f"its tag is {parsed.tag or 'missing'}, not {tag}"
    if parsed.digest != digest:
        return f"pins {parsed.digest or 'no digest'}, not the recorded digest {digest}"
    return None


def _sbom_path_problem(root: Path, where: str) -> str | None:
    """Why ``where`` is not a file path inside ``sbom/`` (None when it is): no ``..`` or ``.``
    step, and no symbolic link on the way that leads out of it."""
    if any(step in ("", ".", "..") for step in where.split("/")):
        return f"{where} leaves sbom/ (no . or .. steps)"
    # The repository's own sbom/, not where a link named sbom would lead.
    committed = root.resolve() / COMMITTED_DIR
    try:
        resolved = (root / where).resolve()
    except (OSError, RuntimeError) as error:  # a loop of links
        return f"{where} cannot be followed: {error}"
    if not resolved.is_relative_to(committed):
        return f"{where} leaves sbom/ (through a symbolic link)"
    return None


def find(releases: list[Release], box: str, version: str | None = None) -> Release | None:
    """The release of ``box`` at ``version``, or its latest release when no version is given."""
    mine = sorted((r for r in releases if r.box == box), key=_order)
    if version is None:
        return mine[-1] if mine else None
    wanted = version.removeprefix("v")
    return next((r for r in mine if r.version == wanted), None)


def require(settings: Settings, box: str, version: str | None = None) -> Release:
    """The release of ``box`` at ``version`` (default: the latest); an error when there is none."""
    found = find(load(settings), box, version)
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
        releases = load(project.settings)
    except InvalidRecordError as error:
        return list(error.problems)
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
