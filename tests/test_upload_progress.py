"""Publishing's progress: bytes as they go on a terminal, plain lines in CI; and what the
registry client reports while a real registry takes a blob (monolithic and in chunks)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest

from buildbox.digests import digest_of
from buildbox.oci.push import push_blobs
from buildbox.oci.registry import Registry as Client
from buildbox.oci.registry import RegistryError
from buildbox.output import TerminalUploads, UploadLog, upload_progress
from registry import Registry

MIB = 1024 * 1024


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_shows_blobs_in_flight_and_ci_gets_plain_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    terminal = Terminal()
    shown = upload_progress(terminal)
    assert isinstance(shown, TerminalUploads)
    shown.sent("sha256:aa", 1 * MIB, 4 * MIB)
    shown.sent("sha256:bb", 3 * MIB, 4 * MIB)
    drawn = terminal.getvalue()
    assert "uploading: 2 blob(s), 4.0 MiB of 8.0 MiB" in drawn.rsplit("\r", 1)[-1]
    shown.sent("sha256:aa", 4 * MIB, 4 * MIB)
    shown.uploaded("sha256:aa", 4 * MIB, 1.0)
    assert "uploaded sha256:aa (4.0 MiB) in 1.0 s (4.0 MiB/s)" in terminal.getvalue()
    assert "uploading: 1 blob(s)" in terminal.getvalue().rsplit("\r", 1)[-1], "aa is done"
    shown.sent("sha256:bb", 4 * MIB, 4 * MIB)
    assert terminal.getvalue().endswith("\r\033[K"), "no status line once nothing is in flight"

    shown.sent("sha256:cc", 2 * MIB, 4 * MIB)
    assert "uploading: 1 blob(s), 2.0 MiB of 4.0 MiB" in terminal.getvalue().rsplit("\r", 1)[-1]

    monkeypatch.setenv("CI", "true")
    plain = Terminal()
    logged = upload_progress(plain)
    assert type(logged) is UploadLog
    logged.sent("sha256:aa", MIB, 4 * MIB)
    logged.line("uploaded sha256:aa")
    assert plain.getvalue() == "uploaded sha256:aa\n"


@pytest.mark.integration
@pytest.mark.parametrize("chunked", [False, True], ids=["one PUT", "in chunks"])
def test_the_client_reports_bytes_the_registry_took(
    registry: Registry, tmp_path: Path, chunked: bool
) -> None:
    blob = tmp_path / "layer"
    blob.write_bytes(os.urandom(5 * MIB + 123))
    digest = digest_of(blob.read_bytes())
    reported: list[int] = []
    client = Client(registry.host, chunk_size=2 * MIB if chunked else 16 * MIB)
    with client:
        assert client.upload_blob(f"progress/{tmp_path.name}", digest, blob, reported.append)
    size = blob.stat().st_size
    assert reported[-1] == size
    assert reported == sorted(reported), "bytes only go forward when nothing failed"
    if chunked:
        assert reported == [2 * MIB, 4 * MIB, size, size]
    else:
        assert len(reported) >= 5, "about once a MiB while requests reads the file"


class FailingRegistry:
    """A registry whose upload takes some bytes, then fails for good."""

    def has_blob(self, repository: str, digest: str) -> bool:
        return False

    def upload_blob(self, repository: str, digest: str, source: bytes, sent: Any) -> bool:
        sent(10)
        raise RegistryError("the registry gave up")


class Told(UploadLog):
    """What a push reports, kept."""

    def __init__(self) -> None:
        self.output = io.StringIO()
        super().__init__(self.output)
        self.events: list[tuple[str, int, int]] = []

    def sent(self, digest: str, done: int, total: int) -> None:
        self.events.append((digest, done, total))


def test_a_failed_upload_leaves_no_blob_in_flight() -> None:
    told = Told()
    with pytest.raises(RegistryError):
        push_blobs(
            FailingRegistry(),  # type: ignore[arg-type]
            "repo", [("sha256:aa", b"x" * 20)], progress=told,
        )  # fmt: skip
    assert told.events == [("sha256:aa", 10, 20), ("sha256:aa", 20, 20)]
    assert told.output.getvalue() == "", "nothing was uploaded"
