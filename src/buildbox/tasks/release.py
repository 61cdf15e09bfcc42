"""The tasks that release and check releases: sbom, sbom-diff, publish, release, ref, escrow,
audit, verify-release, reproduce, matrix."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import TYPE_CHECKING

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from buildbox import output
from buildbox.errors import BuildboxError
from buildbox.tasks._common import (
    BUILDER_HELP,
    engine_and_fetcher,
    fails_cleanly,
    load,
    print_checks,
    release_version,
    settings,
)

if TYPE_CHECKING:
    from buildbox.define.boxes import Box
    from buildbox.define.project import Project
    from buildbox.release.release import Digests, Released


@task(
    positional=["box"],
    help={
        "box": "The box whose images to describe.",
        "image": "Describe this image instead of the box's local release tag(s).",
        "platform": "Only this platform's image (default: all of the box's).",
        "output": "Where to write it (default: dist/sbom/<box>/v<N>-<os>-<arch>.cdx.json; "
        "-: stdout). The committed sbom/ is written only by `invoke release`.",
    },
)
@fails_cleanly
def sbom(
    ctx: Context,
    box: str,
    image: str | None = None,
    platform: str | None = None,
    output_: str | None = None,
) -> None:
    """Write the CycloneDX 1.6 SBOM of each built, verified image (validated before writing)."""
    from buildbox.build.build import locate
    from buildbox.build.engine import Engine
    from buildbox.sbom import cyclonedx
    from buildbox.source import revision
    from buildbox.verify import require_passed, verify

    project, chosen = load(ctx, box)
    targets = chosen.platforms_for(platform)
    if len(targets) > 1 and (image or output_ not in (None, "-")):
        raise BuildboxError("--image and --output describe one image: add --platform")
    source = revision(project.settings.root)
    with Engine.connect() as engine:
        for target in targets:
            built = locate(engine, project, chosen, target, source, image)
            report = verify(engine, project, chosen, built)
            require_passed(report, "no SBOM is written")
            described = cyclonedx.describe(engine, project, chosen, built, report, source)
            if output_ == "-":
                sys.stdout.write(described.text)
                continue
            path = cyclonedx.output_path(project, chosen, target, output_)
            cyclonedx.write(path, described)
            print(f"wrote {project.settings.shown(path)} (CycloneDX 1.6, valid)")


@task(
    name="sbom-diff",
    # Positional, so `invoke sbom-diff A B` works; invoke also accepts them as --from/--to.
    positional=["from_", "to"],
    help={
        "from_": "The earlier SBOM: a file, or with --box a version such as v2.",
        "to": "The later SBOM: a file, or with --box a version such as v3.",
        "box": "Compare the box's committed SBOMs (sbom/<box>/) of versions --from and --to.",
        "platform": "With --box: whose SBOMs (default: this machine's platform).",
        "json": "Print JSON instead of a table.",
    },
)
@fails_cleanly
def sbom_diff(
    ctx: Context,
    from_: str,
    to: str,
    box: str | None = None,
    platform: str | None = None,
    json_: bool = False,
) -> None:
    """Show components added, removed, or changed (version or hash) between two SBOMs."""
    from buildbox.sbom import diff as diff_stage

    before, after = diff_stage.paths(settings(ctx).root, from_, to, box, platform)
    changes = diff_stage.diff(diff_stage.load(before), diff_stage.load(after))
    if json_:
        print(json.dumps([dataclasses.asdict(change) for change in changes], indent=2))
    elif not changes:
        print(f"no differences between {before} and {after}")
    else:
        print(
            output.table(
                ["CHANGE", "TYPE", "COMPONENT", "OLD", "NEW"],
                [[c.kind, c.purl_type, c.name, c.old, c.new] for c in changes],
            )
        )


@task(
    positional=["box"],
    help={
        "box": "The box whose built, verified images (all its platforms) to publish.",
        "dev": "Push to the mutable dev location <registry>/<box>-dev:<commit> (required: "
        "release tags are written by `invoke release` only).",
    },
)
@fails_cleanly
def publish(ctx: Context, box: str, dev: bool = False) -> None:
    """Push the images built earlier and their SBOMs under the mutable development tag
    <registry>/<box>-dev:<commit> (--dev). Several platforms are published as one OCI index.

    Release tags are `invoke release`'s alone: it builds from a clean commit, signs, and records.
    """
    from buildbox import local_registry
    from buildbox.build.engine import Engine
    from buildbox.release.publish import publish_box
    from buildbox.release.record import RECORD_FILE
    from buildbox.source import revision

    project, chosen = load(ctx, box)
    if not dev:
        # Asked for explicitly, so that a script that meant the release tag fails loudly
        # rather than getting a dev tag.
        raise BuildboxError(
            f"invoke publish writes development tags only (<registry>/{box}-dev:<commit>): add "
            f"--dev. The release tag {box}:{chosen.release_tag} is written by `invoke release "
            f"--box={box}` (a clean commit, signed, recorded in {RECORD_FILE})"
        )
    local_registry.ensure_running(project.settings)
    shown = output.upload_progress(sys.stdout)
    with Engine.connect() as engine:
        published = publish_box(
            project, chosen, engine=engine, revision=revision(project.settings.root),
            log=shown.line, progress=shown,
        )  # fmt: skip
    state = "published" if published.tagged_now else "already published (unchanged)"
    print(f"{state}: {published.reference}")
    for target, (digest, sbom_digest) in sorted(published.platforms.items()):
        print(f"  {target}: {digest}, sbom {sbom_digest}")


@task(
    positional=["box"],
    help={
        "box": "The box to release (its current version in box.yaml, all its platforms).",
        "builder": BUILDER_HELP,
        "push_only": "Only build, verify and push by digest (images, SBOM referrers, index, "
        "escrowed inputs); no key, no signature, no tag, no record. Prints the digests as one "
        "JSON line.",
        "sign_digest": "Only sign, tag and record what --push-only pushed (its index digest), "
        "read back from the registry and checked against this checkout; needs no engine.",
    },
)
@fails_cleanly
def release(
    ctx: Context,
    box: str,
    builder: str | None = None,
    push_only: bool = False,
    sign_digest: str | None = None,
) -> None:
    """Build, verify, write the SBOMs, publish and record a box version: the one push-button.

    In CI the two halves run in two jobs: --push-only where the build runs, --sign-digest where
    the signing identity is."""
    from buildbox import local_registry
    from buildbox.release.record import RECORD_FILE
    from buildbox.release.release import parse_digest

    if push_only and sign_digest is not None:
        raise BuildboxError(
            "--push-only and --sign-digest are the two stages of a release, run apart: give one "
            "of them"
        )
    if sign_digest is not None:
        parse_digest(sign_digest)
    project, chosen = load(ctx, box, builder=builder)
    local_registry.ensure_running(project.settings)
    if push_only:
        # The JSON alone on stdout, for $GITHUB_OUTPUT; what happens on the way, on stderr.
        pushed = _push_version(project, chosen)
        if not pushed.new:
            print(f"{chosen.name} {chosen.release_tag} is already released", file=sys.stderr)
        print(pushed.line())
        return
    done = (
        _sign_version(project, chosen, sign_digest)
        if sign_digest is not None
        else release_version(project, chosen)
    )
    if done.new:
        print(f"released {done.release.reference}")
        if project.settings.signing_key:
            print(
                "signed with cosign: the release and each image, with SBOM and SLSA provenance "
                "attestations (check: invoke verify-release)"
            )
        if done.release.escrow is not None:
            print(f"inputs escrowed in {done.release.escrow} (list them: invoke escrow {box})")
        else:
            print("not escrowed: buildbox.escrow is false, so no input of this release is kept "
                  "in the registry")  # fmt: skip
        sboms = ", ".join(facts.sbom_path for facts in done.release.platforms.values())
        print(f"recorded in {RECORD_FILE}; SBOMs: {sboms}: commit them")
    else:
        print(f"{chosen.name} {chosen.release_tag} is already released: {done.release.reference}")


def _push_version(project: Project, box: Box) -> Digests:
    """The push stage of a release: downloads and uploads reported on stderr."""
    from buildbox.release.release import push_box
    from buildbox.source import revision

    shown = output.upload_progress(sys.stderr)
    artifacts = len(box.components) * len(box.platforms)
    with engine_and_fetcher(project.settings, artifacts) as (engine, fetcher):
        return push_box(
            project, box, engine=engine, fetcher=fetcher,
            revision=revision(project.settings.root), log=shown.line, progress=shown,
        )  # fmt: skip


def _sign_version(project: Project, box: Box, digest: str) -> Released:
    """The sign stage of a release: no engine."""
    from buildbox.release.release import sign_pushed
    from buildbox.source import revision

    return sign_pushed(project, box, digest, revision=revision(project.settings.root), log=print)


@task(
    positional=["box"],
    help={
        "box": "The box whose pinned reference to print.",
        "version": "Which released version (default: the latest), e.g. 3 or v3.",
        "platform": "Print that platform's image instead of the multi-platform index.",
        "json": "Print the release record entry as JSON.",
    },
)
@fails_cleanly
def ref(
    ctx: Context,
    box: str,
    version: str | None = None,
    platform: str | None = None,
    json_: bool = False,
) -> None:
    """Print the pinned reference of a released box (repo:tag@sha256:...) for consumers to use."""
    from buildbox.release import record

    found = record.require(settings(ctx), box, version)
    if json_:
        print(json.dumps(dataclasses.asdict(found), indent=2))
    else:
        print(found.platform_reference(platform) if platform else found.reference)


@task(
    positional=["box"],
    help={
        "box": "The box whose release's escrowed inputs to list.",
        "version": "The released version (default: the latest), e.g. 3 or v3.",
    },
)
@fails_cleanly
def escrow(ctx: Context, box: str, version: str | None = None) -> None:
    """List the inputs a release escrowed in the registry: its inputs manifest, read by digest."""
    from buildbox import local_registry
    from buildbox.oci.refs import Reference
    from buildbox.oci.registry import open_registry
    from buildbox.release import record
    from buildbox.release.escrow import read_escrow

    found = settings(ctx)
    release = record.require(found, box, version)
    if release.escrow is None:
        raise BuildboxError(
            f"{release.box} {release.tag} was released without escrow ({release.reference}): its "
            "inputs are not in the registry (released before escrow, or with buildbox.escrow off)"
        )
    local_registry.ensure_running(found)
    with open_registry(Reference.parse(release.escrow), found) as registry:
        inputs = read_escrow(registry, release.escrow, release.digest)
    rows = [
        [i.kind, i.name, i.version, ",".join(i.platforms), output.size(i.size),
         f"{i.sha256[:12]}…", i.url]
        for i in sorted(inputs, key=lambda i: (i.kind, i.name, i.version, i.sha256))
    ]  # fmt: skip
    print(output.table(["KIND", "NAME", "VERSION", "PLATFORMS", "SIZE", "SHA256", "URL"], rows))
    total = output.size(sum(i.size for i in inputs))
    print(f"{len(inputs)} input(s), {total}, in {release.escrow}")


@task(help={"box": "Audit only this box's releases (default: all)."})
@fails_cleanly
def audit(ctx: Context, box: str | None = None) -> None:
    """Check every recorded release: tag still at the digest, SBOM attached and as committed,
    every escrowed input in the registry."""
    from buildbox import local_registry
    from buildbox.release import record
    from buildbox.release.audit import audit as audit_stage
    from buildbox.release.signing import NOT_ESCROWED

    found = settings(ctx)
    releases = [r for r in record.load(found) if box in (None, r.box)]
    if releases:
        local_registry.ensure_running(found)
    results = audit_stage(found, releases)
    for entry, problems in results:
        print_checks([(not problems, entry.reference)])
        for problem in problems:
            print(f"      {problem}")
        if entry.escrow is None:
            print(f"NOTE  {entry.reference}: {NOT_ESCROWED}")
    failures = sum(bool(problems) for _, problems in results)
    if failures:
        raise Exit(f"audit: {failures} of {len(results)} releases drifted", 1)
    print(f"audit: {len(results)} release(s) match the registry and the committed SBOMs")


@task(
    name="verify-release",
    positional=["box"],
    help={
        "box": "The box whose release to check.",
        "version": "The released version (default: the latest), e.g. 3 or v3.",
        "key": "The cosign public key to trust (a file or env://VARIABLE; default: "
        "buildbox.signing_public_key).",
        "identity": "Keyless: the signing workflow identity to trust (default: "
        "buildbox.signing_identity).",
    },
)
@fails_cleanly
def verify_release(
    ctx: Context,
    box: str,
    version: str | None = None,
    key: str | None = None,
    identity: str | None = None,
) -> None:
    """Check a release's signatures, that its signed SBOMs are the committed ones, and that its
    signed provenance names this repository and the recorded revision."""
    from buildbox import local_registry
    from buildbox.oci.refs import Reference
    from buildbox.oci.registry import open_registry
    from buildbox.release import record, signing

    found = settings(ctx)
    if key or identity:
        found = dataclasses.replace(
            found, signing_public_key=key or "", signing_identity=identity or ""
        )
    release = record.require(found, box, version)
    checks = signing.trust(found)
    if checks is None:
        raise BuildboxError(
            "verify-release needs what to trust: --key=<cosign public key> (or "
            "buildbox.signing_public_key), or --identity=<workflow URL> for keyless signatures"
        )
    local_registry.ensure_running(found)
    with open_registry(Reference.parse(release.reference), found) as registry:
        findings = signing.verify_release(found, registry, release, checks)
    failed = print_checks((f.ok, f"{f.what}: {f.detail}") for f in findings if not f.note)
    for note in (f for f in findings if f.note):
        print(f"NOTE  {note.what}: {note.detail}")
    if failed:
        raise Exit(f"verify-release: {release.reference}: {failed} check(s) failed", 1)
    print(f"verify-release: {release.reference} is signed, attested and as recorded")


@task(
    positional=["box"],
    help={
        "box": "The box whose release to rebuild.",
        "version": "The released version to rebuild (default: the latest), e.g. 3 or v3.",
        "builder": BUILDER_HELP,
        "from_escrow": "Take every input not in the cache from the escrow (the release's own "
        "first), none from mirrors or upstream; fail naming any input no escrow holds.",
    },
)
@fails_cleanly
def reproduce(
    ctx: Context,
    box: str,
    version: str | None = None,
    builder: str | None = None,
    from_escrow: bool = False,
) -> None:
    """Rebuild a release from its recorded commit and compare with the record and the registry.

    Inputs upstream no longer serves come from the release's escrow, then other releases'.
    """
    from buildbox import local_registry
    from buildbox.oci.refs import Reference
    from buildbox.oci.registry import open_registry
    from buildbox.release import record
    from buildbox.release.reproduce import SAME_CONTENT
    from buildbox.release.reproduce import reproduce as reproduce_stage
    from buildbox.tasks._common import recorded_escrows

    found = settings(ctx, builder)
    release = record.require(found, box, version)
    local_registry.ensure_running(found)
    with (
        engine_and_fetcher(
            found,
            1,
            escrows=recorded_escrows(found, [(box, release.version)]),
            from_escrow=from_escrow,
        ) as (engine, fetcher),
        open_registry(Reference.parse(release.reference), found) as registry,
    ):
        outcome = reproduce_stage(found, release, engine=engine, fetcher=fetcher, registry=registry)
    print(f"recorded:    {outcome.recorded}")
    print(f"in registry: {outcome.in_registry or 'nothing (the tag is gone)'}")
    print(f"rebuilt:     {outcome.rebuilt}")
    print(f"epoch:       {outcome.epoch} (the time the release was built as)")
    for verdict in outcome.platforms:
        print(f"  {verdict.platform}: {verdict.verdict}")
    for line in outcome.differences:
        print(f"  {line}")
    if outcome.networked:
        print(
            f"note: {box} builds with the network (network: true in box.yaml): what it installs "
            "from package repositories can change between builds, so it is not expected to "
            "reproduce bit for bit."
        )
    if not outcome.reproducible:
        raise Exit(f"reproduce: {box} v{outcome.version} did NOT reproduce", 1)
    if outcome.bit_for_bit:
        print(f"reproduce: {box} v{outcome.version} reproduced bit for bit")
    else:
        print(
            f"reproduce: {box} v{outcome.version} reproduced: {SAME_CONTENT} (the files, their "
            "metadata and the image config are identical; only the gzip bytes differ, e.g. "
            "another zlib, or a release from before layers were deflated in blocks)"
        )


@task
@fails_cleanly
def matrix(ctx: Context) -> None:
    """Print, as JSON for a CI matrix, each box and platform whose version is not yet released."""
    from buildbox.define import project as project_stage
    from buildbox.release.release import unreleased

    print(json.dumps({"include": unreleased(project_stage.load(settings(ctx)))}))
