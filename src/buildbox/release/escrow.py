"""Escrow: every input a release read from outside the repository, kept in a registry beside it.

The inputs are the release's component artifacts (source tarballs included), its locked
packages and the Packages indices its lock's proof names; each is pushed as a blob by its
sha256, and listed in one inputs manifest (``oci.inputs``) whose subject is the released index
or image, attached as a referrer before the tag is written. Blobs the registry already holds are
neither uploaded nor mounted again, so the next release of a box costs only what changed.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from buildbox.define.boxes import Box
from buildbox.define.project import Project
from buildbox.digests import digest_of
from buildbox.errors import BuildboxError
from buildbox.fetch import Wanted, wanted_for, wanted_indices
from buildbox.http import redact
from buildbox.oci import referrers
from buildbox.oci.documents import EMPTY_JSON, Descriptor
from buildbox.oci.inputs import INPUTS_TYPE, Input, inputs_manifest, read_inputs
from buildbox.oci.push import SILENT, PushProgress, push_blobs
from buildbox.oci.refs import Reference
from buildbox.oci.registry import Registry, open_registry
from buildbox.output import size as shown_size
from buildbox.release import record
from buildbox.settings import Settings


def wanted(project: Project, box: Box) -> list[Wanted]:
    """What a release of ``box`` fetches: its components' artifacts and its locked packages on
    every platform, and the Packages indices its lock's proof names (once each)."""
    found = wanted_for([box], project.library)
    if box.lock is not None:
        found += wanted_indices(box.name, box.lock)
    return found


def release_inputs(project: Project, box: Box, fetched: Mapping[str, Path]) -> list[Input]:
    """Every input of a release of ``box``, one per sha256 (the platforms that use it merged),
    its size read from its verified file in ``fetched`` (sha256 -> path)."""
    merged: dict[str, tuple[Wanted, set[str]]] = {}
    # wanted_for names each file once, for its first platform: asked per platform, each
    # input's platforms are all the ones that use it.
    found = [w for p in box.platforms for w in wanted_for([box], project.library, p)]
    found += wanted_indices(box.name, box.lock) if box.lock is not None else []
    for want in found:
        merged.setdefault(want.sha256, (want, set()))[1].add(want.platform)
    inputs = []
    for sha256, (want, platforms) in merged.items():
        path = fetched.get(sha256)
        if path is None:
            raise BuildboxError(
                f"{want.label} sha256:{sha256} was not fetched, so it cannot be escrowed; "
                "run the release again"
            )
        inputs.append(
            Input(
                sha256=sha256, size=path.stat().st_size, url=redact(want.url), kind=want.kind,
                name=want.component, version=want.version, platforms=tuple(sorted(platforms)),
            )
        )  # fmt: skip
    return sorted(inputs, key=lambda each: each.sha256)


@dataclass(frozen=True)
class Escrowed:
    """An escrow done: where its inputs manifest is, and what it cost."""

    #: ``host/repository@sha256:<inputs manifest digest>``.
    reference: str
    inputs: int
    #: The inputs' bytes in all.
    size: int
    #: Inputs uploaded now, and their bytes; the others the registry had (or mounted).
    uploaded: int
    uploaded_size: int

    def line(self) -> str:
        kept = self.inputs - self.uploaded
        return (
            f"escrowed {self.inputs} input(s), {shown_size(self.size)}, in {self.reference}: "
            f"{self.uploaded} uploaded ({shown_size(self.uploaded_size)}), {kept} already in the "
            "registry"
        )


class Versioned(Protocol):
    """What an inputs manifest names of the box (a :class:`~buildbox.define.boxes.Box`)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...


class _Counting:
    """Forwards a push's progress and counts what was uploaded (push_blobs runs in threads)."""

    def __init__(self, progress: PushProgress) -> None:
        self.progress = progress
        self.lock = threading.Lock()
        self.uploads: dict[str, int] = {}

    def sent(self, digest: str, done: int, total: int) -> None:
        self.progress.sent(digest, done, total)

    def uploaded(self, digest: str, count: int, seconds: float) -> None:
        with self.lock:
            self.uploads[digest] = count
        self.progress.uploaded(digest, count, seconds)

    def mounted(self, digest: str, origin: str) -> None:
        self.progress.mounted(digest, origin)


