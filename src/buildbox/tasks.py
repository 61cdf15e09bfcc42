"""The invoke tasks: each parses its arguments, calls the library and prints. No logic lives here.

Stages are imported inside the tasks that use them, so that ``invoke --list`` and light commands
do not pay for docker-py, requests or the CycloneDX library.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from invoke.collection import Collection
from invoke.config import DataProxy
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import Task, task

from buildbox import output
from buildbox import settings as settings_stage
from buildbox.errors import BuildboxError

if TYPE_CHECKING:
    from buildbox.build.engine import Engine
    from buildbox.fetch import Fetcher

P = ParamSpec("P")
R = TypeVar("R")
#: Where the INVOKE_BUILDBOX_* variables taken out of invoke's way are kept for the tasks.
ENVIRONMENT_KEY = "buildbox_environment"


def _fails_cleanly(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a :class:`BuildboxError` into its message and exit code 1, never a traceback.

    First, the INVOKE_BUILDBOX_* variables :func:`namespace` took out of invoke's way go back
    into the environment: invoke has read its own by now, and whatever runs next (a tool the task
    starts, or invoke again in the same process) sees them as the user set them.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        ctx = args[0]
        assert isinstance(ctx, Context)
        settings_stage.restore_environment(_plain(ctx.config.get(ENVIRONMENT_KEY, {})))
        try:
            return func(*args, **kwargs)
        except BuildboxError as error:
            raise Exit(f"buildbox: {error}", code=1) from None

    return wrapper


#: The --builder option of the tasks that build.
BUILDER_HELP = (
    "Build with BuildKit on this buildx builder instance (e.g. a remote one from `docker buildx "
    "create`); default: buildbox.buildx_builder, else the current one."
)


def _settings(ctx: Context, buildx_builder: str | None = None) -> settings_stage.Settings:
    environment = _plain(ctx.config.get(ENVIRONMENT_KEY, {}))
    settings = settings_stage.from_config(_plain(ctx.config.buildbox), environment)
    if buildx_builder:  # naming an instance asks for BuildKit
        settings = dataclasses.replace(settings, builder="buildkit", buildx_builder=buildx_builder)
    return settings


def _plain(value: Any) -> Any:
    """invoke's configuration proxies as plain dicts, all the way down."""
    if isinstance(value, DataProxy):
        keys = cast("list[str]", list(value))  # DataProxy's own annotation of __iter__ is off
        return {key: _plain(value[key]) for key in keys}
    return value


@contextmanager
def _engine_and_fetcher(
    settings: settings_stage.Settings, artifacts: int
) -> Iterator[tuple[Engine, Fetcher]]:
    """The engine, and a fetcher reporting on stderr, for the commands that build."""
    from buildbox.build.engine import Engine
    from buildbox.fetch import Fetcher

    with output.fetch_progress(sys.stderr, artifacts) as progress, Engine.connect() as engine:
        yield engine, Fetcher(settings, progress)


def _component_cell(component: dict[str, Any], platforms: list[str]) -> str:
    """``name version``, with the platforms it is on when that is not all of the box's."""
    cell = f"{component['name']} {component['version']}"
    if component["platforms"] != platforms:
        cell += f" ({','.join(component['platforms'])} only)"
    return cell


@task(
    name="list",
    help={
        "box": "Show only this box (a directory name under buildboxes/).",
        "json": "Print JSON (a list of boxes) instead of a table.",
    },
)
@_fails_cleanly
def list_boxes(ctx: Context, box: str | None = None, json_: bool = False) -> None:
    """List the boxes: version, base image, platforms, components and inputs digest."""
    from buildbox.define import project as project_stage

    project = project_stage.load(_settings(ctx), box=box)
    rows = [project_stage.describe(project, b) for b in project.boxes]
    if json_:
        print(json.dumps(rows, indent=2))
        return
    print(
        output.table(
            ["BOX", "VERSION", "PLATFORMS", "COMPONENTS", "BASE"],
            [
                [
                    row["box"],
                    row["version"],
                    ",".join(row["platforms"]),
                    ", ".join(_component_cell(c, row["platforms"]) for c in row["components"]),
                    row["base"],
                ]
                for row in rows
            ],
        )
    )


