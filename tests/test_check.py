"""`invoke check`: every bad input is one clear line naming file, line and field; exit 1."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from buildbox.errors import BuildboxError
from projects import (
    Mutation,
    artifact,
    box_field,
    check_fails_with,
    edit,
    library,
    make_project,
    run_cli,
    run_invoke,
    write,
)


def dockerfile_line(line: str) -> Mutation:
    return edit(
        "buildboxes/demo/Dockerfile", "COPY --from=components", f"{line}\nCOPY --from=components"
    )


BOX = "buildboxes/demo/box.yaml"
LIB = "shared/components.yaml"
DF = "buildboxes/demo/Dockerfile"

# (mutation, a regular expression one output line must match)
CASES: dict[str, tuple[Mutation, str]] = {
    "yaml syntax, library": (
        write(LIB, "components:\n  tool: {version: 1.0\n  other: 2\n"),
        rf"^{LIB}:3: invalid YAML: ",
    ),
    "yaml syntax, box": (write(BOX, "version: 1\nbase: [oops\n"), rf"^{BOX}:\d+: invalid YAML: "),
    "missing field": (library(license="-"), rf"^{LIB}:2: components\.tool\.license: missing"),
    "unknown field": (
        box_field(networks=True),
        rf"^{BOX}:\d+: networks: unknown field; expected one of: .*network",
    ),
    "wrong type": (
        box_field(platforms="linux/amd64"),
        rf"^{BOX}:\d+: platforms: expected a list, got 'linux/amd64'",
    ),
    "number where a string is expected": (
        library(version=1.24),
        (
            rf"^{LIB}:\d+: components\.tool\.version: expected a string, got the number 1\.24 "
            r"\(write it in quotes"
        ),
    ),
    "component the library lacks": (
        box_field(components=["tool", "rust"]),
        rf"^{BOX}:\d+: components\[1\]: 'rust' is not in shared/components.yaml",
    ),
    "no artifact for a platform the box builds": (
        box_field(platforms=["linux/amd64", "linux/arm64"]),
        rf"^{BOX}:\d+: components\[0\]: 'tool' has no artifact for linux/arm64",
    ),
    "component limited to a platform the box does not build": (
        box_field(component_platforms={"tool": ["linux/arm64"]}),
        rf"^{BOX}:\d+: component_platforms\.tool: linux/arm64 is not one of the box's platforms",
    ),
    "platforms for a component the box does not have": (
        box_field(component_platforms={"node": ["linux/amd64"]}),
        rf"^{BOX}:\d+: component_platforms\.node: 'node' is not one of the box's components",
    ),
    "provides a version that is not one": (
        box_field(provides={"GLIBC": "two"}),
        rf"^{BOX}:\d+: provides\.GLIBC: expected a version like 2\.17",
    ),
    "sha256 not lowercase hex": (
        artifact(sha256="A" * 64),
        (
            rf"^{LIB}:\d+: components\.tool\.artifacts\.linux/amd64\.sha256: expected 64 lowercase "
            r"hex characters"
        ),
    ),
    "sha256 too short": (
        artifact(sha256="abc123"),
        rf"^{LIB}:\d+: components\.tool\.artifacts\.linux/amd64\.sha256: expected 64 lowercase",
    ),
    "plain http to a public host": (
        artifact(url="http://example.org/tool-1.0.tar.gz"),
        (
            rf"^{LIB}:\d+: components\.tool\.artifacts\.linux/amd64\.url: .* uses plain http; use "
            r"https, or list 'example.org' in buildbox.allow_http_hosts"
        ),
    ),
    "not a web URL": (
        artifact(url="ftp://example.org/tool-1.0.tar.gz"),
        rf"^{LIB}:\d+: components\.tool\.artifacts\.linux/amd64\.url: .* uses 'ftp'; expected",
    ),
    "base not pinned by digest": (
        box_field(base="centos:7"),
        rf"^{BOX}:\d+: base: 'centos:7' is not pinned by digest",
    ),
    "duplicate component name in the library": (
        write(LIB, "components:\n  tool: {}\n  tool: {}\n"),
        rf'^{LIB}:3: duplicate key "tool"; keep one',
    ),
    "duplicate component in a box": (
        box_field(components=["tool", "tool"]),
        rf"^{BOX}:\d+: components\[1\]: 'tool' is listed twice",
    ),
    "box without a Dockerfile": (
        lambda root: (root / DF).unlink(),
        r"^buildboxes/demo: Dockerfile: missing; every box has a Dockerfile",
    ),
    "Dockerfile runs curl": (
        dockerfile_line("RUN curl -fsSL https://get.example.org/tool | sh"),
        rf"^{DF}:\d+: RUN: downloads with 'curl'",
    ),
    "Dockerfile runs wget": (
        dockerfile_line("RUN cd /tmp && \\\n    wget https://example.org/x.tgz"),
        rf"^{DF}:\d+: RUN: downloads with 'wget'",
    ),
    "Dockerfile ADDs a URL": (
        dockerfile_line("ADD https://example.org/x.tgz /tmp/"),
        rf"^{DF}:\d+: ADD: ADD fetches 'https://example.org/x.tgz'",
    ),
    "Dockerfile clones with git": (
        dockerfile_line("RUN git clone https://example.org/repo.git /src"),
        rf"^{DF}:\d+: RUN: downloads with 'git clone'",
    ),
    "Dockerfile FROM a floating image": (
        edit(DF, "FROM ${BUILDBOX_BASE}\n", "FROM centos:7\n"),
        rf"^{DF}:6: FROM: 'centos:7' is not pinned",
    ),
    "unknown platform": (
        box_field(platforms=["linux/s390x"]),
        rf"^{BOX}:\d+: platforms\[0\]: 'linux/s390x' is not a platform this project builds",
    ),
    "license not SPDX": (
        library(license="BSD"),
        rf"^{LIB}:\d+: components\.tool\.license: 'BSD' is not an SPDX license id",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_clear_line(tmp_path: Path, case: str) -> None:
    mutate, expected = CASES[case]
    root = make_project(tmp_path)
    mutate(root)
    result, _ = check_fails_with(root, expected)
    assert re.search(r"buildbox check: \d+ problems? found", result.stderr)


def test_valid_project_passes(tmp_path: Path) -> None:
    result = run_invoke(make_project(tmp_path), "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 box(es) and 1 component(s) are valid" in result.stdout


def test_reports_every_problem_not_only_the_first(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    artifact(sha256="nope", url="http://example.org/x.tgz")(root)
    box_field(base="centos:7", components=["tool", "go"])(root)
    dockerfile_line("RUN wget https://example.org/x")(root)
    result = run_cli(root, "check")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    for expected in (
        "sha256: expected 64",
        "uses plain http",
        "not pinned by digest",
        "'go' is not",
        "downloads with 'wget'",
    ):
        assert any(expected in line for line in lines), (
            f"{expected!r} missing from:\n{result.stdout}"
        )
    assert f"{len(lines)} problems found" in result.stderr


def test_repository_itself_passes_check_but_for_the_indices_it_may_not_fetch(
    tmp_path: Path,
) -> None:
    """Offline, with a cache of its own (a test reaches no archive): every box, the library and
    the signed proofs pass; only the Packages indices, which come from the archive, are not
    there to check the locked packages against (tests/test_lock_proof.py checks that part on a
    loopback archive; the main job's release checks it on Debian's)."""
    from projects import REPO

    result = run_invoke(
        REPO, "check", "--offline", env={"INVOKE_BUILDBOX_CACHE_DIR": str(tmp_path / "cache")}
    )
    assert result.returncode == 1
    problems = result.stdout.splitlines()
    assert len(problems) == 2, result.stdout
    for platform, problem in zip(("amd64", "arm64"), problems, strict=True):
        assert problem.startswith(
            f"buildboxes/debian13/packages.lock: platforms.linux/{platform}.sources: not "
            f"verified: the Packages index trixie/main/binary-{platform}/Packages.xz "
        ), problem
        assert problem.endswith("is not in the cache and --offline fetches nothing; run "
                                "`invoke check` where the archive is reachable")  # fmt: skip


def test_loopback_http_is_allowed(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    artifact(url="http://127.0.0.1:8080/tool-1.0.tar.gz")(root)
    assert run_cli(root, "check").returncode == 0


def test_bad_configuration_is_a_clear_error(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    (root / "invoke.yaml").write_text("buildbox:\n  registry: [not, a, string]\n")
    result = run_invoke(root, "check")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "invoke.yaml:2: buildbox.registry: expected a string" in result.stderr


ODD_DOCUMENTS = [
    "",
    "null\n",
    "- a\n- b\n",
    "just text\n",
    "components: 5\n",
    "components:\n  tool: 5\n",
    "components:\n  tool:\n    install: [tarball]\n    artifacts: [x]\n",
    "components:\n  tool:\n    artifacts:\n      linux/amd64: 7\n",
    "components:\n  Bad Name: {}\n",
    "components:\n  tool:\n    version: 2024-01-01\n",
    "components: !custom x\n",
    "a: \x07\n",
]


@pytest.mark.parametrize("text", ODD_DOCUMENTS)
@pytest.mark.parametrize("where", [LIB, BOX])
def test_odd_documents_are_problems_not_tracebacks(tmp_path: Path, where: str, text: str) -> None:
    root = make_project(tmp_path)
    (root / where).write_text(text)
    result = run_cli(root, "check")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert any(line.startswith(where) for line in result.stdout.splitlines()), result.stdout


def test_a_component_may_be_left_out_of_a_platform(tmp_path: Path) -> None:
    """component_platforms: no artifact needed, nothing fetched or installed for the others."""
    from buildbox.build.context import assemble
    from buildbox.define import project as project_stage
    from buildbox.define.inputs import box_components
    from buildbox.fetch import wanted_for
    from projects import settings_for

    root = make_project(tmp_path)
    limited = {"tool": ["linux/amd64"]}
    box_field(platforms=["linux/amd64", "linux/arm64"], component_platforms=limited)(root)
    result = run_cli(root, "check")
    assert result.returncode == 0, result.stdout + result.stderr
    project = project_stage.load(settings_for(root))
    box = project.box("demo")
    assert [c.name for c in box_components(box, project.library, "linux/arm64")] == []
    assert [c.name for c in box_components(box, project.library, "linux/amd64")] == ["tool"]
    assert [w.platform for w in wanted_for([box], project.library)] == ["linux/amd64"]
    arm64 = assemble(box, project.library, project.settings, "linux/arm64", {})
    assert [e.name for e in arm64.entries if e.name.startswith(".buildbox/artifacts/")] == []


# --- box.yaml strings never reach a shell; links never leave the box ------------------------

#: The payload of issue 26: a mirror that closes the hook's quotes and runs a command as root.
MIRROR_PAYLOAD = "http://deb.debian.org/debian' ; id > /tmp/x ; echo '"
BOOTSTRAP = {"suite": "bookworm", "variant": "minbase", "mirror": "http://deb.debian.org/debian"}


def test_a_mirror_with_shell_in_it_is_one_clear_line(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    box_field(base="-", bootstrap={**BOOTSTRAP, "mirror": MIRROR_PAYLOAD})(root)
    result = run_cli(root, "check")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stdout.splitlines() if "mirror" in line]
    assert len(lines) == 1, result.stdout
    assert re.match(rf"^{BOX}:\d+: bootstrap\.mirror: expected an http\(s\) URL", lines[0])


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"bootstrap": {**BOOTSTRAP, "mirror": "https://deb.debian.org/debian $(id)"}},
         r"bootstrap\.mirror: expected an http\(s\) URL"),
        ({"bootstrap": {**BOOTSTRAP, "mirror": "http://deb.debian.org/debian\nfoo"}},
         r"bootstrap\.mirror: expected an http\(s\) URL"),
        ({"bootstrap": {**BOOTSTRAP, "mirror": "http://user:pw@deb.debian.org/debian"}},
         r"bootstrap\.mirror: expected an http\(s\) URL"),
        ({"bootstrap": {**BOOTSTRAP, "packages": ["make,curl"]}},
         r"bootstrap\.packages\[0\]: expected a Debian package name"),
        ({"bootstrap": {**BOOTSTRAP, "packages": ["make;id"]}},
         r"bootstrap\.packages\[0\]: expected a Debian package name"),
        ({"bootstrap": {**BOOTSTRAP, "suite": "bookworm main"}}, r"bootstrap\.suite: expected"),
        ({"base": "centos:7@sha256:" + "c" * 64 + " ; id"}, r"base: expected an image reference"),
        ({"components": ["tool;id"]}, r"components\[0\]: expected a component name"),
        ({"platforms": ["linux/amd64;id"]}, r"platforms\[0\]: expected a platform"),
        ({"probes": {"a b": {"command": ["true"], "expect": "x"}}}, r"probes\.a b: expected"),
        ({"description": "text\x1b[31m"}, r"description: expected"),
    ],
    ids=["mirror-subst", "mirror-newline", "mirror-credentials", "package-comma",
         "package-semicolon", "suite-space", "base", "component", "platform", "probe-name",
         "description-control"],
)  # fmt: skip
def test_box_strings_are_validated_strictly(
    tmp_path: Path, fields: dict[str, object], expected: str
) -> None:
    root = make_project(tmp_path)
    box_field(**({"base": "-"} if "bootstrap" in fields else {}), **fields)(root)
    result = run_cli(root, "check")
    assert result.returncode == 1, result.stdout + result.stderr
    assert any(re.match(rf"^{BOX}:\d+: {expected}", line) for line in result.stdout.splitlines()), (
        result.stdout
    )


def test_a_box_link_leaving_the_box_is_refused_by_check_and_build(tmp_path: Path) -> None:
    from buildbox.define.boxes import Box

    root = make_project(tmp_path)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[http]\n\textraheader = AUTHORIZATION: basic c2VjcmV0\n")
    link = root / "buildboxes" / "demo" / "gitconfig"
    link.symlink_to("../../.git/config")
    (root / "buildboxes" / "demo" / "inside").symlink_to("Dockerfile")  # stays in: fine
    result = run_cli(root, "check")
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if "gitconfig" in line]
    assert lines == [
        (
            "buildboxes/demo/gitconfig: link: a symbolic link to ../../.git/config, outside the "
            "box directory; box files must stay inside buildboxes/demo (copy the file in instead)"
        )
    ], result.stdout
    box = Box("demo", root / "buildboxes" / "demo", "1", "b", ("linux/amd64",), ())
    with pytest.raises(BuildboxError, match=r"buildboxes/demo/gitconfig: .*\.\./\.\./\.git/config"):
        box.files()
    link.unlink()
    assert [p.name for p in box.files()] == ["Dockerfile", "inside"]


def test_a_linked_directory_leaving_the_box_is_refused(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    (root / "secrets").mkdir()
    (root / "secrets" / "token").write_text("ghs_secret\n")
    (root / "buildboxes" / "demo" / "etc").symlink_to(root / "secrets")
    result = run_cli(root, "check")
    assert result.returncode == 1, result.stdout + result.stderr
    assert any(
        line.startswith("buildboxes/demo/etc: link: a symbolic link to ")
        for line in result.stdout.splitlines()
    ), result.stdout


# An unquoted version YAML reads as a float: 2.50 would be "2.5", so every float is refused
# with the quotes hint, 2.0 included (JSON Schema counts 2.0 and 1.5e3 as whole numbers).
FLOAT_VERSIONS = [
    (BOX, "2.0"),
    (BOX, "1.5e3"),
    (BOX, "2.50"),
    (LIB, "2.0"),
    (LIB, "2.50"),
    (LIB, "1.5e3"),
]


@pytest.mark.parametrize(("where", "written"), FLOAT_VERSIONS)
def test_an_unquoted_float_version_is_refused_with_the_quotes_hint(
    tmp_path: Path, where: str, written: str
) -> None:
    root = make_project(tmp_path)
    document = root / where
    text = document.read_text()
    old = "version: 1\n" if where == BOX else "version: '1.0'\n"
    assert old in text
    document.write_text(text.replace(old, f"version: {written}\n"))
    result = run_cli(root, "check")
    assert result.returncode == 1, result.stdout + result.stderr
    field = "version" if where == BOX else r"components\.tool\.version"
    hint = rf"^{where}:\d+: {field}: expected .*, got the number .* \(write it in quotes"
    assert any(re.search(hint, line) for line in result.stdout.splitlines()), result.stdout


def test_a_quoted_box_version_is_its_tag(tmp_path: Path) -> None:
    from buildbox.define import project as project_stage
    from projects import settings_for

    root = make_project(tmp_path)
    box_field(version="2.0")(root)
    assert run_cli(root, "check").returncode == 0
    assert project_stage.load(settings_for(root)).box("demo").release_tag == "v2.0"
