"""Comparing two CycloneDX SBOMs: components added, removed, or with a new version or sha256."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BuildboxError(f"no SBOM at {path}") from None
    except (OSError, ValueError) as error:
        raise BuildboxError(f"{path} is not a readable JSON SBOM: {error}") from None
    return data


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
