"""Whatever is fetched by digest is hashed and refused when it is other content: a base's index
(so the platform image built on is the one the pin names), any manifest, any blob. Against a
loopback registry that serves a tampered body under the pinned digest."""

from __future__ import annotations

from pathlib import Path

import pytest

from buildbox.build.build import platform_base
from buildbox.errors import BuildboxError
from buildbox.oci.documents import OCI_INDEX, OCI_MANIFEST
from buildbox.oci.registry import open_registry
from buildbox.settings import Settings, from_config
from recording_registry import RecordingRegistry, index_of

AMD64 = "sha256:" + "a" * 64
SWAPPED = "sha256:" + "e" * 64


def settings_for(tmp_path: Path) -> Settings:
    return from_config({"root": str(tmp_path), "registry": "ghcr.invalid/example/buildbox"})


def test_a_base_index_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    pinned = index_of(("linux/amd64", AMD64))
    with RecordingRegistry() as registry:
        digest = registry.serve("library/base", "1", pinned, OCI_INDEX)
        # The registry (or a proxy, a mirror) now answers the pinned digest with another index,
        # whose amd64 image is someone else's; it even claims the pinned digest.
        swapped = index_of(("linux/amd64", SWAPPED))
        actual = registry.serve("library/base", digest, swapped, OCI_INDEX, claimed=digest)
        base = f"{registry.host}/library/base@{digest}"
        with pytest.raises(BuildboxError) as caught:
            platform_base(base, "linux/amd64", settings_for(tmp_path))
    assert str(caught.value) == (
        f"the registry {registry.host} served other content for {base}: it hashes to {actual}; "
        "refused (the registry, a mirror or a proxy changed it)"
    )


def test_the_pinned_index_gives_the_platform_image(tmp_path: Path) -> None:
    with RecordingRegistry() as registry:
        digest = registry.serve("library/base", "1", index_of(("linux/amd64", AMD64)), OCI_INDEX)
        base = f"{registry.host}/library/base@{digest}"
        chosen = platform_base(base, "linux/amd64", settings_for(tmp_path))
    assert chosen == f"{registry.host}/library/base@{AMD64}"


def test_every_manifest_and_blob_read_by_digest_is_checked(tmp_path: Path) -> None:
    with RecordingRegistry() as registry:
        digest = registry.serve("box", "v1", b'{"schemaVersion": 2}', OCI_MANIFEST)
        other = registry.serve("box", digest, b'{"schemaVersion": 2} ', OCI_MANIFEST, digest)
        registry.serve("box", SWAPPED, b"layer bytes", "application/octet-stream")
        with open_registry(registry.host, settings_for(tmp_path)) as client:
            with pytest.raises(BuildboxError, match=f"box@{digest}: it hashes to {other}"):
                client.get_manifest("box", digest)
            assert client.get_manifest("box", "v1") is not None, "a tag names no digest"
            with pytest.raises(BuildboxError, match=f"box@{SWAPPED}: it hashes to sha256:"):
                client.get_blob("box", SWAPPED)
