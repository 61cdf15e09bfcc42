"""The package lock keeps its proof: a tiny archive signed with a throw-away key (real gpg), its
index served on 127.0.0.1, and `invoke check`'s chain re-verified: signature with the pinned
keyring only -> the index's hash in the InRelease -> the index -> every locked package."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import lzma
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
from debian import deb822

from artifact_server import ArtifactServer
from buildbox.build.engine import Engine
from buildbox.define import project
from buildbox.define.lock import (
    LOCK_FILE,
    PROOF_DIR,
    Index,
    LockedPackage,
    PackageLock,
    PlatformLock,
    Source,
    keyring_files,
    verify_inrelease,
)
from buildbox.errors import BuildboxError, Problem
from buildbox.fetch import Fetcher
from buildbox.oci.push import SILENT
from buildbox.output import LogProgress
from buildbox.release.check import check_project
from buildbox.release.release import push_box
from buildbox.resolve import parse_sources, proof_name
from buildbox.source import Revision
from projects import BASE, REPO, make_project, run_cli, settings_for, settle, write_yaml
from registry import Registry
from test_fetch_escrow import escrow

SUITE = "test"
INDEX_PATH = "main/binary-amd64/Packages.xz"
DEBS = {"make": ("4.3-4.1", b"make's bytes\n"), "libfoo1": ("1:2.0-1", b"libfoo's bytes\n")}


def gpg(home: Path, *arguments: str, data: bytes | None = None) -> bytes:
    done = subprocess.run(
        ["gpg", "--batch", "--homedir", str(home), "--pinentry-mode", "loopback",
         "--passphrase", "", *arguments],
        input=data, capture_output=True, check=True,
    )  # fmt: skip
    return done.stdout


@dataclass(frozen=True)
class Key:
    home: Path
    fingerprint: str

    def clearsign(self, text: bytes) -> bytes:
        return gpg(self.home, "--clearsign", data=text)

    def export(self) -> bytes:
        return gpg(self.home, "--export", self.fingerprint)


def make_key(home: Path, name: str) -> Key:
    home.mkdir(mode=0o700)
    gpg(home, "--quick-gen-key", f"{name} <{name}@buildbox.invalid>", "ed25519", "sign", "never")
    listed = gpg(home, "--list-keys", "--with-colons").decode()
    fingerprint = next(line.split(":")[9] for line in listed.splitlines() if line.startswith("fpr"))
    return Key(home, fingerprint)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Key, Key]:
    """The archive's key (pinned by the project) and another one (not pinned)."""
    scratch = tmp_path_factory.mktemp("keys")
    return make_key(scratch / "archive", "archive"), make_key(scratch / "other", "other")


@dataclass
class Archive:
    """A one-suite archive on the artifact server, and a project whose box locks from it."""

    root: Path
    server: ArtifactServer
    url: str
    lock: PackageLock
    keys: tuple[Key, Key]
    #: The Release the InRelease signs.
    release: bytes

    def check(self) -> list[Problem]:
        settings = dataclasses.replace(settings_for(self.root), fetch_retries=0)
        _, found = check_project(settings, Fetcher(settings, LogProgress(io.StringIO())))
        return found

    def edit(self, change: Callable[[dict[str, object]], None]) -> None:
        path = self.root / "buildboxes/demo" / LOCK_FILE
        document = json.loads(path.read_text())
        change(document)
        path.write_text(json.dumps(document))


def packages_index(url: str) -> tuple[bytes, list[LockedPackage]]:
    stanzas, locked = [], []
    for name, (version, data) in sorted(DEBS.items()):
        filename = f"pool/main/{name[0]}/{name}/{name}_{version.partition(':')[2] or version}"
        filename += "_amd64.deb"
        sha256 = hashlib.sha256(data).hexdigest()
        stanza = deb822.Packages(
            {"Package": name, "Version": version, "Architecture": "amd64",
             "Filename": filename, "Size": str(len(data)), "SHA256": sha256}
        )  # fmt: skip
        stanzas.append(stanza.dump())
        locked.append(LockedPackage(name, version, "amd64", f"{url}/{filename}", sha256, len(data)))
    return "\n".join(stanzas).encode(), locked


def release(indices: dict[str, bytes]) -> bytes:
    document = deb822.Release(
        {"Origin": "Test", "Suite": "testing", "Codename": SUITE, "Architectures": "amd64",
         "Components": "main", "Acquire-By-Hash": "yes"}
    )  # fmt: skip
    document["SHA256"] = [  # type: ignore[assignment]  # a multivalued field
        {"sha256": hashlib.sha256(data).hexdigest(), "size": str(len(data)), "name": name}
        for name, data in sorted(indices.items())
    ]
    return document.dump().encode()


