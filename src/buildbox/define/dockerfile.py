"""Static rules for a box's Dockerfile: it installs verified artifacts and downloads nothing."""

from __future__ import annotations

import io
import json
import re
import shlex
from pathlib import Path

from dockerfile_parse import DockerfileParser

from buildbox.errors import Problem
from buildbox.oci.refs import is_pinned

#: The build argument through which the toolkit passes the box's pinned base image.
BASE_ARG = "BUILDBOX_BASE"
_BASE_FORMS = {f"${BASE_ARG}", f"${{{BASE_ARG}}}"}

_URL = re.compile(r"^([a-z][a-z0-9+.-]*://|git@)", re.IGNORECASE)

# Commands that fetch something from the network that is not an OS package. Components come from
# the library, fetched and verified by the toolkit, never from the Dockerfile.
_DOWNLOADERS = re.compile(
    r"(?<![\w.-])("
    r"curl|wget|aria2c|rsync|scp|ftp|"
    r"git\s+(clone|fetch|pull|submodule)|"
    r"(go|cargo|npm|pnpm|yarn|gem)\s+(install|get|add)|"
    r"pip3?\s+(install|download)|python3?\s+-m\s+pip\s+install|"
    r"rustup\s+(install|update|toolchain|target|component)"
    r")\b"
)
# OS package managers are allowed, but they need the network: box.yaml must say so.
_PACKAGE_MANAGERS = re.compile(
    r"(?<![\w.-])(yum|dnf|microdnf|apt-get|apt|apk|zypper)\s+(-\S+\s+)*(install|update|upgrade)\b"
)


def check_dockerfile(path: Path, shown: str, *, network: bool) -> list[Problem]:
    """Every rule the Dockerfile breaks, each naming its line."""
    try:
        content = path.read_bytes()
    except OSError as error:
        return [Problem(shown, None, "", f"cannot be read: {error}")]
    instructions = DockerfileParser(fileobj=io.BytesIO(content), env_replace=False).structure

    problems: list[Problem] = []
    stages: list[str] = []
    uses_base = False
    for instruction in instructions:
        line = instruction["startline"] + 1
        kind = instruction["instruction"]
        value = instruction["value"]

        def problem(message: str, line: int = line, kind: str = kind) -> None:
            problems.append(Problem(shown, line, kind, message))

        if kind == "FROM":
            image, stage = _from_parts(value)
            if image in _BASE_FORMS:
                uses_base = True
            elif not (image == "scratch" or image in stages or is_pinned(image)):
                problem(
                    f"{image!r} is not pinned; use FROM ${{{BASE_ARG}}} (the base in box.yaml) "
                    "or an image pinned by digest (name@sha256:...)"
                )
            stages.append(stage or str(len(stages)))
        elif kind == "RUN":
            if match := _DOWNLOADERS.search(value):
                problem(
                    f"downloads with {match.group(1)!r}; a box takes every download from "
                    "shared/components.yaml, fetched and verified by the toolkit"
                )
            if not network and (match := _PACKAGE_MANAGERS.search(value)):
                problem(
                    f"{match.group(0)!r} needs the network, but box.yaml does not allow it; "
                    "set `network: true` in box.yaml"
                )
        elif kind == "ADD" and (url := next((s for s in _sources(value) if _URL.match(s)), None)):
            problem(
                f"ADD fetches {url!r}; put the file in shared/components.yaml with its sha256 "
                "and install it from the build context"
            )
        if kind in {"COPY", "ADD"}:
            source = _from_flag(value)
            if source and source not in stages and not is_pinned(source):
                problem(
                    f"--from={source} copies from an image that is not pinned; copy from a "
                    "build stage or an image pinned by digest"
                )
    if not uses_base:
        problems.append(
            Problem(
                shown,
                None,
                "FROM",
                f"no stage is built FROM ${{{BASE_ARG}}}; the toolkit passes the box's pinned "
                f"base image as the build argument {BASE_ARG} (declare `ARG {BASE_ARG}` first)",
            )
        )
    return problems


def _from_parts(value: str) -> tuple[str, str | None]:
    words = [w for w in value.split() if not w.startswith("--")]
    image = words[0] if words else ""
    stage = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
    return image, stage


def _flags_and_args(value: str) -> tuple[list[str], list[str]]:
    if value.lstrip().startswith("["):  # exec form: a JSON list of words
        try:
            words = [str(w) for w in json.loads(value)]
        except ValueError:
            words = value.split()
    else:
        try:
            words = shlex.split(value)
        except ValueError:
            words = value.split()
    flags = [w for w in words if w.startswith("--")]
    return flags, [w for w in words if not w.startswith("--")]


def _sources(value: str) -> list[str]:
    return _flags_and_args(value)[1][:-1]


def _from_flag(value: str) -> str | None:
    flags, _ = _flags_and_args(value)
    return next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
