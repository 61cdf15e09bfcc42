"""User-facing failures.

Everything a user can act on is a :class:`BuildboxError`; the tasks turn it into a message and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass


class BuildboxError(Exception):
    """A failure with a message that says what is wrong, where, and what to do."""


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with the inputs: where it is, which field, and what is expected."""

    file: str
    line: int | None
    field: str
    message: str
    #: The library component the problem is in, if any: a box not using it is not affected.
    component: str = dataclasses.field(default="", compare=False)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class InvalidInputsError(BuildboxError):
    """The box definitions or the component library have problems; all of them are listed."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        count = len(self.problems)
        super().__init__(
            f"{count} problem{'s' if count != 1 else ''} in the box definitions:\n{lines}\n"
            "Fix them and run `invoke check` again."
        )
