"""`invoke check`: every box and the library, and the release record's version-bump rule."""

from __future__ import annotations

from buildbox.define import project as project_stage
from buildbox.define.project import Project
from buildbox.errors import Problem
from buildbox.release import record
from buildbox.settings import Settings


def check_project(settings: Settings) -> tuple[Project, list[Problem]]:
    """Every problem of every box and of the library, and every released version whose inputs
    changed without a version bump."""
    project, problems = project_stage.check(settings)
    found = {*problems, *record.unbumped_versions(project)}
    return project, sorted(found, key=project_stage.reading_order)
