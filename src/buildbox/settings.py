"""The project's settings: each one's type and default, read from invoke's configuration.

Values come from ``invoke.yaml`` (and invoke's other configuration files) and, for one run, from
``INVOKE_BUILDBOX_<KEY>`` environment variables. invoke casts such a variable to the type of the
value it overrides, which fails with a traceback for lists and maps and for ``2.5`` over ``30``;
so the tasks take the ``INVOKE_BUILDBOX_*`` variables out of invoke's way (:func:`take_environment`)
and this module parses them by the setting's own type, with one clear line for a bad value.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildbox.errors import BuildboxError

ENV_PREFIX = "INVOKE_BUILDBOX_"
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
    #: Registry operations: attempts on transient failures, total seconds for one, first backoff.
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
    """A value of the wrong type; the message says what is expected."""


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


def _number(kind: type[int | float], minimum: float) -> Callable[[Any], Any]:
    what = "a whole number" if kind is int else "a number"

    def parse(value: Any) -> int | float:
        if isinstance(value, str):  # from the environment
            try:
                value = kind(value.strip())
            except ValueError:
                raise _InvalidValueError(f"{what} of at least {minimum:g}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _InvalidValueError(f"{what} of at least {minimum:g}")
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise _InvalidValueError(f"{what} of at least {minimum:g}")
        if value < minimum:
            raise _InvalidValueError(f"{what} of at least {minimum:g}")
        return kind(value)

    return parse


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
    "registry": Spec("", _text),
    "local_registry_port": Spec(5000, _number(int, 1)),
    "cache_dir": Spec("", _text),
    "platforms": Spec(["linux/amd64", "linux/arm64"], _words),
    "allow_http_hosts": Spec([], _words),
    "mirrors": Spec({}, _mirrors),
    "fetch_workers": Spec(4, _number(int, 1)),
    "fetch_retries": Spec(4, _number(int, 0)),
    "fetch_backoff": Spec(0.5, _number(float, 0)),
    "fetch_timeout": Spec(30.0, _number(float, 0.1)),
    "builder": Spec("auto", _choice("auto", "buildkit", "classic")),
    "buildx_builder": Spec("", _text),
    "signing_key": Spec("", _text),
    "signing_public_key": Spec("", _text),
    "signing_identity": Spec("", _text),
    "transparency_log": Spec(True, _flag),
    "registry_attempts": Spec(6, _number(int, 1)),
    "registry_time_limit": Spec(300.0, _number(float, 1)),
    "registry_backoff": Spec(0.5, _number(float, 0)),
    "registry_chunk_mib": Spec(16, _number(int, 1)),
    "registry_workers": Spec(4, _number(int, 1)),
    "registry_ca_bundle": Spec("", _text),
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
    :func:`take_environment` took; a value of the wrong type is one clear error."""
    unknown = sorted(set(environment) - set(SPECS))
    if unknown:
        raise BuildboxError(
            f"{ENV_PREFIX}{unknown[0].upper()} is not a buildbox setting; the settings are "
            + ", ".join(f"{ENV_PREFIX}{name.upper()}" for name in SPECS)
        )
    values: dict[str, Any] = {}
    for name, spec in SPECS.items():
        if name in environment:
            raw, where = environment[name], f"{ENV_PREFIX}{name.upper()}"
        else:
            raw, where = config.get(name, spec.default), f"invoke.yaml: buildbox.{name}"
        try:
            values[name] = spec.parse(raw)
        except _InvalidValueError as error:
            raise BuildboxError(f"{where}: expected {error}, got {raw!r}") from None
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
            "cache_dir": Path(cache_dir).expanduser() if cache_dir else Path(_user_cache_dir()),
        }
    )


def _user_cache_dir() -> str:
    import platformdirs  # here: only the default needs it

    return str(platformdirs.user_cache_dir("buildbox"))
