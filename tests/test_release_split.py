"""The release in two stages: `invoke release --push-only` (build and push by digest, no key, no
tag) and `invoke release --sign-digest=...` (read back by digest, check against the checkout,
sign, tag, record), engine-free: the second stage on a loopback registry holding an image pushed
by hand, as the first stage would have pushed it."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import tarfile
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from buildbox.build import labels as image_labels
from buildbox.digests import digest_of
from buildbox.oci import documents, referrers
from buildbox.oci.documents import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    image_manifest,
)
from buildbox.oci.registry import Registry as Client
from buildbox.release import record
from conftest import FixtureProject, missing
from projects import BASE, SHA_B, component, make_project, run_cli, settings_for
from publishing import PASSWORD, commit_all, git, key_pair, publishing, tag_digest  # noqa: F401
from registry import Registry

PLATFORMS = ["linux/amd64", "linux/arm64"]
CREATED = "2024-01-01T00:00:00Z"


# --- engine-free: the flags themselves --------------------------------------------------------


def test_push_only_and_sign_digest_are_two_stages_not_one(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    result = run_cli(root, "release", "demo", "--push-only", "--sign-digest=sha256:" + "a" * 64)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        (
            "buildbox: --push-only and --sign-digest are the two stages of a release, run "
            "apart: give one of them"
        )
    ]


@pytest.mark.parametrize("digest", ["latest", "sha256:abc", "sha256:" + "A" * 64, "v1"])
def test_sign_digest_takes_a_sha256_digest_only(tmp_path: Path, digest: str) -> None:
    root = make_project(tmp_path / "p")
    result = run_cli(root, "release", "demo", f"--sign-digest={digest}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        (
            f"buildbox: --sign-digest={digest} is not a digest: give the sha256:<64 hex> that "
            "`invoke release --push-only` printed as index"
        )
    ]


def test_push_only_never_asks_for_a_signing_key(tmp_path: Path) -> None:
    """A key that is missing stops a plain release before it builds (test_signing); the push
    stage has no use for one (the build job holds no key and no OIDC token): it goes on to what
    it needs, the engine and then a commit to build from."""
    root = make_project(tmp_path / "p")
    config = root / "invoke.yaml"
    config.write_text(
        config.read_text()
        .replace('signing_key: ""', 'signing_key: "gone.key"')
        .replace('registry: ""', 'registry: "registry.invalid/buildbox"')  # no local registry
    )
    pushed = run_cli(root, "release", "demo", "--push-only")
    assert pushed.returncode == 1
    [line] = pushed.stderr.strip().splitlines()
    assert line.startswith(
        ("buildbox: cannot reach the Docker engine", "buildbox: a release is built from a git")
    ), line


# --- the sign stage on a loopback registry ------------------------------------------------------


@dataclass(frozen=True)
class Signing:
    root: Path
    host: str
    repository: str  # in the registry: <prefix path>/demo
    public_key: Path
    commit: str
    inputs_digest: str

    @property
    def name(self) -> str:
        return f"{self.host}/{self.repository}"


@pytest.fixture
def signing(registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Signing:
    """A two-platform box in a git checkout, releasing to the test registry signed with a test
    key (no transparency log)."""
    if shutil.which("cosign") is None:
        missing("cosign is not installed (Debian 13: apt-get install cosign)")
    private, public = key_pair(tmp_path / "keys")
    monkeypatch.setenv("COSIGN_PASSWORD", PASSWORD)
    tool = component()
    tool["artifacts"]["linux/arm64"] = {**tool["artifacts"]["linux/amd64"], "sha256": SHA_B}
    root = make_project(
        tmp_path / "p",
        components={"tool": tool},
        boxes={"demo": {"version": 1, "base": BASE, "platforms": PLATFORMS,
                        "components": ["tool"]}},
    )  # fmt: skip
    prefix = f"{registry.host}/t{uuid.uuid4().hex[:8]}"
    config = root / "invoke.yaml"
    config.write_text(
        config.read_text()
        .replace('registry: ""', f'registry: "{prefix}"')
        .replace('signing_key: ""', f'signing_key: "{private}"')
        .replace("transparency_log: true", "transparency_log: false")
        # Hand-pushed content, no fetched inputs to escrow (test_escrow.py covers the sign
        # stage's escrow check).
        .replace("escrow: true", "escrow: false")
    )
    git(root, "init", "-q")
    commit_all(root, "demo v1")
    listed = json.loads(run_cli(root, "list", "--json").stdout)
    commit = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return Signing(
        root, registry.host, f"{prefix.split('/', 1)[1]}/demo", public, commit,
        listed[0]["inputs_digest"],
    )  # fmt: skip


def image_labels_for(signing: Signing, platform: str, **changes: str) -> dict[str, str]:
    """The labels a build of the checkout puts on the image (the ones the sign stage checks)."""
    found = {
        image_labels.LABEL_BOX: "demo",
        image_labels.LABEL_VERSION: "1",
        image_labels.LABEL_INPUTS: signing.inputs_digest,
        image_labels.LABEL_PLATFORM: platform,
        "org.opencontainers.image.revision": signing.commit,
        "org.opencontainers.image.version": "v1",
    }
    found.update(changes)
    return found


def sbom_for(image: str, platform: str) -> bytes:
    """A valid CycloneDX 1.6 SBOM naming the image it describes, as describe's does."""
    return (
        json.dumps(
            {
                "bomFormat": "CycloneDX",
                "specVersion": "1.6",
                "version": 1,
                "metadata": {
                    "component": {
                        "type": "container",
                        "name": "buildbox-demo",
                        "version": "v1",
                        "bom-ref": f"image:demo@v1:{platform}",
                        "properties": [
                            {"name": "buildbox:image-digest", "value": image},
                            {"name": "buildbox:platform", "value": platform},
                        ],
                    }
                },
            },
            indent=2,
        )
        + "\n"
    ).encode()


