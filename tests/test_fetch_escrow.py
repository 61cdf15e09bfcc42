"""Inputs upstream no longer serves come from recorded releases' escrows in a real loopback
registry (or, for a locked Debian package, from the archive snapshot), verified as any download;
when nothing has them, one error says which versions the archive dropped and what to do."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import random
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest
import requests

from artifact_server import ArtifactServer
from buildbox.define import project
from buildbox.define.lock import LOCK_FILE, PROOF_DIR, LockedPackage, PackageLock, PlatformLock
from buildbox.define.lock import Source as LockSource
from buildbox.digests import digest_of
from buildbox.errors import BuildboxError
from buildbox.fetch import (
    ChecksumMismatchError,
    DownloadError,
    Escrow,
    Fetched,
    Fetcher,
    Wanted,
    wanted_for,
)
from buildbox.oci.documents import EMPTY_JSON, OCI_MANIFEST, Descriptor
from buildbox.oci.inputs import Input, inputs_manifest
from buildbox.oci.registry import Registry as RegistryClient
from buildbox.output import LogProgress
from buildbox.settings import Settings
from projects import BASE, make_project, run_cli, settings_for, settle, write_yaml
from registry import Registry

DATE = "Sat, 21 Nov 2026 09:15:44 UTC"
SNAPSHOT_TIME = "20261121T091544Z"


class Recorder:
    """Progress that remembers which URLs were started."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def started(self, wanted: Wanted, url: str, total: int | None) -> None:
        self.urls.append(url)

    def advanced(self, wanted: Wanted, size: int) -> None:
        """Bytes are not interesting here."""

    def finished(self, fetched: Fetched) -> None:
        """Results are asserted on directly."""

    def failed(self, wanted: Wanted, error: BuildboxError) -> None:
        """Errors are asserted on directly."""


def content(name: str) -> bytes:
    return random.Random(name).randbytes(3000)


@pytest.fixture
def fast(tmp_path: Path) -> Settings:
    """A private cache, no waiting: one retry, a registry client that gives up at once."""
    return dataclasses.replace(
        settings_for(tmp_path),
        cache_dir=tmp_path / "cache",
        fetch_backoff=0.01,
        fetch_retries=1,
        fetch_timeout=5.0,
        registry_attempts=1,
        registry_backoff=0.01,
    )


def escrow(registry_host: str, repository: str, files: dict[str, bytes]) -> str:
    """Push an inputs manifest holding ``files`` (URL -> bytes) as `invoke release` does, by the
    protocol helpers; its reference ``host/repository@digest``."""
    inputs = [
        Input(hashlib.sha256(data).hexdigest(), len(data), url, "component",
              url.rsplit("/", 1)[-1], "1.0", ("linux/amd64",))
        for url, data in files.items()
    ]  # fmt: skip
    image = b'{"schemaVersion": 2}'
    with RegistryClient(registry_host) as client:
        client.upload_blob(repository, digest_of(EMPTY_JSON), EMPTY_JSON)
        for (_, data), each in zip(files.items(), inputs, strict=True):
            client.upload_blob(repository, each.digest, data)
        body = inputs_manifest(
            Descriptor(OCI_MANIFEST, digest_of(image), len(image)), "demo", "1", inputs,
            "2026-11-21T09:15:44Z",
        )  # fmt: skip
        client.put_manifest(repository, digest_of(body), body, OCI_MANIFEST)
    return f"{registry_host}/{repository}@{digest_of(body)}"


def wanted(url: str, data: bytes, **fields: str) -> Wanted:
    return Wanted("tool", "1.0", "linux/amd64", url, hashlib.sha256(data).hexdigest(), **fields)


def fetcher(settings: Settings, escrows: list[str], **options: object) -> Fetcher:
    return Fetcher(settings, Recorder(), escrow=Escrow(settings, lambda: escrows), **options)  # type: ignore[arg-type]


