"""The verify stage: a built image's labels match the box, it runs, every tool reports its pinned
version; the :class:`Report` is the value the describe stage (the SBOM) takes.

All probes run in one container (no network, not privileged, removed afterwards): one shell script
prints a marker, runs the probe, and prints its exit status, for each component in turn.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from buildbox.build.build import Built
from buildbox.build.engine import Engine
from buildbox.build.labels import LABEL_BOX, LABEL_INPUTS, LABEL_VERSION
from buildbox.define.boxes import Box
from buildbox.define.inputs import box_components
from buildbox.define.library import Probe
from buildbox.define.project import Project
from buildbox.errors import BuildboxError

_PROBE = "@@buildbox-probe"
_EXIT = "@@buildbox-exit"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


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

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


class Probed(Protocol):
    """What has a probe: a component, or a box's own probe (``define.boxes.BoxProbe``)."""

    @property
    def name(self) -> str: ...
    @property
    def probe(self) -> Probe: ...


def probe_script(components: Sequence[Probed]) -> str:
    """One POSIX shell script that runs every probe and marks where each output starts and ends."""
    lines = ["exec 2>&1"]
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
    try:
        output, status = engine.run_script(
            built.image.id, probe_script(components), timeout, "verify"
        )
        problem = _run_problem(output, status, timeout)
    except BuildboxError as error:  # e.g. the image has no /bin/sh
        output, problem = "", str(error)
    checks.append(Check("image runs", problem is None, problem or "one container ran every probe"))
    probes = parse_probes(output, components) if problem is None else ()
    for probe in probes:
        checks.append(Check(f"probe {probe.component}", probe.ok, describe_probe(probe)))
    return Report(built.tags[0], platform, tuple(checks), probes)


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
