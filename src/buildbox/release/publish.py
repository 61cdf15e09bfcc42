"""The prepare, describe and publish stages of a box's release, and `invoke publish`, which runs
them on images built earlier.

Each platform's verified image is prepared (its export normalised: ``oci.image``), described
(its SBOM names the digests it is published under), and pushed with the others, the SBOMs as
referrers, the release tag last (``oci.push``). The layers and config come from the engine's
export, so the toolkit decides the manifest, hence the digest.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from buildbox import output
from buildbox.build import labels
from buildbox.build.build import Built, locate
from buildbox.build.engine import Engine
from buildbox.define.boxes import Box
from buildbox.define.project import Project
from buildbox.oci import image
from buildbox.oci.image import PreparedImage
from buildbox.oci.push import (
    PlatformImage,
    Published,
    Pushed,
    PushProgress,
    push,
    push_by_digest,
)
from buildbox.oci.refs import Reference
from buildbox.oci.registry import Registry, RegistryError, open_registry
from buildbox.release import record
from buildbox.sbom import cyclonedx
from buildbox.sbom.cyclonedx import Sbom
from buildbox.sbom.paths import filename
from buildbox.settings import Settings
from buildbox.source import Revision
from buildbox.verify import Report, require_passed, verify


@dataclass(frozen=True)
class Described:
    """One platform of a release, through every stage before the push: the image as built, its
    verify report, its normalised form, and its SBOM."""

    built: Built
    report: Report
    prepared: PreparedImage
    sbom: Sbom


def prepare(
    engine: Engine, built: Built, settings: Settings, epoch: int, log: Callable[[str], None]
) -> PreparedImage:
    """The prepare stage: ``built`` exported and normalised; compressed layers come from the
    cache only when they hash to what the export holds (``oci.image.prepare``)."""
    # A real box's layers take a minute or more to export and compress: say so.
    log(f"preparing {built.platform}: exporting and compressing its layers")
    started = time.monotonic()
    prepared = image.prepare(
        lambda: engine.save(built.image_id), built.image_id, settings.cache_dir, epoch, log=log
    )
    compressed = output.size(sum(layer.size for layer in prepared.layers))
    log(
        f"prepared {built.platform}: {len(prepared.layers)} layers, {compressed} compressed, "
        f"in {time.monotonic() - started:.1f} s"
    )
    return prepared


def publish(
    project: Project,
    box: Box,
    described: list[Described],
    registry: Registry,
    revision: Revision,
    releases: list[record.Release],
    *,
    progress: PushProgress,
) -> Published:
    """The publish stage of ``invoke publish``: every platform's image and SBOM, then the
    development tag ``<box>-dev:<commit>``; blobs other releases on the registry hold are
    mounted, not uploaded. Release tags are written by the release's sign stage only."""
    target = Reference.parse(labels.repository(project.settings.registry, box, dev=True))
    return push(
        registry, target.repository, revision.short, platform_images(box, described),
        revision.timestamp, immutable=False, workers=project.settings.registry_workers,
        mounts=released_blobs(registry, releases, target), progress=progress,
    )  # fmt: skip


def push_release(
    project: Project,
    box: Box,
    described: list[Described],
    registry: Registry,
    revision: Revision,
    releases: list[record.Release],
    *,
    progress: PushProgress,
) -> Pushed:
    """A release's push: every platform's image and SBOM, and the index, by digest; no
    signature, no tag. A release tag that already names other content is refused first."""
    target = Reference.parse(labels.repository(project.settings.registry, box))
    return push_by_digest(
        registry, target.repository, platform_images(box, described), revision.timestamp,
        tag=box.release_tag, workers=project.settings.registry_workers,
        mounts=released_blobs(registry, releases, target), progress=progress,
    )  # fmt: skip


def platform_images(box: Box, described: list[Described]) -> list[PlatformImage]:
    return [
        PlatformImage(d.built.platform, d.prepared, d.sbom.data, filename(box, d.built.platform))
        for d in described
    ]


def publish_box(
    project: Project,
    box: Box,
    *,
    engine: Engine,
    revision: Revision,
    log: Callable[[str], None],
    progress: PushProgress,
) -> Published:
    """`invoke publish`: the box's images built earlier (its local release names), each
    verified, prepared and described, then published under the development tag (an image built
    on a floating base too: it can never be released, as a release builds afresh)."""
    target = Reference.parse(labels.repository(project.settings.registry, box, dev=True))
    built = [locate(engine, project, box, platform, revision) for platform in box.platforms]
    reports = [
        require_passed(verify(engine, project, box, b), "it is not published") for b in built
    ]
    prepared = [prepare(engine, b, project.settings, revision.epoch, log) for b in built]
    described = [
        Described(b, r, p, cyclonedx.describe(engine, project, box, b, r, revision, p, target.name))
        for b, r, p in zip(built, reports, prepared, strict=True)
    ]
    releases = record.load(project.settings)
    with open_registry(target, project.settings) as registry:
        return publish(project, box, described, registry, revision, releases, progress=progress)


def released_blobs(
    registry: Registry, releases: list[record.Release], target: Reference
) -> dict[str, str]:
    """Blobs other repositories of the target registry hold, from the release record: digest ->
    repository, for cross-repository mounts (boxes on one base share its layers)."""
    found: dict[str, str] = {}
    for release in releases:
        where = Reference.parse(release.reference)
        if where.host != target.host or where.repository == target.repository:
            continue
        for facts in release.platforms.values():
            try:
                manifest = registry.get_manifest(where.repository, facts.digest)
            except RegistryError:
                continue  # only an optimisation: an unreadable release is simply not used
            if manifest is None:
                continue
            body = json.loads(manifest[0])
            for blob in [body.get("config", {}), *body.get("layers", [])]:
                if "digest" in blob:
                    found.setdefault(str(blob["digest"]), where.repository)
    return found
