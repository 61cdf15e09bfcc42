"""The project: the component library and the boxes, loaded and checked together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from buildbox.define.boxes import Box, box_directories, declared_components, load_box
from buildbox.define.inputs import box_components, inputs_digest
from buildbox.define.library import Library, load_library
from buildbox.errors import BuildboxError, InvalidInputsError, Problem
from buildbox.settings import Settings


@dataclass(frozen=True)
class Project:
    settings: Settings
    library: Library
    #: Every box, or only the one a command was asked about.
    boxes: tuple[Box, ...]

    def box(self, name: str) -> Box:
        for box in self.boxes:
            if box.name == name:
                return box
        raise _no_such_box(self.settings, name)

    def select(self, name: str | None) -> tuple[Box, ...]:
        """The box called ``name``, or every box when no name is given."""
        return (self.box(name),) if name else self.boxes


def _no_such_box(settings: Settings, name: str) -> BuildboxError:
    known = ", ".join(d.name for d in box_directories(settings)) or "none"
    return BuildboxError(
        f"no box named {name!r} in {settings.shown(settings.boxes_dir)}/ (boxes: {known})"
    )


def check(
    settings: Settings,
    box: str | None = None,
    allow_floating_base: bool = False,
    check_lock: bool = True,
) -> tuple[Project, list[Problem]]:
    """Load the library and every box (or just ``box``), collecting every problem.

    With ``box``, only what that box needs counts: other boxes are not read, and problems in
    library components it does not use are left out (``invoke check`` reports them).
    """
    problems: list[Problem] = []
    library = load_library(settings, problems)
    directories = box_directories(settings)
    if box is not None:
        directories = [d for d in directories if d.name == box]
        if not directories:
            raise _no_such_box(settings, box)
    elif not directories:
        problems.append(
            Problem(
                settings.shown(settings.boxes_dir),
                None,
                "",
                "no boxes; each box is a directory with box.yaml and a Dockerfile",
            )
        )
    boxes = [
        load_box(directory, settings, library, problems, allow_floating_base, check_lock)
        for directory in directories
    ]
    if box is not None:
        used = {name for directory in directories for name in declared_components(directory)}
        problems = [p for p in problems if not p.component or p.component in used]
    project = Project(settings, library, tuple(b for b in boxes if b is not None))
    return project, sorted(set(problems), key=reading_order)


def load(
    settings: Settings,
    box: str | None = None,
    allow_floating_base: bool = False,
    check_lock: bool = True,
) -> Project:
    """The project (every box, or just ``box``), or :class:`InvalidInputsError` listing every
    problem that concerns it (a package lock's only with ``check_lock``)."""
    project, problems = check(settings, box, allow_floating_base, check_lock)
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
            {
                "name": c.name,
                "version": c.version,
                "platforms": [p for p in box.platforms if box.installs(c.name, p)],
            }
            for c in box_components(box, project.library)
        ],
    }


def reading_order(problem: Problem) -> tuple[str, int, str, str]:
    return (problem.file, problem.line or 0, problem.field, problem.message)
