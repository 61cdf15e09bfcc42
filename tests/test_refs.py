"""Image references: split once, in one place, and written back the same."""

from __future__ import annotations

import pytest

from buildbox.errors import BuildboxError
from buildbox.oci.refs import Reference, is_pinned

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("text", "host", "repository", "tag", "digest"),
    [
        ("ghcr.io/acme/tools:1.0", "ghcr.io", "acme/tools", "1.0", None),
        ("127.0.0.1:5000/buildbox/demo:v1", "127.0.0.1:5000", "buildbox/demo", "v1", None),
        ("localhost:5000/demo", "localhost:5000", "demo", None, None),
        ("localhost/demo:v2", "localhost", "demo", "v2", None),
        (
            f"registry.example.com/buildbox/demo:v1@{DIGEST}",
            "registry.example.com",
            "buildbox/demo",
            "v1",
            DIGEST,
        ),
        (
            f"registry.example.com:443/demo@{DIGEST}",
            "registry.example.com:443",
            "demo",
            None,
            DIGEST,
        ),
        ("[::1]:5000/demo:v3", "[::1]:5000", "demo", "v3", None),
        ("r.example/a/b/c", "r.example", "a/b/c", None, None),
    ],
)
def test_parse(text: str, host: str, repository: str, tag: str | None, digest: str | None) -> None:
    reference = Reference.parse(text)
    assert (reference.host, reference.repository, reference.tag, reference.digest) == (
        host,
        repository,
        tag,
        digest,
    )
    assert reference.name == f"{host}/{repository}"
    assert str(reference) == text


@pytest.mark.parametrize(
    "text",
    [
        "ubuntu:22.04",
        "ubuntu",
        "acme/tools:1.0",  # the first part has no dot, colon or "localhost": a Docker Hub user
        f"ubuntu@{DIGEST}",
    ],
)
def test_without_a_host_is_an_error(text: str) -> None:
    with pytest.raises(BuildboxError, match="does not name a registry host"):
        Reference.parse(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ubuntu:22.04", Reference("docker.io", "library/ubuntu", "22.04")),
        ("ubuntu", Reference("docker.io", "library/ubuntu")),
        ("acme/tools:1.0", Reference("docker.io", "acme/tools", "1.0")),
        (f"debian@{DIGEST}", Reference("docker.io", "library/debian", None, DIGEST)),
        ("quay.io/acme/tools:1.0", Reference("quay.io", "acme/tools", "1.0")),
    ],
)
def test_default_host_is_docker_hub(text: str, expected: Reference) -> None:
    assert Reference.parse(text, default_host=True) == expected


def test_docker_hub_official_image_written_out() -> None:
    assert str(Reference.parse("ubuntu:22.04", default_host=True)) == (
        "docker.io/library/ubuntu:22.04"
    )


@pytest.mark.parametrize(
    "text",
    [
        "ghcr.io/acme/tools@sha256:abc",  # too short
        "ghcr.io/acme/tools@sha256:" + "A" * 64,  # not lowercase
        "ghcr.io/acme/tools@sha512:" + "a" * 128,  # not sha256
        "ghcr.io/acme/tools@" + "a" * 64,  # no algorithm
        "ghcr.io/acme/tools@",
    ],
)
def test_malformed_digest_is_an_error(text: str) -> None:
    with pytest.raises(BuildboxError, match="digest must be sha256:<64 lowercase hex>"):
        Reference.parse(text)


def test_no_repository_is_an_error() -> None:
    with pytest.raises(BuildboxError, match="names no repository"):
        Reference.parse("ghcr.io/")


def test_with_digest_pins_and_keeps_the_rest() -> None:
    reference = Reference.parse("127.0.0.1:5000/buildbox/demo:v1")
    pinned = reference.with_digest(DIGEST)
    assert str(pinned) == f"127.0.0.1:5000/buildbox/demo:v1@{DIGEST}"
    assert reference.digest is None  # frozen: a new reference, the old one unchanged
    other = "sha256:" + "f" * 64
    assert str(pinned.with_digest(other)) == f"127.0.0.1:5000/buildbox/demo:v1@{other}"
    assert Reference.parse(str(pinned)) == pinned


@pytest.mark.parametrize(
    ("reference", "pinned"),
    [
        (f"ghcr.io/acme/tools@{DIGEST}", True),
        (f"ghcr.io/acme/tools:1.0@{DIGEST}", True),
        (f"127.0.0.1:5000/base@{DIGEST}", True),
        (f"ubuntu@{DIGEST}", True),
        ("ghcr.io/acme/tools:1.0", False),
        ("ubuntu:22.04", False),
        ("ubuntu", False),
        (DIGEST, False),  # a digest alone names no image
        ("ghcr.io/acme/tools@sha256:" + "a" * 63, False),
        ("ghcr.io/acme/tools@sha256:" + "a" * 65, False),
        ("ghcr.io/acme/tools@sha256:" + "A" * 64, False),
        ("ghcr.io/acme/tools@sha512:" + "a" * 128, False),
        (f"ghcr.io/acme/tools@{DIGEST}:latest", False),
        (f"ghcr.io/acme/tools@{DIGEST} ", False),
        ("ghcr.io/acme/tools:latest@", False),
    ],
)
def test_is_pinned(reference: str, pinned: bool) -> None:
    assert is_pinned(reference) is pinned
