"""The shared install scripts check the sha256 before installing anything (busybox and dash)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from artifact_server import tarball
from conftest import REQUIRE_DOCKER
from projects import REPO

SCRIPTS = REPO / "shared" / "install"
SHELLS = [s for s in ("/bin/sh", "/bin/busybox") if Path(s).exists()]


def run(shell: str, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [shell, "sh"] if shell.endswith("busybox") else [shell]
    return subprocess.run(
        [*command, str(SCRIPTS / script), *args], capture_output=True, text=True, check=False
    )


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "tool-1.0.tar.gz"
    path.write_bytes(
        tarball({"tool-1.0/bin/tool": "#!/bin/sh\necho tool 1.0\n"}, ("tool-1.0/bin/tool",))
    )
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("shell", SHELLS)
def test_tarball_installs_after_checking(
    shell: str, archive: tuple[Path, str], tmp_path: Path
) -> None:
    path, sha256 = archive
    dest = tmp_path / "opt" / "tool"
    result = run(shell, "tarball.sh", str(path), sha256, str(dest), "1")
    assert result.returncode == 0, result.stderr
    assert (dest / "bin" / "tool").read_text() == "#!/bin/sh\necho tool 1.0\n"
    assert (dest / "bin" / "tool").stat().st_mode & 0o111


@pytest.mark.parametrize("shell", SHELLS)
def test_tarball_mismatch_installs_nothing(
    shell: str, archive: tuple[Path, str], tmp_path: Path
) -> None:
    path, sha256 = archive
    dest = tmp_path / "opt" / "tool"
    wrong = "0" * 64
    result = run(shell, "tarball.sh", str(path), wrong, str(dest), "1")
    assert result.returncode != 0
    assert f"sha256 mismatch for {path}: expected {wrong}, got {sha256}" in result.stderr
    assert not dest.exists()


@pytest.mark.parametrize("shell", SHELLS)
def test_binary_installs_after_checking(shell: str, tmp_path: Path) -> None:
    binary = tmp_path / "tool"
    binary.write_text("#!/bin/sh\necho tool\n")
    sha256 = hashlib.sha256(binary.read_bytes()).hexdigest()
    dest = tmp_path / "usr" / "local" / "bin" / "tool"
    assert run(shell, "binary.sh", str(binary), "f" * 64, str(dest)).returncode != 0
    assert not dest.exists()
    result = run(shell, "binary.sh", str(binary), sha256, str(dest))
    assert result.returncode == 0, result.stderr
    assert dest.read_text() == binary.read_text()
    assert dest.stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("shell", SHELLS)
def test_entry_point_installs_every_listed_component(
    shell: str, archive: tuple[Path, str], tmp_path: Path
) -> None:
    path, sha256 = archive
    staging = tmp_path / "context"
    shutil.copytree(SCRIPTS, staging)
    (staging / "artifacts").mkdir()
    shutil.copy(path, staging / "artifacts" / path.name)
    (staging / "components.tsv").write_text(
        f"tool\t1.0\ttarball\t{sha256}\tartifacts/{path.name}\t/opt/tool\t1\n"
    )
    root = tmp_path / "root"
    command = [shell, "sh"] if shell.endswith("busybox") else [shell]
    result = subprocess.run(
        [*command, str(staging / "install.sh")],
        capture_output=True,
        text=True,
        check=False,
        env={"BUILDBOX_ROOT": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "installing tool 1.0 (tarball) into /opt/tool" in result.stdout
    assert (root / "opt" / "tool" / "bin" / "tool").is_file()


@pytest.mark.parametrize("shell", SHELLS)
def test_zip_installs_after_checking_and_strips(shell: str, tmp_path: Path) -> None:
    import zipfile

    archive = tmp_path / "protoc.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("protoc-26.1/bin/protoc", "#!/bin/sh\necho libprotoc 26.1\n")
        zipped.writestr("protoc-26.1/include/x.proto", "syntax = 'proto3';\n")
    sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
    dest = tmp_path / "usr" / "local" / "protoc"
    assert run(shell, "zip.sh", str(archive), "0" * 64, str(dest), "1").returncode != 0
    assert not dest.exists()
    result = run(shell, "zip.sh", str(archive), sha256, str(dest), "1")
    assert result.returncode == 0, result.stderr
    assert (dest / "bin" / "protoc").stat().st_mode & 0o111
    assert (dest / "include" / "x.proto").is_file()


@pytest.mark.parametrize("shell", SHELLS)
def test_rustup_init_runs_the_checked_installer_with_the_pinned_toolchain(
    shell: str, tmp_path: Path
) -> None:
    # A stand-in for rustup-init that records how it was called: the script's logic is under test.
    installer = tmp_path / "rustup-init"
    installer.write_text('#!/bin/sh\necho "$RUSTUP_HOME $CARGO_HOME $*" > "$RECORD"\n')
    sha256 = hashlib.sha256(installer.read_bytes()).hexdigest()
    record = tmp_path / "called"
    command = [shell, "sh"] if shell.endswith("busybox") else [shell]
    args = [str(SCRIPTS / "rustup-init.sh"), str(installer), sha256, "/opt/r", "0", "1.81.0"]
    env = {"RECORD": str(record), "PATH": "/usr/bin:/bin"}
    wrong = [*command, *args[:2], "f" * 64, *args[3:]]
    bad = subprocess.run(wrong, capture_output=True, text=True, env=env, check=False)
    assert bad.returncode != 0
    assert not record.exists()
    result = subprocess.run([*command, *args], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert record.read_text().split() == [
        "/opt/r/rustup", "/opt/r/cargo", "-y", "--no-modify-path", "--profile", "minimal",
        "--default-toolchain", "1.81.0",
    ]  # fmt: skip


# --- packages.sh runs only inside a build -----------------------------------------------------
# It runs dpkg on / and then deletes dpkg's and apt's logs: on a machine rather than an image
# being built, that would install packages and erase the administrator's record. It is never
# run against this machine's root here: refused runs meet stubs that record every call, and the
# one run that installs happens in a scratch root (a user namespace chrooted into tmp_path).

STUBBED = ("dpkg", "apt-get", "rm", "ldconfig")


def packages_context(where: Path) -> Path:
    """A build context's .buildbox: packages.sh, one (fake) .deb and its packages.tsv line."""
    where.mkdir(parents=True)
    shutil.copy(SCRIPTS / "packages.sh", where / "packages.sh")
    (where / "packages").mkdir()
    deb = where / "packages" / "hello_2.10-3_amd64.deb"
    deb.write_bytes(b"!<arch>\ndebian-binary\n")
    sha256 = hashlib.sha256(deb.read_bytes()).hexdigest()
    (where / "packages.tsv").write_text(f"hello\t2.10-3\tamd64\t{sha256}\t{deb.name}\n")
    return where


