"""The project's settings: each one's type and default, read from invoke's configuration.

Values come from ``invoke.yaml`` (and invoke's other configuration files) and, for one run, from
``INVOKE_BUILDBOX_<KEY>`` environment variables. invoke casts such a variable to the type of the
value it overrides, which fails with a traceback for lists and maps and for ``2.5`` over ``30``;
so the tasks take the ``INVOKE_BUILDBOX_*`` variables out of invoke's way (:func:`take_environment`)
and this module parses them by the setting's own type, with one clear line for a bad value.

invoke merges ``invoke.yaml`` silently (a typo is ignored, a duplicate key keeps the last) or with
a traceback (a section that is not a mapping, a list where a mapping was); so the tasks check the
project's file first (:func:`check_project_file`), naming its line, before invoke reads it.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Callable, Collection, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildbox.errors import BuildboxError, Problem

ENV_PREFIX = "INVOKE_BUILDBOX_"
#: The section of invoke's configuration that holds the settings.
SECTION = "buildbox"
#: The project's configuration files invoke reads (the first found), beside tasks.py.
PROJECT_FILES = ("invoke.yaml", "invoke.yml")
COMPONENTS_FILE = Path("shared/components.yaml")
INSTALL_SCRIPTS_DIR = Path("shared/install")
#: Build recipes of components built from source: <component>.sh (install kind `source`).
BUILD_RECIPES_DIR = Path("shared/build")
BOXES_DIR = Path("buildboxes")

Mirrors = tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class Settings:
    """Where the project is and how it publishes; plain data for the pipeline stages."""

    root: Path
    registry: str
    cache_dir: Path
    platforms: tuple[str, ...]
    allow_http_hosts: tuple[str, ...] = ()
    #: URL prefix -> replacement prefixes, tried in order (most specific prefix first).
    mirrors: Mirrors = ()
    fetch_workers: int = 4
    fetch_retries: int = 4
    fetch_backoff: float = 0.5
    fetch_timeout: float = 30.0
    #: auto (BuildKit where the engine and buildx have it, else classic), buildkit or classic.
    builder: str = "auto"
    #: The buildx builder instance BuildKit builds on ("": the current one, e.g. the engine's).
    buildx_builder: str = ""
    #: The registry is the one the toolkit runs on loopback (``buildbox.registry`` was empty).
    local_registry: bool = False
    #: How releases are signed: "" (not signed), a cosign private key file (relative to the
    #: project root), ``env://VARIABLE`` (the key's PEM in that variable), or ``sigstore``
    #: (keyless, with the CI's OIDC identity). Its password comes from COSIGN_PASSWORD.
    signing_key: str = ""
    #: The public key releases are verified with (audit, verify-release): a file or env://.
    signing_public_key: str = ""
    #: Keyless signing identity verify-release expects (sigstore): the workflow's URL.
    signing_identity: str = ""
    #: Upload signatures to (and check them in) Sigstore's transparency log, Rekor.
    transparency_log: bool = True
    #: Registry requests: tries of one request on transient failures (while no other request
    #: succeeds), seconds for all of a command's registry requests together, first backoff.
    registry_attempts: int = 6
    registry_time_limit: float = 300.0
    registry_backoff: float = 0.5
    #: Blobs larger than this many MiB upload in chunks of this size (resumable).
    registry_chunk_mib: int = 16
    #: Blobs uploaded at once.
    registry_workers: int = 4
    #: PEM file (relative to the project root) of the CAs the publishing registry's TLS
    #: certificate is checked against; set, a loopback registry is reached over https too.
    #: Empty: the system's CAs (or REQUESTS_CA_BUNDLE's).
    registry_ca_bundle: str = ""
    #: Store every input of a release in the registry beside it (an inputs manifest), so that
    #: it can be rebuilt when upstreams have gone (``release.escrow``).
    escrow: bool = True
    #: Where inputs are escrowed, ``host[:port]/path``; empty: the release's own repository.
    escrow_repository: str = ""

    @property
    def components_file(self) -> Path:
        return self.root / COMPONENTS_FILE

    @property
    def boxes_dir(self) -> Path:
        return self.root / BOXES_DIR

    @property
    def install_scripts_dir(self) -> Path:
        return self.root / INSTALL_SCRIPTS_DIR

    @property
    def build_recipes_dir(self) -> Path:
        return self.root / BUILD_RECIPES_DIR

    @property
    def local_registry_dir(self) -> Path:
        """The local registry's configuration, data and generated credentials."""
        return self.cache_dir / "registry"

    @property
    def local_registry_config(self) -> Path:
        """The Docker config directory holding the local registry's credentials (its host's
        only): what the toolkit, cosign and a user's docker client log in with."""
        return self.local_registry_dir / "docker"

    def shown(self, path: Path) -> str:
        """``path`` as a user should read it: relative to the project root where it is inside."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


class _InvalidValueError(ValueError):
    """A value of the wrong type; the message says what is expected. ``echo``: the value may
    be shown back (not when it holds what must not be printed)."""

    def __init__(self, expected: str, *, echo: bool = True) -> None:
        super().__init__(expected)
        self.echo = echo


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _InvalidValueError("a string")
    return value


def _words(value: Any) -> tuple[str, ...]:
    expected = "a list of strings (in a variable: comma-separated, or a JSON list)"
    if isinstance(value, str) and value.lstrip().startswith("["):  # from the environment
        try:
            value = json.loads(value)
        except ValueError:
            raise _InvalidValueError(expected) from None
    elif isinstance(value, str):
        value = [word.strip() for word in value.split(",") if word.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _InvalidValueError(expected)
    return tuple(value)


@dataclass(frozen=True)
class Number:
    """A finite whole number (``kind`` int) or number from ``low`` to ``high``: every count,
    size and time has a range, so that no value hangs a run or overflows later."""

    kind: type[int | float]
    low: float
    high: float

    def __call__(self, value: Any) -> int | float:
        what = "a whole number" if self.kind is int else "a number"
        expected = _InvalidValueError(f"{what} from {self.low:g} to {self.high:g}")
        if isinstance(value, str):  # from the environment
            try:
                value = self.kind(value.strip())
            except ValueError:
                raise expected from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise expected
        if self.kind is int and isinstance(value, float) and not value.is_integer():
            raise expected
        # NaN fails every comparison, so it is refused here with the infinities.
        if not (math.isfinite(value) and self.low <= value <= self.high):
            raise expected
        return self.kind(value)


def _registry(value: Any) -> str:
    text = _text(value)
    # host[:port]/path names no digest, so an @ can only be userinfo (user:password@host).
    if "@" in text:
        raise _InvalidValueError(
            "host[:port]/path without credentials (no user:password@; the value is not shown): "
            "log in with `docker login <host>` or a credential helper, or set "
            "BUILDBOX_REGISTRY_USERNAME and BUILDBOX_REGISTRY_PASSWORD",
            echo=False,
        )
    return text


def _directory(value: Any) -> str:
    """A directory, ``~`` and ``~user`` expanded; "" stays (the default applies)."""
    expanded = os.path.expanduser(_text(value))
    if expanded.startswith("~"):  # os.path leaves it when there is no such user or home
        user = expanded[1:].split("/")[0]
        whose = f"no user {user!r} on this machine" if user else "no home directory (HOME)"
        raise _InvalidValueError(f"a directory (write it in full: {whose} to expand ~ for)")
    return expanded


def _mirrors(value: Any) -> Mirrors:
    expected = (
        "a mapping of URL prefix to a mirror prefix or a list of them (in a variable: a JSON "
        'object such as {"https://dl.google.com/go/": "https://mirror.internal/go/"})'
    )
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _InvalidValueError(expected) from None
    if not isinstance(value, Mapping):
        raise _InvalidValueError(expected)
    rules = []
    for prefix, targets in value.items():
        listed = [targets] if isinstance(targets, str) else targets
        if not isinstance(listed, list | tuple) or not all(isinstance(t, str) for t in listed):
            raise _InvalidValueError(expected)
        rules.append((str(prefix), tuple(listed)))
    # The longest matching prefix is the most specific rule: try it first.
    return tuple(sorted(rules, key=lambda rule: -len(rule[0])))


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise _InvalidValueError("true or false")


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in allowed:
            raise _InvalidValueError(f"one of {', '.join(allowed)}")
        return str(value)

    return parse


@dataclass(frozen=True)
class Spec:
    """One setting: its default (as invoke.yaml would write it) and how to read a value."""

    default: Any
    parse: Callable[[Any], Any]


#: Every setting, in one place: its default and its type.
SPECS: dict[str, Spec] = {
    "root": Spec(".", _text),
    # Empty: a registry the toolkit runs itself on 127.0.0.1:<local_registry_port>.
    "registry": Spec("", _registry),
    "local_registry_port": Spec(5000, Number(int, 1, 65535)),
    "cache_dir": Spec("", _directory),
    "platforms": Spec(["linux/amd64", "linux/arm64"], _words),
    "allow_http_hosts": Spec([], _words),
    "mirrors": Spec({}, _mirrors),
    "fetch_workers": Spec(4, Number(int, 1, 64)),
    "fetch_retries": Spec(4, Number(int, 0, 10)),
    "fetch_backoff": Spec(0.5, Number(float, 0, 30)),
    "fetch_timeout": Spec(30.0, Number(float, 0.1, 3600)),
    "builder": Spec("auto", _choice("auto", "buildkit", "classic")),
    "buildx_builder": Spec("", _text),
    "signing_key": Spec("", _text),
    "signing_public_key": Spec("", _text),
    "signing_identity": Spec("", _text),
    "transparency_log": Spec(True, _flag),
    "registry_attempts": Spec(6, Number(int, 1, 20)),
    # A day: a release that waits longer is hung, not slow.
    "registry_time_limit": Spec(300.0, Number(float, 1, 86400)),
    "registry_backoff": Spec(0.5, Number(float, 0, 30)),
    # Each upload holds a chunk in memory, registry_workers of them at once.
    "registry_chunk_mib": Spec(16, Number(int, 1, 512)),
    "registry_workers": Spec(4, Number(int, 1, 32)),
    "registry_ca_bundle": Spec("", _text),
    "escrow": Spec(True, _flag),
    "escrow_repository": Spec("", _registry),
}
#: The ``buildbox`` section of invoke's configuration before invoke.yaml overrides it.
DEFAULTS: dict[str, Any] = {name: spec.default for name, spec in SPECS.items()}


def take_environment(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Remove the ``INVOKE_BUILDBOX_*`` variables from ``environ`` (so invoke does not cast
    them) and return them by setting name, for :func:`from_config`."""
    environ = os.environ if environ is None else environ
    taken = {}
    for variable in [v for v in environ if v.startswith(ENV_PREFIX)]:
        taken[variable.removeprefix(ENV_PREFIX).lower()] = environ.pop(variable)
    return taken


