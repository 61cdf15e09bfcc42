"""`invoke release`: the one push-button. Build, verify, SBOM, publish and record a box version.

A box with several platforms is released as one OCI image index under one immutable tag; each
platform image carries its own SBOM.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from buildbox.build.build import build_box
from buildbox.build.engine import Engine
from buildbox.define.boxes import Box
from buildbox.define.inputs import inputs_digest
from buildbox.define.project import Project
from buildbox.digests import digest_of
from buildbox.errors import BuildboxError
from buildbox.fetch import Fetcher
from buildbox.release import record, signing
from buildbox.release.audit import audit_release
from buildbox.release.publish import Progress, publish_box
from buildbox.sbom import cyclonedx
from buildbox.sbom.naming import COMMITTED_DIR
from buildbox.source import Revision

#: Files a release itself writes: their changes do not make the tree dirty for the next release.
RELEASE_OUTPUTS = (record.RECORD_FILE, f"{COMMITTED_DIR}/")


def release_box(
    project: Project,
    box: Box,
    *,
    engine: Engine,
    fetcher: Fetcher,
    revision: Revision,
    log: Callable[[str], None] = print,
    progress: Progress | None = None,
) -> tuple[record.Release, bool]:
    """The one push-button: build, verify, SBOM, publish, record. (release, whether new)."""
    releases = record.load(project.settings.root)
    signing.signing_key(project.settings)  # a key that is not there fails now, not after building
    digest = inputs_digest(box, project.library, project.settings)
    existing = record.find(releases, box.name, box.version)
    if existing is not None:
        if existing.inputs_digest != digest:
            raise BuildboxError(
                f"{box.name} {box.release_tag} was already released with other inputs "
                f"({existing.inputs_digest}; now {digest}). A release is immutable: set "
                f"`version: {record.next_version(releases, box.name)}` in "
                f"buildboxes/{box.name}/box.yaml."
            )
        problems = audit_release(project.settings, existing)
        if not problems:
            return existing, False
        log(f"{existing.reference} is recorded but incomplete ({'; '.join(problems)}); completing")
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
    revision = dataclasses.replace(revision, dirty=False, changed=())
    for platform in box.platforms:
        # From scratch: a layer reused from an older build would carry that build's file times,
        # which normalisation keeps (they are older than the commit), so the digest would depend
        # on the engine's cache. Built anew, every build-time file is clamped to the commit time.
        build_box(
            project, box, platform, engine=engine, fetcher=fetcher, revision=revision, log=log,
            no_cache=True,
        )  # fmt: skip
    outcome = publish_box(
        project, box, engine=engine, revision=revision,
        signer=lambda sboms: signing.signer(project, box, revision, digest, sboms), log=log,
        progress=progress,
    )  # fmt: skip
    platforms = {}
    for platform, text in outcome.sboms.items():
        path = record.committed_sbom(project.settings.root, box, platform)
        cyclonedx.write(path, text)
        platforms[platform] = record.PlatformRelease(
            digest=outcome.published.platforms[platform][0],
            sbom_path=project.settings.shown(path),
            sbom_digest=digest_of(text.encode()),
        )
    release = record.Release(
        box=box.name,
        version=box.version,
        reference=outcome.published.reference,
        digest=outcome.published.digest,
        inputs_digest=digest,
        revision=revision.label,
        platforms=platforms,
        epoch=revision.epoch,
    )
    record.add(project.settings.root, release)
    return release, True


def unreleased(project: Project) -> list[dict[str, str]]:
    """Each box and platform whose current version is not released yet (a CI job matrix)."""
    releases = record.load(project.settings.root)
    return [
        {"box": box.name, "version": box.version, "platform": platform}
        for box in project.boxes
        if record.find(releases, box.name, box.version) is None
        for platform in box.platforms
    ]
