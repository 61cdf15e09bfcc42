"""Reproducible releases: the same inputs give the same digest, and `invoke reproduce` checks it."""

from __future__ import annotations

import json
import re

import pytest

from buildbox.release.record import RECORD_FILE
from conftest import FixtureProject
from projects import run_cli
from publishing import build, commit_all, published_digest, tag_digest
from registry import Registry

pytestmark = pytest.mark.integration

#: The fixture box's step that writes files: they carry the time of the build that ran it.
INSTALL_STEP = "RUN BUILDBOX_ROOT=/staging sh /buildbox/install.sh"


def ran(log: str, step: str) -> bool:
    """Whether the build ``log`` shows ``step`` run, not taken from the engine's cache."""
    buildkit = re.search(rf"^#(\d+) \[[^\]]+\] {re.escape(step)}$", log, re.MULTILINE)
    if buildkit:
        return re.search(rf"^#{buildkit[1]} DONE ", log, re.MULTILINE) is not None
    classic = rf"^Step \d+/\d+ : {re.escape(step)}\n ---> Running in "
    return re.search(classic, log, re.MULTILINE) is not None


@pytest.mark.engine
def test_two_no_cache_builds_publish_one_digest(
    publishing: FixtureProject, registry: Registry
) -> None:
    """Each build runs every step again, so its files carry that build's own times; the
    published, normalised image is the same anyway."""
    digests, tags = [], []
    for _ in range(2):
        built = run_cli(publishing.root, "build", "--box=fixture", "--no-cache")
        assert built.returncode == 0, built.stderr
        assert ran(built.stdout, INSTALL_STEP), built.stdout
        published = run_cli(publishing.root, "publish", "--box=fixture", "--dev")
        assert published.returncode == 0, published.stderr
        digests.append(published_digest(published.stdout))
        tags += re.findall(r"fixture-dev:([^@\s]+)@", published.stdout)
    assert digests[0] == digests[1]
    repository = publishing.registry.split("/", 1)[1] + "/fixture-dev"
    assert tag_digest(registry, repository, tags[-1]) == digests[0]


@pytest.mark.engine
def test_a_release_reproduces_bit_for_bit(publishing: FixtureProject) -> None:
    released = run_cli(publishing.root, "release", "--box=fixture")
    assert released.returncode == 0, released.stdout + released.stderr
    result = run_cli(publishing.root, "reproduce", "--box=fixture", "--version=1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reproduce: fixture v1 reproduced bit for bit" in result.stdout
    recorded = next(line for line in result.stdout.splitlines() if line.startswith("recorded:"))
    rebuilt = next(line for line in result.stdout.splitlines() if line.startswith("rebuilt:"))
    assert recorded.split()[-1] == rebuilt.split()[-1]


@pytest.mark.engine
def test_a_box_that_writes_the_time_is_reported_naming_the_file(
    publishing: FixtureProject,
) -> None:
    dockerfile = publishing.box_dir / "Dockerfile"
    # The time and a nonce: busybox's date has no %N, and two builds in one second (CI has seen
    # it) would write the same seconds.
    dockerfile.write_text(
        dockerfile.read_text()
        + "RUN date +%s > /built-at && head -c 16 /dev/urandom | od -An -tx1 >> /built-at\n"
    )
    commit_all(publishing.root, "stamp the build time")
    build(publishing)
    released = run_cli(publishing.root, "release", "--box=fixture")
    assert released.returncode == 0, released.stdout + released.stderr
    result = run_cli(publishing.root, "reproduce", "--box=fixture")
    assert result.returncode == 1
    assert "reproduce: fixture v1 did NOT reproduce" in result.stderr
    assert "linux/amd64: layer " in result.stdout
    assert "/built-at: content " in result.stdout
    assert "Traceback" not in result.stderr


def test_a_release_made_with_source_date_epoch_reproduces_without_it(
    publishing: FixtureProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    released = run_cli(publishing.root, "release", "--box=fixture")
    assert released.returncode == 0, released.stdout + released.stderr
    [entry] = json.loads((publishing.root / RECORD_FILE).read_text())["releases"]
    assert entry["epoch"] == 1700000000, "the record keeps the epoch the release was built as"
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    result = run_cli(publishing.root, "reproduce", "--box=fixture")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "epoch:       1700000000" in result.stdout
    assert "reproduce: fixture v1 reproduced bit for bit" in result.stdout


def test_a_bad_source_date_epoch_is_a_clear_error(
    publishing: FixtureProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    result = run_cli(publishing.root, "build", "fixture")
    assert result.returncode == 1
    assert "SOURCE_DATE_EPOCH='yesterday' is not a whole number of seconds" in result.stderr
    assert "Traceback" not in result.stderr
