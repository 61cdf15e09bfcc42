"""The invoke tasks: each parses arguments, calls the library and prints. No logic lives here."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

from invoke.collection import Collection
from invoke.config import DataProxy
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from buildbox import build as build_stage
from buildbox import bump as bump_stage
from buildbox import engine, output, source
from buildbox import fetch as fetch_stage
from buildbox import project as project_stage
from buildbox import record as record_stage
from buildbox import release as release_stage
from buildbox import reproduce as reproduce_stage
from buildbox import sbom as sbom_stage
from buildbox import settings as settings_stage
from buildbox import verify as verify_stage
from buildbox.boxes import Box
from buildbox.errors import BuildboxError
from buildbox.registry import Reference

P = ParamSpec("P")
R = TypeVar("R")


def _fails_cleanly(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a :class:`BuildboxError` into its message and exit code 1, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except BuildboxError as error:
            raise Exit(f"buildbox: {error}", code=1) from None

    return wrapper


def _settings(ctx: Context) -> settings_stage.Settings:
    return settings_stage.from_config(_plain(ctx.config.buildbox))


def _plain(value: Any) -> Any:
    """invoke's configuration proxies as plain dicts, all the way down."""
    if isinstance(value, DataProxy):
        keys = cast("list[str]", list(value))  # DataProxy's own annotation of __iter__ is off
        return {key: _plain(value[key]) for key in keys}
    return value


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
    project = project_stage.load(_settings(ctx))
    rows = [project_stage.describe(project, b) for b in project.select(box)]
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
                    ", ".join(f"{c['name']} {c['version']}" for c in row["components"]),
                    row["base"],
                ]
                for row in rows
            ],
        )
    )


