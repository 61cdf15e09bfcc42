"""The verify stage: a built image's labels match the box, it runs, every tool reports its pinned
version, and its dpkg database matches the box's package lock; the :class:`Report` is the value
the describe stage (the SBOM) takes.

All probes run in one container (no network, not privileged, removed afterwards): one shell script
prints a marker, runs the probe, and prints its exit status, for each component in turn. For a box
with a package lock, verify reads the image's dpkg status database, and the same script first
prints what ``dpkg --verify`` finds and which packages own the files it names
(:func:`package_checks` compares them with the lock).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from debian import deb822

from buildbox.build.build import Built
from buildbox.build.engine import Engine
from buildbox.build.labels import LABEL_BOX, LABEL_INPUTS, LABEL_VERSION
from buildbox.define.boxes import Box
from buildbox.define.inputs import box_components
from buildbox.define.library import Probe
from buildbox.define.lock import LockedPackage
from buildbox.define.project import Project
from buildbox.errors import BuildboxError

_PROBE = "@@buildbox-probe"
_EXIT = "@@buildbox-exit"
_VERIFIED = "@@buildbox-dpkg-verify"
_OWNERS = "@@buildbox-dpkg-owners"
_PACKAGES_END = "@@buildbox-dpkg-end"
#: Where dpkg keeps what it installed.
DPKG_STATUS = "/var/lib/dpkg/status"
#: A line of ``dpkg --verify`` (its rpm format, the only one): nine check characters
#: (``missing  `` when the file is gone), ``c`` for a conffile, the path.
_VERIFY_LINE = re.compile(r"^(missing  |[?.][?.M][?.5][?.]{6}) ([c ]) (/.*)$")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    #: Information for the reader (packages beyond the lock, a comparison skipped), not a check
    #: that passed: printed as INFO and not counted.
    info: bool = False


@dataclass(frozen=True)
class ProbeResult:
    component: str
    command: str
    expect: str
    output: str
    exit_code: int | None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.expect in self.output


@dataclass(frozen=True)
class Report:
    image: str
    platform: str
    checks: tuple[Check, ...]
    probes: tuple[ProbeResult, ...]
    #: The image's dpkg status database as verify read it (None: not read), for the SBOM.
    dpkg_status: str | None = None

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


class Probed(Protocol):
    """What has a probe: a component, or a box's own probe (``define.boxes.BoxProbe``)."""

    @property
    def name(self) -> str: ...
    @property
    def probe(self) -> Probe: ...


def probe_script(components: Sequence[Probed], first: str = "") -> str:
    """One POSIX shell script that runs every probe and marks where each output starts and ends
    (after ``first``, e.g. :func:`package_script`, when given)."""
    lines = ["exec 2>&1", *first.splitlines()]
    for component in components:
        lines.append(f"echo '{_PROBE} {component.name}'")
        lines.append(f"{shlex.join(component.probe.command)} </dev/null")
        # The status is kept first: the newline keeps the marker on a line of its own when the
        # tool's output does not end in one.
        lines.append(f'status=$?; echo; echo "{_EXIT} $status"')
    return "\n".join(lines) + "\n"


def parse_probes(output: str, components: Sequence[Probed]) -> tuple[ProbeResult, ...]:
    """Split the script's output into one result per component (missing ones never ran)."""
    sections: dict[str, tuple[list[str], int | None]] = {}
    current: str | None = None
    for line in output.splitlines():
        if line.startswith(_PROBE + " "):
            current = line[len(_PROBE) + 1 :].strip()
            sections[current] = ([], None)
        elif line.startswith(_EXIT + " ") and current is not None:
            status = line[len(_EXIT) + 1 :].strip()
            sections[current] = (sections[current][0], int(status) if status.isdigit() else None)
            current = None
        elif current is not None:
            sections[current][0].append(line)
    results = []
    for component in components:
        lines, code = sections.get(component.name, ([], None))
        results.append(
            ProbeResult(
                component.name,
                shlex.join(component.probe.command),
                component.probe.expect,
                "\n".join(lines).strip(),
                code,
            )
        )
    return tuple(results)


