"""Settings: one table of types and defaults; INVOKE_BUILDBOX_* overrides work or say why not."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from buildbox.errors import BuildboxError
from buildbox.settings import DEFAULTS, SPECS, from_config, take_environment
from projects import make_project, run_cli, run_invoke


def test_every_setting_has_one_default_and_invoke_yaml_uses_known_keys() -> None:
    assert set(DEFAULTS) == set(SPECS)
    repository_config = Path(__file__).resolve().parent.parent / "invoke.yaml"
    from ruamel.yaml import YAML

    written = YAML(typ="safe").load(repository_config.read_text())["buildbox"]
    assert set(written) <= set(SPECS)
    from_config(written)  # the project's own file is valid


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("FETCH_TIMEOUT", "2.5", "fetch_timeout", 2.5),
        ("FETCH_TIMEOUT", "30", "fetch_timeout", 30.0),
        ("FETCH_WORKERS", "8", "fetch_workers", 8),
        ("FETCH_BACKOFF", "0", "fetch_backoff", 0.0),
        ("PLATFORMS", "linux/amd64", "platforms", ("linux/amd64",)),
        ("PLATFORMS", "linux/amd64, linux/arm64", "platforms", ("linux/amd64", "linux/arm64")),
        ("PLATFORMS", '["linux/arm64"]', "platforms", ("linux/arm64",)),
        ("ALLOW_HTTP_HOSTS", "", "allow_http_hosts", ()),
        ("REGISTRY", "ghcr.io/me/buildbox", "registry", "ghcr.io/me/buildbox"),
        (
            "MIRRORS",
            '{"https://a/": "https://m/a/", "https://a/b/": ["https://m1/", "https://m2/"]}',
            "mirrors",
            (("https://a/b/", ("https://m1/", "https://m2/")), ("https://a/", ("https://m/a/",))),
        ),
    ],
)
def test_a_variable_overrides_with_the_settings_own_type(
    variable: str, value: str, field: str, expected: object
) -> None:
    settings = from_config({"fetch_timeout": 30, "platforms": ["x/y"]}, {variable.lower(): value})
    assert getattr(settings, field) == expected


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("FETCH_TIMEOUT", "soon", "INVOKE_BUILDBOX_FETCH_TIMEOUT: expected a number of at least"),
        ("FETCH_WORKERS", "2.5", "INVOKE_BUILDBOX_FETCH_WORKERS: expected a whole number of at"),
        ("FETCH_WORKERS", "0", "INVOKE_BUILDBOX_FETCH_WORKERS: expected a whole number of at"),
        ("PLATFORMS", "[linux/amd64", "INVOKE_BUILDBOX_PLATFORMS: expected a list of strings"),
        ("MIRRORS", "https://a/=https://b/", "INVOKE_BUILDBOX_MIRRORS: expected a mapping of URL"),
        ("MIRRORS", '{"https://a/": 5}', "INVOKE_BUILDBOX_MIRRORS: expected a mapping of URL"),
        ("REGISTRYY", "x", "INVOKE_BUILDBOX_REGISTRYY is not a buildbox setting"),
    ],
)
def test_a_bad_variable_is_one_clear_error(variable: str, value: str, message: str) -> None:
    with pytest.raises(BuildboxError, match="^" + message.replace("[", r"\[")):
        from_config({}, {variable.lower(): value})


def test_bad_values_in_invoke_yaml_name_the_key() -> None:
    with pytest.raises(BuildboxError, match=r"invoke\.yaml: buildbox\.fetch_retries: expected a"):
        from_config({"fetch_retries": "many"})
    with pytest.raises(BuildboxError, match=r"invoke\.yaml: buildbox\.platforms: expected a list"):
        from_config({"platforms": {"linux": "amd64"}})


def test_take_environment_removes_only_buildbox_variables() -> None:
    environ = {"INVOKE_BUILDBOX_FETCH_TIMEOUT": "2.5", "INVOKE_RUN_ECHO": "1", "HOME": "/root"}
    assert take_environment(environ) == {"fetch_timeout": "2.5"}
    assert environ == {"INVOKE_RUN_ECHO": "1", "HOME": "/root"}


def test_overrides_from_the_command_line_as_a_user_runs_them(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    for variable, value in (("FETCH_TIMEOUT", "2.5"), ("PLATFORMS", "linux/amd64")):
        result = run_invoke(root, "list", "--json", env={f"INVOKE_BUILDBOX_{variable}": value})
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)[0]["box"] == "demo"
    # The override really applies: a platform the box builds is no longer allowed.
    narrowed = run_invoke(root, "check", env={"INVOKE_BUILDBOX_PLATFORMS": "linux/arm64"})
    assert narrowed.returncode == 1
    assert "'linux/amd64' is not a platform this project builds" in narrowed.stdout
    wrong = run_invoke(root, "list", env={"INVOKE_BUILDBOX_FETCH_WORKERS": "lots"})
    assert wrong.returncode == 1
    assert "Traceback" not in wrong.stderr
    assert wrong.stderr.strip() == (
        "buildbox: INVOKE_BUILDBOX_FETCH_WORKERS: expected a whole number of at least 1, got 'lots'"
    )


def test_variables_go_back_into_the_environment_for_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(tmp_path)
    monkeypatch.setenv("INVOKE_BUILDBOX_PLATFORMS", "linux/arm64")
    for _ in range(2):  # the same process, twice: both runs see the variable
        narrowed = run_cli(root, "check")
        assert narrowed.returncode == 1
        assert "'linux/amd64' is not a platform this project builds" in narrowed.stdout
    assert os.environ["INVOKE_BUILDBOX_PLATFORMS"] == "linux/arm64"
