"""The release guarantees, held without an engine against a real registry (Debian's
docker-registry on loopback): a released tag is never overwritten, the tag is read back after
it is written, and audit holds a committed SBOM to CycloneDX 1.6 in its own words.

The images are made here in Python (one small layer each), so these run in the unit suite.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from buildbox.digests import digest_of
from buildbox.errors import BuildboxError
from buildbox.oci.documents import OCI_MANIFEST
from buildbox.oci.image import Layer, PreparedImage
from buildbox.oci.push import PlatformImage, Published, push, push_by_digest, write_tag
from buildbox.oci.registry import Registry as Client
from buildbox.oci.registry import RegistryError
from buildbox.release.record import RECORD_FILE
from projects import make_project, run_cli
from registry import Registry

CREATED = "1970-01-01T00:00:00Z"
SBOM = json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1}).encode()


def tiny_image(where: Path, text: str) -> PreparedImage:
    """An image of one file holding ``text``: its layer (gzip, in ``where``) and config."""
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as archive:
        data = text.encode()
        member = tarfile.TarInfo("motd")
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    compressed = gzip.compress(tar.getvalue(), mtime=0)
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{digest_of(compressed).removeprefix('sha256:')}.tar.gz"
    path.write_bytes(compressed)
    diff_id = digest_of(tar.getvalue())
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    return PreparedImage(config, (Layer(path, digest_of(compressed), len(compressed), diff_id),))


def platform_image(image: PreparedImage, sbom: bytes = SBOM) -> PlatformImage:
    return PlatformImage("linux/amd64", image, sbom, "v1-linux-amd64.cdx.json")


@pytest.fixture
def repository() -> str:
    """A repository no other test writes."""
    return f"guarantees/{uuid.uuid4().hex[:8]}/demo"


@pytest.fixture
def client(registry: Registry) -> Iterator[Client]:
    with Client(registry.host) as opened:
        yield opened


def test_a_released_tag_is_never_overwritten(
    client: Client, repository: str, tmp_path: Path
) -> None:
    first, other = tiny_image(tmp_path, "v1\n"), tiny_image(tmp_path, "v1, rebuilt otherwise\n")
    released = push(client, repository, "v1", [platform_image(first)], CREATED)
    assert (released.digest, released.tagged_now) == (first.digest, True)
    where = f"{client.host}/{repository}:v1"
    refusal = (
        f"{where} already points at {first.digest}; this release is {other.digest}. A released "
        "version is immutable: bump the box's version to publish new content. The registry was "
        "not changed."
    )

    # A release of other content under the released tag: refused before anything is pushed.
    with pytest.raises(BuildboxError) as raised:
        push(client, repository, "v1", [platform_image(other)], CREATED)
    assert str(raised.value) == refusal
    assert client.manifest_digest(repository, "v1") == first.digest
    assert client.get_manifest(repository, other.digest) is None, "nothing of it was pushed"

    # Its second half alone (--sign-digest after --push-only): the tag is checked again.
    pushed = push_by_digest(client, repository, [platform_image(other)], CREATED)
    assert client.manifest_digest(repository, other.digest) == other.digest
    signed: list[str] = []
    with pytest.raises(BuildboxError) as raised:
        write_tag(client, repository, "v1", pushed, sign=lambda *args: signed.append(args[1]))
    assert str(raised.value) == refusal
    assert signed == [], "nothing was signed"
    assert client.manifest_digest(repository, "v1") == first.digest

    # The same content again is no new tag: the release is complete as it was.
    again = push(client, repository, "v1", [platform_image(first)], CREATED)
    assert (again.digest, again.tagged_now) == (first.digest, False)
    assert client.manifest_digest(repository, "v1") == first.digest


class RivalWriter(Client):
    """A client whose tag write another writer follows at once with its own manifest: the race
    a registry without conditional PUTs allows (HEAD, then PUT, by two releases at once)."""

    def __init__(self, host: str, rival: PreparedImage) -> None:
        super().__init__(host)
        self.rival = rival

    def put_manifest(
        self, repository: str, reference: str, body: bytes, media_type: str, *, once: bool = False
    ) -> requests.Response:
        response = super().put_manifest(repository, reference, body, media_type, once=once)
        if reference == "v1":
            with Client(self.host) as other:
                other.put_manifest(repository, "v1", self.rival.manifest, OCI_MANIFEST)
        return response


def test_the_tag_is_read_back_and_must_name_what_was_written(
    registry: Registry, client: Client, repository: str, tmp_path: Path
) -> None:
    ours, theirs = tiny_image(tmp_path, "ours\n"), tiny_image(tmp_path, "theirs\n")
    push_by_digest(client, repository, [platform_image(theirs)], CREATED)
    with RivalWriter(registry.host, theirs) as racing, pytest.raises(RegistryError) as raised:
        push(racing, repository, "v1", [platform_image(ours)], CREATED)
    assert str(raised.value) == (
        f"after tagging, {registry.host}/{repository}:v1 points at {theirs.digest}, not "
        f"{ours.digest}: someone else wrote the tag at the same time. Investigate before anyone "
        "pins it."
    )


def test_audit_says_what_is_wrong_with_a_committed_sbom(
    registry: Registry, client: Client, tmp_path: Path
) -> None:
    """A committed SBOM, as recorded and as attached, that is not valid CycloneDX 1.6: audit
    says so in its own words (not the release writer's "was not written")."""
    prefix = f"{registry.host}/audit{uuid.uuid4().hex[:8]}"
    root = make_project(tmp_path / "p")
    config = root / "invoke.yaml"
    config.write_text(config.read_text().replace('registry: ""', f'registry: "{prefix}"'))
    invalid = json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6", "components": [{}]})
    image = tiny_image(tmp_path / "layers", "audited\n")
    published: Published = push(
        client, prefix.split("/", 1)[1] + "/demo", "v1", [platform_image(image, invalid.encode())],
        CREATED,
    )  # fmt: skip
    sbom_path = "sbom/demo/v1-linux-amd64.cdx.json"
    (root / sbom_path).parent.mkdir(parents=True)
    (root / sbom_path).write_text(invalid)
    entry = {
        "box": "demo", "version": "1", "reference": published.reference,
        "digest": published.digest, "inputs_digest": "sha256:" + "e" * 64, "revision": "0" * 40,
        "platforms": {"linux/amd64": {
            "digest": image.digest, "sbom_path": sbom_path,
            "sbom_digest": digest_of(invalid.encode())}},
    }  # fmt: skip
    (root / RECORD_FILE).write_text(json.dumps({"releases": [entry]}))

    audited = run_cli(root, "audit")
    assert audited.returncode == 1, audited.stdout + audited.stderr
    [line] = [n.strip() for n in audited.stdout.splitlines() if n.strip().startswith(sbom_path)]
    assert line.startswith(f"{sbom_path} is not valid CycloneDX 1.6: $.components[0]: ")
    assert line.endswith(
        f"; restore it from git (`git checkout -- {sbom_path}`) or release demo again"
    )
    assert "was not written" not in audited.stdout
    assert f"FAIL  {published.reference}" in audited.stdout