def verify(
    engine: Engine, project: Project, box: Box, built: Built, timeout: float = 300
) -> Report:
    """Check the labels, run all probes in one container, and report every check."""
    labels, platform = built.image.labels, built.platform
    checks = [
        _label(labels, LABEL_BOX, box.name),
        _label(labels, LABEL_VERSION, box.version),
    ]
    if platform in box.platforms:
        checks.append(_label(labels, LABEL_INPUTS, built.inputs_digest))
    else:
        checks.append(Check("platform", False, f"{platform} is not one of the box's platforms"))
    components: tuple[Probed, ...] = (
        *box_components(box, project.library, platform),
        *box.resolved_probes(platform),
    )
    # The status database is read from the image as the SBOM reads it (not through the
    # container's log, which a daemon may cap); dpkg --verify runs before the probes, so that
    # nothing a probe does can change what it finds.
    compare = box.lock is not None
    status_text = engine.read_files(built.image.id, [DPKG_STATUS])[DPKG_STATUS] if compare else None
    script = probe_script(components, package_script() if status_text is not None else "")
    try:
        output, status = engine.run_script(built.image.id, script, timeout, "verify")
        problem = _run_problem(output, status, timeout)
    except BuildboxError as error:  # e.g. the image has no /bin/sh
        output, problem = "", str(error)
    checks.append(Check("image runs", problem is None, problem or "one container ran every probe"))
    probes = parse_probes(output, components) if problem is None else ()
    for probe in probes:
        checks.append(Check(f"probe {probe.component}", probe.ok, describe_probe(probe)))
    if not compare:
        checks.append(Check("packages", True, _NO_LOCK, info=True))
    elif status_text is None:
        detail = f"the image has no {DPKG_STATUS} to compare with packages.lock"
        checks.append(Check("packages", False, detail))
    elif problem is not None:
        checks.append(Check("packages", False, "not compared with packages.lock: " + problem))
    else:
        database = parse_package_output(status_text, output)
        checks += package_checks(box.locked(platform), platform, database)
    return Report(built.tags[0], platform, tuple(checks), probes, status_text)


_NO_LOCK = (
    "skipped: the box has no packages.lock, so there is nothing to compare its package database "
    "with (rpm and apk bases: not until they have locks)"
)


def package_script() -> str:
    """Shell lines that print ``dpkg --verify``'s findings and exit status, and the owners
    (``dpkg-query -S``) of the files it found changed."""
    return "\n".join(
        [
            "verified=$(dpkg --verify 2>&1)",
            f'echo "{_VERIFIED} $?"',
            "printf '%s\\n' \"$verified\"",
            f"echo '{_OWNERS}'",
            # One dpkg-query for every changed file (not the missing ones: a slimmed image has
            # thousands), as arguments: a path is never read by the shell.
            "set --",
            "while IFS= read -r line; do",
            "case $line in",
            "'missing  '*) ;;",
            "?????????' '?' /'*) set -- \"$@\" \"${line#????????????}\" ;;",
            "esac",
            "done <<EOF",
            "$verified",
            "EOF",
            '[ "$#" -eq 0 ] || dpkg-query -S "$@" 2>/dev/null',
            f"echo '{_PACKAGES_END}'",
        ]
    )


@dataclass(frozen=True, order=True)
class DebPackage:
    """A package as dpkg's status database records it."""

    name: str
    version: str
    architecture: str
    #: dpkg's state of it: ``installed``, or ``unpacked``, ``half-configured``, ``config-files``...
    state: str

    @property
    def installed(self) -> bool:
        return self.state == "installed"


def dpkg_packages(status: str) -> tuple[DebPackage, ...]:
    """Every package a dpkg status database has a stanza for, in its order."""
    return tuple(
        DebPackage(
            str(stanza["Package"]),
            str(stanza.get("Version", "")),
            str(stanza.get("Architecture", "")),
            str(stanza.get("Status", "")).rpartition(" ")[2],
        )
        for stanza in deb822.Deb822.iter_paragraphs(status, use_apt_pkg=False)
        if "Package" in stanza
    )