def test_an_input_upstream_lost_comes_from_the_escrow_verified(
    artifacts: ArtifactServer, registry: Registry, fast: Settings
) -> None:
    data = content("gone")
    url = artifacts.url("escrow-test/gone.tar.gz")  # never added: 404
    reference = escrow(registry.host, "escrow/gone", {url: data})
    with artifacts.tally() as seen:
        [result] = fetcher(fast, [reference]).fetch_all([wanted(url, data)])
    assert seen.requests == {"escrow-test/gone.tar.gz": 1}
    assert result.source == f"{registry.host}/escrow/gone@sha256:{result.wanted.sha256} (escrow)"
    assert result.path.read_bytes() == data
    assert list((fast.cache_dir / "tmp").iterdir()) == []


def test_an_unreachable_upstream_falls_back_to_the_escrow(
    registry: Registry, fast: Settings
) -> None:
    data = content("unreachable")
    url = "http://upstream.invalid/tool-1.0.tar.gz"
    reference = escrow(registry.host, "escrow/unreachable", {url: data})
    [result] = fetcher(fast, [reference]).fetch_all([wanted(url, data)])
    assert str(result.source).endswith("(escrow)")
    assert hashlib.sha256(result.path.read_bytes()).hexdigest() == result.wanted.sha256


def test_wrong_bytes_upstream_come_from_the_escrow_with_one_warning(
    artifacts: ArtifactServer, registry: Registry, fast: Settings
) -> None:
    data = content("poisoned")
    url = artifacts.add("escrow-test/poisoned.tar.gz", data)
    artifacts.misbehave("escrow-test/poisoned.tar.gz", "wrong-bytes")
    reference = escrow(registry.host, "escrow/poisoned", {url: data})
    warnings: list[str] = []
    with artifacts.tally() as seen:
        [result] = fetcher(fast, [reference], warn=warnings.append).fetch_all([wanted(url, data)])
    assert seen.requests == {"escrow-test/poisoned.tar.gz": 1}, "a mismatch is never retried"
    assert str(result.source).endswith("(escrow)")
    assert result.path.read_bytes() == data
    [warning] = warnings
    assert f"sha256 mismatch for {url}" in warning
    assert f"Taken from {result.source} instead." in warning


def test_wrong_bytes_upstream_without_an_escrow_still_fail_at_once(
    artifacts: ArtifactServer, registry: Registry, fast: Settings
) -> None:
    data = content("poisoned-alone")
    url = artifacts.add("escrow-test/poisoned-alone.tar.gz", data)
    artifacts.misbehave("escrow-test/poisoned-alone.tar.gz", "wrong-bytes")
    other = escrow(registry.host, "escrow/other", {"http://x.invalid/y": b"other"})
    with pytest.raises(ChecksumMismatchError, match="none of the 1 recorded release escrow"):
        fetcher(fast, [other]).fetch(wanted(url, data))


