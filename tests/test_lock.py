"""The package lock without an engine: apt's answers parsed, the lock file read and checked."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest

from artifact_server import ArtifactServer
from buildbox.define import project
from buildbox.define.lock import LockedPackage, PackageLock, PlatformLock, parse_spec, problems
from buildbox.errors import BuildboxError
from buildbox.fetch import Fetcher, wanted_for
from buildbox.output import LogProgress
from buildbox.resolve import changes, parse_resolution, resolve_script
from projects import BASE, make_project, settings_for, write_yaml

SHA_MGC = "bad01673ba5dfb9b5db4f3ae6a71f18d492cb6801eab45ad3c7d483c0a1f6ad2"
SHA_MAKE = "a1a83af8cbd854af887b72ad196b1f4af58387815e21ced1000253a116a46e2a"
#: What resolve_script printed in a Debian 12 base for `make file` (two of the four packages
#: kept), as apt-get and apt-cache write it.
APT_OUTPUT = f"""\
@@buildbox-simulated
NOTE: This is only a simulation!
Inst libmagic-mgc (1:5.44-3 Debian:12.15/oldstable [amd64])
Inst make (4.3-4.1 Debian:12.15/oldstable [amd64])
Conf libmagic-mgc (1:5.44-3 Debian:12.15/oldstable [amd64])
Conf make (4.3-4.1 Debian:12.15/oldstable [amd64])
@@buildbox-uris
'http://deb.debian.org/debian/pool/main/f/file/libmagic-mgc_5.44-3_amd64.deb' \
libmagic-mgc_1%3a5.44-3_amd64.deb 304888 MD5Sum:bebcc2bc9111356e9c45e6b9c9bd929c
'http://deb.debian.org/debian/pool/main/m/make-dfsg/make_4.3-4.1_amd64.deb' \
make_4.3-4.1_amd64.deb 395632 MD5Sum:ad23a28085ea694f6677b80baca3ff34
@@buildbox-index
Package: libmagic-mgc
Source: file
Version: 1:5.44-3
Architecture: amd64
Filename: pool/main/f/file/libmagic-mgc_5.44-3_amd64.deb
Size: 304888
SHA256: {SHA_MGC}
Description: File type determination library using "magic" numbers (compiled magic file)

Package: make
Source: make-dfsg
Version: 4.3-4.1
Architecture: amd64
Filename: pool/main/m/make-dfsg/make_4.3-4.1_amd64.deb
Size: 395632
SHA256: {SHA_MAKE}

