"""Import jsonschema without paying ``rfc3987_syntax``'s grammar build at import time.

``import jsonschema`` imports ``jsonschema._format``, which (with the ``format-nongpl`` extra that
cyclonedx-python-lib's json-validation pulls in) runs ``from rfc3987_syntax import
is_valid_syntax``; that module builds a Lark Earley parser when it is imported (about 1.5 s on a
2-core x86_64 VM, Debian 12, Python 3.11), on every command that validates anything. Only the test
extra installs it (for the reference validator of tests/test_sbom_validation.py), but that is the
setup the README gives and the one tox tests in: there, without this module, ``invoke check`` took
2.8 s instead of 0.9 s (benchmarks/startup.py, medians of 5, the same VM). Where rfc3987_syntax is
absent, this only imports jsonschema. While jsonschema is imported, a stand-in module takes its
place; the stand-in imports the real one the first time an IRI is checked, so jsonschema's own
format checkers behave exactly as before, only later. buildbox's own schemas use no IRI formats,
and its CycloneDX validation has its own IRI check (``sbom.validation``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

_REAL = "rfc3987_syntax"


def load() -> types.ModuleType:
    """The ``jsonschema`` module, imported now if it was not yet (see the module's docstring)."""
    if "jsonschema" in sys.modules or _REAL in sys.modules:
        return importlib.import_module("jsonschema")
    if importlib.util.find_spec(_REAL) is None:
        return importlib.import_module("jsonschema")
    stand_in = types.ModuleType(_REAL)

    def is_valid_syntax(term: str, value: str) -> bool:
        if sys.modules.get(_REAL) is stand_in:
            del sys.modules[_REAL]
        return bool(importlib.import_module(_REAL).is_valid_syntax(term, value))

    stand_in.__dict__["is_valid_syntax"] = is_valid_syntax
    sys.modules[_REAL] = stand_in
    try:
        return importlib.import_module("jsonschema")
    finally:
        if sys.modules.get(_REAL) is stand_in:
            del sys.modules[_REAL]
