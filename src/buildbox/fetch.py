"""Verified downloads into a content-addressed cache.

Every artifact is streamed into a partial file in the cache, hashed on the way, and renamed into
place only when its sha256 is the pinned one: a bad, partial or interrupted download never enters
the cache. A download that breaks off is resumed (``Range`` + ``If-Range``) from its partial file,
by the next attempt or the next run, and the sha256 still covers the whole file. A cached
artifact is never downloaded again (it is re-hashed on use).

Where an artifact comes from, in order: the cache, each configured mirror, the upstream URL, the
escrow of recorded releases (:class:`Escrow`: the release being rebuilt first, then any other
whose inputs manifest holds that sha256), and for a locked Debian or Ubuntu package the archive
snapshot's address of that exact file (through the mirrors too). A checksum mismatch is never
retried and no other URL is tried after it: only an escrow may still deliver the pinned bytes
(the mismatch is then a warning). With ``from_escrow`` the escrow is the only source after the
cache. Whatever the source, the bytes are hashed and committed only when they are the pin.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import requests

from buildbox.define.boxes import Box
from buildbox.define.inputs import box_components
from buildbox.define.library import Library
from buildbox.define.lock import LOCK_FILE, PROOF_DIR, PackageLock, snapshot_roots, snapshot_url
from buildbox.digests import file_sha256
from buildbox.errors import BuildboxError
from buildbox.http import TRANSIENT_STATUSES, RetryPolicy, reason, redact, retrying_session
from buildbox.oci.inputs import read_inputs
from buildbox.oci.refs import Reference
from buildbox.oci.registry import Registry, RegistryError, open_registry
from buildbox.settings import Settings

_CHUNK = 64 * 1024  # small enough for progress and prompt writes on a slow link
#: Partial files no fetch holds and none touched for this long are left over from a download
#: that no later run resumed (its artifact is no longer wanted): they are removed.
_STALE_AFTER = 24 * 3600.0
#: What an upstream answers about a file it no longer has.
_GONE = (404, 410)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(?:\d+|\*)")


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
    #: What it is, as an inputs manifest names it (``oci.inputs.KINDS``).
    kind: str = "component"
    #: The box that needs it (locked packages: for the message when the archive dropped it).
    box: str = ""
    #: The archive snapshot's address of this exact file (a locked package of a box without
    #: ``snapshot:``), tried after the escrow; "" for none.
    snapshot: str = ""

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

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        #: The HTTP status of the answer that refused it, if there was one.
        self.status = status


class NotFetchedError(DownloadError):
    """Every source of one artifact failed: each one's reason, and its upstream URL's answer."""

    def __init__(self, want: Wanted, problems: list[str], upstream: int | None) -> None:
        super().__init__("; ".join(problems), upstream)
        self.want = want


class Progress(Protocol):
    """What a fetch reports while it works; see ``buildbox.output`` for the displays."""

    def started(self, wanted: Wanted, url: str, total: int | None) -> None: ...
    def advanced(self, wanted: Wanted, size: int) -> None: ...
    def finished(self, fetched: Fetched) -> None: ...
    def failed(self, wanted: Wanted, error: BuildboxError) -> None: ...


class Partial:
    """A download under way in the cache's tmp/: its file (locked against other fetches), the
    sha256 and size of what it holds so far, and the validator of the answer its bytes came
    from, which a resumed request sends as ``If-Range``."""

    def __init__(self, path: Path, file: BinaryIO) -> None:
        self.path = path
        self.file = file
        self.digest = hashlib.sha256()
        self.size = 0
        file.seek(0)  # what an earlier run left: hashed once, here
        for block in iter(lambda: file.read(_CHUNK), b""):
            self.digest.update(block)
            self.size += len(block)

    @property
    def _validator_file(self) -> Path:
        return _validator_file(self.path)

    def validator(self, url: str) -> str | None:
        """What to resume a download from ``url`` with (None: download it whole)."""
        try:
            saved = json.loads(self._validator_file.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(saved, dict) or saved.get("url") != redact(url):
            return None  # another source's validator says nothing about this one's bytes
        validator = saved.get("validator")
        return validator if isinstance(validator, str) else None

    def restart(self, url: str, validator: str | None) -> None:
        """Empty the file for a whole answer from ``url``, remembering its validator."""
        self.forget()
        self.file.truncate(0)
        self.file.seek(0)
        self.digest, self.size = hashlib.sha256(), 0
        if validator is not None:  # credentials stay out of the file: redacted
            self._validator_file.write_text(
                json.dumps({"url": redact(url), "validator": validator})
            )

    def forget(self) -> None:
        """Drop the validator: the file is not to be resumed (complete, or going)."""
        self._validator_file.unlink(missing_ok=True)

    def write(self, block: bytes) -> None:
        self.file.write(block)
        self.digest.update(block)
        self.size += len(block)

    def sync(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())

    def discard(self) -> None:
        _discard(self.path)


class Cache:
    """Files named by their sha256 under ``root/sha256/``; partial files under ``root/tmp/``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256

    def prepare(self) -> None:
        """Make the cache's directories (before any download starts, so that a wrong one is
        one error, not one per artifact)."""
        for directory in (self.root / "sha256", self.root / "tmp"):
            self._directory(directory)

    def _directory(self, directory: Path) -> Path:
        fix = "or set buildbox.cache_dir in invoke.yaml (or INVOKE_BUILDBOX_CACHE_DIR) elsewhere"
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            for each in (directory, *directory.parents):
                if each.exists() and not each.is_dir():
                    raise BuildboxError(
                        f"{self._shown(each)} is a file, not a directory: remove it, {fix}"
                    ) from None
            raise BuildboxError(
                f"{self._shown(directory)} cannot be made ({error.strerror}): {fix}"
            ) from None
        return directory

    def _shown(self, path: Path) -> str:
        if path == self.root:
            return f"the download cache {path}"
        if path.is_relative_to(self.root):
            return f"the download cache's {path}"
        return f"{path} (above the download cache {self.root})"

    def lookup(self, sha256: str) -> Path | None:
        """The cached file if it is there and still hashes to ``sha256``; a corrupt one goes."""
        path = self.path(sha256)
        if path.is_dir():
            raise BuildboxError(
                f"the download cache's entry {path} is a directory, not a file: remove it "
                f"(the toolkit puts only files there)"
            )
        if not path.is_file():
            return None
        if file_sha256(path) != sha256:
            path.unlink(missing_ok=True)
            return None
        return path

    @contextlib.contextmanager
    def partial(self, sha256: str) -> Iterator[Partial]:
        """The artifact's partial file, locked: whatever an interrupted fetch left in it is
        resumed, and what arrived is kept after a failure, for the next run. When another fetch
        holds it (another process), a private partial file, removed afterwards."""
        directory = self._directory(self.root / "tmp")
        path = directory / f"{sha256}.part"
        file = _locked(path, create=True)
        kept = file is not None
        if file is None:
            descriptor, name = tempfile.mkstemp(dir=directory, suffix=".part")
            path, file = Path(name), os.fdopen(descriptor, "a+b")
            fcntl.flock(file, fcntl.LOCK_EX)  # nothing else knows it, but remove_stale skips it
        with file:
            partial = Partial(path, file)
            try:
                yield partial
            finally:
                if not kept or partial.size == 0:  # nothing to resume from: nothing kept
                    partial.discard()

    def commit(self, partial: Partial, sha256: str) -> Path:
        """Move a verified partial file into place (atomically: all or nothing)."""
        final = self._directory(self.root / "sha256") / sha256
        partial.sync()
        partial.forget()
        os.chmod(partial.path, 0o644)
        os.replace(partial.path, final)
        return final

    def remove_stale(self, now: float | None = None) -> None:
        """Remove partial files left by a download no later run resumed: untouched for a day
        and held by no fetch."""
        directory = self.root / "tmp"
        if not directory.is_dir():
            return
        limit = (now if now is not None else time.time()) - _STALE_AFTER
        for leftover in directory.glob("*.part"):
            try:
                if leftover.stat().st_mtime >= limit:
                    continue
            except FileNotFoundError:
                continue  # another fetch removed or completed it first
            file = _locked(leftover, create=False)
            if file is not None:
                with file:
                    _discard(leftover)


