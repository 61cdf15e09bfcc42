"""The binary compatibility check, on real ELF files built here with the machine's compiler.

The machine's glibc (2.36 on Debian 12) is newer than what a CentOS 7 box provides (2.17), so a
dynamically linked program built here must be refused for such a box, and a static one accepted.
What each file really needs is read independently with binutils' objdump.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tarfile
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest
from docker import DockerClient

from artifact_server import ArtifactServer, tarball
from buildbox.compat import ElfFile, cached_scan, check_box, incompatibilities, scan
from buildbox.define.boxes import Box
from buildbox.define.library import Artifact, Component, Install, Library, Probe
from buildbox.errors import BuildboxError
from conftest import FixtureProject, hello_component, missing
from projects import make_project, run_cli, run_invoke, write_yaml


@pytest.fixture(scope="module", autouse=True)
def compiler() -> None:
    """The real ELF files are compiled here: without a compiler these tests skip, or fail in CI."""
    if not all(shutil.which(tool) for tool in ("gcc", "g++", "objdump")):
        missing("needs gcc, g++ and objdump (Debian: build-essential)")


C_PROGRAM = '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n'
CXX_PROGRAM = (
    "#include <iostream>\n#include <string>\n"
    'int main() { std::string s("hello"); std::cout << s << std::endl; return 0; }\n'
)
LIBRARY = "int answer(void) { return 42; }\n"


def compile_(tmp: Path, source: str, *flags: str, compiler: str = "gcc", name: str = "") -> Path:
    suffix = ".cc" if compiler == "g++" else ".c"
    src = tmp / f"{uuid.uuid4().hex[:8]}{suffix}"
    src.write_text(source)
    out = tmp / (name or src.stem)
    subprocess.run([compiler, *flags, "-o", str(out), str(src)], check=True)
    return out


def needed_versions(path: Path) -> dict[str, str]:
    """The highest version of each family objdump lists under "Version References"."""
    dump = subprocess.run(
        ["objdump", "-p", str(path)], check=True, capture_output=True, text=True
    ).stdout
    highest: dict[str, tuple[int, ...]] = {}
    for family, version in re.findall(
        r"\b([A-Z]+)_([0-9][0-9.]*)\b", dump.split("Version References")[-1]
    ):
        key = tuple(int(p) for p in version.split("."))
        highest[family] = max(highest.get(family, key), key)
    return {family: ".".join(map(str, key)) for family, key in highest.items()}


def machine_glibc() -> str:
    out = subprocess.run(
        ["getconf", "GNU_LIBC_VERSION"], check=True, capture_output=True, text=True
    )
    return out.stdout.split()[1]


def box(provides: dict[str, str], platforms: tuple[str, ...] = ("linux/amd64",)) -> Box:
    return Box(
        name="old",
        directory=Path("buildboxes/old"),
        version="1",
        base="example.org/old@sha256:" + "c" * 64,
        platforms=platforms,
        components=("tool",),
        provides=tuple(sorted(provides.items())),
    )


def library_of(artifact: Path, sha256: str, platform: str = "linux/amd64") -> Library:
    return Library(
        (
            Component(
                "tool", "1.0", "MIT", "pkg:generic/tool@1.0",
                Install("tarball", "/opt/tool"), Probe(("tool",), "1.0"),
                (Artifact(platform, f"https://example.org/{artifact.name}", sha256, "test"),),
            ),
        )
    )  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("elf")
    return {
        "dynamic": compile_(tmp, C_PROGRAM, name="dynamic"),
        "cxx": compile_(tmp, CXX_PROGRAM, compiler="g++", name="cxx"),
        "static": compile_(tmp, C_PROGRAM, "-static", name="static"),
        "library": compile_(tmp, LIBRARY, "-shared", "-fPIC", name="libanswer.so.1"),
    }


def pack_tarball(path: Path, files: dict[str, tuple[bytes, int]]) -> Path:
    with tarfile.open(path, "w:xz") as archive:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            archive.addfile(info, io.BytesIO(data))
    return path


def test_a_dynamic_program_needs_the_glibc_it_was_linked_against(built: dict[str, Path]) -> None:
    expected = needed_versions(built["dynamic"])
    assert "GLIBC" in expected
    (found,) = scan(built["dynamic"])
    assert found == ElfFile("dynamic", "EM_X86_64", (("GLIBC", expected["GLIBC"]),))


def test_a_cxx_program_needs_libstdcxx_versions_too(built: dict[str, Path]) -> None:
    (found,) = scan(built["cxx"])
    assert dict(found.needs) == needed_versions(built["cxx"])
    assert "GLIBCXX" in dict(found.needs)


def test_a_static_program_needs_nothing_and_passes_for_glibc_2_17(built: dict[str, Path]) -> None:
    (found,) = scan(built["static"])
    assert found.needs == ()
    assert incompatibilities(box({"GLIBC": "2.17"}), "linux/amd64", (found,)) == []


def test_a_base_with_glibc_2_17_is_refused_naming_file_symbol_and_base(
    tmp_path: Path, built: dict[str, Path]
) -> None:
    needed = needed_versions(built["dynamic"])["GLIBC"]
    artifact = pack_tarball(
        tmp_path / "tool-1.0.tar.xz",
        {
            "tool-1.0/bin/tool": (built["dynamic"].read_bytes(), 0o755),
            "tool-1.0/bin/tool-static": (built["static"].read_bytes(), 0o755),
        },
    )
    lines = check_box(
        box({"GLIBC": "2.17"}), library_of(artifact, "d" * 64), "linux/amd64",
        {"d" * 64: artifact}, tmp_path / "cache",
    )  # fmt: skip
    assert lines == [
        (
            f"tool 1.0 (linux/amd64): tool-1.0/bin/tool needs GLIBC_{needed}, but the base has "
            "GLIBC 2.17 (buildboxes/old/box.yaml: provides.GLIBC)"
        )
    ]


def test_the_machines_own_glibc_runs_it(tmp_path: Path, built: dict[str, Path]) -> None:
    provides = {
        "GLIBC": machine_glibc(),
        **{k: v for k, v in needed_versions(built["cxx"]).items() if k != "GLIBC"},
    }
    files = (*scan(built["dynamic"]), *scan(built["cxx"]))
    assert incompatibilities(box(provides), "linux/amd64", files) == []


def test_cxx_needs_are_checked_against_the_declared_libstdcxx(built: dict[str, Path]) -> None:
    needed = needed_versions(built["cxx"])["GLIBCXX"]
    wrong = incompatibilities(box({"GLIBCXX": "3.4.19"}), "linux/amd64", scan(built["cxx"]))
    assert wrong == [
        (
            "cxx",
            (
                f"needs GLIBCXX_{needed}, but the base has GLIBCXX 3.4.19 "
                "(buildboxes/old/box.yaml: provides.GLIBCXX)"
            ),
        )
    ]


def test_an_amd64_binary_pinned_for_arm64_is_refused(built: dict[str, Path]) -> None:
    wrong = incompatibilities(box({}, ("linux/arm64",)), "linux/arm64", scan(built["static"]))
    assert wrong == [("static", "is built for EM_X86_64, not linux/arm64 (EM_AARCH64)")]


def test_zip_members_libraries_and_skipped_data(tmp_path: Path, built: dict[str, Path]) -> None:
    """Executables and shared libraries are read; other files, even ELF test data, are not."""
    artifact = tmp_path / "tool.zip"
    with zipfile.ZipFile(artifact, "w") as archive:
        for name, path, mode in (
            ("bin/tool", built["static"], 0o755),
            ("lib/libanswer.so.1", built["library"], 0o644),
            ("testdata/old-binary", built["dynamic"], 0o644),
            ("README", None, 0o644),
        ):
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | mode) << 16
            archive.writestr(info, path.read_bytes() if path else b"read me\n")
    found = scan(artifact)
    assert [f.path for f in found] == ["bin/tool", "lib/libanswer.so.1"]
    assert dict(found[1].needs) == needed_versions(built["library"])


def test_the_scan_is_kept_under_the_artifacts_sha256(
    tmp_path: Path, built: dict[str, Path]
) -> None:
    artifact = tmp_path / "tool"
    shutil.copy(built["dynamic"], artifact)
    first = cached_scan(artifact, "e" * 64, tmp_path / "cache")
    artifact.unlink()  # a second scan would fail: the answer must come from the cache
    assert cached_scan(artifact, "e" * 64, tmp_path / "cache") == first
    assert [p.name for p in (tmp_path / "cache" / "elf").iterdir()] == ["e" * 64 + ".json"]


def test_a_damaged_archive_is_one_clear_error(tmp_path: Path) -> None:
    """A tarball cut short (the publisher's upload was truncated, and the pin copied from it)."""
    whole = pack_tarball(
        tmp_path / "whole.tar.xz", {"tool-1.0/bin/tool": (uuid.uuid4().bytes * 50_000, 0o755)}
    ).read_bytes()
    artifact = tmp_path / "tool-1.0.tar.xz"
    artifact.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(BuildboxError, match=r"tool 1.0 \(linux/amd64\), tool-1.0.tar.xz: cannot"):
        check_box(
            box({"GLIBC": "2.17"}), library_of(artifact, "f" * 64), "linux/amd64",
            {"f" * 64: artifact}, tmp_path / "cache",
        )  # fmt: skip
    assert not (tmp_path / "cache" / "elf").exists()


def served_tool(artifacts: ArtifactServer, program: Path) -> dict[str, Any]:
    """A library entry for ``program``, packed in a tarball the artifact server serves."""
    name = f"tool-{uuid.uuid4().hex[:8]}.tar.gz"
    url = artifacts.add(
        name, tarball({"tool/bin/tool": program.read_bytes()}, executable=("tool/bin/tool",))
    )
    return {
        "version": "1.0",
        "license": "MIT",
        "install": {"kind": "tarball", "dest": "/opt/tool", "strip_components": 1},
        "probe": {"command": ["/opt/tool/bin/tool"], "expect": "hello"},
        "artifacts": {
            "linux/amd64": {"url": url, "sha256": artifacts.sha256(name), "sha256_source": "test"}
        },
    }


def test_check_deep_fetches_and_names_what_the_base_cannot_run(
    tmp_path: Path, artifacts: ArtifactServer, built: dict[str, Path]
) -> None:
    needed = needed_versions(built["dynamic"])["GLIBC"]
    root = make_project(
        tmp_path / "project", components={"tool": served_tool(artifacts, built["dynamic"])}
    )
    (root / "invoke.yaml").write_text(f"buildbox:\n  cache_dir: {tmp_path / 'cache'}\n")
    assert run_cli(root, "check").returncode == 0  # the shallow check cannot tell

    box_yaml = root / "buildboxes/demo/box.yaml"
    write_yaml(box_yaml, {**_yaml(box_yaml), "provides": {"GLIBC": "2.17"}})
    result = run_cli(root, "check", "--deep")
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        f"buildboxes/demo/box.yaml: tool 1.0 (linux/amd64): tool/bin/tool needs GLIBC_{needed}, "
        "but the base has GLIBC 2.17 (buildboxes/demo/box.yaml: provides.GLIBC)"
    ) in result.stdout
    assert "Traceback" not in result.stderr

    write_yaml(box_yaml, {**_yaml(box_yaml), "provides": {"GLIBC": machine_glibc()}})
    result = run_cli(root, "check", "--deep")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every base runs its boxes' executables and libraries" in result.stdout

    # An artifact that cannot be fetched is named; the others are still checked.
    gone = served_tool(artifacts, built["static"])
    gone["artifacts"]["linux/amd64"]["url"] = artifacts.url("no-such-file.tar.gz")
    library = {"tool": served_tool(artifacts, built["dynamic"]), "gone": gone}
    write_yaml(root / "shared/components.yaml", {"components": library})
    write_yaml(box_yaml, {**_yaml(box_yaml), "components": ["tool", "gone"],
                          "provides": {"GLIBC": "2.17"}})  # fmt: skip
    (root / "invoke.yaml").write_text(
        f"buildbox:\n  cache_dir: {tmp_path / 'cache'}\n  fetch_retries: 0\n"
    )
    result = run_cli(root, "check", "--deep")
    assert result.returncode == 1
    assert "shared/components.yaml: not checked: gone 1.0 (linux/amd64): " in result.stdout
    assert f"tool/bin/tool needs GLIBC_{needed}" in result.stdout


