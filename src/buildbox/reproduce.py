"""`invoke reproduce`: rebuild a recorded release from its recorded source and compare digests.

The release's commit is exported from git into a scratch directory, every platform is built again
with no layer cache, normalised as publishing does, and the resulting digest is compared with the
release record and with the registry's tag. Where they differ, the layers are compared file by
file (path, size, time, mode, content), so that the cause can be found.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildbox import project as project_stage
from buildbox import publish, record
from buildbox.build import build_box
from buildbox.errors import BuildboxError
from buildbox.fetch import Fetcher
from buildbox.registry import Reference, Registry, digest_of
from buildbox.settings import Settings
from buildbox.source import Revision

_MAX_FILES = 20


@dataclass(frozen=True)
class Outcome:
    box: str
    version: str
    recorded: str
    in_registry: str | None
    rebuilt: str
    #: Per platform: (recorded image digest, rebuilt image digest).
    platforms: dict[str, tuple[str, str]]
    #: What differs, as lines a person can read (empty when everything matches).
    differences: tuple[str, ...]
    #: The box builds with the network (OS packages): it is not expected to reproduce.
    networked: bool

    @property
    def reproducible(self) -> bool:
        return self.rebuilt == self.recorded and self.in_registry == self.recorded


def checkout(root: Path, commit: str, into: Path) -> None:
    """The tree of ``commit`` (from the git repository at ``root``) written to ``into``."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(root), "archive", "--format=tar", commit],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", b"") or b""
        raise BuildboxError(
            f"cannot read commit {commit} from git: {detail.decode(errors='replace').strip()}"
        ) from None
    with tarfile.open(fileobj=io.BytesIO(archive)) as tree:
        tree.extractall(into, filter="data")


def commit_time(root: Path, commit: str) -> int:
    found = subprocess.run(
        ["git", "-C", str(root), "log", "-1", "--format=%ct", commit],
        capture_output=True,
        text=True,
        check=False,
    )
    return int(found.stdout.strip() or 0)


def reproduce(
    settings: Settings,
    release: record.Release,
    *,
    client: Any,
    fetcher: Fetcher,
    registry: Registry,
    log: Callable[[str], None] = print,
) -> Outcome:
    commit = release.revision
    if commit in ("unknown", "") or commit.endswith("-dirty"):
        raise BuildboxError(
            f"{release.box} {release.tag} was released from {commit!r}, not a commit: it cannot "
            "be rebuilt from its recorded source"
        )
    with tempfile.TemporaryDirectory(prefix="buildbox-reproduce-") as scratch:
        tree = Path(scratch) / "source"
        checkout(settings.root, commit, tree)
        source = dataclasses.replace(settings, root=tree)
        project = project_stage.load(source)
        box = project.box(release.box)
        if box.version != release.version:
            raise BuildboxError(
                f"commit {commit} has {box.name} at version {box.version}, not {release.version}"
            )
        revision = Revision(commit=commit, dirty=False, epoch=commit_time(settings.root, commit))
        rebuilt: list[tuple[str, publish.PreparedImage]] = []
        for platform in box.platforms:
            log(f"rebuilding {box.name} {box.release_tag} ({platform}) from {commit[:12]}")
            result = build_box(
                project, box, platform, client=client, fetcher=fetcher, revision=revision,
                log=lambda line: None, no_cache=True,
            )  # fmt: skip
            prepared = publish.prepare(client, result.image_id, settings.cache_dir, revision.epoch)
            rebuilt.append((platform, prepared))
        networked = box.network
    top = publish.index_manifest(rebuilt) if len(rebuilt) > 1 else rebuilt[0][1].manifest
    reference = Reference.parse(release.reference)
    in_registry = registry.manifest_digest(reference.repository, release.tag)
    platforms = {
        platform: (release.platforms[platform].digest if platform in release.platforms else "",
                   prepared.digest)
        for platform, prepared in rebuilt
    }  # fmt: skip
    differences: list[str] = []
    for platform, prepared in rebuilt:
        recorded = platforms[platform][0]
        if recorded != prepared.digest:
            differences += [
                f"{platform}: {line}"
                for line in explain(registry, reference.repository, recorded, prepared)
            ]
    return Outcome(
        box=release.box,
        version=release.version,
        recorded=release.digest,
        in_registry=in_registry,
        rebuilt=digest_of(top),
        platforms=platforms,
        differences=tuple(differences),
        networked=networked,
    )


def explain(
    registry: Registry, repository: str, recorded: str, rebuilt: publish.PreparedImage
) -> list[str]:
    """Which parts of the rebuilt image differ from the published one, down to files."""
    found = registry.get_manifest(repository, recorded)
    if found is None:
        return [f"the registry no longer has the recorded image {recorded}"]
    manifest = json.loads(found[0])
    lines = []
    config = registry.get_blob(repository, manifest["config"]["digest"])
    if config != rebuilt.config:
        before, after = json.loads(config), json.loads(rebuilt.config)
        keys = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        lines.append(f"image config differs in: {', '.join(keys)}")
    published = manifest.get("layers", [])
    if len(published) != len(rebuilt.layers):
        lines.append(f"{len(published)} layers published, {len(rebuilt.layers)} rebuilt")
    for number, (old, new) in enumerate(zip(published, rebuilt.layers, strict=False), start=1):
        if old["digest"] == new.digest:
            continue
        lines.append(f"layer {number} differs ({old['digest']} -> {new.digest}):")
        before = _files(gzip.decompress(registry.get_blob(repository, old["digest"])))
        after = _files(gzip.decompress(new.path.read_bytes()))
        changed = [
            _describe(path, before.get(path), after.get(path))
            for path in sorted(before.keys() | after.keys())
            if before.get(path) != after.get(path)
        ]
        lines += [f"  {line}" for line in changed[:_MAX_FILES]]
        if len(changed) > _MAX_FILES:
            lines.append(f"  ... and {len(changed) - _MAX_FILES} more files")
        if not changed:
            lines.append("  (same files and metadata; the tar encoding differs)")
    return lines


FileFacts = tuple[int, int, str, str]  # size, mtime, mode, content sha256


def _files(layer: bytes) -> dict[str, FileFacts]:
    facts = {}
    with tarfile.open(fileobj=io.BytesIO(layer)) as archive:
        for member in archive.getmembers():
            content = archive.extractfile(member) if member.isfile() else None
            digest = hashlib.sha256(content.read()).hexdigest() if content else member.linkname
            facts["/" + member.name.lstrip("./")] = (
                member.size, int(member.mtime), oct(member.mode), digest,
            )  # fmt: skip
    return facts


def _describe(path: str, old: FileFacts | None, new: FileFacts | None) -> str:
    if old is None:
        return f"{path}: only in the rebuild"
    if new is None:
        return f"{path}: only in the published image"
    parts = []
    for name, a, b in zip(("size", "time", "mode", "content"), old, new, strict=True):
        if a != b:
            shown = (str(a)[:12], str(b)[:12]) if name == "content" else (a, b)
            parts.append(f"{name} {shown[0]} -> {shown[1]}")
    return f"{path}: {', '.join(parts)}"
