"""Publish verified images and their SBOMs together, the immutable tag last.

The layers and config come from the engine's export, normalised (``oci.image``), and are pushed by
our own client, so the toolkit decides the manifest, hence the digest, and the order: blobs, then
the image manifest by digest, then the SBOM as an OCI 1.1 artifact whose subject is the image,
then (where the registry has no referrers API) the fallback referrers index, and the release tag
last. A publish that dies halfway leaves no release tag; running it again skips the blobs
already there.

Tags in registries such as the CNCF distribution registry are not immutable, and HEAD-then-PUT is
a race: the tag is checked before anything is pushed, and read back after it is written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from buildbox import local_registry, output
from buildbox.build import labels as naming
from buildbox.build.engine import Engine
from buildbox.define.boxes import Box
from buildbox.define.project import Project
from buildbox.digests import digest_of
from buildbox.errors import BuildboxError
from buildbox.oci import documents
from buildbox.oci.documents import EMPTY_JSON, OCI_INDEX, OCI_MANIFEST, SBOM_TYPE, Descriptor
from buildbox.oci.image import PreparedImage, prepare
from buildbox.oci.refs import Reference
from buildbox.oci.registry import Registry, RegistryError, open_registry
from buildbox.release import record
from buildbox.sbom import cyclonedx
from buildbox.sbom.naming import filename
from buildbox.sbom.packages import inventory
from buildbox.source import Revision
from buildbox.verify import require_verified


@dataclass(frozen=True)
class PlatformImage:
    """One platform's image, ready to push, with its SBOM."""

    platform: str
    image: PreparedImage
    sbom: bytes
    sbom_title: str


@dataclass(frozen=True)
class Published:
    repository: str  # host/repository
    tag: str
    #: What the tag names: the image manifest for one platform, the OCI index for several.
    digest: str
    #: Per platform: (image manifest digest, SBOM artifact digest).
    platforms: dict[str, tuple[str, str]]
    #: False when the tag already named this very content (nothing new was tagged).
    tagged_now: bool

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}@{self.digest}"


def top_manifest(images: list[PlatformImage]) -> tuple[bytes, str]:
    """What the tag will name: the image itself for one platform, an index for several."""
    if len(images) == 1:
        return images[0].image.manifest, OCI_MANIFEST
    pairs = [(entry.platform, entry.image.descriptor) for entry in images]
    return documents.index_manifest(pairs), OCI_INDEX


def tag_state(where: str, existing: str | None, digest: str) -> bool:
    """Whether the tag at ``where`` already names ``digest`` (False: absent); refuse otherwise."""
    if existing is None:
        return False
    if existing != digest:
        raise BuildboxError(
            f"{where} already points at {existing}; this release is {digest}. A released version "
            "is immutable: bump the box's version to publish new content. The registry was not "
            "changed."
        )
    return True


#: What a registry answers to a manifest whose blobs it does not have (yet, or any more).
BLOBS_MISSING = frozenset({"BLOB_UNKNOWN", "MANIFEST_BLOB_UNKNOWN"})
#: Told (blob digest, bytes sent, its size) as an upload goes: output.UploadLog.sent.
Progress = Callable[[str, int, int], None]


def push_blobs(
    registry: Registry,
    repository: str,
    blobs: list[tuple[str, Path | bytes]],
    *,
    workers: int = 4,
    mounts: Mapping[str, str] | None = None,
    log: Callable[[str], None] | None = None,
    progress: Progress | None = None,
) -> None:
    """Each blob the registry lacks: mounted from another repository of the registry that has
    it (``mounts``: digest -> repository), else uploaded; ``workers`` at once. ``log`` gets a
    line per blob mounted or uploaded (size, time, rate), ``progress`` the bytes as they go."""

    def one(digest: str, source: Path | bytes) -> None:
        origin = (mounts or {}).get(digest)
        missing = origin is not None and not registry.has_blob(repository, digest)
        if missing and origin is not None and registry.mount_blob(repository, digest, origin):
            if log:
                log(f"mounted {digest[:19]} from {origin}")
            return
        started = time.monotonic()
        count = len(source) if isinstance(source, bytes) else source.stat().st_size
        sent = (lambda done: progress(digest, done, count)) if progress else None
        try:
            uploaded = registry.upload_blob(repository, digest, source, sent)
        finally:
            if progress:  # no longer in flight, whatever happened
                progress(digest, count, count)
        if uploaded and log:
            seconds = max(time.monotonic() - started, 1e-3)
            log(
                f"uploaded {digest[:19]} ({output.size(count)}) in {seconds:.1f} s "
                f"({output.size(int(count / seconds))}/s)"
            )

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(one, digest, source) for digest, source in blobs]:
            future.result()


