"""Static rules for a box's Dockerfile: it installs verified artifacts and downloads nothing."""

from __future__ import annotations

import io
import json
import re
import shlex
from pathlib import Path
from typing import IO, Any, cast

from dockerfile_parse import DockerfileParser

from buildbox.errors import Problem
from buildbox.oci.refs import is_pinned

#: The build argument through which the toolkit passes the box's pinned base image.
BASE_ARG = "BUILDBOX_BASE"
_BASE_FORMS = {f"${BASE_ARG}", f"${{{BASE_ARG}}}"}

_URL = re.compile(r"^([a-z][a-z0-9+.-]*://|git@)", re.IGNORECASE)

# Commands that fetch something from the network that is not an OS package (a command name, and
# the subcommands that download; an empty set: any use). Components come from the library,
# fetched and verified by the toolkit, never from the Dockerfile.
_DOWNLOADERS: dict[str, frozenset[str]] = {
    **dict.fromkeys(("curl", "wget", "aria2c", "rsync", "scp", "ftp", "sftp"), frozenset()),
    "git": frozenset({"clone", "fetch", "pull", "submodule"}),
    **dict.fromkeys(
        ("go", "cargo", "npm", "pnpm", "yarn", "gem"), frozenset({"install", "get", "add"})
    ),
    **dict.fromkeys(("pip", "pip3"), frozenset({"install", "download"})),
    "rustup": frozenset({"install", "update", "toolchain", "target", "component"}),
}
# OS package managers are allowed, but they need the network: box.yaml must say so.
_PACKAGE_MANAGERS = frozenset({"yum", "dnf", "microdnf", "apt-get", "apt", "apk", "zypper"})
_PACKAGE_ACTIONS = frozenset({"install", "update", "upgrade"})
# Commands that run the command after their own options and VAR=value words.
_WRAPPERS = frozenset({"env", "sudo", "nice", "nohup", "time", "command", "exec", "xargs"})
_SHELLS = frozenset({"sh", "bash", "dash", "ash", "zsh"})


def check_dockerfile(path: Path, shown: str, *, network: bool) -> list[Problem]:
    """Every rule the Dockerfile breaks, each naming its line."""
    try:
        content = path.read_bytes()
    except OSError as error:
        return [Problem(shown, None, "", f"cannot be read: {error}")]
    # The stubs say IO[str], but dockerfile-parse reads its file object in bytes and decodes it.
    dockerfile = cast("IO[str]", io.BytesIO(content))
    instructions = DockerfileParser(fileobj=dockerfile, env_replace=False).structure

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
            for words in run_commands(value):
                if downloader := _downloads(words):
                    problem(
                        f"downloads with {downloader!r}; a box takes every download from "
                        "shared/components.yaml, fetched and verified by the toolkit"
                    )
                if not network and (installer := _installs(words)):
                    problem(
                        f"{installer!r} needs the network, but box.yaml does not allow it; "
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


def run_commands(value: str) -> list[list[str]]:
    """The simple commands a RUN instruction runs, each as its words (command first).

    The shell form is parsed with bashlex, a well-kept bash parser: commands joined by ``&&``,
    ``||``, ``;`` and pipes, inside ``if``/``for``/subshells and ``$(...)``, and the script of
    ``sh -c '...'``; leading ``VAR=value`` assignments and wrappers (``env``, ``sudo``, ...) are
    stepped over. Arguments, strings, comments and here-documents are not commands. What bashlex
    cannot parse is split on the shell's operators (shlex), the best guess left.
    """
    flags_stripped = re.sub(r"^(--\S+\s+)+", "", value.strip())  # RUN --mount=... --network=...
    if flags_stripped.startswith("["):  # exec form: one command, its words a JSON list
        try:
            return _unwrap([str(word) for word in json.loads(flags_stripped)])
        except ValueError:
            pass
    return [unwrapped for words in _parse(flags_stripped) for unwrapped in _unwrap(words)]


def _parse(script: str) -> list[list[str]]:
    import bashlex  # here: only check reads Dockerfiles

    commands: list[list[str]] = []

    class Commands(bashlex.ast.nodevisitor):  # type: ignore[misc]
        def visitcommand(self, node: Any, parts: list[Any]) -> None:
            commands.append([part.word for part in parts if part.kind == "word"])

    try:
        for tree in bashlex.parse(script):
            Commands().visit(tree)
    except (bashlex.errors.ParsingError, NotImplementedError, IndexError, AttributeError):
        commands = []
        for segment in re.split(r"&&|\|\||;|\||\n", script):
            try:
                commands.append(shlex.split(segment, comments=True))
            except ValueError:
                commands.append(segment.split())
    return [words for words in commands if words]


def _unwrap(words: list[str]) -> list[list[str]]:
    """``words`` without assignments and wrappers; a shell's ``-c`` script, parsed in turn."""
    while words and (("=" in words[0] and not words[0].startswith("-")) or words[0] in _WRAPPERS):
        words = words[1:]
        while words and words[0].startswith("-") and words[0] != "-c":
            words = words[1:]  # the wrapper's own options
    if not words:
        return []
    name = words[0].rsplit("/", 1)[-1]
    if name in _SHELLS and "-c" in words[1:-1]:
        return run_commands(words[words.index("-c") + 1])
    return [[name, *words[1:]]]


def _downloads(words: list[str]) -> str | None:
    """The download command ``words`` run, as the message names it, or None."""
    name, arguments = words[0], [w for w in words[1:] if not w.startswith("-")]
    if name in ("python", "python3") and words[1:4] == ["-m", "pip", "install"]:
        return f"{name} -m pip install"
    subcommands = _DOWNLOADERS.get(name)
    if subcommands is None:
        return None
    if not subcommands:  # curl, wget, ...: with something to fetch (not `curl --version`)
        return name if arguments else None
    return f"{name} {arguments[0]}" if arguments and arguments[0] in subcommands else None


def _installs(words: list[str]) -> str | None:
    """``<manager> <action>`` when ``words`` run an OS package manager that needs the network."""
    if words[0] not in _PACKAGE_MANAGERS:
        return None
    action = next((w for w in words[1:] if not w.startswith("-")), None)
    return f"{words[0]} {action}" if action in _PACKAGE_ACTIONS else None


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