def restore_environment(
    taken: Mapping[str, str], environ: MutableMapping[str, str] | None = None
) -> None:
    """Put variables :func:`take_environment` took back into ``environ`` (unless set again)."""
    environ = os.environ if environ is None else environ
    for name, value in taken.items():
        environ.setdefault(f"{ENV_PREFIX}{name.upper()}", value)


def from_config(config: Mapping[str, Any], environment: Mapping[str, str] = {}) -> Settings:
    """Settings from the ``buildbox`` section of invoke's configuration and the variables
    :func:`take_environment` took; an unknown setting or a bad value is one clear error."""
    check_environment(environment)
    for name in config:  # from any of invoke's files: ~/.invoke.yaml, `invoke -f FILE`, ...
        if name not in SPECS:
            raise BuildboxError(f"invoke configuration: {SECTION}.{name}: {_unknown(name)}")
    values: dict[str, Any] = {}
    for name, spec in SPECS.items():
        if name in environment:
            values[name] = _parse(name, environment[name], f"{ENV_PREFIX}{name.upper()}")
        else:
            raw = config.get(name, spec.default)
            values[name] = _parse(name, raw, f"invoke.yaml: {SECTION}.{name}")
    cache_dir = values.pop("cache_dir")
    port = values.pop("local_registry_port")
    local = not values["registry"]
    if local:
        values["registry"] = f"127.0.0.1:{port}/buildbox"
    return Settings(
        **{
            **values,
            "local_registry": local,
            "root": Path(values["root"]).resolve(),
            "cache_dir": Path(cache_dir or _user_cache_dir()),
        }
    )


