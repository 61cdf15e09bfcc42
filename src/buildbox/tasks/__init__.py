"""The invoke tasks, grouped by what users do: define (check, list, lock, bump), build (fetch,
build, verify), release (sbom, sbom-diff, publish, release, ref, escrow, audit, verify-release,
reproduce, matrix) and ops (doctor, registry, main). Each parses its arguments, calls the library
and prints; no logic lives here.

Stages are imported inside the tasks that use them, so that ``invoke --list`` and light commands
do not pay for docker-py, requests or the CycloneDX library.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

from invoke.collection import Collection
from invoke.config import Config
from invoke.exceptions import Exit
from invoke.tasks import Task

from buildbox import settings as settings_stage
from buildbox.errors import BuildboxError
from buildbox.http import redact
from buildbox.tasks import build, define, ops, release
from buildbox.tasks._common import ENVIRONMENT_KEY

__all__ = ["namespace"]


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


class _Redacted(logging.Filter):
    """Keeps URL userinfo (a mirror's ``user:password@``) out of invoke's debug log (``invoke
    -d``), which shows every configuration file and value as it merges them."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


_REDACTED = _Redacted()


def namespace(root: Path) -> Collection:
    """The task collection for a project whose files (buildboxes/, shared/) are under ``root``.

    Each call has its own Task objects: nothing invoke does with one collection changes another.
    The project's invoke.yaml and the INVOKE_BUILDBOX_* variables are checked here, before invoke
    merges (and, with -d, logs) them: a bad one is one line and exit 1, whatever the command.
    """
    logging.getLogger("invoke").addFilter(_REDACTED)  # the same filter once, however many calls
    environment = settings_stage.take_environment()
    try:
        if found := settings_stage.project_file(root):
            settings_stage.check_project_file(found, sections=Config.global_defaults())
        settings_stage.check_environment(environment)
    except BuildboxError as error:
        settings_stage.restore_environment(environment)
        raise Exit(f"buildbox: {redact(str(error))}", code=1) from None
    tasks = (
        define.list_boxes, define.check, build.fetch, define.bump, build.build, build.verify,
        release.sbom, release.sbom_diff, release.publish, release.release, release.ref,
        release.escrow, release.audit, release.verify_release, release.matrix, release.reproduce,
        ops.doctor, define.lock, ops.main, ops.registry,
    )  # fmt: skip
    ns = Collection(*(_own_copy(t) for t in tasks))
    ns.configure(
        {
            "buildbox": {**settings_stage.DEFAULTS, "root": str(root)},
            ENVIRONMENT_KEY: environment,
        }
    )
    return ns
