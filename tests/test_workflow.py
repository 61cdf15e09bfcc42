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
    assert set(workflow["jobs"]) == {
        "test", "check", "plan", "build", "release-build", "release-sign",
    }  # fmt: skip
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
        "box": "other", "version": "2",
        "reference": "127.0.0.1:5000/buildbox/other:v2@sha256:" + "1" * 64,
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


# --- the release job apart from untrusted input (issue 26, point 12) ----------------------------

SHA_PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")


def jobs() -> dict[str, Any]:
    found: dict[str, Any] = YAML(typ="safe").load(WORKFLOW.read_text())["jobs"]
    return found


def test_every_action_is_pinned_by_commit_with_its_tag_beside_it() -> None:
    lines = WORKFLOW.read_text().splitlines()
    uses = [line.strip() for line in lines if line.strip().removeprefix("- ").startswith("uses:")]
    assert uses
    for line in uses:
        action, _, comment = line.removeprefix("- ").removeprefix("uses:").partition("#")
        assert SHA_PINNED.match(action.strip()), f"not pinned by commit: {line}"
        assert re.match(r"^ v\d+\.\d+\.\d+$", comment), f"no tag beside the pin: {line}"


RELEASE_JOBS = ("release-build", "release-sign")


def test_only_the_sign_job_holds_the_oidc_token_and_only_on_a_default_branch_tag() -> None:
    found = jobs()
    holders = [
        name for name, job in found.items() if (job.get("permissions") or {}).get("id-token")
    ]
    assert holders == ["release-sign"]
    assert found["release-sign"]["permissions"]["id-token"] == "write"
    assert found["release-build"]["permissions"] == {"contents": "read", "packages": "write"}
    for name in RELEASE_JOBS:
        assert "startsWith(github.ref, 'refs/tags/buildbox/')" in found[name]["if"]
    workflow = YAML(typ="safe").load(WORKFLOW.read_text())
    assert workflow["permissions"] == {"contents": "read"}


def test_the_release_is_built_in_one_job_and_signed_in_another_that_builds_nothing() -> None:
    found = jobs()
    build, sign = found["release-build"], found["release-sign"]
    assert sign["needs"] == "release-build"
    built = [words for s in build["steps"] for words in invocations(s.get("run", ""))]
    signed = [words for s in sign["steps"] for words in invocations(s.get("run", ""))]
    assert [w for w in built if w[0] == "release"] == [["release", "--box=X", "--push-only"]]
    assert [w for w in signed if w[0] == "release"] == [["release", "--box=X", "--sign-digest=X"]]
    # The build job: no key, no cosign, no signing identity; its digests go out as outputs.
    assert "INVOKE_BUILDBOX_SIGNING_KEY" not in str(build)
    assert not any("cosign" in step.get("uses", "") for step in build["steps"])
    assert "steps.push.outputs" in build["outputs"]["index"]
    # The sign job runs no build: no engine, no image built, imported or pushed by hand.
    for step in sign["steps"]:
        script = step.get("run", "")
        assert not re.search(r"\b(docker|buildx|podman|mmdebstrap)\b", script), script
    assert not {w[0] for w in signed} & {"build", "verify", "publish", "main", "reproduce", "sbom"}
    # What the build job hands over reaches the sign job's shell as variables, never as text
    # pasted into a script (a build job that was tampered with cannot inject commands).
    for step in sign["steps"]:
        assert "needs." not in step.get("run", ""), step["run"]
    assert any(
        "needs.release-build.outputs.index" in str(step.get("env")) for step in sign["steps"]
    )


def test_both_release_jobs_check_the_tag_is_on_the_default_branch_before_anything_runs() -> None:
    for name in RELEASE_JOBS:
        steps = jobs()[name]["steps"]
        scripts = [step.get("run", "") for step in steps]
        [check] = [i for i, script in enumerate(scripts) if "merge-base --is-ancestor" in script]
        assert '"$GITHUB_SHA"' in scripts[check]
        assert "github.event.repository.default_branch" in str(steps[check].get("env"))
        first_install = next(i for i, script in enumerate(scripts) if "pip install" in script)
        assert check < first_install, f"{name}: nothing from the tag's tree runs before the check"
        checkout = steps[0]
        assert checkout["uses"].startswith("actions/checkout@")
        assert checkout["with"]["persist-credentials"] is False
        assert checkout["with"]["fetch-depth"] == 0, "the default branch's history is fetched"
        assert checkout["with"]["ref"] == "${{ github.sha }}", "both jobs: the same commit"


def test_the_toolkit_is_installed_pinned_and_the_release_jobs_hashed() -> None:
    for name, job in jobs().items():
        for step in job.get("steps", []):
            script = step.get("run", "")
            if "pip install" not in script:
                continue
            if name in RELEASE_JOBS:
                assert "pip install --require-hashes -r requirements-release.txt" in script
                assert "pip install --no-deps --no-build-isolation --no-index ." in script
            else:
                assert "pip install -c constraints.txt ." in script, f"{name}: {script}"


def test_registry_credentials_reach_only_the_steps_that_talk_to_the_registry() -> None:
    for name in RELEASE_JOBS:
        job = jobs()[name]
        assert "BUILDBOX_REGISTRY_PASSWORD" not in (job.get("env") or {})
        for step in job["steps"]:
            if "BUILDBOX_REGISTRY_PASSWORD" in (step.get("env") or {}):
                assert re.search(r"\binvoke (release|verify-release|audit)\b", step["run"]), step


def test_the_hashed_requirements_agree_with_the_constraints() -> None:
    def pins(path: Path) -> dict[str, str]:
        found = {}
        for line in path.read_text().splitlines():
            if match := re.match(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)", line):
                found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
        return found

    hashed = pins(REPO / "requirements-release.txt")
    constrained = pins(REPO / "constraints.txt")
    text = (REPO / "requirements-release.txt").read_text()
    assert all(f"{name}==" in text.lower().replace("_", "-") for name in hashed)
    drifted = {
        name: (version, constrained.get(name))
        for name, version in hashed.items()
        if name != "setuptools" and constrained.get(name) != version
    }
    assert not drifted, f"requirements-release.txt and constraints.txt differ: {drifted}"
    blocks = re.split(r"\n(?=[a-z0-9])", text.split("\n\n", 1)[-1].strip())
    assert all("--hash=sha256:" in block for block in blocks if "==" in block)


def test_no_run_script_has_an_expression_pasted_into_it() -> None:
    """``${{ … }}`` in a run script is pasted into the shell text before it runs: a box name, a
    tag or a job output would be code. Values reach scripts as environment variables."""
    pasted = [script for script in run_steps(YAML(typ="safe").load(WORKFLOW.read_text()))
              if "${{" in script]  # fmt: skip
    assert pasted == []
