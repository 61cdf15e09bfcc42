"""YAML text to a document, bounded: what a hand-written (or hostile) file can make us do is
limited before anything validates or walks the document.

ruamel.yaml builds an alias as a shared reference, so nine levels of nine aliases cost nothing
to load, but every walk over the document (schema validation, our own checks) then visits 9**9
values; and it composes nesting recursively, so ``[[[…`` ends in a RecursionError. Here the
file's size, its nesting and the number of values it holds once its aliases are expanded are
bounded while it is composed, and an alias inside the value it names (a cycle) is refused.
Aliases themselves stay allowed: shared/components.yaml uses one for an artifact two platforms
share.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent

from buildbox.errors import BuildboxError

#: The largest file read (the project's largest, shared/components.yaml, is about 14 KiB).
MAX_BYTES = 256 * 1024
#: The deepest nesting of mappings and lists (the project's files nest 5 deep).
MAX_DEPTH = 32
#: The most values (scalars, lists, mappings) a document may hold with its aliases expanded
#: (shared/components.yaml holds about 500).
MAX_VALUES = 50_000


class YamlError(BuildboxError):
    """A YAML file that cannot be read, or is too large, deep or repetitive to be read safely."""

    def __init__(self, shown: str, line: int | None, reason: str) -> None:
        self.line = line
        self.reason = reason
        super().__init__(f"{shown}:{line}: {reason}" if line else f"{shown}: {reason}")


def read(path: Path, shown: str) -> Any:
    """The document in the file at ``path`` (see :func:`parse`); OSError when it cannot be
    opened, YamlError when it is too large, not UTF-8 or not YAML."""
    with path.open("rb") as stream:
        data = stream.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise YamlError(
            shown,
            None,
            f"larger than {MAX_BYTES // 1024} KiB, more than a definition needs; it is refused "
            "unread (split it, or remove what does not belong in it)",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise YamlError(
            shown, line, f"byte {data[error.start]:#04x} is not UTF-8; save the file as UTF-8"
        ) from None
    return parse(text, shown)


def parse(text: str, shown: str) -> Any:
    """The round-trip document of ``text`` (line numbers kept, duplicate keys refused), or
    YamlError naming the line. An empty text is None."""
    if len(text) > MAX_BYTES:
        raise YamlError(shown, None, f"larger than {MAX_BYTES // 1024} KiB; it is refused unread")
    yaml = YAML(typ="rt")
    yaml.Composer = _BoundedComposer
    try:
        return yaml.load(text)
    except _RefusedError as refused:
        raise YamlError(shown, refused.line, refused.reason) from None
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        raise YamlError(shown, mark.line + 1 if mark else None, _explain(error)) from None
    except YAMLError as error:  # e.g. characters YAML does not allow; no position is known
        raise YamlError(shown, None, f"invalid YAML: {str(error).splitlines()[0]}") from None


def _explain(error: MarkedYAMLError) -> str:
    """The parser's complaint, without the values it quotes (a duplicate key's values may be a
    mirror URL with its password), and with the line where an unclosed construct began."""
    if duplicate := re.match(r'found duplicate key "(.*)" with value', error.problem or ""):
        return f'duplicate key "{duplicate.group(1)}"; keep one'
    opened = error.context_mark if error.context and error.problem else None
    where = f" ({error.context} from line {opened.line + 1})" if opened else ""
    return f"invalid YAML: {error.problem or error.context or 'not YAML'}{where}"


class _RefusedError(Exception):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


class _BoundedComposer(Composer):
    """ruamel's composer, counting as it goes: nesting, and values with aliases expanded."""

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader=loader)
        self._depth = 0
        self._values = 0
        #: Each anchored node's size, expanded, by id(); a node still open has none yet.
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, AliasEvent):
            node = self.anchors.get(event.anchor)
            if node is not None:  # an undefined alias: ruamel says so
                size = self._sizes.get(id(node))
                if size is None:
                    raise _RefusedError(
                        line,
                        f"the alias *{event.anchor} is used inside the value it names (a "
                        "cycle); write the value out",
                    )
                self._count(size, line)
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            raise _RefusedError(
                line,
                f"nested more than {MAX_DEPTH} levels deep; a definition needs a few levels "
                "(is a bracket left open?)",
            )
        self._depth += 1
        before = self._values
        self._count(1, line)
        node = super().compose_node(parent, index)
        self._depth -= 1
        if event.anchor is not None:
            self._sizes[id(node)] = self._values - before
        return node

    def _count(self, values: int, line: int) -> None:
        self._values += values
        if self._values > MAX_VALUES:
            raise _RefusedError(
                line,
                f"holds more than {MAX_VALUES} values with its aliases expanded; a definition "
                "holds far fewer (write repeated parts out instead of nesting aliases)",
            )