@pytest.fixture
def archive(tmp_path: Path, artifacts: ArtifactServer, keys: tuple[Key, Key]) -> Archive:
    """A box ``demo`` whose lock is proven by the archive's signed InRelease."""
    root = make_project(tmp_path / "project")
    url = artifacts.url(f"{tmp_path.name}/debian")
    plain, locked = packages_index(url)
    compressed = lzma.compress(plain)
    sha256 = hashlib.sha256(compressed).hexdigest()
    directory = f"{tmp_path.name}/debian/dists/{SUITE}/main/binary-amd64"
    artifacts.add(f"{directory}/by-hash/SHA256/{sha256}", compressed)
    signed = release({"main/binary-amd64/Packages": plain, INDEX_PATH: compressed})
    inrelease = keys[0].clearsign(signed)
    keyring = root / "shared/keyrings/test"
    keyring.mkdir(parents=True)
    (keyring / "archive.gpg").write_bytes(keys[0].export())
    name = proof_name("127.0.0.1_debian_dists_test_InRelease", inrelease)
    (root / "buildboxes/demo" / PROOF_DIR).mkdir()
    (root / "buildboxes/demo" / PROOF_DIR / name).write_bytes(inrelease)
    source = Source(url, SUITE, name, (keys[0].fingerprint,),
                    (Index(INDEX_PATH, sha256, len(compressed)),))  # fmt: skip
    lock = PackageLock(
        BASE, ("make",),
        {"linux/amd64": PlatformLock("sha256:" + "e" * 64, tuple(locked), (source,))},
        keyring="shared/keyrings/test",
    )  # fmt: skip
    write_yaml(
        root / "buildboxes/demo/box.yaml",
        {"version": 1, "base": BASE, "platforms": ["linux/amd64"], "components": ["tool"],
         "packages": ["make"]},
    )  # fmt: skip
    (root / "buildboxes/demo" / LOCK_FILE).write_text(lock.render())
    return Archive(root, artifacts, url, lock, keys, signed)


def package(document: dict[str, object], name: str) -> dict[str, object]:
    platforms = document["platforms"]
    assert isinstance(platforms, dict)
    found: dict[str, object] = next(
        p for p in platforms["linux/amd64"]["packages"] if p["name"] == name
    )
    return found


def only(found: list[Problem]) -> str:
    assert len(found) == 1, "\n".join(map(str, found))
    return str(found[0])


def test_a_lock_its_signed_index_vouches_for_passes(archive: Archive) -> None:
    assert archive.check() == []


def test_a_zeroed_sha256_is_one_error_naming_the_package(archive: Archive) -> None:
    """On the code before the proof, `invoke check` said `3 box(es) and 11 component(s) are
    valid` for debian13's lock with make's sha256 zeroed, its URL on evil.invalid and git at
    another version."""
    archive.edit(lambda d: package(d, "make").update(sha256="0" * 64))
    message = only(archive.check())
    field = "platforms.linux/amd64.packages[1](make).sha256"
    assert message.startswith(f"buildboxes/demo/packages.lock: {field}: ")
    assert f"{'0' * 64} is not the signed index's sha256 " in message
    assert "run `invoke lock demo`" in message


def test_a_url_on_another_host_is_an_error(archive: Archive) -> None:
    archive.edit(
        lambda d: package(d, "make").update(
            # https: plain http to a host not allowed is refused before the proof is read
            url=str(package(d, "make")["url"]).replace("http://127.0.0.1", "https://evil.invalid")
        )
    )
    message = only(archive.check())
    assert "platforms.linux/amd64.packages[1](make).url: https://evil.invalid" in message
    assert "is not the signed index's http://127.0.0.1" in message


def test_another_version_is_an_error(archive: Archive) -> None:
    archive.edit(lambda d: package(d, "libfoo1").update(version="1:2.0-2"))
    message = only(archive.check())
    field = "platforms.linux/amd64.packages[0](libfoo1).version"
    assert f"{field}: 1:2.0-2 is not in the signed index, which " in message
    assert "has 1:2.0-1" in message


def test_an_inrelease_signed_by_a_key_not_pinned_is_an_error(archive: Archive) -> None:
    [name] = archive.lock.proofs
    proof = archive.root / "buildboxes/demo" / PROOF_DIR / name
    proof.write_bytes(archive.keys[1].clearsign(archive.release))
    message = only(archive.check())
    assert f"{PROOF_DIR}/{name}: it has no good signature by a key of the pinned keyring" in message


def test_a_changed_inrelease_is_an_error(archive: Archive) -> None:
    [name] = archive.lock.proofs
    proof = archive.root / "buildboxes/demo" / PROOF_DIR / name
    proof.write_bytes(proof.read_bytes().replace(b"Origin: Test", b"Origin: Tost"))
    assert "it was changed after it was signed" in only(archive.check())