def _validator_file(partial: Path) -> Path:
    """Where the validator of a partial file's bytes is kept (beside it)."""
    return partial.with_suffix(".validator")


def _discard(partial: Path) -> None:
    _validator_file(partial).unlink(missing_ok=True)  # first: never a validator alone
    partial.unlink(missing_ok=True)


def _locked(path: Path, *, create: bool) -> BinaryIO | None:
    """``path`` opened for appending and locked (flock, released when it is closed or the
    process dies); None when another fetch holds it (or, without ``create``, it is gone)."""
    while True:
        try:
            flags = os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0)
            descriptor = os.open(path, flags, 0o600)
        except FileNotFoundError:
            return None
        file = os.fdopen(descriptor, "a+b")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return None
        try:
            if os.path.samestat(os.fstat(descriptor), os.stat(path)):
                return file
        except FileNotFoundError:
            pass
        file.close()  # completed or removed while this waited for the lock
        if not create:
            return None


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
            roots = _snapshots(box, each)
            for index, package in enumerate(box.locked(each)):
                if package.sha256 not in seen:
                    seen[package.sha256] = Wanted(
                        package.name, package.version, each, package.url, package.sha256,
                        where=f"buildboxes/{box.name}/{LOCK_FILE}: "
                        f"platforms.{each}.packages[{index}]({package.name})",
                        fix=f"the archive may have dropped this version: run `invoke lock "
                        f"{box.name}` again, or pin an archive snapshot in box.yaml",
                        kind="package", box=box.name, snapshot=snapshot_url(package.url, roots),
                    )  # fmt: skip
    return list(seen.values())


