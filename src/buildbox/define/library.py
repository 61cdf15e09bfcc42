"""The pinned-component library, ``shared/components.yaml``: every download, pinned by sha256."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote, urlsplit

from cyclonedx import spdx
from packageurl import PackageURL

from buildbox.define import yamldoc
from buildbox.errors import Problem
from buildbox.http import is_loopback
from buildbox.settings import Settings

#: The install kind of components built from a source tarball with a recipe in shared/build/.
SOURCE_KIND = "source"


@dataclass(frozen=True)
class Artifact:
    """One downloadable file of a component for one platform."""

    platform: str
    url: str
    sha256: str
    sha256_source: str

    @property
    def filename(self) -> str:
        return posixpath.basename(unquote(urlsplit(self.url).path))


@dataclass(frozen=True)
class Install:
    """How a shared install script puts the artifact into the image."""

    kind: str
    dest: str
    strip_components: int = 0


@dataclass(frozen=True)
class Probe:
    """A command run inside the image whose output must contain ``expect``."""

    command: tuple[str, ...]
    expect: str


@dataclass(frozen=True)
class Upstream:
    """Where new releases are published: what `invoke bump` needs to compute and verify pins."""

    url: str
    checksums: str
    arch: tuple[tuple[str, str], ...] = ()

    def names(self, platform: str, version: str) -> dict[str, str]:
        """The template placeholders for one platform and version."""
        os_name, _, arch = platform.partition("/")
        return {"version": version, "os": os_name, "arch": dict(self.arch).get(platform, arch)}

    def artifact_url(self, platform: str, version: str) -> str:
        return self.url.format(**self.names(platform, version))

    def checksums_url(self, platform: str, version: str) -> str:
        url = self.artifact_url(platform, version)
        filename = posixpath.basename(urlsplit(url).path)
        return self.checksums.format(url=url, filename=filename, **self.names(platform, version))


@dataclass(frozen=True)
class Component:
    name: str
    version: str
    license: str
    purl: str
    install: Install
    probe: Probe
    artifacts: tuple[Artifact, ...]
    description: str = ""
    upstream: Upstream | None = None

    @property
    def platforms(self) -> tuple[str, ...]:
        return tuple(a.platform for a in self.artifacts)

    @property
    def built_from_source(self) -> bool:
        return self.install.kind == SOURCE_KIND

    def artifact(self, platform: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.platform == platform), None)


@dataclass(frozen=True)
class Library:
    components: tuple[Component, ...]
    #: Names of components the file declares but that have problems (reported on their own).
    broken: frozenset[str] = frozenset()

    def get(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)


def load_library(settings: Settings, problems: list[Problem]) -> Library:
    """The library with every valid component; each problem found is appended to ``problems``.

    A component with a problem is left out, so that the boxes using it can still be checked.
    """
    shown = settings.shown(settings.components_file)
    document = yamldoc.load(settings.components_file, shown, problems)
    if document is None:
        return Library(())
    broken: set[str] = set()
    for path, problem in yamldoc.validate(document, "components", shown):
        if len(path) >= 2 and path[0] == "components":
            broken.add(str(path[1]))
            problems.append(replace(problem, component=str(path[1])))
        else:
            problems.append(problem)
            return Library(())
    components = []
    for name, data in document["components"].items():
        found = _check_component(name, data, settings, document, shown)
        problems.extend(replace(problem, component=name) for problem in found)
        if found or name in broken:
            broken.add(name)
        else:
            components.append(_component(name, data))
    return Library(tuple(components), frozenset(broken))


def _component(name: str, data: dict[str, object]) -> Component:
    install = data["install"]
    probe = data["probe"]
    artifacts = data["artifacts"]
    assert isinstance(install, dict)
    assert isinstance(probe, dict)
    assert isinstance(artifacts, dict)
    version = str(data["version"])
    return Component(
        name=name,
        version=version,
        license=str(data["license"]),
        purl=str(data.get("purl") or PackageURL(type="generic", name=name, version=version)),
        description=str(data.get("description", "")),
        install=Install(
            kind=install["kind"],
            dest=install["dest"],
            strip_components=install.get("strip_components", 0),
        ),
        probe=Probe(command=tuple(probe["command"]), expect=probe["expect"]),
        artifacts=tuple(
            Artifact(platform, a["url"], a["sha256"], a["sha256_source"])
            for platform, a in artifacts.items()
        ),
        upstream=_upstream(data.get("upstream")),
    )


def _upstream(data: object) -> Upstream | None:
    if not isinstance(data, dict):
        return None
    return Upstream(data["url"], data["checksums"], tuple(dict(data.get("arch", {})).items()))


def _check_component(
    name: str, data: Any, settings: Settings, document: object, shown: str
) -> list[Problem]:
    """What the schema cannot say: licenses, purls and download URLs that are valid here.

    Works on the raw entry, checking each field that has the right type, so that these problems
    are reported together with the schema's rather than after they are fixed.
    """
    found: list[Problem] = []
    if not isinstance(data, dict):
        return found  # the schema has said what it should be

    def problem(path: yamldoc.FieldPath, message: str) -> None:
        full = ("components", name, *path)
        found.append(
            Problem(shown, yamldoc.line_of(document, full), yamldoc.field_name(full), message)
        )

    license_ = data.get("license")
    if isinstance(license_, str) and not (
        spdx.is_supported_id(license_) or spdx.is_expression(license_)
    ):
        problem(("license",), f"{license_!r} is not an SPDX license id or expression (e.g. MIT)")
    purl = data.get("purl")
    if isinstance(purl, str):
        try:
            PackageURL.from_string(purl)
        except ValueError as error:
            problem(("purl",), f"not a valid package URL ({error}); e.g. pkg:generic/go@1.24.1")
    install = data.get("install")
    kind = install.get("kind") if isinstance(install, dict) else None
    script = settings.install_scripts_dir / f"{kind}.sh"
    if isinstance(kind, str) and not script.is_file():
        problem(("install", "kind"), f"no install script {settings.shown(script)} for this kind")
    recipe = settings.build_recipes_dir / f"{name}.sh"
    if kind == SOURCE_KIND and not recipe.is_file():
        problem(
            ("install", "kind"),
            f"built from source, but there is no build recipe {settings.shown(recipe)}; "
            "write one (see shared/install/source.sh for what it is given)",
        )
    artifacts = data.get("artifacts")
    upstream = data.get("upstream")
    if isinstance(upstream, dict) and isinstance(artifacts, dict):
        for path, text in _upstream_problems(upstream, artifacts, data.get("version")):
            problem(path, text)
    for platform, artifact in artifacts.items() if isinstance(artifacts, dict) else ():
        url = artifact.get("url") if isinstance(artifact, dict) else None
        if not isinstance(url, str):
            continue
        if message := url_problem(url, settings.allow_http_hosts):
            problem(("artifacts", platform, "url"), message)
        elif not posixpath.basename(urlsplit(url).path):
            problem(("artifacts", platform, "url"), "the URL must end in a file name")
    return found


def _upstream_problems(
    upstream: dict[str, Any], artifacts: dict[str, Any], version: object
) -> list[tuple[yamldoc.FieldPath, str]]:
    """The templates must use known placeholders and give back today's pinned URLs."""
    if not all(isinstance(upstream.get(k), str) for k in ("url", "checksums")):
        return []  # the schema reports these
    arch = upstream.get("arch", {})
    pairs = tuple(arch.items()) if isinstance(arch, dict) else ()
    model = Upstream(upstream["url"], upstream["checksums"], pairs)
    found: list[tuple[yamldoc.FieldPath, str]] = []
    for platform, artifact in artifacts.items():
        try:
            computed = model.artifact_url(platform, str(version))
            model.checksums_url(platform, str(version))
        except (KeyError, IndexError, ValueError) as error:
            message = (
                f"a template uses an unknown placeholder ({error}); use {{version}}, {{os}}, "
                "{arch} (and in checksums also {url} and {filename})"
            )
            return [(("upstream",), message)]
        pinned = artifact.get("url") if isinstance(artifact, dict) else None
        if isinstance(pinned, str) and computed != pinned:
            message = (
                f"gives {computed} for {platform} at version {version}, but the pinned URL is "
                f"{pinned}; fix the template (or upstream.arch) so that bump computes the URLs"
            )
            found.append((("upstream", "url"), message))
    return found


def url_problem(url: str, allow_http_hosts: tuple[str, ...]) -> str | None:
    """Why ``url`` may not be downloaded from, or None: https only, http for loopback or allowed."""
    parts = urlsplit(url)
    if not parts.hostname:
        return f"{url!r} is not a URL; expected https://host/path/file"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and (
        is_loopback(parts.hostname) or parts.hostname in allow_http_hosts
    ):
        return None
    if parts.scheme == "http":
        return (
            f"{url!r} uses plain http; use https, or list {parts.hostname!r} in "
            "buildbox.allow_http_hosts in invoke.yaml"
        )
    return f"{url!r} uses {parts.scheme!r}; expected an https URL"
