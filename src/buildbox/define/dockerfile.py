"""Static rules for a box's Dockerfile: it installs verified artifacts and downloads nothing.

The rules read what the builder and the shell would run, not words in the text: instructions
as BuildKit splits them (continuations, here-documents), RUN scripts with bashlex, and the
script a wrapper or a shell runs (``sudo``, ``sh -ec '...'``, ``busybox sh``, a here-document
fed to ``bash``, the box's own ``*.sh``) in turn. What decides a command's name at run time (a
variable, a command substitution, ``eval``, a shell reading a pipe) cannot be checked and is
refused in every box. A box with ``network: true`` builds with the host's network, so there
this rule is the only guard: code in other languages (``python3 -c``) and builds that fetch
their own dependencies (``cargo build``, ``go build``) are refused there too.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, cast

from buildbox.define.lock import LOCK_FILE, PROOF_DIR
from buildbox.errors import Problem
from buildbox.oci.refs import is_pinned

#: The build argument through which the toolkit passes the box's pinned base image.
BASE_ARG = "BUILDBOX_BASE"
_BASE_FORMS = {f"${BASE_ARG}", f"${{{BASE_ARG}}}"}


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


_INSTRUCTIONS = _names(
    "ADD ARG CMD COPY ENTRYPOINT ENV EXPOSE FROM HEALTHCHECK LABEL MAINTAINER ONBUILD RUN SHELL "
    "STOPSIGNAL USER VOLUME WORKDIR"
)
# BuildKit reads a syntax directive from a leading comment (and a frontend from any); either way
# the builder downloads the frontend image it names before it reads anything else.
_SYNTAX = re.compile(r"^\s*(?:#|//)\s*syntax\s*=\s*(\S*)", re.IGNORECASE | re.MULTILINE)
_ESCAPE = re.compile(r"^\s*#\s*escape\s*=\s*(\S*)", re.IGNORECASE | re.MULTILINE)
# A word as BuildKit splits an instruction to find here-documents: quotes kept, so "<<EOF" and
# 'a <<EOF' are not markers. A marker is a word of its own: [fd]<<[-]NAME, NAME maybe quoted
# ('EOF', \EOF, E"O"F all end at a line EOF).
_CONTINUED = re.compile(r"\\[ \t]*$")
_WORD = re.compile(r"""(?:'[^']*'|"(?:\\.|[^"\\])*"|\\.|[^\s'"\\])+""")
_HEREDOC = re.compile(r"^\d*<<(-?)([^<\s]+)$")
_URL = re.compile(r"^([a-z][a-z0-9+.-]*://|git@|github\.com/)", re.IGNORECASE)
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# Names that run a versioned interpreter or installer: python3.11, pip3.11, pypy3, easy_install-3.
_VERSIONED = re.compile(r"^(python|pypy|pip|easy_install|ruby|gem|perl|php|node)[-\d.]*$")

_TO_COMPONENTS = (
    "a box takes every download from shared/components.yaml, fetched and verified by the toolkit"
)
_TO_LITERAL = "the check cannot tell what it runs; write the command name out"

# Commands that only download: refused with something to fetch (not `curl --version`).
_FETCHERS = _names(
    "curl wget wget2 aria2c axel rsync scp sftp ftp lftp tftp nc ncat netcat socat telnet "
    "http https xh httpie npx bunx uvx pnpx easy_install cpan cpanm yumdownloader"
)
# Commands whose subcommand downloads.
_DOWNLOAD_VERBS: dict[str, frozenset[str]] = {
    "pip": _names("install download wheel"),
    "pipx": _names("install run inject upgrade upgrade-all reinstall-all"),
    "npm": _names("install i ci add update up exec x pack init"),
    "pnpm": _names("install i add update up fetch dlx exec create"),
    "yarn": _names("install add upgrade up dlx create global"),
    "bun": _names("install i add update x create"),
    "corepack": _names("enable install prepare use up pack"),
    "cargo": _names("fetch install vendor update search generate-lockfile"),
    "gem": _names("install update fetch"),
    "bundle": _names("install update add cache"),
    "composer": _names("install require update create-project"),
    "poetry": _names("install add update lock sync"),
    "pdm": _names("install add update sync lock"),
    "conda": _names("install create update env"),
    "mamba": _names("install create update env"),
    "micromamba": _names("install create update env"),
    "rustup": _names("install update toolchain target component default"),
    "git": _names("clone fetch pull submodule ls-remote fetch-pack"),
    "svn": _names("checkout co export update up"),
    "hg": _names("clone pull"),
    "helm": _names("pull fetch repo dependency dep plugin"),
    "apt-get": _names("download source"),
    "apt": _names("download source"),
    "dnf": _names("download"),
    "zypper": _names("download source-download"),
    "apk": _names("fetch"),
    "deno": _names("install cache run add"),
    "uv": _names("add sync lock run tool python"),
}
# Their own options that take a value, so `npm --prefix /x ci` finds `ci`.
_VALUED = _names(
    "-C --prefix --cwd --dir --filter -w --workspace --manifest-path --config -Z --python "
    "--proxy --cache-dir --log --git-dir --work-tree --namespace --exec-path -c -o -t -R --root "
    "--installroot --setopt -d -e -r --repo --releasever"
)
# OS package managers: with `network: true` they install signed packages; otherwise only these
# subcommands, which touch no network, are allowed.
_PACKAGE_MANAGERS = _names("apt-get apt aptitude yum dnf microdnf zypper apk tdnf")
_OFFLINE_ACTIONS = _names(
    "clean autoclean autoremove remove erase purge del list show info policy check search history"
)
_NO_SIGNATURE = _names(
    "--nogpgcheck --no-gpg-checks --allow-unauthenticated --allow-insecure-repositories "
    "--allow-untrusted --force-bad-verify --insecure"
)
_NO_SIGNATURE_OPTION = re.compile(
    r"(?i)(gpgcheck\s*=\s*(0|false|no)|AllowInsecure|AllowUnauthenticated|trusted\s*=\s*yes"
    r"|Check-Valid-Until|Invoke)"
)
# Builds that fetch their own dependencies when the network is there.
_GO_BUILDS = _names("build install test run generate list vet mod work")
_CARGO_BUILDS = _names(
    "build b test t run r check c doc d bench clippy metadata tree package rustc rustdoc fix"
)

