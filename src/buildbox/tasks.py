"""The invoke tasks: each parses arguments, calls the library and prints. No logic lives here."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from buildbox import project as project_stage
from buildbox import settings as settings_stage
from buildbox.errors import BuildboxError
from buildbox.output import table

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
    section = ctx.config.buildbox
    return settings_stage.from_config({key: section[key] for key in section})


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
        table(
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


def namespace(root: Path) -> Collection:
    """The task collection for a project whose files (buildboxes/, shared/) are under ``root``."""
    ns = Collection(list_boxes, check)
    defaults: dict[str, Any] = {**settings_stage.DEFAULTS, "root": str(root)}
    ns.configure({"buildbox": defaults})
    return ns
