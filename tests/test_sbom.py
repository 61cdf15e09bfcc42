"""`invoke sbom` and `invoke sbom-diff`: complete, valid, deterministic CycloneDX 1.6."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.model.bom import Bom
from packageurl import PackageURL

from artifact_server import ArtifactServer
from buildbox.define import project
from buildbox.errors import BuildboxError
from buildbox.sbom import cyclonedx as sbom
from buildbox.sbom import diff as sbom_diff
from buildbox.sbom.packages import (
    OsPackage,
    parse_apk_installed,
    parse_dpkg_status,
    parse_os_release,
    parse_rpm_query,
)
from buildbox.source import Revision
from buildbox.verify import Report
from conftest import HELLO_VERSION, BaseImage, FixtureProject, hello_component
from projects import BASE, FIXTURES, make_project, run_cli, settings_for, write_yaml

SBOM = "dist/sbom/fixture/v1-linux-amd64.cdx.json"


def build(project: FixtureProject) -> None:
    result = run_cli(project.root, "build", "--box=fixture")
    assert result.returncode == 0, result.stdout + result.stderr


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in document["components"]}


def properties(entry: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in entry.get("properties", [])}


@pytest.mark.integration
@pytest.mark.engine
def test_sbom_of_the_fixture_image(
    fixture_project: FixtureProject, busybox_base: BaseImage, artifacts: ArtifactServer
) -> None:
    build(fixture_project)
    result = run_cli(fixture_project.root, "sbom", "--box=fixture")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"wrote {SBOM} (CycloneDX 1.6, valid)" in result.stdout
    document = json.loads((fixture_project.root / SBOM).read_text())
    sbom.validate(json.dumps(document))

    assert document["specVersion"] == "1.6"
    image = document["metadata"]["component"]
    assert (image["type"], image["name"], image["version"]) == (
        "container",
        "buildbox-fixture",
        "v1",
    )
    assert document["metadata"]["timestamp"] == "1970-01-01T00:00:00+00:00"  # no git: epoch 0

    components = by_name(document)
    base = components[busybox_base.repository]
    assert base["type"] == "container"
    assert base["version"] == busybox_base.digest
    assert base["hashes"] == [{"alg": "SHA-256", "content": busybox_base.digest[7:]}]

    hello = components["hello"]
    assert hello["version"] == HELLO_VERSION
    assert hello["purl"] == f"pkg:generic/hello@{HELLO_VERSION}"
    assert hello["licenses"] == [{"expression": "MIT"}]
    sha = artifacts.sha256(f"hello-{HELLO_VERSION}.tar.gz")
    assert hello["hashes"] == [{"alg": "SHA-256", "content": sha}]
    [reference] = hello["externalReferences"]
    assert reference["type"] == "distribution"
    assert reference["url"] == artifacts.url(f"hello-{HELLO_VERSION}.tar.gz")
    assert properties(hello)["buildbox:install-location"] == "/opt/hello"
    assert properties(hello)["buildbox:probe-output"] == f"hello {HELLO_VERSION}"

    [dependency] = [d for d in document["dependencies"] if d["ref"] == image["bom-ref"]]
    assert sorted(dependency["dependsOn"]) == sorted(c["bom-ref"] for c in document["components"])
    top = properties(document)
    assert top["buildbox:box"] == "fixture"
    assert top["buildbox:box-version"] == "1"
    assert top["buildbox:inputs-digest"].startswith("sha256:")
    assert top["buildbox:source-revision"] == "unknown"


@pytest.mark.integration
@pytest.mark.engine
def test_sbom_is_byte_identical_run_to_run(fixture_project: FixtureProject) -> None:
    build(fixture_project)
    one, two = fixture_project.root / "one.json", fixture_project.root / "two.json"
    for path in (one, two):
        result = run_cli(fixture_project.root, "sbom", "--box=fixture", f"--output={path}")
        assert result.returncode == 0, result.stderr
    first = one.read_bytes()
    assert first == two.read_bytes()
    stdout = run_cli(fixture_project.root, "sbom", "--box=fixture", "--output=-").stdout
    assert stdout.encode() == first


@pytest.mark.integration
@pytest.mark.engine
def test_os_packages_from_a_real_dpkg_database(fixture_project: FixtureProject) -> None:
    shutil.copy(FIXTURES / "dpkg" / "status", fixture_project.box_dir / "dpkg-status")
    shutil.copy(FIXTURES / "dpkg" / "os-release", fixture_project.box_dir / "os-release")
    dockerfile = fixture_project.box_dir / "Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text()
        + "COPY dpkg-status /var/lib/dpkg/status\nCOPY os-release /etc/os-release\n"
    )
    build(fixture_project)
    result = run_cli(fixture_project.root, "sbom", "--box=fixture")
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads((fixture_project.root / SBOM).read_text())
    debs = [
        PackageURL.from_string(c["purl"])
        for c in document["components"]
        if c.get("purl", "").startswith("pkg:deb/")
    ]
    expected = parse_dpkg_status((FIXTURES / "dpkg" / "status").read_text(), "debian")
    assert sorted((p.name, p.version) for p in debs) == sorted(
        (p.name, p.version) for p in expected
    )
    bash = next(p for p in debs if p.name == "bash")
    assert bash.namespace == "debian"
    assert bash.qualifiers == {"arch": "amd64", "distro": "debian-12"}, "release from os-release"
    assert len(debs) == 5


@pytest.mark.integration
def test_no_sbom_when_the_image_lacks_the_pinned_version(
    fixture_project: FixtureProject, artifacts: ArtifactServer
) -> None:
    hello = hello_component(artifacts)
    hello["probe"]["expect"] = "hello 7.0"
    write_yaml(fixture_project.root / "shared/components.yaml", {"components": {"hello": hello}})
    build(fixture_project)
    result = run_cli(fixture_project.root, "sbom", "--box=fixture")
    assert result.returncode == 1
    assert "does not pass verify, so no SBOM is written" in result.stderr
    assert "expected 'hello 7.0'" in result.stderr
    assert not (fixture_project.root / SBOM).exists()


@pytest.mark.integration
def test_diff_between_two_versions(
    fixture_project: FixtureProject, artifacts: ArtifactServer
) -> None:
    build(fixture_project)
    assert run_cli(fixture_project.root, "sbom", "--box=fixture").returncode == 0
    write_yaml(
        fixture_project.root / "shared/components.yaml",
        {"components": {"hello": hello_component(artifacts, "1.1")}},
    )
    fixture_project.set_box(version=2)
    build(fixture_project)
    assert run_cli(fixture_project.root, "sbom", "--box=fixture").returncode == 0

    # As two releases would have committed them:
    committed = fixture_project.root / "sbom/fixture"
    shutil.copytree(fixture_project.root / "dist/sbom/fixture", committed)
    table = run_cli(fixture_project.root, "sbom-diff", "--box=fixture", "--from=v1", "--to=v2")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == ["CHANGE", "TYPE", "COMPONENT", "OLD", "NEW"]
    assert ["version", "generic", "hello", "1.0", "1.1"] in [
        line.split() for line in table.stdout.splitlines()
    ]
    files = run_cli(
        fixture_project.root,
        "sbom-diff",
        str(fixture_project.root / "dist/sbom/fixture/v1-linux-amd64.cdx.json"),
        str(fixture_project.root / "dist/sbom/fixture/v2-linux-amd64.cdx.json"),
        "--json",
    )
    assert json.loads(files.stdout) == [
        {"kind": "version", "name": "hello", "purl_type": "generic", "old": "1.0", "new": "1.1"}
    ]


def test_diff_reports_added_removed_and_hash_changes() -> None:
    def bom(*components: dict[str, Any]) -> dict[str, Any]:
        return {"components": list(components)}

    def deb(name: str, version: str) -> dict[str, Any]:
        purl = f"pkg:deb/debian/{name}@{version}?arch=amd64"
        return {"name": name, "version": version, "purl": purl}

    tool_a = {"name": "tool", "version": "1", "purl": "pkg:generic/tool@1",
              "hashes": [{"alg": "SHA-256", "content": "a" * 64}]}  # fmt: skip
    tool_b = {**tool_a, "hashes": [{"alg": "SHA-256", "content": "b" * 64}]}
    changes = sbom_diff.diff(bom(tool_a, deb("bash", "5.1")), bom(tool_b, deb("zlib1g", "1.2")))
    assert [(c.kind, c.name) for c in changes] == [
        ("removed", "debian/bash (amd64)"),
        ("added", "debian/zlib1g (amd64)"),
        ("hash", "tool"),
    ]


def test_invalid_sbom_is_an_error_not_a_file(tmp_path: Path) -> None:
    target = tmp_path / "broken.cdx.json"
    invalid = json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6", "components": [{}]})
    with pytest.raises(BuildboxError, match=r"not valid CycloneDX 1\.6, so it was not written"):
        sbom.write(target, sbom.Sbom.checked("linux/amd64", invalid))
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_sbom_diff_of_missing_files_is_a_clear_error(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    missing = run_cli(root, "sbom-diff", "--box=demo", "--from=v1", "--to=v2")
    assert missing.returncode == 1
    assert f"no SBOM at {root}/sbom/demo/v1-linux-amd64.cdx.json" in missing.stderr


GOOD_COMPONENT = {
    "type": "library",
    "name": "zlib1g",
    "version": "1.2",
    "purl": "pkg:deb/debian/zlib1g@1.2",
}

#: JSON that is not an SBOM -> the words of the one line naming the file.
NOT_SBOMS: dict[str, tuple[Any, str]] = {
    "a JSON list": ([GOOD_COMPONENT], "the JSON is a list, not an object"),
    "a JSON string": ("bom", "the JSON is a string, not an object"),
    "an object without components": ({"name": "x"}, 'no "bomFormat": "CycloneDX"'),
    "components not a list": (
        {"bomFormat": "CycloneDX", "components": {"zlib1g": "1.2"}},
        "components is a mapping, not a list",
    ),
    "a component not an object": (
        {"bomFormat": "CycloneDX", "components": ["zlib1g"]},
        "components[0] is a string, not an object",
    ),
    "a component without a name": (
        {"bomFormat": "CycloneDX", "components": [{"version": "1"}]},
        "components[0].name is missing",
    ),
    "a version that is a list": (
        {"bomFormat": "CycloneDX", "components": [{**GOOD_COMPONENT, "version": [1]}]},
        "components[0].version is a list, not text",
    ),
    "a purl that is not one": (
        {"bomFormat": "CycloneDX", "components": [{**GOOD_COMPONENT, "purl": "zlib1g"}]},
        "components[0].purl 'zlib1g' is not a package URL",
    ),
    "hashes not a list of objects": (
        {"bomFormat": "CycloneDX", "components": [{**GOOD_COMPONENT, "hashes": ["abc"]}]},
        "components[0].hashes[0] is a string, not an object",
    ),
    "a hash that is a number": (
        {"bomFormat": "CycloneDX", "components": [{**GOOD_COMPONENT, "hashes": [{"content": 5}]}]},
        "components[0].hashes[0].content is a number, not text",
    ),
}


@pytest.mark.parametrize("side", ["from", "to"])
@pytest.mark.parametrize("case", NOT_SBOMS.values(), ids=NOT_SBOMS.keys())
def test_sbom_diff_of_json_that_is_not_an_sbom_names_the_file(
    tmp_path: Path, case: tuple[Any, str], side: str
) -> None:
    data, words = case
    good = tmp_path / "good.cdx.json"
    good.write_text(json.dumps({"bomFormat": "CycloneDX", "components": [GOOD_COMPONENT]}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    files = [str(bad), str(good)] if side == "from" else [str(good), str(bad)]
    result = run_cli(make_project(tmp_path / "p"), "sbom-diff", *files)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"buildbox: {bad} is not a CycloneDX SBOM: {words}"), line
    assert line.endswith("compare the .cdx.json files `invoke sbom` or `invoke release` wrote")
    assert result.stdout == ""


def test_sbom_diff_of_an_sbom_without_components_is_no_components(tmp_path: Path) -> None:
    """CycloneDX lets an SBOM list no components: compared, everything was added."""
    empty, full = tmp_path / "empty.cdx.json", tmp_path / "full.cdx.json"
    empty.write_text(json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6"}))
    full.write_text(json.dumps({"bomFormat": "CycloneDX", "components": [GOOD_COMPONENT]}))
    result = run_cli(make_project(tmp_path / "p"), "sbom-diff", str(empty), str(full))
    assert result.returncode == 0, result.stderr
    [row] = [line.split() for line in result.stdout.splitlines() if "zlib1g" in line]
    assert row[0] == "added"


def test_dpkg_status_keeps_only_installed_packages() -> None:
    text = (FIXTURES / "dpkg" / "status").read_text() + (
        "\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1.0\nArchitecture: amd64\n"
    )
    names = [p.name for p in parse_dpkg_status(text, "debian")]
    assert names == ["base-files", "bash", "coreutils", "libc6", "zlib1g"]
    zlib = parse_dpkg_status(text, "debian")[-1]
    assert zlib.purl.to_string() == "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64"


def test_apk_and_rpm_and_os_release() -> None:
    apk = (
        "P:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\n\nP:busybox\nV:1.36.1-r5\nA:x86_64\nL:GPL-2.0-only\n"
    )
    assert [p.purl.to_string() for p in parse_apk_installed(apk, "alpine")] == [
        "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64",
        "pkg:apk/alpine/busybox@1.36.1-r5?arch=x86_64",
    ]
    rpm = (
        "bash\t(none)\t4.2.46\t35.el7_9\tx86_64\tGPLv3+\n"
        "gpg-pubkey\t(none)\tf4a80eb5\t53a7ff4b\t(none)\tpubkey\n"
        "openssl-libs\t1\t1.0.2k\t26.el7_9\tx86_64\tOpenSSL\n"
    )
    assert [p.purl.to_string() for p in parse_rpm_query(rpm, "centos")] == [
        "pkg:rpm/centos/bash@4.2.46-35.el7_9?arch=x86_64",
        "pkg:rpm/centos/openssl-libs@1.0.2k-26.el7_9?arch=x86_64&epoch=1",
    ]
    release = parse_os_release((FIXTURES / "dpkg" / "os-release").read_text())
    assert (release["ID"], release["VERSION_ID"]) == ("debian", "12")


def test_the_indexed_dependency_lookup_renders_the_librarys_bytes(tmp_path: Path) -> None:
    """build_bom's faster register_dependency (see _with_indexed_dependencies) changes nothing."""
    box = {"version": 1, "base": BASE, "platforms": ["linux/amd64"], "components": []}
    loaded = project.load(settings_for(make_project(tmp_path, boxes={"big": box})))
    packages = [OsPackage("deb", "debian", f"p{i}", f"1.{i}", "amd64") for i in range(50)]

    def bom() -> Bom:
        return sbom.build_bom(
            loaded,
            loaded.box("big"),
            sbom.ImageFacts("sha256:" + "1" * 64, "linux/amd64", "sha256:" + "2" * 64),
            Report("image", "linux/amd64", (), ()),
            packages,
            Revision("0" * 40, dirty=False, epoch=1_700_000_000),
        )

    library = bom()
    del library.register_dependency  # the instance attribute build_bom set: the class's again
    assert sbom.render(bom(), "linux/amd64") == sbom.render(library, "linux/amd64")
