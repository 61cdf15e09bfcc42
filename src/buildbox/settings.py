"""The project's settings, from invoke's configuration (``invoke.yaml``, ``INVOKE_BUILDBOX_*``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from buildbox.errors import BuildboxError

#: Defaults for the ``buildbox`` section of invoke's configuration; ``invoke.yaml`` overrides them.
DEFAULTS: dict[str, Any] = {
    "root": ".",
    "registry": "registry.example.com/buildbox",
    "cache_dir": "",
    "platforms": ["linux/amd64", "linux/arm64"],
    "allow_http_hosts": [],
    "mirrors": {},
    "fetch_workers": 4,
    "fetch_retries": 4,
    "fetch_backoff": 0.5,
    "fetch_timeout": 30.0,
}

COMPONENTS_FILE = Path("shared/components.yaml")
INSTALL_SCRIPTS_DIR = Path("shared/install")
BOXES_DIR = Path("buildboxes")


@dataclass(frozen=True)
class Settings:
    """Where the project is and how it publishes; plain data for the pipeline stages."""

    root: Path
    registry: str
    cache_dir: Path
    platforms: tuple[str, ...]
    allow_http_hosts: tuple[str, ...] = ()
    #: URL prefix -> replacement prefixes, tried in order before the upstream URL.
    mirrors: tuple[tuple[str, tuple[str, ...]], ...] = ()
    fetch_workers: int = 4
    fetch_retries: int = 4
    fetch_backoff: float = 0.5
    fetch_timeout: float = 30.0

    @property
    def components_file(self) -> Path:
        return self.root / COMPONENTS_FILE

    @property
    def boxes_dir(self) -> Path:
        return self.root / BOXES_DIR

    @property
    def install_scripts_dir(self) -> Path:
        return self.root / INSTALL_SCRIPTS_DIR

    def shown(self, path: Path) -> str:
        """``path`` as a user should read it: relative to the project root where it is inside."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def from_config(config: Mapping[str, Any]) -> Settings:
    """Settings from the ``buildbox`` section of invoke's configuration, checked for type."""
    section = {**DEFAULTS, **dict(config)}

    def text(key: str) -> str:
        value = section[key]
        if not isinstance(value, str):
            raise BuildboxError(
                f"invoke.yaml: buildbox.{key}: expected a string, got {value!r}; "
                f"set it in invoke.yaml or INVOKE_BUILDBOX_{key.upper()}."
            )
        return value

    def words(key: str) -> tuple[str, ...]:
        value = section[key]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise BuildboxError(
                f"invoke.yaml: buildbox.{key}: expected a list of strings, got {value!r}."
            )
        return tuple(value)

    def number(key: str, kind: type[int | float], minimum: float) -> Any:
        value = section[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise BuildboxError(
                f"invoke.yaml: buildbox.{key}: expected a number of at least {minimum}, "
                f"got {value!r}."
            )
        return kind(value)

    def mirrors() -> tuple[tuple[str, tuple[str, ...]], ...]:
        value = section["mirrors"]
        if not isinstance(value, Mapping):
            raise BuildboxError(
                "invoke.yaml: buildbox.mirrors: expected a mapping of URL prefix to mirror "
                f"prefix (or a list of them), got {value!r}."
            )
        rules = []
        for prefix, targets in value.items():
            listed = [targets] if isinstance(targets, str) else targets
            if not isinstance(listed, list | tuple) or not all(isinstance(t, str) for t in listed):
                raise BuildboxError(
                    f"invoke.yaml: buildbox.mirrors.{prefix}: expected a URL prefix or a list "
                    f"of them, got {targets!r}."
                )
            rules.append((str(prefix), tuple(listed)))
        # The longest matching prefix is the most specific rule: try it first.
        return tuple(sorted(rules, key=lambda rule: -len(rule[0])))

    cache_dir = text("cache_dir")
    return Settings(
        root=Path(text("root")).resolve(),
        registry=text("registry"),
        cache_dir=Path(cache_dir).expanduser()
        if cache_dir
        else Path(platformdirs.user_cache_dir("buildbox")),
        platforms=words("platforms"),
        allow_http_hosts=words("allow_http_hosts"),
        mirrors=mirrors(),
        fetch_workers=number("fetch_workers", int, 1),
        fetch_retries=number("fetch_retries", int, 0),
        fetch_backoff=number("fetch_backoff", float, 0),
        fetch_timeout=number("fetch_timeout", float, 0.1),
    )