class LyingProxy:
    """Passes every request on to a registry, but serves other bytes for every blob."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

            def do_GET(self) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                answer = requests.get(f"{proxy.upstream}{self.path}", headers=headers, timeout=10)
                body = answer.content
                if "/blobs/sha256:" in self.path:
                    body = bytes(b ^ 0xFF for b in body)
                self.send_response(answer.status_code)
                for key in ("Content-Type", "Docker-Content-Digest"):
                    if key in answer.headers:
                        self.send_header(key, answer.headers[key])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def lying(registry: Registry) -> Iterator[LyingProxy]:
    proxy = LyingProxy(registry.url)
    yield proxy
    proxy.server.shutdown()
    proxy.server.server_close()


def test_an_escrow_serving_other_bytes_is_refused(
    artifacts: ArtifactServer, registry: Registry, lying: LyingProxy, fast: Settings
) -> None:
    data = content("lied")
    url = artifacts.url("escrow-test/lied.tar.gz")  # 404 upstream
    reference = escrow(registry.host, "escrow/lied", {url: data})
    through_proxy = reference.replace(registry.host, lying.host, 1)
    with pytest.raises(DownloadError) as caught:
        fetcher(fast, [through_proxy]).fetch_all([wanted(url, data)])
    message = str(caught.value)
    assert f"sha256 mismatch for {lying.host}/escrow/lied@sha256:" in message
    assert (
        f"Refused: the registry (or a proxy in front of it) serves other bytes for that "
        f"digest than escrow {through_proxy} lists." in message
    )
    assert not (fast.cache_dir / "sha256" / hashlib.sha256(data).hexdigest()).exists()
    assert list((fast.cache_dir / "tmp").iterdir()) == []


def test_a_lying_escrow_is_skipped_for_an_honest_one(
    artifacts: ArtifactServer, registry: Registry, lying: LyingProxy, fast: Settings
) -> None:
    data = content("second")
    url = artifacts.url("escrow-test/second.tar.gz")
    reference = escrow(registry.host, "escrow/second", {url: data})
    through_proxy = reference.replace(registry.host, lying.host, 1)
    [result] = fetcher(fast, [through_proxy, reference]).fetch_all([wanted(url, data)])
    assert result.source == f"{registry.host}/escrow/second@sha256:{result.wanted.sha256} (escrow)"


def test_from_escrow_asks_no_upstream_at_all(
    artifacts: ArtifactServer, registry: Registry, fast: Settings
) -> None:
    data = content("offline")
    url = artifacts.add("escrow-test/offline.tar.gz", data)
    mirrored = dataclasses.replace(
        fast, mirrors=((artifacts.base_url + "/", (artifacts.base_url + "/mirror/",)),)
    )
    reference = escrow(registry.host, "escrow/offline", {url: data})
    with artifacts.tally() as seen:
        [result] = fetcher(mirrored, [reference], from_escrow=True).fetch_all([wanted(url, data)])
    assert seen.requests == {}
    assert str(result.source).endswith("(escrow)")


def test_from_escrow_fails_naming_what_no_escrow_holds(
    artifacts: ArtifactServer, registry: Registry, fast: Settings
) -> None:
    data = content("not-escrowed")
    url = artifacts.add("escrow-test/not-escrowed.tar.gz", data)
    other = escrow(registry.host, "escrow/other", {"http://x.invalid/y": b"other"})
    with artifacts.tally() as seen, pytest.raises(DownloadError) as caught:
        fetcher(fast, [other], from_escrow=True).fetch_all([wanted(url, data)])
    assert seen.requests == {}
    message = str(caught.value)
    assert (
        f"tool 1.0 (linux/amd64): --from-escrow: sha256:{hashlib.sha256(data).hexdigest()} "
        f"({url}) is not escrowed; none of the 1 recorded release escrow(s) holds it" in message
    )


def test_the_record_is_not_read_while_upstream_delivers(
    artifacts: ArtifactServer, fast: Settings
) -> None:
    data = content("upstream-works")
    url = artifacts.add("escrow-test/upstream-works.tar.gz", data)

    def broken() -> list[str]:
        raise AssertionError("the record was read though nothing needed it")

    fetched = Fetcher(fast, Recorder(), escrow=Escrow(fast, broken))
    [result] = fetched.fetch_all([wanted(url, data)])
    assert result.source == url


def test_a_broken_record_is_a_note_when_upstream_fails_too(
    artifacts: ArtifactServer, fast: Settings
) -> None:
    data = content("nowhere")
    url = artifacts.url("escrow-test/nowhere.tar.gz")

    def broken() -> list[str]:
        raise BuildboxError("buildbox.lock.json cannot be read (JSONDecodeError: ...)")

    with pytest.raises(DownloadError) as caught:
        Fetcher(fast, Recorder(), escrow=Escrow(fast, broken)).fetch_all([wanted(url, data)])
    assert "HTTP 404" in str(caught.value)
    assert (
        "no recorded release has an escrow; the release record cannot be read "
        "(buildbox.lock.json cannot be read" in str(caught.value)
    )


def test_an_unreachable_escrow_registry_is_a_note(
    artifacts: ArtifactServer, fast: Settings
) -> None:
    data = content("dead-registry")
    url = artifacts.url("escrow-test/dead-registry.tar.gz")
    dead = "127.0.0.1:9/escrow/dead@sha256:" + "d" * 64
    with pytest.raises(DownloadError) as caught:
        fetcher(fast, [dead]).fetch_all([wanted(url, data)])
    assert f"escrow {dead}: " in str(caught.value)
    assert "cannot reach the registry 127.0.0.1:9" in str(caught.value)


# Locked packages: the archive snapshot, and the one error when nothing has them.


def locked_box(
    root: Path, artifacts: ArtifactServer, origin: str, *, snapshot: str = ""
) -> tuple[LockedPackage, str]:
    """A box ``demo`` whose lock names make from an archive under the artifact server (which
    does not serve the .deb: the archive dropped it), with its InRelease of ``origin`` kept in
    packages.proof/; the package, and the file's path under the archive."""
    make_project(root)
    archive = artifacts.url(f"{root.parent.name}/debian")
    path = "pool/main/m/make-dfsg/make_4.3-4.1_amd64.deb"
    data = content(f"{root}-make")
    package = LockedPackage("make", "4.3-4.1", "amd64", f"{archive}/{path}",
                            hashlib.sha256(data).hexdigest(), len(data))  # fmt: skip
    release = f"Origin: {origin}\nLabel: {origin}\nSuite: stable\nCodename: trixie\nDate: {DATE}\n"
    inrelease = (
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n" + release
        + "-----BEGIN PGP SIGNATURE-----\n\niQ==\n-----END PGP SIGNATURE-----\n"
    )  # fmt: skip
    box = root / "buildboxes/demo"
    (box / PROOF_DIR).mkdir()
    (box / PROOF_DIR / "archive_InRelease").write_text(inrelease)
    source = LockSource(archive, "trixie", "archive_InRelease", ("F" * 40,), ())
    lock = PackageLock(BASE, ("make",), {"linux/amd64": PlatformLock("sha256:" + "e" * 64,
                       (package,), (source,))}, snapshot)  # fmt: skip
    (box / LOCK_FILE).write_text(lock.render())
    write_yaml(
        box / "box.yaml",
        {"version": 1, "base": BASE, "platforms": ["linux/amd64"], "components": [],
         "packages": ["make"], **({"snapshot": snapshot} if snapshot else {})},
    )  # fmt: skip
    return package, path


