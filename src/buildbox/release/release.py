"""`invoke release`: the one push-button, a pipeline of values from the box to its record.

build → verify → prepare → describe → publish → escrow → record: each stage takes what the one
before returned and looks nothing up again. A box with several platforms is released as one OCI
image index under one immutable tag; each platform image carries its own SBOM. The SBOM names the
image by the digest it is published under, which exists once the image is prepared: so
describe comes after prepare.

Two stages, which CI runs in two jobs: the push stage (build → … → describe → push by digest →
escrow the inputs; `--push-only`, no key) and the sign stage (sign, tag, record;
`--sign-digest`, no engine, which first reads the pushed content and the escrow back by digest
and holds them to its own checkout). `release_box` is the two in one process.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from buildbox.build import labels
from buildbox.build.build import build_box
from buildbox.build.engine import Engine
from buildbox.define.boxes import Box
from buildbox.define.inputs import inputs_digest
from buildbox.define.project import Project
from buildbox.digests import digest_of
from buildbox.errors import BuildboxError
from buildbox.fetch import Fetcher
from buildbox.oci.documents import Descriptor
from buildbox.oci.push import Published, Pushed, PushProgress, read_pushed, write_tag
from buildbox.oci.refs import Reference
from buildbox.oci.registry import Registry, open_registry
from buildbox.release import escrow, record, signing
from buildbox.release.audit import audit_release
from buildbox.release.check import lock_proof_problems
from buildbox.release.publish import Described, prepare, push_release
from buildbox.sbom import cyclonedx
from buildbox.sbom.cyclonedx import Sbom
from buildbox.sbom.paths import COMMITTED_DIR
from buildbox.source import Revision
from buildbox.verify import Report, require_passed, verify

#: Files a release itself writes: their changes do not make the tree dirty for the next release.
RELEASE_OUTPUTS = (record.RECORD_FILE, f"{COMMITTED_DIR}/")
#: What --sign-digest takes: the digest `invoke release --push-only` printed.
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
#: The label that names the commit an image was built from (``build.labels.labels``).
REVISION_LABEL = "org.opencontainers.image.revision"
#: The SBOM property that names the image it describes (``sbom.cyclonedx``).
IMAGE_DIGEST = f"{cyclonedx.PREFIX}image-digest"


@dataclass(frozen=True)
class Released:
    release: record.Release
    #: False when the version was already released (and still complete): nothing was done.
    new: bool
    #: The verify report of each platform image (none when nothing was built).
    reports: tuple[Report, ...] = ()


@dataclass(frozen=True)
class Candidate:
    """A release in the registry by digest, not yet signed, tagged or recorded: what the push
    stage hands the sign stage, in memory (`invoke release`) or through the registry
    (`--push-only`, then `--sign-digest`)."""

    pushed: Pushed
    #: Per platform: its SBOM, as pushed in its referrer.
    sboms: dict[str, Sbom]
    inputs_digest: str
    #: Its inputs manifest, ``host/repository@digest``; None when buildbox.escrow is off.
    escrow: str | None = None


@dataclass(frozen=True)
class Digests:
    """What `invoke release --push-only` prints, one JSON line for ``$GITHUB_OUTPUT``: the sign
    stage is given ``index`` (the tag's digest: the OCI index, or the one image)."""

    box: str
    version: str
    inputs_digest: str
    repository: str
    index: str
    platforms: dict[str, str]
    #: The inputs manifest (``host/repository@digest``); None when not escrowed.
    escrow: str | None
    #: False when the version was already released: nothing was built or pushed.
    new: bool

    def line(self) -> str:
        shown = {k: v for k, v in dataclasses.asdict(self).items() if k != "new"}
        return json.dumps(shown, sort_keys=True)


def release_box(
    project: Project,
    box: Box,
    *,
    engine: Engine,
    fetcher: Fetcher,
    revision: Revision,
    log: Callable[[str], None],
    progress: PushProgress,
) -> Released:
    """Build, verify, prepare, describe, push, then sign, tag and record the box's current
    version: the push stage and the sign stage, in one process."""
    settings = project.settings
    releases = record.load(settings)
    signing.signing_key(settings)  # a key that is not there fails now, not after building
    digest = inputs_digest(box, project.library, settings)
    with open_registry(_target(project, box), settings) as registry:
        existing = _complete(project, box, digest, releases, registry, log)
        if existing is not None:
            return Released(existing, new=False)
        revision = releasable(box, revision)
        candidate, reports = _push(
            project, box, digest, registry, releases, engine=engine, fetcher=fetcher,
            revision=revision, log=log, progress=progress,
        )  # fmt: skip
        release = _sign(project, box, candidate, registry, revision, releases)
    return Released(release, new=True, reports=reports)


def push_box(
    project: Project,
    box: Box,
    *,
    engine: Engine,
    fetcher: Fetcher,
    revision: Revision,
    log: Callable[[str], None],
    progress: PushProgress,
) -> Digests:
    """The push stage alone (`invoke release --push-only`): build, verify, prepare, describe
    and push by digest; no key is read, nothing is signed, tagged or recorded."""
    settings = project.settings
    releases = record.load(settings)
    digest = inputs_digest(box, project.library, settings)
    target = _target(project, box)
    with open_registry(target, settings) as registry:
        existing = _complete(project, box, digest, releases, registry, log)
        if existing is not None:
            images = {platform: facts.digest for platform, facts in existing.platforms.items()}
            return Digests(
                box.name, box.version, digest, target.name, existing.digest, images,
                existing.escrow, new=False,
            )  # fmt: skip
        revision = releasable(box, revision)
        candidate, _ = _push(
            project, box, digest, registry, releases, engine=engine, fetcher=fetcher,
            revision=revision, log=log, progress=progress,
        )  # fmt: skip
    pushed = candidate.pushed
    return Digests(
        box.name, box.version, digest, target.name, pushed.digest, pushed.images,
        candidate.escrow, new=True,
    )  # fmt: skip


def sign_pushed(
    project: Project, box: Box, digest: str, *, revision: Revision, log: Callable[[str], None]
) -> Released:
    """The sign stage alone (`invoke release --sign-digest`), with no engine: ``digest`` (what
    --push-only printed) read back from the registry, every manifest and blob hash-checked;
    each image's labels and SBOM, and the escrow's inputs, held to this checkout; then signed,
    tagged and recorded."""
    digest = parse_digest(digest)
    settings = project.settings
    releases = record.load(settings)
    signing.signing_key(settings)
    inputs = inputs_digest(box, project.library, settings)
    target = _target(project, box)
    with open_registry(target, settings) as registry:
        existing = _complete(project, box, inputs, releases, registry, log)
        if existing is not None:
            if existing.digest != digest:
                raise BuildboxError(
                    f"{box.name} {box.release_tag} is already released as {existing.reference}, "
                    f"not {digest}; a released version is immutable"
                )
            return Released(existing, new=False)
        revision = releasable(box, revision)
        pushed, configs, sboms = read_pushed(
            registry, target.repository, digest, list(box.platforms)
        )
        checked = {}
        for platform, image in pushed.images.items():
            where = f"{target.name}@{image} ({platform})"
            built_here(where, json.loads(configs[platform]), box, platform, inputs, revision)
            checked[platform] = sbom_of(where, image, platform, sboms[platform])
        held = escrowed(project, box, digest, registry) if settings.escrow else None
        candidate = Candidate(pushed, checked, inputs, held)
        release = _sign(project, box, candidate, registry, revision, releases)
    return Released(release, new=True)


def parse_digest(text: str) -> str:
    """``text`` as the digest --sign-digest takes; one clear line otherwise."""
    if not _DIGEST.fullmatch(text):
        raise BuildboxError(
            f"--sign-digest={text} is not a digest: give the sha256:<64 hex> that "
            "`invoke release --push-only` printed as index"
        )
    return text


def built_here(
    where: str,
    config: dict[str, Any],
    box: Box,
    platform: str,
    inputs: str,
    revision: Revision,
) -> None:
    """Refuse an image whose labels do not say it was built from this checkout: this box and
    version, these inputs, this commit, this platform (one line: the field and both values)."""
    found = (config.get("config") or {}).get("Labels") or {}
    expected = [
        ("box", labels.LABEL_BOX, box.name),
        ("version", labels.LABEL_VERSION, box.version),
        ("inputs digest", labels.LABEL_INPUTS, inputs),
        ("revision", REVISION_LABEL, revision.label),
        ("platform", labels.LABEL_PLATFORM, platform),
    ]
    for field, label, wanted in expected:
        if found.get(label) != wanted:
            raise BuildboxError(
                f"{where}: its {field} label ({label}) is {found.get(label) or 'missing'}, this "
                f"checkout's is {wanted}: it was not built from this checkout; nothing was "
                "signed or tagged"
            )


def sbom_of(where: str, image: str, platform: str, data: bytes) -> Sbom:
    """The SBOM read from ``image``'s referrer: valid CycloneDX 1.6, and describing ``image``."""
    sbom = Sbom.checked(platform, data.decode())
    component = json.loads(data).get("metadata", {}).get("component", {})
    named = {p.get("name"): p.get("value") for p in component.get("properties", [])}
    described = named.get(IMAGE_DIGEST) or "no image"
    if described != image:
        raise BuildboxError(
            f"{where}: its SBOM referrer describes {described}, not {image}; nothing was "
            "signed or tagged"
        )
    return sbom


def _target(project: Project, box: Box) -> Reference:
    return Reference.parse(labels.repository(project.settings.registry, box))


def _complete(
    project: Project,
    box: Box,
    digest: str,
    releases: list[record.Release],
    registry: Registry,
    log: Callable[[str], None],
) -> record.Release | None:
    """The recorded release of the box's version when it is complete (nothing to do); None
    when there is none, or it is incomplete (said so: it is completed)."""
    existing = record.find(releases, box.name, box.version)
    if existing is None:
        return None
    problems = already_released(project, box, existing, digest, releases, registry)
    if not problems:
        return existing
    log(f"{existing.reference} is recorded but incomplete ({'; '.join(problems)}); completing")
    return None


def _push(
    project: Project,
    box: Box,
    digest: str,
    registry: Registry,
    releases: list[record.Release],
    *,
    engine: Engine,
    fetcher: Fetcher,
    revision: Revision,
    log: Callable[[str], None],
    progress: PushProgress,
) -> tuple[Candidate, tuple[Report, ...]]:
    """The push stage: build → verify → prepare → describe → push by digest, for every
    platform (each step for all platforms before the next), from a package lock its signed
    proof still vouches for."""
    require_proven_lock(project, box, fetcher)
    # From scratch: a layer reused from an older build would carry that build's file
    # times, which normalisation keeps (they are older than the commit), so the digest
    # would depend on the engine's cache. Built anew, every file is clamped to the commit.
    built = [
        build_box(project, box, platform, engine=engine, fetcher=fetcher, revision=revision,
                  log=log, no_cache=True)
        for platform in box.platforms
    ]  # fmt: skip
    reports = [require_passed(verify(engine, project, box, b), "it is not released") for b in built]
    prepared = [prepare(engine, b, project.settings, revision.epoch, log) for b in built]
    name = _target(project, box).name
    described = [
        Described(b, r, p, cyclonedx.describe(engine, project, box, b, r, revision, p, name))
        for b, r, p in zip(built, reports, prepared, strict=True)
    ]
    pushed = push_release(project, box, described, registry, revision, releases, progress=progress)
    sboms = {d.built.platform: d.sbom for d in described}
    held = None
    if project.settings.escrow:
        held = escrow_inputs(
            project, box, registry, pushed, releases, fetcher=fetcher, created=revision.timestamp,
            log=log, progress=progress,
        )  # fmt: skip
    return Candidate(pushed, sboms, digest, held), tuple(reports)


def escrow_inputs(
    project: Project,
    box: Box,
    registry: Registry,
    pushed: Pushed,
    releases: list[record.Release],
    *,
    fetcher: Fetcher,
    created: str,
    log: Callable[[str], None],
    progress: PushProgress,
) -> str:
    """The escrow stage: every input the release read (from the verified cache the build and
    the lock's proof check filled) pushed beside ``pushed``, with its inputs manifest as a
    referrer of it; the manifest's reference."""
    settings = project.settings
    paths = {f.wanted.sha256: f.path for f in fetcher.fetch_all(escrow.wanted(project, box))}
    inputs = escrow.release_inputs(project, box, paths)
    where = escrow.target(settings, _target(project, box))
    subject = Descriptor(pushed.media_type, pushed.digest, len(pushed.top))
    with escrow.escrow_registry(settings, registry, where.host) as held:
        done = escrow.escrow_release(
            held, where.repository, subject, box, inputs, paths, created,
            mounts=escrow.escrowed_blobs(held, releases, where.repository),
            workers=settings.registry_workers, progress=progress,
        )  # fmt: skip
    log(done.line())
    return done.reference


def escrowed(project: Project, box: Box, digest: str, registry: Registry) -> str:
    """The sign stage's check of the escrow: the inputs manifest referring to ``digest`` that
    lists exactly this checkout's inputs (by sha256), each of them in the registry; its
    reference. One line otherwise: nothing is signed or tagged."""
    settings = project.settings
    where = escrow.target(settings, _target(project, box))
    wanted = {want.sha256 for want in escrow.wanted(project, box)}
    refused = "nothing was signed or tagged"
    with escrow.escrow_registry(settings, registry, where.host) as held:
        found = escrow.find_escrow(held, where.repository, digest)
        for manifest, inputs in found:
            if {each.sha256 for each in inputs} != wanted:
                continue
            lost = [i for i in inputs if not held.has_blob(where.repository, i.digest)]
            if lost:
                raise BuildboxError(
                    f"{where.name}@{manifest}: {len(lost)} escrowed input(s) are missing, e.g. "
                    f"{lost[0].label} {lost[0].digest}; push with `invoke release --push-only` "
                    f"again; {refused}"
                )
            return f"{where.name}@{manifest}"
    if not found:
        raise BuildboxError(
            f"{where.name} has no inputs manifest for {digest} (buildbox.escrow is on): push "
            f"with `invoke release --push-only` again; {refused}"
        )
    manifest, inputs = found[0]
    listed = {each.sha256 for each in inputs}
    extra, absent = sorted(listed - wanted), sorted(wanted - listed)
    example = f"sha256:{(extra or absent)[0]}"
    raise BuildboxError(
        f"{where.name}@{manifest} does not list exactly this checkout's inputs: {len(extra)} "
        f"not this checkout's, {len(absent)} of this checkout's missing (e.g. {example}); "
        f"{refused}"
    )


def require_proven_lock(project: Project, box: Box, fetcher: Fetcher) -> None:
    """Refuse to release from a package lock that its proof (the archive's signed InRelease,
    the pinned keyring, the index) does not vouch for: what `invoke check` says, again here,
    because a release must not depend on someone having run it."""
    problems = lock_proof_problems(box, project, fetcher)
    if problems:
        lines = "\n  ".join(str(problem) for problem in problems)
        raise BuildboxError(
            f"{box.name} is not released: its package lock is not what the archive signed:\n"
            f"  {lines}"
        )


def _sign(
    project: Project,
    box: Box,
    candidate: Candidate,
    registry: Registry,
    revision: Revision,
    releases: list[record.Release],
) -> record.Release:
    """The sign stage: sign and attest what was pushed (with a key), write the tag last, and
    record the release."""
    texts = {platform: sbom.text for platform, sbom in candidate.sboms.items()}
    published = write_tag(
        registry, _target(project, box).repository, box.release_tag, candidate.pushed,
        sign=signing.signer(
            project, box, revision, candidate.inputs_digest, texts, registry.transport.clock,
            candidate.escrow,
        ),
    )  # fmt: skip
    return record_release(
        project, box, candidate.sboms, published, candidate.inputs_digest, revision, releases,
        candidate.escrow,
    )  # fmt: skip


def already_released(
    project: Project,
    box: Box,
    existing: record.Release,
    digest: str,
    releases: list[record.Release],
    registry: Registry,
) -> list[str]:
    """What is missing of a recorded release of this version (nothing: it is complete); an
    error when it was released with other inputs (a release is immutable)."""
    if existing.inputs_digest != digest:
        raise BuildboxError(
            f"{box.name} {box.release_tag} was already released with other inputs "
            f"({existing.inputs_digest}; now {digest}). A release is immutable: set "
            f"`version: {record.next_version(releases, box.name)}` in "
            f"buildboxes/{box.name}/box.yaml."
        )
    return audit_release(project.settings, registry, existing)


def releasable(box: Box, revision: Revision) -> Revision:
    """The revision to release from: a clean commit (the release's own outputs aside), the box's
    base pinned; an error otherwise."""
    changed = [p for p in revision.changed if not p.startswith(RELEASE_OUTPUTS)]
    if revision.commit is None:
        raise BuildboxError("a release is built from a git commit; this is not a git checkout")
    if changed:
        raise BuildboxError(
            "the git tree has uncommitted changes; a release is built from a commit only: "
            + ", ".join(changed[:10])
        )
    if not box.pinned:
        raise BuildboxError(f"the base of {box.name} is not pinned by digest: {box.base}")
    # The release's own outputs (the record, sbom/) do not make the build dirty: completing a
    # recorded release must label the image exactly as the first attempt did.
    return dataclasses.replace(revision, dirty=False, changed=())


def record_release(
    project: Project,
    box: Box,
    sboms: dict[str, Sbom],
    published: Published,
    digest: str,
    revision: Revision,
    releases: list[record.Release],
    escrow_reference: str | None = None,
) -> record.Release:
    """The record stage: the SBOMs committed under sbom/, the release (and where its inputs are
    escrowed) in the record."""
    root = project.settings.root
    platforms = {}
    for platform, sbom in sboms.items():
        path = record.committed_sbom(root, box, platform)
        cyclonedx.write(path, sbom)
        platforms[platform] = record.PlatformRelease(
            digest=published.platforms[platform][0],
            sbom_path=project.settings.shown(path),
            sbom_digest=digest_of(sbom.data),
        )
    release = record.Release(
        box=box.name,
        version=box.version,
        reference=published.reference,
        digest=published.digest,
        inputs_digest=digest,
        revision=revision.label,
        platforms=platforms,
        epoch=revision.epoch,
        escrow=escrow_reference,
    )
    record.add(root, releases, release)
    return release


def unreleased(project: Project) -> list[dict[str, str]]:
    """Each box and platform whose current version is not released yet (a CI job matrix)."""
    releases = record.load(project.settings)
    return [
        {"box": box.name, "version": box.version, "platform": platform}
        for box in project.boxes
        if record.find(releases, box.name, box.version) is None
        for platform in box.platforms
    ]
