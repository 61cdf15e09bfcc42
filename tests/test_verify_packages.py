"""Image equals lock: verify compares the image's dpkg database with packages.lock and reads
``dpkg --verify``. The comparison is pure; the shell part runs here under the machine's own /bin/sh
with stand-in ``dpkg`` and ``dpkg-query`` commands (never the machine's own dpkg): no engine.
"""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from buildbox.build.build import Built
from buildbox.build.engine import LocalImage
from buildbox.define import project
from buildbox.define.lock import LockedPackage, PackageLock, PlatformLock
from buildbox.sbom.packages import inventory
from buildbox.verify import (
    DPKG_STATUS,
    Check,
    DebPackage,
    FileFinding,
    PackageDatabase,
    Report,
    dpkg_packages,
    package_checks,
    package_script,
    parse_dpkg_verify,
    parse_owners,
    parse_package_output,
    probe_script,
    verify,
)
from projects import FIXTURES, SHA_A, make_project, settings_for

STATUS = (FIXTURES / "dpkg" / "status").read_text()
#: What dpkg 1.21 prints (its rpm format): a file path-excluded or deleted, two files changed
#: (one replaced by a symlink), and an edited conffile.
VERIFIED = """\
missing     /usr/share/doc/bash/README
??5??????   /usr/bin/ls
?M5??????   /usr/bin/true
??5?????? c /etc/issue
"""
OWNERS = "coreutils: /usr/bin/ls\ncoreutils: /usr/bin/true\nbase-files: /etc/issue\n"


def locked(name: str, version: str, architecture: str = "amd64") -> LockedPackage:
    url = f"http://deb.debian.org/debian/pool/main/x/{name}/{name}_{version}_{architecture}.deb"
    return LockedPackage(name, version, architecture, url, SHA_A, 1000)


LOCK = (
    locked("bash", "5.2.15-2+b8"),
    locked("coreutils", "9.1-1"),
    locked("libc6", "2.36-9+deb12u7"),
    locked("make", "4.3-4.1"),
    locked("zlib1g", "1:1.2.13.dfsg-1", "arm64"),
)


def lines(checks: list[Check]) -> list[str]:
    """As tasks print them."""
    return [
        f"{'INFO' if c.info else 'PASS' if c.ok else 'FAIL'}  {c.name}: {c.detail}" for c in checks
    ]


def test_the_status_database_is_parsed_with_each_packages_state() -> None:
    text = STATUS + "\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n"
    packages = dpkg_packages(text)
    assert [p.name for p in packages if p.installed] == [
        "base-files", "bash", "coreutils", "libc6", "zlib1g",
    ]  # fmt: skip
    assert packages[-1] == DebPackage("gone", "1.0", "", "config-files")
    assert DebPackage("zlib1g", "1:1.2.13.dfsg-1", "amd64", "installed") in packages


def test_each_difference_from_the_lock_is_one_line_naming_the_package() -> None:
    checks = package_checks(LOCK, "linux/amd64", PackageDatabase(STATUS, VERIFIED, 0, OWNERS))
    assert [line for line in lines(checks) if line.startswith("FAIL")] == [
        "FAIL  package libc6: locked 2.36-9+deb12u7 (amd64); the image has 2.36-9+deb12u14",
        (
            "FAIL  package make: locked 4.3-4.1 (amd64); the image does not have it "
            "(the Dockerfile never installed it?)"
        ),
        (
            "FAIL  package zlib1g: locked 1:1.2.13.dfsg-1 (arm64); the image has it for another "
            "architecture: 1:1.2.13.dfsg-1 (amd64)"
        ),
        (
            "FAIL  package coreutils: files differ from what dpkg installed: "
            "/usr/bin/ls (content differs), /usr/bin/true (not a regular file)"
        ),
    ]
    information = [line for line in lines(checks) if line.startswith("INFO")]
    assert information == [
        (
            "INFO  packages not in the lock: 1, the base's (or installed without the lock): "
            "base-files"
        ),
        ("INFO  edited conffiles: 1, changed after install: /etc/issue (base-files)"),
        (
            "INFO  absent files: 1 installed by packages (path-exclude, or deleted): "
            "/usr/share/doc/bash/README"
        ),
    ]


def test_an_image_that_equals_its_lock_passes() -> None:
    lock = (locked("bash", "5.2.15-2+b8"), locked("zlib1g", "1:1.2.13.dfsg-1"))
    checks = package_checks(lock, "linux/amd64", PackageDatabase(STATUS, "", 0, ""))
    assert all(check.ok for check in checks)
    assert lines(checks)[:2] == [
        "PASS  packages: 2 of 2 locked packages installed, at their versions and architectures",
        (
            "INFO  packages not in the lock: 3, the base's (or installed without the lock): "
            "base-files, coreutils, libc6"
        ),
    ]
    assert lines(checks)[2].startswith("PASS  package files: dpkg --verify: every file is as")