def _snapshots(box: Box, platform: str) -> dict[str, str]:
    """The archive snapshots of the roots the box's lock took ``platform``'s packages from; none
    when box.yaml pins a snapshot (the lock's URLs are on it already)."""
    if box.snapshot or box.lock is None or platform not in box.lock.platforms:
        return {}
    return snapshot_roots(box.lock.platforms[platform].sources, box.directory / PROOF_DIR)


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
                    kind="index",
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


def session(settings: Settings, workers: int) -> requests.Session:
    """The download session for ``workers`` threads: GETs retry connection errors, resets and
    transient statuses."""
    return retrying_session(
        retries=settings.fetch_retries,
        backoff=settings.fetch_backoff,
        methods=("GET",),
        pool_size=workers,
    )


def _mirror(url: str, mirrors: tuple[tuple[str, tuple[str, ...]], ...]) -> str | None:
    """The mirror (a target prefix of ``buildbox.mirrors``) that ``url`` is on, if any."""
    return next((t for _, targets in mirrors for t in targets if url.startswith(t)), None)


def _validator(response: requests.Response) -> str | None:
    """What a resumed request names this answer by (``If-Range``): a strong ETag, else the
    Last-Modified date; None when the answer has neither (it is then never resumed)."""
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):  # If-Range takes strong validators only
        return etag
    return response.headers.get("Last-Modified")


@dataclass(frozen=True)
class Held:
    """Where an escrow holds an input: the registry, the repository, and the inputs manifest
    (``host/repository@digest``) that lists it."""

    registry: Registry
    repository: str
    escrow: str

    def where(self, sha256: str) -> str:
        return f"{self.registry.host}/{self.repository}@sha256:{sha256}"