@task(
    help={
        "deep": "Also fetch every artifact (verified) and check that each box's base can run "
        "its executables and libraries: architecture, and glibc/libstdc++ symbol versions."
    }
)
@_fails_cleanly
def check(ctx: Context, deep: bool = False) -> None:
    """Check every box and the component library; list every problem found, exit 1 if any."""
    from buildbox.fetch import Fetcher
    from buildbox.release.check import binary_problems, check_project

    settings = _settings(ctx)
    project, problems = check_project(settings)
    if deep and not problems:
        wanted = sum(len(b.components) * len(b.platforms) for b in project.boxes)
        with output.fetch_progress(sys.stderr, wanted) as progress:
            problems = binary_problems(project, Fetcher(settings, progress))
    for problem in problems:
        print(problem)
    if problems:
        count = len(problems)
        raise Exit(f"buildbox check: {count} problem{'s' if count != 1 else ''} found.", code=1)
    print(
        f"buildbox check: {len(project.boxes)} box(es) and "
        f"{len(project.library.components)} component(s) are valid"
        + ("; every base runs its boxes' executables and libraries." if deep else ".")
    )


@task(
    help={
        "box": "Fetch only what this box needs (default: every box).",
        "platform": "Fetch only this platform's artifacts, e.g. linux/arm64 (default: all).",
        "offline": "Touch no network: check that everything is in the cache, list what is not.",
    }
)
@_fails_cleanly
def fetch(
    ctx: Context, box: str | None = None, platform: str | None = None, offline: bool = False
) -> None:
    """Download every pinned artifact, verify its sha256, and keep it in the cache."""
    from buildbox.define import project as project_stage
    from buildbox.fetch import Fetcher, wanted_for

    settings = _settings(ctx)
    project = project_stage.load(settings, box=box)
    wanted = wanted_for(project.boxes, project.library, platform)
    with output.fetch_progress(sys.stderr, len(wanted)) as progress:
        results = Fetcher(settings, progress).fetch_all(wanted, offline=offline)
    downloaded = sum(1 for result in results if result.source)
    print(
        f"fetch: {len(results)} artifact(s) verified: {downloaded} downloaded, "
        f"{len(results) - downloaded} already in the cache ({settings.cache_dir})"
    )


@task(
    positional=["component", "version"],
    help={
        "component": "The component in shared/components.yaml to move, e.g. go.",
        "version": "The new version, as the component writes it (e.g. 1.24.3).",
        "dry_run": "Show the new pins without writing shared/components.yaml.",
    },
)
@_fails_cleanly
def bump(ctx: Context, component: str, version: str, dry_run: bool = False) -> None:
    """Move a component to a new version, with sha256s from the publisher's checksum files."""
    from buildbox import bump as bump_stage
    from buildbox.define import project as project_stage
    from buildbox.fetch import Fetcher

    settings = _settings(ctx)
    project = project_stage.load(settings)
    with output.fetch_progress(sys.stderr, len(project.library.components)) as progress:
        planned = bump_stage.plan(project, component, version, Fetcher(settings, progress))
    print(f"{planned.component}: {planned.old_version} -> {planned.new_version}")
    print(
        output.table(
            ["PLATFORM", "URL", "SHA256 (published at)"],
            [[p.platform, p.url, f"{p.sha256} ({p.checksums_url})"] for p in planned.pins],
        )
    )
    if dry_run:
        print("dry run: shared/components.yaml is unchanged")
    else:
        bump_stage.apply(planned, settings.components_file)
        print(f"wrote {settings.shown(settings.components_file)}")
    for name in planned.boxes:
        print(
            f"box {name} takes {component}: bump `version` in buildboxes/{name}/box.yaml "
            f"(now {project.box(name).version}) before releasing it"
        )


