"""Full validation of CycloneDX 1.6 JSON, fast enough for SBOMs of thousands of packages.

It validates against the very schema files cyclonedx-python-lib's ``JsonStrictValidator(V1_6)``
uses (bundled in the library: bom-1.6, spdx, jsf-0.82, cryptography-defs), with jsonschema's
Draft 7 rules, and gives the same answers; two parts of that validator are replaced, because they
cost seconds per 1,000 components (``benchmarks/sbom.py``):

- ``uniqueItems`` on ``components`` and ``dependencies``: jsonschema compares unhashable items
  pairwise, O(n^2); here each item is frozen into a hashable canonical form, O(n), with the same
  equality (1 == 1.0, True != 1, key order ignored);
- the format checks (the schemas use four: date-time, idn-email, iri-reference, uri): jsonschema
  checks ``iri-reference`` with rfc3987_syntax's Earley parser, about 36 ms per URL, and imports
  it at a cost of about 1 s. The IRI and URI checks below are regular expressions transcribed from
  the same grammars (RFC 3987 as rfc3987_syntax writes it, RFC 3986 as rfc3986_validator does),
  checked against those libraries on random strings; date-time follows rfc3339_validator.

tests/test_sbom_validation.py checks the whole against ``JsonStrictValidator(V1_6)`` on mutated
SBOMs, and each replaced part against the library it stands for.

The validator is built once per process.
"""

from __future__ import annotations

import calendar
import functools
import importlib.util
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from buildbox import lazy_jsonschema

_SCHEMA_PREFIX = "http://cyclonedx.org/schema/"
_MAX_MESSAGE = 200

# --- formats ---------------------------------------------------------------------------------
# iri / iri-reference: a 1:1 regex transcription of rfc3987_syntax's Lark grammar
# (syntax_rfc3987.lark, which jsonschema uses for "iri-reference" when the GPL
# "rfc3987" package is absent).  The grammar is regular, so the regex accepts
# exactly the same language (checked against rfc3987_syntax in tests/test_sbom_validation.py).
_UCS = "\u00a0-\ud7ff\uf900-\ufdcf\ufdf0-\uffef"
_IPRIVATE = "[\ue000-\uf8ff]"
_IUNRES = "A-Za-z0-9\\-._~" + _UCS
_SUB = "!$&'()*+,;="
_PCT = "%[0-9A-Fa-f]{2}"
_IPCHAR = f"(?:[{_IUNRES}{_SUB}:@]|{_PCT})"
_DEC = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IPV4 = rf"{_DEC}\.{_DEC}\.{_DEC}\.{_DEC}"
_H = "[0-9A-Fa-f]{1,4}"
_LS32 = f"(?:{_H}:{_H}|{_IPV4})"
_IPV6 = (
    "(?:"
    + "|".join(
        [  # the 9 alternatives of the grammar, verbatim
            f"{_H}:{_H}:{_H}:{_H}:{_H}:{_H}:{_LS32}",
            f"::{_H}:{_H}:{_H}:{_H}:{_H}:{_LS32}",
            f"{_H}::{_H}:{_H}:{_H}:{_H}:{_LS32}",
            f"{_H}:{_H}::{_H}:{_H}:{_H}:{_LS32}",
            f"{_H}:{_H}:{_H}::{_H}:{_H}:{_LS32}",
            f"{_H}:{_H}:{_H}:{_H}::{_H}:{_LS32}",
            f"{_H}:{_H}:{_H}:{_H}:{_H}::{_LS32}",
            f"{_H}:{_H}:{_H}:{_H}:{_H}:{_H}::{_H}",
            f"{_H}:{_H}:{_H}:{_H}:{_H}:{_H}:{_H}::",
        ]
    )
    + ")"
)
_IPVFUTURE = rf"v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~{_SUB}:]+"
_IHOST = rf"(?:\[(?:{_IPV6}|{_IPVFUTURE})\]|{_IPV4}|(?:[{_IUNRES}{_SUB}]|{_PCT})*)"
_IAUTH = rf"(?:(?:[{_IUNRES}{_SUB}:]|{_PCT})*@)?{_IHOST}(?::[0-9]*)?"
_ABEMPTY = f"(?:/{_IPCHAR}*)*"
_ABSOLUTE = f"/(?:{_IPCHAR}+{_ABEMPTY})?"
_ROOTLESS = f"{_IPCHAR}+{_ABEMPTY}"
_NOSCHEME = f"(?:[{_IUNRES}{_SUB}@]|{_PCT})+{_ABEMPTY}"
_IQUERY = rf"(?:\?(?:{_IPCHAR}|{_IPRIVATE}|[/?])*)?"
_IFRAG = f"(?:#(?:{_IPCHAR}|[/?])*)?"
_IRI = (
    f"[A-Za-z][A-Za-z0-9+\\-.]*:(?://{_IAUTH}{_ABEMPTY}|{_ABSOLUTE}|{_ROOTLESS}|){_IQUERY}{_IFRAG}"
)
_IREL = f"(?://{_IAUTH}{_ABEMPTY}|{_ABSOLUTE}|{_NOSCHEME}|){_IQUERY}{_IFRAG}"
_IRI_REFERENCE_PATTERN = f"(?:{_IRI}|{_IREL})"