@task(help={})
@_fails_cleanly
def check(ctx: Context) -> None:
    """Check every box and the component library; list every problem found, exit 1 if any."""
    settings = _settings(ctx)
    project, problems = project_stage.check(settings)
    for problem in problems:
        print(problem)
    if problems:
        count = len(problems)
        raise Exit(f"buildbox check: {count} problem{'s' if count != 1 else ''} found.", code=1)
    print(
        f"buildbox check: {len(project.boxes)} box(es) and "
        f"{len(project.library.components)} component(s) are valid."
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
    settings = _settings(ctx)
    project = project_stage.load(settings)
    wanted = fetch_stage.wanted_for(project.select(box), project.library, platform)
    with output.fetch_progress(sys.stderr, len(wanted)) as progress:
        results = fetch_stage.Fetcher(settings, progress).fetch_all(wanted, offline=offline)
    downloaded = sum(1 for result in results if result.source)
    print(
        f"fetch: {len(results)} artifact(s) verified: {downloaded} downloaded, "
        f"{len(results) - downloaded} already in the cache ({settings.cache_dir})"
    )


@task(
    help={
        "component": "The component in shared/components.yaml to move, e.g. go.",
        "version": "The new version, as the component writes it (e.g. 1.24.3).",
        "dry_run": "Show the new pins without writing shared/components.yaml.",
    }
)
@_fails_cleanly
def bump(
    ctx: Context, component: str | None = None, version: str | None = None, dry_run: bool = False
) -> None:
    """Move a component to a new version, with sha256s from the publisher's checksum files."""
    if not component or not version:
        raise BuildboxError("bump needs --component=NAME and --version=VERSION")
    settings = _settings(ctx)
    project = project_stage.load(settings)
    with output.fetch_progress(sys.stderr, len(project.library.components)) as progress:
        fetcher = fetch_stage.Fetcher(settings, progress)
        planned = bump_stage.plan(project, component, version, fetcher)
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
        box = project.box(name)
        print(
            f"box {name} takes {component}: bump `version` in buildboxes/{name}/box.yaml "
            f"(now {box.version}) before releasing it"
        )


def _platforms(box: Box, platform: str | None) -> tuple[str, ...]:
    """The platform asked for (which the box must build), else all of the box's platforms."""
    if platform is None:
        return box.platforms
    if platform not in box.platforms:
        raise BuildboxError(
            f"box {box.name} does not build for {platform}; its platforms are "
            f"{', '.join(box.platforms)}"
        )
    return (platform,)


@task(
    help={
        "box": "The box to build (a directory name under buildboxes/).",
        "platform": "Build only this platform, e.g. linux/arm64 (default: all of the box's).",
        "no_cache": "Build every step again, ignoring the engine's layer cache.",
        "force": "Build even when a local image already has the same inputs digest.",
        "allow_floating_base": "Accept a base image not pinned by digest (never releasable).",
    }
)
@_fails_cleanly
def build(
    ctx: Context,
    box: str | None = None,
    platform: str | None = None,
    no_cache: bool = False,
    force: bool = False,
    allow_floating_base: bool = False,
) -> None:
    """Fetch (verified) and build a box with the Docker engine; tag it when it succeeded.

    Platforms other than this machine's build under emulation (qemu-user-static).
    """
    if not box:
        raise BuildboxError("build needs --box=NAME (see `invoke list`)")
    settings = _settings(ctx)
    project = project_stage.load(settings, allow_floating_base=allow_floating_base)
    chosen = project.box(box)
    targets = _platforms(chosen, platform)
    revision = source.revision(settings.root)
    progress = output.fetch_progress(sys.stderr, len(chosen.components) * len(targets))
    with progress, engine.connected() as client:
        for target in targets:
            started = time.monotonic()
            result = build_stage.build_box(
                project,
                chosen,
                target,
                client=client,
                fetcher=fetch_stage.Fetcher(settings, progress),
                revision=revision,
                no_cache=no_cache,
                force=force,
                allow_floating_base=allow_floating_base,
            )
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
    help={
        "box": "The box whose images to verify.",
        "image": "Verify this image instead of the box's local release tags.",
        "platform": "Verify only this platform's image (default: all of the box's).",
    }
)
@_fails_cleanly
def verify(
    ctx: Context, box: str | None = None, image: str | None = None, platform: str | None = None
) -> None:
    """Run each image once and check its labels and that every tool reports its pinned version."""
    if not box:
        raise BuildboxError("verify needs --box=NAME (see `invoke list`)")
    settings = _settings(ctx)
    project = project_stage.load(settings)
    chosen = project.box(box)
    revision = source.revision(settings.root)
    images = [image] if image else [
        build_stage.local_tags(settings.registry, chosen, target, revision)[0]
        for target in _platforms(chosen, platform)
    ]  # fmt: skip
    failed = total = 0
    with engine.connected() as client:
        for reference in images:
            report = verify_stage.verify_image(client, project, chosen, reference)
            print(f"{reference} ({report.platform}):")
            for check in report.checks:
                print(f"{'PASS' if check.ok else 'FAIL'}  {check.name}: {check.detail}")
            failed += sum(not check.ok for check in report.checks)
            total += len(report.checks)
    if failed:
        raise Exit(f"verify: {failed} of {total} checks failed", 1)
    print(f"verify: all {total} checks passed ({len(images)} image(s))")


