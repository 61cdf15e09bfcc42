"""The pinned-component library, ``shared/components.yaml``: every download, pinned by sha256."""

from __future__ import annotations

import posixpath
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote, urlsplit

from cyclonedx import spdx
from packageurl import PackageURL

from buildbox.define import yamldoc
from buildbox.errors import Problem
from buildbox.http import is_loopback, redact
from buildbox.settings import Settings

#: The install kind of components built from a source tarball with a recipe in shared/build/.
SOURCE_KIND = "source"

#: What an artifact may be called in the build context and in components.tsv, which install.sh
#: reads split on tabs: no '/', '.' or '..', whitespace, control characters or leading '-'.
_SAFE_FILENAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+~-]{0,254}")

#: The placeholders of the upstream templates, by field.
_URL_NAMES = ("version", "os", "arch")
_PLACEHOLDERS = {"url": _URL_NAMES, "checksums": (*_URL_NAMES, "url", "filename")}


@dataclass(frozen=True)
class Artifact:
    """One downloadable file of a component for one platform."""

    platform: str
    url: str
    sha256: str
    sha256_source: str

    @property
    def filename(self) -> str:
        return artifact_filename(self.url)


def artifact_filename(url: str) -> str:
    """The name an artifact gets in the build context: its URL path's last segment, decoded."""
    return posixpath.basename(unquote(urlsplit(url).path))


def filename_problem(name: str) -> str | None:
    """Why ``name`` (from :func:`artifact_filename`) may not name a file in the context, or None."""
    if not name:
        return "the URL must end in a file name"
    if not _SAFE_FILENAME.fullmatch(name):
        return (
            f"the file name it gives, {name!r}, is not a safe file name (letters, digits and "
            ". _ + ~ -, not starting with . + ~ -); use a URL that ends in a plain file name"
        )
    return None


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
        problem = replace(problem, message=redact(problem.message))  # values may be echoed
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
        line, field = yamldoc.line_of(document, full), yamldoc.field_name(full)
        found.append(Problem(shown, line, field, redact(message)))  # a pinned URL may be echoed

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
    artifacts = artifacts if isinstance(artifacts, dict) else {}
    upstream = data.get("upstream")
    if isinstance(upstream, dict):
        for path, text in _upstream_problems(upstream, artifacts, data.get("version"), settings):
            problem(path, text)
    for platform, artifact in artifacts.items():
        url = artifact.get("url") if isinstance(artifact, dict) else None
        if not isinstance(url, str):
            continue
        message = url_problem(url, settings.allow_http_hosts)
        if message := message or filename_problem(artifact_filename(url)):
            problem(("artifacts", platform, "url"), message)
    # The URL fields are checked above; any other text may still carry one (sha256_source, purl).
    urls: set[yamldoc.FieldPath] = {("upstream", "url"), ("upstream", "checksums")}
    urls |= {("artifacts", str(platform), "url") for platform in artifacts}
    for path, text in _texts(data, ()):
        if path not in urls and redact(text) != text:
            problem(path, _userinfo_problem(text))
    return found


def _texts(value: object, path: yamldoc.FieldPath) -> Iterator[tuple[yamldoc.FieldPath, str]]:
    """Every string in ``value`` (a component's entry) with its field path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _texts(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _texts(item, (*path, index))


def _template_problem(field: str, template: str) -> str | None:
    """Why the upstream template ``field`` cannot be filled in, or None: only plain
    ``{name}`` placeholders of the field's names (no attributes, indices, formats)."""
    names = _PLACEHOLDERS[field]
    allowed = ", ".join(f"{{{name}}}" for name in names)
    braces = "write {{ and }} for a literal brace"
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        return f"not a valid template ({error}); {braces}"
    for _, name, spec, conversion in parsed:
        if name is None or (name in names and not spec and not conversion):
            continue
        written = "{" + name + (f"!{conversion}" if conversion else "")
        written += (f":{spec}" if spec else "") + "}"
        return f"{written!r} is not a placeholder here; use {allowed} ({braces})"
    return None


def _upstream_problems(
    upstream: dict[str, Any], artifacts: dict[str, Any], version: object, settings: Settings
) -> list[tuple[yamldoc.FieldPath, str]]:
    """The templates must use known placeholders, give URLs that may be downloaded from (the
    checksum file's as much as the artifact's) and give back today's pinned URLs."""
    templates = {k: upstream.get(k) for k in ("url", "checksums")}
    if not all(isinstance(t, str) for t in templates.values()):
        return []  # the schema reports these
    found: dict[tuple[yamldoc.FieldPath, str], None] = {}  # in order, each once
    for field, template in templates.items():
        if message := _template_problem(field, str(template)):
            found[("upstream", field), message] = None
    if found or not isinstance(version, str):
        return list(found)
    arch = upstream.get("arch", {})
    model = Upstream(
        upstream["url"],
        upstream["checksums"],
        tuple(arch.items()) if isinstance(arch, dict) else (),
    )
    for platform, artifact in artifacts.items():
        computed = model.artifact_url(platform, version)
        if message := url_problem(computed, settings.allow_http_hosts):
            found[("upstream", "url"), message] = None
            continue
        checksums = model.checksums_url(platform, version)
        if message := url_problem(checksums, settings.allow_http_hosts):
            found[("upstream", "checksums"), message] = None
        pinned = artifact.get("url") if isinstance(artifact, dict) else None
        if isinstance(pinned, str) and computed != pinned:
            message = (
                f"gives {computed} for {platform} at version {version}, but the pinned URL is "
                f"{pinned}; fix the template (or upstream.arch) so that bump computes the URLs"
            )
            found[("upstream", "url"), message] = None
    return list(found)


def _userinfo_problem(text: str) -> str:
    return (
        f"{redact(text)!r} carries a user name or password; keep credentials out of "
        "components.yaml (its URLs go into SBOMs): give them in buildbox.mirrors in invoke.yaml "
        "(a mirror URL may carry them) or in ~/.netrc"
    )


def url_problem(url: str, allow_http_hosts: tuple[str, ...]) -> str | None:
    """Why ``url`` may not be downloaded from, or None: https only, http for loopback or allowed,
    no credentials written into it. The reason never shows the URL's userinfo."""
    shown = redact(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- parsed only here, so that an invalid port is named
    except ValueError as error:
        return f"{shown!r} is not a valid URL ({error}); expected https://host/path/file"
    if not parts.hostname:
        return f"{shown!r} is not a URL; expected https://host/path/file"
    if shown != url or parts.username is not None:
        return _userinfo_problem(url)
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and (
        is_loopback(parts.hostname) or parts.hostname in allow_http_hosts
    ):
        return None
    if parts.scheme == "http":
        return (
            f"{shown!r} uses plain http; use https, or list {parts.hostname!r} in "
            "buildbox.allow_http_hosts in invoke.yaml"
        )
    return f"{shown!r} uses {parts.scheme!r}; expected an https URL"
