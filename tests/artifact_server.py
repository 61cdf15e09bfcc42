"""A loopback HTTP server standing in for upstream download sites; it misbehaves on demand."""

from __future__ import annotations

import base64
import contextlib
import email.utils
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
    #: The ``Range`` header of each request that had one, by name, in order of arrival.
    ranges: list[tuple[str, str]] = field(default_factory=list)
    #: Body bytes the server wrote, by name (a cut body counts what was written).
    sent: Counter[str] = field(default_factory=Counter)


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
        #: How often each file was replaced or touched: part of its ETag and Last-Modified.
        self.generations: Counter[str] = Counter()
        #: Files for which ``Range`` is ignored (a full 200 answer, as some servers do).
        self.no_ranges: set[str] = set()
        #: Name prefix -> the ``user:password`` its requests must carry (basic auth).
        self.credentials: dict[str, str] = {}
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

    def touch(self, name: str) -> None:
        """Change the file's validators (ETag, Last-Modified) but not its bytes: a redeploy."""
        self.generations[name] += 1

    def ignore_ranges(self, name: str) -> None:
        """Answer every request for ``name`` with the whole file, whatever ``Range`` asks."""
        self.no_ranges.add(name)

    def require_auth(self, prefix: str, user: str, password: str) -> None:
        """Answer 401 to requests for names under ``prefix`` without this basic auth."""
        self.credentials[prefix] = f"{user}:{password}"

    def etag(self, name: str) -> str:
        return f'"{self.sha256(name)[:16]}-{self.generations[name]}"'

    def last_modified(self, name: str) -> str:
        return email.utils.formatdate(1_700_000_000 + self.generations[name] * 3600, usegmt=True)

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
            self.no_ranges.clear()
            self.credentials.clear()
            self.latency = 0.0
        else:
            self.misbehaviours.pop(name, None)
            self.no_ranges.discard(name)

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
                asked = self.headers.get("Range")
                with server._lock:
                    counted_by = list(server._tallies)
                    for counts in counted_by:
                        counts.requests[name] += 1
                        if asked is not None:
                            counts.ranges.append((name, asked))
                        counts.in_flight += 1
                        counts.max_in_flight = max(counts.max_in_flight, counts.in_flight)
                self.counted_by = counted_by
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
                if not self._authorised(name):
                    self._plain(401, b"who are you?\n", {"WWW-Authenticate": 'Basic realm="x"'})
                    return
                content = server.files.get(name)
                if content is None:
                    self._plain(404, b"not found\n")
                    return
                self.validators = {
                    "ETag": server.etag(name),
                    "Last-Modified": server.last_modified(name),
                }
                self.name = name
                self.start = self._range_start(name, content)
                if self.start is not None and self.start >= len(content):
                    self._plain(416, b"", {"Content-Range": f"bytes */{len(content)}"})
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
                    self._send(content, cut=max(1, (len(content) - (self.start or 0)) // 2))
                elif trouble and mode == "slow":
                    self._send(content, delay=trouble.delay)
                else:
                    self._send(content)

            def _authorised(self, name: str) -> bool:
                for prefix, credential in server.credentials.items():
                    if name.startswith(prefix):
                        token = base64.b64encode(credential.encode()).decode()
                        return self.headers.get("Authorization") == f"Basic {token}"
                return True

            def _range_start(self, name: str, content: bytes) -> int | None:
                """Where a ``Range: bytes=N-`` request that is honoured starts (None: the whole
                file): only while ``If-Range``, if sent, is the current ETag or Last-Modified."""
                asked = self.headers.get("Range", "")
                if name in server.no_ranges or not asked.startswith("bytes="):
                    return None
                first, _, _last = asked.removeprefix("bytes=").partition("-")
                condition = self.headers.get("If-Range")
                if not first.isdigit() or condition not in (None, *self.validators.values()):
                    return None
                return int(first)

            def _plain(
                self, status: int, body: bytes, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                for header, value in (headers or {}).items():
                    self.send_header(header, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _send(self, content: bytes, cut: int | None = None, delay: float = 0.0) -> None:
                """The file, or the part ``Range`` asked for; ``cut``: of the body to send,
                how many bytes before hanging up."""
                start = self.start or 0
                body = content[start:]
                if self.start is None:
                    self.send_response(200)
                else:
                    self.send_response(206)
                    self.send_header(
                        "Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}"
                    )
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.send_header(
                    "Accept-Ranges", "none" if self.name in server.no_ranges else "bytes"
                )
                for header, value in self.validators.items():
                    self.send_header(header, value)
                self.end_headers()
                chunk = 16 * 1024
                sent = body if cut is None else body[:cut]
                for offset in range(0, len(sent), chunk):
                    if delay:
                        time.sleep(delay)
                    piece = sent[offset : offset + chunk]
                    with server._lock:  # before writing: the client may assert once it has read
                        for counts in self.counted_by:
                            counts.sent[self.name] += len(piece)
                    self.wfile.write(piece)
                if cut is not None:  # promised more than was sent: hang up mid-body
                    self.wfile.flush()
                    self.close_connection = True

        return Handler