@task(
    positional=["box"],
    help={
        "box": "The box to build (a directory name under buildboxes/).",
        "platform": "Build only this platform, e.g. linux/arm64 (default: all of the box's).",
        "no_cache": "Build every step again, ignoring the engine's layer cache.",
        "force": "Build even when a local image already has the same inputs digest.",
        "allow_floating_base": "Accept a base image not pinned by digest (never releasable).",
        "builder": BUILDER_HELP,
        "offline": "Take every artifact and package from the cache; touch no network.",
    },
)
@_fails_cleanly
def build(
    ctx: Context,
    box: str,
    platform: str | None = None,
    no_cache: bool = False,
    force: bool = False,
    allow_floating_base: bool = False,
    builder: str | None = None,
    offline: bool = False,
) -> None:
    """Fetch (verified) and build a box with the Docker engine; tag it when it succeeded.

    Platforms other than this machine's build under emulation (qemu-user-static).
    """
    from buildbox.build.build import build_box
    from buildbox.define import project as project_stage
    from buildbox.source import revision

    settings = _settings(ctx, builder)
    project = project_stage.load(settings, box=box, allow_floating_base=allow_floating_base)
    chosen = project.box(box)
    targets = chosen.platforms_for(platform)
    with _engine_and_fetcher(settings, len(chosen.components) * len(targets)) as (engine, fetcher):
        for target in targets:
            started = time.monotonic()
            result = build_box(
                project, chosen, target, engine=engine, fetcher=fetcher,
                revision=revision(settings.root), no_cache=no_cache, force=force,
                allow_floating_base=allow_floating_base, offline=offline,
            )  # fmt: skip
            what = f"{chosen.name} {chosen.release_tag} ({target})"
            if result.skipped:
                print(
                    f"{what} is up to date: image {result.image_id} has inputs digest "
                    f"{result.inputs_digest}; nothing was sent to the engine (--force rebuilds)"
                )
            else:
                print(f"built {what} in {time.monotonic() - started:.1f} s: {result.image_id}")
            print(f"tagged {', '.join(result.tags)}")


@task(
    positional=["box"],
    help={
        "box": "The box whose packages (box.yaml `packages:`) to resolve and pin.",
        "platform": "Resolve only this platform (the lock keeps the others).",
        "dry_run": "Show what would change (added, removed, new version) without writing.",
    },
)
@_fails_cleanly
def lock(ctx: Context, box: str, platform: str | None = None, dry_run: bool = False) -> None:
    """Resolve a box's OS packages in its pinned base and pin them in packages.lock."""
    from buildbox import lock as lock_stage
    from buildbox.build.engine import Engine
    from buildbox.define import project as project_stage
    from buildbox.define.lock import LOCK_FILE

    settings = _settings(ctx)
    project = project_stage.load(settings, box=box, check_lock=False)
    chosen = project.box(box)
    with Engine.connect() as engine:
        new = lock_stage.lock_box(project, chosen, engine=engine, platform=platform)
    found = lock_stage.changes(chosen.lock, new)
    if found:
        print(
            output.table(
                ["PLATFORM", "CHANGE", "PACKAGE", "OLD", "NEW"],
                [[c.platform, c.kind, c.name, c.old, c.new] for c in found],
            )
        )
    counts = ", ".join(f"{name}: {len(p.packages)}" for name, p in sorted(new.platforms.items()))
    where = settings.shown(chosen.directory / LOCK_FILE)
    if dry_run:
        print(f"dry run: {where} is unchanged ({len(found)} change(s); packages {counts})")
    else:
        lock_stage.write(chosen, new)
        print(f"wrote {where}: packages {counts}")


def _images(
    settings: settings_stage.Settings, box: Any, image: str | None, platform: str | None
) -> list[tuple[str | None, str]]:
    """(platform, image) pairs: the one named (its platform if known), or the box's local
    release tags."""
    from buildbox.build.labels import local_tags
    from buildbox.source import revision

    targets = box.platforms_for(platform)
    if image:
        return [(targets[0] if len(targets) == 1 else None, image)]
    found = revision(settings.root)
    return [(t, local_tags(settings.registry, box, t, found)[0]) for t in targets]


