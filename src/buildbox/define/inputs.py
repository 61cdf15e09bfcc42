"""The inputs digest: one sha256 over everything that decides what a box's image contains.

Same inputs, same digest, on any machine: the digest is taken over a canonical JSON document of
file contents and pins, never over paths, times or the order files happen to be listed in.
What only names or describes the image (the box's version and description, download URLs, probes)
is left out: a mirror or a new version number does not change what is inside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from buildbox.define.boxes import Box
from buildbox.define.library import SOURCE_KIND, Component, Library
from buildbox.digests import canonical_json, digest_of, sha256_hex
from buildbox.settings import Settings

#: Bump when the meaning of the digest changes, so that old and new digests never compare equal.
SCHEMA = "buildbox-inputs/1"
#: The shared script every box's Dockerfile runs; it calls one script per kind of artifact.
INSTALL_ENTRYPOINT = "install.sh"
#: The shared script that installs a box's locked OS packages (network off, sha256 checked).
PACKAGES_SCRIPT = "packages.sh"


def box_components(
    box: Box, library: Library, platform: str | None = None
) -> tuple[Component, ...]:
    """The library's entries for the box's components (those installed on ``platform``, when
    given), in the box's order."""
    components = []
    for name in box.components:
        if platform is not None and not box.installs(name, platform):
            continue
        component = library.get(name)
        if component is None:
            raise KeyError(f"{box.name}: component {name!r} is not in the library")
        components.append(component)
    return tuple(components)


def install_scripts(box: Box, library: Library, settings: Settings) -> tuple[Path, ...]:
    """The shared install scripts the box uses: the entry point and one per kind of artifact."""
    kinds = {c.install.kind for c in box_components(box, library)}
    if SOURCE_KIND in kinds:
        kinds.add("tarball")  # source.sh unpacks (and checks) the source with it
    names = [INSTALL_ENTRYPOINT, *(f"{kind}.sh" for kind in sorted(kinds))]
    if box.installs_packages:
        names.append(PACKAGES_SCRIPT)
    return tuple(settings.install_scripts_dir / name for name in names)


def build_recipes(box: Box, library: Library, settings: Settings) -> tuple[Path, ...]:
    """The build recipes of the box's components that are built from source."""
    return tuple(
        settings.build_recipes_dir / f"{c.name}.sh"
        for c in box_components(box, library)
        if c.built_from_source
    )


def inputs_manifest(
    box: Box, library: Library, settings: Settings, platform: str | None = None
) -> dict[str, Any]:
    """The canonical description the digest is taken over (all platforms, or just ``platform``)."""
    platforms = [platform] if platform else list(box.platforms)
    manifest: dict[str, Any] = {
        "schema": SCHEMA,
        "box": box.name,
        "base": box.base,
        "network": box.network,
        "platforms": platforms,
        "files": {
            path.relative_to(box.directory).as_posix(): _file_entry(path) for path in box.files()
        },
        "scripts": {
            path.name: _file_entry(path) for path in install_scripts(box, library, settings)
        },
        "components": [
            {
                "name": c.name,
                "version": c.version,
                "install": {
                    "kind": c.install.kind,
                    "dest": c.install.dest,
                    "strip_components": c.install.strip_components,
                },
                "artifacts": {
                    p: {"file": a.filename, "sha256": a.sha256}
                    for p in platforms
                    if box.installs(c.name, p) and (a := c.artifact(p)) is not None
                },
            }
            for c in box_components(box, library)
        ],
    }
    recipes = build_recipes(box, library, settings)
    if recipes:  # only then: other boxes' digests stay as they were
        manifest["recipes"] = {path.name: _file_entry(path) for path in recipes}
    if box.bootstrap is not None:
        manifest["bootstrap"] = {
            "suite": box.bootstrap.suite, "variant": box.bootstrap.variant,
            "mirror": box.bootstrap.mirror,
        }  # fmt: skip
    if box.lock is not None or box.packages:  # only then: other boxes' digests stay as they were
        manifest["packages"] = _packages(box, platforms)
    return manifest


def _packages(box: Box, platforms: list[str]) -> dict[str, Any]:
    """What box.yaml asks for and what the lock pins, per platform (name, version, arch, sha256)."""
    return {
        "requested": sorted(box.packages),
        "locked": {
            p: [[x.name, x.version, x.architecture, x.sha256] for x in box.locked(p)]
            for p in platforms
        },
    }


def inputs_digest(
    box: Box, library: Library, settings: Settings, platform: str | None = None
) -> str:
    """``sha256:<hex>`` of the box's inputs (all platforms, or just ``platform``)."""
    return digest_of(canonical_json(inputs_manifest(box, library, settings, platform)))


def _file_entry(path: Path) -> dict[str, Any]:
    return {
        "sha256": sha256_hex(path.read_bytes()),
        "executable": bool(path.stat().st_mode & 0o111),
    }
