"""Settings: one table of types and defaults; INVOKE_BUILDBOX_* overrides work or say why not."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from buildbox.errors import BuildboxError
from buildbox.settings import (
    DEFAULTS,
    SPECS,
    Number,
    Settings,
    from_config,
    take_environment,
)
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
        (
            "FETCH_TIMEOUT",
            "soon",
            "INVOKE_BUILDBOX_FETCH_TIMEOUT: expected a number from 0.1 to 3600",
        ),
        ("FETCH_WORKERS", "2.5", "INVOKE_BUILDBOX_FETCH_WORKERS: expected a whole number from"),
        ("FETCH_WORKERS", "0", "INVOKE_BUILDBOX_FETCH_WORKERS: expected a whole number from"),
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
        "buildbox: INVOKE_BUILDBOX_FETCH_WORKERS: expected a whole number from 1 to 64, got 'lots'"
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


#: Every numeric setting: a value below its range, one above, and where it is a number of
#: seconds, the floats that are no length of time.
NUMBERS = {
    "local_registry_port": ("0", "99999"),
    "fetch_workers": ("0", "10000000", "1e11"),
    "fetch_retries": ("-1", "1000"),
    "fetch_backoff": ("-1", "1e9", "nan", "inf"),
    "fetch_timeout": ("0", "1e9", "nan", "inf", "-inf"),
    "registry_attempts": ("0", "1000"),
    "registry_time_limit": ("0", "1e9", "nan", "inf"),
    "registry_backoff": ("-0.5", "1e9", "nan", "inf"),
    "registry_chunk_mib": ("0", "100000"),
    "registry_workers": ("0", "10000"),
}


def test_the_table_of_bounds_covers_every_numeric_setting() -> None:
    numeric = {
        name
        for name, spec in SPECS.items()
        if isinstance(spec.default, int | float) and not isinstance(spec.default, bool)
    }
    assert numeric == set(NUMBERS)


@pytest.mark.parametrize(
    ("name", "value"), [(name, value) for name, values in NUMBERS.items() for value in values]
)
def test_a_number_out_of_range_is_one_line_with_the_range(name: str, value: str) -> None:
    variable = f"INVOKE_BUILDBOX_{name.upper()}"
    with pytest.raises(BuildboxError) as raised:
        from_config({}, {name: value})
    message = str(raised.value)
    assert message.startswith(f"{variable}: expected a "), message
    assert re.search(r"number from [\d.]+ to [\d.]+, got ", message), message
    assert message.endswith(f"got {value!r}")
    # The same value written in invoke.yaml (as YAML reads it) names the field.
    with pytest.raises(BuildboxError, match=rf"^invoke\.yaml: buildbox\.{name}: expected a"):
        from_config({name: yaml_number(value)})


def yaml_number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


@pytest.mark.parametrize("name", sorted(NUMBERS))
def test_each_number_takes_its_default_and_its_bounds(name: str) -> None:
    parse = SPECS[name].parse
    assert isinstance(parse, Number)
    low, high = parse.low, parse.high
    assert low <= SPECS[name].default <= high
    for value in (low, high):
        assert getattr_setting(from_config({name: value}), name) == value


def getattr_setting(settings: Settings, name: str) -> object:
    if name == "local_registry_port":  # not kept: it makes the registry's address
        return int(settings.registry.split(":")[1].split("/")[0])
    return getattr(settings, name)


def test_a_huge_worker_count_is_refused_before_anything_runs(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    result = run_invoke(root, "list", env={"INVOKE_BUILDBOX_FETCH_WORKERS": "10000000"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "buildbox: INVOKE_BUILDBOX_FETCH_WORKERS: expected a whole number from 1 to 64, "
        "got '10000000'"
    )


def test_nan_in_invoke_yaml_names_the_file_line_and_field(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    config = root / "invoke.yaml"
    text = config.read_text().replace("fetch_timeout: 30", "fetch_timeout: .nan")
    config.write_text(text)
    line = text.splitlines().index("  fetch_timeout: .nan") + 1
    result = run_cli(root, "list")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"buildbox: {config}:{line}: buildbox.fetch_timeout: expected a number from 0.1 to 3600,"
        " got nan"
    )


def test_a_cache_dir_of_an_unknown_user_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(BuildboxError, match=r"^INVOKE_BUILDBOX_CACHE_DIR: .*no user"):
        from_config({}, {"cache_dir": "~nouser-buildbox/x"})
    root = make_project(tmp_path)
    monkeypatch.setenv("INVOKE_BUILDBOX_CACHE_DIR", "~nouser-buildbox/x")
    result = run_cli(root, "list")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("buildbox: INVOKE_BUILDBOX_CACHE_DIR: ")
    assert "~nouser-buildbox" in result.stderr


SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize("where", ["variable", "invoke.yaml"])
def test_credentials_in_the_registry_setting_are_refused_and_not_printed(
    tmp_path: Path, where: str
) -> None:
    root = make_project(tmp_path)
    registry = f"user:{SECRET}@127.0.0.1:5000/acme"
    env = {}
    if where == "variable":
        env["INVOKE_BUILDBOX_REGISTRY"] = registry
    else:
        config = root / "invoke.yaml"
        config.write_text(config.read_text().replace('registry: ""', f'registry: "{registry}"'))
    for args in (["registry"], ["-d", "list"]):
        result = run_invoke(root, *args, env=env)
        assert result.returncode == 1, result.stdout
        assert SECRET not in result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert "docker login" in result.stderr
        assert "BUILDBOX_REGISTRY_USERNAME" in result.stderr


def test_invoke_debug_output_redacts_userinfo_in_mirrors(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    config = root / "invoke.yaml"
    mirror = f'{{"https://example.org/": "https://u:{SECRET}@mirror.invalid/"}}'
    config.write_text(config.read_text().replace("mirrors: {}", f"mirrors: {mirror}"))
    env = {"INVOKE_BUILDBOX_MIRRORS": f'{{"https://a/": "http://me:{SECRET}-env@m.invalid/"}}'}
    result = run_invoke(root, "-d", "list", env=env)
    assert result.returncode == 0, result.stderr
    assert "Per-project config file" in result.stderr  # invoke's debug output is there...
    assert SECRET not in result.stdout + result.stderr  # ...without the password
    assert "https://***@mirror.invalid/" in result.stderr


def test_a_bad_mirror_value_through_invoke_keeps_the_password_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(tmp_path)
    bad = f'{{"https://a/": ["http://u:{SECRET}@m.invalid/", 5]}}'
    monkeypatch.setenv("INVOKE_BUILDBOX_MIRRORS", bad)
    result = run_cli(root, "list")
    assert result.returncode == 1
    assert "INVOKE_BUILDBOX_MIRRORS: expected a mapping" in result.stderr
    assert SECRET not in result.stdout + result.stderr
