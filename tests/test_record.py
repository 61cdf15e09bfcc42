"""The release record, buildbox.lock.json: versions, look-ups, a broken record, the bump rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from buildbox.define import project as project_stage
from buildbox.define.inputs import inputs_digest
from buildbox.errors import BuildboxError
from buildbox.release import record
from buildbox.release.record import (
    RECORD_FILE,
    PlatformRelease,
    Release,
    add,
    find,
    load,
    next_version,
    require,
    unbumped_versions,
)
from projects import make_project, run_cli, settings_for

DIGEST = "sha256:" + "d" * 64
AMD64 = "sha256:" + "1" * 64
ARM64 = "sha256:" + "2" * 64
SBOM_A = "sha256:" + "a" * 64
SBOM_B = "sha256:" + "b" * 64


def release(
    version: str, box: str = "demo", inputs: str = "sha256:" + "e" * 64, epoch: int | None = None
) -> Release:
    return Release(
        box=box,
        version=version,
        reference=f"127.0.0.1:5000/buildbox/{box}:v{version}@{DIGEST}",
        digest=DIGEST,
        inputs_digest=inputs,
        revision="0123456789abcdef0123456789abcdef01234567",
        platforms={
            "linux/amd64": PlatformRelease(AMD64, f"sbom/{box}/amd64.cdx.json", SBOM_A),
            "linux/arm64": PlatformRelease(ARM64, f"sbom/{box}/arm64.cdx.json", SBOM_B),
        },
        epoch=epoch,
    )


@pytest.mark.parametrize(
    ("versions", "expected"),
    [
        ([], "1"),
        (["1"], "2"),
        (["1", "2", "3"], "4"),
        (["9"], "10"),
        (["1.2"], "1.3"),
        (["1.9"], "1.10"),
        (["1.9", "1.10"], "1.11"),
        (["2.0.9"], "2.0.10"),
        (["1.0.rc"], "1.0.rc.1"),
    ],
)
def test_next_version(versions: list[str], expected: str) -> None:
    releases = [release(v) for v in versions] + [release("41", box="other")]
    assert next_version(releases, "demo") == expected


def test_next_version_of_a_box_never_released_is_1() -> None:
    assert next_version([release("7", box="other")], "demo") == "1"


def test_find_latest_is_by_number_not_by_text() -> None:
    releases = [release("2"), release("10"), release("9"), release("11", box="other")]
    latest = find(releases, "demo")
    assert latest is not None
    assert latest.version == "10"


def test_find_latest_of_dotted_versions() -> None:
    releases = [release("1.10"), release("1.9"), release("1.2")]
    latest = find(releases, "demo")
    assert latest is not None
    assert latest.version == "1.10"


@pytest.mark.parametrize(("asked", "found"), [("3", "3"), ("v3", "3"), ("4", None), ("v", None)])
def test_find_a_version(asked: str, found: str | None) -> None:
    releases = [release("2"), release("3"), release("3", box="other")]
    result = find(releases, "demo", asked)
    assert (result.version if result else None) == found
    assert result is None or result.box == "demo"


def test_find_unknown_box() -> None:
    assert find([release("1")], "other") is None


def test_require_names_the_box_and_the_record(tmp_path: Path) -> None:
    add(tmp_path, load(settings_for(tmp_path)), release("1"))
    with pytest.raises(BuildboxError) as raised:
        require(settings_for(tmp_path), "demo", "2")
    assert str(raised.value) == f"no release of demo (version 2) in {RECORD_FILE}"
    with pytest.raises(BuildboxError) as raised:
        require(settings_for(tmp_path), "other")
    assert str(raised.value) == f"no release of other (any version) in {RECORD_FILE}"
    assert require(settings_for(tmp_path), "demo", "v1") == release("1")


def test_no_record_is_no_releases(tmp_path: Path) -> None:
    assert load(settings_for(tmp_path)) == []


def test_add_then_load_round_trip(tmp_path: Path) -> None:
    first, second = release("1", epoch=1_700_000_000), release("2", epoch=None)
    add(tmp_path, load(settings_for(tmp_path)), second)
    add(tmp_path, load(settings_for(tmp_path)), first)
    add(tmp_path, load(settings_for(tmp_path)), release("1", box="other", epoch=0))
    loaded = load(settings_for(tmp_path))
    assert loaded == [first, second, release("1", box="other", epoch=0)]
    assert loaded[0].epoch == 1_700_000_000
    assert loaded[0].platforms["linux/arm64"] == PlatformRelease(
        ARM64, "sbom/demo/arm64.cdx.json", SBOM_B
    )
    written = json.loads((tmp_path / RECORD_FILE).read_text())
    assert [(r["box"], r["version"], r["epoch"]) for r in written["releases"]] == [
        ("demo", "1", 1_700_000_000),
        ("demo", "2", None),
        ("other", "1", 0),
    ]


def test_add_replaces_the_same_box_and_version(tmp_path: Path) -> None:
    add(tmp_path, load(settings_for(tmp_path)), release("1"))
    add(tmp_path, load(settings_for(tmp_path)), release("1", inputs="sha256:" + "f" * 64))
    assert [r.inputs_digest for r in load(settings_for(tmp_path))] == ["sha256:" + "f" * 64]


def test_record_without_epoch_loads_with_none(tmp_path: Path) -> None:
    """Records written before the epoch was kept still load."""
    entry = {"releases": [_as_json(release("1"))]}
    del entry["releases"][0]["epoch"]
    (tmp_path / RECORD_FILE).write_text(json.dumps(entry))
    [loaded] = load(settings_for(tmp_path))
    assert loaded.epoch is None
    assert loaded == release("1")


def _as_json(found: Release) -> dict[str, Any]:
    return {
        "box": found.box,
        "version": found.version,
        "reference": found.reference,
        "digest": found.digest,
        "inputs_digest": found.inputs_digest,
        "revision": found.revision,
        "platforms": {
            name: {"digest": p.digest, "sbom_path": p.sbom_path, "sbom_digest": p.sbom_digest}
            for name, p in found.platforms.items()
        },
        "epoch": found.epoch,
    }


GOOD = _as_json(release("1"))

CORRUPT: dict[str, str] = {
    "invalid JSON": '{"releases": [',
    "merge conflict": '<<<<<<< HEAD\n{"releases": []}\n=======\n',
    "empty file": "",
    "a list, not an object": "[]",
    "no releases key": "{}",
    "releases is null": '{"releases": null}',
    "releases is an object": '{"releases": {"demo": 1}}',
    "an entry is a number": '{"releases": [1]}',
    "an entry lacks fields": '{"releases": [{"box": 1}]}',
    "an unknown field": json.dumps({"releases": [{**GOOD, "colour": "blue"}]}),
    "platforms is a list": json.dumps({"releases": [{**GOOD, "platforms": []}]}),
    "a platform is a string": json.dumps(
        {"releases": [{**GOOD, "platforms": {"linux/amd64": "sha256:x"}}]}
    ),
    "a platform lacks its SBOM": json.dumps(
        {"releases": [{**GOOD, "platforms": {"linux/amd64": {"digest": AMD64}}}]}
    ),
    "the version is a number": json.dumps({"releases": [{**GOOD, "version": 1}]}),
    "the box is a number": json.dumps({"releases": [{**GOOD, "box": 1}]}),
}


@pytest.mark.parametrize("content", CORRUPT.values(), ids=CORRUPT.keys())
def test_corrupt_record_is_one_clear_error(tmp_path: Path, content: str) -> None:
    (tmp_path / RECORD_FILE).write_text(content)
    with pytest.raises(BuildboxError) as raised:
        # What the commands do with it: every release, then the latest of a box.
        record.require(settings_for(tmp_path), "demo")
    for line in str(raised.value).splitlines():  # one line per violation, each naming the record
        assert line.startswith(RECORD_FILE)
        assert f"restore it from git (`git checkout -- {RECORD_FILE}`)" in line


def test_record_not_utf8_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / RECORD_FILE).write_bytes(b'{"releases": ["\xff\xfe"]}')
    with pytest.raises(BuildboxError, match=f"{RECORD_FILE} cannot be read.*restore it from git"):
        load(settings_for(tmp_path))


def test_add_to_a_corrupt_record_refuses_and_keeps_it(tmp_path: Path) -> None:
    (tmp_path / RECORD_FILE).write_text('{"releases": [')
    with pytest.raises(BuildboxError, match="restore it from git"):
        add(tmp_path, load(settings_for(tmp_path)), release("1"))
    assert (tmp_path / RECORD_FILE).read_text() == '{"releases": ['


def test_platform_reference_pins_that_platforms_image() -> None:
    found = release("3")
    assert found.tag == "v3"
    assert found.platform_reference("linux/arm64") == f"127.0.0.1:5000/buildbox/demo:v3@{ARM64}"
    assert found.platform_reference("linux/amd64") == f"127.0.0.1:5000/buildbox/demo:v3@{AMD64}"


def test_platform_reference_of_a_platform_not_released() -> None:
    with pytest.raises(BuildboxError) as raised:
        release("3").platform_reference("linux/s390x")
    assert str(raised.value) == "demo v3 has no linux/s390x image; it has linux/amd64, linux/arm64"


# --- the version-bump rule --------------------------------------------------------------------


def demo_project(root: Path) -> project_stage.Project:
    make_project(root)
    return project_stage.load(settings_for(root))


def current_inputs(project: project_stage.Project) -> str:
    box = project.box("demo")
    return inputs_digest(box, project.library, project.settings)


def version_line(root: Path) -> int:
    lines = (root / "buildboxes/demo/box.yaml").read_text().splitlines()
    return next(n for n, line in enumerate(lines, start=1) if line.startswith("version:"))


def test_released_version_with_other_inputs_must_be_bumped(tmp_path: Path) -> None:
    project = demo_project(tmp_path)
    old_inputs = "sha256:" + "0" * 64
    add(tmp_path, load(settings_for(tmp_path)), release("1", inputs=old_inputs))
    [problem] = unbumped_versions(project)
    assert problem.file == "buildboxes/demo/box.yaml"
    assert problem.field == "version"
    assert problem.line == version_line(tmp_path)
    assert "v1 was released with other inputs" in problem.message
    assert old_inputs in problem.message
    assert current_inputs(project) in problem.message
    assert problem.message.endswith("set `version: 2`")


def test_bump_suggestion_is_after_the_latest_release(tmp_path: Path) -> None:
    """Version 1 changed while 1 and 5 were released: the next free version is 6, not 2."""
    project = demo_project(tmp_path)
    add(tmp_path, load(settings_for(tmp_path)), release("1", inputs="sha256:" + "0" * 64))
    add(tmp_path, load(settings_for(tmp_path)), release("5", inputs="sha256:" + "5" * 64))
    [problem] = unbumped_versions(project)
    assert problem.message.endswith("set `version: 6`")


def test_released_version_with_the_same_inputs_is_fine(tmp_path: Path) -> None:
    project = demo_project(tmp_path)
    add(tmp_path, load(settings_for(tmp_path)), release("1", inputs=current_inputs(project)))
    assert unbumped_versions(project) == []


def test_unreleased_version_is_fine(tmp_path: Path) -> None:
    project = demo_project(tmp_path)
    add(
        tmp_path, load(settings_for(tmp_path)), release("2", inputs="sha256:" + "0" * 64)
    )  # box.yaml still says 1
    add(
        tmp_path,
        load(settings_for(tmp_path)),
        release("1", box="other", inputs="sha256:" + "0" * 64),
    )
    assert unbumped_versions(project) == []
    assert unbumped_versions(demo_project(tmp_path / "no-record")) == []


def test_unreadable_record_is_one_problem_naming_it(tmp_path: Path) -> None:
    project = demo_project(tmp_path)
    (tmp_path / RECORD_FILE).write_text('{"releases": [')
    [problem] = unbumped_versions(project)
    assert problem.file == RECORD_FILE
    assert problem.line is None
    assert "restore it from git" in problem.message
    assert str(problem).startswith(f"{RECORD_FILE}: {RECORD_FILE} cannot be read")


def test_each_violation_of_a_record_is_a_problem_of_its_own(tmp_path: Path) -> None:
    project = demo_project(tmp_path)
    (tmp_path / RECORD_FILE).write_text('{"releases": [{"box": 1}]}')
    problems = unbumped_versions(project)
    assert {p.field for p in problems} == {
        f"releases[0], {field}"
        for field in ("box", "version", "reference", "digest", "inputs_digest", "revision")
    } | {"releases[0], platforms"}
    assert all(p.file == RECORD_FILE and "restore it from git" in p.message for p in problems)
    shown = f"{RECORD_FILE}: releases[0], box: expected a string, got 1; restore it from git"
    assert any(str(p).startswith(shown) for p in problems)


def test_record_with_a_number_for_a_version_is_one_problem(tmp_path: Path) -> None:
    """A hand-edited record (``"version": 1``) is a problem `invoke check` lists, not a crash."""
    project = demo_project(tmp_path)
    (tmp_path / RECORD_FILE).write_text(json.dumps({"releases": [{**GOOD, "version": 1}]}))
    [problem] = unbumped_versions(project)
    assert problem.file == RECORD_FILE
    assert "restore it from git" in problem.message


# --- a hand-edited record is refused where it is loaded (issue 27) ------------------------------

#: The registry the projects of make_project release to (invoke.yaml: registry "", port 5000).
LOCAL = "127.0.0.1:5000/buildbox"
TODO = f"restore it from git (`git checkout -- {RECORD_FILE}`)"


def recorded_project(tmp_path: Path, **changes: Any) -> Path:
    """A project with demo v1 recorded as released (its current inputs), ``changes`` applied."""
    root = make_project(tmp_path / "p")
    entry = {
        **_as_json(release("1", inputs=current_inputs(project_stage.load(settings_for(root))))),
        "reference": f"{LOCAL}/demo:v1@{DIGEST}",
        "platforms": {
            "linux/amd64": {
                "digest": AMD64,
                "sbom_path": "sbom/demo/v1-linux-amd64.cdx.json",
                "sbom_digest": "sha256:" + "5" * 64,
            }
        },
        **changes,
    }
    (root / RECORD_FILE).write_text(json.dumps({"releases": [entry]}))
    return root


def platform(**changes: str) -> dict[str, dict[str, str]]:
    facts = {
        "digest": AMD64,
        "sbom_path": "sbom/demo/v1-linux-amd64.cdx.json",
        "sbom_digest": "sha256:" + "5" * 64,
    }
    return {"linux/amd64": {**facts, **changes}}


#: A hand edit -> (the field named, words of the line that names it).
HAND_EDITS: dict[str, tuple[dict[str, Any], str, str]] = {
    "the issue's record": (
        {"reference": f"{LOCAL}/demo:v1@sha256:abc", "digest": "sha256:zz", "platforms": {}},
        "digest",
        "expected a digest, sha256: and 64 lowercase hex digits, got 'sha256:zz'",
    ),
    "a reference pinning no valid digest": (
        {"reference": f"{LOCAL}/demo:v1@sha256:abc"},
        "reference",
        "the digest must be sha256:<64 lowercase hex>",
    ),
    "a reference on another registry": (
        {"reference": f"ghcr.io/someone-else/demo:v1@{DIGEST}"},
        "reference",
        f"names ghcr.io/someone-else/demo, not {LOCAL}/demo (buildbox.registry: {LOCAL})",
    ),
    "a reference with another tag": (
        {"reference": f"{LOCAL}/demo:v7@{DIGEST}"},
        "reference",
        "its tag is v7, not v1",
    ),
    "a reference pinning another digest": (
        {"reference": f"{LOCAL}/demo:v1@{AMD64}"},
        "reference",
        f"pins {AMD64}, not the recorded digest {DIGEST}",
    ),
    "no platforms": ({"platforms": {}}, "platforms", "no platform's image is recorded"),
    "a platform digest": (
        {"platforms": platform(digest="sha256:1234")},
        "platforms.linux/amd64.digest",
        "expected a digest, sha256: and 64 lowercase hex digits",
    ),
    "an SBOM digest": (
        {"platforms": platform(sbom_digest="md5:00")},
        "platforms.linux/amd64.sbom_digest",
        "expected a digest",
    ),
    "the inputs digest": ({"inputs_digest": "sha256:"}, "inputs_digest", "expected a digest"),
    "an SBOM path leaving the repository": (
        {"platforms": platform(sbom_path="../../../../etc/hostname")},
        "platforms.linux/amd64.sbom_path",
        "expected a path inside sbom/",
    ),
    "an absolute SBOM path": (
        {"platforms": platform(sbom_path="/etc/hostname")},
        "platforms.linux/amd64.sbom_path",
        "expected a path inside sbom/",
    ),
    "an SBOM path climbing out of sbom/": (
        {"platforms": platform(sbom_path="sbom/../../../etc/hostname")},
        "platforms.linux/amd64.sbom_path",
        "leaves sbom/",
    ),
    "an SBOM path outside sbom/": (
        {"platforms": platform(sbom_path="buildboxes/demo/box.yaml")},
        "platforms.linux/amd64.sbom_path",
        "expected a path inside sbom/",
    ),
    "a revision that is an option": (
        {"revision": "--upload-pack=touch /tmp/x"},
        "revision",
        "expected the commit the release was built from",
    ),
    "a negative epoch": ({"epoch": -1}, "epoch", "-1 is less than the minimum of 0"),
    "an unknown platform": (
        {"platforms": {"linux amd64": platform()["linux/amd64"]}},
        "platforms.linux amd64",
        "expected a platform like linux/amd64",
    ),
}


@pytest.mark.parametrize("command", ["check", "ref demo", "audit", "verify-release demo --key=k"])
@pytest.mark.parametrize("edit", HAND_EDITS.values(), ids=HAND_EDITS.keys())
def test_a_hand_edited_record_is_refused(
    tmp_path: Path, edit: tuple[dict[str, Any], str, str], command: str
) -> None:
    changes, field, words = edit
    root = recorded_project(tmp_path, **changes)
    result = run_cli(root, *command.split())
    assert result.returncode == 1, result.stdout + result.stderr
    shown = result.stdout + result.stderr
    assert "Traceback" not in shown
    [line] = [n for n in shown.splitlines() if f"release demo v1, {field}: " in n]
    assert line.startswith((f"{RECORD_FILE}: ", f"buildbox: {RECORD_FILE}: ", f"  {RECORD_FILE}: "))
    assert words in line
    assert line.endswith(f"{TODO}, or delete the entry and run `invoke release demo` again")
    if command.startswith("ref"):
        assert result.stdout == "", "nothing printed for consumers to pin"


def test_an_sbom_path_through_a_symlink_out_of_sbom_is_refused(tmp_path: Path) -> None:
    """sbom/demo a link to /etc: the recorded path looks inside sbom/ but is not."""
    root = recorded_project(tmp_path, platforms=platform(sbom_path="sbom/demo/hostname"))
    (root / "sbom").mkdir()
    (root / "sbom" / "demo").symlink_to("/etc")
    result = run_cli(root, "audit")
    assert result.returncode == 1
    assert (
        "release demo v1, platforms.linux/amd64.sbom_path: sbom/demo/hostname leaves sbom/ "
        "(through a symbolic link)"
    ) in result.stderr
    assert "Traceback" not in result.stderr


def test_an_sbom_directory_that_is_a_link_out_of_the_repository_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "demo").mkdir(parents=True)
    root = recorded_project(tmp_path)
    (root / "sbom").symlink_to(elsewhere)
    with pytest.raises(BuildboxError, match="leaves sbom/ \\(through a symbolic link\\)"):
        load(settings_for(root))


def test_a_record_naming_a_release_twice_is_refused(tmp_path: Path) -> None:
    root = recorded_project(tmp_path)
    entry = json.loads((root / RECORD_FILE).read_text())["releases"][0]
    (root / RECORD_FILE).write_text(json.dumps({"releases": [entry, entry]}))
    result = run_cli(root, "ref", "demo")
    assert result.returncode == 1
    assert "release demo v1, version: recorded twice" in result.stderr


def test_a_record_with_a_key_twice_is_refused(tmp_path: Path) -> None:
    """JSON keeps the last of two keys: a second "digest" would silently win."""
    root = recorded_project(tmp_path)
    text = (root / RECORD_FILE).read_text()
    (root / RECORD_FILE).write_text(
        text.replace('"digest": ', f'"digest": "{AMD64}", "digest": ', 1)
    )
    result = run_cli(root, "ref", "demo")
    assert result.returncode == 1
    assert "duplicate key 'digest'" in result.stderr
    assert TODO in result.stderr


def test_the_recorded_release_is_printed_when_the_record_holds(tmp_path: Path) -> None:
    root = recorded_project(tmp_path)
    assert run_cli(root, "check").returncode == 0
    pinned = run_cli(root, "ref", "demo")
    assert pinned.returncode == 0, pinned.stderr
    assert pinned.stdout.strip() == f"{LOCAL}/demo:v1@{DIGEST}"
