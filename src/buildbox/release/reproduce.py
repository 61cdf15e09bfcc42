"""`invoke reproduce`: rebuild a recorded release from its recorded source and compare.

The release's commit is exported from git into a scratch directory, every platform is built again
with no layer cache (a bootstrapped base is bootstrapped again from its locked packages), at the
epoch the release recorded (SOURCE_DATE_EPOCH or the commit's time),
normalised as publishing does, and compared with the release record and with the registry's tag.

Two verdicts count as reproduced: the same digests (bit for bit), or the same content with other
compression. The gzip bytes of a layer depend on the machine's zlib (Debian's zlib and Fedora's
zlib-ng differ at the same level) and on how the toolkit cuts it into blocks, while the image
config names every layer by the digest of its uncompressed tar: equal configs mean equal files,
metadata and image settings. Anything else is compared layer by layer, file by file (path, size,
time, mode, content).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from buildbox.build.build import build_box
from buildbox.build.engine import Engine
from buildbox.define import project as project_stage
from buildbox.digests import digest_of, sha256_hex
from buildbox.errors import BuildboxError
from buildbox.fetch import Fetcher
from buildbox.oci import documents
from buildbox.oci.image import PreparedImage
from buildbox.oci.refs import Reference
from buildbox.oci.registry import Registry
from buildbox.release import record
from buildbox.release.publish import prepare
from buildbox.settings import Settings
from buildbox.source import Revision, commit_time, export_tree

_MAX_FILES = 20

IDENTICAL = "identical"
SAME_CONTENT = "same content, other compression"
DIFFERENT = "different"


@dataclass(frozen=True)
class PlatformVerdict:
    platform: str
    recorded: str
    rebuilt: str
    verdict: str  # IDENTICAL, SAME_CONTENT or DIFFERENT
    #: What differs, as lines a person can read (empty unless DIFFERENT).
    differences: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    box: str
    version: str
    recorded: str
    in_registry: str | None
    rebuilt: str
    #: The epoch the rebuild used (the recorded one, else the commit's time).
    epoch: int
    platforms: tuple[PlatformVerdict, ...]
    #: The box builds with the network (OS packages): it is not expected to reproduce.
    networked: bool

    @property
    def bit_for_bit(self) -> bool:
        return self.rebuilt == self.recorded and self.in_registry == self.recorded

    @property
    def reproducible(self) -> bool:
        """Bit for bit, or every platform's content the same (only compression differs)."""
        return self.in_registry == self.recorded and all(
            p.verdict in (IDENTICAL, SAME_CONTENT) for p in self.platforms
        )

    @property
    def differences(self) -> tuple[str, ...]:
        return tuple(f"{p.platform}: {line}" for p in self.platforms for line in p.differences)


def judge(recorded: str, recorded_config: str | None, rebuilt: PreparedImage) -> str:
    """The verdict for one platform: the recorded manifest digest and config digest (when known)
    against the rebuilt image."""
    if rebuilt.digest == recorded:
        return IDENTICAL
    if recorded_config is not None and recorded_config == rebuilt.config_digest:
        return SAME_CONTENT
    return DIFFERENT


def reproduce(
    settings: Settings,
    release: record.Release,
    *,
    engine: Engine,
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
    epoch = release.epoch if release.epoch is not None else commit_time(settings.root, commit)
    with tempfile.TemporaryDirectory(prefix="buildbox-reproduce-") as scratch:
        tree = Path(scratch) / "source"
        export_tree(settings.root, commit, tree)
        project = project_stage.load(dataclasses.replace(settings, root=tree), box=release.box)
        box = project.box(release.box)
        if box.version != release.version:
            raise BuildboxError(
                f"commit {commit} has {box.name} at version {box.version}, not {release.version}"
            )
        revision = Revision(commit=commit, dirty=False, epoch=epoch)
        rebuilt: list[tuple[str, PreparedImage]] = []
        for platform in box.platforms:
            log(f"rebuilding {box.name} {box.release_tag} ({platform}) from {commit[:12]}")
            built = build_box(
                project, box, platform, engine=engine, fetcher=fetcher, revision=revision,
                log=lambda line: None, no_cache=True, fresh_base=True,
            )  # fmt: skip
            rebuilt.append((platform, prepare(engine, built, project.settings, epoch, log)))
        networked = box.network
    if len(rebuilt) > 1:
        top = documents.index_manifest([(p, image.descriptor) for p, image in rebuilt])
    else:
        top = rebuilt[0][1].manifest
    repository = Reference.parse(release.reference).repository
    verdicts = tuple(
        _compare(registry, repository, platform, release, image) for platform, image in rebuilt
    )
    return Outcome(
        box=release.box,
        version=release.version,
        recorded=release.digest,
        in_registry=registry.manifest_digest(repository, release.tag),
        rebuilt=digest_of(top),
        epoch=epoch,
        platforms=verdicts,
        networked=networked,
    )


def _compare(
    registry: Registry,
    repository: str,
    platform: str,
    release: record.Release,
    rebuilt: PreparedImage,
) -> PlatformVerdict:
    facts = release.platforms.get(platform)
    recorded = facts.digest if facts else ""
    if rebuilt.digest == recorded:
        return PlatformVerdict(platform, recorded, rebuilt.digest, IDENTICAL)
    found = registry.get_manifest(repository, recorded) if recorded else None
    if found is None:
        missing = f"the registry no longer has the recorded image {recorded or '(none recorded)'}"
        return PlatformVerdict(platform, recorded, rebuilt.digest, DIFFERENT, (missing,))
    manifest = json.loads(found[0])
    verdict = judge(recorded, manifest["config"]["digest"], rebuilt)
    lines = () if verdict != DIFFERENT else tuple(explain(registry, repository, manifest, rebuilt))
    return PlatformVerdict(platform, recorded, rebuilt.digest, verdict, lines)


def explain(
    registry: Registry, repository: str, manifest: dict[str, object], rebuilt: PreparedImage
) -> list[str]:
    """Which parts of the rebuilt image differ from the published one, down to files."""
    lines = []
    config_descriptor = manifest["config"]
    assert isinstance(config_descriptor, dict)
    config = registry.get_blob(repository, config_descriptor["digest"])
    if config != rebuilt.config:
        before, after = json.loads(config), json.loads(rebuilt.config)
        keys = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        lines.append(f"image config differs in: {', '.join(keys)}")
    published = manifest.get("layers", [])
    assert isinstance(published, list)
    if len(published) != len(rebuilt.layers):
        lines.append(f"{len(published)} layers published, {len(rebuilt.layers)} rebuilt")
    for number, (old, new) in enumerate(zip(published, rebuilt.layers, strict=False), start=1):
        if old["digest"] == new.digest:
            continue
        lines.append(f"layer {number} differs ({old['digest']} -> {new.digest}):")
        before_files = _files(gzip.decompress(registry.get_blob(repository, old["digest"])))
        after_files = _files(gzip.decompress(new.path.read_bytes()))
        changed = [
            _describe(path, before_files.get(path), after_files.get(path))
            for path in sorted(before_files.keys() | after_files.keys())
            if before_files.get(path) != after_files.get(path)
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
            digest = sha256_hex(content.read()) if content else member.linkname
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