class Escrow:
    """The inputs recorded releases escrowed in registries (``oci.inputs``), found by sha256.

    ``references`` gives the inputs manifests (``host/repository@sha256:...``) in the order to
    search them (the release being rebuilt first). Nothing is read until an artifact is looked
    for: a record that cannot be read, or a registry that cannot be reached, is a note in the
    error of an artifact no other source had, never a failure of a fetch that did not need it.
    Each manifest is read by digest (hashed by the registry client) when the ones before it do
    not hold what is looked for; one client per registry host. Safe for several threads.
    """

    def __init__(self, settings: Settings, references: Callable[[], Sequence[str]]) -> None:
        self.settings = settings
        self._references = references
        self._lock = threading.Lock()
        self._listed: list[str] | None = None
        #: Per manifest read so far (in order): its registry and repository, and the sha256s
        #: it holds (None: it could not be read).
        self._read: list[tuple[Held, frozenset[str]] | None] = []
        self._registries: dict[str, Registry] = {}
        #: What went wrong reading the record or a manifest, once each.
        self.problems: list[str] = []

    def _manifests(self) -> list[str]:
        if self._listed is None:
            try:
                self._listed = list(dict.fromkeys(self._references()))
            except BuildboxError as error:
                self._listed = []
                self.problems.append(f"the release record cannot be read ({error})")
        return self._listed

    @property
    def searched(self) -> int:
        """How many inputs manifests there are to search."""
        with self._lock:
            return len(self._manifests())

    def holders(self, sha256: str) -> Iterator[Held]:
        """Each escrow that lists ``sha256``, in order; manifests read as they are reached."""
        position = 0
        while True:
            with self._lock:
                listed = self._manifests()
                if position >= len(listed):
                    return
                if position == len(self._read):
                    self._read.append(self._index(listed[position]))
                found = self._read[position]
            if found is not None and sha256 in found[1]:
                yield found[0]
            position += 1

    def _index(self, escrow: str) -> tuple[Held, frozenset[str]] | None:
        try:
            reference = Reference.parse(escrow)
            if reference.digest is None:
                raise BuildboxError("it names no digest")
            registry = self._registries.get(reference.host)
            if registry is None:
                registry = open_registry(reference.host, self.settings)
                self._registries[reference.host] = registry
            found = registry.get_manifest(reference.repository, reference.digest)
            if found is None:
                raise BuildboxError("the registry no longer has it")
            inputs = read_inputs(found[0])
        except BuildboxError as error:
            self.problems.append(f"escrow {escrow}: {error}")
            return None
        held = Held(registry, reference.repository, escrow)
        return held, frozenset(each.sha256 for each in inputs)

    def close(self) -> None:
        with self._lock:
            for registry in self._registries.values():
                registry.close()
            self._registries.clear()


