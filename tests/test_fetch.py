"""`invoke fetch` against the real loopback server: verified, cached, retried, mirrored, offline."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests.adapters

from artifact_server import ArtifactServer, tarball
from buildbox import output
from buildbox.define import project
from buildbox.define.lock import LockedPackage, PackageLock, PlatformLock
from buildbox.errors import BuildboxError
from buildbox.fetch import (
    Cache,
    ChecksumMismatchError,
    DownloadError,
    Fetched,
    Fetcher,
    Wanted,
    wanted_for,
)
from buildbox.output import LogProgress, TerminalProgress, fetch_progress
from buildbox.settings import Settings
from projects import BASE, make_project, run_cli, settings_for, write_yaml


def payload(name: str, size: int = 4096) -> bytes:
    """A tarball of about ``size`` bytes (random content: gzip cannot shrink it)."""
    noise = random.Random(name).randbytes(size)
    return tarball({f"{name}/bin/{name}": f"#!/bin/sh\necho {name}\n", f"{name}/noise": noise})


class Recorder:
    """Progress that remembers what it was told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def started(self, wanted: Wanted, url: str, total: int | None) -> None:
        self.events.append(("started", wanted.component))

    def advanced(self, wanted: Wanted, size: int) -> None:
        """Bytes are not interesting here."""

    def finished(self, fetched: Fetched) -> None:
        self.events.append(("finished", fetched.wanted.component))

    def failed(self, wanted: Wanted, error: BuildboxError) -> None:
        self.events.append(("failed", wanted.component))


@pytest.fixture
def fast(tmp_path: Path) -> Settings:
    """Settings with a private cache and short backoff, so retries take milliseconds."""
    return dataclasses.replace(
        settings_for(tmp_path),
        cache_dir=tmp_path / "cache",
        fetch_backoff=0.01,
        fetch_retries=3,
        fetch_timeout=5.0,
    )


def serve(artifacts: ArtifactServer, name: str, size: int = 4096) -> Wanted:
    url = artifacts.add(name, payload(name, size))
    return Wanted(name.split(".")[0], "1.0", "linux/amd64", url, artifacts.sha256(name))


def cache_contents(settings: Settings) -> list[Path]:
    """Everything in the content-addressed part of the cache."""
    directory = settings.cache_dir / "sha256"
    return sorted(directory.iterdir()) if directory.is_dir() else []


def test_cold_fetch_verifies_and_stores_by_sha256(
    artifacts: ArtifactServer, fast: Settings
) -> None:
    want = serve(artifacts, "cold.tar.gz")
    [result] = Fetcher(fast, Recorder()).fetch_all([want])
    assert result.source == want.url
    assert result.path == fast.cache_dir / "sha256" / want.sha256
    assert hashlib.sha256(result.path.read_bytes()).hexdigest() == want.sha256
    assert cache_contents(fast) == [result.path]
    assert list((fast.cache_dir / "tmp").iterdir()) == []


def test_cached_artifact_is_never_downloaded_again(
    artifacts: ArtifactServer, fast: Settings
) -> None:
    want = serve(artifacts, "warm.tar.gz")
    Fetcher(fast, Recorder()).fetch_all([want])
    with artifacts.tally() as seen:
        [again] = Fetcher(fast, Recorder()).fetch_all([want])
    assert again.source is None
    assert seen.requests == {}


def test_corrupted_cache_entry_is_replaced(artifacts: ArtifactServer, fast: Settings) -> None:
    want = serve(artifacts, "rot.tar.gz")
    [first] = Fetcher(fast, Recorder()).fetch_all([want])
    first.path.write_bytes(b"bit rot")
    [second] = Fetcher(fast, Recorder()).fetch_all([want])
    assert second.source == want.url
    assert hashlib.sha256(second.path.read_bytes()).hexdigest() == want.sha256