@dataclass(frozen=True)
class PackageDatabase:
    """The image's dpkg database, as verify read it."""

    #: The status database's text (read from the image).
    status: str
    #: ``dpkg --verify``'s output (stdout and stderr) and exit status.
    verified: str
    verify_status: int | None
    #: ``dpkg-query -S`` of each changed file: ``pkg[, pkg...]: /path`` lines.
    owners: str


def parse_package_output(status: str, output: str) -> PackageDatabase:
    """The database with ``status`` and the :func:`package_script` part of the container's
    ``output`` (no exit status when that part is not there)."""
    start = output.find(_VERIFIED + " ")
    if start < 0 or output.find(_PACKAGES_END, start) < 0:
        return PackageDatabase(status, "", None, "")
    code, _, rest = output[start + len(_VERIFIED) + 1 :].partition("\n")
    verified, _, rest = rest.partition(_OWNERS + "\n")
    owners = rest.partition(_PACKAGES_END)[0]
    code = code.strip()
    return PackageDatabase(status, verified, int(code) if code.isdigit() else None, owners)


@dataclass(frozen=True)
class FileFinding:
    """One line of ``dpkg --verify``: a file that is gone or is not as its package installed it."""

    path: str
    conffile: bool
    #: ``missing``, ``content`` (its md5sum differs), ``type`` (no longer a regular file) or
    #: ``unreadable``.
    what: str


def parse_dpkg_verify(output: str) -> tuple[tuple[FileFinding, ...], tuple[str, ...]]:
    """The files ``dpkg --verify`` reported, and the lines it printed that are not findings
    (dpkg's own warnings or errors)."""
    findings, other = [], []
    for line in output.splitlines():
        found = _VERIFY_LINE.match(line)
        if found is None:
            if line.strip():
                other.append(line.strip())
            continue
        checks, attribute, path = found.groups()
        if checks.startswith("missing"):
            what = "missing"
        elif checks[1] == "M":
            what = "type"
        elif checks[2] == "5":
            what = "content"
        else:
            what = "unreadable"  # dpkg could not compute its md5sum
        findings.append(FileFinding(path, attribute == "c", what))
    return tuple(findings), tuple(other)


def parse_owners(output: str) -> dict[str, tuple[str, ...]]:
    """``dpkg-query -S`` lines as path -> owning package names (their ``:arch`` dropped);
    diversion lines name no owner."""
    owners: dict[str, tuple[str, ...]] = {}
    for line in output.splitlines():
        packages, sep, path = line.partition(": ")
        if sep and path.startswith("/") and not packages.startswith("diversion by "):
            names = tuple(name.strip().partition(":")[0] for name in packages.split(","))
            owners[path] = owners.get(path, ()) + names
    return owners


def package_checks(
    locked: Sequence[LockedPackage], platform: str, database: PackageDatabase
) -> list[Check]:
    """The image's dpkg database against the lock: a failure naming each locked package that is
    missing, at another version or for another architecture, and each package whose files are
    not as dpkg installed them; what is only information (packages beyond the lock, edited
    conffiles, absent files) as passing checks that say so."""
    if not locked:
        detail = f"packages.lock has no {platform} entry to compare the image with"
        return [Check("packages", False, f"{detail}; run `invoke lock`")]
    packages = dpkg_packages(database.status)
    by_name: dict[str, list[DebPackage]] = {}
    for package in packages:
        by_name.setdefault(package.name, []).append(package)
    checks = [
        Check(f"package {want.name}", False, problem)
        for want in sorted(locked)
        if (problem := _lock_problem(want, by_name.get(want.name, [])))
    ]
    if not checks:
        detail = f"{len(locked)} of {len(locked)} locked packages installed"
        checks.append(Check("packages", True, f"{detail}, at their versions and architectures"))
    beyond = sorted({p.name for p in packages if p.installed} - {want.name for want in locked})
    if beyond:
        detail = f"{len(beyond)}, the base's (or installed without the lock)"
        checks.append(
            Check("packages not in the lock", True, _information(detail, beyond), info=True)
        )
    return checks + _file_checks(database)


