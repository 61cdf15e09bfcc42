"""OCI documents as bytes: image manifests, the image index, the SBOM artifact, the fallback index.

Pure functions over plain data: no registry, no engine. Every document is canonical JSON (sorted
keys, no whitespace), so the same content always has the same digest.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from buildbox.digests import canonical_json, digest_of

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
#: Without the OCI types the distribution registry answers MANIFEST_UNKNOWN for OCI manifests,
#: and a client would wrongly believe a tag is absent.
MANIFEST_ACCEPT = f"{OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST}, {DOCKER_LIST}"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
EMPTY_JSON = b"{}"
SBOM_TYPE = "application/vnd.cyclonedx+json"
TITLE = "org.opencontainers.image.title"
CREATED = "org.opencontainers.image.created"


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    @classmethod
    def of(cls, media_type: str, content: bytes) -> Descriptor:
        return cls(media_type, digest_of(content), len(content))

    def as_dict(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def platform_object(platform: str) -> dict[str, str]:
    """``linux/arm64/v8`` as an OCI platform object."""
    os_name, _, rest = platform.partition("/")
    architecture, _, variant = rest.partition("/")
    found = {"architecture": architecture, "os": os_name}
    if variant:
        found["variant"] = variant
    return found


def image_manifest(config: Descriptor, layers: Iterable[Descriptor]) -> bytes:
    return canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.as_dict(),
            "layers": [layer.as_dict() for layer in layers],
        }
    )


def index_manifest(images: Iterable[tuple[str, Descriptor]]) -> bytes:
    """An OCI image index over (platform, image manifest) pairs, in platform order."""
    entries = [
        {**descriptor.as_dict(), "platform": platform_object(platform)}
        for platform, descriptor in sorted(images, key=lambda pair: pair[0])
    ]
    return canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})


def platform_entry(index: bytes, platform: str) -> str | None:
    """The digest of ``platform``'s manifest in an image index (variant ignored), if any."""
    wanted = platform_object(platform)
    for entry in json.loads(index).get("manifests", []):
        found = entry.get("platform", {})
        if (found.get("os"), found.get("architecture")) == (wanted["os"], wanted["architecture"]):
            return str(entry["digest"])
    return None


def sbom_manifest(subject: Descriptor, sbom: bytes, title: str, created: str) -> bytes:
    """An OCI 1.1 artifact manifest carrying the SBOM, with the image as its subject."""
    layer = {**Descriptor.of(SBOM_TYPE, sbom).as_dict(), "annotations": {TITLE: title}}
    return canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": SBOM_TYPE,
            "config": Descriptor.of(OCI_EMPTY, EMPTY_JSON).as_dict(),
            "layers": [layer],
            "subject": subject.as_dict(),
            "annotations": {CREATED: created},
        }
    )


def fallback_tag(digest: str) -> str:
    """The referrers tag schema: ``sha256-<hex>`` names the index of what refers to ``digest``."""
    return digest.replace(":", "-")


def with_referrer(index: bytes | None, artifact: Descriptor, artifact_type: str) -> bytes:
    """The fallback referrers index ``index`` (None: none yet) with ``artifact`` in it, once."""
    document: dict[str, Any] = (
        json.loads(index) if index else {"schemaVersion": 2, "mediaType": OCI_INDEX}
    )
    manifests = [m for m in document.get("manifests", []) if m.get("digest") != artifact.digest]
    manifests.append({**artifact.as_dict(), "artifactType": artifact_type})
    document["manifests"] = sorted(manifests, key=lambda m: str(m.get("digest")))
    return canonical_json(document)


def referrers_of_type(index: dict[str, Any], artifact_type: str) -> list[str]:
    """The digests of the manifests in a referrers index that have ``artifact_type``."""
    return [
        str(entry["digest"])
        for entry in index.get("manifests", [])
        if entry.get("artifactType") == artifact_type and "digest" in entry
    ]


def sbom_layer(manifest: bytes, subject: str) -> str | None:
    """The digest of the SBOM blob an artifact manifest carries for ``subject``, if it does."""
    body = json.loads(manifest)
    if body.get("subject", {}).get("digest") != subject:
        return None
    return next(
        (str(layer["digest"]) for layer in body.get("layers", [])
         if layer.get("mediaType") == SBOM_TYPE),
        None,
    )  # fmt: skip