# Shell words before a command, for the fallback reading.
_RESERVED = _names("if then else elif fi do done while until ! [[ ]] time coproc esac")
# Text tools whose programs can run commands, and what in a program does.
_EDITORS: dict[str, re.Pattern[str]] = {
    **dict.fromkeys(("awk", "gawk", "mawk", "nawk"), re.compile(r"system|getline|\|\s*\"|/inet")),
    # sed's e command, or an s command with the e flag (s/x/y/e), at the start of an expression.
    "sed": re.compile(
        r"(^|[;\n}])\s*((\d+|\$|/[^/]*/)\s*)?e(\s|;|$)"
        r"|(^|[;\n}])\s*s([^\w\s\\])((?!\6).|\\.)*\6((?!\6).|\\.)*\6[gpIiMmw0-9]*e"
    ),
}
# `case WORD in` and a case pattern (x86_64), a|b), *)), which are not commands.
_CASE = re.compile(r"\bcase\s.*?\sin\b")
_CASE_PATTERN = re.compile(r"(?:^|(?<=;;)|(?<=\bin))\s*\(?[^\s;()|]+(?:\|[^\s;()|]+)*\)")
_SHELLS = _names("sh bash dash ash zsh ksh mksh yash posh")
_SHEBANG = re.compile(r"^#!\s*(\S*/)?(env\s+(-\S+\s+)*)?(sh|bash|dash|ash|zsh|ksh|mksh)\b")
# Interpreters and the options that take their code inline.
_CODE_OPTIONS: dict[str, frozenset[str]] = {
    "python": _names("-c"),
    "perl": _names("-e -E"),
    "ruby": _names("-e"),
    "node": _names("-e --eval -p --print"),
    "php": _names("-r"),
    "lua": _names("-e"),
    "Rscript": _names("-e"),
}
# Python's own long option that takes a value.
_PYTHON_VALUED = _names("--check-hash-based-pycs")
# A Perl one-liner that only edits text (perl -pi -e 's/a/b/g'): no code, no interpolation.
_PERL_EDIT = re.compile(r"^\s*(?:s|tr|y)([/|#!,:])[^`@$]*\1[^`@$]*\1[gimsxr]*;?\s*$")


@dataclass(frozen=True)
class _Wrapper:
    """A command that runs the command after its own options (``sudo -u root curl ...``)."""

    flags: str = ""  # short options without a value
    valued: str = ""  # short options with a value
    long_flags: frozenset[str] = frozenset()
    long_valued: frozenset[str] = frozenset()
    operands: int = 0  # words before the command: timeout's duration, chroot's directory
    script: str = ""  # options whose value is a shell script: su -c '...'
    split: str = ""  # options whose value is split into the command's words: env -S '...'
    runs_operands: bool = True  # su runs only its -c script; its operands are a user, args


def _long(text: str) -> frozenset[str]:
    return frozenset(f"--{word}" for word in text.split())


_WRAPPERS: dict[str, _Wrapper] = {
    "env": _Wrapper(
        "i0v", "uC", _long("ignore-environment null debug"), _long("unset chdir"), split="S"
    ),
    "sudo": _Wrapper(
        "AbEHiKkLlnPSsv",
        "CDghpRrTUu",
        _long("preserve-env login shell non-interactive set-home background stdin reset-timestamp"),
        _long("user group host prompt chdir close-from role type other-user command-timeout"),
    ),
    "doas": _Wrapper("Lns", "uC"),
    "nice": _Wrapper("", "n", frozenset(), _long("adjustment")),
    "nohup": _Wrapper(),
    "time": _Wrapper(
        "pvaq", "fo", _long("portability verbose append quiet"), _long("format output")
    ),
    "builtin": _Wrapper(),
    "exec": _Wrapper("cl", "a"),
    "xargs": _Wrapper(
        "0prtxiel",
        "aEdILnPs",
        _long("null interactive no-run-if-empty verbose exit open-tty"),
        _long("arg-file delimiter eof replace max-lines max-args max-procs max-chars"),
    ),
    "timeout": _Wrapper(
        "v", "sk", _long("foreground preserve-status verbose"), _long("signal kill-after"), 1
    ),
    "stdbuf": _Wrapper("", "ioe", frozenset(), _long("input output error")),
    "ionice": _Wrapper("tx", "cnp", frozenset(), _long("class classdata pid")),
    "chroot": _Wrapper("", "", _long("skip-chdir"), _long("userspec groups"), 1),
    "setsid": _Wrapper("cfw", "", _long("ctty fork wait")),
    "taskset": _Wrapper("ac", "", _long("all-tasks cpu-list"), frozenset(), 1),
    "flock": _Wrapper(
        "sxnuoF",
        "wE",
        _long("shared exclusive nonblock unlock close no-fork verbose"),
        _long("timeout wait conflict-exit-code"),
        1,
        script="c",
    ),
    "su": _Wrapper(
        "lmpP",
        "gGsw",
        _long("login preserve-environment pty"),
        _long("group supp-group shell whitelist-environment"),
        script="c",
        runs_operands=False,
    ),
    "runuser": _Wrapper(
        "lmpP",
        "gGswu",
        _long("login preserve-environment pty"),
        _long("group supp-group shell whitelist-environment user"),
        script="c",
    ),
    "unshare": _Wrapper(
        "mUuinpCrfTR",
        "SG",
        _long("mount uts ipc net pid user cgroup time fork map-root-user kill-child mount-proc"),
        _long("setuid setgid propagation wd root"),
    ),
    "script": _Wrapper(
        "aefqk",
        "ETOIBm",
        _long("append return flush force quiet"),
        _long("echo timing log-out log-in log-io logging-format"),
        script="c",
        runs_operands=False,
    ),
    "fakeroot": _Wrapper("", "is", _long("unknown-is-real"), _long("lib faked")),
    "busybox": _Wrapper("", "", _long("list list-full install help")),
    "toybox": _Wrapper("", "", _long("help version")),
}