@dataclass(frozen=True)
class HandPushed:
    index: str
    images: dict[str, str]
    sboms: dict[str, bytes]


def push_by_hand(
    signing: Signing, changes: dict[str, str] | None = None, sbom: bool = True
) -> HandPushed:
    """What `--push-only` leaves in the registry: each platform image (labelled as a build of
    the checkout, but for ``changes``) with its SBOM referrer, and the index; no tag."""
    images, sboms, pairs = {}, {}, []
    with Client(signing.host) as client:
        for platform in PLATFORMS:
            tar = io.BytesIO()
            with tarfile.open(fileobj=tar, mode="w") as archive:
                data = uuid.uuid4().hex.encode()  # content no other test shares
                entry = tarfile.TarInfo("marker")
                entry.size = len(data)
                archive.addfile(entry, io.BytesIO(data))
            layer = gzip.compress(tar.getvalue(), mtime=0)
            config = json.dumps(
                {"architecture": platform.split("/")[1], "os": "linux",
                 "config": {"Labels": image_labels_for(signing, platform, **(changes or {}))},
                 "rootfs": {"type": "layers", "diff_ids": [digest_of(tar.getvalue())]}}
            ).encode()  # fmt: skip
            manifest = image_manifest(
                Descriptor.of(OCI_CONFIG, config), [Descriptor.of(OCI_LAYER_GZIP, layer)]
            )
            for blob in (config, layer):
                client.upload_blob(signing.repository, digest_of(blob), blob)
            digest = digest_of(manifest)
            client.put_manifest(signing.repository, digest, manifest, OCI_MANIFEST)
            descriptor = Descriptor.of(OCI_MANIFEST, manifest)
            images[platform] = digest
            pairs.append((platform, descriptor))
            if sbom:
                sboms[platform] = sbom_for(digest, platform)
                referrers.attach_sbom(
                    client, signing.repository, descriptor, sboms[platform],
                    f"v1-{platform.replace('/', '-')}.cdx.json", CREATED,
                )  # fmt: skip
        index = documents.index_manifest(pairs)
        client.put_manifest(signing.repository, digest_of(index), index, OCI_INDEX)
    return HandPushed(digest_of(index), images, sboms)


def tag_of(signing: Signing, tag: str) -> str | None:
    with Client(signing.host) as client:
        return client.manifest_digest(signing.repository, tag)