def recording_stubs(bin_dir: Path, record: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in STUBBED:
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {record}\n')
        (bin_dir / name).chmod(0o755)


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    ("root", "expected"),
    [
        (None, "packages.sh runs only inside a box's build"),
        ("", "packages.sh runs only inside a box's build"),
        ("/staging", "BUILDBOX_ROOT must be /, not /staging"),
    ],
)
def test_packages_refuses_to_run_outside_a_build(
    shell: str, root: str | None, expected: str, tmp_path: Path
) -> None:
    context = packages_context(tmp_path / "context")
    record = tmp_path / "calls"
    recording_stubs(tmp_path / "stubs", record)
    command = [shell, "sh"] if shell.endswith("busybox") else [shell]
    env = {"PATH": f"{tmp_path / 'stubs'}:/usr/bin:/bin"}
    if root is not None:
        env["BUILDBOX_ROOT"] = root
    result = subprocess.run(
        [*command, str(context / "packages.sh")],
        capture_output=True, text=True, check=False, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0, result.stdout + result.stderr
    assert not record.exists(), f"packages.sh ran {record.read_text()!r} outside a build"
    [line] = result.stderr.splitlines()
    assert line.startswith("buildbox: ")
    assert expected in line
    assert "nothing was done" in line


def scratch_root(tmp_path: Path) -> tuple[Path, Path]:
    """A root filesystem of busybox and a recording dpkg, with the context at /buildbox."""
    root = tmp_path / "root"
    for directory in ("bin", "usr/bin", "var/log/apt", "var/lib/dpkg", "tmp"):
        (root / directory).mkdir(parents=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    for applet in ("sh", "dirname", "sha256sum", "sed", "rm", "cat", "printf", "echo"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "usr" / "bin" / "dpkg").write_text('#!/bin/sh\necho "dpkg $*" >> /calls\n')
    (root / "usr" / "bin" / "dpkg").chmod(0o755)
    for log in ("var/log/dpkg.log", "var/log/apt/term.log", "var/lib/dpkg/status-old"):
        (root / log).write_text("when dpkg ran\n")
    packages_context(root / "buildbox")
    return root, root / "calls"


def scratch_root_prefix() -> list[str] | None:
    """How to run a command with a scratch directory as its root: a user namespace where the
    kernel allows one, else (as root, as in CI) chroot; None when neither is possible."""
    unshare, chroot = shutil.which("unshare"), shutil.which("chroot")
    if unshare is not None:
        userns = subprocess.run([unshare, "-r", "true"], capture_output=True, check=False)
        if userns.returncode == 0:
            return [unshare, "-r", "--root={root}"]
    if chroot and os.geteuid() == 0:
        return [chroot, "{root}"]
    return None


SCRATCH_ROOT = scratch_root_prefix()
# Skipped only off CI: under BUILDBOX_REQUIRE_DOCKER=1 (CI, as root, busybox-static installed by
# .ci/setup) the guarantee is tested, and a missing tool fails the test instead.
needs_scratch_root = pytest.mark.skipif(
    not REQUIRE_DOCKER and (not Path("/bin/busybox").is_file() or SCRATCH_ROOT is None),
    reason="needs a static /bin/busybox (busybox-static) and a scratch root: unprivileged user "
    "namespaces (unshare -r) or root (chroot)",
)


def in_scratch_root(root: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert SCRATCH_ROOT is not None
    prefix = [part.format(root=root) for part in SCRATCH_ROOT]
    return subprocess.run(
        [*prefix, "/bin/sh", "/buildbox/packages.sh"],
        capture_output=True, text=True, check=False, env={"PATH": "/usr/bin:/bin", **env},
    )  # fmt: skip


@needs_scratch_root
def test_packages_installs_and_cleans_up_in_the_build_root(tmp_path: Path) -> None:
    root, record = scratch_root(tmp_path)
    result = in_scratch_root(root, {"BUILDBOX_ROOT": "/"})
    assert result.returncode == 0, result.stderr
    assert record.read_text() == (
        "dpkg --install --force-confold /buildbox/packages/hello_2.10-3_amd64.deb\n"
    )
    assert not (root / "var/log/dpkg.log").exists()
    assert not (root / "var/log/apt/term.log").exists()
    assert not (root / "var/lib/dpkg/status-old").exists()


@needs_scratch_root
def test_packages_refuses_a_booted_system(tmp_path: Path) -> None:
    root, record = scratch_root(tmp_path)
    (root / "run" / "systemd" / "system").mkdir(parents=True)  # what systemd creates at boot
    result = in_scratch_root(root, {"BUILDBOX_ROOT": "/"})
    assert result.returncode != 0
    assert "a booted system" in result.stderr
    assert not record.exists()
    assert (root / "var/log/dpkg.log").exists()


def tamper_the_deb(context: Path) -> str:
    (context / "packages" / "hello_2.10-3_amd64.deb").write_bytes(b"x")
    return "hello 2.10-3 (amd64): hello_2.10-3_amd64.deb"


def remove_the_deb(context: Path) -> str:
    (context / "packages" / "hello_2.10-3_amd64.deb").unlink()
    return "hello 2.10-3 (amd64): hello_2.10-3_amd64.deb"


def tamper_the_second_of_two(context: Path) -> str:
    """The first package is as locked: dpkg must not get it either (all are checked first)."""
    deb = context / "packages" / "zlib1g_1.3_amd64.deb"
    deb.write_bytes(b"!<arch>\nzlib1g\n")
    locked = hashlib.sha256(deb.read_bytes()).hexdigest()
    with (context / "packages.tsv").open("a") as listed:
        listed.write(f"zlib1g\t1.3\tamd64\t{locked}\t{deb.name}\n")
    deb.write_bytes(b"!<arch>\nzlib1g, with something added\n")
    return "zlib1g 1.3 (amd64): zlib1g_1.3_amd64.deb"


@needs_scratch_root
@pytest.mark.parametrize("tamper", [tamper_the_deb, remove_the_deb, tamper_the_second_of_two])
def test_packages_installs_nothing_when_a_deb_is_not_the_locked_one(
    tmp_path: Path, tamper: Callable[[Path], str]
) -> None:
    root, record = scratch_root(tmp_path)
    named = tamper(root / "buildbox")
    result = in_scratch_root(root, {"BUILDBOX_ROOT": "/"})
    assert result.returncode == 1
    assert f"buildbox: {named} does not have the locked sha256 " in result.stderr
    assert not record.exists(), f"dpkg ran: {record.read_text()!r}"
    assert (root / "var/log/dpkg.log").exists()