def push_image(
    registry: Registry,
    repository: str,
    image: PreparedImage,
    *,
    workers: int = 4,
    mounts: Mapping[str, str] | None = None,
    log: Callable[[str], None] | None = None,
    progress: Progress | None = None,
) -> None:
    """Blobs first (skipping those the registry has), then the manifest by digest.

    A manifest refused for a missing blob (another release of the same content may be between
    its upload and its commit, or a registry lost one) makes the blobs be checked and uploaded
    again, then the manifest is sent again.
    """
    blobs: list[tuple[str, Path | bytes]] = [(digest_of(image.config), image.config)]
    blobs += [(layer.digest, layer.path) for layer in image.layers]
    for attempt in range(3):
        push_blobs(
            registry, repository, blobs, workers=workers, mounts=mounts, log=log,
            progress=progress,
        )  # fmt: skip
        try:
            registry.put_manifest(repository, image.digest, image.manifest, OCI_MANIFEST)
            return
        except RegistryError as error:
            if not error.codes & BLOBS_MISSING or attempt == 2:
                raise


def attach_sbom(
    registry: Registry, repository: str, subject: Descriptor, sbom: bytes, title: str, created: str
) -> str:
    """Push the SBOM artifact (and the fallback referrers index if needed); its digest."""
    registry.upload_blob(repository, digest_of(EMPTY_JSON), EMPTY_JSON)
    registry.upload_blob(repository, digest_of(sbom), sbom)
    manifest = documents.sbom_manifest(subject, sbom, title, created)
    response = registry.put_manifest(repository, digest_of(manifest), manifest, OCI_MANIFEST)
    if "OCI-Subject" not in response.headers:
        # No referrers API: keep the index tagged sha256-<subject hex>, as the spec requires.
        update_fallback_index(
            registry, repository, subject.digest, Descriptor.of(OCI_MANIFEST, manifest), SBOM_TYPE
        )
    return digest_of(manifest)


def update_fallback_index(
    registry: Registry, repository: str, subject: str, entry: Descriptor, artifact_type: str
) -> None:
    """Add ``entry`` to the fallback referrers index of ``subject``: read, merge, write, and
    read back, again while another writer's index replaced ours (they must not lose entries).

    Registries have no conditional PUT, so two writers can still interleave between a read and
    a write; the read-back makes the loser merge and write again, which closes all but a
    window as short as one round trip.
    """
    tag = documents.fallback_tag(subject)
    for _ in range(5):
        existing = registry.get_manifest(repository, tag)
        index = documents.with_referrer(existing[0] if existing else None, entry, artifact_type)
        registry.put_manifest(repository, tag, index, OCI_INDEX)
        now = registry.get_manifest(repository, tag)
        if now is not None and entry.digest in documents.referrers_of_type(
            json.loads(now[0]), artifact_type
        ):
            return
    raise RegistryError(
        f"the fallback referrers index {registry.host}/{repository}:{tag} kept changing under "
        "this publish; run it again"
    )


def find_sbom(registry: Registry, repository: str, subject: str) -> bytes | None:
    """The SBOM attached to ``subject``: through the referrers API, else the fallback index."""
    index = registry.referrers(repository, subject)
    if index is None:
        found = registry.get_manifest(repository, documents.fallback_tag(subject))
        index = json.loads(found[0]) if found else {"manifests": []}
    for digest in documents.referrers_of_type(index, SBOM_TYPE):
        manifest = registry.get_manifest(repository, digest)
        blob = documents.sbom_layer(manifest[0], subject) if manifest else None
        if blob is not None:
            return registry.get_blob(repository, blob)
    return None


def publish(
    registry: Registry,
    repository: str,
    tag: str,
    images: list[PlatformImage],
    created: str,
    *,
    immutable: bool = True,
    sign: Callable[[str, str, dict[str, str]], None] | None = None,
    workers: int = 4,
    mounts: Mapping[str, str] | None = None,
    log: Callable[[str], None] | None = None,
    progress: Progress | None = None,
) -> Published:
    """Push every platform image and its SBOM, the index if several, then the tag; re-read it.

    ``sign`` (host/repository, the tag's digest, each platform's image digest) runs after
    everything is pushed and before the tag is written, so a tag never names unsigned content.
    """
    top, media_type = top_manifest(images)
    digest = digest_of(top)
    where = f"{registry.host}/{repository}:{tag}"
    existing = registry.manifest_digest(repository, tag) if immutable else None
    already = tag_state(where, existing, digest)
    platforms = {}
    for entry in images:
        push_image(
            registry, repository, entry.image, workers=workers, mounts=mounts, log=log,
            progress=progress,
        )  # fmt: skip
        platforms[entry.platform] = (
            entry.image.digest,
            attach_sbom(
                registry, repository, entry.image.descriptor, entry.sbom, entry.sbom_title, created
            ),
        )
    if media_type == OCI_INDEX:
        registry.put_manifest(repository, digest, top, OCI_INDEX)
    if sign is not None:
        sign(f"{registry.host}/{repository}", digest, {p: d for p, (d, _) in platforms.items()})
    if not already:

        def write_tag() -> None:
            # Each attempt checks the tag again: another release may have written it meanwhile.
            if not tag_state(where, registry.manifest_digest(repository, tag), digest):
                registry.put_manifest(repository, tag, top, media_type)

        registry.retrying(f"tagging {where}", write_tag)
    now = registry.manifest_digest(repository, tag)
    if now != digest:
        raise RegistryError(
            f"after tagging, {where} points at {now}, not {digest}: someone else wrote the tag at "
            "the same time. Investigate before anyone pins it."
        )
    return Published(
        f"{registry.host}/{repository}", tag, digest, platforms, tagged_now=not already
    )


