"""The GitHub Actions workflow calls only tasks and flags that exist; `invoke matrix` plans it."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from buildbox.release.record import RECORD_FILE
from buildbox.tasks import namespace
from projects import REPO, make_project, run_cli

WORKFLOW = REPO / ".github" / "workflows" / "buildbox.yml"


def run_steps(workflow: dict[str, Any]) -> list[str]:
    return [
        step["run"]
        for job in workflow["jobs"].values()
        for step in job.get("steps", [])
        if "run" in step
    ]


def invocations(script: str) -> list[list[str]]:
    """Every `invoke ...` command in a shell script, as words (expressions replaced by X)."""
    plain = re.sub(r"\$\{\{[^}]*\}\}", "X", script)
    plain = re.sub(r'"?\$\w+"?', "X", plain)
    return [shlex.split(m.group(1)) for m in re.finditer(r"\binvoke ([^\n|)&;]*)", plain)]


def test_workflow_is_yaml_and_calls_only_existing_tasks_and_flags() -> None:
    workflow = YAML(typ="safe").load(WORKFLOW.read_text())
    assert set(workflow["jobs"]) == {"test", "check", "plan", "build", "release"}
    ns = namespace(REPO)
    called = []
    for script in run_steps(workflow):
        for words in invocations(script):
            task_name, *flags = words
            assert task_name in ns.task_names, f"the workflow calls a missing task {task_name!r}"
            known = {
                f"--{name.replace('_', '-')}"
                for argument in ns[task_name].get_arguments()
                for name in argument.names
            }
            for flag in flags:
                assert flag.split("=")[0] in known, f"invoke {task_name} has no flag {flag}"
            called.append(task_name)
    assert {"check", "matrix", "build", "verify", "release", "audit", "ref", "list"} <= set(called)


def test_pull_requests_and_main_run_the_suite_before_anything_else() -> None:
    jobs = YAML(typ="safe").load(WORKFLOW.read_text())["jobs"]
    [command] = [s["run"] for s in jobs["test"]["steps"] if "run" in s]
    assert command.endswith("bash .ci/run -e lint,type,py")
    assert "BUILDBOX_REQUIRE_DOCKER=1" in (REPO / ".ci" / "run").read_text()
    assert "pull_request" in jobs["test"]["if"]
    assert "refs/heads/main" in jobs["test"]["if"]
    assert jobs["check"]["needs"] == "test"
    assert jobs["plan"]["needs"] == "test"


def test_workflow_triggers() -> None:
    workflow = YAML(typ="safe").load(WORKFLOW.read_text())
    triggers = workflow["on"]
    assert "pull_request" in triggers
    assert triggers["push"]["tags"] == ["buildbox/*/v*"]


@pytest.fixture
def two_boxes(tmp_path: Path) -> Path:
    from projects import BASE, write_yaml

    root = make_project(tmp_path / "p")
    write_yaml(
        root / "buildboxes" / "other" / "box.yaml",
        {"version": 2, "base": BASE, "platforms": ["linux/amd64"], "components": ["tool"]},
    )
    (root / "buildboxes" / "other" / "Dockerfile").write_text(
        (root / "buildboxes" / "demo" / "Dockerfile").read_text()
    )
    return root


def test_matrix_lists_unreleased_boxes_and_platforms(two_boxes: Path) -> None:
    result = run_cli(two_boxes, "matrix")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "include": [
            {"box": "demo", "version": "1", "platform": "linux/amd64"},
            {"box": "other", "version": "2", "platform": "linux/amd64"},
        ]
    }


def test_matrix_leaves_out_released_versions(two_boxes: Path) -> None:
    listed = json.loads(run_cli(two_boxes, "list", "--json").stdout)
    digest = next(box["inputs_digest"] for box in listed if box["box"] == "other")
    entry = {
        "box": "other", "version": "2", "reference": "r.example/b/other:v2@sha256:" + "1" * 64,
        "digest": "sha256:" + "1" * 64, "inputs_digest": digest, "revision": "0" * 40,
        "platforms": {"linux/amd64": {
            "digest": "sha256:" + "1" * 64, "sbom_path": "sbom/other/v2-linux-amd64.cdx.json",
            "sbom_digest": "sha256:" + "2" * 64}},
    }  # fmt: skip
    (two_boxes / RECORD_FILE).write_text(json.dumps({"releases": [entry]}))
    result = run_cli(two_boxes, "matrix")
    assert json.loads(result.stdout)["include"] == [
        {"box": "demo", "version": "1", "platform": "linux/amd64"}
    ]
    assert run_cli(two_boxes, "check").returncode == 0
    assert run_cli(two_boxes, "ref", "--box=other").stdout.strip() == entry["reference"]


def test_a_broken_release_record_is_a_clear_error(two_boxes: Path) -> None:
    (two_boxes / RECORD_FILE).write_text("{not json")
    result = run_cli(two_boxes, "matrix")
    assert result.returncode == 1
    assert f"{RECORD_FILE} cannot be read" in result.stderr
    assert "Traceback" not in result.stderr