@task(
    positional=["box"],
    help={
        "box": "The box whose images to verify.",
        "image": "Verify this image instead of the box's local release tags.",
        "platform": "Verify only this platform's image (default: all of the box's).",
    },
)
@_fails_cleanly
def verify(ctx: Context, box: str, image: str | None = None, platform: str | None = None) -> None:
    """Run each image once and check its labels and that every tool reports its pinned version."""
    from buildbox.build.engine import Engine
    from buildbox.define import project as project_stage
    from buildbox.verify import verify_image

    settings = _settings(ctx)
    project = project_stage.load(settings, box=box)
    chosen = project.box(box)
    images = _images(settings, chosen, image, platform)
    failed = total = 0
    with Engine.connect() as engine:
        for _, reference in images:
            report = verify_image(engine, project, chosen, reference)
            print(f"{reference} ({report.platform}):")
            for item in report.checks:
                print(f"{'PASS' if item.ok else 'FAIL'}  {item.name}: {item.detail}")
            failed += sum(not item.ok for item in report.checks)
            total += len(report.checks)
    if failed:
        raise Exit(f"verify: {failed} of {total} checks failed", 1)
    print(f"verify: all {total} checks passed ({len(images)} image(s))")


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
@_fails_cleanly
def sbom(
    ctx: Context,
    box: str,
    image: str | None = None,
    platform: str | None = None,
    output_: str | None = None,
) -> None:
    """Write the CycloneDX 1.6 SBOM of each built, verified image (validated before writing)."""
    from buildbox.build.engine import Engine
    from buildbox.define import project as project_stage
    from buildbox.sbom import cyclonedx
    from buildbox.source import revision

    settings = _settings(ctx)
    project = project_stage.load(settings, box=box)
    chosen = project.box(box)
    images = _images(settings, chosen, image, platform)
    if (output_ not in (None, "-") and len(images) > 1) or images[0][0] is None:
        raise BuildboxError("--image and --output describe one image: add --platform")
    with Engine.connect() as engine:
        for target, reference in images:
            text = cyclonedx.describe_image(
                engine, project, chosen, reference, revision(settings.root)
            )
            if output_ == "-":
                sys.stdout.write(text)
                continue
            assert target is not None  # checked above
            path = cyclonedx.output_path(project, chosen, target, output_)
            cyclonedx.write(path, text)
            print(f"wrote {settings.shown(path)} (CycloneDX 1.6, valid)")


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
@_fails_cleanly
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

    settings = _settings(ctx)
    before, after = diff_stage.paths(settings.root, from_, to, box, platform)
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
        "dev": "Push to the mutable dev location <registry>/<box>-dev:<commit> instead.",
    },
)
@_fails_cleanly
def publish(ctx: Context, box: str, dev: bool = False) -> None:
    """Push the images and their SBOMs under the box's immutable release tag (written last).

    Several platforms are published as one OCI image index.
    """
    from buildbox.build.engine import Engine
    from buildbox.define import project as project_stage
    from buildbox.release.publish import publish_box
    from buildbox.source import revision

    settings = _settings(ctx)
    project = project_stage.load(settings, box=box)
    shown = output.upload_progress(sys.stdout)
    with Engine.connect() as engine:
        outcome = publish_box(
            project, project.box(box), engine=engine, revision=revision(settings.root), dev=dev,
            log=shown.line, progress=shown.sent,
        )  # fmt: skip
    published = outcome.published
    state = "published" if published.tagged_now else "already published (unchanged)"
    print(f"{state}: {published.reference}")
    for target, (digest, sbom_digest) in sorted(published.platforms.items()):
        print(f"  {target}: {digest}, sbom {sbom_digest}")


@task(
    positional=["box"],
    help={
        "box": "The box to release (its current version in box.yaml, all its platforms).",
        "builder": BUILDER_HELP,
    },
)
@_fails_cleanly
def release(ctx: Context, box: str, builder: str | None = None) -> None:
    """Build, verify, write the SBOMs, publish and record a box version: the one push-button."""
    from buildbox.define import project as project_stage
    from buildbox.release.record import RECORD_FILE
    from buildbox.release.release import release_box
    from buildbox.source import revision

    settings = _settings(ctx, builder)
    project = project_stage.load(settings, box=box)
    chosen = project.box(box)
    artifacts = len(chosen.components) * len(chosen.platforms)
    with _engine_and_fetcher(settings, artifacts) as (engine, fetcher):
        shown = output.upload_progress(sys.stdout)
        done, new = release_box(
            project, chosen, engine=engine, fetcher=fetcher, revision=revision(settings.root),
            log=shown.line, progress=shown.sent,
        )  # fmt: skip
    if new:
        print(f"released {done.reference}")
        if settings.signing_key:
            print(
                "signed with cosign: the release and each image, with SBOM and SLSA provenance "
                "attestations (check: invoke verify-release)"
            )
        sboms = ", ".join(facts.sbom_path for facts in done.platforms.values())
        print(f"recorded in {RECORD_FILE}; SBOMs: {sboms}: commit them")
    else:
        print(f"{chosen.name} {chosen.release_tag} is already released: {done.reference}")