def test_a_locked_package_dpkg_did_not_finish_installing_fails() -> None:
    bash = STATUS.index("Package: bash\n")
    status = STATUS[:bash] + STATUS[bash:].replace("ok installed", "ok unpacked", 1)
    checks = package_checks(
        (locked("bash", "5.2.15-2+b8"),), "linux/amd64", PackageDatabase(status, "", 0, "")
    )
    assert lines(checks)[0] == (
        "FAIL  package bash: locked 5.2.15-2+b8 (amd64); dpkg has it unpacked, not installed"
    )


@pytest.mark.parametrize(
    ("verified", "status", "line"),
    [
        (
            ("dpkg: warning: files list file for package 'bash' missing; assuming package has "
            "no files currently installed\n"),
            0,
            ("FAIL  dpkg --verify: exited 0 and said: dpkg: warning: files list file for "
            "package 'bash' missing; assuming package has no files currently installed"),
        ),
        ("sh: 1: dpkg: not found\n", 127, ("FAIL  dpkg --verify: exited 127 and said: sh: 1: "
         "dpkg: not found")),
        ("", None, "FAIL  dpkg --verify: did not run to the end"),
    ],
)  # fmt: skip
def test_dpkg_that_cannot_verify_fails(verified: str, status: int | None, line: str) -> None:
    lock = (locked("bash", "5.2.15-2+b8"),)
    checks = package_checks(lock, "linux/amd64", PackageDatabase(STATUS, verified, status, ""))
    assert line in lines(checks)
    assert not any(check.name == "package files" for check in checks)


def test_a_platform_the_lock_lacks_fails() -> None:
    checks = package_checks((), "linux/arm64", PackageDatabase(STATUS, "", 0, ""))
    assert lines(checks) == [
        (
            "FAIL  packages: packages.lock has no linux/arm64 entry to compare the image with; "
            "run `invoke lock`"
        )
    ]


def test_verify_lines_and_owners_are_parsed() -> None:
    findings, other = parse_dpkg_verify(VERIFIED + "missing   c /etc/gone (Permission denied)\n")
    assert findings == (
        FileFinding("/usr/share/doc/bash/README", False, "missing"),
        FileFinding("/usr/bin/ls", False, "content"),
        FileFinding("/usr/bin/true", False, "type"),
        FileFinding("/etc/issue", True, "content"),
        FileFinding("/etc/gone (Permission denied)", True, "missing"),
    )
    assert other == ()
    owners = parse_owners(
        "libc6:amd64, libc6:i386: /usr/share/doc/libc6\n"
        "diversion by dash from: /bin/sh\n"
        "diversion by dash to: /bin/sh.distrib\n"
        "dash: /bin/sh\n"
    )
    assert owners == {"/usr/share/doc/libc6": ("libc6", "libc6"), "/bin/sh": ("dash",)}


def fake_dpkg(bin_dir: Path, verified: str, owners: Mapping[str, str]) -> None:
    """``dpkg --verify`` printing ``verified``; ``dpkg-query -S`` printing each argument's owner
    (one line per argument, as it was received) and failing for one it does not know."""
    bin_dir.mkdir()
    (bin_dir / "verified").write_text(verified)
    (bin_dir / "dpkg").write_text(f"#!/bin/sh\ncat {bin_dir}/verified\n")
    cases = "".join(
        f"{shlex.quote(path)}) printf '%s\\n' {shlex.quote(f'{owner}: {path}')} ;;\n"
        for path, owner in owners.items()
    )
    (bin_dir / "dpkg-query").write_text(
        '#!/bin/sh\n[ "$1" = -S ] || exit 2\nshift\nstatus=0\nfor path; do\ncase $path in\n'
        f'{cases}*) echo "no path found matching pattern $path" >&2; status=1 ;;\nesac\ndone\n'
        "exit $status\n"
    )
    for tool in ("dpkg", "dpkg-query"):
        (bin_dir / tool).chmod(0o755)


def run_script(script: str, bin_dir: Path) -> str:
    """As the verify container runs it: sh -c, stdout and stderr together."""
    return subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, check=True, timeout=30,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
    ).stdout  # fmt: skip


def test_the_script_asks_dpkg_query_for_each_changed_file_only(tmp_path: Path) -> None:
    odd = "/usr/share/it's a $HOME * file"
    verified = VERIFIED + f"??5??????   {odd}\n"
    fake_dpkg(tmp_path / "bin", verified, {"/usr/bin/ls": "coreutils", "/usr/bin/true":
              "coreutils", "/etc/issue": "base-files", odd: "odd"})  # fmt: skip
    output = run_script(probe_script((), package_script()), tmp_path / "bin")
    database = parse_package_output(STATUS, output)
    assert database == PackageDatabase(
        STATUS,
        verified,
        0,
        f"coreutils: /usr/bin/ls\ncoreutils: /usr/bin/true\nbase-files: /etc/issue\nodd: {odd}\n",
    )
    failed = [c.name for c in package_checks(LOCK[:2], "linux/amd64", database) if not c.ok]
    assert failed == ["package coreutils", "package odd"]