def test_checksum_mismatch_names_everything_and_keeps_nothing(
    artifacts: ArtifactServer, fast: Settings
) -> None:
    want = serve(artifacts, "tampered.tar.gz")
    artifacts.misbehave("tampered.tar.gz", "wrong-bytes")
    with artifacts.tally() as seen, pytest.raises(DownloadError) as caught:
        Fetcher(fast, Recorder()).fetch_all([want])
    message = str(caught.value)
    actual = hashlib.sha256(bytes(b ^ 0xFF for b in artifacts.files["tampered.tar.gz"])).hexdigest()
    assert "tampered 1.0 (linux/amd64)" in message
    assert want.url in message
    assert f"expected {want.sha256}" in message
    assert f"got {actual}" in message
    assert "The file was discarded" in message
    assert seen.requests == {"tampered.tar.gz": 1}, "a mismatch must not be retried"
    assert cache_contents(fast) == []
    assert list((fast.cache_dir / "tmp").iterdir()) == []


def test_mismatch_is_its_own_error_type(artifacts: ArtifactServer, fast: Settings) -> None:
    want = serve(artifacts, "tampered2.tar.gz")
    artifacts.misbehave("tampered2.tar.gz", "wrong-bytes")
    with pytest.raises(ChecksumMismatchError):
        Fetcher(fast, Recorder()).fetch(want)


@pytest.mark.parametrize(
    ("mode", "options"),
    [
        ("error-then-ok", {"errors": 2}),
        ("error-then-ok", {"errors": 2, "status": 502}),
        ("truncate", {"times": 2}),
        ("reset", {"times": 2}),
    ],
)
def test_transient_failures_are_retried(
    artifacts: ArtifactServer, fast: Settings, mode: str, options: dict[str, Any]
) -> None:
    name = f"flaky-{mode}-{options.get('status', 0)}.tar.gz"
    want = serve(artifacts, name)
    artifacts.misbehave(name, mode, **options)
    with artifacts.tally() as seen:
        [result] = Fetcher(fast, Recorder()).fetch_all([want])
    assert hashlib.sha256(result.path.read_bytes()).hexdigest() == want.sha256
    assert seen.requests == {name: 3}


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("error-then-ok", "HTTP 503 Service Unavailable (still failing after 3 retries)"),
        ("truncate", "failed after 4 attempts: truncated body"),
        ("reset", "connection"),
    ],
)
def test_persistent_failures_give_up_with_a_clear_error(
    artifacts: ArtifactServer, fast: Settings, mode: str, reason: str
) -> None:
    name = f"down-{mode}.tar.gz"
    want = serve(artifacts, name)
    artifacts.misbehave(name, mode, errors=100)
    with (
        artifacts.tally() as seen,
        pytest.raises(DownloadError, match="could not fetch 1 of 1 artifacts") as caught,
    ):
        Fetcher(fast, Recorder()).fetch_all([want])
    assert f"down-{mode} 1.0 (linux/amd64): {want.url}: " in str(caught.value)
    assert reason in str(caught.value)
    assert seen.requests == {name: 4}, "bounded: one try and three retries"
    assert cache_contents(fast) == []


def test_client_error_fails_at_once(artifacts: ArtifactServer, fast: Settings) -> None:
    want = Wanted("ghost", "1.0", "linux/amd64", artifacts.url("ghost.tar.gz"), "0" * 64)
    with artifacts.tally() as seen, pytest.raises(DownloadError) as caught:
        Fetcher(fast, Recorder()).fetch_all([want])
    assert "HTTP 404 Not Found (check the URL in shared/components.yaml: " in str(caught.value)
    assert "components.ghost.artifacts.linux/amd64.url" in str(caught.value)
    assert seen.requests == {"ghost.tar.gz": 1}
    assert partials(fast) == [], "no byte arrived: nothing kept"


