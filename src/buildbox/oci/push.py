"""Pushing a release: blobs, each image manifest by digest, its SBOM referrer, the index, and the
tag last.

The order is what makes a release safe to see: when a consumer can read the tag, the images and
their SBOMs are all in the registry. A push that dies halfway leaves no tag; pushing again skips
the blobs already there. Tags in registries such as the CNCF distribution registry are not
immutable, and HEAD-then-PUT is a race: the tag is checked before anything is pushed, again
before it is written, and read back after.

A release can be pushed in two steps, apart: ``push_by_digest`` (everything but the tag), then
``write_tag`` (sign, tag), with ``read_pushed`` reading the first step's content back by digest
in between, every manifest and blob hash-checked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from buildbox.digests import digest_of
from buildbox.errors import BuildboxError
from buildbox.oci import documents, referrers
from buildbox.oci.documents import OCI_INDEX, OCI_MANIFEST
from buildbox.oci.image import PreparedImage
from buildbox.oci.registry import Registry, RegistryError

#: What a registry answers to a manifest whose blobs it does not have (yet, or any more).
BLOBS_MISSING = frozenset({"BLOB_UNKNOWN", "MANIFEST_BLOB_UNKNOWN"})


class PushProgress(Protocol):
    """What a push reports as it goes (``output.UploadLog`` shows it)."""

    def sent(self, digest: str, done: int, total: int) -> None:
        """Bytes of a blob the registry has taken; ``done == total`` when it is no longer in
        flight, whether it landed or failed."""

    def uploaded(self, digest: str, count: int, seconds: float) -> None:
        """A blob was uploaded."""

    def mounted(self, digest: str, origin: str) -> None:
        """A blob was mounted from another repository of the registry."""


class _Silent:
    def sent(self, digest: str, done: int, total: int) -> None:
        """Nobody is told."""

    def uploaded(self, digest: str, count: int, seconds: float) -> None:
        """Nobody is told."""

    def mounted(self, digest: str, origin: str) -> None:
        """Nobody is told."""


SILENT: PushProgress = _Silent()
#: Signs what was pushed before the tag is written: (host/repository, the tag's digest,
#: each platform's image digest).
Sign = Callable[[str, str, dict[str, str]], None]


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


def push_blobs(
    registry: Registry,
    repository: str,
    blobs: list[tuple[str, Path | bytes]],
    *,
    workers: int = 4,
    mounts: Mapping[str, str] | None = None,
    progress: PushProgress = SILENT,
) -> None:
    """Each blob the registry lacks: mounted from another repository of the registry that has
    it (``mounts``: digest -> repository), else uploaded; ``workers`` at once."""

    def one(digest: str, source: Path | bytes) -> None:
        origin = (mounts or {}).get(digest)
        missing = origin is not None and not registry.has_blob(repository, digest)
        if missing and origin is not None and registry.mount_blob(repository, digest, origin):
            progress.mounted(digest, origin)
            return
        started = time.monotonic()
        count = len(source) if isinstance(source, bytes) else source.stat().st_size
        try:
            uploaded = registry.upload_blob(
                repository, digest, source, lambda done: progress.sent(digest, done, count)
            )
        finally:
            progress.sent(digest, count, count)  # no longer in flight, whatever happened
        if uploaded:
            progress.uploaded(digest, count, max(time.monotonic() - started, 1e-3))

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
    progress: PushProgress = SILENT,
) -> None:
    """Blobs first (skipping those the registry has), then the manifest by digest.

    A manifest refused for a missing blob (another release of the same content may be between
    its upload and its commit, or a registry lost one) makes the blobs be checked and uploaded
    again, then the manifest is sent again.
    """
    blobs: list[tuple[str, Path | bytes]] = [(digest_of(image.config), image.config)]
    blobs += [(layer.digest, layer.path) for layer in image.layers]
    for attempt in range(3):
        push_blobs(registry, repository, blobs, workers=workers, mounts=mounts, progress=progress)
        try:
            registry.put_manifest(repository, image.digest, image.manifest, OCI_MANIFEST)
            return
        except RegistryError as error:
            if not error.codes & BLOBS_MISSING or attempt == 2:
                raise


@dataclass(frozen=True)
class Pushed:
    """A release's content in the registry by digest, before any tag: what the tag will name
    (``top``: the image manifest for one platform, an OCI index for several) and, per platform,
    (image manifest digest, SBOM artifact digest)."""

    top: bytes
    media_type: str
    platforms: dict[str, tuple[str, str]]

    @property
    def digest(self) -> str:
        return digest_of(self.top)

    @property
    def images(self) -> dict[str, str]:
        """Each platform's image manifest digest."""
        return {platform: image for platform, (image, _) in self.platforms.items()}


def push(
    registry: Registry,
    repository: str,
    tag: str,
    images: list[PlatformImage],
    created: str,
    *,
    immutable: bool = True,
    sign: Sign | None = None,
    workers: int = 4,
    mounts: Mapping[str, str] | None = None,
    progress: PushProgress = SILENT,
) -> Published:
    """Push every platform image and its SBOM, the index if several, then the tag; re-read it.

    ``sign`` runs after everything is pushed and before the tag is written, so a tag never
    names unsigned content.
    """
    pushed = push_by_digest(
        registry, repository, images, created, tag=tag if immutable else None, workers=workers,
        mounts=mounts, progress=progress,
    )  # fmt: skip
    return write_tag(registry, repository, tag, pushed, immutable=immutable, sign=sign)


