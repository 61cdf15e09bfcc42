"""Box definitions, ``buildboxes/<box>/box.yaml`` and its Dockerfile, checked with the library."""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from buildbox.define import yamldoc
from buildbox.define.dockerfile import check_dockerfile
from buildbox.define.library import Library, Probe
from buildbox.define.lock import LOCK_FILE, PROOF_DIR, LockedPackage, PackageLock
from buildbox.define.lock import problems as lock_problems
from buildbox.errors import BuildboxError, Problem
from buildbox.oci.refs import is_pinned
from buildbox.settings import Settings

BOX_FILE = "box.yaml"
DOCKERFILE = "Dockerfile"
#: A box's name is a component of its image's repository path (OCI distribution spec).
BOX_NAME = re.compile(r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*")


@dataclass(frozen=True)
class BoxProbe:
    """A probe of the box's own (of its OS packages), beside its components' probes.

    ``expect`` may name a locked package's version: ``{version:gcc-14}`` (as locked, e.g.
    14.2.0-19) or ``{upstream:gcc-14}`` (without epoch, Debian revision and +/~ suffixes,
    e.g. 14.2.0), so that a new lock moves the expectation with it.
    """

    name: str
    probe: Probe


_PLACEHOLDER = re.compile(r"\{(version|upstream):([a-z0-9][a-z0-9+.-]*)\}")


def upstream_version(version: str) -> str:
    """``1:2.47.3-0+deb13u1`` -> ``2.47.3``: the upstream part of a Debian version."""
    plain = version.partition(":")[2] or version
    plain = plain.rsplit("-", 1)[0] if "-" in plain else plain
    return re.split(r"[+~]", plain, maxsplit=1)[0]


@dataclass(frozen=True)
class Bootstrap:
    """A base assembled by mmdebstrap from locked packages, instead of pulled from a registry."""

    suite: str
    variant: str
    mirror: str
    #: The archive keyring (relative to the project root) that the lock's InRelease files are
    #: verified with; "" for define.lock.DEFAULT_KEYRING.
    keyring: str = ""

    @property
    def name(self) -> str:
        """What labels and the SBOM call the base (its content digest pins it)."""
        return f"bootstrap:{self.suite}/{self.variant}"


@dataclass(frozen=True)
class Box:
    """One buildbox: its own version, a pinned base, the platforms it builds, its components."""

    name: str
    directory: Path
    version: str
    base: str
    platforms: tuple[str, ...]
    components: tuple[str, ...]
    network: bool = False
    description: str = ""
    #: OS packages to install (``name`` or ``name=version``), pinned by the lock.
    packages: tuple[str, ...] = ()
    #: The lock of ``packages`` (None when the box lists none).
    lock: PackageLock | None = None
    #: An archive snapshot (``20250520T000000Z``) the packages are resolved against, or "".
    snapshot: str = ""
    #: The base is bootstrapped from the lock (``packages`` are then the base's extras).
    bootstrap: Bootstrap | None = None
    #: Probes of the box's own, run by verify with the components' (``expect`` unresolved).
    probes: tuple[BoxProbe, ...] = ()
    #: What the base's libraries provide, by symbol-version family: (("GLIBC", "2.17"), ...).
    provides: tuple[tuple[str, str], ...] = ()
    #: Components installed on only some of the box's platforms: ((name, (platform, ...)), ...).
    component_platforms: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def installs(self, component: str, platform: str) -> bool:
        """Whether ``component`` (one of the box's) is installed on ``platform``."""
        return platform in dict(self.component_platforms).get(component, self.platforms)

    def resolved_probes(self, platform: str) -> tuple[BoxProbe, ...]:
        """The box's probes for ``platform``, package versions filled in from the lock."""
        versions = {p.name: p.version for p in self.locked(platform)}

        def fill(match: re.Match[str]) -> str:
            version = versions.get(match.group(2))
            if version is None:
                return match.group(0)  # check reports it; verify then fails on it
            return version if match.group(1) == "version" else upstream_version(version)

        return tuple(
            BoxProbe(p.name, Probe(p.probe.command, _PLACEHOLDER.sub(fill, p.probe.expect)))
            for p in self.probes
        )

    @property
    def installs_packages(self) -> bool:
        """The Dockerfile installs locked packages (a bootstrapped base has them already)."""
        return bool(self.packages) and self.bootstrap is None

    @property
    def pinned(self) -> bool:
        """The base is exactly known: pinned by digest, or bootstrapped from a lock."""
        return self.bootstrap is not None or is_pinned(self.base)

    @property
    def release_tag(self) -> str:
        return f"v{self.version}"

    @property
    def dockerfile(self) -> Path:
        return self.directory / DOCKERFILE

    def platforms_for(self, platform: str | None) -> tuple[str, ...]:
        """``platform`` (which the box must build), or all of the box's platforms when None."""
        if platform is None:
            return self.platforms
        if platform not in self.platforms:
            raise BuildboxError(
                f"box {self.name} does not build for {platform}; its platforms are "
                f"{', '.join(self.platforms)} (buildboxes/{self.name}/{BOX_FILE})"
            )
        return (platform,)

    def locked(self, platform: str) -> tuple[LockedPackage, ...]:
        """The locked packages for ``platform`` (none when the box lists no packages)."""
        if self.lock is None or platform not in self.lock.platforms:
            return ()
        return self.lock.platforms[platform].packages

    def files(self) -> tuple[Path, ...]:
        """The box's own files that go into its build context (all but box.yaml and the lock,
        whose packages go in as verified .debs, and the lock's proof); a link leaving the box is
        an error."""
        for link, target in leaving_links(self.directory):
            raise BuildboxError(f"{link}: {leaving_message(self.directory, target)}")
        return tuple(
            sorted(
                path
                for path in self.directory.rglob("*")
                if path.is_file()
                and path.relative_to(self.directory).as_posix() not in (BOX_FILE, LOCK_FILE)
                and path.relative_to(self.directory).parts[0] != PROOF_DIR
            )
        )


def leaving_links(directory: Path) -> list[tuple[Path, str]]:
    """Every symbolic link under ``directory`` (to a file or a directory) that resolves outside
    it, with the target it names: a link would carry any file of the machine (a checkout's
    .git/config holds the CI job's token) into the build context."""
    inside = directory.resolve()
    found = []
    for parent, dirs, names in os.walk(directory):  # links to directories are not entered
        for name in sorted([*dirs, *names]):
            path = Path(parent) / name
            if path.is_symlink() and not path.resolve().is_relative_to(inside):
                found.append((path, os.readlink(path)))
    return sorted(found)


def leaving_message(directory: Path, target: str) -> str:
    return (
        f"a symbolic link to {target}, outside the box directory; box files must stay inside "
        f"{directory.parent.name}/{directory.name} (copy the file in instead)"
    )


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a box (its image repository), or None."""
    if BOX_NAME.fullmatch(name):
        return None
    words = re.findall(r"[a-z0-9]+", name.lower())
    return (
        f"{name!r} is not a valid box name: it names the box's image repository, so it must "
        f"match {BOX_NAME.pattern} (lowercase letters and digits, joined by '.', '_', '__' or "
        f"dashes); rename the directory, e.g. to {'-'.join(words) or 'box'}"
    )


def _bootstrap(data: object) -> Bootstrap | None:
    if not isinstance(data, dict):
        return None
    return Bootstrap(
        str(data["suite"]),
        str(data.get("variant", "minbase")),
        str(data["mirror"]),
        str(data.get("keyring", "")),
    )


def box_directories(settings: Settings) -> list[Path]:
    if not settings.boxes_dir.is_dir():
        return []
    return sorted(p for p in settings.boxes_dir.iterdir() if p.is_dir())


def declared_components(directory: Path) -> set[str]:
    """The component names a box's box.yaml lists, read leniently (the box may be invalid)."""
    document = yamldoc.load(directory / BOX_FILE, BOX_FILE, [])
    listed = document.get("components") if isinstance(document, dict) else None
    return {name for name in listed if isinstance(name, str)} if isinstance(listed, list) else set()


def load_box(
    directory: Path,
    settings: Settings,
    library: Library,
    problems: list[Problem],
    allow_floating_base: bool = False,
    check_lock: bool = True,
) -> Box | None:
    """The box in ``directory`` if it is valid; otherwise None, with every problem appended.

    ``allow_floating_base`` accepts a base not pinned by digest (local experiments only);
    without ``check_lock`` a missing or stale package lock is no problem (`invoke lock`).
    """
    box_file = directory / BOX_FILE
    shown = settings.shown(box_file)
    found: list[Problem] = []
    if wrong_name := name_problem(directory.name):
        found.append(Problem(settings.shown(directory), None, "", wrong_name))
    if not (directory / DOCKERFILE).is_file():
        found.append(
            Problem(
                settings.shown(directory), None, DOCKERFILE, "missing; every box has a Dockerfile"
            )
        )
    found.extend(
        Problem(settings.shown(link), None, "link", leaving_message(directory, target))
        for link, target in leaving_links(directory)
    )
    document = yamldoc.load(box_file, shown, found)
    box = None
    if document is not None:
        schema_problems = [problem for _, problem in yamldoc.validate(document, "box", shown)]
        found.extend(schema_problems)
        if not schema_problems:
            bootstrap = _bootstrap(document.get("bootstrap"))
            box = Box(
                name=directory.name,
                directory=directory,
                version=str(document["version"]),
                base=bootstrap.name if bootstrap else str(document.get("base", "")),
                platforms=tuple(document["platforms"]),
                components=tuple(document["components"]),
                network=document.get("network", False),
                description=document.get("description", ""),
                packages=tuple(
                    document["bootstrap"].get("packages", ()) if bootstrap
                    else document.get("packages", ())
                ),
                snapshot=document.get("snapshot", ""),
                bootstrap=bootstrap,
                probes=tuple(
                    BoxProbe(name, Probe(tuple(p["command"]), str(p["expect"])))
                    for name, p in document.get("probes", {}).items()
                ),
                provides=tuple(sorted(document.get("provides", {}).items())),
                component_platforms=tuple(
                    (name, tuple(platforms))
                    for name, platforms in document.get("component_platforms", {}).items()
                ),
            )  # fmt: skip
            found.extend(_check_box(box, document, shown, settings, library, allow_floating_base))
            if box.packages or box.bootstrap:
                lock, wrong = lock_problems(
                    directory / LOCK_FILE,
                    settings.shown(directory / LOCK_FILE),
                    box.base,
                    box.snapshot,
                    box.packages,
                    box.platforms,
                    box.name,
                    (*settings.allow_http_hosts, *_mirror_host(box)),
                )
                found.extend(wrong if check_lock else ())
                box = replace(box, lock=lock)
            if check_lock:
                found.extend(_probe_problems(box, document, shown))
    if (directory / DOCKERFILE).is_file():
        network = box.network if box else True  # unknown: do not guess about package managers
        found.extend(
            check_dockerfile(
                directory / DOCKERFILE, settings.shown(directory / DOCKERFILE), network=network
            )
        )
    problems.extend(found)
    return box if not found else None


def _mirror_host(box: Box) -> tuple[str, ...]:
    """The archive box.yaml names (over http too: apt verifies it by its signed InRelease)."""
    host = urlsplit(box.bootstrap.mirror).hostname if box.bootstrap else None
    return (host,) if host else ()


def _check_box(
    box: Box,
    document: object,
    shown: str,
    settings: Settings,
    library: Library,
    allow_floating_base: bool,
) -> list[Problem]:
    found: list[Problem] = []

    def problem(path: yamldoc.FieldPath, message: str) -> None:
        found.append(
            Problem(shown, yamldoc.line_of(document, path), yamldoc.field_name(path), message)
        )

    has_base, has_bootstrap = "base" in document, box.bootstrap is not None  # type: ignore[operator]
    if has_base == has_bootstrap:
        problem(
            ("base",),
            "a box has either `base:` (an image pinned by digest) or `bootstrap:` (a base "
            "assembled from locked packages), not " + ("both" if has_base else "neither"),
        )
    if has_bootstrap and "packages" in document:  # type: ignore[operator]
        problem(
            ("packages",),
            "a bootstrapped base takes its packages in bootstrap.packages (they are part of it)",
        )
    if not box.pinned and not allow_floating_base:
        problem(
            ("base",),
            f"{box.base!r} is not pinned by digest; write it as name:tag@sha256:<64 hex> "
            "(`docker buildx imagetools inspect` or `skopeo inspect` print the digest)",
        )
    for index, name in _repeats(box.platforms):
        problem(("platforms", index), f"{name!r} is listed twice")
    for index, platform in enumerate(box.platforms):
        if platform not in settings.platforms:
            problem(
                ("platforms", index),
                f"{platform!r} is not a platform this project builds; expected one of "
                f"{', '.join(settings.platforms)} (buildbox.platforms in invoke.yaml)",
            )
    for index, name in _repeats(box.packages):
        problem(("packages", index), f"{name!r} is listed twice")
    for index, name in _repeats(box.components):
        problem(("components", index), f"{name!r} is listed twice")
    for name, platforms in box.component_platforms:
        if name not in box.components:
            problem(("component_platforms", name), f"{name!r} is not one of the box's components")
        for platform in platforms:
            if platform not in box.platforms:
                problem(
                    ("component_platforms", name),
                    f"{platform} is not one of the box's platforms ({', '.join(box.platforms)})",
                )
    for index, name in enumerate(box.components):
        component = library.get(name)
        if name in library.broken:
            problem(("components", index), f"{name!r} has problems in shared/components.yaml")
            continue
        if component is None:
            problem(
                ("components", index),
                f"{name!r} is not in shared/components.yaml; add it to the "
                "library or remove it from the box",
            )
            continue
        missing = [
            p for p in box.platforms if box.installs(name, p) and component.artifact(p) is None
        ]
        if missing:
            problem(
                ("components", index),
                f"{name!r} has no artifact for {', '.join(missing)}; add "
                f"components.{name}.artifacts.{missing[0]} to shared/components.yaml",
            )
    return found


def _probe_problems(box: Box, document: object, shown: str) -> list[Problem]:
    """A probe may only name packages the lock has."""
    locked = {package.name for platform in box.platforms for package in box.locked(platform)}
    found = []
    for probe in box.probes:
        for _, package in _PLACEHOLDER.findall(probe.probe.expect):
            if package not in locked:
                path: yamldoc.FieldPath = ("probes", probe.name, "expect")
                found.append(
                    Problem(
                        shown,
                        yamldoc.line_of(document, path),
                        yamldoc.field_name(path),
                        f"names {package!r}, which packages.lock does not have",
                    )
                )
    return found


def _repeats(values: tuple[str, ...]) -> list[tuple[int, str]]:
    """(index, value) of every occurrence after the first of a value listed more than once."""
    seen: Counter[str] = Counter()
    repeats = []
    for index, value in enumerate(values):
        seen[value] += 1
        if seen[value] > 1:
            repeats.append((index, value))
    return repeats
