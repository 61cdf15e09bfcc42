"""Signed releases: what `invoke release` signs and attests, and how a consumer checks it.

A signed release has, made with cosign (``oci.cosign``):
- a signature of the tag's digest (the OCI index, or the single image) and of each platform image;
- on each platform image, a signed in-toto attestation whose predicate is its CycloneDX SBOM
  (the committed file's JSON) — cosign's ``cyclonedx`` type;
- on the tag's digest, a signed SLSA v1 provenance statement (``slsaprovenance1``): the builder,
  the source repository and revision, the box, its version and inputs digest, the digest of its
  inputs manifest (the escrow, ``release.escrow``), and every pinned artifact and locked package
  as resolved dependencies with their sha256;
- a signature of the inputs manifest, so that ``cosign verify`` vouches for the escrow too.
The plain SBOM referrer publish attaches stays, for clients that read it (oras discover).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import buildbox
from buildbox.define.boxes import Box
from buildbox.define.inputs import box_components
from buildbox.define.project import Project
from buildbox.errors import BuildboxError
from buildbox.oci.cosign import KEYLESS, Cosign, CosignError, Trust
from buildbox.oci.refs import Reference
from buildbox.oci.registry import Registry
from buildbox.oci.transport import Clock, is_plain_http
from buildbox.release import escrow, record
from buildbox.settings import Settings
from buildbox.source import Revision, origin_url

SBOM_KIND = "cyclonedx"
PROVENANCE_KIND = "slsaprovenance1"
PROVENANCE_TYPE = "https://slsa.dev/provenance/v1"
#: What kind of build the provenance describes (SLSA buildType): `invoke release` of a box.
BUILD_TYPE = "https://github.com/buildbox/buildbox/blob/main/README.md#signed-releases"


def signing_key(settings: Settings) -> str | None:
    """The key releases are signed with, as cosign takes it; None when releases are unsigned."""
    key = settings.signing_key
    if not key:
        return None
    if key == KEYLESS or key.startswith("env://"):
        if key.startswith("env://") and not os.environ.get(key.removeprefix("env://")):
            raise BuildboxError(
                f"buildbox.signing_key is {key}, but {key.removeprefix('env://')} is not set"
            )
        return key
    path = settings.root / key
    if not path.is_file():
        raise BuildboxError(
            f"buildbox.signing_key: no key file {key} (relative to {settings.root}); create "
            "one with `cosign generate-key-pair`, or set it to env://VARIABLE or sigstore"
        )
    return str(path)


def trust(settings: Settings) -> Trust | None:
    """What audit and verify-release check signatures against; None when nothing is set."""
    key = settings.signing_public_key
    if key and not key.startswith("env://"):
        path = settings.root / key
        if not path.is_file():
            raise BuildboxError(
                f"buildbox.signing_public_key: no file {key} (relative to {settings.root})"
            )
        key = str(path)
    if not key and not settings.signing_identity:
        return None
    return Trust(key, settings.signing_identity, transparency_log=settings.transparency_log)


@contextmanager
def cosign_for(settings: Settings, repository: str, clock: Clock | None = None) -> Iterator[Cosign]:
    """cosign for the registry ``repository`` (host/path) is on, on the command's registry
    ``clock`` (see :class:`Cosign`)."""
    host = repository.split("/", 1)[0]
    plain = is_plain_http(host) or host.split(":")[0] in settings.allow_http_hosts
    with Cosign(host, settings, http=plain, clock=clock) as cosign:
        yield cosign


def provenance(
    project: Project,
    box: Box,
    revision: Revision,
    inputs_digest: str,
    digests: dict[str, str],
    escrow: str | None = None,
) -> dict[str, Any]:
    """The SLSA v1 provenance predicate of a release of ``box`` (``digests``: per platform;
    ``escrow``: its inputs manifest, ``host/repository@digest``, if its inputs were escrowed)."""
    source = origin_url(project.settings.root) or project.settings.root.as_uri()
    dependencies: list[dict[str, Any]] = [
        {"uri": f"git+{source}", "digest": {"gitCommit": revision.commit or ""}}
    ]
    if box.bootstrap is None:
        base = Reference.parse(box.base)
        dependencies.append(
            {"uri": f"oci://{base.name}", "digest": {"sha256": (base.digest or "")[7:]}}
        )
    for platform in box.platforms:
        for component in box_components(box, project.library, platform):
            artifact = component.artifact(platform)
            assert artifact is not None  # check found one for every platform it is on
            dependencies.append(
                {
                    "uri": artifact.url,
                    "digest": {"sha256": artifact.sha256},
                    "name": f"{component.name}@{component.version}",
                    "annotations": {"platform": platform, "kind": component.install.kind},
                }
            )
        for package in box.locked(platform):
            dependencies.append(
                {
                    "uri": package.url,
                    "digest": {"sha256": package.sha256},
                    "name": f"{package.name}={package.version}",
                    "annotations": {"platform": platform, "architecture": package.architecture},
                }
            )
    return {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "box": box.name,
                "version": box.version,
                "source": {"uri": source, "digest": {"gitCommit": revision.commit or ""}},
            },
            "internalParameters": {
                "inputsDigest": inputs_digest,
                "epoch": revision.epoch,
                "platforms": {platform: digests[platform] for platform in box.platforms},
                "inputsManifest": escrowed_digest(escrow),
            },
            "resolvedDependencies": dependencies,
        },
        "runDetails": {
            "builder": {"id": builder_id(), "version": {"buildbox": buildbox.__version__}},
            "metadata": {"invocationId": _invocation()},
        },
    }


def escrowed_digest(escrow: str | None) -> str | None:
    """The digest of the inputs manifest ``escrow`` names (None: not escrowed)."""
    return None if escrow is None else escrow.rsplit("@", 1)[1]


def builder_id() -> str:
    """Who ran the release: the GitHub Actions workflow (its file and ref), or this toolkit."""
    server, workflow = os.environ.get("GITHUB_SERVER_URL"), os.environ.get("GITHUB_WORKFLOW_REF")
    if server and workflow:
        return f"{server}/{workflow}"
    return "https://github.com/buildbox/buildbox#invoke-release"


def _invocation() -> str:
    server, repository = os.environ.get("GITHUB_SERVER_URL"), os.environ.get("GITHUB_REPOSITORY")
    run, attempt = os.environ.get("GITHUB_RUN_ID"), os.environ.get("GITHUB_RUN_ATTEMPT", "1")
    if server and repository and run:
        return f"{server}/{repository}/actions/runs/{run}/attempts/{attempt}"
    return ""


def signer(
    project: Project,
    box: Box,
    revision: Revision,
    inputs_digest: str,
    sboms: dict[str, str],
    clock: Clock | None = None,
    escrow: str | None = None,
) -> Callable[[str, str, dict[str, str]], None] | None:
    """What publish calls before it writes the tag: sign and attest everything it pushed (and
    the inputs manifest ``escrow``), on the registry's ``clock``. None when releases are not
    signed (buildbox.signing_key is empty)."""
    key = signing_key(project.settings)
    if key is None:
        return None
    tlog = project.settings.transparency_log

    def sign(repository: str, digest: str, platforms: dict[str, str]) -> None:
        statement = provenance(project, box, revision, inputs_digest, platforms, escrow)
        if escrow is not None:  # first: a tag never names a release whose escrow is unsigned
            with cosign_for(project.settings, escrow, clock) as cosign:
                cosign.sign(escrow, key, tlog)
        with cosign_for(project.settings, repository, clock) as cosign:
            for platform, image_digest in sorted(platforms.items()):
                image = f"{repository}@{image_digest}"
                cosign.sign(image, key, tlog)
                cosign.attest(image, sboms[platform].encode(), SBOM_KIND, key, tlog)
            top = f"{repository}@{digest}"
            if digest not in platforms.values():
                cosign.sign(top, key, tlog)
            cosign.attest(top, json.dumps(statement).encode(), PROVENANCE_KIND, key, tlog)

    return sign


# --- checking a release: verify-release and audit -----------------------------------------------


@dataclass(frozen=True)
class Finding:
    what: str
    ok: bool
    detail: str
    #: Worth saying, but neither a pass nor a failure (a release recorded without escrow).
    note: bool = False


def verify_release(
    settings: Settings,
    registry: Registry,
    release: record.Release,
    checks: Trust,
    *,
    escrow_contents: bool = True,
) -> list[Finding]:
    """Every signature and attestation a signed release must have, checked with ``checks``,
    and (with ``escrow_contents``) that its escrow holds every input; ``registry`` is the one
    the release is on."""
    reference = Reference.parse(release.reference)
    repository = reference.name
    findings = [_tag(registry, reference, release)]
    source = origin_url(settings.root) or settings.root.as_uri()
    commit = release.revision.removesuffix("-dirty")
    with cosign_for(settings, repository, registry.transport.clock) as cosign:
        subjects = [("release", release.digest)]
        subjects += [
            (p, facts.digest)
            for p, facts in sorted(release.platforms.items())
            if facts.digest != release.digest
        ]
        for name, digest in subjects:
            findings.append(_signature(cosign, f"{repository}@{digest}", name, checks))
        for platform, facts in sorted(release.platforms.items()):
            findings.append(
                _sbom(cosign, f"{repository}@{facts.digest}", platform, settings, facts, checks)
            )
        findings.append(
            _provenance(cosign, f"{repository}@{release.digest}", release, source, commit, checks)
        )
    return findings + _escrow(settings, registry, release, checks, escrow_contents)


#: What verify-release and audit say of a release recorded without an inputs manifest: not a
#: failure, for records from before escrow (and releases with buildbox.escrow off) stay valid.
NOT_ESCROWED = "not escrowed: released before escrow or with escrow off"


def _escrow(
    settings: Settings, registry: Registry, release: record.Release, checks: Trust, contents: bool
) -> list[Finding]:
    """The inputs manifest is signed, and (``contents``) it and every input it lists are in the
    registry."""
    if release.escrow is None:
        return [Finding("inputs manifest", True, NOT_ESCROWED, note=True)]
    host = Reference.parse(release.escrow).host
    with escrow.escrow_registry(settings, registry, host) as held:
        with cosign_for(settings, release.escrow, held.transport.clock) as cosign:
            signed = _signature(cosign, release.escrow, "inputs manifest", checks)
        if not contents:
            return [signed]
        problems = escrow.escrow_problems(held, release)
    if problems:
        return [signed, Finding("inputs manifest", False, "; ".join(problems))]
    return [signed, Finding("inputs manifest", True, f"{release.escrow} holds every input")]


def _tag(registry: Registry, reference: Reference, release: record.Release) -> Finding:
    """The tag still names the recorded digest (an image pushed by hand under it would not)."""
    where = f"{reference.name}:{reference.tag or release.tag}"
    now = registry.manifest_digest(reference.repository, reference.tag or release.tag)
    if now != release.digest:
        return Finding("tag", False, f"{where} points at {now or 'nothing'}, not {release.digest}")
    return Finding("tag", True, f"{where} points at {release.digest}")


def _signature(cosign: Cosign, image: str, name: str, checks: Trust) -> Finding:
    try:
        cosign.verify(image, checks)
    except CosignError as error:
        return Finding(f"signature ({name})", False, _why(str(error)))
    return Finding(f"signature ({name})", True, f"{image} is signed")


def _sbom(
    cosign: Cosign,
    image: str,
    platform: str,
    settings: Settings,
    facts: record.PlatformRelease,
    checks: Trust,
) -> Finding:
    what = f"SBOM attestation ({platform})"
    try:
        statements = cosign.attestations(image, SBOM_KIND, checks)
    except CosignError as error:
        return Finding(what, False, _why(str(error)))
    committed_file = settings.root / facts.sbom_path
    if not committed_file.is_file():
        return Finding(what, False, f"the committed SBOM {facts.sbom_path} is missing")
    committed = json.loads(committed_file.read_text())
    if any(s.get("predicate") == committed for s in statements):
        return Finding(what, True, f"signed, and the same as {facts.sbom_path}")
    return Finding(what, False, f"the signed SBOM differs from the committed {facts.sbom_path}")


def _provenance(
    cosign: Cosign, image: str, release: record.Release, source: str, commit: str, checks: Trust
) -> Finding:
    what = "provenance attestation"
    try:
        statements = cosign.attestations(image, PROVENANCE_KIND, checks)
    except CosignError as error:
        return Finding(what, False, _why(str(error)))
    if not statements:
        return Finding(what, False, "no provenance statement")
    details = []
    for statement in statements:
        detail = provenance_mismatch(_object(statement, "predicate"), release, source, commit)
        if detail is None:
            return Finding(what, True, f"signed; built by {_builder(statement)} from {commit}")
        details.append(detail)
    return Finding(what, False, details[0])


def provenance_mismatch(
    predicate: dict[str, Any], release: record.Release, source: str, commit: str
) -> str | None:
    """How a signed provenance differs from the release record, as one line naming the field
    and both values; None when it describes this very release. Box, version, inputs digest and
    every platform's digest are compared too: an old signed digest re-tagged and recorded as a
    new version has a valid signature, but its provenance names the old version."""
    definition = _object(predicate, "buildDefinition")
    external = _object(definition, "externalParameters")
    internal = _object(definition, "internalParameters")
    named = _object(external, "source")
    if named.get("uri") != source:
        return f"provenance names the source {named.get('uri')!r}, not {source!r}"
    found = _object(named, "digest").get("gitCommit")
    if found != commit:
        return f"provenance is for revision {found}, the release record says {commit}"
    recorded = {platform: facts.digest for platform, facts in release.platforms.items()}
    fields: list[tuple[str, Any, Any]] = [
        ("box", external.get("box"), release.box),
        ("version", external.get("version"), release.version),
        ("inputs digest", internal.get("inputsDigest"), release.inputs_digest),
        ("platform digests", internal.get("platforms"), recorded),
        ("inputs manifest", internal.get("inputsManifest"), escrowed_digest(release.escrow)),
    ]
    for field, signed, expected in fields:
        if signed != expected:
            return (
                f"provenance names {field} {_shown(signed)}, the release record says "
                f"{_shown(expected)}"
            )
    return None


def _object(parent: dict[str, Any], key: str) -> dict[str, Any]:
    """``parent[key]`` when it is a JSON object, else empty (a field the statement lacks)."""
    found = parent.get(key)
    return found if isinstance(found, dict) else {}


def _shown(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return ", ".join(f"{key}={item}" for key, item in sorted(value.items()))
    return str(value)


def _builder(statement: dict[str, Any]) -> str:
    return str(statement.get("predicate", {}).get("runDetails", {}).get("builder", {}).get("id"))


def _why(error: str) -> str:
    """cosign's refusal in the words a consumer needs."""
    lowered = error.lower()
    if "no signatures found" in lowered or "no matching attestations" in lowered:
        return f"not signed ({error})"
    if "no matching signatures" in lowered or "invalid signature" in lowered:
        return f"signed, but not by the trusted key or identity ({error})"
    return error
