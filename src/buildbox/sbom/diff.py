"""Comparing two CycloneDX SBOMs: components added, removed, or with a new version or sha256."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from packageurl import PackageURL

from buildbox.build.emulation import host_platform
from buildbox.errors import BuildboxError
from buildbox.sbom.paths import COMMITTED_DIR, version_filename


def paths(
    root: Path, before: str, after: str, box: str | None, platform: str | None
) -> tuple[Path, Path]:
    """The two files to compare: as given, or with ``box`` the committed SBOMs of two versions
    for ``platform`` (default: this machine's)."""
    if not box:
        return Path(before), Path(after)
    chosen = platform or host_platform()
    directory = root / COMMITTED_DIR / box
    return directory / version_filename(before, chosen), directory / version_filename(after, chosen)


@dataclass(frozen=True)
class Change:
    kind: str  # added, removed, version, hash
    name: str
    purl_type: str
    old: str
    new: str


def load(path: Path) -> dict[str, Any]:
    """The SBOM at ``path``, its components of the shape ``diff`` reads; anything else (JSON
    that is not a CycloneDX SBOM) is one error naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BuildboxError(f"no SBOM at {path}") from None
    except (OSError, ValueError, RecursionError) as error:
        raise BuildboxError(f"{path} is not a readable JSON SBOM: {error}") from None
    wrong = _not_an_sbom(data)
    if wrong:
        raise BuildboxError(
            f"{path} is not a CycloneDX SBOM: {wrong}; compare the .cdx.json files `invoke sbom` "
            "or `invoke release` wrote"
        )
    return cast(dict[str, Any], data)


def _not_an_sbom(data: Any) -> str | None:
    """What in ``data`` is not the CycloneDX ``diff`` compares (None: nothing)."""
    if not isinstance(data, dict):
        return f"the JSON is {_kind(data)}, not an object"
    if data.get("bomFormat") != "CycloneDX":
        return 'no "bomFormat": "CycloneDX"'
    components = data.get("components", [])  # CycloneDX lets an SBOM list none
    if not isinstance(components, list):
        return f"components is {_kind(components)}, not a list"
    for index, component in enumerate(components):
        where = f"components[{index}]"
        if not isinstance(component, dict):
            return f"{where} is {_kind(component)}, not an object"
        if "name" not in component:
            return f"{where}.name is missing"
        for field in ("type", "name", "version", "purl"):
            if field in component and not isinstance(component[field], str):
                return f"{where}.{field} is {_kind(component[field])}, not text"
        if component.get("purl"):
            try:
                PackageURL.from_string(component["purl"])
            except ValueError as error:
                return f"{where}.purl {component['purl']!r} is not a package URL ({error})"
        hashes = component.get("hashes", [])
        if not isinstance(hashes, list):
            return f"{where}.hashes is {_kind(hashes)}, not a list"
        for number, entry in enumerate(hashes):
            if not isinstance(entry, dict):
                return f"{where}.hashes[{number}] is {_kind(entry)}, not an object"
            if not isinstance(entry.get("content", ""), str):
                return f"{where}.hashes[{number}].content is {_kind(entry['content'])}, not text"
    return None


def _kind(value: Any) -> str:
    kinds = {dict: "a mapping", list: "a list", str: "a string", bool: "true or false"}
    return "null" if value is None else kinds.get(type(value), "a number")


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Components added, removed, or whose version or sha256 changed, between two SBOMs."""
    before, after = _index(old), _index(new)
    changes = []
    for key in sorted(before.keys() | after.keys()):
        a, b = before.get(key), after.get(key)
        if a is None and b is not None:
            changes.append(Change("added", key[1], key[0], "", b["version"]))
        elif b is None and a is not None:
            changes.append(Change("removed", key[1], key[0], a["version"], ""))
        elif a is not None and b is not None:
            if a["version"] != b["version"]:
                changes.append(Change("version", key[1], key[0], a["version"], b["version"]))
            elif a["sha256"] != b["sha256"]:
                changes.append(Change("hash", key[1], key[0], a["sha256"], b["sha256"]))
    return changes


def _index(bom: dict[str, Any]) -> dict[tuple[str, str], dict[str, str]]:
    """Components by identity: (purl type, name with namespace and arch), version left out."""
    index = {}
    for component in bom.get("components", []):
        purl = component.get("purl")
        parsed = PackageURL.from_string(purl) if purl else None
        kind = parsed.type if parsed else component.get("type", "")
        name = component.get("name", "")
        if parsed and parsed.namespace:
            name = f"{parsed.namespace}/{name}"
        if parsed and isinstance(parsed.qualifiers, dict) and parsed.qualifiers.get("arch"):
            name = f"{name} ({parsed.qualifiers['arch']})"
        hashes = [h.get("content", "") for h in component.get("hashes", [])]
        index[(kind, name)] = {
            "version": str(component.get("version", "")),
            "sha256": hashes[0] if hashes else "",
        }
    return index
