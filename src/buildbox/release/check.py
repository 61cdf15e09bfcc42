"""`invoke check`: every box and the library, and the release record's version-bump rule."""

from __future__ import annotations

from buildbox.compat import check_box
from buildbox.define import project as project_stage
from buildbox.define.project import Project
from buildbox.errors import BuildboxError, Problem
from buildbox.fetch import Fetcher, wanted_for
from buildbox.release import record
from buildbox.settings import Settings


def check_project(settings: Settings) -> tuple[Project, list[Problem]]:
    """Every problem of every box and of the library, and every released version whose inputs
    changed without a version bump."""
    project, problems = project_stage.check(settings)
    found = {*problems, *record.unbumped_versions(project)}
    return project, sorted(found, key=project_stage.reading_order)


def binary_problems(project: Project, fetcher: Fetcher) -> list[Problem]:
    """`invoke check --deep`: fetch every box's artifacts (verified) and check that each box's
    base can run them on each of its platforms (buildbox.compat). An artifact that cannot be
    fetched is a problem of its own; the others are still checked."""
    wanted = wanted_for(project.boxes, project.library, packages=False)
    settings = project.settings
    problems: list[Problem] = []
    try:
        fetched = fetcher.fetch_all(wanted)
    except BuildboxError:  # some are unreachable: take them one by one, to check the rest
        fetched = []
        for each in wanted:
            try:
                fetched += fetcher.fetch_all([each])
            except BuildboxError as error:
                reason = str(error).splitlines()[-1].strip()  # names the artifact and URL
                where = settings.shown(settings.components_file)
                problems.append(Problem(where, None, "", f"not checked: {reason}"))
    artifacts = {f.wanted.sha256: f.path for f in fetched}
    return problems + [
        Problem(settings.shown(box.directory / "box.yaml"), None, "", line)
        for box in project.boxes
        for platform in box.platforms
        for line in check_box(box, project.library, platform, artifacts, settings.cache_dir)
    ]