def test_slow_server_is_fine_but_a_stalled_one_times_out(
    artifacts: ArtifactServer, fast: Settings
) -> None:
    want = serve(artifacts, "slow.tar.gz", size=64 * 1024)
    artifacts.misbehave("slow.tar.gz", "slow", delay=0.05)
    [result] = Fetcher(fast, Recorder()).fetch_all([want])
    assert result.size == len(artifacts.files["slow.tar.gz"])

    stalled = serve(artifacts, "stalled.tar.gz", size=64 * 1024)
    artifacts.misbehave("stalled.tar.gz", "slow", delay=1.0)
    impatient = dataclasses.replace(fast, fetch_timeout=0.3, fetch_retries=1)
    with pytest.raises(DownloadError, match="timed out"):
        Fetcher(impatient, Recorder()).fetch_all([stalled])
    assert cache_contents(impatient) == [result.path]


def test_mirror_is_tried_first(artifacts: ArtifactServer, fast: Settings) -> None:
    want = serve(artifacts, "mirrored.tar.gz")
    artifacts.add("mirror/mirrored.tar.gz", artifacts.files["mirrored.tar.gz"])
    mirrored = dataclasses.replace(
        fast, mirrors=((artifacts.base_url + "/", (artifacts.base_url + "/mirror/",)),)
    )
    with artifacts.tally() as seen:
        [result] = Fetcher(mirrored, Recorder()).fetch_all([want])
    assert result.source == artifacts.url("mirror/mirrored.tar.gz")
    assert seen.requests == {"mirror/mirrored.tar.gz": 1}


def test_missing_on_the_mirror_falls_back_to_upstream(
    artifacts: ArtifactServer, fast: Settings
) -> None:
    want = serve(artifacts, "upstream-only.tar.gz")
    mirrored = dataclasses.replace(
        fast, mirrors=((artifacts.base_url + "/", (artifacts.base_url + "/void/",)),)
    )
    with artifacts.tally() as seen:
        [result] = Fetcher(mirrored, Recorder()).fetch_all([want])
    assert result.source == want.url
    assert seen.requests == {"void/upstream-only.tar.gz": 1, "upstream-only.tar.gz": 1}


def test_a_mirror_serving_other_bytes_is_a_mismatch_not_a_fallback(
    artifacts: ArtifactServer, fast: Settings
) -> None:
    want = serve(artifacts, "poisoned.tar.gz")
    artifacts.add("evil/poisoned.tar.gz", b"not what was pinned")
    mirrored = dataclasses.replace(
        fast, mirrors=((artifacts.base_url + "/", (artifacts.base_url + "/evil/",)),)
    )
    with (
        artifacts.tally() as seen,
        pytest.raises(DownloadError, match=r"sha256 mismatch for .*/evil/poisoned\.tar\.gz"),
    ):
        Fetcher(mirrored, Recorder()).fetch_all([want])
    assert seen.requests == {"evil/poisoned.tar.gz": 1}, "never upstream, never retried"


def test_offline_touches_no_network_and_lists_every_missing_artifact(
    artifacts: ArtifactServer, fast: Settings
) -> None:
    present, absent1, absent2 = (serve(artifacts, f"off{i}.tar.gz") for i in range(3))
    Fetcher(fast, Recorder()).fetch_all([present])
    with artifacts.tally() as seen:
        with pytest.raises(DownloadError) as caught:
            Fetcher(fast, Recorder()).fetch_all([present, absent1, absent2], offline=True)
        [result] = Fetcher(fast, Recorder()).fetch_all([present], offline=True)
    message = str(caught.value)
    assert "--offline: 2 artifact(s) are not in the cache" in message
    assert absent1.url in message
    assert absent2.url in message
    assert present.url not in message
    assert result.source is None
    assert seen.requests == {}


def test_artifacts_download_in_parallel(artifacts: ArtifactServer, fast: Settings) -> None:
    wanted = [serve(artifacts, f"par{i}.tar.gz") for i in range(4)]
    artifacts.latency = 0.3  # the artifacts fixture restores it
    with artifacts.tally() as seen:
        Fetcher(dataclasses.replace(fast, fetch_workers=4), Recorder()).fetch_all(wanted)
    assert seen.requests == {f"par{i}.tar.gz": 1 for i in range(4)}
    assert seen.max_in_flight >= 2