@dataclass(frozen=True)
class _Instruction:
    line: int
    kind: str
    value: str
    #: Each here-document's (delimiter as written, body), in order.
    heredocs: tuple[tuple[str, str], ...] = ()


def check_dockerfile(path: Path, shown: str, *, network: bool) -> list[Problem]:
    """Every rule the Dockerfile breaks, each naming its line."""
    try:
        content = path.read_bytes()
    except OSError as error:
        return [Problem(shown, None, "", f"cannot be read: {error}")]
    if wrong := _not_utf8(content, shown):
        return [wrong]  # every rule reads the text; a guess at it could pass what is refused
    problems = _directive_problems(content.decode("utf-8-sig", "replace"), shown)
    stages: list[str] = []
    uses_base = False
    for instruction in _instructions(content, shown, problems):
        problems.extend(
            Problem(shown, instruction.line, kind, message)
            for kind, message in _instruction_problems(instruction, stages, network)
        )
        if instruction.kind == "FROM":
            image, stage = _from_parts(instruction.value)
            uses_base = uses_base or image in _BASE_FORMS
            stages.append((stage or "").lower())  # unnamed: '', found by its index only
    problems.extend(_box_script_problems(path.parent, PurePosixPath(shown).parent, network))
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


def _not_utf8(content: bytes, shown: str) -> Problem | None:
    """The first byte that is not UTF-8, as a problem naming its line and column."""
    try:
        content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line_start = content.rfind(b"\n", 0, error.start) + 1
        return Problem(
            shown,
            content.count(b"\n", 0, error.start) + 1,
            "",
            f"byte {content[error.start]:#04x} at column {error.start - line_start + 1} is not "
            "UTF-8, which the builder reads a Dockerfile as; save it as UTF-8",
        )
    return None


#: A box's files that never reach the build as files (the lock's proof neither).
_NOT_SCRIPTS = frozenset({"Dockerfile", "box.yaml", LOCK_FILE})


def _box_script_problems(directory: Path, shown: PurePosixPath, network: bool) -> list[Problem]:
    """The box's own shell scripts, read like its RUN lines: `COPY get.sh` and `RUN sh /get.sh`
    must not carry a download past the rule. Symbolic links are not followed."""
    problems: list[Problem] = []
    for root, folders, names in os.walk(directory):  # not sorted(): that would walk it all
        folders[:] = sorted(f for f in folders if Path(root, f) != directory / PROOF_DIR)
        for name in sorted(names):
            file = Path(root, name)
            if file.is_symlink() or not file.is_file():
                continue
            data = file.read_bytes()
            # Any text file may be run as a script: `sh /notes`, or directly, where a shell runs
            # a file with no #! line itself (ENOEXEC). Only what no shell reads is left out.
            if name in _NOT_SCRIPTS or b"\0" in data:
                continue
            text = data.decode("utf-8", "replace")
            where = str(shown / file.relative_to(directory).as_posix())
            problems.extend(
                Problem(where, line, "script", message)
                for line, message in dict.fromkeys(_script_lines(text, network, 0))
            )
    return problems


def _directive_problems(text: str, shown: str) -> list[Problem]:
    problems = []
    for match in _SYNTAX.finditer(text):
        if not is_pinned(match.group(1)):
            problems.append(
                Problem(
                    shown,
                    text.count("\n", 0, match.start()) + 1,
                    "syntax",
                    f"the parser directive `syntax={match.group(1)}` makes the builder "
                    "download that frontend image; remove it, or pin it by digest "
                    "(docker/dockerfile:1@sha256:<64 hex>)",
                )
            )
    for match in _ESCAPE.finditer(text):
        if match.group(1) != "\\":
            problems.append(
                Problem(
                    shown,
                    text.count("\n", 0, match.start()) + 1,
                    "escape",
                    f"`escape={match.group(1)}` changes how lines are joined, which this check "
                    "does not follow; keep the default escape character (\\)",
                )
            )
    return problems


