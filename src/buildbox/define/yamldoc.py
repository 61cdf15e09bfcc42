"""Read YAML inputs and check them against a JSON Schema, with file and line in every problem."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedBase, CommentedMap, CommentedSeq

from buildbox import lazy_jsonschema, yamlsafe
from buildbox.errors import Problem

FieldPath = tuple[str | int, ...]

_TYPE_NAMES = {
    "string": "a string",
    "integer": "a whole number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
}


def load(path: Path, shown_as: str, problems: list[Problem]) -> Any:
    """The parsed document (bounded: ``yamlsafe``), or None after recording why it could not
    be read."""
    try:
        document = yamlsafe.read(path, shown_as)
    except FileNotFoundError:
        problems.append(Problem(shown_as, None, "", "file not found"))
        return None
    except OSError as error:
        problems.append(Problem(shown_as, None, "", f"cannot be read: {error}"))
        return None
    except yamlsafe.YamlError as error:
        problems.append(Problem(shown_as, error.line, "", error.reason))
        return None
    # An empty file is an empty mapping: the schema then names each missing field.
    return CommentedMap() if document is None else document


def line_of(document: Any, path: FieldPath) -> int | None:
    """The 1-based line where ``path`` is written (its key), or of the nearest enclosing node."""
    line: int | None = None
    node = document
    if isinstance(node, CommentedBase) and node.lc.line is not None:  # None: an empty document
        line = node.lc.line + 1
    for step in path:
        if isinstance(node, CommentedMap) and step in node:
            line = node.lc.key(step)[0] + 1
            node = node[step]
        elif isinstance(node, CommentedSeq) and isinstance(step, int) and step < len(node):
            line = node.lc.item(step)[0] + 1
            node = node[step]
        else:
            break
    return line


def field_name(path: FieldPath) -> str:
    """``('components', 'go', 'artifacts', 'linux/amd64', 'sha256')`` as a dotted field name."""
    return ".".join(str(step) if isinstance(step, str) else f"[{step}]" for step in path).replace(
        ".[", "["
    )


@cache
def _schema(name: str) -> dict[str, Any]:
    text = resources.files("buildbox.schemas").joinpath(f"{name}.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate(document: Any, schema_name: str, shown_as: str) -> list[tuple[FieldPath, Problem]]:
    """Every schema violation in ``document``, as (path of the offending field, problem)."""
    validator = _validator_class()(_schema(schema_name))
    found = []
    for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.path))):
        for path, message in _explain(error):
            found.append(
                (path, Problem(shown_as, line_of(document, path), field_name(path), message))
            )
    return found


@cache
def _validator_class() -> Any:
    """Draft 2020-12, but a float is never a whole number: YAML reads an unquoted 2.0 as a
    float, which JSON Schema would take for the integer 2 (and 2.50 as 2.5)."""
    jsonschema = lazy_jsonschema.load()
    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    )
    return jsonschema.validators.extend(base, type_checker=checker)


def _explain(error: Any) -> Iterator[tuple[FieldPath, str]]:
    """Turn a jsonschema error into field paths and messages a person can act on."""
    path: FieldPath = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "required":
        present = error.instance if isinstance(error.instance, dict) else {}
        for name in error.validator_value:
            if name not in present:
                yield (*path, name), "missing; this field is required"
    elif error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        for name in _extra_keys(error.instance, schema):
            expected = f"; expected one of: {', '.join(allowed)}" if allowed else ""
            yield (*path, name), f"unknown field{expected}"
    elif error.validator == "type":
        wanted = error.validator_value
        names = [wanted] if isinstance(wanted, str) else list(wanted)
        expected = " or ".join(_TYPE_NAMES.get(n, n) for n in names)
        hint = ' (write it in quotes, e.g. "1.24")' if isinstance(error.instance, float) else ""
        yield path, f"expected {expected}, got {_show(error.instance)}{hint}"
    elif "x-expected" in schema:
        if "propertyNames" in error.schema_path:  # a key, not a value, is wrong: point at the key
            path = (*path, str(error.instance))
        yield path, f"expected {schema['x-expected']}, got {_show(error.instance)}"
    else:
        yield path, error.message


def _extra_keys(instance: Any, schema: dict[str, Any]) -> Sequence[str]:
    if not isinstance(instance, dict):
        return []
    known = set(schema.get("properties", {}))
    return [key for key in instance if key not in known]


def _show(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"the number {value}"
    return repr(str(value)) if isinstance(value, str) else str(value)
