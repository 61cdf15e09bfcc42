"""Binary compatibility: can the box's base run what its artifacts hold? Checked before a build.

Like auditwheel for wheels: every ELF executable and shared library inside an artifact is read
(with pyelftools) for its machine and the highest symbol version it needs from each library
(``GLIBC_2.28``, ``GLIBCXX_3.4.21``, ...). That is compared with the platform and with what the
box declares its base provides (box.yaml ``provides``). A scan depends only on the artifact's
bytes, so its result is kept in the cache under the artifact's sha256.
"""

from __future__ import annotations

import io
import json
import stat
import tarfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection

from buildbox.define.boxes import Box
from buildbox.define.inputs import box_components
from buildbox.define.library import Library
from buildbox.errors import BuildboxError
from buildbox.files import write_atomically

_ELF_MAGIC = b"\x7fELF"
#: The ELF machine of each platform (e_machine as pyelftools names it).
MACHINES = {
    "linux/amd64": "EM_X86_64",
    "linux/arm64": "EM_AARCH64",
    "linux/arm/v7": "EM_ARM",
    "linux/arm/v6": "EM_ARM",
    "linux/386": "EM_386",
    "linux/ppc64le": "EM_PPC64",
    "linux/s390x": "EM_S390",
    "linux/riscv64": "EM_RISCV",
}
#: The symbol-version families a box can declare in ``provides`` (glibc; libstdc++; libgcc_s).
FAMILIES = ("GLIBC", "GLIBCXX", "CXXABI", "GCC")
#: Lines shown per component before the rest are counted.
_SHOWN = 5
#: Bumped when the cached scan's format changes.
_SCAN_FORMAT = 1


@dataclass(frozen=True)
class ElfFile:
    """One ELF executable or shared library inside an artifact."""

    path: str
    machine: str
    #: The highest version needed of each symbol-version family, e.g. (("GLIBC", "2.28"),).
    needs: tuple[tuple[str, str], ...]


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def read_elf(path: str, data: bytes) -> ElfFile | None:
    """``data`` as an executable or shared library, or None when it is neither (or not ELF)."""
    if not data.startswith(_ELF_MAGIC):
        return None
    try:
        elf = ELFFile(io.BytesIO(data))
        if elf["e_type"] not in ("ET_EXEC", "ET_DYN"):
            return None  # object files and core dumps are not run
        highest: dict[str, str] = {}
        for section in elf.iter_sections():
            if not isinstance(section, GNUVerNeedSection):
                continue
            for _, auxiliaries in section.iter_versions():
                for auxiliary in auxiliaries:
                    family, _, version = str(auxiliary.name).partition("_")
                    if not version[:1].isdigit():
                        continue  # GLIBC_PRIVATE and the like carry no version to compare
                    if family not in highest or version_key(version) > version_key(highest[family]):
                        highest[family] = version
        return ElfFile(path, str(elf["e_machine"]), tuple(sorted(highest.items())))
    except (ELFError, ValueError, KeyError, IndexError) as error:
        raise BuildboxError(f"{path} looks like an ELF file but cannot be read: {error}") from None


def _members(artifact: Path) -> Iterator[tuple[str, bytes]]:
    """The files inside ``artifact`` that are run or loaded: executables and shared libraries.

    The format is told by the content, not the install kind: a file that is itself ELF, a zip,
    or a tarball (any compression). Files neither executable nor named like a library are skipped,
    so test data shipped in an archive (Go ships ELF files of other architectures) is not read.
    """
    with artifact.open("rb") as stream:
        head = stream.read(4)
    if head == _ELF_MAGIC:
        yield artifact.name, artifact.read_bytes()
    elif zipfile.is_zipfile(artifact):
        with zipfile.ZipFile(artifact) as archive:
            for info in archive.infolist():
                mode = info.external_attr >> 16
                if not info.is_dir() and _runnable(info.filename, mode):
                    with archive.open(info) as member:
                        if member.read(4) == _ELF_MAGIC:
                            yield info.filename, _ELF_MAGIC + member.read()
    elif tarfile.is_tarfile(artifact):
        with tarfile.open(artifact, "r|*") as archive:
            for entry in archive:
                if entry.isfile() and _runnable(entry.name, entry.mode):
                    content = archive.extractfile(entry)
                    if content is not None and content.read(4) == _ELF_MAGIC:
                        yield entry.name, _ELF_MAGIC + content.read()


