"""OCI 1.1 referrers: artifacts (the SBOM, the inputs manifest) whose subject is a release's
image or index, and finding them again.

The artifact manifest goes in by digest; a registry with the referrers API answers with an
``OCI-Subject`` header. Without one (the CNCF distribution registry, GHCR) the client keeps the
fallback index tagged ``sha256-<subject hex>``, as the distribution spec requires, so that
``oras discover``-style clients find the SBOM either way.
"""

from __future__ import annotations

import json

from buildbox.digests import digest_of
from buildbox.oci import documents
from buildbox.oci.documents import EMPTY_JSON, OCI_INDEX, OCI_MANIFEST, SBOM_TYPE, Descriptor
from buildbox.oci.registry import Registry, RegistryError


def attach_sbom(
    registry: Registry, repository: str, subject: Descriptor, sbom: bytes, title: str, created: str
) -> str:
    """Push the SBOM artifact (and the fallback referrers index if needed); its digest."""
    registry.upload_blob(repository, digest_of(EMPTY_JSON), EMPTY_JSON)
    registry.upload_blob(repository, digest_of(sbom), sbom)
    manifest = documents.sbom_manifest(subject, sbom, title, created)
    return attach_artifact(registry, repository, subject.digest, manifest, SBOM_TYPE)


def attach_artifact(
    registry: Registry, repository: str, subject: str, manifest: bytes, artifact_type: str
) -> str:
    """Push an artifact manifest whose subject is ``subject`` (its blobs already pushed) by
    digest, and the fallback referrers index when the registry has no referrers API; its
    digest."""
    response = registry.put_manifest(repository, digest_of(manifest), manifest, OCI_MANIFEST)
    if "OCI-Subject" not in response.headers:
        # No referrers API: keep the index tagged sha256-<subject hex>, as the spec requires.
        update_fallback_index(
            registry, repository, subject, Descriptor.of(OCI_MANIFEST, manifest), artifact_type
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
    found = sbom_artifacts(registry, repository, subject)
    return found[0][1] if found else None


def sbom_artifacts(registry: Registry, repository: str, subject: str) -> list[tuple[str, bytes]]:
    """Every SBOM artifact whose subject is ``subject`` (through the referrers API, else the
    fallback index): its manifest digest and the SBOM, each read by digest and hash-checked."""
    artifacts = []
    for digest, manifest in find_artifacts(registry, repository, subject, SBOM_TYPE):
        blob = documents.sbom_layer(manifest, subject)
        if blob is not None:
            artifacts.append((digest, registry.get_blob(repository, blob)))
    return artifacts


def find_artifacts(
    registry: Registry, repository: str, subject: str, artifact_type: str
) -> list[tuple[str, bytes]]:
    """Every artifact manifest of ``artifact_type`` that the referrers API (else the fallback
    index) lists for ``subject``: its digest and bytes, read by digest and hash-checked."""
    index = registry.referrers(repository, subject)
    if index is None:
        found = registry.get_manifest(repository, documents.fallback_tag(subject))
        index = json.loads(found[0]) if found else {"manifests": []}
    artifacts = []
    for digest in documents.referrers_of_type(index, artifact_type):
        manifest = registry.get_manifest(repository, digest)  # hash-checked: read by digest
        if manifest is not None:
            artifacts.append((digest, manifest[0]))
    return artifacts