def assert_nothing_signed_tagged_or_recorded(signing: Signing, pushed: HandPushed) -> None:
    assert tag_of(signing, "v1") is None
    assert tag_of(signing, pushed.index.replace(":", "-") + ".sig") is None
    assert not (signing.root / record.RECORD_FILE).exists()
    assert not (signing.root / "sbom").exists()


@pytest.mark.integration
def test_sign_digest_signs_tags_and_records_what_was_pushed(signing: Signing) -> None:
    pushed = push_by_hand(signing)
    result = run_cli(signing.root, "release", "demo", f"--sign-digest={pushed.index}")
    assert result.returncode == 0, result.stdout + result.stderr
    reference = f"{signing.name}:v1@{pushed.index}"
    assert f"released {reference}" in result.stdout
    assert tag_of(signing, "v1") == pushed.index

    [entry] = record.load(
        replace(settings_for(signing.root), registry=signing.name.rsplit("/", 1)[0])
    )
    assert (entry.box, entry.version, entry.reference) == ("demo", "1", reference)
    assert (entry.inputs_digest, entry.revision) == (signing.inputs_digest, signing.commit)
    assert {p: f.digest for p, f in entry.platforms.items()} == pushed.images
    for platform, facts in entry.platforms.items():
        written = (signing.root / facts.sbom_path).read_bytes()
        assert written == pushed.sboms[platform], "sbom/ holds the SBOM referrer as pushed"
        assert facts.sbom_digest == digest_of(written)

    checked = run_cli(signing.root, "verify-release", "demo", f"--key={signing.public_key}")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"verify-release: {reference} is signed, attested and as recorded" in checked.stdout

    again = run_cli(signing.root, "release", "demo", f"--sign-digest={pushed.index}")
    assert again.returncode == 0, again.stderr
    assert f"demo v1 is already released: {reference}" in again.stdout


@pytest.mark.integration
@pytest.mark.parametrize(
    ("label", "field", "value"),
    [
        ("org.opencontainers.image.revision", "revision", "2" * 40),
        (image_labels.LABEL_INPUTS, "inputs digest", "sha256:" + "e" * 64),
        (image_labels.LABEL_VERSION, "version", "7"),
        (image_labels.LABEL_BOX, "box", "other"),
    ],
)
def test_an_image_not_built_from_this_checkout_is_refused_in_one_line(
    signing: Signing, label: str, field: str, value: str
) -> None:
    pushed = push_by_hand(signing, {label: value})
    result = run_cli(signing.root, "release", "demo", f"--sign-digest={pushed.index}")
    assert result.returncode == 1
    expected = {
        "revision": signing.commit,
        "inputs digest": signing.inputs_digest,
        "version": "1",
        "box": "demo",
    }[field]
    amd64 = pushed.images["linux/amd64"]
    assert result.stderr.strip().splitlines() == [
        (
            f"buildbox: {signing.name}@{amd64} (linux/amd64): its {field} label ({label}) is "
            f"{value}, this checkout's is {expected}: it was not built from this checkout; "
            "nothing was signed or tagged"
        )
    ]
    assert "Traceback" not in result.stderr
    assert_nothing_signed_tagged_or_recorded(signing, pushed)


@pytest.mark.integration
def test_an_image_without_its_sbom_referrer_is_refused(signing: Signing) -> None:
    pushed = push_by_hand(signing, sbom=False)
    result = run_cli(signing.root, "release", "demo", f"--sign-digest={pushed.index}")
    assert result.returncode == 1
    amd64 = pushed.images["linux/amd64"]
    assert result.stderr.strip().splitlines() == [
        (
            f"buildbox: {signing.name}@{amd64} (linux/amd64) has no SBOM referrer; push it "
            "with `invoke release --push-only` again"
        )
    ]
    assert_nothing_signed_tagged_or_recorded(signing, pushed)


@pytest.mark.integration
def test_a_digest_the_registry_does_not_hold_is_refused(signing: Signing) -> None:
    absent = "sha256:" + "f" * 64
    result = run_cli(signing.root, "release", "demo", f"--sign-digest={absent}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        (
            f"buildbox: {signing.name}@{absent} is not in the registry; run `invoke release "
            "--push-only` first and give the index digest it printed"
        )
    ]


