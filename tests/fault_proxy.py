"""A proxy in front of a real registry that misbehaves on demand, as real registries do now and
then: 5xx, 429 with Retry-After, a dropped connection, a body cut short, a hang, an answer lost
after the registry acted, and bearer tokens that expire mid-push. Everything else passes through
unchanged (the registry builds its upload URLs from the Host header, which names the proxy, so
clients stay on the proxy). :func:`harsh` is a mix in which at least 40 % of requests fail."""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests


@dataclass
class Fault:
    """Answer the next ``times`` requests matching ``method`` and ``path`` (a regex) with
    ``kind``: an HTTP status, "drop" (close without an answer), "cut" (half the body),
    "hang" (answer nothing for ``seconds``), "lost" (pass the request on, then close without
    the registry's answer: it acted, the client cannot know), "expire" (every token expires:
    401 and a challenge, after earlier success), "swallow" (answer 201 without passing the
    request on, after running ``action``: someone else's write at that very moment)."""

    method: str
    path: str
    kind: int | str
    times: int = 1
    retry_after: str | None = None
    seconds: float = 0.0
    #: Act on every ``every``-th matching request instead of the next ones (times is then ignored).
    every: int = 0
    #: Let this many matching requests through before acting.
    after: int = 0
    action: Callable[[], None] | None = None
    seen: int = 0

    def applies(self, method: str, path: str) -> bool:
        if self.method not in ("*", method) or not re.search(self.path, path):
            return False
        self.seen += 1
        if self.seen <= self.after:
            return False
        if self.every:
            return self.seen % self.every == 0
        if self.times > 0:
            self.times -= 1
            return True
        return False


class _QuietServer(ThreadingHTTPServer):
    """No traceback on stderr when a client goes away mid-request (as the faults make them)."""

    def handle_error(self, request: object, client_address: object) -> None:
        pass


@dataclass
class FaultProxy:
    upstream: str  # http://127.0.0.1:<port>
    faults: list[Fault] = field(default_factory=list)
    #: (method, path, status or fault kind) of every request, in order.
    log: list[tuple[str, str, int | str]] = field(default_factory=list)
    #: Require bearer tokens from the proxy's own token service (tokens can then be expired).
    tokens: bool = False
    _valid: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.server_address[1]}"

    def add(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def heal(self) -> None:
        with self._lock:
            self.faults.clear()

    def expire_tokens(self) -> None:
        with self._lock:
            self._valid.clear()

    def served(self, kind: int | str) -> int:
        return sum(1 for entry in self.log if entry[2] == kind)

    def failed_share(self) -> float:
        """The share of registry requests (not token requests) the proxy made fail."""
        answered = [kind for _, path, kind in self.log if path.startswith("/v2/")]
        failed = [k for k in answered if isinstance(k, str) or k in (429, 500, 502, 503, 504)]
        return len(failed) / max(len(answered), 1)

    def start(self) -> FaultProxy:
        self._server = _QuietServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            return next((f for f in self.faults if f.applies(method, path)), None)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._handle()

            def do_HEAD(self) -> None:
                self._handle()

            def do_PUT(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def do_PATCH(self) -> None:
                self._handle()

            def _handle(self) -> None:
                body = self._body()
                method, path = self.command, self.path
                if proxy.tokens and path.startswith("/token"):
                    token = secrets.token_hex(8)
                    with proxy._lock:
                        proxy._valid.add(token)
                    self._answer(200, {"Content-Type": "application/json"},
                                 f'{{"token": "{token}"}}'.encode())  # fmt: skip
                    return
                if proxy.tokens and not self._authorised():
                    proxy.log.append((method, path, 401))
                    realm = f'Bearer realm="http://{proxy.host}/token",service="proxy"'
                    self._answer(401, {"WWW-Authenticate": realm}, b"")
                    return
                fault = proxy._fault(method, path)
                if fault is not None and fault.kind != "lost":
                    proxy.log.append((method, path, fault.kind))
                    self._misbehave(fault)
                    return
                dropped = ("authorization", "transfer-encoding", "content-length")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
                headers["Host"] = proxy.host
                answer = requests.request(
                    method, f"{proxy.upstream}{path}", data=body, headers=headers,
                    allow_redirects=False, timeout=120,
                )  # fmt: skip
                if fault is not None:  # lost: the registry acted; its answer never arrives
                    proxy.log.append((method, path, fault.kind))
                    self.close_connection = True
                    self.connection.close()
                    return
                proxy.log.append((method, path, answer.status_code))
                passed = {
                    k: v for k, v in answer.headers.items()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection",
                                         "content-encoding")
                }  # fmt: skip
                content = b"" if method == "HEAD" else answer.content
                upstream_length = answer.headers.get("Content-Length")
                self._answer(answer.status_code, passed, content, upstream_length)

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()  # the blank line after the last chunk
                    return b"".join(parts)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _authorised(self) -> bool:
                given = self.headers.get("Authorization", "")
                with proxy._lock:
                    return given.startswith("Bearer ") and given[7:] in proxy._valid

            def _misbehave(self, fault: Fault) -> None:
                if fault.kind == "swallow":
                    if fault.action is not None:
                        fault.action()
                    self._answer(201, {}, b"")
                elif fault.kind == "expire":
                    proxy.expire_tokens()
                    realm = f'Bearer realm="http://{proxy.host}/token",service="proxy"'
                    self._answer(401, {"WWW-Authenticate": realm}, b"")
                elif fault.kind == "drop":
                    self.close_connection = True
                    self.connection.close()
                elif fault.kind == "hang":
                    time.sleep(fault.seconds)
                    self.close_connection = True
                elif fault.kind == "cut":
                    self.send_response(200)
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self.wfile.write(b"x" * 500)
                    self.close_connection = True
                else:
                    extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                    body = b'{"errors": [{"code": "UNAVAILABLE", "message": "injected"}]}'
                    self._answer(
                        int(fault.kind), {**extra, "Content-Type": "application/json"}, body
                    )

            def _answer(
                self, status: int, headers: dict[str, str], body: bytes, length: str | None = None
            ) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", length if length is not None else str(len(body)))
                self.end_headers()
                if body and self.command != "HEAD":  # a HEAD's answer never has a body
                    self.wfile.write(body)

        return Handler


def harsh(retry_after: str = "1") -> list[Fault]:
    """About 45 % of registry requests fail, in every way at once: a 429 with Retry-After every
    7th request, a dropped connection every 11th, now and then an answer lost after the
    registry acted (an upload's data taken or committed), a GET's body cut short, and 503. The
    faults count requests, so one client sees them in the same order every run."""
    v2 = r"^/v2/."
    return [
        Fault("*", v2, 429, every=7, retry_after=retry_after),
        Fault("*", v2, "drop", every=11),
        Fault("*", r"/blobs/uploads/.", "lost", every=13),
        Fault("GET", v2, "cut", every=4),
        Fault("*", v2, 503, every=4),
    ]


@contextmanager
def fault_proxy(upstream: str, tokens: bool = False) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream, tokens=tokens).start()
    try:
        yield proxy
    finally:
        proxy.stop()
