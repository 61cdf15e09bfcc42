"""The probe script verify runs in the image, and how its output becomes one result per tool.

The script is run here by the machine's own /bin/sh (as the image's shell would run it): no engine.
"""

from __future__ import annotations

import subprocess

import pytest

from buildbox.define.library import Artifact, Component, Install, Probe
from buildbox.verify import ProbeResult, describe_probe, parse_probes, probe_script
from projects import SHA_A


def component(name: str, command: tuple[str, ...], expect: str) -> Component:
    return Component(
        name=name,
        version="1.0",
        license="MIT",
        purl=f"pkg:generic/{name}@1.0",
        install=Install("tarball", f"/opt/{name}", 1),
        probe=Probe(command, expect),
        artifacts=(
            Artifact("linux/amd64", f"https://example.org/{name}.tar.gz", SHA_A, "test data"),
        ),
    )


GO = component("go", ("/usr/local/go/bin/go", "version"), "go1.24.1")
NODE = component("node", ("node", "--version"), "v22.1.0")
JQ = component("jq", ("jq", "--version"), "jq-1.7")


def run(script: str) -> str:
    """Run the probe script as the container does: sh, stdout only (stderr is redirected)."""
    return subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, check=True, timeout=30
    ).stdout


def test_script_marks_each_probe_and_its_exit_status() -> None:
    script = probe_script((GO, NODE))
    assert script.splitlines() == [
        "exec 2>&1",
        "echo '@@buildbox-probe go'",
        "/usr/local/go/bin/go version </dev/null",
        'status=$?; echo; echo "@@buildbox-exit $status"',
        "echo '@@buildbox-probe node'",
        "node --version </dev/null",
        'status=$?; echo; echo "@@buildbox-exit $status"',
    ]


def test_script_passes_arguments_literally() -> None:
    """No argument is expanded or split by the shell: the probe sees exactly its command."""
    odd = component("odd", ("echo", "$HOME", "a  b", "it's", "*"), "x")
    [result] = parse_probes(run(probe_script((odd,))), (odd,))
    assert result.output == "$HOME a  b it's *"
    assert result.exit_code == 0


def test_run_script_splits_output_per_component() -> None:
    first = component("first", ("echo", "first 1.0"), "first 1.0")
    second = component("second", ("sh", "-c", "echo line one; echo second 2.0 >&2; exit 3"), "2.0")
    third = component("third", ("printf", "%s\\n", "third", "3.0"), "third\n3.0")
    results = parse_probes(run(probe_script((first, second, third))), (first, second, third))
    assert [(r.component, r.output, r.exit_code, r.ok) for r in results] == [
        ("first", "first 1.0", 0, True),
        ("second", "line one\nsecond 2.0", 3, False),  # stderr is in the output too
        ("third", "third\n3.0", 0, True),
    ]
    assert results[1].command == "sh -c 'echo line one; echo second 2.0 >&2; exit 3'"
    assert results[1].expect == "2.0"


def test_run_script_missing_command_is_an_exit_status_not_the_end() -> None:
    missing = component("missing", ("/nonexistent/tool", "--version"), "tool 1.0")
    after = component("after", ("echo", "after 1.0"), "after 1.0")
    results = parse_probes(run(probe_script((missing, after))), (missing, after))
    assert results[0].exit_code == 127
    assert not results[0].ok
    assert results[1].ok, "one failing probe does not stop the others"


def test_run_script_output_without_a_final_newline() -> None:
    """Some tools print their version without a newline (``printf``-style); the exit marker must
    still be found, or verify wrongly says the probe did not run to the end."""
    bare = component("bare", ("printf", "bare 1.0"), "bare 1.0")
    [result] = parse_probes(run(probe_script((bare,))), (bare,))
    assert result.exit_code == 0
    assert result.output == "bare 1.0"
    assert result.ok


OUTPUT = """\
@@buildbox-probe go
go version go1.24.1 linux/amd64
@@buildbox-exit 0
@@buildbox-probe node
v20.0.0
@@buildbox-exit 0
@@buildbox-probe jq
jq-1.7
"""


def test_parse_results_in_component_order() -> None:
    results = parse_probes(OUTPUT, (JQ, GO, NODE))
    assert [r.component for r in results] == ["jq", "go", "node"]


def test_parse_expect_is_a_substring_of_the_output() -> None:
    go, node, _ = parse_probes(OUTPUT, (GO, NODE, JQ))
    assert go == ProbeResult(
        "go", "/usr/local/go/bin/go version", "go1.24.1", "go version go1.24.1 linux/amd64", 0
    )
    assert go.ok
    assert node.exit_code == 0
    assert not node.ok, "exit 0 but another version"


def test_parse_missing_exit_marker_did_not_finish() -> None:
    [jq] = parse_probes(OUTPUT, (JQ,))
    assert jq.output == "jq-1.7"
    assert jq.exit_code is None
    assert not jq.ok, "the right version but no exit status: it did not run to the end"


def test_parse_component_that_never_ran() -> None:
    rust = component("rust", ("rustc", "--version"), "rustc 1.80.0")
    [result] = parse_probes(OUTPUT, (rust,))
    assert (result.output, result.exit_code, result.ok) == ("", None, False)


@pytest.mark.parametrize(
    ("status", "code"), [("0", 0), ("1", 1), ("127", 127), ("", None), ("x", None)]
)
def test_parse_exit_status(status: str, code: int | None) -> None:
    output = f"@@buildbox-probe jq\njq-1.7\n@@buildbox-exit {status}\n"
    [result] = parse_probes(output, (JQ,))
    assert result.exit_code == code
    assert result.ok is (code == 0)


def test_parse_ignores_output_outside_the_markers() -> None:
    output = "welcome banner\n" + OUTPUT.replace("jq-1.7\n", "jq-1.7\n@@buildbox-exit 0\n")
    output += "trailing noise\n"
    results = parse_probes(output, (GO, JQ))
    assert [r.output for r in results] == ["go version go1.24.1 linux/amd64", "jq-1.7"]
    assert all(r.ok for r in results)


def result(output: str, exit_code: int | None, expect: str = "jq-1.7") -> ProbeResult:
    return ProbeResult("jq", "jq --version", expect, output, exit_code)


@pytest.mark.parametrize(
    ("probe", "message"),
    [
        (result("jq-1.7", 0), "`jq --version` printed 'jq-1.7'"),
        (result("jq-1.7", None), "`jq --version` did not run to the end"),
        (result("", None), "`jq --version` did not run to the end"),
        (
            result("jq-1.6\nmore", 0),
            (
                "`jq --version` exited 0 and printed 'jq-1.6'; expected 'jq-1.7' "
                "(the version pinned in shared/components.yaml)"
            ),
        ),
        (
            result("", 127),
            (
                "`jq --version` exited 127 and printed 'nothing'; expected 'jq-1.7' "
                "(the version pinned in shared/components.yaml)"
            ),
        ),
        (
            result("jq-1.7", 2),
            (
                "`jq --version` exited 2 and printed 'jq-1.7'; expected 'jq-1.7' "
                "(the version pinned in shared/components.yaml)"
            ),
        ),
    ],
)
def test_describe_probe(probe: ProbeResult, message: str) -> None:
    assert describe_probe(probe) == message