def test_a_tampered_index_is_refused(archive: Archive) -> None:
    """The archive (or a mirror) serves other bytes under the index's hash: fail closed."""
    [source] = archive.lock.platforms["linux/amd64"].sources
    by_hash = source.index_url(source.indices[0]).removeprefix(archive.server.base_url + "/")
    archive.server.add(by_hash, lzma.compress(b"Package: make\nVersion: 9\n"))
    message = only(archive.check())
    assert "platforms.linux/amd64.sources: not verified: Packages index test/" in message
    assert "sha256 mismatch" in message


def test_an_index_the_lock_rehashed_is_not_the_signed_one(archive: Archive) -> None:
    """A forged index served under its own hash, which the edited lock names."""
    forged = lzma.compress(b"Package: make\nVersion: 4.3-4.1\nArchitecture: amd64\n")
    sha256 = hashlib.sha256(forged).hexdigest()
    [source] = archive.lock.platforms["linux/amd64"].sources
    archive.server.add(
        source.index_url(Index(INDEX_PATH, sha256, 0)).removeprefix(archive.server.base_url + "/"),
        forged,
    )

    def rehash(document: dict[str, object]) -> None:
        platforms = document["platforms"]
        assert isinstance(platforms, dict)
        platforms["linux/amd64"]["sources"][0]["indices"][0].update(sha256=sha256, size=len(forged))

    archive.edit(rehash)
    message = only(archive.check())
    assert f"test/{INDEX_PATH}: sha256 {sha256}" in message
    assert "is not what packages.proof/" in message


def test_an_index_that_cannot_be_had_fails_closed(archive: Archive) -> None:
    [source] = archive.lock.platforms["linux/amd64"].sources
    archive.server.files.pop(
        source.index_url(source.indices[0]).removeprefix(archive.server.base_url + "/")
    )
    message = only(archive.check())
    assert "not verified: Packages index test/main/binary-amd64/Packages.xz (linux/amd64)" in (
        message
    )
    assert "HTTP 404" in message
    assert "run `invoke lock demo` again, or copy a cache holding sha256" in message