def test_provides_is_validated(tmp_path: Path) -> None:
    root = make_project(tmp_path / "project")
    box_yaml = root / "buildboxes/demo/box.yaml"
    write_yaml(box_yaml, {**_yaml(box_yaml), "provides": {"GLIBC": "two", "MUSL": "1.2"}})
    result = run_cli(root, "check")
    assert result.returncode == 1
    assert "buildboxes/demo/box.yaml" in result.stdout
    assert "provides.GLIBC" in result.stdout


def _yaml(path: Path) -> dict[str, Any]:
    from ruamel.yaml import YAML

    loaded = YAML(typ="safe", pure=True).load(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.mark.integration
def test_build_refuses_before_the_engine_sees_anything(
    fixture_project: FixtureProject,
    artifacts: ArtifactServer,
    built: dict[str, Path],
    docker_client: DockerClient,
) -> None:

    needed = needed_versions(built["dynamic"])["GLIBC"]
    write_yaml(
        fixture_project.root / "shared/components.yaml",
        {
            "components": {
                "hello": hello_component(artifacts),
                "tool": served_tool(artifacts, built["dynamic"]),
            }
        },
    )
    fixture_project.set_box(components=["hello", "tool"], provides={"GLIBC": "2.17"})
    result = run_invoke(fixture_project.root, "build", "fixture")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "box fixture cannot run what it pins on linux/amd64:" in result.stderr
    assert f"tool 1.0 (linux/amd64): tool/bin/tool needs GLIBC_{needed}" in result.stderr
    assert "Traceback" not in result.stderr
    tags = [t for image in docker_client.images.list() for t in image.tags]
    assert not any(t.startswith(fixture_project.registry) for t in tags)