# "uri" (RFC 3986, used by jsf-0.82 only): same structure, ASCII only, no iprivate, and
# the real RFC 3986 IPv6address rule (as in rfc3986_validator, which jsonschema uses).
_UD = "(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)"
_U_LS32 = rf"(?:{_H}:{_H}|{_UD}\.{_UD}\.{_UD}\.{_UD})"
_U_IPV6 = (
    "(?:"
    + "|".join(
        [
            f"(?:{_H}:){{6}}{_U_LS32}",
            f"::(?:{_H}:){{5}}{_U_LS32}",
            f"(?:{_H})?::(?:{_H}:){{4}}{_U_LS32}",
            f"(?:(?:{_H}:){{,1}}{_H})?::(?:{_H}:){{3}}{_U_LS32}",
            f"(?:(?:{_H}:){{,2}}{_H})?::(?:{_H}:){{2}}{_U_LS32}",
            f"(?:(?:{_H}:){{,3}}{_H})?::{_H}:{_U_LS32}",
            f"(?:(?:{_H}:){{,4}}{_H})?::{_U_LS32}",
            f"(?:(?:{_H}:){{,5}}{_H})?::{_H}",
            f"(?:(?:{_H}:){{,6}}{_H})?::",
        ]
    )
    + ")"
)
_U_PCHAR = f"(?:[A-Za-z0-9\\-._~{_SUB}:@]|{_PCT})"
_U_USERINFO = rf"(?:(?:[A-Za-z0-9\-._~{_SUB}:]|{_PCT})*@)?"
_U_HOST = rf"(?:\[(?:{_U_IPV6}|{_IPVFUTURE})\]|{_IPV4}|(?:[A-Za-z0-9\-._~{_SUB}]|{_PCT})*)"
_U_AUTH = rf"{_U_USERINFO}{_U_HOST}(?::[0-9]*)?"
_U_ABEMPTY = f"(?:/{_U_PCHAR}*)*"
# Used with re.match and a final "$", as rfc3986_validator does: a final newline passes.
_URI_PATTERN = (
    f"[A-Za-z][A-Za-z0-9+\\-.]*:"
    f"(?://{_U_AUTH}{_U_ABEMPTY}|/(?:{_U_PCHAR}+{_U_ABEMPTY})?|{_U_PCHAR}+{_U_ABEMPTY}|)"
    f"(?:\\?(?:{_U_PCHAR}|[/?])*)?(?:#(?:{_U_PCHAR}|[/?])*)?$"
)

# date-time: same rules as rfc3339_validator (what jsonschema uses), applied to .upper(); also
# re.match and a final "$", so a final newline passes there too.
_RFC3339_PATTERN = (
    r"(\d{4})-(0[1-9]|1[0-2])-(\d{2})T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d+)?"
    r"(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)$"
)


