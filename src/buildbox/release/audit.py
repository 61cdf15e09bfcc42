"""`invoke audit`: every recorded release still holds in the registry and in the committed SBOMs."""

from __future__ import annotations

from contextlib import ExitStack

from buildbox.digests import digest_of
from buildbox.oci.referrers import find_sbom
from buildbox.oci.refs import Reference
from buildbox.oci.registry import Registry, open_registry
from buildbox.release import escrow, record, signing
from buildbox.sbom import validation
from buildbox.settings import Settings


def audit_release(
    settings: Settings,
    registry: Registry,
    release: record.Release,
    escrow_registry: Registry | None = None,
) -> list[str]:
    """What no longer holds for a recorded release (empty when everything does); ``registry``
    is the one the release is on, ``escrow_registry`` the one its inputs are escrowed on (by
    default: a client of its own when that is another host)."""
    problems = []
    reference = Reference.parse(release.reference)
    now = registry.manifest_digest(reference.repository, reference.tag or release.tag)
    if now != release.digest:
        problems.append(
            f"{reference.name}:{reference.tag} points at {now or 'nothing'}, "
            f"recorded {release.digest}"
        )
    for platform, facts in sorted(release.platforms.items()):
        problems += _audit_platform(settings, registry, reference, release.box, platform, facts)
    if release.escrow is not None:
        host = Reference.parse(release.escrow).host
        if escrow_registry is not None and escrow_registry.host == host:
            problems += escrow.escrow_problems(escrow_registry, release)
        else:
            with escrow.escrow_registry(settings, registry, host) as held:
                problems += escrow.escrow_problems(held, release)
    checks = signing.trust(settings)
    if checks is not None:  # signatures and attestations, when there is a key to check them with
        # The tag and the escrow's contents are checked above already.
        findings = signing.verify_release(settings, registry, release, checks,
                                          escrow_contents=False)  # fmt: skip
        problems += [f"{f.what}: {f.detail}" for f in findings if not f.ok and f.what != "tag"]
    return problems


def audit(
    settings: Settings, releases: list[record.Release]
) -> list[tuple[record.Release, list[str]]]:
    """Each of the recorded ``releases`` with what no longer holds for it. One client per
    registry host, so that registry_time_limit bounds all of the audit's requests to it."""
    found = []
    with ExitStack() as stack:
        registries: dict[str, Registry] = {}
        for release in releases:
            hosts = [Reference.parse(release.reference).host]
            hosts += [Reference.parse(release.escrow).host] if release.escrow else []
            for host in hosts:
                if host not in registries:
                    registries[host] = stack.enter_context(open_registry(host, settings))
            held = registries[hosts[-1]]
            found.append((release, audit_release(settings, registries[hosts[0]], release, held)))
    return found


def _audit_platform(
    settings: Settings,
    registry: Registry,
    reference: Reference,
    box: str,
    platform: str,
    facts: record.PlatformRelease,
) -> list[str]:
    problems = []
    sbom_file = settings.root / facts.sbom_path
    committed = sbom_file.read_bytes() if sbom_file.is_file() else None
    if committed is None:
        problems.append(f"the committed SBOM {facts.sbom_path} is missing")
    elif digest_of(committed) != facts.sbom_digest:
        problems.append(f"{facts.sbom_path} differs from the recorded sha256")
    else:
        invalid = validation.problems(committed.decode("utf-8", errors="replace"))
        if invalid:
            problems.append(
                f"{facts.sbom_path} is not valid CycloneDX 1.6: {'; '.join(invalid[:5])}; restore "
                f"it from git (`git checkout -- {facts.sbom_path}`) or release {box} again"
            )
    attached = find_sbom(registry, reference.repository, facts.digest)
    if attached is None:
        problems.append(f"no SBOM is attached to the {platform} image {facts.digest}")
    elif committed is not None and attached != committed:
        problems.append(f"the SBOM attached to the {platform} image differs from {facts.sbom_path}")
    return problems
