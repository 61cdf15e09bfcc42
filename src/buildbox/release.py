"""Releases: publish verified images with their SBOMs, record them, and audit the record.

A box with several platforms is released as one OCI image index under one immutable tag; each
platform image carries its own SBOM.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from buildbox import publish, record, sbom
from buildbox.boxes import Box
from buildbox.build import LABEL_FLOATING_BASE, LABEL_INPUTS, build_box, local_tags
from buildbox.errors import BuildboxError
from buildbox.fetch import Fetcher
from buildbox.inputs import inputs_digest
from buildbox.packages import inventory
from buildbox.project import Project
from buildbox.refs import is_pinned
from buildbox.registry import Reference, Registry, credentials_for, digest_of
from buildbox.settings import Settings
from buildbox.source import Revision
from buildbox.verify import require_verified

#: Files a release itself writes: their changes do not make the tree dirty for the next release.
RELEASE_OUTPUTS = (record.RECORD_FILE, "sbom/")


def registry_for(reference: Reference) -> Registry:
    return Registry(reference.host, credentials_for(reference.host))


def release_repository(project: Project, box: Box, dev: bool = False) -> Reference:
    """``<registry>/<box>`` for releases, ``<registry>/<box>-dev`` for the mutable dev tags."""
    return Reference.parse(f"{project.settings.registry}/{box.name}{'-dev' if dev else ''}")


@dataclass(frozen=True)
class Outcome:
    published: publish.Published
    #: Per platform, the SBOM text that was attached.
    sboms: dict[str, str]


def prepare_platform(
    project: Project, box: Box, platform: str, *, client: Any, revision: Revision, dev: bool
) -> tuple[publish.PreparedImage, Any, Any]:
    """Verify one platform's local image and export it: (prepared image, image, verify report)."""
    local = local_tags(project.settings.registry, box, platform, revision)[0]
    report = require_verified(client, project, box, local, "it is not published")
    image = client.images.get(local)
    if image.labels.get(LABEL_FLOATING_BASE) == "true" and not dev:
        raise BuildboxError(
            f"{local} was built from a floating base ({box.base}); it can never be released. "
            "Pin the base by digest in box.yaml and build again."
        )
    prepared = publish.prepare(client, image.id, project.settings.cache_dir, revision.epoch)
    return prepared, image, report


def publish_box(
    project: Project, box: Box, *, client: Any, revision: Revision, dev: bool = False
) -> Outcome:
    """Verify every platform's local image, then push them, their SBOMs and the tag."""
    target = release_repository(project, box, dev)
    images, texts = [], {}
    for platform in box.platforms:
        prepared, image, report = prepare_platform(
            project, box, platform, client=client, revision=revision, dev=dev
        )
        facts = sbom.ImageFacts(
            # The normalised config's digest: the same for every build of these inputs.
            image_id=digest_of(prepared.config),
            platform=platform,
            inputs_digest=image.labels.get(LABEL_INPUTS, ""),
            repository=target.name,
            digest=prepared.digest,
        )
        bom = sbom.build_bom(project, box, facts, report, inventory(client, image.id), revision)
        texts[platform] = sbom.render(bom)
        title = sbom.sbom_path(project, box, platform).name
        images.append(publish.PlatformImage(platform, prepared, texts[platform].encode(), title))
    if dev:
        commit = revision.commit[:12] if revision.commit else "local"
        tag = f"{commit}-dirty" if revision.dirty else commit
    else:
        tag = box.release_tag
    registry = registry_for(target)
    try:
        published = publish.publish(
            registry, target.repository, tag, images, revision.timestamp, immutable=not dev
        )
    finally:
        registry.close()
    return Outcome(published, texts)


def release_box(
    project: Project,
    box: Box,
    *,
    client: Any,
    fetcher: Fetcher,
    revision: Revision,
    log: Callable[[str], None] = print,
) -> tuple[record.Release, bool]:
    """The one push-button: build, verify, SBOM, publish, record. (release, whether new)."""
    releases = record.load(project.settings.root)
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
    if not is_pinned(box.base):
        raise BuildboxError(f"the base of {box.name} is not pinned by digest: {box.base}")
    for platform in box.platforms:
        # From scratch: a layer reused from an older build would carry that build's file times,
        # which normalisation keeps (they are older than the commit), so the digest would depend
        # on the engine's cache. Built anew, every build-time file is clamped to the commit time.
        build_box(
            project, box, platform, client=client, fetcher=fetcher, revision=revision, log=log,
            no_cache=True,
        )  # fmt: skip
    outcome = publish_box(project, box, client=client, revision=revision)
    platforms = {}
    for platform, text in outcome.sboms.items():
        path = sbom.sbom_path(project, box, platform)
        sbom.write(path, text)
        platforms[platform] = record.PlatformRelease(
            digest=outcome.published.platforms[platform][0],
            sbom_path=path.relative_to(project.settings.root).as_posix(),
            sbom_digest="sha256:" + hashlib.sha256(text.encode()).hexdigest(),
        )
    release = record.Release(
        box=box.name,
        version=box.version,
        reference=outcome.published.reference,
        digest=outcome.published.digest,
        inputs_digest=digest,
        revision=revision.label,
        platforms=platforms,
    )
    record.add(project.settings.root, release)
    return release, True


def audit_release(settings: Settings, release: record.Release) -> list[str]:
    """What no longer holds for a recorded release (empty when everything does)."""
    problems = []
    reference = Reference.parse(release.reference)
    registry = registry_for(reference)
    try:
        now = registry.manifest_digest(reference.repository, reference.tag or release.tag)
        if now != release.digest:
            problems.append(
                f"{reference.name}:{reference.tag} points at {now or 'nothing'}, "
                f"recorded {release.digest}"
            )
        for platform, facts in sorted(release.platforms.items()):
            problems += _audit_platform(settings, registry, reference, platform, facts)
    finally:
        registry.close()
    return problems


def _audit_platform(
    settings: Settings,
    registry: Registry,
    reference: Reference,
    platform: str,
    facts: record.PlatformRelease,
) -> list[str]:
    problems = []
    sbom_file = settings.root / facts.sbom_path
    committed = sbom_file.read_bytes() if sbom_file.is_file() else None
    if committed is None:
        problems.append(f"the committed SBOM {facts.sbom_path} is missing")
    elif "sha256:" + hashlib.sha256(committed).hexdigest() != facts.sbom_digest:
        problems.append(f"{facts.sbom_path} differs from the recorded sha256")
    else:
        try:
            sbom.validate(committed.decode())
        except BuildboxError as error:
            problems.append(f"{facts.sbom_path}: {error}")
    attached = publish.find_sbom(registry, reference.repository, facts.digest)
    if attached is None:
        problems.append(f"no SBOM is attached to the {platform} image {facts.digest}")
    elif committed is not None and attached != committed:
        problems.append(f"the SBOM attached to the {platform} image differs from {facts.sbom_path}")
    return problems