def _lock_problem(want: LockedPackage, stanzas: list[DebPackage]) -> str | None:
    locked = f"locked {want.version} ({want.architecture})"
    found = [p for p in stanzas if p.state != "not-installed"]
    if not found:
        return f"{locked}; the image does not have it (the Dockerfile never installed it?)"
    same_arch = [p for p in found if p.architecture == want.architecture]
    if not same_arch:
        others = ", ".join(f"{p.version} ({p.architecture})" for p in found)
        return f"{locked}; the image has it for another architecture: {others}"
    package = same_arch[0]
    if package.version != want.version:
        return f"{locked}; the image has {package.version}"
    if not package.installed:
        return f"{locked}; dpkg has it {package.state}, not installed"
    return None


_WHAT = {"content": "content differs", "type": "not a regular file", "unreadable": "unreadable"}


def _file_checks(database: PackageDatabase) -> list[Check]:
    """``dpkg --verify``'s findings: a changed file fails, naming its package; an edited conffile
    (configuration is the Dockerfile's to change) and an absent file (dpkg's path-exclude, or
    documentation an installer deleted: dpkg --verify cannot tell them apart) are information."""
    findings, complaints = parse_dpkg_verify(database.verified)
    owners = parse_owners(database.owners)
    checks = []
    if database.verify_status is None:
        checks.append(Check("dpkg --verify", False, "did not run to the end"))
    elif database.verify_status != 0 or complaints:
        said = "; ".join(complaints[:3]) or "nothing else"
        checks.append(
            Check("dpkg --verify", False, f"exited {database.verify_status} and said: {said}")
        )
    changed: dict[str, list[str]] = {}
    edited = []
    for finding in findings:
        if finding.what == "missing":
            continue
        names = owners.get(finding.path, ("(no package owns it)",))
        if finding.conffile:
            edited.append(f"{finding.path} ({', '.join(names)})")
            continue
        for name in names:
            changed.setdefault(name, []).append(f"{finding.path} ({_WHAT[finding.what]})")
    for name, files in sorted(changed.items()):
        detail = f"files differ from what dpkg installed: {', '.join(files)}"
        checks.append(Check(f"package {name}", False, detail))
    if not checks:
        detail = "dpkg --verify: every file is as its package installed it (conffiles aside)"
        checks.append(Check("package files", True, detail))
    if edited:
        detail = f"{len(edited)}, changed after install"
        checks.append(Check("edited conffiles", True, _information(detail, edited), info=True))
    if missing := [f.path for f in findings if f.what == "missing"]:
        detail = f"{len(missing)} installed by packages (path-exclude, or deleted)"
        checks.append(Check("absent files", True, _information(detail, missing, 5), info=True))
    return checks


def _information(summary: str, items: Sequence[str], most: int | None = None) -> str:
    shown = ", ".join(items[:most]) + (", ..." if most is not None and len(items) > most else "")
    return f"{summary}: {shown}"


def describe_probe(probe: ProbeResult) -> str:
    """What a probe did, as verify prints it."""
    if probe.ok:
        return f"`{probe.command}` printed {probe.expect!r}"
    if probe.exit_code is None:
        return f"`{probe.command}` did not run to the end"
    shown = probe.output.splitlines()[0] if probe.output else "nothing"
    return (
        f"`{probe.command}` exited {probe.exit_code} and printed {shown!r}; "
        f"expected {probe.expect!r} (the version pinned in shared/components.yaml)"
    )


def require_passed(report: Report, consequence: str) -> Report:
    """``report`` when every check passed; otherwise an error listing the ones that failed."""
    failed = [f"{check.name}: {check.detail}" for check in report.checks if not check.ok]
    if failed:
        raise BuildboxError(
            f"{report.image} does not pass verify, so {consequence}:\n  " + "\n  ".join(failed)
        )
    return report


def _label(labels: Mapping[str, str], key: str, expected: str) -> Check:
    found = labels.get(key)
    if found == expected:
        return Check(f"label {key}", True, expected)
    return Check(f"label {key}", False, f"expected {expected!r}, image has {found!r}")


def _run_problem(output: str, status: int | None, timeout: float) -> str | None:
    """Why the probe script did not run through, or None when it did."""
    if status is None:
        return f"the probes did not finish within {timeout:g} s"
    if status != 0:
        return f"the probe script exited {status}: {output[-500:]}"
    return None
