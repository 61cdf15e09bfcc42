"""`invoke doctor`: what the engine offers the toolkit, and what a missing piece means."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from buildbox.build.buildkit import buildx_version
from buildbox.build.emulation import check_emulation, host_platform
from buildbox.build.engine import Engine, EngineFacts
from buildbox.errors import BuildboxError
from buildbox.settings import Settings


@dataclass(frozen=True)
class Finding:
    topic: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class BuildxBuilder:
    name: str
    driver: str
    status: str
    platforms: tuple[str, ...]


def findings(
    engine: EngineFacts,
    where: str,
    buildx: str | None,
    builders: list[BuildxBuilder],
    emulation: Mapping[str, str | None],
    settings: Settings,
) -> list[Finding]:
    """What ``invoke doctor`` reports, from plain facts (``emulation``: platform -> problem)."""
    found = [
        Finding("engine", True, f"Docker Engine {engine.version} (API {engine.api}) at {where}"),
        Finding(
            "image store",
            True,
            f"{engine.store} ({engine.driver}); build, publish and reproduce work on both",
        ),
    ]
    if buildx:
        found.append(Finding("buildx", True, buildx))
    else:
        found.append(
            Finding(
                "buildx",
                settings.builder != "buildkit",
                "missing: builds use the classic builder, which Docker deprecated; install "
                "buildx (Debian: apt-get install docker-buildx) for BuildKit",
            )
        )
    chosen = "classic" if settings.builder == "classic" or not buildx else "buildkit"
    wanted = settings.buildx_builder or "the current buildx builder"
    found.append(
        Finding(
            "builder",
            settings.builder != "buildkit" or bool(buildx),
            f"buildbox.builder is {settings.builder}: builds use {chosen}"
            + (f" on {wanted}" if chosen == "buildkit" else ""),
        )
    )
    for builder in builders:
        found.append(
            Finding(
                f"buildx builder {builder.name}",
                builder.status in ("running", "inactive"),
                f"driver {builder.driver}, {builder.status}; platforms "
                f"{', '.join(builder.platforms) or 'unknown until it runs'}",
            )
        )
    if settings.buildx_builder and settings.buildx_builder not in {b.name for b in builders}:
        found.append(
            Finding(
                "builder",
                False,
                f"buildbox.buildx_builder names {settings.buildx_builder!r}, which buildx does "
                "not know (`docker buildx create` makes one)",
            )
        )
    for platform, problem in sorted(emulation.items()):
        found.append(
            Finding(
                f"platform {platform}",
                problem is None,
                "native" if platform == host_platform() else problem or "emulated (binfmt)",
            )
        )
    return found


def examine(engine: Engine, settings: Settings) -> list[Finding]:
    """Ask the engine, buildx and the kernel, then judge (see :func:`findings`)."""
    cli = shutil.which("docker")
    buildx = buildx_version(cli, engine.where) if cli else None
    builders = _builders(cli, engine) if cli and buildx else []
    emulation: dict[str, str | None] = {}
    for platform in settings.platforms:
        try:
            check_emulation(platform)
            emulation[platform] = None
        except BuildboxError as error:
            emulation[platform] = str(error)
    return findings(engine.describe(), engine.where, buildx, builders, emulation, settings)


def _builders(cli: str, engine: Engine) -> list[BuildxBuilder]:
    listed = subprocess.run(
        [cli, "buildx", "ls", "--format", "json"], capture_output=True, text=True, timeout=60,
        check=False, env=engine.cli_environment(),
    )  # fmt: skip
    builders: dict[str, BuildxBuilder] = {}
    for line in listed.stdout.splitlines() if listed.returncode == 0 else []:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        nodes = entry.get("Nodes") or [{}]
        builders[str(entry.get("Name", "?"))] = BuildxBuilder(
            name=str(entry.get("Name", "?")),
            driver=str(entry.get("Driver", "?")),
            status=str(nodes[0].get("Status", "inactive")),
            platforms=tuple(p for node in nodes for p in node.get("Platforms") or []),
        )
    return list(builders.values())