def _instructions(content: bytes, shown: str, problems: list[Problem]) -> list[_Instruction]:
    """The instructions, as BuildKit reads them, each RUN, COPY and ADD with its here-documents.

    Read here rather than with dockerfile-parse, which knows no here-documents, ends a
    continuation at an empty line and drops one left open at the end of the file: each of
    those let a command reach the builder that the check never saw. A line that is no
    instruction is refused, so anything read differently is refused rather than passed over.
    """
    lines = [line.rstrip("\r") for line in content.decode("utf-8-sig", "replace").split("\n")]
    instructions: list[_Instruction] = []
    at = 0
    while at < len(lines):
        start, text = at, lines[at]
        at += 1
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        parts = []
        while match := _CONTINUED.search(text):
            parts.append(text[: match.start()])
            # Empty and comment lines inside a continuation are skipped, as BuildKit does.
            while at < len(lines) and (not lines[at].strip() or lines[at].lstrip()[:1] == "#"):
                at += 1
            if at == len(lines):
                text = ""
                break
            text, at = lines[at], at + 1
        logical = "".join([*parts, text]).strip()
        kind, value = [*logical.split(None, 1), ""][:2]
        kind = kind.upper()
        if kind not in _INSTRUCTIONS:
            problems.append(
                Problem(
                    shown,
                    start + 1,
                    kind,
                    "is not a Dockerfile instruction; a here-document starts with a word of "
                    "its own, `<<NAME`, and ends with a line `NAME`",
                )
            )
            continue
        heredocs: list[tuple[str, str]] = []
        inner = (value.split(None, 1) or [""])[0].upper() if kind == "ONBUILD" else kind
        if inner in {"RUN", "COPY", "ADD"}:
            for marker in (m for m in _WORD.findall(value) if _HEREDOC.match(m)):
                strip_tabs, delimiter = cast("re.Match[str]", _HEREDOC.match(marker)).groups()
                name = "".join(_split(delimiter))
                body: list[str] = []
                while (
                    at < len(lines)
                    and (lines[at].lstrip("\t") if strip_tabs else lines[at]) != name
                ):
                    body.append(lines[at])
                    at += 1
                if at == len(lines):
                    problems.append(
                        Problem(shown, start + 1, kind, f"the here-document {name} never ends")
                    )
                    break
                heredocs.append((delimiter, "".join(f"{line}\n" for line in body)))
                at += 1
        instructions.append(_Instruction(start + 1, kind, value, tuple(heredocs)))
    return instructions


def _instruction_problems(
    instruction: _Instruction, stages: list[str], network: bool
) -> list[tuple[str, str]]:
    """(kind, message) for each rule ``instruction`` breaks."""
    kind, value = instruction.kind, instruction.value
    if kind == "ONBUILD":
        inner_kind, _, inner_value = value.strip().partition(" ")
        inner = _Instruction(
            instruction.line, inner_kind.upper(), inner_value, instruction.heredocs
        )
        return [
            ("ONBUILD", message) for _, message in _instruction_problems(inner, stages, network)
        ]
    found: list[str] = []
    if kind == "FROM":
        image, _ = _from_parts(value)
        named_stage = image.lower() in stages and not image.isdigit()
        if not (image in _BASE_FORMS or image == "scratch" or named_stage or is_pinned(image)):
            found.append(
                f"{image!r} is not pinned; use FROM ${{{BASE_ARG}}} (the base in box.yaml) "
                "or an image pinned by digest (name@sha256:...)"
            )
    elif kind == "RUN":
        found.extend(_run_problems(instruction, stages, network))
    elif kind == "SHELL":
        found.extend(_shell_problems(value))
    if kind == "ADD":
        for source in _sources(value):
            if _URL.match(source):
                found.append(
                    f"ADD fetches {source!r}; put the file in shared/components.yaml with its "
                    "sha256 and install it from the build context"
                )
            elif "$" in source:
                found.append(
                    f"ADD of a variable ({source!r}) may fetch a URL the check cannot see; ADD "
                    "or COPY a file of the box directory by its name"
                )
    if kind in {"COPY", "ADD"}:
        destination = (_flags_and_args(value)[1] or [""])[-1]
        for delimiter, body in instruction.heredocs:
            names = ("".join(_split(delimiter)), destination)
            if any(_is_shell_script(body, name) for name in names):
                found.extend(_script(body, network, 0))  # a script a later RUN may run
        copied = _from_flag(value)
        if copied and not _is_stage(copied, stages) and not is_pinned(copied):
            found.append(
                f"--from={copied} copies from an image that is not pinned; copy from a "
                "build stage or an image pinned by digest"
            )
    return [(kind, message) for message in found]


def _is_stage(name: str, stages: list[str]) -> bool:
    """A build stage before this one, by its name or its index (unnamed stages are '')."""
    return bool(name) and (name.lower() in stages or (name.isdigit() and int(name) < len(stages)))


def _shell_problems(value: str) -> list[str]:
    try:
        words = [str(word) for word in json.loads(value)]
    except (ValueError, TypeError):
        words = []
    shell = bool(words) and words[0].rsplit("/", 1)[-1] in _SHELLS and words[-1] == "-c"
    if shell and all(word.startswith(("-", "+")) or word == "pipefail" for word in words[1:]):
        return []
    return [
        (
            f"SHELL {value.strip()} makes RUN run something this check cannot read; remove it, "
            'or name a shell with its options and -c (["/bin/bash", "-o", "pipefail", "-c"])'
        )
    ]


