"""`invoke release`: the one push-button, a pipeline of values from the box to its record.

build → verify → prepare → describe → publish → record: each stage takes what the one before
returned and looks nothing up again. A box with several platforms is released as one OCI image
index under one immutable tag; each platform image carries its own SBOM. The SBOM names the
image by the digest it is published under, which exists once the image is prepared: so
describe comes after prepare.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from buildbox.build import labels
from buildbox.build.build import build_box
from buildbox.build.engine import Engine
from buildbox.define.boxes import Box
from buildbox.define.inputs import inputs_digest
from buildbox.define.project import Project
from buildbox.digests import digest_of
from buildbox.errors import BuildboxError
from buildbox.fetch import Fetcher
from buildbox.oci.push import Published, PushProgress
from buildbox.oci.refs import Reference
from buildbox.oci.registry import Registry, open_registry
from buildbox.release import record, signing
from buildbox.release.audit import audit_release
from buildbox.release.publish import Described, prepare, publish
from buildbox.sbom import cyclonedx
from buildbox.sbom.paths import COMMITTED_DIR
from buildbox.source import Revision
from buildbox.verify import Report, require_passed, verify

#: Files a release itself writes: their changes do not make the tree dirty for the next release.
RELEASE_OUTPUTS = (record.RECORD_FILE, f"{COMMITTED_DIR}/")


@dataclass(frozen=True)
class Released:
    release: record.Release
    #: False when the version was already released (and still complete): nothing was done.
    new: bool
    #: The verify report of each platform image (none when nothing was built).
    reports: tuple[Report, ...] = ()


def release_box(
    project: Project,
    box: Box,
    *,
    engine: Engine,
    fetcher: Fetcher,
    revision: Revision,
    log: Callable[[str], None],
    progress: PushProgress,
) -> Released:
    """Build, verify, prepare, describe, publish and record the box's current version."""
    settings = project.settings
    releases = record.load(settings.root)
    signing.signing_key(settings)  # a key that is not there fails now, not after building
    digest = inputs_digest(box, project.library, settings)
    target = Reference.parse(labels.repository(settings.registry, box))
    with open_registry(target, settings) as registry:
        existing = record.find(releases, box.name, box.version)
        if existing is not None:
            problems = already_released(project, box, existing, digest, releases, registry)
            if not problems:
                return Released(existing, new=False)
            log(
                f"{existing.reference} is recorded but incomplete ({'; '.join(problems)}); "
                "completing"
            )
        revision = releasable(box, revision)
        # From scratch: a layer reused from an older build would carry that build's file
        # times, which normalisation keeps (they are older than the commit), so the digest
        # would depend on the engine's cache. Built anew, every file is clamped to the commit.
        built = [
            build_box(project, box, platform, engine=engine, fetcher=fetcher, revision=revision,
                      log=log, no_cache=True)
            for platform in box.platforms
        ]  # fmt: skip
        reports = [
            require_passed(verify(engine, project, box, b), "it is not released") for b in built
        ]
        prepared = [prepare(engine, b, settings, revision.epoch, log) for b in built]
        described = [
            Described(
                b, r, p, cyclonedx.describe(engine, project, box, b, r, revision, p, target.name)
            )
            for b, r, p in zip(built, reports, prepared, strict=True)
        ]
        sboms = {d.built.platform: d.sbom.text for d in described}
        published = publish(
            project, box, described, registry, revision, releases,
            sign=signing.signer(project, box, revision, digest, sboms), progress=progress,
        )  # fmt: skip
    release = record_release(project, box, described, published, digest, revision, releases)
    return Released(release, new=True, reports=tuple(reports))


def already_released(
    project: Project,
    box: Box,
    existing: record.Release,
    digest: str,
    releases: list[record.Release],
    registry: Registry,
) -> list[str]:
    """What is missing of a recorded release of this version (nothing: it is complete); an
    error when it was released with other inputs (a release is immutable)."""
    if existing.inputs_digest != digest:
        raise BuildboxError(
            f"{box.name} {box.release_tag} was already released with other inputs "
            f"({existing.inputs_digest}; now {digest}). A release is immutable: set "
            f"`version: {record.next_version(releases, box.name)}` in "
            f"buildboxes/{box.name}/box.yaml."
        )
    return audit_release(project.settings, registry, existing)


def releasable(box: Box, revision: Revision) -> Revision:
    """The revision to release from: a clean commit (the release's own outputs aside), the box's
    base pinned; an error otherwise."""
    changed = [p for p in revision.changed if not p.startswith(RELEASE_OUTPUTS)]
    if revision.commit is None:
        raise BuildboxError("a release is built from a git commit; this is not a git checkout")
    if changed:
        raise BuildboxError(
            "the git tree has uncommitted changes; a release is built from a commit only: "
            + ", ".join(changed[:10])
        )
    if not box.pinned:
        raise BuildboxError(f"the base of {box.name} is not pinned by digest: {box.base}")
    # The release's own outputs (the record, sbom/) do not make the build dirty: completing a
    # recorded release must label the image exactly as the first attempt did.
    return dataclasses.replace(revision, dirty=False, changed=())


def record_release(
    project: Project,
    box: Box,
    described: list[Described],
    published: Published,
    digest: str,
    revision: Revision,
    releases: list[record.Release],
) -> record.Release:
    """The record stage: the SBOMs committed under sbom/, the release in the record."""
    root = project.settings.root
    platforms = {}
    for each in described:
        platform = each.built.platform
        path = record.committed_sbom(root, box, platform)
        cyclonedx.write(path, each.sbom)
        platforms[platform] = record.PlatformRelease(
            digest=published.platforms[platform][0],
            sbom_path=project.settings.shown(path),
            sbom_digest=digest_of(each.sbom.data),
        )
    release = record.Release(
        box=box.name,
        version=box.version,
        reference=published.reference,
        digest=published.digest,
        inputs_digest=digest,
        revision=revision.label,
        platforms=platforms,
        epoch=revision.epoch,
    )
    record.add(root, releases, release)
    return release


def unreleased(project: Project) -> list[dict[str, str]]:
    """Each box and platform whose current version is not released yet (a CI job matrix)."""
    releases = record.load(project.settings.root)
    return [
        {"box": box.name, "version": box.version, "platform": platform}
        for box in project.boxes
        if record.find(releases, box.name, box.version) is None
        for platform in box.platforms
    ]
