"""A loopback HTTP server standing in for upstream download sites; it misbehaves on demand."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import socket
import struct
import sys
import tarfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: What a misbehaving artifact does instead of answering plainly.
MODES = ("wrong-bytes", "truncate", "error-then-ok", "slow", "reset")


@dataclass
class Misbehaviour:
    mode: str
    #: For error-then-ok: how many errors come before the real answer.
    errors: int = 2
    #: For slow: seconds to wait before each chunk.
    delay: float = 0.1
    status: int = 503
    #: Misbehave only for this many requests, then answer plainly (None: always).
    times: int | None = None
    #: Requests seen since this misbehaviour was set.
    seen: int = 0


@dataclass
class Tally:
    """What the server was asked while one tally was open: the counts of one test, which no
    other test can clear or add to (a request is counted by the tallies open when it arrives)."""

    requests: Counter[str] = field(default_factory=Counter)
    #: Requests counted here that are still being answered, and the most there ever were.
    in_flight: int = 0
    max_in_flight: int = 0


class _Server(ThreadingHTTPServer):
    """Keeps a request thread's exception off ``sys.stderr``.

    socketserver prints it to whatever ``sys.stderr`` is when the thread fails, which may be a
    later test's captured output (a stalled answer fails seconds after its test gave up).
    """

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        #: Clients that hung up mid-answer: expected, the misbehaviour tests provoke it.
        self.hangups = 0
        #: Tracebacks of anything else: a bug in this server.
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        with self._lock:
            if isinstance(sys.exc_info()[1], ConnectionError):
                self.hangups += 1
            else:
                self.errors.append(traceback.format_exc())


def tarball(files: dict[str, str | bytes], executable: tuple[str, ...] = ()) -> bytes:
    """A gzipped tarball of ``files`` that is byte-for-byte the same every time it is made."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, content in sorted(files.items()):
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name in executable else 0o644
            info.mtime = 0
            archive.addfile(info, io.BytesIO(data))
    packed = io.BytesIO()
    # gzip header with mtime 0 so the archive's sha256 does not depend on when it was made
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return packed.getvalue()


class ArtifactServer:
    """Serves ``/<name>`` for every added file; counts requests in tallies; misbehaves where told.

    One server lives for the whole session, so it keeps no count a test could reset for all:
    a test opens a :meth:`tally` and asserts on that.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.misbehaviours: dict[str, Misbehaviour] = {}
        #: Seconds to wait before answering any request (a far-away upstream).
        self.latency = 0.0
        self._tallies: list[Tally] = []
        self._lock = threading.Lock()
        self._server = _Server(self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def add(self, name: str, content: bytes) -> str:
        """Serve ``content`` at ``/name``; returns its URL."""
        self.files[name] = content
        return self.url(name)

    def sha256(self, name: str) -> str:
        return hashlib.sha256(self.files[name]).hexdigest()

    def misbehave(self, name: str, mode: str, **options: float) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
        self.misbehaviours[name] = Misbehaviour(mode, **options)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def tally(self) -> Iterator[Tally]:
        """Count the requests that arrive until the block ends."""
        counts = Tally()
        with self._lock:
            self._tallies.append(counts)
        try:
            yield counts
        finally:
            with self._lock:
                self._tallies.remove(counts)

    @property
    def hangups(self) -> int:
        """How many clients hung up before their answer was sent (so far, all tests together)."""
        return self._server.hangups

    @property
    def errors(self) -> list[str]:
        """Tracebacks of requests that failed for any other reason: bugs in this server."""
        return self._server.errors

    def behave(self, name: str | None = None) -> None:
        """Stop misbehaving (for one artifact, or all, and answer without latency again)."""
        if name is None:
            self.misbehaviours.clear()
            self.latency = 0.0
        else:
            self.misbehaviours.pop(name, None)

    def start(self) -> ArtifactServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: tests assert on request counts, not logs."""

            def do_GET(self) -> None:
                name = self.path.lstrip("/").split("?", 1)[0]
                with server._lock:
                    counted_by = list(server._tallies)
                    for counts in counted_by:
                        counts.requests[name] += 1
                        counts.in_flight += 1
                        counts.max_in_flight = max(counts.max_in_flight, counts.in_flight)
                try:
                    self._answer(name)
                finally:
                    with server._lock:
                        for counts in counted_by:
                            counts.in_flight -= 1

            def _answer(self, name: str) -> None:
                with server._lock:
                    trouble = server.misbehaviours.get(name)
                    if trouble:
                        trouble.seen += 1
                        if trouble.times is not None and trouble.seen > trouble.times:
                            trouble = None
                if server.latency:
                    time.sleep(server.latency)
                content = server.files.get(name)
                if content is None:
                    self._plain(404, b"not found\n")
                    return
                mode = trouble.mode if trouble else None
                if trouble and mode == "error-then-ok" and trouble.seen <= trouble.errors:
                    self._plain(trouble.status, b"upstream trouble\n")
                elif mode == "reset":
                    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
                    self.close_connection = True
                elif mode == "wrong-bytes":
                    self._send(bytes(b ^ 0xFF for b in content))
                elif mode == "truncate":
                    self._send(content, cut=max(1, len(content) // 2))
                elif trouble and mode == "slow":
                    self._send(content, delay=trouble.delay)
                else:
                    self._send(content)

            def _plain(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _send(self, body: bytes, cut: int | None = None, delay: float = 0.0) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                chunk = 16 * 1024
                sent = body if cut is None else body[:cut]
                for start in range(0, len(sent), chunk):
                    if delay:
                        time.sleep(delay)
                    self.wfile.write(sent[start : start + chunk])
                if cut is not None:  # promised more than was sent: hang up mid-body
                    self.wfile.flush()
                    self.close_connection = True

        return Handler
