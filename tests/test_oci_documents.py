"""OCI documents as bytes: manifests, the index, the SBOM artifact, the fallback referrers index."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from buildbox.oci.documents import (
    CREATED,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    SBOM_TYPE,
    TITLE,
    Descriptor,
    fallback_tag,
    image_manifest,
    index_manifest,
    platform_entry,
    referrers_of_type,
    sbom_layer,
    sbom_manifest,
    with_referrer,
)

#: The OCI empty descriptor: sha256 of the two bytes ``{}`` (image-spec, "Guidance for an Empty
#: Descriptor"), written out here rather than computed, so a wrong constant cannot go unseen.
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def descriptor(name: str, media_type: str = OCI_MANIFEST, size: int = 100) -> Descriptor:
    return Descriptor(media_type, digest(name), size)


AMD64, ARM64, ARMV7 = descriptor("amd64"), descriptor("arm64"), descriptor("armv7")
IMAGE = descriptor("image", size=1234)


def test_descriptor_of_content_is_its_sha256_and_length() -> None:
    found = Descriptor.of(OCI_CONFIG, b'{"a":1}')
    assert found.as_dict() == {
        "mediaType": OCI_CONFIG,
        "digest": "sha256:" + hashlib.sha256(b'{"a":1}').hexdigest(),
        "size": 7,
    }


def test_image_manifest_names_config_and_layers_in_order() -> None:
    config = Descriptor.of(OCI_CONFIG, b"{}")
    layers = [descriptor("one", OCI_LAYER_GZIP, 10), descriptor("two", OCI_LAYER_GZIP, 20)]
    body = json.loads(image_manifest(config, layers))
    assert body == {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": EMPTY_DIGEST, "size": 2},
        "layers": [
            {"mediaType": OCI_LAYER_GZIP, "digest": digest("one"), "size": 10},
            {"mediaType": OCI_LAYER_GZIP, "digest": digest("two"), "size": 20},
        ],
    }


def test_image_manifest_layer_order_matters() -> None:
    """Layers are applied in order: swapping them is another image, with another digest."""
    config = Descriptor.of(OCI_CONFIG, b"{}")
    one, two = descriptor("one", OCI_LAYER_GZIP), descriptor("two", OCI_LAYER_GZIP)
    assert image_manifest(config, [one, two]) != image_manifest(config, [two, one])


def test_image_manifest_is_canonical_json() -> None:
    raw = image_manifest(Descriptor.of(OCI_CONFIG, b"{}"), [descriptor("l", OCI_LAYER_GZIP)])
    assert b" " not in raw
    assert b"\n" not in raw
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()


def test_index_lists_platform_objects_sorted_by_platform() -> None:
    raw = index_manifest([("linux/arm64", ARM64), ("linux/arm/v7", ARMV7), ("linux/amd64", AMD64)])
    body = json.loads(raw)
    assert body["schemaVersion"] == 2
    assert body["mediaType"] == OCI_INDEX
    assert [(m["digest"], m["platform"]) for m in body["manifests"]] == [
        (AMD64.digest, {"os": "linux", "architecture": "amd64"}),
        (ARMV7.digest, {"os": "linux", "architecture": "arm", "variant": "v7"}),
        (ARM64.digest, {"os": "linux", "architecture": "arm64"}),
    ]
    assert body["manifests"][0]["mediaType"] == OCI_MANIFEST
    assert body["manifests"][0]["size"] == 100


def test_index_without_variant_has_no_variant_key() -> None:
    [entry] = json.loads(index_manifest([("linux/amd64", AMD64)]))["manifests"]
    assert "variant" not in entry["platform"]


def test_index_is_the_same_bytes_whatever_the_input_order() -> None:
    pairs = [("linux/amd64", AMD64), ("linux/arm64", ARM64), ("linux/arm/v7", ARMV7)]
    first = index_manifest(pairs)
    second = index_manifest(list(reversed(pairs)))
    assert first == second
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(second).hexdigest()
    assert first == json.dumps(json.loads(first), sort_keys=True, separators=(",", ":")).encode()


def test_index_changes_when_an_image_changes() -> None:
    before = index_manifest([("linux/amd64", AMD64), ("linux/arm64", ARM64)])
    after = index_manifest([("linux/amd64", AMD64), ("linux/arm64", descriptor("arm64, rebuilt"))])
    assert before != after


INDEX = index_manifest([("linux/amd64", AMD64), ("linux/arm64", ARM64), ("linux/arm/v7", ARMV7)])


@pytest.mark.parametrize(
    ("platform", "expected"),
    [
        ("linux/amd64", AMD64.digest),
        ("linux/arm64", ARM64.digest),
        ("linux/arm64/v8", ARM64.digest),  # the variant is ignored
        ("linux/arm/v7", ARMV7.digest),
        ("linux/arm", ARMV7.digest),
        ("linux/s390x", None),
        ("windows/amd64", None),
    ],
)
def test_platform_entry(platform: str, expected: str | None) -> None:
    assert platform_entry(INDEX, platform) == expected


def test_platform_entry_of_a_document_without_manifests() -> None:
    assert platform_entry(b'{"schemaVersion":2}', "linux/amd64") is None


def test_sbom_manifest_is_an_oci_artifact_about_its_subject() -> None:
    sbom = b'{"bomFormat":"CycloneDX"}'
    raw = sbom_manifest(IMAGE, sbom, "demo-1-linux-amd64.cdx.json", "2024-01-02T03:04:05Z")
    body = json.loads(raw)
    assert body["schemaVersion"] == 2
    assert body["mediaType"] == OCI_MANIFEST
    assert body["artifactType"] == SBOM_TYPE == "application/vnd.cyclonedx+json"
    assert body["config"] == {"mediaType": OCI_EMPTY, "digest": EMPTY_DIGEST, "size": 2}
    assert body["subject"] == {"mediaType": OCI_MANIFEST, "digest": IMAGE.digest, "size": 1234}
    assert body["layers"] == [
        {
            "mediaType": SBOM_TYPE,
            "digest": "sha256:" + hashlib.sha256(sbom).hexdigest(),
            "size": len(sbom),
            "annotations": {TITLE: "demo-1-linux-amd64.cdx.json"},
        }
    ]
    assert body["annotations"] == {CREATED: "2024-01-02T03:04:05Z"}
    assert TITLE == "org.opencontainers.image.title"
    assert raw == json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def test_sbom_manifest_depends_on_the_sbom() -> None:
    one = sbom_manifest(IMAGE, b"one", "t", "2024-01-01T00:00:00Z")
    two = sbom_manifest(IMAGE, b"two", "t", "2024-01-01T00:00:00Z")
    assert one != two


def test_fallback_tag_follows_the_referrers_tag_schema() -> None:
    hex_ = "0123456789abcdef" * 4
    assert fallback_tag(f"sha256:{hex_}") == f"sha256-{hex_}"


def entries(index: bytes) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(index)["manifests"]
    return found


def test_with_referrer_starts_an_index_when_there_is_none() -> None:
    artifact = descriptor("sbom-a")
    body = json.loads(with_referrer(None, artifact, SBOM_TYPE))
    assert body == {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{**artifact.as_dict(), "artifactType": SBOM_TYPE}],
    }


def test_with_referrer_keeps_what_the_index_already_lists() -> None:
    signature = {
        "mediaType": OCI_MANIFEST,
        "digest": digest("sig"),
        "size": 5,
        "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
    }
    existing = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [signature]}
    ).encode()
    artifact = descriptor("sbom-a")
    found = entries(with_referrer(existing, artifact, SBOM_TYPE))
    assert signature in found
    assert {**artifact.as_dict(), "artifactType": SBOM_TYPE} in found
    assert len(found) == 2


def test_with_referrer_never_lists_a_digest_twice() -> None:
    artifact = descriptor("sbom-a")
    once = with_referrer(None, artifact, SBOM_TYPE)
    twice = with_referrer(once, artifact, SBOM_TYPE)
    assert twice == once
    assert [m["digest"] for m in entries(twice)] == [artifact.digest]


def test_with_referrer_result_is_sorted_by_digest_whatever_the_order_of_adding() -> None:
    artifacts = [descriptor(name) for name in ("sbom-a", "sbom-b", "sbom-c", "sbom-d")]
    forward: bytes | None = None
    for artifact in artifacts:
        forward = with_referrer(forward, artifact, SBOM_TYPE)
    backward: bytes | None = None
    for artifact in reversed(artifacts):
        backward = with_referrer(backward, artifact, SBOM_TYPE)
    assert forward is not None
    digests = [m["digest"] for m in entries(forward)]
    assert digests == sorted(a.digest for a in artifacts)
    assert forward == backward


def test_referrers_of_type_picks_the_sboms() -> None:
    index = {
        "manifests": [
            {"digest": digest("sbom-1"), "artifactType": SBOM_TYPE},
            {"digest": digest("sig"), "artifactType": "application/vnd.dev.cosign.sig"},
            {"digest": digest("sbom-2"), "artifactType": SBOM_TYPE},
            {"artifactType": SBOM_TYPE},  # no digest: nothing to fetch
        ]
    }
    assert referrers_of_type(index, SBOM_TYPE) == [digest("sbom-1"), digest("sbom-2")]
    assert referrers_of_type({}, SBOM_TYPE) == []


def test_sbom_layer_of_an_artifact_for_the_subject() -> None:
    sbom = b'{"bomFormat":"CycloneDX"}'
    manifest = sbom_manifest(IMAGE, sbom, "t", "2024-01-01T00:00:00Z")
    assert sbom_layer(manifest, IMAGE.digest) == "sha256:" + hashlib.sha256(sbom).hexdigest()


def test_sbom_layer_is_none_for_another_subject() -> None:
    manifest = sbom_manifest(IMAGE, b"{}", "t", "2024-01-01T00:00:00Z")
    assert sbom_layer(manifest, digest("another image")) is None


def test_sbom_layer_is_none_without_an_sbom_layer() -> None:
    manifest = json.dumps(
        {"subject": IMAGE.as_dict(), "layers": [{"mediaType": "text/plain", "digest": digest("x")}]}
    ).encode()
    assert sbom_layer(manifest, IMAGE.digest) is None