@pytest.mark.integration
def test_a_manifest_that_does_not_hash_to_its_digest_is_refused(
    signing: Signing, registry: Registry
) -> None:
    """The registry's storage altered under the index (a registry, mirror or proxy serving other
    content for a digest): the sign stage hashes what it reads and signs nothing."""
    pushed = push_by_hand(signing)
    hexdigest = pushed.index.removeprefix("sha256:")
    stored = next((registry.workdir / "data").rglob(f"blobs/sha256/{hexdigest[:2]}/{hexdigest}"))
    body = json.loads((stored / "data").read_bytes())
    body["manifests"].reverse()  # the same entries, other bytes
    other = json.dumps(body).encode()
    (stored / "data").write_bytes(other)
    result = run_cli(signing.root, "release", "demo", f"--sign-digest={pushed.index}")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"buildbox: the registry {signing.host} served other content for ")
    assert f"{signing.name}@{pushed.index}: it hashes to {digest_of(other)}" in line
    assert_nothing_signed_tagged_or_recorded(signing, pushed)


# --- both stages, with an engine -----------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.engine
def test_push_only_pushes_by_digest_and_the_sign_stage_completes_it(
    publishing: FixtureProject,  # noqa: F811
    registry: Registry,
) -> None:
    """--push-only leaves the images, SBOM referrers and nothing else: no tag, no signature, no
    record; --sign-digest with the digest it printed makes the release `invoke release` would."""
    root = publishing.root
    pushed = run_cli(root, "release", "--box=fixture", "--push-only")
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    [line] = pushed.stdout.splitlines()
    digests = json.loads(line)
    index = digests["index"]
    assert set(digests) == {
        "box", "version", "inputs_digest", "repository", "index", "platforms", "escrow"
    }  # fmt: skip
    assert digests["escrow"].startswith(f"{publishing.registry}/fixture@sha256:")
    assert (digests["box"], digests["version"]) == ("fixture", "1")
    assert digests["repository"] == f"{publishing.registry}/fixture"
    assert digests["platforms"] == {"linux/amd64": index}, "one platform: the image itself"
    repository = digests["repository"].split("/", 1)[1]
    assert tag_digest(registry, repository, "v1") is None
    assert tag_digest(registry, repository, index.replace(":", "-") + ".sig") is None
    assert tag_digest(registry, repository, index) == index
    assert not (root / record.RECORD_FILE).exists()
    assert not (root / "sbom").exists()
    assert "preparing linux/amd64" in pushed.stderr

    signed = run_cli(root, "release", "--box=fixture", f"--sign-digest={index}")
    assert signed.returncode == 0, signed.stdout + signed.stderr
    [entry] = record.load(replace(settings_for(root), registry=publishing.registry))
    assert entry.reference == f"{digests['repository']}:v1@{index}"
    assert entry.inputs_digest == digests["inputs_digest"]
    assert entry.escrow == digests["escrow"], "the sign stage found the escrow --push-only made"
    assert tag_digest(registry, repository, "v1") == index
    assert (root / entry.platforms["linux/amd64"].sbom_path).is_file()
    again = run_cli(root, "release", "--box=fixture")
    assert f"fixture v1 is already released: {entry.reference}" in again.stdout


@pytest.mark.integration
def test_one_platform_image_of_a_two_platform_box_is_refused(signing: Signing) -> None:
    """Given the amd64 image instead of the index: the release would lack arm64."""
    pushed = push_by_hand(signing)
    amd64 = pushed.images["linux/amd64"]
    result = run_cli(signing.root, "release", "demo", f"--sign-digest={amd64}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        (
            f"buildbox: {signing.name}@{amd64} is not what a release of linux/amd64, "
            f"linux/arm64 pushes (a {OCI_MANIFEST} over 1 image(s)); give the index digest "
            "`invoke release --push-only` printed"
        )
    ]
    assert_nothing_signed_tagged_or_recorded(signing, pushed)