def test_once_the_archive_moved_on_check_takes_the_index_from_a_release_escrow(
    archive: Archive, registry: Registry
) -> None:
    """The archive serves an index by hash only while its InRelease is current: afterwards the
    lock is still checked, with the index a recorded release escrowed (hash-checked as ever)."""
    [source] = archive.lock.platforms["linux/amd64"].sources
    url = source.index_url(source.indices[0])
    index = archive.server.files.pop(url.removeprefix(archive.server.base_url + "/"))
    reference = escrow(registry.host, f"{archive.root.parent.name}/escrow", {url: index})
    digest = "sha256:" + "1" * 64
    release = {  # an earlier version's release: the box's current version is unreleased
        "box": "demo", "version": "0", "digest": digest, "inputs_digest": "sha256:" + "2" * 64,
        "reference": f"{registry.host}/buildbox/demo:v0@{digest}", "revision": "unknown",
        "platforms": {"linux/amd64": {"digest": digest, "sbom_digest": digest,
                                      "sbom_path": "sbom/demo/v0-linux-amd64.cdx.json"}},
        "escrow": reference,
    }  # fmt: skip
    (archive.root / "buildbox.lock.json").write_text(json.dumps({"releases": [release]}))
    settle(archive.root / "invoke.yaml", registry=f"{registry.host}/buildbox",
           cache_dir=archive.root.parent / "cache", fetch_retries=0)  # fmt: skip
    checked = run_cli(archive.root, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "box(es) and 1 component(s) are valid" in checked.stdout


def test_a_missing_proof_or_a_lock_without_one_is_an_error(archive: Archive) -> None:
    [name] = archive.lock.proofs
    (archive.root / "buildboxes/demo" / PROOF_DIR / name).unlink()
    assert f"{PROOF_DIR}/{name} is missing; run `invoke lock demo`" in only(archive.check())
    archive.edit(lambda d: d.update(schema="buildbox-packages/1"))
    message = only(archive.check())
    assert "was written without its signed proof (schema 'buildbox-packages/1')" in message


def test_a_keyring_outside_the_project_is_refused(archive: Archive) -> None:
    archive.edit(lambda d: d.update(keyring="/usr/share/keyrings"))
    assert "keyring: keyring '/usr/share/keyrings' is not a path inside the project" in only(
        archive.check()
    )


def test_the_image_path_reads_apt_s_sources_and_verifies_them(
    archive: Archive, tmp_path: Path
) -> None:
    """What resolve_script prints after apt's answers: the base's distribution, its index
    targets, and each InRelease (base64)."""
    import base64

    [name] = archive.lock.proofs
    data = (archive.root / "buildboxes/demo" / PROOF_DIR / name).read_bytes()
    listed = "127.0.0.1_debian_dists_test_InRelease"
    output = (
        "@@buildbox-targets\ndebian\n"
        f"{archive.url}/ {SUITE} main/binary-amd64/Packages "
        f"/var/lib/apt/lists/127.0.0.1_debian_dists_test_main_binary-amd64_Packages.lz4\n"
        f"{archive.url}/ {SUITE} main/binary-arm64/Packages /var/lib/apt/lists/x_Packages\n"
        f"@@buildbox-inrelease\n{listed}\n{base64.b64encode(data).decode()}\n@@buildbox-simulated\n"
    )
    keyring = keyring_files(archive.root, "shared/keyrings/test")
    distribution, sources, proofs = parse_sources(output, "linux/amd64", keyring)
    assert distribution == "debian"
    assert sources == archive.lock.platforms["linux/amd64"].sources
    assert proofs == {name: data}


@pytest.fixture(scope="module")
def real() -> PackageLock:
    settings = settings_for(REPO)
    loaded = project.load(settings, box="debian13")
    lock = loaded.box("debian13").lock
    assert lock is not None
    return lock


def test_the_committed_debian13_proof_is_signed_by_debian(real: PackageLock) -> None:
    """Offline: the index fetch and the packages are checked by `invoke check` (the archive)."""
    keyring = keyring_files(REPO, real.keyring)
    assert real.keyring == "shared/keyrings/debian"
    for platform, facts in real.platforms.items():
        for source in facts.sources:
            data = (REPO / "buildboxes/debian13" / PROOF_DIR / source.inrelease).read_bytes()
            signed = verify_inrelease(data, keyring)
            assert set(source.signed_by) <= set(signed.fingerprints)
            assert signed.release["Codename"] == source.suite == "trixie"
            listed = {e["name"]: (e["sha256"], int(e["size"])) for e in signed.release["SHA256"]}
            for index in source.indices:
                assert listed[index.path] == (index.sha256, index.size), platform


def test_gpgv_ignores_the_default_keyring(
    archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive's key in GNUPGHOME's trustedkeys.gpg (gpgv's default keyring) counts for
    nothing: only the keyring given is trusted."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    (home / "trustedkeys.gpg").write_bytes(archive.keys[0].export())
    monkeypatch.setenv("GNUPGHOME", str(home))
    [name] = archive.lock.proofs
    data = (archive.root / "buildboxes/demo" / PROOF_DIR / name).read_bytes()
    other = archive.root / "shared/keyrings/other.gpg"
    other.write_bytes(archive.keys[1].export())
    with pytest.raises(ValueError, match="no good signature by a key of the pinned keyring"):
        verify_inrelease(data, (other,))
    assert os.environ["GNUPGHOME"] == str(home)


def test_the_proof_stays_out_of_the_build_context(archive: Archive) -> None:
    loaded = project.load(settings_for(archive.root))
    files = [p.relative_to(archive.root).as_posix() for p in loaded.box("demo").files()]
    assert files == ["buildboxes/demo/Dockerfile"]


def test_a_release_refuses_a_lock_its_proof_does_not_vouch_for(archive: Archive) -> None:
    """The release checks the proof itself, before building: it does not rely on someone having
    run `invoke check` (no engine is touched: the one given here would fail on any use)."""
    archive.edit(lambda d: package(d, "make").update(sha256="0" * 64))
    settings = dataclasses.replace(settings_for(archive.root), fetch_retries=0)
    loaded = project.load(settings)
    fetcher = Fetcher(settings, LogProgress(io.StringIO()))
    with pytest.raises(
        BuildboxError,
        match=r"(?s)demo is not released: its package lock is not "
        r"what the archive signed:.*packages\[1\]\(make\)\.sha256: 0{64} is not the signed index",
    ):
        push_box(
            loaded, loaded.box("demo"), engine=cast(Engine, object()), fetcher=fetcher,
            revision=Revision("a" * 40, dirty=False, epoch=1), log=lambda line: None,
            progress=SILENT,
        )  # fmt: skip


def test_offline_the_chain_needs_the_index_in_the_cache(archive: Archive) -> None:
    """`invoke check --offline` verifies the whole chain from the cache once an online check
    has fetched the index, and without it fails closed naming the index."""
    settings = dataclasses.replace(settings_for(archive.root), fetch_retries=0)
    fetcher = Fetcher(settings, LogProgress(io.StringIO()))
    _, before = check_project(settings, fetcher, offline=True)
    assert "is not in the cache and --offline fetches nothing" in only(before)
    assert archive.check() == []  # online: fetched by hash into the verified cache
    _, after = check_project(settings, fetcher, offline=True)
    assert after == []
    archive.edit(lambda d: package(d, "make").update(sha256="0" * 64))
    _, edited = check_project(settings, fetcher, offline=True)
    assert "platforms.linux/amd64.packages[1](make).sha256: " in only(edited)
