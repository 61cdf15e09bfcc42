"""Escrow at release: every input in the registry beside the release, listed in one inputs
manifest that referrers clients find; what it costs the next time; what audit and the sign stage
hold it to. A real loopback registry, no engine."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from buildbox.build import labels as image_labels
from buildbox.define import project as project_stage
from buildbox.define.lock import Index, LockedPackage, PackageLock, PlatformLock, Source
from buildbox.digests import digest_of
from buildbox.errors import BuildboxError
from buildbox.oci import referrers
from buildbox.oci.documents import OCI_CONFIG, OCI_MANIFEST, Descriptor, image_manifest
from buildbox.oci.inputs import INPUTS_TYPE, Input
from buildbox.oci.registry import DigestMismatchError
from buildbox.oci.registry import Registry as Client
from buildbox.release import record
from buildbox.release.escrow import (
    escrow_problems,
    escrow_release,
    escrowed_blobs,
    find_escrow,
    read_escrow,
    release_inputs,
)
from buildbox.release.signing import provenance_mismatch
from conftest import missing
from projects import component, make_project, run_cli, settings_for, settle
from publishing import PASSWORD, commit_all, git, key_pair, tiny_image
from registry import Registry

CREATED = "2026-01-01T00:00:00Z"
SOURCE = "https://github.com/example-org/boxes"
COMMIT = "1" * 40


@dataclasses.dataclass(frozen=True)
class Box:
    """What escrow_release reads of a box."""

    name: str = "demo"
    version: str = "1"


def files(directory: Path, *contents: bytes) -> dict[str, Path]:
    """Each content in a file named by its sha256: sha256 -> path (a verified cache's shape)."""
    directory.mkdir(parents=True, exist_ok=True)
    found = {}
    for data in contents:
        sha = hashlib.sha256(data).hexdigest()
        (directory / sha).write_bytes(data)
        found[sha] = directory / sha
    return found


def as_inputs(paths: dict[str, Path], kind: str = "component") -> list[Input]:
    return [
        Input(sha, path.stat().st_size, f"https://example.org/{sha[:8]}.tar.gz", kind,
              f"tool-{sha[:4]}", "1.0", ("linux/amd64",))
        for sha, path in paths.items()
    ]  # fmt: skip


def subject(client: Client, repository: str) -> Descriptor:
    """A small image pushed by digest: what a release's inputs manifest refers to."""
    manifest, blobs = tiny_image()
    for digest, blob in blobs:
        client.upload_blob(repository, digest, blob)
    client.put_manifest(repository, digest_of(manifest), manifest, OCI_MANIFEST)
    return Descriptor.of(OCI_MANIFEST, manifest)


def unique(content: str = "") -> bytes:
    return f"{content}{uuid.uuid4().hex}".encode() * 100


def repository() -> str:
    return f"t{uuid.uuid4().hex[:8]}/demo"


# --- what a release escrows ----------------------------------------------------------------------


def test_release_inputs_are_every_artifact_package_and_index_once_with_their_platforms(
    tmp_path: Path,
) -> None:
    tarball, deb, index = b"tool tarball", b"a .deb", b"Packages"
    sha = {name: hashlib.sha256(data).hexdigest() for name, data in
           (("tarball", tarball), ("deb", deb), ("index", index))}  # fmt: skip
    tool = component(sha256=sha["tarball"])
    tool["artifacts"]["linux/arm64"] = dict(tool["artifacts"]["linux/amd64"])  # one file, both
    root = make_project(
        tmp_path / "p",
        components={"tool": tool},
        boxes={"demo": {"version": 1, "base": "127.0.0.1:5000/base@sha256:" + "c" * 64,
                        "platforms": ["linux/amd64", "linux/arm64"], "components": ["tool"]}},
    )  # fmt: skip
    project = project_stage.load(settings_for(root))
    package = LockedPackage("hello", "2.10-3", "amd64", "http://user:secret@deb.example/pool/h.deb",
                            sha["deb"], len(deb))  # fmt: skip
    indices = (Index("main/binary-amd64/Packages.xz", sha["index"], len(index)),)
    source = Source("http://deb.example", "trixie", "InRelease", (), indices)
    lock = PackageLock("base", ("hello",), {"linux/amd64": PlatformLock("base", (package,),
                                                                        (source,))})  # fmt: skip
    box = dataclasses.replace(project.boxes[0], lock=lock)
    fetched = files(tmp_path / "cache", tarball, deb, index)

    found = {each.kind: each for each in release_inputs(project, box, fetched)}

    assert sorted(found) == ["component", "index", "package"]
    assert found["component"] == Input(
        sha["tarball"], len(tarball), "https://example.org/tool-1.0.tar.gz", "component",
        "tool", "1.0", ("linux/amd64", "linux/arm64"),
    )  # fmt: skip
    assert found["package"] == Input(
        sha["deb"], len(deb), "http://***@deb.example/pool/h.deb", "package", "hello", "2.10-3",
        ("linux/amd64",),
    )  # fmt: skip
    assert found["index"].url == (
        f"http://deb.example/dists/trixie/main/binary-amd64/by-hash/SHA256/{sha['index']}"
    )
    missing = {k: v for k, v in fetched.items() if k != sha["deb"]}
    with pytest.raises(BuildboxError, match=f"hello 2.10-3 .linux/amd64. sha256:{sha['deb']} "
                       "was not fetched"):  # fmt: skip
        release_inputs(project, box, missing)


# --- escrow into a real registry -----------------------------------------------------------------


def test_escrow_pushes_every_input_and_the_manifest_and_referrers_clients_find_it(
    registry: Registry, tmp_path: Path
) -> None:
    repo = repository()
    paths = files(tmp_path / "cache", unique("a"), unique("b"), unique("c"))
    inputs = as_inputs(paths)
    with Client(registry.host) as client:
        release = subject(client, repo)
        done = escrow_release(client, repo, release, Box(), inputs, paths, CREATED)
        assert all(client.has_blob(repo, each.digest) for each in inputs)
        [(digest, listed)] = find_escrow(client, repo, release.digest)
        assert done.reference == f"{registry.host}/{repo}@{digest}"
        assert read_escrow(client, done.reference, release.digest) == sorted(
            inputs, key=lambda i: i.sha256
        )
        assert listed == read_escrow(client, done.reference)
    total = sum(each.size for each in inputs)
    assert (done.inputs, done.size, done.uploaded, done.uploaded_size) == (3, total, 3, total)
    assert done.line() == (
        f"escrowed 3 input(s), {total / 1024:.1f} KiB, in {done.reference}: 3 uploaded "
        f"({total / 1024:.1f} KiB), 0 already in the registry"
    )

    if shutil.which("oras") is None:
        if os.environ.get("BUILDBOX_REQUIRE_DOCKER"):
            pytest.fail("oras is not installed (BUILDBOX_REQUIRE_DOCKER=1)")
        return
    discovered = subprocess.run(
        ["oras", "discover", "--plain-http", "--distribution-spec", "v1.1-referrers-tag",
         "--artifact-type", INPUTS_TYPE, "--format", "json",
         f"{registry.host}/{repo}@{release.digest}"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    [referrer] = json.loads(discovered.stdout)["manifests"]
    assert (referrer["artifactType"], referrer["digest"]) == (INPUTS_TYPE, digest)


def test_the_next_escrow_uploads_only_what_changed(registry: Registry, tmp_path: Path) -> None:
    repo = repository()
    kept = files(tmp_path / "one", unique("a"), unique("b"))
    changed = files(tmp_path / "two", unique("new") * 3)
    with Client(registry.host) as client:
        first = escrow_release(client, repo, subject(client, repo), Box(), as_inputs(kept), kept,
                               CREATED)  # fmt: skip
        second_paths = {**dict(list(kept.items())[:1]), **changed}
        second_inputs = as_inputs(second_paths)
        second = escrow_release(
            client, repo, subject(client, repo), Box(version="2"), second_inputs, second_paths,
            CREATED,
        )  # fmt: skip
    [new] = changed.values()
    assert first.uploaded == 2
    assert (second.uploaded, second.uploaded_size) == (1, new.stat().st_size)
    assert second.inputs == 2


def test_escrow_into_a_separate_repository_mounts_what_another_release_escrowed(
    registry: Registry, tmp_path: Path
) -> None:
    repo, elsewhere = repository(), repository()
    paths = files(tmp_path / "cache", unique("a"), unique("b"))
    inputs = as_inputs(paths)
    with Client(registry.host) as client:
        release = subject(client, repo)
        first = escrow_release(client, repo, release, Box(), inputs, paths, CREATED)
        recorded = dataclasses.replace(released(registry.host, repo, release.digest),
                                       escrow=first.reference)  # fmt: skip
        mounts = escrowed_blobs(client, [recorded], elsewhere)
        assert mounts == {each.digest: repo for each in inputs}
        again = escrow_release(client, elsewhere, release, Box(), inputs, paths, CREATED,
                               mounts=mounts)  # fmt: skip
        assert (again.uploaded, again.uploaded_size) == (0, 0)
        assert again.reference.startswith(f"{registry.host}/{elsewhere}@")
        assert all(client.has_blob(elsewhere, each.digest) for each in inputs)
        [(_, listed)] = find_escrow(client, elsewhere, release.digest)
        assert len(listed) == 2
        assert escrow_problems(client, dataclasses.replace(recorded, escrow=again.reference)) == []


def released(host: str, repo: str, digest: str) -> record.Release:
    return record.Release(
        box="demo", version="1", reference=f"{host}/{repo}:v1@{digest}", digest=digest,
        inputs_digest="sha256:" + "d" * 64, revision=COMMIT,
        platforms={"linux/amd64": record.PlatformRelease(digest, "sbom/demo/v1.cdx.json",
                                                         "sha256:" + "e" * 64)},
    )  # fmt: skip


def stored(registry: Registry, digest: str) -> Path:
    """Where the registry keeps the blob (or manifest) ``digest`` on disk."""
    hexdigest = digest.removeprefix("sha256:")
    return next((registry.workdir / "data").rglob(f"blobs/sha256/{hexdigest[:2]}/{hexdigest}"))


def test_read_escrow_refuses_content_that_does_not_hash_to_its_digest(
    registry: Registry, tmp_path: Path
) -> None:
    repo = repository()
    paths = files(tmp_path / "cache", unique())
    with Client(registry.host) as client:
        release = subject(client, repo)
        done = escrow_release(client, repo, release, Box(), as_inputs(paths), paths, CREATED)
        digest = done.reference.rsplit("@", 1)[1]
        data = stored(registry, digest) / "data"
        body = json.loads(data.read_bytes())
        body["layers"][0]["annotations"]["dev.buildbox.input.url"] = "https://evil.invalid/x"
        data.write_bytes(json.dumps(body).encode())
        with pytest.raises(DigestMismatchError, match="served other content"):
            read_escrow(client, done.reference)
        entry = dataclasses.replace(released(registry.host, repo, release.digest),
                                    escrow=done.reference)  # fmt: skip
        problems = escrow_problems(client, entry)
        assert len(problems) == 1
        assert "served other content" in problems[0]


def test_read_escrow_refuses_the_inputs_manifest_of_another_subject(
    registry: Registry, tmp_path: Path
) -> None:
    repo = repository()
    paths = files(tmp_path / "cache", unique())
    other = "sha256:" + "f" * 64
    with Client(registry.host) as client:
        release = subject(client, repo)
        done = escrow_release(client, repo, release, Box(), as_inputs(paths), paths, CREATED)
        with pytest.raises(BuildboxError) as refused:
            read_escrow(client, done.reference, other)
        assert str(refused.value) == (
            f"{done.reference}: the inputs manifest is for {release.digest}, not {other}"
        )
        wrong = dataclasses.replace(released(registry.host, repo, other), escrow=done.reference)
        assert escrow_problems(client, wrong) == [
            f"escrow: {done.reference}: the inputs manifest is for {release.digest}, not {other}"
        ]


def test_escrow_problems_name_each_missing_input(registry: Registry, tmp_path: Path) -> None:
    repo = repository()
    paths = files(tmp_path / "cache", unique("kept"), unique("lost"))
    inputs = as_inputs(paths)
    with Client(registry.host) as client:
        release = subject(client, repo)
        done = escrow_release(client, repo, release, Box(), inputs, paths, CREATED)
        entry = dataclasses.replace(released(registry.host, repo, release.digest),
                                    escrow=done.reference)  # fmt: skip
        assert escrow_problems(client, entry) == []
        lost = inputs[1]
        shutil.rmtree(stored(registry, lost.digest))
        assert escrow_problems(client, entry) == [
            (
                f"escrow: component {lost.name} 1.0 ({lost.digest}) is missing from "
                f"{registry.host}/{repo}"
            )
        ]
        absent = done.reference.rsplit("@", 1)[0] + "@sha256:" + "0" * 64
        assert escrow_problems(client, dataclasses.replace(entry, escrow=absent)) == [
            f"escrow: the inputs manifest {absent} is not in the registry"
        ]
        assert escrow_problems(client, dataclasses.replace(entry, escrow=None)) == []


# --- provenance ---------------------------------------------------------------------------------


def predicate(inputs_manifest: Any) -> dict[str, Any]:
    return {
        "buildDefinition": {
            "externalParameters": {
                "box": "demo", "version": "1",
                "source": {"uri": SOURCE, "digest": {"gitCommit": COMMIT}},
            },
            "internalParameters": {
                "inputsDigest": "sha256:" + "d" * 64,
                "platforms": {"linux/amd64": "sha256:" + "a" * 64},
                "inputsManifest": inputs_manifest,
            },
        }
    }  # fmt: skip


def test_provenance_names_the_inputs_manifest_and_a_wrong_one_is_caught() -> None:
    entry = dataclasses.replace(
        released("r.example", "boxes/demo", "sha256:" + "a" * 64),
        escrow="r.example/boxes/demo@sha256:" + "b" * 64,
    )
    right, wrong = "sha256:" + "b" * 64, "sha256:" + "c" * 64
    assert provenance_mismatch(predicate(right), entry, SOURCE, COMMIT) is None
    assert provenance_mismatch(predicate(wrong), entry, SOURCE, COMMIT) == (
        f"provenance names inputs manifest {wrong}, the release record says {right}"
    )
    assert provenance_mismatch(predicate(None), entry, SOURCE, COMMIT) == (
        f"provenance names inputs manifest nothing, the release record says {right}"
    )
    unescrowed = dataclasses.replace(entry, escrow=None)
    assert provenance_mismatch(predicate(None), unescrowed, SOURCE, COMMIT) is None
    assert provenance_mismatch(predicate(right), unescrowed, SOURCE, COMMIT) == (
        f"provenance names inputs manifest {right}, the release record says nothing"
    )


# --- invoke escrow ------------------------------------------------------------------------------


def test_invoke_escrow_lists_a_recorded_release_s_inputs(
    registry: Registry, tmp_path: Path
) -> None:
    root = make_project(tmp_path / "p")
    prefix = f"{registry.host}/t{uuid.uuid4().hex[:8]}"
    settle(root / "invoke.yaml", registry=f'"{prefix}"')
    repo = f"{prefix.split('/', 1)[1]}/demo"
    paths = files(tmp_path / "cache", b"x" * 2048)
    [sha] = paths
    inputs = [Input(sha, 2048, "https://example.org/tool-1.0.tar.gz", "component", "tool",
                    "1.0", ("linux/amd64", "linux/arm64"))]  # fmt: skip
    with Client(registry.host) as client:
        release = subject(client, repo)
        done = escrow_release(client, repo, release, Box(), inputs, paths, CREATED)
    entry = released(registry.host, repo, release.digest)
    entry = dataclasses.replace(entry, escrow=done.reference,
                                reference=f"{prefix}/demo:v1@{release.digest}")  # fmt: skip
    unescrowed = dataclasses.replace(entry, version="2", escrow=None,
                                     reference=f"{prefix}/demo:v2@{release.digest}")  # fmt: skip
    record.add(root, [], entry)
    record.add(root, [entry], unescrowed)

    listed = run_cli(root, "escrow", "--box=demo", "--version=1")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    header, row, total = listed.stdout.splitlines()
    assert header.split() == ["KIND", "NAME", "VERSION", "PLATFORMS", "SIZE", "SHA256", "URL"]
    assert row.split() == ["component", "tool", "1.0", "linux/amd64,linux/arm64", "2.0", "KiB",
                           f"{sha[:12]}…", "https://example.org/tool-1.0.tar.gz"]  # fmt: skip
    assert total == f"1 input(s), 2.0 KiB, in {done.reference}"

    latest = run_cli(root, "escrow", "--box=demo")
    assert latest.returncode == 1
    assert latest.stderr.strip().splitlines() == [
        (
            f"buildbox: demo v2 was released without escrow ({prefix}/demo:v2@{release.digest}): "
            "its inputs are not in the registry (released before escrow, or with buildbox.escrow "
            "off)"
        )
    ]
    assert "Traceback" not in latest.stderr

    none = run_cli(root, "escrow", "--box=other")
    assert none.returncode == 1
    assert none.stderr.strip().splitlines() == [
        f"buildbox: no release of other (any version) in {record.RECORD_FILE}"
    ]


# --- the sign stage holds the escrow to the checkout (no key: nothing needs cosign) --------------


@dataclasses.dataclass(frozen=True)
class Pushed:
    root: Path
    host: str
    repository: str
    digest: str
    tool: bytes  # the component artifact's bytes

    @property
    def name(self) -> str:
        return f"{self.host}/{self.repository}"

    def sign(self) -> Any:
        return run_cli(self.root, "release", "demo", f"--sign-digest={self.digest}")


@pytest.fixture
def pushed(registry: Registry, tmp_path: Path) -> Pushed:
    """What `--push-only` leaves of a one-platform box with one component, its inputs not yet
    escrowed: the image (labelled as built from the checkout) and its SBOM referrer."""
    tool = unique("tool")
    root = make_project(
        tmp_path / "p", components={"tool": component(sha256=hashlib.sha256(tool).hexdigest())}
    )
    prefix = f"{registry.host}/t{uuid.uuid4().hex[:8]}"
    settle(root / "invoke.yaml", registry=f'"{prefix}"')
    git(root, "init", "-q")
    commit_all(root, "demo v1")
    [listed] = json.loads(run_cli(root, "list", "--json").stdout)
    commit = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    labels = {
        image_labels.LABEL_BOX: "demo",
        image_labels.LABEL_VERSION: "1",
        image_labels.LABEL_INPUTS: listed["inputs_digest"],
        image_labels.LABEL_PLATFORM: "linux/amd64",
        "org.opencontainers.image.revision": commit,
    }
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": labels},
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()  # fmt: skip
    manifest = image_manifest(Descriptor.of(OCI_CONFIG, config), [])
    repo = f"{prefix.split('/', 1)[1]}/demo"
    with Client(registry.host) as client:
        client.upload_blob(repo, digest_of(config), config)
        client.put_manifest(repo, digest_of(manifest), manifest, OCI_MANIFEST)
        sbom = {
            "bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
            "metadata": {"component": {
                "type": "container", "name": "buildbox-demo", "version": "v1",
                "bom-ref": "image:demo@v1:linux/amd64",
                "properties": [{"name": "buildbox:image-digest", "value": digest_of(manifest)}],
            }},
        }  # fmt: skip
        referrers.attach_sbom(
            client, repo, Descriptor.of(OCI_MANIFEST, manifest), json.dumps(sbom).encode(),
            "v1-linux-amd64.cdx.json", CREATED,
        )  # fmt: skip
    return Pushed(root, registry.host, repo, digest_of(manifest), tool)


def escrow_of(pushed: Pushed, tmp_path: Path, *contents: bytes) -> str:
    paths = files(tmp_path / "escrowed", *contents)
    inputs = [dataclasses.replace(i, name="tool") for i in as_inputs(paths)]
    with Client(pushed.host) as client:
        found = client.get_manifest(pushed.repository, pushed.digest)
        assert found is not None
        subject = Descriptor.of(OCI_MANIFEST, found[0])
        done = escrow_release(client, pushed.repository, subject, Box(), inputs, paths, CREATED)
    return done.reference


def test_the_sign_stage_records_the_escrow_that_lists_this_checkout_s_inputs(
    pushed: Pushed, registry: Registry, tmp_path: Path
) -> None:
    escrowed = escrow_of(pushed, tmp_path, pushed.tool)
    result = pushed.sign()
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"inputs escrowed in {escrowed} (list them: invoke escrow demo)" in result.stdout
    [entry] = json.loads((pushed.root / record.RECORD_FILE).read_text())["releases"]
    assert entry["escrow"] == escrowed

    audited = run_cli(pushed.root, "audit")
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert "NOTE" not in audited.stdout

    shutil.rmtree(stored(registry, digest_of(pushed.tool)))
    drifted = run_cli(pushed.root, "audit")
    assert drifted.returncode == 1
    assert (
        f"      escrow: component tool 1.0 ({digest_of(pushed.tool)}) is missing from {pushed.name}"
    ) in drifted.stdout.splitlines()
    # The sign stage finds the recorded release incomplete, and will not sign it so.
    again = pushed.sign()
    assert again.returncode == 1
    assert "is recorded but incomplete (escrow: component tool 1.0" in again.stdout
    assert again.stderr.strip().splitlines() == [
        (
            f"buildbox: {escrowed}: 1 escrowed input(s) are missing, e.g. component tool 1.0 "
            f"(linux/amd64) {digest_of(pushed.tool)}; push with `invoke release --push-only` "
            "again; nothing was signed or tagged"
        )
    ]


def test_with_escrow_off_nothing_is_escrowed_and_audit_notes_it(
    pushed: Pushed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INVOKE_BUILDBOX_ESCROW", "false")
    result = pushed.sign()
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "not escrowed: buildbox.escrow is false, so no input of this release is kept in the "
        "registry"
    ) in result.stdout.splitlines()
    [entry] = json.loads((pushed.root / record.RECORD_FILE).read_text())["releases"]
    assert entry["escrow"] is None
    audited = run_cli(pushed.root, "audit")
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert (
        f"NOTE  {entry['reference']}: not escrowed: released before escrow or with escrow off"
    ) in audited.stdout.splitlines()


def test_the_sign_stage_refuses_a_release_without_its_escrow(pushed: Pushed) -> None:
    result = pushed.sign()
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        (
            f"buildbox: {pushed.name} has no inputs manifest for {pushed.digest} (buildbox.escrow "
            "is on): push with `invoke release --push-only` again; nothing was signed or tagged"
        )
    ]
    assert not (pushed.root / record.RECORD_FILE).exists()


def test_the_sign_stage_refuses_an_escrow_of_other_inputs(pushed: Pushed, tmp_path: Path) -> None:
    other = unique("other")
    escrowed = escrow_of(pushed, tmp_path, other)
    result = pushed.sign()
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        (
            f"buildbox: {escrowed} does not list exactly this checkout's inputs: 1 not this "
            f"checkout's, 1 of this checkout's missing (e.g. {digest_of(other)}); nothing was "
            "signed or tagged"
        )
    ]
    assert "Traceback" not in result.stderr
    assert not (pushed.root / record.RECORD_FILE).exists()


@pytest.mark.integration
def test_a_signed_release_s_inputs_manifest_is_signed_and_verified(
    pushed: Pushed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("cosign") is None:
        missing("cosign is not installed (Debian 13: apt-get install cosign)")
    private, public = key_pair(tmp_path / "keys")
    monkeypatch.setenv("COSIGN_PASSWORD", PASSWORD)
    monkeypatch.setenv("INVOKE_BUILDBOX_SIGNING_KEY", str(private))
    monkeypatch.setenv("INVOKE_BUILDBOX_TRANSPARENCY_LOG", "false")
    escrowed = escrow_of(pushed, tmp_path, pushed.tool)
    result = pushed.sign()
    assert result.returncode == 0, result.stdout + result.stderr

    checked = run_cli(pushed.root, "verify-release", "demo", f"--key={public}")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    lines = checked.stdout.splitlines()
    assert f"PASS  signature (inputs manifest): {escrowed} is signed" in lines
    assert f"PASS  inputs manifest: {escrowed} holds every input" in lines
    assert "PASS  provenance attestation: signed" in checked.stdout
    verified = subprocess.run(
        ["cosign", "verify", "--key", str(public), "--insecure-ignore-tlog=true",
         "--allow-http-registry=true", escrowed],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