@task(
    positional=["box"],
    help={
        "box": "The box whose pinned reference to print.",
        "version": "Which released version (default: the latest), e.g. 3 or v3.",
        "platform": "Print that platform's image instead of the multi-platform index.",
        "json": "Print the release record entry as JSON.",
    },
)
@_fails_cleanly
def ref(
    ctx: Context,
    box: str,
    version: str | None = None,
    platform: str | None = None,
    json_: bool = False,
) -> None:
    """Print the pinned reference of a released box (repo:tag@sha256:...) for consumers to use."""
    from buildbox.release import record

    found = record.require(_settings(ctx).root, box, version)
    if json_:
        print(json.dumps(dataclasses.asdict(found), indent=2))
    else:
        print(found.platform_reference(platform) if platform else found.reference)


@task(help={"box": "Audit only this box's releases (default: all)."})
@_fails_cleanly
def audit(ctx: Context, box: str | None = None) -> None:
    """Check every recorded release: tag still at the digest, SBOM attached and as committed."""
    from buildbox.release.audit import audit as audit_stage

    results = audit_stage(_settings(ctx), box)
    for entry, problems in results:
        print(f"{'PASS' if not problems else 'FAIL'}  {entry.reference}")
        for problem in problems:
            print(f"      {problem}")
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
@_fails_cleanly
def verify_release(
    ctx: Context,
    box: str,
    version: str | None = None,
    key: str | None = None,
    identity: str | None = None,
) -> None:
    """Check a release's signatures, that its signed SBOMs are the committed ones, and that its
    signed provenance names this repository and the recorded revision."""
    from buildbox.release import record, signing

    settings = _settings(ctx)
    if key or identity:
        settings = dataclasses.replace(
            settings, signing_public_key=key or "", signing_identity=identity or ""
        )
    release = record.require(settings.root, box, version)
    checks = signing.trust(settings)
    if checks is None:
        raise BuildboxError(
            "verify-release needs what to trust: --key=<cosign public key> (or "
            "buildbox.signing_public_key), or --identity=<workflow URL> for keyless signatures"
        )
    findings = signing.verify_release(settings, release, checks)
    for finding in findings:
        print(f"{'PASS' if finding.ok else 'FAIL'}  {finding.what}: {finding.detail}")
    failed = sum(not finding.ok for finding in findings)
    if failed:
        raise Exit(f"verify-release: {release.reference}: {failed} check(s) failed", 1)
    print(f"verify-release: {release.reference} is signed, attested and as recorded")


@task(
    positional=["box"],
    help={
        "box": "The box whose release to rebuild.",
        "version": "The released version to rebuild (default: the latest), e.g. 3 or v3.",
        "builder": BUILDER_HELP,
    },
)
@_fails_cleanly
def reproduce(
    ctx: Context, box: str, version: str | None = None, builder: str | None = None
) -> None:
    """Rebuild a release from its recorded commit and compare with the record and the registry."""
    from buildbox import local_registry
    from buildbox.oci.refs import Reference
    from buildbox.oci.registry import open_registry
    from buildbox.release import record
    from buildbox.release.reproduce import SAME_CONTENT
    from buildbox.release.reproduce import reproduce as reproduce_stage

    settings = _settings(ctx, builder)
    found = record.require(settings.root, box, version)
    local_registry.ensure_running(settings)
    with (
        _engine_and_fetcher(settings, 1) as (engine, fetcher),
        open_registry(Reference.parse(found.reference), settings=settings) as registry,
    ):
        outcome = reproduce_stage(
            settings, found, engine=engine, fetcher=fetcher, registry=registry
        )
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


