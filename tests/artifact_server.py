"""A loopback HTTP server standing in for upstream download sites; it misbehaves on demand."""

from __future__ import annotations

import gzip
import hashlib
import io
import socket
import struct
import tarfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
    """Serves ``/<name>`` for every added file; counts requests; misbehaves where told to."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.misbehaviours: dict[str, Misbehaviour] = {}
        self.requests: Counter[str] = Counter()
        #: Seconds to wait before answering any request (a far-away upstream).
        self.latency = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
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

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.max_in_flight = self.in_flight

    def behave(self, name: str | None = None) -> None:
        """Stop misbehaving (for one artifact, or all)."""
        if name is None:
            self.misbehaviours.clear()
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
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._answer()
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _answer(self) -> None:
                name = self.path.lstrip("/").split("?", 1)[0]
                with server._lock:
                    server.requests[name] += 1
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