def test_the_script_with_nothing_changed_asks_dpkg_query_nothing(tmp_path: Path) -> None:
    fake_dpkg(tmp_path / "bin", "missing     /usr/share/doc/bash/README\n", {})
    output = run_script(probe_script((), package_script()), tmp_path / "bin")
    assert parse_package_output(STATUS, output).owners == ""
    assert "no path found" not in output


class FakeEngine:
    """The engine calls verify makes, answered from the fixtures: the comparison is the test."""

    def __init__(self, bin_dir: Path, status: str | None) -> None:
        self.bin_dir, self.status = bin_dir, status
        self.runs: list[str] = []
        self.scripts: list[str] = []
        self.reads: list[list[str]] = []

    def run_script(
        self, image_id: str, script: str, timeout: float, purpose: str
    ) -> tuple[str, int | None]:
        self.runs.append(purpose)
        self.scripts.append(script)
        done = subprocess.run(
            ["sh", "-c", script], capture_output=True, text=True, check=False, timeout=30,
            env={"PATH": f"{self.bin_dir}:/usr/bin:/bin"},
        )  # fmt: skip
        return done.stdout, done.returncode

    def read_files(self, image_id: str, paths: list[str]) -> dict[str, str | None]:
        self.reads.append(paths)
        files = {DPKG_STATUS: self.status}
        return {path: files.get(path) for path in paths}


def verify_demo(
    tmp_path: Path, engine: FakeEngine, lock: tuple[LockedPackage, ...] | None
) -> Report:
    loaded = project.load(settings_for(make_project(tmp_path / "p")))
    box = loaded.box("demo")
    if lock is not None:
        box = dataclasses.replace(
            box, lock=PackageLock(box.base, (), {"linux/amd64": PlatformLock("", lock)})
        )
    image = LocalImage("sha256:" + "1" * 64, {}, "linux/amd64")
    built = Built("demo", "linux/amd64", image, ("demo:v1",), "sha256:" + "2" * 64)
    return verify(engine, loaded, box, built)  # type: ignore[arg-type]


def test_verify_compares_in_its_one_container_and_the_sbom_reuses_the_status(
    tmp_path: Path,
) -> None:
    fake_dpkg(tmp_path / "bin", VERIFIED, {"/usr/bin/ls": "coreutils"})
    engine = FakeEngine(tmp_path / "bin", STATUS)
    report = verify_demo(tmp_path, engine, (locked("make", "4.3-4.1"),))
    assert engine.runs == ["verify"], "one container run"
    assert "FAIL  package make: locked 4.3-4.1 (amd64); the image does not have it " in (
        "\n".join(lines(list(report.checks)))
    )
    assert not report.ok
    assert report.dpkg_status == STATUS
    engine.reads.clear()
    packages = inventory(engine, "sha256:" + "1" * 64, report.dpkg_status)  # type: ignore[arg-type]
    assert DPKG_STATUS not in engine.reads[0], "not read twice"
    assert [p.name for p in packages] == ["base-files", "bash", "coreutils", "libc6", "zlib1g"]


def test_verify_without_a_lock_skips_the_comparison_saying_so(tmp_path: Path) -> None:
    fake_dpkg(tmp_path / "bin", "dpkg ran\n", {})
    engine = FakeEngine(tmp_path / "bin", STATUS)
    report = verify_demo(tmp_path, engine, None)
    assert engine.reads == [], "nothing read"
    assert "dpkg" not in engine.scripts[0]
    assert lines([c for c in report.checks if c.name == "packages"]) == [
        (
            "INFO  packages: skipped: the box has no packages.lock, so there is nothing to compare "
            "its package database with (rpm and apk bases: not until they have locks)"
        )
    ]
    assert report.dpkg_status is None


def test_verify_of_a_locked_box_without_a_dpkg_database_fails(tmp_path: Path) -> None:
    fake_dpkg(tmp_path / "bin", "dpkg ran\n", {})
    engine = FakeEngine(tmp_path / "bin", None)
    report = verify_demo(tmp_path, engine, (locked("make", "4.3-4.1"),))
    missing = "the image has no /var/lib/dpkg/status to compare with packages.lock"
    assert f"FAIL  packages: {missing}" in lines(list(report.checks))
    assert "dpkg" not in engine.scripts[0], "nothing to verify"
