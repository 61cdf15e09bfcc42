"""The tasks that build: fetch, build, verify."""

from __future__ import annotations

import sys
import time

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from buildbox import output
from buildbox.tasks._common import (
    BUILDER_HELP,
    FROM_ESCROW_HELP,
    engine_and_fetcher,
    fails_cleanly,
    fetching,
    load,
    print_report,
    recorded_escrows,
    settings,
)


@task(
    help={
        "box": "Fetch only what this box needs (default: every box).",
        "platform": "Fetch only this platform's artifacts, e.g. linux/arm64 (default: all).",
        "offline": "Touch no network: check that everything is in the cache, list what is not.",
        "from_escrow": FROM_ESCROW_HELP,
    }
)
@fails_cleanly
def fetch(
    ctx: Context,
    box: str | None = None,
    platform: str | None = None,
    offline: bool = False,
    from_escrow: bool = False,
) -> None:
    """Download every pinned artifact, verify its sha256, and keep it in the cache."""
    from buildbox.define import project as project_stage
    from buildbox.fetch import wanted_for

    found = settings(ctx)
    project = project_stage.load(found, box=box)
    wanted = wanted_for(project.boxes, project.library, platform)
    escrows = recorded_escrows(found, [(each.name, each.version) for each in project.boxes])
    with (
        output.fetch_progress(sys.stderr, len(wanted)) as progress,
        fetching(found, progress, escrows, from_escrow=from_escrow) as fetcher,
    ):
        results = fetcher.fetch_all(wanted, offline=offline)
    downloaded = sum(1 for result in results if result.source)
    escrowed = sum(1 for result in results if result.source and result.source.endswith("(escrow)"))
    print(
        f"fetch: {len(results)} artifact(s) verified: {downloaded} downloaded"
        f"{f' ({escrowed} from an escrow)' if escrowed else ''}, "
        f"{len(results) - downloaded} already in the cache ({found.cache_dir})"
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
        "from_escrow": FROM_ESCROW_HELP,
    },
)
@fails_cleanly
def build(
    ctx: Context,
    box: str,
    platform: str | None = None,
    no_cache: bool = False,
    force: bool = False,
    allow_floating_base: bool = False,
    builder: str | None = None,
    offline: bool = False,
    from_escrow: bool = False,
) -> None:
    """Fetch (verified) and build a box with the Docker engine; tag it when it succeeded.

    Platforms other than this machine's build under emulation (qemu-user-static).
    """
    from buildbox.build.build import build_box
    from buildbox.source import revision

    project, chosen = load(ctx, box, builder=builder, allow_floating_base=allow_floating_base)
    targets = chosen.platforms_for(platform)
    source = revision(project.settings.root)
    artifacts = len(chosen.components) * len(targets)
    escrows = recorded_escrows(project.settings, [(chosen.name, chosen.version)])
    with engine_and_fetcher(
        project.settings, artifacts, escrows=escrows, from_escrow=from_escrow
    ) as (engine, fetcher):
        for target in targets:
            started = time.monotonic()
            built = build_box(
                project, chosen, target, engine=engine, fetcher=fetcher, revision=source,
                no_cache=no_cache, force=force, allow_floating_base=allow_floating_base,
                offline=offline,
            )  # fmt: skip
            what = f"{chosen.name} {chosen.release_tag} ({target})"
            if built.skipped:
                print(
                    f"{what} is up to date: image {built.image_id} has inputs digest "
                    f"{built.inputs_digest}; nothing was sent to the engine (--force rebuilds)"
                )
            else:
                print(f"built {what} in {time.monotonic() - started:.1f} s: {built.image_id}")
            print(f"tagged {', '.join(built.tags)}")


@task(
    positional=["box"],
    help={
        "box": "The box whose images to verify.",
        "image": "Verify this image instead of the box's local release tags.",
        "platform": "Verify only this platform's image (default: all of the box's).",
    },
)
@fails_cleanly
def verify(ctx: Context, box: str, image: str | None = None, platform: str | None = None) -> None:
    """Run each image once and check its labels and that every tool reports its pinned version."""
    from buildbox.build.build import locate
    from buildbox.build.engine import Engine
    from buildbox.source import revision
    from buildbox.verify import verify as verify_stage

    project, chosen = load(ctx, box)
    source = revision(project.settings.root)
    platforms = chosen.platforms_for(platform)
    targets: list[str | None] = [None] if image else list(platforms)
    failed = total = 0
    with Engine.connect() as engine:
        for target in targets:
            built = locate(engine, project, chosen, target, source, image)
            report = verify_stage(engine, project, chosen, built)
            print(f"{report.image} ({report.platform}):")
            failed += print_report(report)
            total += sum(not check.info for check in report.checks)
    if failed:
        raise Exit(f"verify: {failed} of {total} checks failed", 1)
    print(f"verify: all {total} checks passed ({len(targets)} image(s))")
