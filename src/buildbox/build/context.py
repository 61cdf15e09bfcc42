"""The build context of one box for one platform: only what the build may use.

Layout of the context (a tar stream sent to the engine):

    Dockerfile, <the box's other files>
    .buildbox/install.sh, .buildbox/<kind>.sh        shared install scripts the box uses
    .buildbox/build/<component>.sh                  build recipes of components built from source
    .buildbox/components.tsv                        one line per component (see install.sh)
    .buildbox/artifacts/<component>/<file>          the verified artifacts
    .buildbox/packages.sh, packages.tsv, packages/  the locked OS packages (boxes that have them)

Entries are written in sorted order with fixed owners and times, so the same inputs give the same
tar bytes.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from buildbox.define.boxes import Box
from buildbox.define.inputs import box_components, build_recipes, install_scripts
from buildbox.define.library import Library, filename_problem
from buildbox.errors import BuildboxError
from buildbox.settings import Settings

CONTEXT_DIR = ".buildbox"


@dataclass(frozen=True)
class Entry:
    """One file of the context: its name there, and either a file on disk or literal bytes."""

    name: str
    source: Path | None = None
    data: bytes | None = None
    executable: bool = False


@dataclass(frozen=True)
class BuildContext:
    box: Box
    platform: str
    entries: tuple[Entry, ...]


def assemble(
    box: Box,
    library: Library,
    settings: Settings,
    platform: str,
    artifacts: dict[str, Path],
) -> BuildContext:
    """The context for ``platform``; ``artifacts`` maps each pinned sha256 to its cached file."""
    entries = [
        Entry(path.relative_to(box.directory).as_posix(), source=path, executable=_is_exec(path))
        for path in box.files()
    ]
    entries += [
        Entry(f"{CONTEXT_DIR}/{script.name}", source=script, executable=True)
        for script in install_scripts(box, library, settings)
    ]
    entries += [
        Entry(f"{CONTEXT_DIR}/build/{recipe.name}", source=recipe, executable=True)
        for recipe in build_recipes(box, library, settings)
    ]
    rows = []
    for component in box_components(box, library, platform):
        artifact = component.artifact(platform)
        if artifact is None:
            raise BuildboxError(f"{component.name} has no artifact for {platform}")
        cached = artifacts.get(artifact.sha256)
        if cached is None:
            raise BuildboxError(f"{component.name} ({platform}) has not been fetched")
        # `invoke check` refuses these; checked again here, where they become paths and lines.
        if problem := filename_problem(artifact.filename):
            raise BuildboxError(
                f"{settings.shown(settings.components_file)}: components.{component.name}"
                f".artifacts.{platform}.url: {problem}"
            )
        name = f"artifacts/{component.name}/{artifact.filename}"
        entries.append(Entry(f"{CONTEXT_DIR}/{name}", source=cached))
        install = component.install
        columns = [
            component.name,
            component.version,
            install.kind,
            artifact.sha256,
            name,
            install.dest,
            str(install.strip_components),
        ]
        if unsafe := [f for f in columns if not f.isprintable() or not f or " " in f]:
            raise BuildboxError(
                f"{component.name}: {unsafe[0]!r} cannot be a field of components.tsv (empty, "
                "or a space, tab, newline or control character in it); run `invoke check`"
            )
        rows.append("\t".join(columns))
    manifest = "".join(f"{row}\n" for row in rows).encode()
    entries.append(Entry(f"{CONTEXT_DIR}/components.tsv", data=manifest))
    packages = []
    for package in box.locked(platform) if box.installs_packages else ():
        cached = artifacts.get(package.sha256)
        if cached is None:
            raise BuildboxError(f"package {package.name} ({platform}) has not been fetched")
        entries.append(Entry(f"{CONTEXT_DIR}/packages/{package.filename}", source=cached))
        fields = (package.name, package.version, package.architecture, package.sha256)
        packages.append("\t".join([*fields, package.filename]))
    if box.installs_packages:
        listing = "".join(f"{row}\n" for row in packages).encode()
        entries.append(Entry(f"{CONTEXT_DIR}/packages.tsv", data=listing))
    return BuildContext(box, platform, tuple(sorted(entries, key=lambda e: e.name)))


def write_tar(context: BuildContext, stream: IO[bytes]) -> None:
    """The context as an uncompressed tar: sorted names, owner root, time 0."""
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in context.entries:
            info = tarfile.TarInfo(entry.name)
            info.mode = 0o755 if entry.executable else 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if entry.data is not None:
                info.size = len(entry.data)
                archive.addfile(info, io.BytesIO(entry.data))
            else:
                assert entry.source is not None
                info.size = entry.source.stat().st_size
                with entry.source.open("rb") as content:
                    archive.addfile(info, content)


def _is_exec(path: Path) -> bool:
    return bool(path.stat().st_mode & 0o111)
