"""The whole project: the component library and every box, loaded and checked together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from buildbox import record, yamldoc
from buildbox.boxes import BOX_FILE, Box, box_directories, load_box
from buildbox.errors import BuildboxError, InvalidInputsError, Problem
from buildbox.inputs import box_components, inputs_digest
from buildbox.library import Library, load_library
from buildbox.settings import Settings


@dataclass(frozen=True)
class Project:
    settings: Settings
    library: Library
    boxes: tuple[Box, ...]

    def box(self, name: str) -> Box:
        for box in self.boxes:
            if box.name == name:
                return box
        known = ", ".join(b.name for b in self.boxes) or "none"
        raise BuildboxError(
            f"no box named {name!r} in {self.settings.shown(self.settings.boxes_dir)}/ "
            f"(boxes: {known})"
        )

    def select(self, name: str | None) -> tuple[Box, ...]:
        """The box called ``name``, or every box when no name is given."""
        return (self.box(name),) if name else self.boxes


def check(settings: Settings, allow_floating_base: bool = False) -> tuple[Project, list[Problem]]:
    """Load everything, collecting every problem rather than stopping at the first."""
    problems: list[Problem] = []
    library = load_library(settings, problems)
    directories = box_directories(settings)
    if not directories:
        problems.append(
            Problem(
                settings.shown(settings.boxes_dir),
                None,
                "",
                "no boxes; each box is a directory with box.yaml and a Dockerfile",
            )
        )
    boxes = [
        load_box(directory, settings, library, problems, allow_floating_base)
        for directory in directories
    ]
    project = Project(settings, library, tuple(b for b in boxes if b is not None))
    problems += _unbumped_versions(project)
    return project, sorted(set(problems), key=_reading_order)


def _unbumped_versions(project: Project) -> list[Problem]:
    """The version-bump rule: a released version's inputs never change."""
    try:
        releases = record.load(project.settings.root)
    except BuildboxError as error:
        return [Problem(record.RECORD_FILE, None, "", str(error))]
    found = []
    for box in project.boxes:
        released = record.find(releases, box.name, box.version)
        if released is None:
            continue
        digest = inputs_digest(box, project.library, project.settings)
        if digest != released.inputs_digest:
            box_file = box.directory / BOX_FILE
            shown = project.settings.shown(box_file)
            line = yamldoc.line_of(yamldoc.load(box_file, shown, []), ("version",))
            found.append(
                Problem(
                    shown,
                    line,
                    "version",
                    f"{box.release_tag} was released with other inputs ({released.inputs_digest}; "
                    f"now {digest}); set `version: {record.next_version(releases, box.name)}`",
                )
            )
    return found


def load(settings: Settings, allow_floating_base: bool = False) -> Project:
    """The project, or :class:`InvalidInputsError` listing every problem."""
    project, problems = check(settings, allow_floating_base)
    if problems:
        raise InvalidInputsError(problems)
    return project


def describe(project: Project, box: Box) -> dict[str, Any]:
    """What ``invoke list`` shows of a box, as plain data."""
    return {
        "box": box.name,
        "version": box.version,
        "description": box.description,
        "base": box.base,
        "platforms": list(box.platforms),
        "network": box.network,
        "inputs_digest": inputs_digest(box, project.library, project.settings),
        "components": [
            {"name": c.name, "version": c.version} for c in box_components(box, project.library)
        ],
    }


def _reading_order(problem: Problem) -> tuple[str, int, str, str]:
    return (problem.file, problem.line or 0, problem.field, problem.message)