def _run_problems(instruction: _Instruction, stages: list[str], network: bool) -> list[str]:
    flags, command = _run_flags(instruction.value)
    found = [_flag_problem(flag, stages) for flag in flags]
    exec_form = _exec_form(command)
    if exec_form is not None:
        found.extend(_command(exec_form, None, network, 0))
    elif len(instruction.heredocs) == 1 and _HEREDOC.match(command.strip()):
        found.extend(_script_file(instruction.heredocs[0][1], network))
    else:
        # bashlex wants a quoted delimiter's end line quoted too (the shell does not).
        ends = "".join(body + delimiter + "\n" for delimiter, body in instruction.heredocs)
        script = command + "\n" + ends
        found.extend(_script(script, network, 0))
    return list(dict.fromkeys(message for message in found if message))


def _run_flags(value: str) -> tuple[list[str], str]:
    """RUN's own ``--flags`` and the command after them."""
    flags: list[str] = []
    rest = value.strip()
    while rest.startswith("--") and (match := _WORD.match(rest)):
        flags.append(match.group(0))
        rest = rest[match.end() :].lstrip()
    return flags, rest


def _flag_problem(flag: str, stages: list[str]) -> str:
    name, _, setting = flag.partition("=")
    name = name.lower()
    if name == "--mount":
        fields = next(csv.reader([_unquote(setting)]), [])
        options = dict(field.partition("=")[::2] for field in fields)
        source = next((v for k, v in options.items() if k.lower() == "from"), None)
        if source is None or _is_stage(source, stages) or is_pinned(source):
            return ""
        return (
            f"RUN --mount from={source} mounts an image the builder pulls, not pinned; mount a "
            "build stage of this Dockerfile or an image pinned by digest (name@sha256:...)"
        )
    if name == "--network":
        return (
            f"RUN {flag} sets the step's network itself; remove it: the build's network comes "
            "from box.yaml (`network:`)"
        )
    if name == "--security":
        return f"RUN {flag} asks for a privileged step; remove it"
    return f"RUN {flag} is not allowed (RUN takes only --mount here); remove it"


def _unquote(text: str) -> str:
    try:
        return "".join(shlex.split(text))
    except ValueError:
        return text


def _exec_form(command: str) -> list[str] | None:
    if not command.startswith("["):
        return None
    try:
        words = json.loads(command)
    except ValueError:
        return None
    return [str(word) for word in words] if isinstance(words, list) else None


def _script_file(body: str, network: bool) -> list[str]:
    """``RUN <<EOF``: BuildKit runs the body with its ``#!`` line's interpreter, or ``sh``."""
    first, _, rest = body.partition("\n")
    if not first.startswith("#!"):
        return _script(body, network, 0)
    return _command(first[2:].split(), rest, network, 0)


def _script(script: str, network: bool, depth: int) -> list[str]:
    """What a shell script runs that the rule refuses."""
    return [message for _, message in _script_lines(script, network, depth)]


def _script_lines(script: str, network: bool, depth: int) -> list[tuple[int, str]]:
    """What a shell script runs that the rule refuses, each with its line in the script."""
    import bashlex  # here: only check reads Dockerfiles

    if depth > 8:
        return [(1, "nests shells too deep to check; write the commands out")]
    found: list[tuple[int, str]] = []
    if match := re.search(r"/dev/(tcp|udp)/", script):
        line = script.count("\n", 0, match.start()) + 1
        found.append((line, f"opens a connection through /dev/tcp or /dev/udp; {_TO_COMPONENTS}"))
    try:
        trees = bashlex.parse(script)
    except Exception:  # noqa: BLE001  # bashlex raises anything on shell it lacks: case, [[, $((
        return found + _fallback(script, network, depth)
    messages: list[str] = []

    class Commands(bashlex.ast.nodevisitor):  # type: ignore[misc]
        def visitcommand(self, node: Any, parts: list[Any]) -> None:
            words = [part.word for part in parts if part.kind in {"word", "assignment"}]
            stdin: str | None = None
            targets = [w for w in words[1:] if not w.startswith("-")]
            for part in parts:
                if part.kind != "redirect":
                    continue
                if part.type in {"<<", "<<-"} and part.heredoc is not None:
                    stdin = part.heredoc.value.rpartition("\n")[0] + "\n"
                    # An unquoted here-document expands $(...) and `...`: read it as a script.
                    if not re.search(r"['\"\\]", part.output.word) and re.search(r"\$\(|`", stdin):
                        messages.extend(_script(stdin, network, depth + 1))
                elif part.type == "<<<":
                    stdin = part.output.word
                elif part.type == "<":
                    stdin = ""  # a file: what runs it is seen, its content is not
                elif isinstance(part.output, bashlex.ast.node):
                    targets.append(part.output.word)
            # A script written here (cat > /x.sh <<EOF) is read as what later runs it would.
            if stdin and any(_is_shell_script(stdin, target) for target in targets):
                messages.extend(_script(stdin, network, depth + 1))
            messages.extend(_command(words, stdin, network, depth))

    for tree in trees:
        Commands().visit(tree)
        line = script.count("\n", 0, tree.pos[0]) + 1
        found.extend((line, message) for message in messages)
        messages.clear()
    return found


def _is_shell_script(text: str, name: str) -> bool:
    """A file a shell would run: named *.sh, or starting with a shell's #! line."""
    first = text.partition("\n")[0]
    return name.endswith(".sh") or _SHEBANG.match(first) is not None