def escrow_release(
    registry: Registry,
    repository: str,
    subject: Descriptor,
    box: Versioned,
    inputs: list[Input],
    paths: Mapping[str, Path],
    created: str,
    *,
    mounts: Mapping[str, str] | None = None,
    workers: int = 4,
    progress: PushProgress = SILENT,
) -> Escrowed:
    """Push every input's blob (those the registry has are skipped; ``mounts``: digest ->
    another repository of the registry that has it), then the inputs manifest by digest as a
    referrer of ``subject``."""
    counting = _Counting(progress)
    blobs: list[tuple[str, Path | bytes]] = [(digest_of(EMPTY_JSON), EMPTY_JSON)]
    blobs += [(each.digest, paths[each.sha256]) for each in inputs]
    push_blobs(registry, repository, blobs, workers=workers, mounts=mounts, progress=counting)
    manifest = inputs_manifest(subject, box.name, box.version, inputs, created)
    digest = referrers.attach_artifact(registry, repository, subject.digest, manifest, INPUTS_TYPE)
    uploaded = {each.digest: each.size for each in inputs if each.digest in counting.uploads}
    return Escrowed(
        f"{registry.host}/{repository}@{digest}", len(inputs), sum(i.size for i in inputs),
        len(uploaded), sum(uploaded.values()),
    )  # fmt: skip


def target(settings: Settings, release_repository: Reference) -> Reference:
    """Where a release in ``release_repository`` escrows its inputs: buildbox.escrow_repository,
    else the release's own repository."""
    if settings.escrow_repository:
        return Reference.parse(settings.escrow_repository)
    return release_repository


def escrow_registry(
    settings: Settings, registry: Registry, host: str
) -> AbstractContextManager[Registry]:
    """``registry`` when it is ``host``'s, else a client of ``host`` of its own (closed after)."""
    if host == registry.host:
        return nullcontext(registry)
    return open_registry(host, settings)


def escrowed_blobs(
    registry: Registry, releases: list[record.Release], repository: str
) -> dict[str, str]:
    """Inputs other repositories of ``registry`` hold, from the recorded releases' inputs
    manifests: digest -> repository, for cross-repository mounts."""
    found: dict[str, str] = {}
    for release in releases:
        if release.escrow is None:
            continue
        where = Reference.parse(release.escrow)
        if where.host != registry.host or where.repository == repository:
            continue
        try:
            inputs = read_escrow(registry, release.escrow)
        except BuildboxError:
            continue  # only an optimisation: an unreadable escrow is simply not used
        for each in inputs:
            found.setdefault(each.digest, where.repository)
    return found


def read_escrow(registry: Registry, reference: str, subject: str | None = None) -> list[Input]:
    """The inputs the manifest at ``reference`` (``host/repository@digest``) lists, read by
    digest and hash-checked; with ``subject``, it must be the inputs manifest of that digest."""
    where = Reference.parse(reference)
    if where.digest is None:
        raise BuildboxError(f"the escrow {reference} is not pinned by digest")
    found = registry.get_manifest(where.repository, where.digest)  # hash-checked: by digest
    if found is None:
        raise BuildboxError(f"the inputs manifest {reference} is not in the registry")
    try:
        return read_inputs(found[0], subject)
    except BuildboxError as error:
        raise BuildboxError(f"{reference}: {error}") from None


def find_escrow(registry: Registry, repository: str, subject: str) -> list[tuple[str, list[Input]]]:
    """The inputs manifests in ``repository`` that refer to ``subject`` (referrers API, else the
    fallback index): each one's digest and inputs, read by digest and hash-checked."""
    found = []
    for digest, manifest in referrers.find_artifacts(registry, repository, subject, INPUTS_TYPE):
        try:
            found.append((digest, read_inputs(manifest, subject)))
        except BuildboxError:
            continue  # listed under the subject, but not its inputs manifest: not this escrow
    return found


def escrow_problems(registry: Registry, release: record.Release) -> list[str]:
    """What no longer holds of a release's recorded escrow (``registry``: the escrow's): its
    inputs manifest is there, is the one of the release's digest, and each input's blob is."""
    if release.escrow is None:
        return []
    try:
        inputs = read_escrow(registry, release.escrow, release.digest)
    except BuildboxError as error:
        return [f"escrow: {error}"]
    repository = Reference.parse(release.escrow).repository
    return [
        f"escrow: {each.kind} {each.name} {each.version} ({each.digest}) is missing from "
        f"{registry.host}/{repository}"
        for each in inputs
        if not registry.has_blob(repository, each.digest)
    ]
