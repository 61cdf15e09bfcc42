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

    cache_dir = text("cache_dir")
    return Settings(
        root=Path(text("root")).resolve(),
        registry=text("registry"),
        cache_dir=Path(cache_dir).expanduser()
        if cache_dir
        else Path(platformdirs.user_cache_dir("buildbox")),
        platforms=words("platforms"),
        allow_http_hosts=words("allow_http_hosts"),
    )