def _fallback(script: str, network: bool, depth: int) -> list[tuple[int, str]]:
    """Shell bashlex cannot parse, read conservatively: split at every operator and bracket,
    quotes or not, so a command anywhere in it is seen (and a string may be taken for one)."""
    found: list[tuple[int, str]] = []
    for line, text in enumerate(script.split("\n"), 1):
        for segment in re.split(
            r"\$\(|<\(|>\(|[`;&|(){}]", _CASE_PATTERN.sub(" ", _CASE.sub(";;", text))
        ):
            try:
                words = shlex.split(segment, comments=True)
            except ValueError:
                words = segment.split()
            while words and words[0] in _RESERVED:
                words = words[1:]
            if words and words[0] not in {"for", "case", "select", "in"}:  # their words are data
                found.extend((line, message) for message in _command(words, None, network, depth))
    return found


def _command(words: list[str], stdin: str | None, network: bool, depth: int) -> list[str]:
    """What one simple command runs that the rule refuses; ``stdin`` is a here-document's
    text fed to it ('' for a file, None for none)."""
    assignments: list[str] = []
    while words and _ASSIGNMENT.match(words[0]):
        assignments, words = [*assignments, words[0]], words[1:]
    if not words:
        return []
    name = words[0]
    if "$" in name or "`" in name:
        return [
            (
                f"runs a command named {name!r}, which comes from a variable or command "
                f"substitution; {_TO_LITERAL}"
            )
        ]
    if name not in {"[", "[["} and any(letter in name for letter in "*?[{"):
        return [f"runs a command named {name!r}, which the shell expands; {_TO_LITERAL}"]
    base = name.rsplit("/", 1)[-1]
    family = _family(base)
    arguments = words[1:]
    if base == "eval":
        return [
            (
                "runs `eval`, whose commands are put together at run time and cannot be checked; "
                "write the commands out"
            )
        ]
    if base == "trap":  # trap 'commands' SIGNAL...
        return _script(arguments[0], network, depth + 1) if arguments[1:] else []
    if base == "alias":
        return ["defines an alias, which hides the command it runs; call the command by name"]
    if base == "command":
        if arguments[:1] and arguments[0] in {"-v", "-V"}:
            return []  # looks a command up
        return _command([w for w in arguments if w != "-p"], stdin, network, depth)
    if base == "find":
        return _find_exec(arguments, network, depth)
    if base in _WRAPPERS:
        return _wrapped(base, arguments, stdin, network, depth)
    if base in _SHELLS:
        return _shell(base, arguments, stdin, network, depth)
    if family in _CODE_OPTIONS:
        return _interpreter(base, family, arguments, stdin, network)
    if base in {"ln", "cp", "mv", "install"}:
        return _renames(arguments)
    if network and family in _EDITORS:
        return _editor(base, family, arguments)
    if base == "make" and stdin and _option_value(arguments, "-f") in {"-", "/dev/stdin"}:
        recipes = "".join(line[1:] + "\n" for line in stdin.splitlines() if line[:1] == "\t")
        return _script(recipes, network, depth + 1)
    return _tool(base, family, arguments, network, assignments)


def _wrapped(
    base: str, arguments: list[str], stdin: str | None, network: bool, depth: int
) -> list[str]:
    wrapper = _WRAPPERS[base]
    found: list[str] = []
    words = list(arguments)
    operands = wrapper.operands
    while words:
        word = words[0]
        if word == "--":
            words = words[1:]
            break
        if word == "-" and base == "su":
            words = words[1:]
            continue
        if _ASSIGNMENT.match(word) and base in {"env", "sudo"}:
            words = words[1:]
            continue
        if not word.startswith("-") or word == "-":
            break
        option, has_value, value = word.partition("=")
        words = words[1:]
        if option.startswith("--"):
            if option in wrapper.long_flags:
                continue
            takes_value = option in wrapper.long_valued
            is_script = option == "--command" and bool(wrapper.script)
            is_split = option == "--split-string" and bool(wrapper.split)
            if not (takes_value or is_script or is_split):
                return [*found, _unknown_option(base, word)]
            if not has_value:
                if not words:
                    break
                value, words = words[0], words[1:]
            if is_script:
                found.extend(_script(value, network, depth + 1))
            elif is_split:
                return found + _command(_split(value) + words, stdin, network, depth + 1)
            continue
        cluster = word[1:]
        for index, letter in enumerate(cluster):
            if letter in wrapper.flags:
                continue
            if letter not in wrapper.valued + wrapper.script + wrapper.split:
                return [*found, _unknown_option(base, word)]
            value = cluster[index + 1 :]
            if not value:
                if not words:
                    return found
                value, words = words[0], words[1:]
            if letter in wrapper.script:
                found.extend(_script(value, network, depth + 1))
            elif letter in wrapper.split:
                return found + _command(_split(value) + words, stdin, network, depth + 1)
            break
    if not wrapper.runs_operands:
        return found
    words = words[operands:]
    if base == "runuser" and "-u" not in arguments and "--user" not in arguments:
        return found  # runuser USER [-c ...], like su
    if base == "xargs" and words:
        words = [*words, "<input>"]  # xargs adds what it reads: `xargs curl -O` fetches
    return found + _command(words, stdin, network, depth + 1)


def _unknown_option(base: str, word: str) -> str:
    return (
        f"cannot tell which command `{base} {word}` runs (an option this check does not know); "
        "write the command without it"
    )


