"""invoke.yaml as a careless user writes it: typos, duplicates, wrong shapes and broken YAML are
each one line naming the file, the line and the field (exit 1, no traceback), never ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from buildbox.errors import BuildboxError
from buildbox.settings import from_config
from projects import make_project, run_cli, run_invoke

#: (what the user wrote in place of a line of the project's invoke.yaml, the text the one line
#: of the error holds besides the file and line)
BAD_FILES = [
    pytest.param(
        '  registry: ""',
        "  registery: ghcr.io/acme/buildbox",
        "buildbox.registery: not a buildbox setting; did you mean `registry`?",
        id="typo",
    ),
    pytest.param(
        "  fetch_workers: 4",
        "  fetch_workers: 4\n  fetch_workers: 8",
        'duplicate key "fetch_workers"',
        id="duplicate-key",
    ),
    pytest.param(
        "buildbox:\n",
        "buildbox:\n  registry: ghcr.io/a/b\nbuildbox:\n",
        'duplicate key "buildbox"',
        id="duplicate-section",
    ),
    pytest.param(
        "buildbox:\n",
        "buildbox: oops\nnot_buildbox:\n",
        "buildbox: expected a mapping of settings (buildbox:, then `name: value` lines indented",
        id="section-a-string",
    ),
    pytest.param(
        "buildbox:\n",
        "buildbox: null\nnot_buildbox:\n",
        "buildbox: expected a mapping of settings",
        id="section-null",
    ),
    pytest.param(
        "  mirrors: {}",
        "  mirrors: [a]",
        "buildbox.mirrors: expected a mapping of URL prefix to a mirror prefix",
        id="mirrors-a-list",
    ),
    pytest.param(
        "  platforms: [linux/amd64, linux/arm64]",
        "  platforms: {linux: amd64}",
        "buildbox.platforms: expected a list of strings",
        id="platforms-a-mapping",
    ),
    pytest.param(
        "  mirrors: {}",
        "  mirrors: {a: [",
        "invalid YAML",
        id="yaml-syntax",
    ),
    pytest.param(
        "buildbox:\n",
        "buildbx:\n  fetch_workers: 2\nbuildbox:\n",
        "buildbx: not a section of invoke.yaml; did you mean `buildbox`?",
        id="section-typo",
    ),
]


#: Nine levels of nine aliases under invoke's own `run:` section, which buildbox does not walk:
#: 511 bytes that expand to 9**9 values (invoke's merge of it hung past 30 s).
ALIAS_BOMB = "run:\n" + "".join(
    f"  a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9) if n else 'lol'}]\n" for n in range(10)
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(ALIAS_BOMB, "values with its aliases expanded", id="alias-bomb"),
        pytest.param("run: " + "[" * 5000, "nested more than", id="deep-nesting"),
    ],
)
def test_a_yaml_bomb_in_invoke_yaml_is_refused_before_it_expands(
    tmp_path: Path, text: str, message: str
) -> None:
    root = make_project(tmp_path)
    config = root / "invoke.yaml"
    config.write_text(text)
    result = run_cli(root, "list")
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"buildbox: {config}:"), result.stderr
    assert message in result.stderr


@pytest.mark.parametrize(("old", "new", "message"), BAD_FILES)
def test_a_bad_invoke_yaml_is_one_line_naming_file_line_and_field(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    root = make_project(tmp_path)
    config = root / "invoke.yaml"
    text = config.read_text()
    assert old in text
    written = text.replace(old, new, 1)
    config.write_text(written)
    # The line the error names: the second of a duplicate, else the first line changed.
    changed = [n for n, line in enumerate(written.splitlines(), 1) if line in new.splitlines()]
    line = changed[-1] if "duplicate" in message else changed[0]

    result = run_cli(root, "list")

    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    if "invalid YAML" in message:  # named where the parser notices, with where it began
        assert result.stderr.startswith(f"buildbox: {config}:"), result.stderr
        assert f"from line {line})" in result.stderr
    else:
        assert result.stderr.startswith(f"buildbox: {config}:{line}: "), result.stderr
    assert message in result.stderr


def test_a_good_invoke_yaml_still_works_and_invoke_list_reads_it(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    config = root / "invoke.yaml"
    config.write_text(config.read_text().replace("fetch_workers: 4", "fetch_workers: 2"))
    assert run_cli(root, "list").returncode == 0
    assert run_cli(root, "--list").returncode == 0


def test_an_unknown_setting_from_any_configuration_file_is_refused() -> None:
    # ~/.invoke.yaml, /etc/invoke.yaml or `invoke -f FILE` reach the tasks merged, without lines.
    with pytest.raises(BuildboxError, match=r"buildbox\.registery: not a buildbox setting; did"):
        from_config({"registery": "ghcr.io/acme/buildbox"})


def test_an_unknown_variable_says_which_one_was_meant(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    result = run_invoke(root, "list", env={"INVOKE_BUILDBOX_REGISTERY": "ghcr.io/acme/buildbox"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "buildbox: INVOKE_BUILDBOX_REGISTERY is not a buildbox setting; "
        "did you mean INVOKE_BUILDBOX_REGISTRY?"
    )
