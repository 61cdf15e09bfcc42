"""Verified downloads into a content-addressed cache.

Every artifact is streamed into a temporary file in the cache, hashed on the way, and renamed into
place only when its sha256 is the pinned one: a bad, partial or interrupted download never enters
the cache. A cached artifact is never downloaded again (it is re-hashed on use). Mirrors are tried
before the upstream URL; a checksum mismatch from any source fails at once, never retried.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import requests

from buildbox.define.boxes import Box
from buildbox.define.inputs import box_components
from buildbox.define.library import Library
from buildbox.define.lock import LOCK_FILE, PackageLock
from buildbox.digests import file_sha256
from buildbox.errors import BuildboxError
from buildbox.http import TRANSIENT_STATUSES, RetryPolicy, reason, retrying_session
from buildbox.settings import Settings

_CHUNK = 64 * 1024  # small enough for progress and prompt writes on a slow link
#: Temporary files older than this are left over from a killed fetch and are removed.
_STALE_AFTER = 3600.0


@dataclass(frozen=True)
class Wanted:
    """One artifact a box needs: which component and platform, where from, and its pin."""

    component: str
    version: str
    platform: str
    url: str
    sha256: str
    #: Where the pin is written, for error messages (default: the component library).
    where: str = ""
    #: What to do when the source no longer has the file (default: fix the URL).
    fix: str = ""

    @property
    def label(self) -> str:
        return f"{self.component} {self.version} ({self.platform})"

    @property
    def field(self) -> str:
        """Where the pin is written, for error messages."""
        return self.where or (
            f"shared/components.yaml: components.{self.component}.artifacts.{self.platform}"
        )


@dataclass(frozen=True)
class Fetched:
    wanted: Wanted
    path: Path
    size: int
    #: The URL it was downloaded from, or None when it came from the cache.
    source: str | None


class ChecksumMismatchError(BuildboxError):
    """The bytes received are not the pinned ones. Never retried: the pin or the source is wrong."""


class DownloadError(BuildboxError):
    """No source delivered the artifact (after retrying transient failures)."""


class Progress(Protocol):
    """What a fetch reports while it works; see ``buildbox.output`` for the displays."""

    def started(self, wanted: Wanted, url: str, total: int | None) -> None: ...
    def advanced(self, wanted: Wanted, size: int) -> None: ...
    def finished(self, fetched: Fetched) -> None: ...
    def failed(self, wanted: Wanted, error: BuildboxError) -> None: ...


class Cache:
    """Files named by their sha256 under ``root/sha256/``; temporary files under ``root/tmp/``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256

    def lookup(self, sha256: str) -> Path | None:
        """The cached file if it is there and still hashes to ``sha256``; a corrupt one goes."""
        path = self.path(sha256)
        if not path.is_file():
            return None
        if file_sha256(path) != sha256:
            path.unlink(missing_ok=True)
            return None
        return path

    def temporary(self) -> tempfile._TemporaryFileWrapper[bytes]:
        """A new temporary file on the cache's file system, so that the final rename is atomic."""
        directory = self.root / "tmp"
        directory.mkdir(parents=True, exist_ok=True)
        return tempfile.NamedTemporaryFile(dir=directory, suffix=".part", delete=False)

    def commit(self, temporary: Path, sha256: str) -> Path:
        """Move a verified temporary file into place (atomically: all or nothing)."""
        final = self.path(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(temporary, 0o644)
        os.replace(temporary, final)
        return final

    def remove_stale(self, now: float | None = None) -> None:
        """Remove temporary files a killed fetch left behind (old enough not to be in use)."""
        directory = self.root / "tmp"
        if not directory.is_dir():
            return
        limit = (now if now is not None else time.time()) - _STALE_AFTER
        for leftover in directory.glob("*.part"):
            try:
                if leftover.stat().st_mtime < limit:
                    leftover.unlink()
            except FileNotFoundError:
                pass  # another fetch removed it first


def wanted_for(
    boxes: Iterable[Box], library: Library, platform: str | None = None, *, packages: bool = True
) -> list[Wanted]:
    """Every artifact the boxes need (for one platform, or each box's platforms), once each;
    with ``packages``, their locked OS packages too."""
    seen: dict[str, Wanted] = {}
    for box in boxes:
        platforms = box.platforms_for(platform)
        for each in platforms:
            for component in box_components(box, library, each):
                artifact = component.artifact(each)
                if artifact is not None and artifact.sha256 not in seen:
                    seen[artifact.sha256] = Wanted(
                        component.name, component.version, each, artifact.url, artifact.sha256
                    )
        for each in platforms if packages else ():
            for package in box.locked(each):
                if package.sha256 not in seen:
                    seen[package.sha256] = Wanted(
                        package.name, package.version, each, package.url, package.sha256,
                        where=f"buildboxes/{box.name}/{LOCK_FILE}: platforms.{each}",
                        fix=f"the archive may have dropped this version: run `invoke lock "
                        f"{box.name}` again, or pin an archive snapshot in box.yaml",
                    )  # fmt: skip
    return list(seen.values())


def wanted_indices(box: str, lock: PackageLock) -> list[Wanted]:
    """The Packages indices a package lock's proof names, by hash (once each): ``invoke check``
    verifies every locked package against them."""
    seen: dict[str, Wanted] = {}
    for platform, facts in sorted(lock.platforms.items()):
        for source in facts.sources:
            for index in source.indices:
                seen.setdefault(index.sha256, Wanted(
                    "Packages index", f"{source.suite}/{index.path}", platform,
                    source.index_url(index), index.sha256,
                    where=f"buildboxes/{box}/{LOCK_FILE}: platforms.{platform}.sources",
                    fix=f"the archive serves an index by hash only while its InRelease is "
                    f"current: run `invoke lock {box}` again, or copy a cache holding sha256 "
                    f"{index.sha256} from a machine that ran `invoke check`",
                ))  # fmt: skip
    return list(seen.values())


def sources(url: str, mirrors: tuple[tuple[str, tuple[str, ...]], ...]) -> list[str]:
    """Where to look for ``url``: each matching mirror (most specific first), then ``url``."""
    found = [
        target + url[len(prefix) :]
        for prefix, targets in mirrors
        if url.startswith(prefix)
        for target in targets
    ]
    return [*found, url]


def session(settings: Settings) -> requests.Session:
    """The download session: GETs retry connection errors, resets and transient statuses."""
    return retrying_session(
        retries=settings.fetch_retries,
        backoff=settings.fetch_backoff,
        methods=("GET",),
        pool_size=settings.fetch_workers,
    )


class Fetcher:
    """Fetches artifacts into a cache; one instance may serve several threads."""

    def __init__(
        self,
        settings: Settings,
        progress: Progress,
        http: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.cache = Cache(settings.cache_dir)
        self.progress = progress
        self.http = http or session(settings)
        self.sleep = sleep
        #: For a body that breaks off: urllib3 retries what fails before the body.
        self.retries = RetryPolicy(
            attempts=settings.fetch_retries + 1, backoff=settings.fetch_backoff
        )

    def fetch_all(self, wanted: list[Wanted], *, offline: bool = False) -> list[Fetched]:
        """Fetch everything (in parallel); all failures are reported together, in one error."""
        self.cache.remove_stale()
        if offline:
            return self._from_cache_only(wanted)
        results: list[Fetched] = []
        failures: list[tuple[Wanted, BuildboxError]] = []
        with ThreadPoolExecutor(max_workers=self.settings.fetch_workers) as pool:
            for want, outcome in zip(wanted, pool.map(self._fetch_or_error, wanted), strict=True):
                if isinstance(outcome, BuildboxError):
                    failures.append((want, outcome))
                else:
                    results.append(outcome)
        if failures:
            lines = "\n".join(f"  {error}" for _, error in failures)
            raise DownloadError(
                f"could not fetch {len(failures)} of {len(wanted)} artifacts:\n{lines}"
            )
        return results

    def _from_cache_only(self, wanted: list[Wanted]) -> list[Fetched]:
        results, missing = [], []
        for want in wanted:
            path = self.cache.lookup(want.sha256)
            if path is None:
                missing.append(want)
                continue
            fetched = Fetched(want, path, path.stat().st_size, None)
            self.progress.finished(fetched)
            results.append(fetched)
        if missing:
            lines = "\n".join(f"  {m.label} sha256:{m.sha256} from {m.url}" for m in missing)
            raise DownloadError(
                f"--offline: {len(missing)} artifact(s) are not in the cache "
                f"{self.cache.root}:\n{lines}\nRun `invoke fetch` where the network (or a "
                "mirror) is reachable, or copy a cache directory from such a machine."
            )
        return results

    def _fetch_or_error(self, want: Wanted) -> Fetched | BuildboxError:
        try:
            fetched = self.fetch(want)
        except BuildboxError as error:
            self.progress.failed(want, error)
            return error
        self.progress.finished(fetched)
        return fetched

    def fetch(self, want: Wanted) -> Fetched:
        """One artifact: from the cache, else from each mirror, else from upstream."""
        cached = self.cache.lookup(want.sha256)
        if cached is not None:
            return Fetched(want, cached, cached.stat().st_size, None)
        problems = []
        for url in sources(want.url, self.settings.mirrors):
            try:
                path, size = self._download(want, url)
            except DownloadError as error:
                problems.append(str(error))
                continue
            return Fetched(want, path, size, url)
        raise DownloadError("; ".join(problems))

    def _download(self, want: Wanted, url: str) -> tuple[Path, int]:
        """Download with retries for a body that breaks off; urllib3 retries everything before."""
        attempts = self.retries.attempts
        for attempt in range(1, attempts + 1):
            try:
                return self._attempt(want, url)
            except _BrokenBodyError as error:
                if attempt == attempts:
                    raise DownloadError(
                        f"{want.label}: {url}: failed after {attempts} attempts: {error}"
                    ) from None
                self.sleep(self.retries.delay(attempt))
        raise AssertionError("unreachable")

    def _attempt(self, want: Wanted, url: str) -> tuple[Path, int]:
        try:
            response = self.http.get(url, stream=True, timeout=self.settings.fetch_timeout)
        except requests.RequestException as error:
            # urllib3 has already retried connection errors, resets and timeouts.
            raise DownloadError(
                f"{want.label}: {url}: {reason(error)} "
                f"(after {self.settings.fetch_retries} retries)"
            ) from None
        with response:
            if response.status_code != 200:
                transient = response.status_code in TRANSIENT_STATUSES
                hint = (
                    f"still failing after {self.settings.fetch_retries} retries"
                    if transient
                    else want.fix or f"check the URL in {want.field}.url"
                )
                raise DownloadError(
                    f"{want.label}: {url}: HTTP {response.status_code} {response.reason} ({hint})"
                )
            expected_size = response.headers.get("Content-Length")
            self.progress.started(want, url, int(expected_size) if expected_size else None)
            digest, size = hashlib.sha256(), 0
            temporary = self.cache.temporary()
            try:
                with temporary:
                    try:
                        for block in response.iter_content(_CHUNK):
                            digest.update(block)
                            temporary.write(block)
                            size += len(block)
                            self.progress.advanced(want, len(block))
                    except requests.RequestException as error:
                        raise _BrokenBodyError(reason(error)) from None
                    temporary.flush()
                    os.fsync(temporary.fileno())
                if expected_size is not None and size != int(expected_size):
                    raise _BrokenBodyError(f"truncated body: {size} of {expected_size} bytes")
                actual = digest.hexdigest()
                if actual != want.sha256:
                    raise ChecksumMismatchError(
                        f"{want.label}: sha256 mismatch for {url}: expected {want.sha256}, "
                        f"got {actual}. The file was discarded. If upstream really changed it, "
                        f"find the new published checksum and update {want.field}.sha256; "
                        "otherwise the source is serving something else."
                    )
                return self.cache.commit(Path(temporary.name), want.sha256), size
            finally:
                Path(temporary.name).unlink(missing_ok=True)


class _BrokenBodyError(Exception):
    """The body broke off (reset, timeout, fewer bytes than Content-Length): worth a retry."""