def _split(value: str) -> list[str]:
    try:
        return shlex.split(value)
    except ValueError:
        return value.split()


def _find_exec(arguments: list[str], network: bool, depth: int) -> list[str]:
    found: list[str] = []
    for index, word in enumerate(arguments):
        if word in {"-exec", "-execdir", "-ok", "-okdir"}:
            rest = arguments[index + 1 :]
            end = next((i for i, w in enumerate(rest) if w in {";", "+"}), len(rest))
            found.extend(_command(rest[:end], None, network, depth + 1))
    return found


def _shell(
    base: str, arguments: list[str], stdin: str | None, network: bool, depth: int
) -> list[str]:
    """``sh -ec 'script'``, ``bash -o pipefail -c ...``, ``sh file``, ``bash <<EOF``."""
    words = list(arguments)
    command = reads_stdin = False
    while words and words[0][:1] in {"-", "+"} and words[0] not in {"-", "--"}:
        word, words = words[0], words[1:]
        if word.startswith("--"):
            if word in {"--rcfile", "--init-file"} and words:
                words = words[1:]
            continue
        for letter in word[1:]:
            command = command or letter == "c"
            reads_stdin = reads_stdin or letter == "s"
            if letter in {"o", "O"} and words:
                words = words[1:]
    if words and words[0] in {"-", "--"}:
        words = words[1:]
    if command:
        if not words:
            return []
        return _script(words[0], network, depth + 1)
    if words and not reads_stdin and not words[0].startswith(("/dev/", "/proc/")):
        return []  # runs a file: the toolkit's installers, a box's own script
    if stdin is None:
        return [
            (
                f"{base!r} reads its commands from standard input, which the check cannot read; "
                f"write them as `{base} -c '...'` or a here-document"
            )
        ]
    return _script(stdin, network, depth + 1) if stdin else []


def _interpreter(
    base: str,
    family: str,
    arguments: list[str],
    stdin: str | None,
    network: bool,
) -> list[str]:
    """``python3.11 -m pip install``, ``python3 -Ic '...'``, ``perl -e``, a script on stdin."""
    words = list(arguments)
    code = False
    while words and words[0].startswith("-") and words[0] != "-" and not code:
        word, words = words[0], words[1:]
        if word == "--":
            break
        if family == "python" and not word.startswith("--"):
            # getopt clusters: -Ic 'code', -mpip, -X dev, -Wignore
            for index, letter in enumerate(word[1:], 2):
                if letter in "cmWX":
                    value = word[index:] or (words.pop(0) if words else "")
                    if letter == "m":
                        return _python_module(base, value, words, network)
                    code = letter == "c"
                    break
            continue
        option = next((o for o in _CODE_OPTIONS[family] if word.startswith(o)), None)
        if option is not None:
            program = word[len(option) :] or (words.pop(0) if words else "")
            code = not (family == "perl" and _PERL_EDIT.match(program))
        elif word in _PYTHON_VALUED and words:
            words = words[1:]
    reads_stdin = not words or words[0] == "-"
    if not network or not (code or (reads_stdin and stdin)):
        return []
    return [
        (
            f"runs {base} code the check cannot read, in a box that builds with the network; put "
            "it in a file of the box directory (reviewed with the box) and run that, or drop it"
        )
    ]


def _python_module(base: str, module: str, words: list[str], network: bool) -> list[str]:
    if module in {"pip", "pipx", "uv", "poetry", "pdm", "conda"}:
        found = _tool(module, module, words, network, [])
        return [f.replace(f"'{module} ", f"'{base} -m {module} ", 1) for f in found]
    if module == "venv" and "--upgrade-deps" in words:
        return [f"downloads with '{base} -m venv --upgrade-deps'; {_TO_COMPONENTS}"]
    return []


def _option_value(arguments: list[str], option: str) -> str | None:
    index = arguments.index(option) if option in arguments else -1
    return arguments[index + 1] if 0 <= index < len(arguments) - 1 else None


def _editor(base: str, family: str, arguments: list[str]) -> list[str]:
    """awk and sed programs that run commands (system(), getline from a command, sed's e)."""
    programs = [w for w in arguments if not w.startswith("-")][:1]
    programs += [
        arguments[i + 1] for i, w in enumerate(arguments[:-1]) if w in {"-e", "--expression"}
    ]
    if any(_EDITORS[family].search(program) for program in programs):
        return [
            (
                f"runs commands from a {base} program, in a box that builds with the network; "
                "run them as commands of the RUN line, where the check reads them"
            )
        ]
    return []


def _family(base: str) -> str:
    """``python3.11`` is python, ``pip3`` pip: a versioned interpreter is its family."""
    family = match.group(1) if (match := _VERSIONED.match(base)) else base
    return "python" if family == "pypy" else family


def _hides(tool: str, name: str) -> bool:
    """Whether ``tool`` under the new ``name`` runs what the check can no longer name: a
    downloader, a shell, a wrapper or an interpreter, unless the new name is read the same way
    (``python3`` as ``python``, ``bash`` as ``sh``). busybox runs the applet its name says,
    which the check reads by that name, or, named ``busybox…``, the one its first word says."""
    if _family(tool) == _family(name) or (tool in _SHELLS and name in _SHELLS):
        return False
    if tool in {"busybox", "toybox"}:
        return name.startswith(tool)
    kinds = (_FETCHERS, {"curl", "wget"}, _SHELLS, _WRAPPERS, _CODE_OPTIONS)
    return any(tool in kind or _family(tool) in kind for kind in kinds)