class Fetcher:
    """Fetches artifacts into a cache; one instance may serve several threads."""

    def __init__(
        self,
        settings: Settings,
        progress: Progress,
        http: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        *,
        escrow: Escrow | None = None,
        from_escrow: bool = False,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        #: Recorded releases' escrows: a fallback after upstream, or (``from_escrow``) the only
        #: source after the cache.
        self.escrow = escrow
        self.from_escrow = from_escrow
        #: Told what went wrong on the way to an artifact that was fetched after all.
        self.warn = warn or _warn
        self.cache = Cache(settings.cache_dir)
        self.progress = progress
        self._http = http
        #: How many threads the session's connection pool is for (a given session: any).
        self._pool = 0 if http is None else settings.fetch_workers
        self._lock = threading.Lock()
        self.sleep = sleep
        #: For a body that breaks off: urllib3 retries what fails before the body.
        self.retries = RetryPolicy(
            attempts=settings.fetch_retries + 1, backoff=settings.fetch_backoff
        )

    @property
    def http(self) -> requests.Session:
        """The download session."""
        return self._session_for(1)

    def _session_for(self, workers: int) -> requests.Session:
        """A session whose connection pool serves ``workers`` threads: urllib3 fills every slot
        of a pool when it makes one, so a pool is as large as the threads that share it, never
        as large as the setting alone (``fetch_workers`` may be huge)."""
        with self._lock:
            if self._http is None or self._pool < workers:
                self._http, self._pool = session(self.settings, workers), workers
            return self._http

    def fetch_all(self, wanted: list[Wanted], *, offline: bool = False) -> list[Fetched]:
        """Fetch everything (in parallel); all failures are reported together, in one error."""
        if offline:
            return self._from_cache_only(wanted)
        self.cache.prepare()
        self.cache.remove_stale()
        workers = max(1, min(self.settings.fetch_workers, len(wanted)))
        self._session_for(workers)
        results: list[Fetched] = []
        failures: list[tuple[Wanted, BuildboxError]] = []
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool:
            for want, outcome in zip(wanted, pool.map(self._fetch_or_error, wanted), strict=True):
                if isinstance(outcome, BuildboxError):
                    failures.append((want, outcome))
                else:
                    results.append(outcome)
        if failures:
            lines = "\n".join(f"  {error}" for _, error in failures)
            raise DownloadError(
                f"could not fetch {len(failures)} of {len(wanted)} artifacts:\n{lines}"
                + self._dropped([error for _, error in failures])
            )
        return results

    def _dropped(self, errors: list[BuildboxError]) -> str:
        """What to do about locked packages the archive no longer has (404 or 410 upstream)
        that no escrow or snapshot had either: which versions, and the ways forward."""
        gone = [
            e
            for e in errors
            if isinstance(e, NotFetchedError) and e.want.kind == "package" and e.status in _GONE
        ]
        if not gone:
            return ""
        lines = [
            f"  {e.want.box}: {e.want.component} {e.want.version} ({e.want.platform}) at "
            f"{redact(e.want.url)}: HTTP {e.status}"
            for e in gone
        ]
        boxes = sorted({e.want.box for e in gone})
        lock = " and ".join(f"`invoke lock {box}`" for box in boxes)
        yaml = ", ".join(f"buildboxes/{box}/box.yaml" for box in boxes)
        if self.escrow is None:
            escrowed = "No escrow was searched."
        elif self.escrow.searched:
            escrowed = f"None of the {self.escrow.searched} recorded release escrow(s) holds them."
        else:
            escrowed = "No recorded release has an escrow to take them from."
        return (
            f"\nThe archive no longer has {len(gone)} locked package version(s):\n"
            + "\n".join(lines)
            + f"\n{escrowed} Two ways forward: (1) run {lock} and bump the version in {yaml} "
            "(a new release: the old one cannot be rebuilt as it was); or (2) keep the old files "
            "reachable: set `snapshot:` in box.yaml, or add a mirror serving them to "
            "buildbox.mirrors in invoke.yaml."
        )

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
            lines = "\n".join(
                f"  {m.label} sha256:{m.sha256} from {redact(m.url)}" for m in missing
            )
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
        """One artifact: from the cache, else from each mirror, else from upstream, else from an
        escrow, else from its archive snapshot (via mirrors too); resumed from what an
        interrupted fetch of it left in the cache. With ``from_escrow``: the cache, else an
        escrow, nothing else."""
        cached = self.cache.lookup(want.sha256)
        if cached is not None:
            return Fetched(want, cached, cached.stat().st_size, None)
        with self.cache.partial(want.sha256) as partial:
            if partial.size and partial.digest.hexdigest() == want.sha256:
                # complete, killed before its rename: verified now, nothing left to ask for
                path = self.cache.commit(partial, want.sha256)
                return Fetched(want, path, partial.size, None)
            if self.from_escrow:
                return self._escrow_only(want, partial)
            problems: list[str] = []
            upstream: int | None = None
            try:
                for url in sources(want.url, self.settings.mirrors):
                    try:
                        path = self._download(want, url, partial)
                    except DownloadError as error:
                        problems.append(str(error))
                        upstream = error.status if url == want.url else upstream
                        continue
                    return Fetched(want, path, partial.size, redact(url))
            except ChecksumMismatchError as mismatch:
                # Other bytes: no other URL is trusted to put it right; an escrow may.
                fetched = self._from_escrow(want, partial, problems)
                if fetched is None:
                    raise ChecksumMismatchError("; ".join([str(mismatch), *problems])) from None
                self.warn(f"{mismatch} Taken from {fetched.source} instead.")
                return fetched
            fetched = self._from_escrow(want, partial, problems)
            if fetched is not None:
                return fetched
            for url in sources(want.snapshot, self.settings.mirrors) if want.snapshot else ():
                try:
                    path = self._download(want, url, partial)
                except DownloadError as error:
                    problems.append(str(error))
                    continue
                return Fetched(want, path, partial.size, redact(url))
        raise NotFetchedError(want, problems, upstream)

    def _escrow_only(self, want: Wanted, partial: Partial) -> Fetched:
        problems: list[str] = []
        fetched = self._from_escrow(want, partial, problems)
        if fetched is None:
            missing = f"sha256:{want.sha256} ({redact(want.url)}) is not escrowed"
            problems.insert(0, f"{want.label}: --from-escrow: {missing}")
            raise NotFetchedError(want, problems, None)
        return fetched

    def _from_escrow(self, want: Wanted, partial: Partial, problems: list[str]) -> Fetched | None:
        """From the first escrow that holds the artifact and serves its pinned bytes; what each
        one that did not went wrong is added to ``problems``, and when none holds it, why."""
        if self.escrow is None:
            if self.from_escrow:
                problems.append("no recorded release has an escrow")
            return None
        held_by = 0
        for held in self.escrow.holders(want.sha256):
            held_by += 1
            try:
                path = self._from_registry(want, held, partial)
            except BuildboxError as error:  # a mismatch too: the next escrow may serve the pin
                problems.append(str(error))
                continue
            return Fetched(want, path, partial.size, f"{held.where(want.sha256)} (escrow)")
        if not held_by:
            problems.append(self._not_escrowed())
        return None

    def _not_escrowed(self) -> str:
        """Why no escrow had an artifact."""
        assert self.escrow is not None
        searched = self.escrow.searched
        notes = "".join(f"; {problem}" for problem in self.escrow.problems)
        if not searched:
            return f"no recorded release has an escrow{notes}"
        return f"none of the {searched} recorded release escrow(s) holds it{notes}"

    def _from_registry(self, want: Wanted, held: Held, partial: Partial) -> Path:
        """Stream a blob from an escrow into the partial file, verified as any download; a body
        that breaks off is fetched again (whole)."""
        shown = held.where(want.sha256)
        attempts = self.retries.attempts
        for attempt in range(1, attempts + 1):
            partial.restart(shown, None)
            try:
                with held.registry.blob_stream(held.repository, f"sha256:{want.sha256}") as answer:
                    return self._receive(want, shown, answer, partial, f"escrow {held.escrow}")
            except RegistryError as error:
                raise DownloadError(f"{want.label}: escrow {held.escrow}: {error}") from None
            except _BrokenBodyError as error:
                if attempt == attempts:
                    raise DownloadError(
                        f"{want.label}: {shown}: failed after {attempts} attempts: {error}"
                    ) from None
                self.sleep(self.retries.delay(attempt))
        raise AssertionError("unreachable")

    def _download(self, want: Wanted, url: str, partial: Partial) -> Path:
        """Download with retries for a body that breaks off (each resumes where the last one
        broke); urllib3 retries everything before the body."""
        attempts = self.retries.attempts
        for attempt in range(1, attempts + 1):
            try:
                return self._attempt(want, url, partial)
            except _BrokenBodyError as error:
                if attempt == attempts:
                    raise DownloadError(
                        f"{want.label}: {redact(url)}: failed after {attempts} attempts: {error}"
                    ) from None
                self.sleep(self.retries.delay(attempt))
        raise AssertionError("unreachable")

    def _attempt(self, want: Wanted, url: str, partial: Partial) -> Path:
        shown = redact(url)
        validator = partial.validator(url) if partial.size else None
        headers = {"Accept-Encoding": "identity"}  # ranges count the bytes stored, not decoded
        if validator is not None:
            headers |= {"Range": f"bytes={partial.size}-", "If-Range": validator}
        try:
            response = self.http.get(
                url, headers=headers, stream=True, timeout=self.settings.fetch_timeout
            )
        except requests.RequestException as error:
            # urllib3 has already retried connection errors, resets and timeouts.
            raise DownloadError(
                f"{want.label}: {shown}: {reason(error)} "
                f"(after {self.settings.fetch_retries} retries)"
            ) from None
        with response:
            resumed = validator is not None and response.status_code == 206
            if resumed and _range_start(response) != partial.size:
                partial.restart(url, None)
                raise _BrokenBodyError(f"asked for bytes from {partial.size}, got another range")
            if validator is not None and response.status_code == 416:
                partial.restart(url, None)  # the kept part is longer than the file now
                raise _BrokenBodyError("the partial file kept is longer than the file")
            if response.status_code not in (200, 206) or (response.status_code == 206) != resumed:
                raise DownloadError(self._refused(want, url, response), response.status_code)
            if not resumed:  # a whole answer: the server ignored Range, or If-Range failed
                partial.restart(url, _validator(response))
            return self._receive(want, shown, response, partial)

    def _receive(
        self,
        want: Wanted,
        shown: str,
        response: requests.Response,
        partial: Partial,
        escrow: str = "",
    ) -> Path:
        """The answer's body into the partial file (after what it kept), hashed; committed when
        the whole file is the pinned one, else discarded (a mismatch)."""
        kept = partial.size
        expected_size = response.headers.get("Content-Length")
        total = kept + int(expected_size) if expected_size else None
        self.progress.started(want, shown, total)
        if kept:
            self.progress.advanced(want, kept)
        try:
            for block in response.iter_content(_CHUNK):
                partial.write(block)
                self.progress.advanced(want, len(block))
        except requests.RequestException as error:
            partial.sync()  # what arrived is kept: the next attempt resumes from it
            raise _BrokenBodyError(reason(error)) from None
        partial.sync()
        received = partial.size - kept
        if expected_size is not None and received != int(expected_size):
            raise _BrokenBodyError(f"truncated body: {received} of {expected_size} bytes")
        actual = partial.digest.hexdigest()
        if actual != want.sha256:
            partial.restart(shown, None)  # emptied: removed when the fetch lets go of it
            earlier = f" (resumed from {kept} bytes an earlier attempt kept)" if kept else ""
            if escrow:
                advice = (
                    f"Refused: the registry (or a proxy in front of it) serves other bytes "
                    f"for that digest than {escrow} lists."
                )
            else:
                advice = (
                    f"If upstream really changed it, find the new published checksum and "
                    f"update {want.field}.sha256; otherwise the source is serving something else."
                )
            raise ChecksumMismatchError(
                f"{want.label}: sha256 mismatch for {shown}{earlier}: expected "
                f"{want.sha256}, got {actual}. The file was discarded. {advice}"
            )
        return self.cache.commit(partial, want.sha256)

    def _refused(self, want: Wanted, url: str, response: requests.Response) -> str:
        """Why an answer that is not the file is final, and what to check."""
        mirror = _mirror(url, self.settings.mirrors) if url != want.url else None
        if response.status_code in TRANSIENT_STATUSES:
            hint = f"still failing after {self.settings.fetch_retries} retries"
        elif mirror is not None:
            hint = f"check the mirror {redact(mirror)} (invoke.yaml: buildbox.mirrors)"
        else:
            hint = want.fix or f"check the URL in {want.field}.url"
        status = f"HTTP {response.status_code} {response.reason}"
        return f"{want.label}: {redact(url)}: {status} ({hint})"


def _range_start(response: requests.Response) -> int | None:
    """Where the bytes of a 206 answer start (its Content-Range)."""
    found = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
    return int(found.group(1)) if found else None


def _warn(line: str) -> None:
    """A warning where no display was given: on stderr."""
    print(f"warning: {line}", file=sys.stderr)


class _BrokenBodyError(Exception):
    """The body broke off (reset, timeout, fewer bytes than Content-Length): worth a retry."""
