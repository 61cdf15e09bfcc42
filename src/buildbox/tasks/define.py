"""The tasks that define boxes: check, list, lock, bump."""

from __future__ import annotations

import json
import sys
from typing import Any

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from buildbox import output
from buildbox.tasks._common import fails_cleanly, fetching, load, recorded_escrows, settings


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
@fails_cleanly
def list_boxes(ctx: Context, box: str | None = None, json_: bool = False) -> None:
    """List the boxes: version, base image, platforms, components and inputs digest."""
    from buildbox.define import project as project_stage

    project = project_stage.load(settings(ctx), box=box)
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
        "its executables and libraries: architecture, and glibc/libstdc++ symbol versions.",
        "offline": "Use no network: a package lock's Packages index that is not in the "
        "verified cache cannot be checked, which is a problem (an online check fetches it).",
    }
)
@fails_cleanly
def check(ctx: Context, deep: bool = False, offline: bool = False) -> None:
    """Check every box and the component library; list every problem found, exit 1 if any."""
    from buildbox.release.check import binary_problems, check_project

    found = settings(ctx)
    # The package locks' Packages indices, verified like any download (fetched when absent;
    # once the archive has moved on, from a recorded release's escrow).
    escrows = recorded_escrows(found, [])
    with fetching(found, output.LogProgress(sys.stderr), escrows) as fetcher:
        project, problems = check_project(found, fetcher, offline=offline)
    if deep and not problems:
        wanted = sum(len(b.components) * len(b.platforms) for b in project.boxes)
        with (
            output.fetch_progress(sys.stderr, wanted) as progress,
            fetching(found, progress, escrows) as fetcher,
        ):
            problems = binary_problems(project, fetcher)
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
    positional=["box"],
    help={
        "box": "The box whose packages (box.yaml `packages:`) to resolve and pin.",
        "platform": "Resolve only this platform (the lock keeps the others).",
        "dry_run": "Show what would change (added, removed, new version) without writing.",
    },
)
@fails_cleanly
def lock(ctx: Context, box: str, platform: str | None = None, dry_run: bool = False) -> None:
    """Resolve a box's OS packages in its pinned base and pin them in packages.lock."""
    from buildbox import resolve
    from buildbox.build.engine import Engine
    from buildbox.define.lock import LOCK_FILE
    from buildbox.fetch import Fetcher

    project, chosen = load(ctx, box, check_lock=False)
    fetcher = Fetcher(project.settings, output.LogProgress(sys.stderr))
    with Engine.connect() as engine:
        resolution = resolve.resolve_box(
            project, chosen, engine=engine, fetcher=fetcher, platform=platform
        )
    new = resolution.lock
    found = resolve.changes(chosen.lock, new)
    if found:
        print(
            output.table(
                ["PLATFORM", "CHANGE", "PACKAGE", "OLD", "NEW"],
                [[c.platform, c.kind, c.name, c.old, c.new] for c in found],
            )
        )
    counts = ", ".join(f"{name}: {len(p.packages)}" for name, p in sorted(new.platforms.items()))
    where = project.settings.shown(chosen.directory / LOCK_FILE)
    if dry_run:
        print(f"dry run: {where} is unchanged ({len(found)} change(s); packages {counts})")
    else:
        resolve.write(chosen, resolution)
        print(f"wrote {where}: packages {counts}")


@task(
    positional=["component", "version"],
    help={
        "component": "The component in shared/components.yaml to move, e.g. go.",
        "version": "The new version, as the component writes it (e.g. 1.24.3).",
        "dry_run": "Show the new pins without writing shared/components.yaml.",
    },
)
@fails_cleanly
def bump(ctx: Context, component: str, version: str, dry_run: bool = False) -> None:
    """Move a component to a new version, with sha256s from the publisher's checksum files."""
    from buildbox import bump as bump_stage
    from buildbox.define import project as project_stage
    from buildbox.fetch import Fetcher

    found = settings(ctx)
    project = project_stage.load(found)
    try:
        with output.fetch_progress(sys.stderr, len(project.library.components)) as progress:
            planned = bump_stage.plan(project, component, version, Fetcher(found, progress))
    except bump_stage.NothingToBump as unchanged:
        print(unchanged)
        return
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
        bump_stage.apply(planned, found.components_file)
        print(f"wrote {found.shown(found.components_file)}")
    for name in planned.boxes:
        print(
            f"box {name} takes {component}: bump `version` in buildboxes/{name}/box.yaml "
            f"(now {project.box(name).version}) before releasing it"
        )