@task(
    help={
        "box": "The box whose images to describe.",
        "image": "Describe this image instead of the box's local release tag(s).",
        "platform": "Only this platform's image (default: all of the box's).",
        "output": "Where to write it (default: sbom/<box>/v<N>-<os>-<arch>.cdx.json; -: stdout).",
    }
)
@_fails_cleanly
def sbom(
    ctx: Context,
    box: str | None = None,
    image: str | None = None,
    platform: str | None = None,
    output_: str | None = None,
) -> None:
    """Write the CycloneDX 1.6 SBOM of each built, verified image (validated before writing)."""
    if not box:
        raise BuildboxError("sbom needs --box=NAME (see `invoke list`)")
    settings = _settings(ctx)
    project = project_stage.load(settings)
    chosen = project.box(box)
    revision = source.revision(settings.root)
    targets = _platforms(chosen, platform)
    if (image or output_) and len(targets) > 1:
        raise BuildboxError("--image and --output describe one image: add --platform")
    with engine.connected() as client:
        for target in targets:
            reference = (
                image or build_stage.local_tags(settings.registry, chosen, target, revision)[0]
            )
            text = sbom_stage.describe_image(client, project, chosen, reference, revision)
            if output_ == "-":
                sys.stdout.write(text)
                continue
            path = Path(output_) if output_ else sbom_stage.sbom_path(project, chosen, target)
            sbom_stage.write(path, text)
            print(f"wrote {settings.shown(path.resolve())} (CycloneDX 1.6, valid)")


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
    settings = _settings(ctx)
    if box:
        suffix = (platform or build_stage.host_platform()).replace("/", "-")
        directory = settings.root / "sbom" / box
        paths = [directory / f"{version}-{suffix}.cdx.json" for version in (from_, to)]
    else:
        paths = [Path(from_), Path(to)]
    changes = sbom_stage.diff(sbom_stage.load(paths[0]), sbom_stage.load(paths[1]))
    if json_:
        print(json.dumps([dataclasses.asdict(change) for change in changes], indent=2))
        return
    if not changes:
        print(f"no differences between {paths[0]} and {paths[1]}")
        return
    print(
        output.table(
            ["CHANGE", "TYPE", "COMPONENT", "OLD", "NEW"],
            [[c.kind, c.purl_type, c.name, c.old, c.new] for c in changes],
        )
    )


@task(
    help={
        "box": "The box whose built, verified images (all its platforms) to publish.",
        "dev": "Push to the mutable dev location <registry>/<box>-dev:<commit> instead.",
    }
)
@_fails_cleanly
def publish(ctx: Context, box: str | None = None, dev: bool = False) -> None:
    """Push the images and their SBOMs under the box's immutable release tag (written last).

    Several platforms are published as one OCI image index.
    """
    if not box:
        raise BuildboxError("publish needs --box=NAME (see `invoke list`)")
    settings = _settings(ctx)
    project = project_stage.load(settings)
    chosen = project.box(box)
    with engine.connected() as client:
        outcome = release_stage.publish_box(
            project, chosen, client=client, revision=source.revision(settings.root), dev=dev
        )
    published = outcome.published
    state = "published" if published.tagged_now else "already published (unchanged)"
    print(f"{state}: {published.reference}")
    for target, (digest, sbom_digest) in sorted(published.platforms.items()):
        print(f"  {target}: {digest}, sbom {sbom_digest}")


@task(help={"box": "The box to release (its current version in box.yaml, all its platforms)."})
@_fails_cleanly
def release(ctx: Context, box: str | None = None) -> None:
    """Build, verify, write the SBOMs, publish and record a box version: the one push-button."""
    if not box:
        raise BuildboxError("release needs --box=NAME (see `invoke list`)")
    settings = _settings(ctx)
    project = project_stage.load(settings)
    chosen = project.box(box)
    progress = output.fetch_progress(sys.stderr, len(chosen.components) * len(chosen.platforms))
    with progress, engine.connected() as client:
        done, new = release_stage.release_box(
            project,
            chosen,
            client=client,
            fetcher=fetch_stage.Fetcher(settings, progress),
            revision=source.revision(settings.root),
        )
    if new:
        print(f"released {done.reference}")
        sboms = ", ".join(facts.sbom_path for facts in done.platforms.values())
        print(f"recorded in {record_stage.RECORD_FILE}; SBOMs: {sboms}: commit them")
    else:
        print(f"{chosen.name} {chosen.release_tag} is already released: {done.reference}")


