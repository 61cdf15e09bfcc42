"""`invoke doctor`: what the engine offers, and what a missing piece means."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from docker import DockerClient

from buildbox.build.doctor import BuildxBuilder, findings
from buildbox.build.engine import EngineFacts
from conftest import FixtureProject
from projects import run_cli, settings_for

LEGACY = EngineFacts(version="26.1.5", api="1.45", store="legacy", driver="overlay2")
DEFAULT = BuildxBuilder("default", "docker", "running", ("linux/amd64", "linux/arm64"))


def lines(found: list[Any]) -> dict[str, tuple[bool, str]]:
    return {f.topic: (f.ok, f.detail) for f in found}


def test_everything_present(tmp_path: Path) -> None:
    emulation = {"linux/amd64": None, "linux/arm64": None}
    found = lines(
        findings(LEGACY, "unix:///d.sock", "buildx 0.13.1", [DEFAULT], emulation,
                 settings_for(tmp_path))
    )  # fmt: skip
    assert all(ok for ok, _ in found.values())
    assert found["engine"][1] == "Docker Engine 26.1.5 (API 1.45) at unix:///d.sock"
    assert found["image store"][1].startswith("legacy (overlay2)")
    assert "builds use buildkit" in found["builder"][1]
    assert found["platform linux/arm64"] == (True, "emulated (binfmt)")


def test_missing_buildx_and_emulation_say_what_they_mean(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    missing = {"linux/amd64": None, "linux/arm64": "no binfmt handler for aarch64"}
    found = lines(findings(LEGACY, "unix:///d.sock", None, [], missing, settings))
    assert found["buildx"][0], "auto falls back to the classic builder: not an error"
    assert "builds use the classic builder, which Docker deprecated" in found["buildx"][1]
    assert "builds use classic" in found["builder"][1]
    assert found["platform linux/arm64"] == (False, "no binfmt handler for aarch64")
    forced = dataclasses.replace(settings, builder="buildkit", buildx_builder="remote1")
    found = lines(findings(LEGACY, "unix:///d.sock", None, [], missing, forced))
    assert not found["buildx"][0], "BuildKit asked for, and buildx is missing"


@pytest.mark.integration
@pytest.mark.store
def test_doctor_reports_the_running_engine(
    fixture_project: FixtureProject, docker_client: DockerClient
) -> None:
    result = run_cli(fixture_project.root, "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    status = dict(map(tuple, docker_client.info().get("DriverStatus") or []))
    store = "containerd" if "snapshotter" in str(status.get("driver-type", "")) else "legacy"
    assert f"image store             {store} (" in result.stdout
    assert docker_client.version()["Version"] in result.stdout


@pytest.mark.integration
def test_an_unknown_buildx_builder_is_a_clear_error(fixture_project: FixtureProject) -> None:
    result = run_cli(fixture_project.root, "build", "fixture", "--builder=nowhere")
    assert result.returncode == 1
    assert "no buildx builder nowhere" in result.stderr
    assert "docker buildx ls" in result.stderr