def test_every_failure_is_reported_together(artifacts: ArtifactServer, fast: Settings) -> None:
    good = serve(artifacts, "good.tar.gz")
    bad1 = Wanted("bad1", "1", "linux/amd64", artifacts.url("nope1.tar.gz"), "0" * 64)
    bad2 = Wanted("bad2", "1", "linux/amd64", artifacts.url("nope2.tar.gz"), "0" * 64)
    recorder = Recorder()
    with pytest.raises(DownloadError, match="could not fetch 2 of 3 artifacts") as caught:
        Fetcher(fast, recorder).fetch_all([bad1, good, bad2])
    assert "nope1.tar.gz" in str(caught.value)
    assert "nope2.tar.gz" in str(caught.value)
    assert ("finished", "good") in recorder.events
    assert Cache(fast.cache_dir).lookup(good.sha256) is not None


def test_wanted_for_a_box_covers_its_platforms_once_each(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    loaded = project.load(settings_for(root))
    [want] = wanted_for(loaded.boxes, loaded.library)
    assert (want.component, want.platform) == ("tool", "linux/amd64")
    with pytest.raises(BuildboxError, match="does not build for linux/arm64"):
        wanted_for(loaded.boxes, loaded.library, "linux/arm64")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_plain_lines_in_ci_and_a_status_line_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert type(fetch_progress(io.StringIO(), 1)) is LogProgress
    terminal = FakeTerminal()
    progress = fetch_progress(terminal, 2)
    assert isinstance(progress, TerminalProgress)
    want = Wanted("go", "1.24.2", "linux/amd64", "https://example.org/go.tgz", "a" * 64)
    progress.started(want, want.url, 2048)
    progress.advanced(want, 2048)
    progress.finished(Fetched(want, Path("/x"), 2048, want.url))
    progress.close()
    assert "fetching: 1/2 artifacts, 2.0 KiB of 2.0 KiB" in terminal.getvalue()
    assert "ok go 1.24.2 (linux/amd64): 2.0 KiB from https://example.org/go.tgz" in (
        terminal.getvalue()
    )
    monkeypatch.setenv("CI", "true")
    assert type(fetch_progress(FakeTerminal(), 1)) is LogProgress


def fetch_project(root: Path, artifacts: ArtifactServer, name: str, size: int = 4096) -> Path:
    url = artifacts.add(name, payload(name.split(".")[0], size))
    tool = {
        "version": "1.0",
        "license": "MIT",
        "install": {"kind": "tarball", "dest": "/opt/tool", "strip_components": 1},
        "probe": {"command": ["/opt/tool/bin/tool"], "expect": "tool"},
        "artifacts": {
            "linux/amd64": {"url": url, "sha256": artifacts.sha256(name), "sha256_source": "test"}
        },
    }
    return make_project(root, components={"tool": tool})


def test_cli_fetch_then_offline(artifacts: ArtifactServer, tmp_path: Path) -> None:
    root = fetch_project(tmp_path / "p", artifacts, "cli.tar.gz")
    cache = tmp_path / "cache"
    (root / "invoke.yaml").write_text(f"buildbox:\n  cache_dir: {cache}\n")
    offline = run_cli(root, "fetch", "--offline")
    assert offline.returncode == 1
    assert "--offline: 1 artifact(s) are not in the cache" in offline.stderr
    first = run_cli(root, "fetch", "--box=demo")
    assert first.returncode == 0, first.stderr
    assert "fetch: 1 artifact(s) verified: 1 downloaded, 0 already in the cache" in first.stdout
    size = output.size(len(artifacts.files["cli.tar.gz"]))
    assert f"ok tool 1.0 (linux/amd64): {size} from {artifacts.url('cli.tar.gz')}" in first.stderr
    again = run_cli(root, "fetch", "--offline")
    assert again.returncode == 0, again.stderr
    assert "0 downloaded, 1 already in the cache" in again.stdout


def test_cli_fetch_failure_is_a_message_not_a_traceback(
    artifacts: ArtifactServer, tmp_path: Path
) -> None:
    root = fetch_project(tmp_path / "p", artifacts, "cli-bad.tar.gz")
    artifacts.misbehave("cli-bad.tar.gz", "wrong-bytes")
    (root / "invoke.yaml").write_text(f"buildbox:\n  cache_dir: {tmp_path / 'cache'}\n")
    result = run_cli(root, "fetch")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "buildbox: could not fetch 1 of 1 artifacts:" in result.stderr
    assert "sha256 mismatch for" in result.stderr


def test_kill_9_mid_download_leaves_nothing_unverified_and_the_rerun_resumes(
    artifacts: ArtifactServer, tmp_path: Path
) -> None:
    name = "big.tar.gz"
    root = fetch_project(tmp_path / "p", artifacts, name, size=2 * 1024 * 1024)
    cache = tmp_path / "cache"
    (root / "invoke.yaml").write_text(f"buildbox:\n  cache_dir: {cache}\n")
    artifacts.misbehave(name, "slow", delay=0.2)  # 16 KiB every 0.2 s: minutes for the file
    fetching = subprocess.Popen(
        [sys.executable, "-m", "invoke", "--search-root", str(root), "fetch"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            parts = list((cache / "tmp").glob("*.part")) if (cache / "tmp").is_dir() else []
            if parts and parts[0].stat().st_size > 0:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the fetch never started writing")
    finally:
        fetching.send_signal(signal.SIGKILL)
        fetching.wait()
    assert not (cache / "sha256").exists() or not any((cache / "sha256").iterdir())
    sha256 = artifacts.sha256(name)
    [kept] = (cache / "tmp").glob("*.part")
    assert kept.name == f"{sha256}.part", "kept under the artifact's sha256, for the next run"
    assert 0 < kept.stat().st_size < len(artifacts.files[name])

    artifacts.behave(name)
    kept_size = kept.stat().st_size
    with artifacts.tally() as seen:
        rerun = run_cli(root, "fetch")
    assert rerun.returncode == 0, rerun.stderr
    assert seen.ranges == [(name, f"bytes={kept_size}-")]
    assert seen.sent == {name: len(artifacts.files[name]) - kept_size}
    [stored] = (cache / "sha256").iterdir()
    assert stored.name == sha256
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == sha256
    assert list((cache / "tmp").iterdir()) == [], "nothing left in tmp/ either"


# Resumed downloads ---------------------------------------------------------------------------


def partials(settings: Settings) -> list[Path]:
    """What the cache's tmp/ holds."""
    directory = settings.cache_dir / "tmp"
    return sorted(directory.iterdir()) if directory.is_dir() else []


def resumed_from(seen: Any, name: str) -> int:
    """Where the one ranged request of a tally started."""
    [(asked_for, asked)] = seen.ranges
    assert asked_for == name
    found = re.fullmatch(r"bytes=(\d+)-", asked)
    assert found, asked
    return int(found.group(1))


def test_a_cut_download_resumes_where_it_broke(artifacts: ArtifactServer, fast: Settings) -> None:
    name = "resume.tar.gz"
    want = serve(artifacts, name, size=512 * 1024)
    size = len(artifacts.files[name])
    artifacts.misbehave(name, "truncate", times=1)  # the first answer stops half-way
    with artifacts.tally() as seen:
        [result] = Fetcher(fast, Recorder()).fetch_all([want])
    offset = resumed_from(seen, name)
    assert 0 < offset <= size // 2
    assert seen.requests == {name: 2}
    assert seen.sent == {name: size // 2 + size - offset}, "the second answer was only the rest"
    assert hashlib.sha256(result.path.read_bytes()).hexdigest() == want.sha256
    assert partials(fast) == []


def test_a_server_ignoring_range_gets_a_whole_download(
    artifacts: ArtifactServer, fast: Settings
) -> None:
    name = "no-ranges.tar.gz"
    want = serve(artifacts, name, size=256 * 1024)
    size = len(artifacts.files[name])
    artifacts.misbehave(name, "truncate", times=1)
    artifacts.ignore_ranges(name)
    with artifacts.tally() as seen:
        [result] = Fetcher(fast, Recorder()).fetch_all([want])
    resumed_from(seen, name)  # asked, and answered 200 with the whole file
    assert seen.sent == {name: size // 2 + size}
    assert hashlib.sha256(result.path.read_bytes()).hexdigest() == want.sha256
    assert partials(fast) == []


def break_off(artifacts: ArtifactServer, settings: Settings, name: str, want: Wanted) -> Path:
    """A download that breaks off half-way and gives up: what it leaves in tmp/."""
    artifacts.misbehave(name, "truncate")
    with pytest.raises(DownloadError, match="truncated body"):
        Fetcher(dataclasses.replace(settings, fetch_retries=0), Recorder()).fetch_all([want])
    artifacts.behave(name)
    assert cache_contents(settings) == []
    [partial] = (p for p in partials(settings) if p.name.endswith(".part"))
    assert 0 < partial.stat().st_size < len(artifacts.files[name])
    return partial


def test_the_next_run_resumes_unless_the_validator_changed(
    artifacts: ArtifactServer, fast: Settings
) -> None:
    name = "redeployed.tar.gz"
    want = serve(artifacts, name, size=256 * 1024)
    size = len(artifacts.files[name])
    kept = break_off(artifacts, fast, name, want).stat().st_size
    with artifacts.tally() as seen:
        Fetcher(fast, Recorder()).fetch_all([want])
    assert resumed_from(seen, name) == kept
    assert seen.sent == {name: size - kept}

    Path(Cache(fast.cache_dir).path(want.sha256)).unlink()
    break_off(artifacts, fast, name, want)
    artifacts.touch(name)  # same bytes, new ETag and Last-Modified: If-Range fails
    with artifacts.tally() as seen:
        [result] = Fetcher(fast, Recorder()).fetch_all([want])
    resumed_from(seen, name)
    assert seen.sent == {name: size}, "a whole download"
    assert hashlib.sha256(result.path.read_bytes()).hexdigest() == want.sha256
    assert partials(fast) == []


def test_a_tampered_partial_file_is_refused_after_resuming(
    artifacts: ArtifactServer, fast: Settings
) -> None:
    name = "tampered-part.tar.gz"
    want = serve(artifacts, name, size=256 * 1024)
    partial = break_off(artifacts, fast, name, want)
    data = bytearray(partial.read_bytes())
    data[10] ^= 0xFF
    partial.write_bytes(bytes(data))
    with artifacts.tally() as seen, pytest.raises(ChecksumMismatchError) as caught:
        Fetcher(fast, Recorder()).fetch(want)
    resumed_from(seen, name)
    assert f"expected {want.sha256}" in str(caught.value)
    assert f"resumed from {len(data)} bytes" in str(caught.value)
    assert cache_contents(fast) == []
    assert partials(fast) == [], "the bad partial file is gone: the next run downloads it whole"
    [result] = Fetcher(fast, Recorder()).fetch_all([want])
    assert hashlib.sha256(result.path.read_bytes()).hexdigest() == want.sha256


def test_a_complete_partial_file_is_verified_and_used_without_a_request(
    artifacts: ArtifactServer, fast: Settings
) -> None:
    """Killed after the last byte but before the rename: nothing left to ask for."""
    name = "complete-part.tar.gz"
    want = serve(artifacts, name, size=256 * 1024)
    partial = break_off(artifacts, fast, name, want)
    partial.write_bytes(artifacts.files[name])
    with artifacts.tally() as seen:
        [result] = Fetcher(fast, Recorder()).fetch_all([want])
    assert seen.requests == {}
    assert result.path.read_bytes() == artifacts.files[name]


def test_stale_partial_files_are_removed_unless_in_use(fast: Settings) -> None:
    cache = Cache(fast.cache_dir)
    with cache.partial("a" * 64) as old:
        old.write(b"half")
    with cache.partial("b" * 64) as fresh:
        fresh.write(b"recent")
    day_ago = time.time() - 2 * 24 * 3600
    os.utime(old.path, (day_ago, day_ago))
    with cache.partial("c" * 64) as busy:
        os.utime(busy.path, (day_ago, day_ago))
        cache.remove_stale()
        assert busy.path.exists(), "in use by a fetch (locked): never removed"
    assert not old.path.exists()
    assert fresh.path.exists(), "recent: the next fetch resumes from it"


def test_a_partial_file_in_use_is_not_shared(artifacts: ArtifactServer, fast: Settings) -> None:
    """Two fetches of one artifact at once (two processes, say): one resumes, one downloads
    into a file of its own; neither writes into the other's."""
    want = serve(artifacts, "twice.tar.gz")
    cache = Cache(fast.cache_dir)
    with cache.partial(want.sha256) as busy:
        busy.write(b"someone else's bytes")
        busy.sync()
        [result] = Fetcher(fast, Recorder()).fetch_all([want])
        assert busy.path.read_bytes() == b"someone else's bytes"
    assert hashlib.sha256(result.path.read_bytes()).hexdigest() == want.sha256


# Messages ------------------------------------------------------------------------------------


def test_a_404_from_a_mirror_names_the_mirror(artifacts: ArtifactServer, fast: Settings) -> None:
    want = Wanted("gone", "1.0", "linux/amd64", artifacts.url("gone.tar.gz"), "0" * 64)
    mirror = artifacts.base_url + "/void/"
    mirrored = dataclasses.replace(fast, mirrors=((artifacts.base_url + "/", (mirror,)),))
    with pytest.raises(DownloadError) as caught:
        Fetcher(mirrored, Recorder()).fetch_all([want])
    from_mirror, from_upstream = str(caught.value).splitlines()[1].split("; ")
    assert "void/gone.tar.gz: HTTP 404 Not Found" in from_mirror
    assert f"check the mirror {mirror} (invoke.yaml: buildbox.mirrors)" in from_mirror
    assert "components.yaml" not in from_mirror
    assert "check the URL in shared/components.yaml" in from_upstream


def test_a_deb_mismatch_names_the_lock_field(artifacts: ArtifactServer, tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    box_dir = root / "buildboxes/demo"
    write_yaml(
        box_dir / "box.yaml",
        {"version": 1, "base": BASE, "platforms": ["linux/amd64"], "components": ["tool"],
         "packages": ["make", "file"]},
    )  # fmt: skip
    debs = [
        LockedPackage(
            name, "1.0", "amd64", artifacts.add(f"{name}_1.0_amd64.deb", name.encode() * 100),
            hashlib.sha256(name.encode() * 100).hexdigest(), 100 * len(name),
        )
        for name in ("file", "make")
    ]  # fmt: skip
    platform = PlatformLock("sha256:" + "e" * 64, tuple(debs))
    (box_dir / "packages.lock").write_text(
        PackageLock(BASE, ("file", "make"), {"linux/amd64": platform}).render()
    )
    artifacts.misbehave("make_1.0_amd64.deb", "wrong-bytes")
    settings = dataclasses.replace(settings_for(root), cache_dir=tmp_path / "cache")
    loaded = project.load(settings)
    wanted = [w for w in wanted_for(loaded.boxes, loaded.library) if w.component == "make"]
    with pytest.raises(ChecksumMismatchError) as caught:
        Fetcher(settings, Recorder()).fetch(wanted[0])
    field = "platforms.linux/amd64.packages[1](make).sha256"
    assert f"update buildboxes/demo/packages.lock: {field}" in str(caught.value)


def test_a_huge_worker_count_starts_one_thread_and_one_connection_for_one_file(
    artifacts: ArtifactServer, fast: Settings
) -> None:
    want = serve(artifacts, "one.tar.gz", size=124)
    before = set(threading.enumerate())
    counted: list[int] = []

    class Counting(Recorder):
        def started(self, wanted: Wanted, url: str, total: int | None) -> None:
            started = set(threading.enumerate()) - before
            # the artifact server's own threads (one per request) are not the fetch's
            ours = [t for t in started if "process_request_thread" not in t.name]
            counted.append(len(ours))

    fetcher = Fetcher(dataclasses.replace(fast, fetch_workers=10_000_000), Counting())
    fetcher.fetch_all([want])
    assert counted == [1], "one worker thread for one file"
    adapter = fetcher.http.get_adapter(want.url)
    assert isinstance(adapter, requests.adapters.HTTPAdapter)
    assert adapter.poolmanager.connection_pool_kw["maxsize"] == 1, "urllib3 fills every slot"


# The cache's shape ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "said"),
    [
        ("cache", "the download cache {cache} is a file, not a directory"),
        ("cache/tmp", "the download cache's {cache}/tmp is a file, not a directory"),
        ("cache/sha256", "the download cache's {cache}/sha256 is a file, not a directory"),
        ("entry", "the download cache's entry {cache}/sha256/{sha256} is a directory, not a file"),
    ],
)
def test_a_cache_of_the_wrong_shape_is_one_clear_line(
    artifacts: ArtifactServer, tmp_path: Path, shape: str, said: str
) -> None:
    root = fetch_project(tmp_path / "p", artifacts, "shape.tar.gz")
    cache = tmp_path / "cache"
    (root / "invoke.yaml").write_text(f"buildbox:\n  cache_dir: {cache}\n")
    sha256 = artifacts.sha256("shape.tar.gz")
    if shape == "entry":
        (cache / "sha256" / sha256).mkdir(parents=True)
    else:
        (tmp_path / shape).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / shape).write_text("not a directory")
    result = run_cli(root, "fetch")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "download cache" in line]
    assert lines, result.stderr
    for line in lines:  # the error (and, for an entry, the progress line of its artifact)
        assert said.format(cache=cache, sha256=sha256) in line
        assert "remove it" in line


# Credentials in mirror URLs --------------------------------------------------------------------


def test_a_mirror_credential_is_used_and_never_printed(
    artifacts: ArtifactServer, tmp_path: Path
) -> None:
    root = fetch_project(tmp_path / "p", artifacts, "private.tar.gz")
    artifacts.add("private/private.tar.gz", artifacts.files["private.tar.gz"])
    artifacts.require_auth("private/", "user", "SECRET")
    mirror = artifacts.base_url.replace("http://", "http://user:SECRET@") + "/private/"
    (root / "invoke.yaml").write_text(
        f"buildbox:\n  cache_dir: {tmp_path / 'cache'}\n"
        f"  fetch_retries: 0\n  mirrors:\n    '{artifacts.base_url}/': '{mirror}'\n"
    )
    with artifacts.tally() as seen:
        fetched = run_cli(root, "fetch")
    assert fetched.returncode == 0, fetched.stderr
    assert seen.requests == {"private/private.tar.gz": 1}, "through the mirror, authorised"
    redacted = artifacts.base_url.replace("http://", "http://***@") + "/private/private.tar.gz"
    assert f"downloading tool 1.0 (linux/amd64): {redacted}" in fetched.stderr
    assert f"from {redacted}" in fetched.stderr
    outputs = [fetched.stdout + fetched.stderr]

    for trouble in ("wrong-bytes", "truncate", "missing"):
        shutil.rmtree(tmp_path / "cache")
        if trouble == "missing":
            del artifacts.files["private/private.tar.gz"]
            del artifacts.files["private.tar.gz"]
        else:  # upstream too: a mirror that breaks off falls through to it
            artifacts.misbehave("private/private.tar.gz", trouble)
            artifacts.misbehave("private.tar.gz", trouble)
        failed = run_cli(root, "fetch")
        assert failed.returncode == 1
        assert redacted in failed.stderr
        outputs.append(failed.stdout + failed.stderr)
    assert all("SECRET" not in text for text in outputs)
