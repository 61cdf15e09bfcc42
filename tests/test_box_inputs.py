"""A box's own inputs (box.yaml, its directory's name, its Dockerfile, packages.lock): each bad
one is one clear line from `invoke check`, fast, and never a traceback."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import projects
from buildbox.define import project, yamldoc
from buildbox.define.lock import (
    Index,
    LockedPackage,
    PackageLock,
    PlatformLock,
    Source,
    problems,
)
from buildbox.errors import Problem
from projects import BASE, SHA_A, SHA_B, box_field, make_project, run_cli, settings_for, write_yaml

BOX = "buildboxes/demo/box.yaml"
#: A box.yaml of a few hundred bytes whose last alias expands to 9**9 components.
ALIAS_BOMB = (
    "version: 1\nbase: x\nplatforms: [linux/amd64]\na0: &a0 [x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]\n" for n in range(1, 9))
    + "components: *a8\n"
)


def check_fails_with(root: Path, pattern: str, limit: float = 2.0) -> str:
    """`invoke check` in ``root`` exits 1 within ``limit`` seconds, one line matching
    ``pattern``, no traceback; the matching line."""
    started = time.monotonic()
    result, lines = projects.check_fails_with(root, pattern)
    took = time.monotonic() - started
    assert took < limit, f"check took {took:.1f} s"
    assert len(lines) == 1, f"no single line matches {pattern!r}:\n{result.stdout}"
    return lines[0]


# 1. YAML bombs


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    path = tmp_path / "box.yaml"
    path.write_text(ALIAS_BOMB)
    found: list[Problem] = []
    started = time.monotonic()
    assert yamldoc.load(path, "box.yaml", found) is None
    assert time.monotonic() - started < 2
    [problem] = found
    assert "values with its aliases expanded" in problem.message
    assert problem.line is not None


def test_an_alias_bomb_in_box_yaml_fails_check_fast(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    (root / BOX).write_text(ALIAS_BOMB)
    check_fails_with(root, rf"^{BOX}:\d+: .*aliases expanded")


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("version: 1\nplatforms: " + "[" * 50_000 + "]" * 50_000 + "\n", r"nested more than"),
        ("version: 1\nplatforms:\n" + "".join(" " * n + "- \n" for n in range(1, 200)),
         r"nested more than"),
        ("version: 1\nplatforms: &p [linux/amd64, *p]\n", r"alias \*p .* inside the value"),
        ("# padding\n" * 40_000 + "version: 1\n", r"larger than"),
    ],
    ids=["flow", "block", "recursive alias", "size"],
)  # fmt: skip
def test_deep_recursive_or_huge_yaml_fails_check_fast(
    tmp_path: Path, text: str, pattern: str
) -> None:
    root = make_project(tmp_path)
    (root / BOX).write_text(text)
    check_fails_with(root, rf"^{BOX}(:\d+)?: .*{pattern}")


def test_the_bounded_loader_keeps_what_the_project_uses() -> None:
    """One small alias (components.yaml shares an artifact between platforms) is fine."""
    from buildbox.yamlsafe import YamlError, parse

    document = parse("a: &x {url: u}\nb: *x\nc: {<<: *x, sha256: s}\n", "t.yaml")
    assert document["b"] == {"url": "u"}
    assert document["c"]["url"] == "u"
    with pytest.raises(YamlError, match=r"^t\.yaml:2: .*duplicate key"):
        parse("a: 1\na: 2\n", "t.yaml")
    repository = Path(__file__).resolve().parent.parent
    assert parse((repository / "shared/components.yaml").read_text(), "c.yaml")["components"]


# 2. Box names


@pytest.mark.parametrize(
    ("name", "suggested"), [("My Box", "my-box"), ("UPPER", "upper"), ("x:y", "x-y")]
)
def test_a_box_name_must_be_a_repository_path_component(
    tmp_path: Path, name: str, suggested: str
) -> None:
    root = make_project(tmp_path)
    (root / "buildboxes/demo").rename(root / "buildboxes" / name)
    line = check_fails_with(root, re.escape(f"buildboxes/{name}"))
    assert "[a-z0-9]" in line, line
    assert f"rename the directory, e.g. to {suggested}" in line, line
    assert run_cli(root, "matrix").returncode == 1


# 3. The base reference

DIGEST = "@sha256:" + "c" * 64


@pytest.mark.parametrize(
    "base",
    [
        "NOT A REF!!" + DIGEST,
        "registry.example/a..b" + DIGEST,
        "registry.example/trailing-" + DIGEST,
        "registry.example/a_-b" + DIGEST,
        "bad-.example/x" + DIGEST,
        "registry.example/x:.tag" + DIGEST,
    ],
)
def test_a_base_that_is_no_image_reference_is_refused(tmp_path: Path, base: str) -> None:
    root = make_project(tmp_path)
    box_field(base=base)(root)
    check_fails_with(root, rf"^{BOX}:\d+: base: expected an image reference")


@pytest.mark.parametrize(
    "base",
    [
        BASE,
        "docker.io/library/debian:12" + DIGEST,
        "localhost/a__b/c--d.e_f:Tag-1.0" + DIGEST,
        "Registry.Example:5000/x" + DIGEST,
        "[::1]:5000/x" + DIGEST,
    ],
)
def test_a_valid_base_reference_is_accepted(tmp_path: Path, base: str) -> None:
    root = make_project(tmp_path)
    box_field(base=base)(root)
    _, found = project.check(settings_for(root))
    assert found == []


# 4. The Dockerfile's encoding


def test_a_dockerfile_that_is_not_utf8_is_one_clear_line(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    dockerfile = root / "buildboxes/demo/Dockerfile"
    dockerfile.write_bytes(dockerfile.read_bytes() + b"LABEL maintainer=Fran\xe7ois\n")
    line = check_fails_with(root, r"^buildboxes/demo/Dockerfile:8: ")
    assert "byte 0xe7 at column 22 is not UTF-8" in line, line
    assert line.endswith("save it as UTF-8"), line


# 5. The package lock

DEBS = "http://deb.debian.org/debian/pool/main/m/make-dfsg"
MAKE = LockedPackage("make", "4.3-4.1", "amd64", f"{DEBS}/make_4.3-4.1_amd64.deb", SHA_A, 395632)
SOURCE = Source(
    "http://deb.debian.org/debian",
    "bookworm",
    "deb.debian.org_debian_dists_bookworm_InRelease",
    ("A" * 40,),
    (Index("main/binary-amd64/Packages.xz", SHA_B, 8800),),
)
LOCK = PackageLock(
    BASE, ("make",), {"linux/amd64": PlatformLock("sha256:" + "e" * 64, (MAKE,), (SOURCE,))}
)

Edit = Callable[[dict[str, Any]], None]


def package(**changes: Any) -> Edit:
    def edit(document: dict[str, Any]) -> None:
        document["platforms"]["linux/amd64"]["packages"][0].update(changes)

    return edit


def url_named(name: str) -> Edit:
    return package(url=f"{DEBS}/{name}")


def source(**changes: Any) -> Edit:
    def edit(document: dict[str, Any]) -> None:
        document["platforms"]["linux/amd64"]["sources"][0].update(changes)

    return edit


def twice(document: dict[str, Any]) -> None:
    packages = document["platforms"]["linux/amd64"]["packages"]
    packages.append(dict(packages[0]))


def top(document: dict[str, Any]) -> None:
    document["comment"] = "edited by hand"


PACKAGE = "platforms.linux/amd64.packages[0](make)"
# (edit, the problem's field, words its message has)
LOCK_CASES: dict[str, tuple[Edit, str, tuple[str, ...]]] = {
    "file URL": (
        package(url="file:///etc/passwd"),
        f"{PACKAGE}.url",
        ("'file:///etc/passwd'", "expected https"),
    ),
    "source file URL": (
        source(url="file:///srv/debian"),
        "platforms.linux/amd64.sources[0].url",
        ("'file:///srv/debian'", "expected https"),
    ),
    "http to a host not allowed": (
        package(url="http://mirror.example.invalid/debian/pool/make_4.3-4.1_amd64.deb"),
        f"{PACKAGE}.url",
        ("plain http", "mirror.example.invalid", "allow_http_hosts"),
    ),
    "source over http to a host not allowed": (
        source(url="http://mirror.example.invalid/debian"),
        "platforms.linux/amd64.sources[0].url",
        ("plain http", "allow_http_hosts"),
    ),
    "file name ..": (url_named("%2E%2E"), f"{PACKAGE}.url", ("'..'", "name_version_arch")),
    "space in the file name": (
        url_named("make%204.3-4.1_amd64.deb"),
        f"{PACKAGE}.url",
        ("'make 4.3-4.1_amd64.deb'", "name_version_arch"),
    ),
    "glob in the file name": (
        url_named("make_*_amd64.deb"),
        f"{PACKAGE}.url",
        ("'make_*_amd64.deb'", "name_version_arch"),
    ),
    "duplicate entry": (twice, PACKAGE.replace("[0]", "[1]"), ("listed twice",)),
    "arm64 package under linux/amd64": (
        package(architecture="arm64", url=f"{DEBS}/make_4.3-4.1_arm64.deb"),
        f"{PACKAGE}.architecture",
        ("arm64", "linux/amd64", "amd64 or all"),
    ),
    "negative size": (package(size=-1), f"{PACKAGE}.size", ("0 or more", "-1")),
    "unknown field in a package": (package(note="x"), f"{PACKAGE}.note", ("unknown field",)),
    "unknown field in the lock": (top, "comment", ("unknown field",)),
}


@pytest.mark.parametrize("case", LOCK_CASES)
def test_every_package_lock_field_is_checked(tmp_path: Path, case: str) -> None:
    edit, field, words = LOCK_CASES[case]
    path = tmp_path / "packages.lock"
    document = json.loads(LOCK.render())
    edit(document)
    path.write_text(json.dumps(document))
    _, found = problems(path, "packages.lock", BASE, "", ("make",), ("linux/amd64",), "demo")
    [problem] = found
    assert problem.field == field, problem
    for word in words:
        assert word in problem.message, problem


def test_a_good_package_lock_has_no_problems(tmp_path: Path) -> None:
    path = tmp_path / "packages.lock"
    path.write_text(LOCK.render())
    _, found = problems(path, "packages.lock", BASE, "", ("make",), ("linux/amd64",), "demo")
    assert found == []


def test_a_bad_package_lock_fails_check(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    box = {"version": 1, "base": BASE, "platforms": ["linux/amd64"], "components": ["tool"]}
    write_yaml(root / BOX, {**box, "packages": ["make"]})
    document = json.loads(LOCK.render())
    package(url="file:///etc/passwd")(document)
    (root / "buildboxes/demo/packages.lock").write_text(json.dumps(document))
    check_fails_with(
        root, rf"^buildboxes/demo/packages\.lock: {re.escape(PACKAGE)}\.url: 'file:///etc/passwd'"
    )
