"""`invoke fetch` against the real loopback server: verified, cached, retried, mirrored, offline."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from artifact_server import ArtifactServer, tarball
from buildbox import output
from buildbox.define import project
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
from projects import make_project, run_cli, settings_for


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


def test_stale_temporary_files_are_removed(fast: Settings) -> None:
    cache = Cache(fast.cache_dir)
    with cache.temporary() as old:
        old.write(b"half")
    with cache.temporary() as fresh:
        fresh.write(b"in use")
    os.utime(old.name, (0, 0))
    cache.remove_stale()
    assert not Path(old.name).exists()
    assert Path(fresh.name).exists()


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


def test_kill_9_mid_download_leaves_nothing_partial_and_the_rerun_succeeds(
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

    artifacts.behave(name)
    rerun = run_cli(root, "fetch")
    assert rerun.returncode == 0, rerun.stderr
    [stored] = (cache / "sha256").iterdir()
    assert stored.name == artifacts.sha256(name)
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == artifacts.sha256(name)