def _renames(arguments: list[str]) -> list[str]:
    operands = [w for w in arguments if not w.startswith("-")]
    if len(operands) < 2 or operands[-1].endswith("/"):
        return []
    target = operands[-1].rsplit("/", 1)[-1]
    for source in operands[:-1]:
        tool = source.rsplit("/", 1)[-1]
        if _hides(tool, target):
            return [
                (
                    f"puts {tool!r} under another name ({operands[-1]!r}), which hides what later "
                    f"commands run; {_TO_COMPONENTS}"
                )
            ]
    return []


def _tool(
    base: str, family: str, arguments: list[str], network: bool, assignments: list[str]
) -> list[str]:
    """Downloaders, language package managers, OS package managers and builds that fetch."""
    verbs = _verbs(arguments)
    what = " ".join([base, *verbs[:1]])
    if family in _FETCHERS or base in _FETCHERS:
        return [_downloads(base)] if verbs else []
    if family == "git":
        return _git(arguments)
    if family == "uv" and verbs[:1] == ["pip"]:
        return (
            [_downloads(f"uv pip {verbs[1]}")]
            if verbs[1:2] and verbs[1] in {"install", "sync", "download"}
            else []
        )
    if family == "go":
        return _go(verbs, arguments, network, assignments)
    if family == "yarn" and not verbs and not arguments:
        return [_downloads("yarn")]  # bare `yarn` installs
    if family in _DOWNLOAD_VERBS and verbs and verbs[0] in _DOWNLOAD_VERBS[family]:
        return [_downloads(what)]
    offline = {"--offline", "--frozen"} & set(arguments)
    if family == "cargo" and network and verbs and verbs[0] in _CARGO_BUILDS and not offline:
        return [_may_download(what, "pass --offline (or --frozen) with vendored crates")]
    if family in _PACKAGE_MANAGERS or family == "rpm":
        return _packages(base, verbs, arguments, network)
    return []


def _verbs(arguments: list[str]) -> list[str]:
    """The words that are not options (nor an option's value)."""
    verbs: list[str] = []
    skip = False
    for word in arguments:
        if skip:
            skip = False
        elif word.startswith(("-", "+")):
            skip = word in _VALUED
        else:
            verbs.append(word)
    return verbs


def _downloads(what: str) -> str:
    return f"downloads with {what!r}; {_TO_COMPONENTS}"


def _may_download(what: str, instead: str) -> str:
    return (
        f"{what!r} may download dependencies, and this box builds with the network "
        f"(`network: true`); {instead}"
    )


def _git(arguments: list[str]) -> list[str]:
    verbs = _verbs(arguments)
    configured = _option_value(arguments, "-c") or ""
    if "alias." in configured or (verbs[:1] == ["config"] and any("alias." in w for w in verbs)):
        return ["sets a git alias, which hides the command it runs; call git plainly"]
    if not verbs:
        return []
    verb = verbs[0]
    if verb in _DOWNLOAD_VERBS["git"]:
        return [_downloads(f"git {verb}")]
    if verbs[:2] in (["remote", "update"], ["lfs", "pull"], ["lfs", "fetch"]):
        return [_downloads(f"git {verbs[0]} {verbs[1]}")]
    if verb == "archive" and any(w.startswith("--remote") for w in arguments):
        return [_downloads("git archive --remote")]
    return []


def _go(verbs: list[str], arguments: list[str], network: bool, assignments: list[str]) -> list[str]:
    if not verbs:
        return []
    verb = verbs[0]
    if verb == "get" or verbs[:2] == ["mod", "download"]:
        return [_downloads(" ".join(["go", *verbs[: 2 if verb == "mod" else 1]]))]
    if verb == "install" and any("@" in word for word in verbs[1:]):
        return [_downloads("go install")]
    offline = "-mod=vendor" in arguments or "GOPROXY=off" in assignments
    if network and verb in _GO_BUILDS and not offline:
        instead = "vendor the modules and pass -mod=vendor, or set GOPROXY=off"
        return [_may_download(f"go {verb}", instead)]
    return []


def _packages(base: str, verbs: list[str], arguments: list[str], network: bool) -> list[str]:
    url = next((w for w in verbs if "://" in w), None)
    action = verbs[0] if verbs and verbs[0] != url else ""
    if url is not None:
        return [_downloads(" ".join(w for w in (base, action, url) if w))]
    unsigned = next((w for w in arguments if w in _NO_SIGNATURE or _unsigned_option(w)), None)
    if unsigned is not None:
        return [
            (
                f"{base} {unsigned} turns off a check on what the package manager installs; "
                "install only signed packages from the distribution's repositories"
            )
        ]
    if base == "rpm" or network or not action or action in _OFFLINE_ACTIONS:
        return []
    what = f"{base} {action}"
    return [
        (
            f"{what!r} needs the network, but box.yaml does not allow it; set `network: true` in "
            "box.yaml"
        )
    ]


def _unsigned_option(word: str) -> bool:
    return ("=" in word or "::" in word) and _NO_SIGNATURE_OPTION.search(word) is not None


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
    return [s for s in _flags_and_args(value)[1][:-1] if not _HEREDOC.match(s)]


def _from_flag(value: str) -> str | None:
    flags, _ = _flags_and_args(value)
    return next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
