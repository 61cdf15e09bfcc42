"""What every task shares: settings from invoke's configuration, the project and box a command is
about, the engine and fetcher of the commands that build, clean failures, and printing checks."""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from invoke.config import DataProxy
from invoke.context import Context
from invoke.exceptions import Exit

from buildbox import output
from buildbox import settings as settings_stage
from buildbox.errors import BuildboxError
from buildbox.http import redact

if TYPE_CHECKING:
    from buildbox.build.engine import Engine
    from buildbox.define.boxes import Box
    from buildbox.define.project import Project
    from buildbox.fetch import Fetcher
    from buildbox.release.release import Released
    from buildbox.verify import Report

P = ParamSpec("P")
R = TypeVar("R")
#: Where the INVOKE_BUILDBOX_* variables taken out of invoke's way are kept for the tasks.
ENVIRONMENT_KEY = "buildbox_environment"
#: The --builder option of the tasks that build.
BUILDER_HELP = (
    "Build with BuildKit on this buildx builder instance (e.g. a remote one from `docker buildx "
    "create`); default: buildbox.buildx_builder, else the current one."
)
#: The --from-escrow option of the tasks that fetch.
FROM_ESCROW_HELP = (
    "Take every input not in the cache from recorded releases' escrows (the registry), none "
    "from mirrors or upstream; fail naming any input no escrow holds."
)


def fails_cleanly(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a :class:`BuildboxError` into its message and exit code 1, never a traceback.

    First, the INVOKE_BUILDBOX_* variables ``namespace`` took out of invoke's way go back into
    the environment: invoke has read its own by now, and whatever runs next (a tool the task
    starts, or invoke again in the same process) sees them as the user set them.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        ctx = args[0]
        assert isinstance(ctx, Context)
        settings_stage.restore_environment(plain(ctx.config.get(ENVIRONMENT_KEY, {})))
        try:
            return func(*args, **kwargs)
        except BuildboxError as error:
            raise Exit(f"buildbox: {redact(str(error))}", code=1) from None

    return wrapper


def settings(ctx: Context, buildx_builder: str | None = None) -> settings_stage.Settings:
    """The project's settings (invoke.yaml, INVOKE_BUILDBOX_*); naming a buildx builder
    instance asks for BuildKit."""
    environment = plain(ctx.config.get(ENVIRONMENT_KEY, {}))
    found = settings_stage.from_config(plain(ctx.config.buildbox), environment)
    if buildx_builder:
        found = dataclasses.replace(found, builder="buildkit", buildx_builder=buildx_builder)
    return found


def load(
    ctx: Context, box: str, *, builder: str | None = None, **options: Any
) -> tuple[Project, Box]:
    """The project with only ``box`` read (and what it takes from the library), and that box;
    ``options`` go to ``define.project.load``."""
    from buildbox.define import project as project_stage

    project = project_stage.load(settings(ctx, builder), box=box, **options)
    return project, project.box(box)


def plain(value: Any) -> Any:
    """invoke's configuration proxies as plain dicts, all the way down."""
    if isinstance(value, DataProxy):
        keys = cast("list[str]", list(value))  # DataProxy's own annotation of __iter__ is off
        return {key: plain(value[key]) for key in keys}
    return value


@contextmanager
def engine_and_fetcher(
    found: settings_stage.Settings,
    artifacts: int,
    *,
    escrows: Callable[[], list[str]] | None = None,
    from_escrow: bool = False,
) -> Iterator[tuple[Engine, Fetcher]]:
    """The engine, and a fetcher reporting on stderr, for the commands that build (falling back
    on the ``escrows``, see :func:`fetching`)."""
    from buildbox.build.engine import Engine

    with (
        output.fetch_progress(sys.stderr, artifacts) as progress,
        fetching(found, progress, escrows, from_escrow=from_escrow) as fetcher,
        Engine.connect() as engine,
    ):
        yield engine, fetcher


@contextmanager
def fetching(
    found: settings_stage.Settings,
    progress: output.LogProgress,
    escrows: Callable[[], list[str]] | None,
    *,
    from_escrow: bool = False,
) -> Iterator[Fetcher]:
    """A fetcher reporting to ``progress`` that takes what upstream no longer serves from the
    inputs manifests ``escrows`` names (when it is first needed), or with ``from_escrow``
    everything not cached; the registry clients it opened are closed after."""
    from buildbox.fetch import Escrow, Fetcher

    escrow = Escrow(found, escrows) if escrows is not None else None
    try:
        yield Fetcher(found, progress, escrow=escrow, from_escrow=from_escrow, warn=progress.warned)
    finally:
        if escrow is not None:
            escrow.close()


def recorded_escrows(
    found: settings_stage.Settings, rebuilt: Iterable[tuple[str, str]]
) -> Callable[[], list[str]]:
    """The escrows of the recorded releases, from the record when first asked for: those of the
    ``rebuilt`` (box, version) pairs first, then the same boxes' other releases, then every
    other release (newest first each)."""
    first = set(rebuilt)
    boxes = {box for box, _ in first}

    def references() -> list[str]:
        from buildbox.release import record

        newest_first = list(reversed(record.load(found)))
        ranked = sorted(
            newest_first,
            key=lambda r: 0 if (r.box, r.version) in first else 1 if r.box in boxes else 2,
        )
        return [r.escrow for r in ranked if r.escrow]

    return references


def release_version(project: Project, box: Box) -> Released:
    """The box's current version released (`invoke release`, `invoke main`): downloads reported
    on stderr, publishing on stdout."""
    from buildbox.release.release import release_box
    from buildbox.source import revision

    shown = output.upload_progress(sys.stdout)
    artifacts = len(box.components) * len(box.platforms)
    escrows = recorded_escrows(project.settings, [(box.name, box.version)])
    with engine_and_fetcher(project.settings, artifacts, escrows=escrows) as (engine, fetcher):
        return release_box(
            project, box, engine=engine, fetcher=fetcher,
            revision=revision(project.settings.root), log=shown.line, progress=shown,
        )  # fmt: skip


def print_checks(results: Iterable[tuple[bool, str]]) -> int:
    """``PASS  <what>`` or ``FAIL  <what>``, a line each; how many failed."""
    failed = 0
    for ok, what in results:
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
        failed += not ok
    return failed


def print_report(report: Report) -> int:
    """A verify report (``verify.Report``) as its checks, and its information as ``INFO``
    lines; how many checks failed."""
    failed = 0
    for check in report.checks:
        if check.info:
            print(f"INFO  {check.name}: {check.detail}")
        else:
            failed += print_checks([(check.ok, f"{check.name}: {check.detail}")])
    return failed