@@buildbox-end
"""


def test_resolution_takes_urls_from_apt_and_sha256_from_the_index() -> None:
    mgc, make = parse_resolution(APT_OUTPUT)
    assert mgc == LockedPackage(
        "libmagic-mgc", "1:5.44-3", "amd64",
        "http://deb.debian.org/debian/pool/main/f/file/libmagic-mgc_5.44-3_amd64.deb",
        SHA_MGC, 304888,
    )  # fmt: skip
    assert mgc.filename == "libmagic-mgc_5.44-3_amd64.deb", "no epoch escape for dpkg to trip on"
    assert (make.name, make.sha256, make.size) == ("make", SHA_MAKE, 395632)


def test_a_package_without_an_index_entry_is_refused() -> None:
    without_make = APT_OUTPUT.replace(f"SHA256: {SHA_MAKE}", "")
    with pytest.raises(BuildboxError, match=r"apt would install make 4\.3-4\.1 \(amd64\) but"):
        parse_resolution(without_make)


def test_the_script_quotes_what_it_is_given() -> None:
    script = resolve_script(("make", "libfoo=1:2.0-1", "x; rm -rf /"))
    assert "'x; rm -rf /'" in script
    assert "apt-get install -s -y --no-install-recommends make libfoo=1:2.0-1" in script


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [("make", ("make", None)), ("libelf-dev=0.188-2.1", ("libelf-dev", "0.188-2.1")),
     ("g++", ("g++", None)), ("libfoo=1:2.0~rc1-1", ("libfoo", "1:2.0~rc1-1")),
     ("Make", None), ("make=", None), ("make && curl", None), ("-f", None)],
)  # fmt: skip
def test_package_specs(spec: str, parsed: tuple[str, str | None] | None) -> None:
    assert parse_spec(spec) == parsed


def locked(*packages: LockedPackage, base: str = BASE) -> PackageLock:
    return PackageLock(base, ("file", "make"), {"linux/amd64": PlatformLock("sha256:" + "e" * 64,
                                                                            packages)})  # fmt: skip


def test_changes_between_locks() -> None:
    old_make, mgc = parse_resolution(APT_OUTPUT)[1], parse_resolution(APT_OUTPUT)[0]
    new_make = LockedPackage("make", "4.3-4.2", "amd64", old_make.url, "c" * 64, 1)
    found = changes(locked(old_make, mgc), locked(new_make))
    assert [(c.kind, c.name, c.old, c.new) for c in found] == [
        ("removed", "libmagic-mgc", "1:5.44-3", ""),
        ("version", "make", "4.3-4.1", "4.3-4.2"),
    ]
    assert [c.kind for c in changes(None, locked(new_make))] == ["added"]


def test_the_lock_file_is_sorted_and_reads_back(tmp_path: Path) -> None:
    make, mgc = parse_resolution(APT_OUTPUT)[1], parse_resolution(APT_OUTPUT)[0]
    lock = locked(make, mgc)
    path = tmp_path / "packages.lock"
    path.write_text(lock.render())
    assert path.read_text() == locked(mgc, make).render(), "order does not matter"
    names = [
        p["name"] for p in json.loads(path.read_text())["platforms"]["linux/amd64"]["packages"]
    ]
    assert names == ["libmagic-mgc", "make"]
    back, found = problems(
        path, "packages.lock", BASE, "", ("file", "make"), ("linux/amd64",), "demo"
    )
    assert found == []
    assert back is not None
    assert back.platforms["linux/amd64"].packages == (mgc, make)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.unlink(), "missing; the box lists packages: run `invoke lock demo`"),
        (lambda p: p.write_text("{not json"), "is not JSON"),
        (lambda p: p.write_text('{"schema": "other"}'), "is not a package lock"),
        (lambda p: p.write_text(p.read_text().replace('"size": 395632', '"size": "big"')),
         "platforms.linux/amd64.packages[1](make).size: expected a whole number, got 'big'"),
        (lambda p: p.write_text(p.read_text().replace(SHA_MAKE, "abc")),
         "platforms.linux/amd64.packages[1](make).sha256: expected 64 lowercase hex characters"),
    ],
)  # fmt: skip
def test_a_bad_lock_is_one_clear_problem(tmp_path: Path, change: object, message: str) -> None:
    path = tmp_path / "packages.lock"
    path.write_text(locked(*parse_resolution(APT_OUTPUT)).render())
    change(path)  # type: ignore[operator]
    _, found = problems(path, "packages.lock", BASE, "", ("file", "make"), ("linux/amd64",), "demo")
    [problem] = found
    assert message in str(problem)
    assert "invoke lock demo" in str(problem)


def test_a_stale_lock_names_what_changed(tmp_path: Path) -> None:
    path = tmp_path / "packages.lock"
    path.write_text(locked(*parse_resolution(APT_OUTPUT), base=BASE.replace("c", "d")).render())
    _, found = problems(
        path,
        "packages.lock",
        BASE,
        "20250520T000000Z",
        ("make", "patch"),
        ("linux/amd64", "linux/arm64"),
        "demo",
    )
    text = "\n".join(map(str, found))
    assert "base: resolved against another base" in text
    assert "requested: patch not in the lock" in text
    assert "requested: file no longer in box.yaml" in text
    assert "platforms: no lock for linux/arm64" in text
    assert "snapshot: resolved against the live archive, not 20250520T000000Z" in text


def test_escaped_urls_match_their_index_file() -> None:
    """apt escapes '+' in URLs (%2b); the index's Filename has it plain."""
    escaped = (
        APT_OUTPUT.replace("make_4.3-4.1_amd64.deb' make", "make_4.3-4.1%2bb1_amd64.deb' make")
        .replace("make_4.3-4.1_amd64.deb 395632", "make_4.3-4.1+b1_amd64.deb 395632")
        .replace("Version: 4.3-4.1\n", "Version: 4.3-4.1+b1\n")
        .replace("Inst make (4.3-4.1 ", "Inst make (4.3-4.1+b1 ")
        .replace(
            "make-dfsg/make_4.3-4.1_amd64.deb\nSize", "make-dfsg/make_4.3-4.1+b1_amd64.deb\nSize"
        )
    )
    make = parse_resolution(escaped)[1]
    assert make.version == "4.3-4.1+b1"
    assert make.url.endswith("make_4.3-4.1%2bb1_amd64.deb")
    assert make.filename == "make_4.3-4.1+b1_amd64.deb"


def test_a_package_the_archive_dropped_says_to_relock(
    tmp_path: Path, artifacts: ArtifactServer
) -> None:
    root = make_project(tmp_path)
    box_dir = root / "buildboxes/demo"
    write_yaml(
        box_dir / "box.yaml",
        {"version": 1, "base": BASE, "platforms": ["linux/amd64"], "components": ["tool"],
         "packages": ["make"]},
    )  # fmt: skip
    gone = LockedPackage("make", "4.3-4.1", "amd64", artifacts.url("make_4.3-4.1_amd64.deb"),
                         SHA_MAKE, 395632)  # fmt: skip
    lock = PackageLock(BASE, ("make",), {"linux/amd64": PlatformLock("sha256:" + "e" * 64,
                                                                     (gone,))})  # fmt: skip
    (box_dir / "packages.lock").write_text(lock.render())
    settings = dataclasses.replace(settings_for(root), fetch_retries=0)
    loaded = project.load(settings)
    wanted = [w for w in wanted_for(loaded.boxes, loaded.library) if w.component == "make"]
    with pytest.raises(BuildboxError) as raised:
        Fetcher(settings, LogProgress(io.StringIO())).fetch_all(wanted)
    message = str(raised.value)
    assert "make 4.3-4.1 (linux/amd64)" in message
    assert "HTTP 404" in message
    assert "the archive may have dropped this version: run `invoke lock demo` again" in message