@task(
    positional=["box"],
    help={"box": "The box to release, e.g. debian13 (built from Debian packages only)."},
)
@_fails_cleanly
def main(ctx: Context, box: str) -> None:
    """The main job: build, verify, SBOM and release a box; print the checks, SBOM and ref.

    With no registry configured (buildbox.registry empty), the release goes to a registry the
    toolkit runs on 127.0.0.1 (data under the cache directory; `invoke registry --stop`).
    """
    from buildbox import local_registry
    from buildbox.build.labels import local_tags
    from buildbox.define import project as project_stage
    from buildbox.release.record import RECORD_FILE
    from buildbox.release.release import release_box
    from buildbox.source import revision
    from buildbox.verify import verify_image

    settings = _settings(ctx)
    project = project_stage.load(settings, box=box)
    chosen = project.box(box)
    host = local_registry.ensure_running(settings)
    if host:
        print(f"main: releasing to the local registry {host} (buildbox.registry is empty)")
    source = revision(settings.root)
    artifacts = len(chosen.components) * len(chosen.platforms)
    with _engine_and_fetcher(settings, artifacts) as (engine, fetcher):
        shown = output.upload_progress(sys.stdout)
        done, new = release_box(
            project, chosen, engine=engine, fetcher=fetcher, revision=source, log=shown.line,
            progress=shown.sent,
        )  # fmt: skip
        for platform in chosen.platforms:
            image = local_tags(settings.registry, chosen, platform, source)[0]
            report = verify_image(engine, project, chosen, image)
            print(f"verify {image} ({report.platform}):")
            for item in report.checks:
                print(f"{'PASS' if item.ok else 'FAIL'}  {item.name}: {item.detail}")
    print(f"{'released' if new else 'already released'}: {chosen.name} {chosen.release_tag}")
    if settings.signing_key:
        print("signed with cosign, with SBOM and provenance attestations (invoke verify-release)")
    for platform, facts in sorted(done.platforms.items()):
        print(f"SBOM ({platform}): {facts.sbom_path} (CycloneDX 1.6; recorded in {RECORD_FILE})")
    print(f"ref: {done.reference}")


@task(
    help={
        "stop": "Stop the local registry (its data stays under the cache directory).",
        "reset": "Stop it and delete its data (everything released to it is gone).",
    }
)
@_fails_cleanly
def registry(ctx: Context, stop: bool = False, reset: bool = False) -> None:
    """Show, stop or reset the registry the toolkit runs on loopback when none is configured."""
    from buildbox import local_registry

    settings = _settings(ctx)
    if not settings.local_registry:
        print(f"buildbox.registry is {settings.registry}: no local registry is used")
    elif reset:
        local_registry.reset(settings)
        print(f"local registry reset: {local_registry.directory(settings)} is gone")
    elif stop:
        stopped = local_registry.stop(settings)
        print("local registry stopped" if stopped else "no local registry was running")
    else:
        host = local_registry.ensure_running(settings)
        print(f"local registry: {host}, data in {local_registry.directory(settings)}")


@task
@_fails_cleanly
def doctor(ctx: Context) -> None:
    """Show what the Docker engine offers: version, image store, buildx, builders, emulation."""
    from buildbox.build.doctor import examine
    from buildbox.build.engine import Engine

    with Engine.connect() as engine:
        found = examine(engine, _settings(ctx))
    print(output.table(["", "WHAT", "FOUND"], [["ok" if f.ok else "!!", f.topic, f.detail]
                                              for f in found]))  # fmt: skip
    missing = sum(not f.ok for f in found)
    if missing:
        raise Exit(f"doctor: {missing} problem(s): see the lines marked !!", 1)


@task
@_fails_cleanly
def matrix(ctx: Context) -> None:
    """Print, as JSON for a CI matrix, each box and platform whose version is not yet released."""
    from buildbox.define import project as project_stage
    from buildbox.release.release import unreleased

    print(json.dumps({"include": unreleased(project_stage.load(_settings(ctx)))}))


def _own_copy(shared: object) -> Task[Any]:
    """``shared`` with a help dict of its own.

    invoke pops each entry out of ``Task.help`` while it builds a task's parser, so a second
    parser over the same module-level Task (a second Program run, or ``get_arguments()``, in one
    process) would list the flags without their help.
    """
    assert isinstance(shared, Task)
    fresh = copy.copy(shared)
    fresh.help = dict(shared.help)
    return fresh


def namespace(root: Path) -> Collection:
    """The task collection for a project whose files (buildboxes/, shared/) are under ``root``.

    Each call has its own Task objects: nothing invoke does with one collection changes another.
    """
    tasks = (
        list_boxes, check, fetch, bump, build, verify, sbom, sbom_diff, publish, release, ref,
        audit, verify_release, matrix, reproduce, doctor, lock, main, registry,
    )  # fmt: skip
    ns = Collection(*(_own_copy(t) for t in tasks))
    ns.configure(
        {
            "buildbox": {**settings_stage.DEFAULTS, "root": str(root)},
            ENVIRONMENT_KEY: settings_stage.take_environment(),
        }
    )
    return ns