def push_by_digest(
    registry: Registry,
    repository: str,
    images: list[PlatformImage],
    created: str,
    *,
    tag: str | None = None,
    workers: int = 4,
    mounts: Mapping[str, str] | None = None,
    progress: PushProgress = SILENT,
) -> Pushed:
    """Every platform image and its SBOM referrer, then the index if several: all by digest,
    no tag. An immutable ``tag`` that already names other content is refused first, so the
    registry is left unchanged."""
    top, media_type = top_manifest(images)
    if tag is not None:
        where = f"{registry.host}/{repository}:{tag}"
        tag_state(where, registry.manifest_digest(repository, tag), digest_of(top))
    platforms = {}
    for entry in images:
        push_image(
            registry, repository, entry.image, workers=workers, mounts=mounts, progress=progress
        )
        sbom = referrers.attach_sbom(
            registry, repository, entry.image.descriptor, entry.sbom, entry.sbom_title, created
        )
        platforms[entry.platform] = (entry.image.digest, sbom)
    if media_type == OCI_INDEX:
        registry.put_manifest(repository, digest_of(top), top, OCI_INDEX)
    return Pushed(top, media_type, platforms)


def write_tag(
    registry: Registry,
    repository: str,
    tag: str,
    pushed: Pushed,
    *,
    immutable: bool = True,
    sign: Sign | None = None,
) -> Published:
    """Sign what was pushed (``sign``), then write the tag, last, and read it back. An immutable
    tag that names other content is refused; one that names this content is left as it is."""
    digest = pushed.digest
    where = f"{registry.host}/{repository}:{tag}"
    existing = registry.manifest_digest(repository, tag) if immutable else None
    already = tag_state(where, existing, digest)
    if sign is not None:
        sign(f"{registry.host}/{repository}", digest, pushed.images)
    if not already:

        def put_tag() -> None:
            # Each attempt checks the tag again: another release may have written it meanwhile.
            if not tag_state(where, registry.manifest_digest(repository, tag), digest):
                registry.put_manifest(repository, tag, pushed.top, pushed.media_type, once=True)

        registry.retrying(f"tagging {where}", put_tag)
    now = registry.manifest_digest(repository, tag)
    if now != digest:
        raise RegistryError(
            f"after tagging, {where} points at {now}, not {digest}: someone else wrote the tag at "
            "the same time. Investigate before anyone pins it."
        )
    return Published(
        f"{registry.host}/{repository}", tag, digest, pushed.platforms, tagged_now=not already
    )


def read_pushed(
    registry: Registry, repository: str, digest: str, platforms: list[str]
) -> tuple[Pushed, dict[str, bytes], dict[str, bytes]]:
    """What ``push_by_digest`` left under ``digest``, read back by digest, every manifest and
    blob hash-checked: the content (its SBOM artifacts' digests included), each platform's
    image config and SBOM. ``platforms`` are the ones it must hold, no more and no fewer."""
    where = f"{registry.host}/{repository}"
    found = registry.get_manifest(repository, digest)  # hash-checked: read by digest
    if found is None:
        raise BuildboxError(
            f"{where}@{digest} is not in the registry; run `invoke release --push-only` first "
            "and give the index digest it printed"
        )
    top = found[0]
    # As push_by_digest pushes them: the image itself for one platform, an index for several.
    media_type = str(json.loads(top).get("mediaType"))
    if media_type == OCI_INDEX:
        images = {platform: documents.platform_entry(top, platform) or "" for platform in platforms}
        held = len(json.loads(top).get("manifests", []))
    else:
        images, held = {platforms[0]: digest}, 1
    expected = OCI_INDEX if len(platforms) > 1 else OCI_MANIFEST
    if media_type != expected or held != len(platforms) or not all(images.values()):
        raise BuildboxError(
            f"{where}@{digest} is not what a release of {', '.join(platforms)} pushes (a "
            f"{media_type} over {held} image(s)); give the index digest "
            "`invoke release --push-only` printed"
        )
    contents, configs, sboms = {}, {}, {}
    for platform, image in images.items():
        image_found = registry.get_manifest(repository, image)
        if image_found is None:
            raise BuildboxError(f"{where}@{digest} names {image} ({platform}), which is missing")
        manifest = image_found[0]
        config = json.loads(manifest).get("config", {}).get("digest", "")
        configs[platform] = registry.get_blob(repository, config)
        # One SBOM, whatever the number of artifacts carrying it: two that differ leave no
        # way to tell which one the build made.
        carried = {sbom: d for d, sbom in referrers.sbom_artifacts(registry, repository, image)}
        if len(carried) != 1:
            raise BuildboxError(
                f"{where}@{image} ({platform}) has "
                + (
                    "no SBOM referrer"
                    if not carried
                    else f"{len(carried)} different SBOM referrers"
                )
                + "; push it with `invoke release --push-only` again"
            )
        [(sboms[platform], artifact)] = carried.items()
        contents[platform] = (image, artifact)
    return Pushed(top, media_type, contents), configs, sboms
