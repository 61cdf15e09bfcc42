"""Plain-text output shared by the tasks."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Self, TextIO

if TYPE_CHECKING:
    from buildbox.fetch import Fetched, Wanted


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def size(count: int | None) -> str:
    if count is None:
        return "? B"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class LogProgress:
    """Fetch progress as plain lines, one per event: for CI logs and pipes."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def _say(self, line: str) -> None:
        with self._lock:
            print(line, file=self.stream, flush=True)

    def started(self, wanted: Wanted, url: str, total: int | None) -> None:
        self._say(f"downloading {wanted.label}: {url} ({size(total)})")

    def advanced(self, wanted: Wanted, count: int) -> None:
        """Plain logs do not show bytes as they arrive."""

    def finished(self, fetched: Fetched) -> None:
        where = f"from {fetched.source}" if fetched.source else "(cached)"
        self._say(f"ok {fetched.wanted.label}: {size(fetched.size)} {where}")

    def failed(self, wanted: Wanted, error: Exception) -> None:
        self._say(f"FAILED {error}")

    def warned(self, line: str) -> None:
        """Something went wrong on the way to an artifact that was fetched after all."""
        self._say(f"WARNING {line}")

    def close(self) -> None:
        """Nothing to tidy: every line is already complete."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class TerminalProgress(LogProgress):
    """On a terminal: the same lines, under one status line redrawn as bytes arrive."""

    def __init__(self, stream: TextIO, total_files: int) -> None:
        super().__init__(stream)
        self.total_files = total_files
        self.done_files = 0
        self.received = 0
        self.expected: dict[str, int] = {}
        self._drawn = 0.0

    def _say(self, line: str) -> None:
        with self._lock:
            self.stream.write("\r\033[K" + line + "\n")
            self._draw()

    def _draw(self) -> None:
        total = sum(self.expected.values())
        status = (
            f"fetching: {self.done_files}/{self.total_files} artifacts, "
            f"{size(self.received)} of {size(total)}"
        )
        self.stream.write("\r\033[K" + status)
        self.stream.flush()
        self._drawn = time.monotonic()

    def started(self, wanted: Wanted, url: str, total: int | None) -> None:
        if total:
            with self._lock:
                self.expected[wanted.sha256] = total
        super().started(wanted, url, total)

    def advanced(self, wanted: Wanted, count: int) -> None:
        with self._lock:
            self.received += count
            if time.monotonic() - self._drawn > 0.1:  # at most ten redraws a second
                self._draw()

    def finished(self, fetched: Fetched) -> None:
        with self._lock:
            self.done_files += 1
        super().finished(fetched)

    def close(self) -> None:
        with self._lock:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _interactive(stream: TextIO) -> bool:
    return stream.isatty() and os.environ.get("TERM") != "dumb" and not os.environ.get("CI")


def fetch_progress(stream: TextIO, total_files: int) -> LogProgress:
    """A redrawn status line on an interactive terminal, plain lines anywhere else (CI, pipes)."""
    return TerminalProgress(stream, total_files) if _interactive(stream) else LogProgress(stream)


class UploadLog:
    """Publishing's lines (one per blob uploaded or mounted, and the release's steps), as they
    are: for CI logs, pipes. It is the ``oci.push.PushProgress`` of the commands that publish."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            print(text, file=self.stream, flush=True)

    def sent(self, digest: str, done: int, total: int) -> None:
        """Plain logs do not show bytes as they go."""

    def uploaded(self, digest: str, count: int, seconds: float) -> None:
        rate = size(int(count / seconds))
        self.line(f"uploaded {digest[:19]} ({size(count)}) in {seconds:.1f} s ({rate}/s)")

    def mounted(self, digest: str, origin: str) -> None:
        self.line(f"mounted {digest[:19]} from {origin}")


class TerminalUploads(UploadLog):
    """On a terminal: the same lines, under a status line of the blobs in flight (bytes sent,
    the rate), redrawn when a blob starts or ends and at most ten times a second as bytes go;
    gone when none is in flight."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.flight: dict[str, tuple[int, int]] = {}  # digest -> (bytes sent, size)
        self._started = time.monotonic()
        self._landed = 0  # bytes of the blobs that ended since the status line appeared
        self._drawn = 0.0

    def line(self, text: str) -> None:
        with self._lock:
            self.stream.write("\r\033[K" + text + "\n")
            self._draw()

    def sent(self, digest: str, done: int, total: int) -> None:
        with self._lock:
            if not self.flight:
                self._started, self._landed = time.monotonic(), 0
            changed = digest not in self.flight or done >= total  # a blob started or ended
            if done >= total:
                self._landed += total if digest in self.flight else 0
                self.flight.pop(digest, None)
            else:
                self.flight[digest] = (done, total)
            if changed or time.monotonic() - self._drawn > 0.1:
                self._draw()

    def _draw(self) -> None:
        if not self.flight:
            self.stream.write("\r\033[K")
        else:
            done = sum(sent for sent, _ in self.flight.values())
            total = sum(size for _, size in self.flight.values())
            rate = (self._landed + done) / max(time.monotonic() - self._started, 1e-3)
            self.stream.write(
                f"\r\033[Kuploading: {len(self.flight)} blob(s), {size(done)} of {size(total)}, "
                f"{size(int(rate))}/s"
            )
        self.stream.flush()
        self._drawn = time.monotonic()


def upload_progress(stream: TextIO) -> UploadLog:
    """Publishing's progress: a status line on an interactive terminal, plain lines elsewhere."""
    return TerminalUploads(stream) if _interactive(stream) else UploadLog(stream)
