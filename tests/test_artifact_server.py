"""The loopback artifact server really misbehaves the way later fetch tests rely on."""

from __future__ import annotations

import contextlib
import hashlib
import io
import tarfile
import time

import pytest
import requests

from artifact_server import ArtifactServer, tarball

PAYLOAD = tarball({"tool/bin/tool": "#!/bin/sh\necho tool 1.0\n"}, executable=("tool/bin/tool",))


@pytest.fixture
def served(artifacts: ArtifactServer) -> str:
    return artifacts.add("tool-1.0.tar.gz", PAYLOAD)


def test_tarballs_are_reproducible_and_real() -> None:
    again = tarball({"tool/bin/tool": "#!/bin/sh\necho tool 1.0\n"}, executable=("tool/bin/tool",))
    assert hashlib.sha256(again).hexdigest() == hashlib.sha256(PAYLOAD).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(PAYLOAD)) as archive:
        member = archive.getmember("tool/bin/tool")
        assert member.mode == 0o755
        extracted = archive.extractfile(member)
        assert extracted is not None
        assert extracted.read() == b"#!/bin/sh\necho tool 1.0\n"


def test_serves_the_file_and_counts_requests(artifacts: ArtifactServer, served: str) -> None:
    with artifacts.tally() as seen:
        answer = requests.get(served, timeout=5)
        assert answer.status_code == 200
        assert answer.content == PAYLOAD
        assert seen.requests == {"tool-1.0.tar.gz": 1}
        assert requests.get(artifacts.url("missing.tar.gz"), timeout=5).status_code == 404
    assert seen.requests == {"tool-1.0.tar.gz": 1, "missing.tar.gz": 1}


def test_a_tally_counts_only_what_arrives_while_it_is_open(
    artifacts: ArtifactServer, served: str
) -> None:
    requests.get(served, timeout=5)
    with artifacts.tally() as outer:
        requests.get(served, timeout=5)
        with artifacts.tally() as inner:
            requests.get(served, timeout=5)
        requests.get(served, timeout=5)
    requests.get(served, timeout=5)
    assert outer.requests == {"tool-1.0.tar.gz": 3}
    assert inner.requests == {"tool-1.0.tar.gz": 1}
    assert (outer.in_flight, inner.in_flight) == (0, 0)


def test_a_client_hanging_up_is_counted_not_printed(artifacts: ArtifactServer) -> None:
    """The server's threads outlive their test: a failure must not land in another test's stderr."""
    url = artifacts.add("hang-up.bin", bytes(256 * 1024))  # 16 chunks
    artifacts.misbehave("hang-up.bin", "slow", delay=0.01)
    hangups = artifacts.hangups
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        with requests.get(url, timeout=5, stream=True) as answer:
            assert answer.status_code == 200
        deadline = time.monotonic() + 10
        while artifacts.hangups == hangups and time.monotonic() < deadline:
            time.sleep(0.05)
    assert artifacts.hangups == hangups + 1
    assert stderr.getvalue() == ""


def test_wrong_bytes(artifacts: ArtifactServer, served: str) -> None:
    artifacts.misbehave("tool-1.0.tar.gz", "wrong-bytes")
    body = requests.get(served, timeout=5).content
    assert len(body) == len(PAYLOAD)
    assert hashlib.sha256(body).hexdigest() != artifacts.sha256("tool-1.0.tar.gz")


def test_truncated_body(artifacts: ArtifactServer, served: str) -> None:
    artifacts.misbehave("tool-1.0.tar.gz", "truncate")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(served, timeout=5)


def test_errors_then_success(artifacts: ArtifactServer, served: str) -> None:
    artifacts.misbehave("tool-1.0.tar.gz", "error-then-ok", errors=2)
    with artifacts.tally() as seen:
        statuses = [requests.get(served, timeout=5).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert seen.requests == {"tool-1.0.tar.gz": 3}


def test_slow(artifacts: ArtifactServer, served: str) -> None:
    artifacts.misbehave("tool-1.0.tar.gz", "slow", delay=0.3)
    started = time.monotonic()
    assert requests.get(served, timeout=5).content == PAYLOAD
    assert time.monotonic() - started >= 0.3


def test_connection_reset(artifacts: ArtifactServer, served: str) -> None:
    artifacts.misbehave("tool-1.0.tar.gz", "reset")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(served, timeout=5)


def test_ranges_are_honoured_while_if_range_holds(artifacts: ArtifactServer, served: str) -> None:
    half = len(PAYLOAD) // 2
    etag = artifacts.etag("tool-1.0.tar.gz")
    with artifacts.tally() as seen:
        whole = requests.get(served, timeout=5)
        rest = requests.get(
            served, headers={"Range": f"bytes={half}-", "If-Range": etag}, timeout=5
        )
    assert whole.headers["ETag"] == etag
    assert rest.status_code == 206
    assert rest.headers["Content-Range"] == f"bytes {half}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}"
    assert rest.content == PAYLOAD[half:]
    assert seen.ranges == [("tool-1.0.tar.gz", f"bytes={half}-")]
    assert seen.sent == {"tool-1.0.tar.gz": len(PAYLOAD) + len(PAYLOAD) - half}

    modified = whole.headers["Last-Modified"]
    artifacts.touch("tool-1.0.tar.gz")
    for validator in (etag, modified):
        again = requests.get(
            served, headers={"Range": "bytes=1-", "If-Range": validator}, timeout=5
        )
        assert (again.status_code, again.content) == (200, PAYLOAD), "the validator changed"
    beyond = requests.get(served, headers={"Range": f"bytes={len(PAYLOAD)}-"}, timeout=5)
    assert beyond.status_code == 416


def test_a_server_that_ignores_ranges(artifacts: ArtifactServer, served: str) -> None:
    artifacts.ignore_ranges("tool-1.0.tar.gz")
    answer = requests.get(served, headers={"Range": "bytes=10-"}, timeout=5)
    assert (answer.status_code, answer.content) == (200, PAYLOAD)


def test_a_cut_ranged_body_sends_half_of_the_rest(artifacts: ArtifactServer, served: str) -> None:
    artifacts.misbehave("tool-1.0.tar.gz", "truncate")
    rest = len(PAYLOAD) - 100
    with artifacts.tally() as seen, pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(served, headers={"Range": "bytes=100-"}, timeout=5)
    assert seen.sent == {"tool-1.0.tar.gz": rest // 2}


def test_basic_auth_is_required_where_told(artifacts: ArtifactServer) -> None:
    url = artifacts.add("private/tool.bin", b"secret stuff")
    artifacts.require_auth("private/", "user", "SECRET")
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, auth=("user", "wrong"), timeout=5).status_code == 401
    assert requests.get(url, auth=("user", "SECRET"), timeout=5).content == b"secret stuff"