def check_environment(environment: Mapping[str, str]) -> None:
    """Refuse an ``INVOKE_BUILDBOX_*`` variable that names no setting or holds a bad value.

    (invoke itself would ignore the first: it maps variables only onto keys it already has.)
    """
    for name, raw in environment.items():
        variable = f"{ENV_PREFIX}{name.upper()}"
        if name not in SPECS:
            raise BuildboxError(f"{variable} is {_unknown(name, lambda n: ENV_PREFIX + n.upper())}")
        _parse(name, raw, variable)


def project_file(root: Path) -> Path | None:
    """The configuration file invoke reads beside the project's tasks.py, if there is one."""
    return next((root / name for name in PROJECT_FILES if (root / name).is_file()), None)


def check_project_file(path: Path, sections: Collection[str]) -> None:
    """Refuse in ``path`` (invoke.yaml) what invoke would ignore, keep the last of, or fail on
    with a traceback: YAML that does not parse, a duplicate key, a top-level key that is neither
    ``buildbox`` nor one of invoke's own ``sections``, a ``buildbox`` that is not a mapping, an
    unknown setting, a bad value. One error naming the file, line and field."""
    from ruamel.yaml.comments import CommentedMap

    def refuse(line: int | None, field: str, message: str) -> BuildboxError:
        return BuildboxError(str(Problem(str(path), line, field, message)))

    from buildbox import yamlsafe  # here: ruamel loads only when there is a file to read

    try:
        # Bounded (size, nesting, aliases expanded) before invoke's own loader sees it.
        document = yamlsafe.read(path, str(path))
    except OSError as error:
        raise refuse(None, "", f"cannot be read ({error})") from None
    except yamlsafe.YamlError as error:
        if error.reason.startswith("duplicate key"):
            raise refuse(error.line, "", f"{error.reason} (invoke keeps the last)") from None
        raise refuse(error.line, "", error.reason) from None
    if document is None:
        return
    if not isinstance(document, CommentedMap):
        raise refuse(1, "", f"expected a mapping of sections, such as `{SECTION}:`")
    for key in document:
        line = document.lc.key(key)[0] + 1
        if key == SECTION:
            _check_section(document[key], line, refuse)
        elif key not in sections:
            meant = difflib.get_close_matches(str(key), [SECTION, *sections], n=1)
            hint = f"did you mean `{meant[0]}`?" if meant else f"the settings go under `{SECTION}:`"
            raise refuse(line, str(key), f"not a section of {path.name}; {hint}")


