"""`invoke bump`: new pins from the publisher's checksum file, cross-checked, written in place."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from artifact_server import ArtifactServer, tarball
from buildbox.bump import Bump, NewPin, apply, parse_checksums
from buildbox.define.project import load as load_project
from buildbox.errors import BuildboxError
from projects import make_project, run_cli, settings_for

LIBRARY = """\
# The library. This comment must survive a bump.
components:
  tool:
    version: "{version}"   # quoted on purpose
    license: MIT
    purl: pkg:generic/tool@{version}
    install: {{kind: tarball, dest: /opt/tool, strip_components: 1}}
    probe:
      command: [/opt/tool/bin/tool, --version]
      expect: tool {version}
    upstream:
      url: {base}/tool-{{version}}-{{os}}-{{arch}}.tar.gz
      checksums: {base}/v{{version}}/SHA256SUMS
      arch: {{linux/amd64: x86_64}}
    artifacts:
      linux/amd64:
        url: {base}/tool-{version}-linux-x86_64.tar.gz
        sha256: {amd64}
        sha256_source: {base}/v{version}/SHA256SUMS
      linux/arm64:
        url: {base}/tool-{version}-linux-arm64.tar.gz
        sha256: {arm64}
        sha256_source: {base}/v{version}/SHA256SUMS
  other:  # untouched by a bump of tool
    version: "2.0"
    license: Apache-2.0
    install: {{kind: binary, dest: /usr/local/bin/other}}
    probe: {{command: [other], expect: "2.0"}}
    artifacts:
      linux/amd64: {{url: https://example.org/other, sha256: {other}, sha256_source: x}}
"""


def release(artifacts: ArtifactServer, version: str, *, publish: bool = True) -> dict[str, str]:
    """Serve tool ``version`` for both platforms and, unless told not to, its SHA256SUMS."""
    shas = {}
    lines = []
    for platform, arch in (("linux/amd64", "x86_64"), ("linux/arm64", "arm64")):
        name = f"tool-{version}-linux-{arch}.tar.gz"
        artifacts.add(name, tarball({f"tool/{arch}": f"tool {version} {arch}\n"}))
        shas[platform] = artifacts.sha256(name)
        lines.append(f"{shas[platform]}  {name}\n")
    if publish:
        artifacts.add(f"v{version}/SHA256SUMS", "".join(lines).encode())
    return shas


@pytest.fixture
def bump_project(tmp_path: Path, artifacts: ArtifactServer) -> Path:
    shas = release(artifacts, "1.0")
    root = make_project(tmp_path / "p")
    (root / "shared/components.yaml").write_text(
        LIBRARY.format(
            version="1.0",
            base=artifacts.base_url,
            amd64=shas["linux/amd64"],
            arm64=shas["linux/arm64"],
            other="e" * 64,
        )
    )
    (root / "invoke.yaml").write_text(
        f"buildbox:\n  cache_dir: {tmp_path / 'cache'}\n  fetch_backoff: 0.01\n"
    )
    assert run_cli(root, "check").returncode == 0
    return root


def test_bump_writes_published_pins_and_keeps_the_rest(
    bump_project: Path, artifacts: ArtifactServer
) -> None:
    shas = release(artifacts, "1.1")
    before = (bump_project / "shared/components.yaml").read_text()
    result = run_cli(bump_project, "bump", "--component=tool", "--version=1.1")
    assert result.returncode == 0, result.stderr
    after = (bump_project / "shared/components.yaml").read_text()
    expected = LIBRARY.format(
        version="1.1",
        base=artifacts.base_url,
        amd64=shas["linux/amd64"],
        arm64=shas["linux/arm64"],
        other="e" * 64,
    )
    assert after == expected, "only the pins of tool change; comments, quotes and order stay"
    assert after != before
    assert "tool: 1.0 -> 1.1" in result.stdout
    assert "box demo takes tool: bump `version` in buildboxes/demo/box.yaml (now 1)" in (
        result.stdout
    )
    assert run_cli(bump_project, "check").returncode == 0


def test_dry_run_changes_nothing(bump_project: Path, artifacts: ArtifactServer) -> None:
    shas = release(artifacts, "1.2")
    before = (bump_project / "shared/components.yaml").read_text()
    result = run_cli(bump_project, "bump", "--component=tool", "--version=1.2", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert (bump_project / "shared/components.yaml").read_text() == before
    assert shas["linux/arm64"] in result.stdout
    assert "dry run: shared/components.yaml is unchanged" in result.stdout


def test_bytes_that_disagree_with_the_published_checksum_write_nothing(
    bump_project: Path, artifacts: ArtifactServer
) -> None:
    release(artifacts, "1.3")
    artifacts.misbehave("tool-1.3-linux-arm64.tar.gz", "wrong-bytes")
    before = (bump_project / "shared/components.yaml").read_text()
    result = run_cli(bump_project, "bump", "--component=tool", "--version=1.3")
    assert result.returncode == 1
    assert "sha256 mismatch for" in result.stderr
    assert "tool-1.3-linux-arm64.tar.gz" in result.stderr
    assert (bump_project / "shared/components.yaml").read_text() == before


def test_no_published_checksums_is_an_error(bump_project: Path, artifacts: ArtifactServer) -> None:
    release(artifacts, "1.4", publish=False)
    result = run_cli(bump_project, "bump", "--component=tool", "--version=1.4")
    assert result.returncode == 1
    assert f"cannot read the checksum file {artifacts.base_url}/v1.4/SHA256SUMS: HTTP 404" in (
        result.stderr
    )


def test_component_without_upstream_cannot_be_bumped(bump_project: Path) -> None:
    result = run_cli(bump_project, "bump", "--component=other", "--version=2.1")
    assert result.returncode == 1
    assert "components.other has no `upstream` block" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "text",
    [
        "{sha}  tool.tar.gz\n{other}  tool.tar.gz.sig\n",
        "{other}  other.tar.gz\n{sha} *tool.tar.gz\n",
        "{sha}  ./dist/tool.tar.gz\n",
        "{sha}\n",
        "{upper}  tool.tar.gz\n",
    ],
)
def test_checksum_file_formats(text: str) -> None:
    sha = hashlib.sha256(b"tool").hexdigest()
    other = hashlib.sha256(b"other").hexdigest()
    filled = text.format(sha=sha, other=other, upper=sha.upper())
    assert parse_checksums(filled, "tool.tar.gz", "SUMS") == sha


def test_checksum_file_without_the_file() -> None:
    other = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(BuildboxError, match=r"the checksum file SUMS has no sha256 for tool\.tgz"):
        parse_checksums(f"{other}  other.tgz\n{other}  more.tgz\n", "tool.tgz", "SUMS")


def test_check_catches_an_upstream_template_that_disagrees_with_the_pins(
    bump_project: Path,
) -> None:
    library = bump_project / "shared/components.yaml"
    library.write_text(library.read_text().replace("arch: {linux/amd64: x86_64}", "arch: {}"))
    result = run_cli(bump_project, "check")
    assert result.returncode == 1
    assert "components.tool.upstream.url: gives " in result.stdout
    assert "tool-1.0-linux-amd64.tar.gz for linux/amd64 at version 1.0" in result.stdout

    library.write_text(library.read_text().replace("{os}-{arch}", "{platform}"))
    result = run_cli(bump_project, "check")
    assert "components.tool.upstream.url: '{platform}' is not a placeholder here" in result.stdout


def test_bump_to_the_current_version_says_so_and_leaves_the_file_alone(
    bump_project: Path,
) -> None:
    library = bump_project / "shared/components.yaml"
    before, stamp = library.read_bytes(), library.stat().st_mtime_ns
    result = run_cli(bump_project, "bump", "--component=tool", "--version=1.0")
    # Not a failure: a scheduled bump to the latest release may find nothing new.
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tool is already at version 1.0 in shared/components.yaml; nothing to bump" in (
        result.stdout
    )
    assert "wrote" not in result.stdout
    assert library.read_bytes() == before
    assert library.stat().st_mtime_ns == stamp


def test_applying_pins_that_are_already_there_does_not_rewrite_the_file(
    bump_project: Path,
) -> None:
    """Defence in depth: apply() leaves an unchanged file untouched, mtime and all."""
    project = load_project(settings_for(bump_project))
    tool = project.library.get("tool")
    assert tool is not None
    pins = tuple(NewPin(a.platform, a.url, a.sha256, a.sha256_source) for a in tool.artifacts)
    library = bump_project / "shared/components.yaml"
    before, stamp = library.read_bytes(), library.stat().st_mtime_ns
    apply(Bump("tool", "1.0", "1.0", pins, ()), library)
    assert library.read_bytes() == before
    assert library.stat().st_mtime_ns == stamp