# --- the publish command: from the engine's verified images to the registry -------------------


@dataclass(frozen=True)
class Outcome:
    published: Published
    #: Per platform, the SBOM text that was attached.
    sboms: dict[str, str]


def prepare_platform(
    project: Project, box: Box, platform: str, *, engine: Engine, revision: Revision, dev: bool
) -> tuple[PreparedImage, str]:
    """Verify one platform's local image and normalise it: (the image, its SBOM)."""
    local = naming.local_tags(project.settings.registry, box, platform, revision)[0]
    report = require_verified(engine, project, box, local, "it is not published")
    image = engine.image(local)
    assert image is not None  # verify has just found it
    if image.labels.get(naming.LABEL_FLOATING_BASE) == "true" and not dev:
        raise BuildboxError(
            f"{local} was built from a floating base ({box.base}); it can never be released. "
            "Pin the base by digest in box.yaml and build again."
        )
    prepared = prepare(
        lambda: engine.save(image.id), image.id, project.settings.cache_dir, revision.epoch
    )
    target = Reference.parse(naming.repository(project.settings.registry, box, dev=dev))
    facts = cyclonedx.ImageFacts(
        # The normalised config's digest: the same for every build of these inputs.
        image_id=prepared.config_digest,
        platform=platform,
        inputs_digest=image.labels.get(naming.LABEL_INPUTS, ""),
        repository=target.name,
        digest=prepared.digest,
        base_digest=image.labels.get(naming.LABEL_BASE_DIGEST),
    )
    packages = inventory(engine, image.id)
    text = cyclonedx.render(cyclonedx.build_bom(project, box, facts, report, packages, revision))
    return prepared, text


def publish_box(
    project: Project,
    box: Box,
    *,
    engine: Engine,
    revision: Revision,
    dev: bool = False,
    signer: Callable[[dict[str, str]], Callable[[str, str, dict[str, str]], None] | None]
    | None = None,
    log: Callable[[str], None] | None = None,
    progress: Progress | None = None,
) -> Outcome:
    """Verify every platform's local image, then push them, their SBOMs and the tag.

    ``signer`` is given each platform's SBOM and returns what signs before the tag is written.
    """
    local_registry.ensure_running(project.settings)
    target = Reference.parse(naming.repository(project.settings.registry, box, dev=dev))
    images, texts = [], {}
    for platform in box.platforms:
        # A real box's layers take a minute or more to export and compress: say so.
        if log:
            log(f"preparing {platform}: verifying, exporting and compressing its layers")
        started = time.monotonic()
        prepared, texts[platform] = prepare_platform(
            project, box, platform, engine=engine, revision=revision, dev=dev
        )
        if log:
            compressed = output.size(sum(layer.size for layer in prepared.layers))
            log(
                f"prepared {platform}: {len(prepared.layers)} layers, {compressed} compressed, "
                f"in {time.monotonic() - started:.1f} s"
            )
        title = filename(box, platform)
        images.append(PlatformImage(platform, prepared, texts[platform].encode(), title))
    tag = revision.short if dev else box.release_tag
    with open_registry(target, settings=project.settings) as registry:
        published = publish(
            registry, target.repository, tag, images, revision.timestamp, immutable=not dev,
            sign=signer(texts) if signer else None, workers=project.settings.registry_workers,
            mounts=released_blobs(registry, project, target), log=log, progress=progress,
        )  # fmt: skip
    return Outcome(published, texts)


def released_blobs(registry: Registry, project: Project, target: Reference) -> dict[str, str]:
    """Blobs other repositories of the target registry hold, from the release record: digest ->
    repository, for cross-repository mounts (boxes on one base share its layers)."""
    found: dict[str, str] = {}
    for release in record.load(project.settings.root):
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