def test_a_dropped_deb_is_taken_from_the_snapshot_of_its_proofs_date(
    artifacts: ArtifactServer, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    package, path = locked_box(root, artifacts, "Debian")
    snapshot = f"snap-{tmp_path.name}/"
    served = f"{snapshot}archive/debian/{SNAPSHOT_TIME}/{path}"
    artifacts.add(served, content(f"{root}-make"))
    settings = dataclasses.replace(
        settings_for(root), cache_dir=tmp_path / "cache", fetch_retries=0,
        mirrors=(("http://snapshot.debian.org/", (f"{artifacts.base_url}/{snapshot}",)),),
    )  # fmt: skip
    loaded = project.load(settings)
    [want] = wanted_for(loaded.boxes, loaded.library)
    assert want.snapshot == f"http://snapshot.debian.org/archive/debian/{SNAPSHOT_TIME}/{path}"
    with artifacts.tally() as seen:
        [result] = Fetcher(settings, Recorder()).fetch_all([want])
    upstream = package.url.removeprefix(artifacts.base_url + "/")
    assert seen.requests == {upstream: 1, served: 1}
    assert result.source == f"{artifacts.base_url}/{served}"
    assert result.path.read_bytes() == content(f"{root}-make")


def test_no_snapshot_address_where_the_box_pins_a_snapshot_or_the_archive_is_not_debian(
    artifacts: ArtifactServer, tmp_path: Path
) -> None:
    for name, origin, snapshot in (("pinned", "Debian", "20250520T000000Z"),
                                   ("other", "Test", "")):  # fmt: skip
        root = tmp_path / name / "project"
        locked_box(root, artifacts, origin, snapshot=snapshot)
        loaded = project.load(settings_for(root), check_lock=False)
        [want] = wanted_for(loaded.boxes, loaded.library)
        assert want.snapshot == ""


def test_a_dropped_deb_nothing_has_is_one_error_with_both_ways_forward(
    artifacts: ArtifactServer, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    package, _ = locked_box(root, artifacts, "Test")  # no snapshot to ask
    (root / "invoke.yaml").write_text(
        f"buildbox:\n  cache_dir: {tmp_path / 'cache'}\n  fetch_retries: 0\n"
    )
    result = run_cli(root, "fetch")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert (
        f"make 4.3-4.1 (linux/amd64): {package.url}: HTTP 404 Not Found (the archive may "
        "have dropped this version" in result.stderr
    )
    assert (
        "The archive no longer has 1 locked package version(s):\n"
        f"  demo: make 4.3-4.1 (linux/amd64) at {package.url}: HTTP 404\n" in result.stderr
    )
    assert (
        "No recorded release has an escrow to take them from. Two ways forward: (1) run "
        "`invoke lock demo` and bump the version in buildboxes/demo/box.yaml" in result.stderr
    )
    assert (
        "or (2) keep the old files reachable: set `snapshot:` in box.yaml, or add a mirror "
        "serving them to buildbox.mirrors in invoke.yaml." in result.stderr
    )


# The tasks: the record's escrows, --from-escrow, and a broken record.


def record_project(root: Path, artifacts: ArtifactServer, registry: Registry, data: bytes,
                   *, escrowed: bool) -> tuple[Path, str]:  # fmt: skip
    """A project whose tool is at a URL upstream no longer serves, and whose record has a
    release of demo v1 (with an escrow holding the tool when ``escrowed``)."""
    url = artifacts.url(f"{root.parent.name}/tool-1.0.tar.gz")
    sha256 = hashlib.sha256(data).hexdigest()
    tool = {
        "version": "1.0", "license": "MIT",
        "install": {"kind": "tarball", "dest": "/opt/tool", "strip_components": 1},
        "probe": {"command": ["/opt/tool/bin/tool"], "expect": "tool"},
        "artifacts": {"linux/amd64": {"url": url, "sha256": sha256, "sha256_source": "test"}},
    }  # fmt: skip
    make_project(root, components={"tool": tool})
    files = {url: data} if escrowed else {"http://x.invalid/other": b"other"}
    reference = escrow(registry.host, f"{root.parent.name}/escrow", files)
    digest = "sha256:" + "1" * 64
    release = {
        "box": "demo", "version": "1", "digest": digest, "inputs_digest": "sha256:" + "2" * 64,
        "reference": f"{registry.host}/buildbox/demo:v1@{digest}", "revision": "unknown",
        "platforms": {"linux/amd64": {"digest": digest, "sbom_digest": digest,
                                      "sbom_path": "sbom/demo/v1-linux-amd64.cdx.json"}},
        "escrow": reference,
    }  # fmt: skip
    (root / "buildbox.lock.json").write_text(json.dumps({"releases": [release]}))
    settle(root / "invoke.yaml", registry=f"{registry.host}/buildbox",
           cache_dir=root.parent / "cache", fetch_retries=0, registry_attempts=1)  # fmt: skip
    return root, url


def test_invoke_fetch_takes_what_upstream_lost_from_the_recorded_escrow(
    artifacts: ArtifactServer, registry: Registry, tmp_path: Path
) -> None:
    root, _ = record_project(tmp_path / "p", artifacts, registry, content("cli"), escrowed=True)
    result = run_cli(root, "fetch")
    assert result.returncode == 0, result.stderr
    assert "fetch: 1 artifact(s) verified: 1 downloaded (1 from an escrow), 0 already" in (
        result.stdout
    )


def test_invoke_fetch_from_escrow_asks_no_upstream(
    artifacts: ArtifactServer, registry: Registry, tmp_path: Path
) -> None:
    data = content("cli-offline")
    root, url = record_project(tmp_path / "p", artifacts, registry, data, escrowed=True)
    artifacts.add(url.removeprefix(artifacts.base_url + "/"), data)
    with artifacts.tally() as seen:
        result = run_cli(root, "fetch", "--from-escrow")
    assert result.returncode == 0, result.stderr
    assert seen.requests == {}
    assert "(1 from an escrow)" in result.stdout


def test_invoke_fetch_from_escrow_names_what_is_missing(
    artifacts: ArtifactServer, registry: Registry, tmp_path: Path
) -> None:
    data = content("cli-missing")
    root, url = record_project(tmp_path / "p", artifacts, registry, data, escrowed=False)
    with artifacts.tally() as seen:
        result = run_cli(root, "fetch", "--from-escrow")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert seen.requests == {}
    assert (
        f"--from-escrow: sha256:{hashlib.sha256(data).hexdigest()} ({url}) is not "
        "escrowed; none of the 1 recorded release escrow(s) holds it" in result.stderr
    )


def test_a_broken_record_does_not_break_a_fetch_whose_upstream_works(
    artifacts: ArtifactServer, registry: Registry, tmp_path: Path
) -> None:
    data = content("cli-broken-record")
    root, url = record_project(tmp_path / "p", artifacts, registry, data, escrowed=True)
    artifacts.add(url.removeprefix(artifacts.base_url + "/"), data)
    (root / "buildbox.lock.json").write_text("{ not json")
    result = run_cli(root, "fetch")
    assert result.returncode == 0, result.stderr
    assert "1 downloaded, 0 already" in result.stdout


def test_an_escrow_warning_is_a_line_of_the_fetch_log() -> None:
    stream = io.StringIO()
    LogProgress(stream).warned("upstream served other bytes")
    assert stream.getvalue() == "WARNING upstream served other bytes\n"


def test_the_rebuilt_release_escrow_is_searched_first_then_its_box_then_the_rest(
    tmp_path: Path,
) -> None:
    from buildbox.tasks._common import recorded_escrows

    root = make_project(tmp_path / "p")
    entries = []
    for box, version in (("demo", "1"), ("demo", "2"), ("demo", "3"), ("zeta", "1")):
        digest = "sha256:" + hashlib.sha256(f"{box}{version}".encode()).hexdigest()
        entries.append({
            "box": box, "version": version, "digest": digest, "inputs_digest": digest,
            "reference": f"127.0.0.1:5000/buildbox/{box}:v{version}@{digest}",
            "revision": "unknown", "escrow": f"127.0.0.1:5000/escrow/{box}@{digest}",
            "platforms": {"linux/amd64": {"digest": digest, "sbom_digest": digest,
                                          "sbom_path": f"sbom/{box}/v{version}.cdx.json"}},
        })  # fmt: skip
    (root / "buildbox.lock.json").write_text(json.dumps({"releases": entries}))
    order = recorded_escrows(settings_for(root), [("demo", "2")])()
    names = [
        next(f"{e['box']} v{e['version']}" for e in entries if e["escrow"] == each)
        for each in order
    ]
    assert names == ["demo v2", "demo v3", "demo v1", "zeta v1"]


@pytest.mark.parametrize("task", ["fetch", "build", "reproduce"])
def test_the_tasks_that_fetch_take_from_escrow(task: str, tmp_path: Path) -> None:
    result = run_cli(make_project(tmp_path / "p"), "--help", task)
    assert result.returncode == 0, result.stderr
    assert "--from-escrow" in result.stdout


def test_a_dropped_deb_no_recorded_escrow_holds_says_so(
    artifacts: ArtifactServer, registry: Registry, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    locked_box(root, artifacts, "Test")
    other = escrow(registry.host, "escrow/other", {"http://x.invalid/y": b"other"})
    settings = dataclasses.replace(settings_for(root), cache_dir=tmp_path / "cache")
    loaded = project.load(settings)
    with pytest.raises(DownloadError) as caught:
        fetcher(settings, [other]).fetch_all(wanted_for(loaded.boxes, loaded.library))
    message = str(caught.value)
    assert "none of the 1 recorded release escrow(s) holds it" in message
    assert "None of the 1 recorded release escrow(s) holds them. Two ways forward" in message