def _runnable(name: str, mode: int) -> bool:
    base = name.rsplit("/", 1)[-1]
    return bool(mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)) or ".so" in base


def scan(artifact: Path) -> tuple[ElfFile, ...]:
    """Every executable and shared library in ``artifact``, in archive order."""
    try:
        found = [read_elf(name, data) for name, data in _members(artifact)]
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as error:
        raise BuildboxError(f"cannot read the archive: {error}") from None
    return tuple(elf for elf in found if elf is not None)


def cached_scan(artifact: Path, sha256: str, cache_dir: Path) -> tuple[ElfFile, ...]:
    """:func:`scan`, kept under the artifact's sha256 (the artifact has been verified)."""
    path = cache_dir / "elf" / f"{sha256}.json"
    try:
        document = json.loads(path.read_text())
        if document.get("format") == _SCAN_FORMAT:
            return tuple(
                ElfFile(f["path"], f["machine"], tuple((n, v) for n, v in f["needs"]))
                for f in document["files"]
            )
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not scanned yet, or an unreadable entry: scan again
    files = scan(artifact)
    document = {"format": _SCAN_FORMAT, "files": [asdict(f) for f in files]}
    write_atomically(path, json.dumps(document))
    return files


def incompatibilities(box: Box, platform: str, files: tuple[ElfFile, ...]) -> list[tuple[str, str]]:
    """(file, what is wrong) for each file the box's base cannot run on ``platform``."""
    provided = dict(box.provides)
    machine = MACHINES.get(platform)
    found = []
    for elf in files:
        if machine is not None and elf.machine != machine:
            found.append((elf.path, f"is built for {elf.machine}, not {platform} ({machine})"))
            continue
        for family, version in elf.needs:
            has = provided.get(family)
            if has is not None and version_key(version) > version_key(has):
                where = f"buildboxes/{box.name}/box.yaml: provides.{family}"
                problem = f"needs {family}_{version}, but the base has {family} {has} ({where})"
                found.append((elf.path, problem))
    return found


def check_box(
    box: Box, library: Library, platform: str, artifacts: Mapping[str, Path], cache_dir: Path
) -> list[str]:
    """One line per file of the box's components that the base cannot run on ``platform``.

    ``artifacts`` maps each fetched (verified) artifact's sha256 to its path.
    """
    lines: list[str] = []
    for component in box_components(box, library, platform):
        artifact = component.artifact(platform)
        if artifact is None or artifact.sha256 not in artifacts:
            continue
        what = f"{component.name} {component.version} ({platform})"
        try:
            files = cached_scan(artifacts[artifact.sha256], artifact.sha256, cache_dir)
        except BuildboxError as error:
            raise BuildboxError(f"{what}, {artifact.filename}: {error}") from None
        wrong = incompatibilities(box, platform, files)
        lines.extend(f"{what}: {path} {problem}" for path, problem in wrong[:_SHOWN])
        if len(wrong) > _SHOWN:
            lines.append(f"{what}: and {len(wrong) - _SHOWN} more file(s) like these")
    return lines


def require_compatible(
    box: Box, library: Library, platform: str, artifacts: Mapping[str, Path], cache_dir: Path
) -> None:
    """Raise, naming every file the base cannot run, before anything is sent to the engine."""
    lines = check_box(box, library, platform, artifacts, cache_dir)
    if lines:
        shown = "\n".join(f"  {line}" for line in lines)
        raise BuildboxError(
            f"box {box.name} cannot run what it pins on {platform}:\n{shown}\n"
            "Pin a build of each such component for this platform that is linked against the "
            "libraries the base has (or a base that provides what it needs)."
        )
