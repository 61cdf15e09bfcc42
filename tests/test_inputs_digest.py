"""The inputs digest: the same for the same inputs anywhere, different when the content changes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from buildbox.define import project
from buildbox.define.inputs import inputs_digest
from projects import (
    SHA_B,
    artifact,
    box_field,
    edit,
    library,
    make_project,
    settings_for,
    write,
)


def digest_of(root: Path, platform: str | None = None) -> str:
    loaded = project.load(settings_for(root))
    box = loaded.box("demo")
    return inputs_digest(box, loaded.library, loaded.settings, platform)


def test_same_inputs_same_digest_across_runs_and_paths(tmp_path: Path) -> None:
    first = make_project(tmp_path / "one")
    second = make_project(tmp_path / "elsewhere" / "two")
    assert digest_of(first) == digest_of(first) == digest_of(second)
    assert digest_of(first).startswith("sha256:")


def test_same_digest_in_another_process_with_other_hash_seed_and_cwd(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    code = (
        "import sys; sys.path.insert(0, sys.argv[2]); from test_inputs_digest import digest_of;"
        "from pathlib import Path; print(digest_of(Path(sys.argv[1])))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(root), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
        env={**os.environ, "PYTHONHASHSEED": "12345", "LC_ALL": "C"},
    )
    assert result.stdout.strip() == digest_of(root)


def test_file_times_do_not_change_the_digest(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    (root / "buildboxes/demo/b.txt").write_text("b")
    (root / "buildboxes/demo/a.txt").write_text("a")
    before = digest_of(root)
    for path in (root / "buildboxes/demo").iterdir():
        os.utime(path, (0, 0))
    assert digest_of(root) == before


CHANGES_CONTENT = {
    "Dockerfile": edit("buildboxes/demo/Dockerfile", "COPY --from", "# a comment\nCOPY --from"),
    "a new file in the box": write("buildboxes/demo/extra.conf", "x=1\n"),
    "shared install script": edit("shared/install/tarball.sh", "set -eu", "set -eux"),
    "shared entry-point script": edit("shared/install/install.sh", "set -eu", "set -eux"),
    "base digest": box_field(base="127.0.0.1:5000/base@sha256:" + "d" * 64),
    "network mode": box_field(network=True),
    "component version": library(version="1.1"),
    "artifact sha256": artifact(sha256=SHA_B),
    "artifact file name": artifact(url="https://example.org/tool-1.0.tar.xz"),
    "install destination": library(install={"kind": "tarball", "dest": "/usr/local"}),
    "strip components": library(
        install={"kind": "tarball", "dest": "/opt/tool", "strip_components": 0}
    ),
}

DOES_NOT_CHANGE_CONTENT = {
    "box version (a name for the content, not the content)": box_field(version=2),
    "description": box_field(description="now with docs"),
    "download host (a mirror serves the same bytes)": artifact(
        url="https://mirror.example.net/tool-1.0.tar.gz"
    ),
    "sha256 source note": artifact(sha256_source="elsewhere"),
    "probe": library(probe={"command": ["tool", "-V"], "expect": "1.0"}),
    "an install script the box does not use": edit(
        "shared/install/binary.sh", "set -eu", "set -eux"
    ),
}


@pytest.mark.parametrize("change", CHANGES_CONTENT)
def test_content_change_changes_the_digest(tmp_path: Path, change: str) -> None:
    root = make_project(tmp_path)
    before = digest_of(root)
    CHANGES_CONTENT[change](root)
    assert digest_of(root) != before


@pytest.mark.parametrize("change", DOES_NOT_CHANGE_CONTENT)
def test_naming_and_metadata_do_not_change_the_digest(tmp_path: Path, change: str) -> None:
    root = make_project(tmp_path)
    before = digest_of(root)
    DOES_NOT_CHANGE_CONTENT[change](root)
    assert digest_of(root) == before


def test_per_platform_digest_ignores_the_other_platform(tmp_path: Path) -> None:
    entry = {"url": "https://example.org/tool-1.0.tar.gz", "sha256": "a" * 64, "sha256_source": "x"}
    arm = {**entry, "url": "https://example.org/tool-1.0-arm64.tar.gz"}
    root = make_project(tmp_path)
    library(artifacts={"linux/amd64": entry, "linux/arm64": arm})(root)
    box_field(platforms=["linux/amd64", "linux/arm64"])(root)
    amd64, both = digest_of(root, "linux/amd64"), digest_of(root)
    library(artifacts={"linux/amd64": entry, "linux/arm64": {**arm, "sha256": SHA_B}})(root)
    assert digest_of(root, "linux/amd64") == amd64
    assert digest_of(root) != both


def test_copying_the_project_keeps_the_digest(tmp_path: Path) -> None:
    root = make_project(tmp_path / "a")
    copy = tmp_path / "b"
    shutil.copytree(root, copy)
    assert digest_of(copy) == digest_of(root)


def test_making_a_file_executable_changes_the_digest(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    script = root / "buildboxes/demo/run.sh"
    script.write_text("echo hi\n")
    script.chmod(0o644)
    before = digest_of(root)
    script.chmod(0o755)
    assert digest_of(root) != before