@task(
    help={
        "box": "The box whose pinned reference to print.",
        "version": "Which released version (default: the latest), e.g. 3 or v3.",
        "platform": "Print that platform's image instead of the multi-platform index.",
        "json": "Print the release record entry as JSON.",
    }
)
@_fails_cleanly
def ref(
    ctx: Context,
    box: str | None = None,
    version: str | None = None,
    platform: str | None = None,
    json_: bool = False,
) -> None:
    """Print the pinned reference of a released box (repo:tag@sha256:...) for consumers to use."""
    if not box:
        raise BuildboxError("ref needs --box=NAME")
    settings = _settings(ctx)
    releases = record_stage.load(settings.root)
    found = record_stage.find(releases, box, version)
    if found is None:
        which = f"version {version}" if version else "any version"
        raise BuildboxError(f"no release of {box} ({which}) in {record_stage.RECORD_FILE}")
    if json_:
        print(json.dumps(dataclasses.asdict(found), indent=2))
    else:
        print(found.platform_reference(platform) if platform else found.reference)


@task(help={"box": "Audit only this box's releases (default: all)."})
@_fails_cleanly
def audit(ctx: Context, box: str | None = None) -> None:
    """Check every recorded release: tag still at the digest, SBOM attached and as committed."""
    settings = _settings(ctx)
    releases = [r for r in record_stage.load(settings.root) if box in (None, r.box)]
    failures = 0
    for entry in releases:
        problems = release_stage.audit_release(settings, entry)
        failures += bool(problems)
        print(f"{'PASS' if not problems else 'FAIL'}  {entry.reference}")
        for problem in problems:
            print(f"      {problem}")
    if failures:
        raise Exit(f"audit: {failures} of {len(releases)} releases drifted", 1)
    print(f"audit: {len(releases)} release(s) match the registry and the committed SBOMs")


@task(
    help={
        "box": "The box whose release to rebuild.",
        "version": "The released version to rebuild (default: the latest), e.g. 3 or v3.",
    }
)
@_fails_cleanly
def reproduce(ctx: Context, box: str | None = None, version: str | None = None) -> None:
    """Rebuild a release from its recorded commit and compare with the record and the registry."""
    if not box:
        raise BuildboxError("reproduce needs --box=NAME")
    settings = _settings(ctx)
    found = record_stage.find(record_stage.load(settings.root), box, version)
    if found is None:
        raise BuildboxError(f"no release of {box} in {record_stage.RECORD_FILE}")
    registry = release_stage.registry_for(Reference.parse(found.reference))
    progress = output.fetch_progress(sys.stderr, 1)
    with progress, engine.connected() as client, contextlib.closing(registry):
        outcome = reproduce_stage.reproduce(
            settings,
            found,
            client=client,
            fetcher=fetch_stage.Fetcher(settings, progress),
            registry=registry,
        )
    print(f"recorded:    {outcome.recorded}")
    print(f"in registry: {outcome.in_registry or 'nothing (the tag is gone)'}")
    print(f"rebuilt:     {outcome.rebuilt}")
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
    print(f"reproduce: {box} v{outcome.version} reproduced bit for bit")


@task
@_fails_cleanly
def matrix(ctx: Context) -> None:
    """Print, as JSON for a CI matrix, each box and platform whose version is not yet released."""
    settings = _settings(ctx)
    project = project_stage.load(settings)
    releases = record_stage.load(settings.root)
    include = [
        {"box": box.name, "version": box.version, "platform": platform}
        for box in project.boxes
        if record_stage.find(releases, box.name, box.version) is None
        for platform in box.platforms
    ]
    print(json.dumps({"include": include}))


def namespace(root: Path) -> Collection:
    """The task collection for a project whose files (buildboxes/, shared/) are under ``root``."""
    ns = Collection(
        list_boxes,
        check,
        fetch,
        bump,
        build,
        verify,
        sbom,
        sbom_diff,
        publish,
        release,
        ref,
        audit,
        matrix,
        reproduce,
    )
    defaults: dict[str, Any] = {**settings_stage.DEFAULTS, "root": str(root)}
    ns.configure({"buildbox": defaults})
    return ns