def _check_section(section: Any, line: int, refuse: Callable[..., BuildboxError]) -> None:
    from ruamel.yaml.comments import CommentedMap

    if not isinstance(section, CommentedMap):
        raise refuse(
            line,
            SECTION,
            f"expected a mapping of settings ({SECTION}:, then `name: value` lines indented "
            f"below it), got {'nothing' if section is None else repr(_plain(section))}",
        )
    for name, value in section.items():
        at = section.lc.key(name)[0] + 1
        if name not in SPECS:
            raise refuse(at, f"{SECTION}.{name}", _unknown(str(name)))
        plain = _plain(value)
        try:
            SPECS[name].parse(plain)
        except _InvalidValueError as error:
            raise refuse(at, f"{SECTION}.{name}", _expected(error, plain)) from None


def _parse(name: str, raw: Any, where: str) -> Any:
    try:
        return SPECS[name].parse(raw)
    except _InvalidValueError as error:
        raise BuildboxError(f"{where}: {_expected(error, raw)}") from None


def _expected(error: _InvalidValueError, raw: Any) -> str:
    return f"expected {error}, got {raw!r}" if error.echo else f"expected {error}"


def _unknown(name: str, show: Callable[[str], str] = "`{}`".format) -> str:
    meant = difflib.get_close_matches(name, SPECS, n=1)
    if meant:
        return f"not a buildbox setting; did you mean {show(meant[0])}?"
    return "not a buildbox setting; the settings are " + ", ".join(map(show, SPECS))


def _plain(node: Any) -> Any:
    """A round-trip YAML node as plain Python data (what invoke's own loader gives)."""
    if isinstance(node, Mapping):
        return {key: _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(item) for item in node]
    if isinstance(node, bool | str) or node is None:
        return node
    if isinstance(node, float):
        return float(node)
    if isinstance(node, int):
        return int(node)
    return node


def _user_cache_dir() -> str:
    import platformdirs  # here: only the default needs it

    return str(platformdirs.user_cache_dir("buildbox"))