@functools.cache
def _re(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """Compile lazily (the IRI regex takes ~40 ms to compile) and keep it."""
    return re.compile(pattern, flags)


def _is_date_time(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    m = _re(_RFC3339_PATTERN, re.ASCII).match(instance.upper())
    if m is None:
        return False
    year, month, day = int(m[1]), int(m[2]), int(m[3])
    return year != 0 and 1 <= day <= calendar.monthrange(year, month)[1]


def _is_idn_email(instance: object) -> bool:
    # identical to jsonschema's "email"/"idn-email" checker
    return not isinstance(instance, str) or "@" in instance


def _is_iri_reference(instance: object) -> bool:
    return (
        not isinstance(instance, str) or _re(_IRI_REFERENCE_PATTERN).fullmatch(instance) is not None
    )


def _is_uri(instance: object) -> bool:
    return not isinstance(instance, str) or _re(_URI_PATTERN).match(instance) is not None


_FORMATS: dict[str, Callable[[object], bool]] = {
    "date-time": _is_date_time,
    "idn-email": _is_idn_email,
    "iri-reference": _is_iri_reference,
    "uri": _is_uri,
}

# --- uniqueItems -----------------------------------------------------------------------------
_BOOL_TAG = object()  # cannot appear in JSON data, so tagged bools never collide


def _freeze(value: Any) -> Any:
    """Hashable canonical form with jsonschema's equality semantics
    (1 == 1.0, True != 1, key order irrelevant)."""
    if isinstance(value, dict):
        return frozenset((k, _freeze(v)) for k, v in value.items())
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, bool):
        return (_BOOL_TAG, value)
    return value


def _all_unique(items: list[Any]) -> bool:
    seen: set[Any] = set()
    for item in items:
        key = _freeze(item)
        if key in seen:
            return False
        seen.add(key)
    return True


# --- the validator ---------------------------------------------------------------------------


def _schema_dir() -> Path:
    spec = importlib.util.find_spec("cyclonedx")  # finds the package without importing it
    assert spec is not None  # a dependency of buildbox
    assert spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "schema" / "_res"


def _load(name: str) -> Any:
    return json.loads((_schema_dir() / name).read_text(encoding="utf-8"))


@functools.cache
def _validator() -> Any:
    """A Draft 7 validator equivalent to JsonStrictValidator(V1_6), built once."""
    jsonschema = lazy_jsonschema.load()
    from referencing import Registry
    from referencing.jsonschema import DRAFT7

    def unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if unique and validator.is_type(instance, "array") and not _all_unique(instance):
            yield jsonschema.ValidationError(f"{instance!r} has non-unique elements")

    checker = jsonschema.FormatChecker(formats=())
    for name, check in _FORMATS.items():
        checker.checks(name)(check)
    registry: Any = Registry().with_resources(
        (_SCHEMA_PREFIX + name, DRAFT7.create_resource(_load(name)))
        for name in (
            "spdx.SNAPSHOT.schema.json",
            "jsf-0.82.SNAPSHOT.schema.json",
            "cryptography-defs.SNAPSHOT.schema.json",
        )
    )
    cls = jsonschema.validators.extend(jsonschema.Draft7Validator, {"uniqueItems": unique_items})
    # CycloneDX 1.6 has no separate strict file: the library's strict schema is this one.
    return cls(_load("bom-1.6.SNAPSHOT.schema.json"), registry=registry, format_checker=checker)


def problems(text: str) -> list[str]:
    """Why ``text`` is not valid CycloneDX 1.6 JSON: one ``<json path>: <message>`` each."""
    try:
        data = json.loads(text)
    except ValueError as error:
        return [f"$: not JSON: {error}"]
    validator = _validator()
    if validator.is_valid(data):  # the common case, and it stops at the first error
        return []
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    return [_short(f"{error.json_path}: {error.message}") for error in errors]


def _short(message: str) -> str:
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 3] + "..."
