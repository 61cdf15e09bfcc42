"""Throw-away buildbox projects for tests: a real layout under a temporary directory."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invoke.program import Program
from ruamel.yaml import YAML

import buildbox
from buildbox.settings import Settings

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

#: A well-formed sha256 for unit tests that never download anything.
SHA_A = "a" * 64
SHA_B = "b" * 64
BASE = "127.0.0.1:5000/base@sha256:" + "c" * 64

DOCKERFILE = """\
ARG BUILDBOX_BASE
FROM ${BUILDBOX_BASE} AS components
COPY .buildbox/ /buildbox/
RUN BUILDBOX_ROOT=/staging sh /buildbox/install.sh

FROM ${BUILDBOX_BASE}
COPY --from=components /staging/ /
"""


def component(
    version: str = "1.0", url: str = "https://example.org/tool-1.0.tar.gz", sha256: str = SHA_A
) -> dict[str, Any]:
    return {
        "version": version,
        "license": "MIT",
        "install": {"kind": "tarball", "dest": "/opt/tool", "strip_components": 1},
        "probe": {"command": ["/opt/tool/bin/tool", "--version"], "expect": f"tool {version}"},
        "artifacts": {
            "linux/amd64": {"url": url, "sha256": sha256, "sha256_source": "test data"},
        },
    }


def write_yaml(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as stream:
        YAML(typ="safe", pure=True).dump(data, stream)


def settle(config: Path, **settings: object) -> None:
    """Set buildbox settings in the invoke.yaml ``config`` (its last section is ``buildbox:``):
    a setting already there is replaced, for invoke.yaml may not name a key twice."""
    lines = config.read_text().splitlines()
    for key, value in settings.items():
        line = f"  {key}: {value}"
        at = [n for n, written in enumerate(lines) if written.startswith(f"  {key}:")]
        if at:
            lines[at[0]] = line
        else:
            lines.append(line)
    config.write_text("\n".join(lines) + "\n")


def make_project(
    root: Path,
    components: dict[str, Any] | None = None,
    boxes: dict[str, dict[str, Any]] | None = None,
    dockerfile: str = DOCKERFILE,
) -> Path:
    """A valid project (one box ``demo`` with one component ``tool``) unless told otherwise."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "tasks.py", root / "tasks.py")
    shutil.copy(REPO / "invoke.yaml", root / "invoke.yaml")
    shutil.copytree(REPO / "shared" / "install", root / "shared" / "install")
    shutil.copytree(REPO / "shared" / "keyrings", root / "shared" / "keyrings")  # the lock's
    write_yaml(
        root / "shared" / "components.yaml",
        {"components": components if components is not None else {"tool": component()}},
    )
    if boxes is None:
        boxes = {
            "demo": {
                "version": 1,
                "base": BASE,
                "platforms": ["linux/amd64"],
                "components": ["tool"],
            }
        }
    for name, box in boxes.items():
        write_yaml(root / "buildboxes" / name / "box.yaml", box)
        (root / "buildboxes" / name / "Dockerfile").write_text(dockerfile)
    return root


def settings_for(root: Path) -> Settings:
    return Settings(
        root=root.resolve(),
        registry="127.0.0.1:5000/buildbox",
        cache_dir=root / ".cache",
        platforms=("linux/amd64", "linux/arm64"),
    )


def run_invoke(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``invoke <args>`` in the project at ``root``, in a new process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(root), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=root,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(root: Path, *args: str) -> CliResult:
    """``invoke <args>`` through invoke's own Program in this process (no interpreter start-up).

    The same code path as the command line: invoke loads the project's tasks.py and config.
    """
    stdout, stderr = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            Program(version=buildbox.__version__).run(["invoke", "--search-root", str(root), *args])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return CliResult(code, stdout.getvalue(), stderr.getvalue())


def check_fails_with(root: Path, pattern: str) -> tuple[CliResult, list[str]]:
    """`invoke check` in ``root``: exit 1, no traceback, and the lines of its report that match
    ``pattern`` (a regular expression), at least one."""
    result = run_cli(root, "check")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if re.search(pattern, line)]
    assert lines, f"no line matches {pattern!r}:\n{result.stdout}"
    return result, lines


# Mutations: each changes one thing in a project made by make_project.

Mutation = Callable[[Path], None]


def edit(path: str, old: str, new: str) -> Mutation:
    def mutate(root: Path) -> None:
        file = root / path
        text = file.read_text()
        assert old in text, f"{old!r} not in {path}"
        file.write_text(text.replace(old, new, 1))

    return mutate


def write(path: str, text: str) -> Mutation:
    def mutate(root: Path) -> None:
        (root / path).write_text(text)

    return mutate


def box_field(**fields: object) -> Mutation:
    def mutate(root: Path) -> None:
        box = {"version": 1, "base": BASE, "platforms": ["linux/amd64"], "components": ["tool"]}
        box.update(fields)
        write_yaml(root / "buildboxes/demo/box.yaml", {k: v for k, v in box.items() if v != "-"})

    return mutate


def library(**tool_changes: object) -> Mutation:
    def mutate(root: Path) -> None:
        tool = component()
        for key, value in tool_changes.items():
            if value == "-":
                del tool[key]
            else:
                tool[key] = value
        write_yaml(root / "shared/components.yaml", {"components": {"tool": tool}})

    return mutate


def artifact(**changes: str) -> Mutation:
    entry = {"url": "https://example.org/tool-1.0.tar.gz", "sha256": SHA_A, "sha256_source": "x"}
    return library(artifacts={"linux/amd64": {**entry, **changes}})
