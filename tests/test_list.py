"""`invoke list`, the tasks' help, and the fixture box (loopback artifact, busybox base)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from buildbox.define import project
from buildbox.define.inputs import inputs_digest
from buildbox.tasks import namespace
from conftest import HELLO_VERSION, BaseImage, FixtureProject
from projects import (
    BASE,
    DOCKERFILE,
    REPO,
    component,
    make_project,
    run_cli,
    run_invoke,
    settings_for,
    write_yaml,
)


def test_list_shows_each_box(tmp_path: Path) -> None:
    result = run_cli(make_project(tmp_path), "list")
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split() == ["BOX", "VERSION", "PLATFORMS", "COMPONENTS", "BASE"]
    assert row.split()[:5] == ["demo", "1", "linux/amd64", "tool", "1.0"]


def test_list_json_is_plain_data_with_the_inputs_digest(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    result = run_cli(root, "list", "--json")
    assert result.returncode == 0, result.stderr
    [box] = json.loads(result.stdout)
    loaded = project.load(settings_for(root))
    assert box["box"] == "demo"
    assert box["version"] == "1"
    assert box["platforms"] == ["linux/amd64"]
    assert box["components"] == [{"name": "tool", "version": "1.0", "platforms": ["linux/amd64"]}]
    assert box["inputs_digest"] == inputs_digest(
        loaded.box("demo"), loaded.library, loaded.settings
    )


def test_list_one_box_and_an_unknown_box(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    assert json.loads(run_cli(root, "list", "--json", "--box=demo").stdout)[0]["box"] == "demo"
    result = run_cli(root, "list", "--box=nope")
    assert result.returncode == 1
    assert "no box named 'nope' in buildboxes/ (boxes: demo)" in result.stderr


def test_list_refuses_an_invalid_project_and_says_why(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    (root / "buildboxes/demo/Dockerfile").unlink()
    result = run_cli(root, "list")
    assert result.returncode == 1
    assert "buildboxes/demo: Dockerfile: missing" in result.stderr
    assert "run `invoke check` again" in result.stderr


def test_list_of_the_repository_in_a_new_process() -> None:
    result = run_invoke(REPO, "list")
    assert result.returncode == 0, result.stderr
    assert "centos7" in result.stdout
    assert "go 1.24.2" in result.stdout


TASKS = sorted(namespace(REPO).task_names)


@pytest.mark.parametrize("task", TASKS)
def test_every_task_and_flag_has_help(tmp_path: Path, task: str) -> None:
    result = run_cli(make_project(tmp_path), "--help", task)
    assert result.returncode == 0, result.stderr
    docstring = result.stdout.split("Docstring:")[1].split("Options:")[0].strip()
    assert len(docstring) > 20
    options = result.stdout.split("Options:")[1] if "Options:" in result.stdout else ""
    for line in options.splitlines():
        if line.strip().startswith("-"):
            flag, _, text = line.strip().partition("   ")
            assert len(text.strip()) > 10, f"{task} {flag} has no help"


def test_help_survives_a_second_parser_in_the_same_process() -> None:
    """invoke consumes a task's help dict as it builds the parser; run_cli and tests that read
    ``get_arguments()`` build many parsers in one process, each from a fresh namespace."""
    for _ in range(2):
        [box] = [arg for arg in namespace(REPO)["list"].get_arguments() if arg.name == "box"]
        assert box.help is not None
        assert len(box.help) > 10


def test_all_tasks_are_listed() -> None:
    assert TASKS == [
        "audit", "build", "bump", "check", "doctor", "escrow", "fetch", "list", "lock", "main",
        "matrix", "publish", "ref", "registry", "release", "reproduce", "sbom", "sbom-diff",
        "verify", "verify-release",
    ]  # fmt: skip


@pytest.mark.integration
def test_fixture_box_is_valid(fixture_project: FixtureProject, busybox_base: BaseImage) -> None:
    result = run_cli(fixture_project.root, "check")
    assert result.returncode == 0, result.stdout + result.stderr
    [box] = json.loads(run_cli(fixture_project.root, "list", "--json").stdout)
    assert box["base"] == busybox_base.ref
    assert box["components"] == [
        {"name": "hello", "version": HELLO_VERSION, "platforms": ["linux/amd64"]}
    ]


def two_boxes(tmp_path: Path) -> Path:
    """A project with boxes demo and other, and a second component only other uses."""
    root = make_project(tmp_path)
    box = {"version": 1, "base": BASE, "platforms": ["linux/amd64"], "components": ["tool"]}
    write_yaml(root / "buildboxes/other/box.yaml", {**box, "components": ["extra"]})
    (root / "buildboxes/other/Dockerfile").write_text(DOCKERFILE)
    write_yaml(
        root / "shared/components.yaml", {"components": {"tool": component(), "extra": component()}}
    )
    return root


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        ("buildboxes/other/box.yaml", "buildboxes/other/box.yaml:2: invalid YAML"),
        ("buildboxes/other/Dockerfile", "buildboxes/other/Dockerfile: FROM: no stage is built"),
        ("buildbox.lock.json", "buildbox.lock.json cannot be read"),
    ],
)
def test_one_broken_box_or_record_does_not_stop_commands_about_another(
    tmp_path: Path, broken: str, problem: str
) -> None:
    root = two_boxes(tmp_path)
    (root / broken).write_text("{{ not what it should be\n")
    listed = run_cli(root, "list", "--box=demo")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split()[0] == "demo"
    everything = run_cli(root, "check")
    assert everything.returncode == 1
    assert problem in everything.stdout


def test_a_broken_component_stops_only_the_boxes_that_use_it(tmp_path: Path) -> None:
    root = two_boxes(tmp_path)
    write_yaml(
        root / "shared/components.yaml",
        {"components": {"tool": component(), "extra": component(sha256="abc")}},
    )
    assert run_cli(root, "list", "--box=demo").returncode == 0
    refused = run_cli(root, "list", "--box=other")
    assert refused.returncode == 1
    assert "components.extra.artifacts.linux/amd64.sha256: expected 64" in refused.stderr
    assert "'extra' has problems in shared/components.yaml" in refused.stderr


def test_a_corrupt_record_is_a_clear_message_where_it_is_read(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    (root / "buildbox.lock.json").write_text('{"releases": [{"box": 1}]}')
    assert run_cli(root, "list").returncode == 0
    result = run_cli(root, "ref", "demo")
    assert result.returncode == 1
    assert "buildbox.lock.json: releases[0], box: expected a string, got 1" in result.stderr
    assert "restore it from git" in result.stderr
    assert "Traceback" not in result.stderr


def test_listing_the_tasks_imports_no_heavy_library() -> None:
    """`invoke --list` and light commands start fast: the heavy libraries load in their tasks."""
    script = (
        "import sys; import buildbox.tasks; "
        "print(' '.join(sorted(m for m in ('docker', 'requests', 'jsonschema', 'cyclonedx', "
        "'rfc3987_syntax', 'ruamel') if m in sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert loaded.stdout.strip() == ""
