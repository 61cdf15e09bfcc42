"""The names an image carries: its labels, its local tags, and the repositories it goes to."""

from __future__ import annotations

from buildbox.build.emulation import host_platform
from buildbox.define.boxes import Box
from buildbox.source import Revision

LABEL_BOX = "dev.buildbox.box"
LABEL_VERSION = "dev.buildbox.version"
LABEL_INPUTS = "dev.buildbox.inputs-digest"
LABEL_PLATFORM = "dev.buildbox.platform"
#: Set on an image built from a base that is not pinned by digest: it can never be released.
LABEL_FLOATING_BASE = "dev.buildbox.floating-base"


LABEL_BASE_DIGEST = "org.opencontainers.image.base.digest"


def labels(
    box: Box, platform: str, digest: str, revision: Revision, base_digest: str | None = None
) -> dict[str, str]:
    """The image's labels: ours, and the standard org.opencontainers.image ones.

    ``base_digest`` is the digest of what the image was built on: a pinned base's platform
    image (for a multi-platform base, the entry of its checked index, not the index), or a
    bootstrapped base's content; None for a floating base.
    """
    result = {
        LABEL_BOX: box.name,
        LABEL_VERSION: box.version,
        LABEL_INPUTS: digest,
        LABEL_PLATFORM: platform,
        "org.opencontainers.image.title": f"buildbox {box.name}",
        "org.opencontainers.image.description": box.description,
        "org.opencontainers.image.version": box.release_tag,
        "org.opencontainers.image.revision": revision.label,
        "org.opencontainers.image.created": revision.timestamp,
        "org.opencontainers.image.base.name": box.base,
    }
    if base_digest:
        result[LABEL_BASE_DIGEST] = base_digest
    else:
        result[LABEL_FLOATING_BASE] = "true"
    return result


def identity(box: Box, digest: str) -> dict[str, str]:
    """The labels that say an image was built from these inputs at this box version."""
    return {LABEL_BOX: box.name, LABEL_VERSION: box.version, LABEL_INPUTS: digest}


def repository(registry: str, box: Box, *, dev: bool = False) -> str:
    """``<registry>/<box>`` for releases, ``<registry>/<box>-dev`` for the mutable dev tags."""
    return f"{registry}/{box.name}{'-dev' if dev else ''}"


def local_tags(registry: str, box: Box, platform: str, revision: Revision) -> tuple[str, str]:
    """The release name and the dev tag an image gets locally.

    ``<registry>/<box>:v<N>`` and ``<registry>/<box>-dev:<commit>``; for a platform other than
    this machine's, ``-<os>-<arch>`` is appended to both tags.
    """
    suffix = "" if platform == host_platform() else "-" + platform.replace("/", "-")
    return (
        f"{repository(registry, box)}:{box.release_tag}{suffix}",
        f"{repository(registry, box, dev=True)}:{revision.short}{suffix}",
    )
