"""Verify a built image: labels match the box, it runs, every tool reports its pinned version.

All probes run in one container (no network, not privileged, removed afterwards): one shell script
prints a marker, runs the probe, and prints its exit status, for each component in turn.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

import docker.errors
import requests

from buildbox.boxes import Box
from buildbox.build import LABEL_BOX, LABEL_INPUTS, LABEL_PLATFORM, LABEL_VERSION
from buildbox.errors import BuildboxError
from buildbox.inputs import box_components, inputs_digest
from buildbox.library import Component
from buildbox.project import Project

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


def probe_script(components: tuple[Component, ...]) -> str:
    """One POSIX shell script that runs every probe and marks where each output starts and ends."""
    lines = ["exec 2>&1"]
    for component in components:
        lines.append(f"echo '{_PROBE} {component.name}'")
        lines.append(f"{shlex.join(component.probe.command)} </dev/null")
        lines.append(f'echo "{_EXIT} $?"')
    return "\n".join(lines) + "\n"


def parse_probes(output: str, components: tuple[Component, ...]) -> tuple[ProbeResult, ...]:
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


def verify_image(
    client: Any, project: Project, box: Box, image_ref: str, timeout: float = 300
) -> Report:
    """Check the labels, run all probes in one container, and report every check."""
    try:
        image = client.images.get(image_ref)
    except docker.errors.ImageNotFound:
        raise BuildboxError(
            f"no local image {image_ref}; build it first: invoke build --box={box.name}"
        ) from None
    labels = image.labels or {}
    platform = labels.get(LABEL_PLATFORM) or "{Os}/{Architecture}".format(**image.attrs)
    checks = [
        _label(labels, LABEL_BOX, box.name),
        _label(labels, LABEL_VERSION, box.version),
    ]
    if platform in box.platforms:
        digest = inputs_digest(box, project.library, project.settings, platform)
        checks.append(_label(labels, LABEL_INPUTS, digest))
    else:
        checks.append(Check("platform", False, f"{platform} is not one of the box's platforms"))
    components = box_components(box, project.library)
    output, problem = _run(client, image.id, probe_script(components), timeout)
    checks.append(Check("image runs", problem is None, problem or "one container ran every probe"))
    probes = parse_probes(output, components) if problem is None else ()
    for probe in probes:
        if probe.ok:
            detail = f"`{probe.command}` printed {probe.expect!r}"
        elif probe.exit_code is None:
            detail = f"`{probe.command}` did not run to the end"
        else:
            shown = probe.output.splitlines()[0] if probe.output else "nothing"
            detail = (
                f"`{probe.command}` exited {probe.exit_code} and printed {shown!r}; "
                f"expected {probe.expect!r} (the version pinned in shared/components.yaml)"
            )
        checks.append(Check(f"probe {probe.component}", probe.ok, detail))
    return Report(image_ref, platform, tuple(checks), probes)


def require_verified(
    client: Any, project: Project, box: Box, image_ref: str, consequence: str
) -> Report:
    """The verify report of an image that passes every check; otherwise an error listing them."""
    report = verify_image(client, project, box, image_ref)
    failed = [f"{check.name}: {check.detail}" for check in report.checks if not check.ok]
    if failed:
        raise BuildboxError(
            f"{image_ref} does not pass verify, so {consequence}:\n  " + "\n  ".join(failed)
        )
    return report


def _label(labels: dict[str, str], key: str, expected: str) -> Check:
    found = labels.get(key)
    if found == expected:
        return Check(f"label {key}", True, expected)
    return Check(f"label {key}", False, f"expected {expected!r}, image has {found!r}")


def _run(client: Any, image_id: str, script: str, timeout: float) -> tuple[str, str | None]:
    """Run ``script`` with /bin/sh in one throw-away container: (output, problem or None)."""
    container = None
    try:
        container = client.containers.create(
            image_id,
            entrypoint=["/bin/sh", "-c"],
            command=[script],
            network_mode="none",
            privileged=False,
            security_opt=["no-new-privileges"],
            labels={"dev.buildbox.verify": "true"},
        )
        container.start()
        status = container.wait(timeout=timeout)
        output = container.logs(stdout=True, stderr=True).decode(errors="replace")
    except requests.exceptions.RequestException:  # the wait timed out
        return "", f"the probes did not finish within {timeout:g} s"
    except docker.errors.APIError as error:
        return "", f"the container did not run: {error.explanation or error}"
    finally:
        if container is not None:
            container.remove(force=True)
    if status.get("StatusCode") != 0:
        return output, f"the probe script exited {status.get('StatusCode')}: {output[-500:]}"
    return output, None
