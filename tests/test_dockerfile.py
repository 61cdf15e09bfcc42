"""Dockerfile rules that the CLI matrix in test_check.py does not already cover."""

from __future__ import annotations

from pathlib import Path

import pytest

from buildbox.define.dockerfile import check_dockerfile

GOOD = "ARG BUILDBOX_BASE\nFROM ${BUILDBOX_BASE} AS tools\nFROM ${BUILDBOX_BASE}\n"


def problems(tmp_path: Path, text: str, network: bool = False) -> list[str]:
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    return [str(p) for p in check_dockerfile(path, "Dockerfile", network=network)]


def test_good_dockerfile_has_no_problems(tmp_path: Path) -> None:
    text = GOOD + "COPY --from=tools /opt /opt\nRUN echo 'no curl here' > /dev/null\n"
    assert problems(tmp_path, text.replace("no curl here", "ok")) == []


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('ADD ["https://example.org/a.tgz", "/a.tgz"]', "ADD fetches 'https://example.org/a.tgz'"),
        ("ADD --chown=1:1 git@github.com:org/repo.git /src", "ADD fetches 'git@github.com"),
        ("COPY --from=golang:1.24 /usr/local/go /usr/local/go", "--from=golang:1.24 copies"),
        ("RUN pip install requests", "downloads with 'pip install'"),
        ("RUN go install example.org/tool@latest", "downloads with 'go install'"),
        ('RUN ["/usr/bin/wget", "https://example.org/x"]', "downloads with 'wget'"),
        ("RUN yum install -y gcc", "'yum install' needs the network"),
        ("RUN apt-get -q update", "'apt-get -q update' needs the network"),
    ],
)
def test_rule(tmp_path: Path, line: str, expected: str) -> None:
    found = problems(tmp_path, GOOD + line + "\n")
    assert any(expected in p for p in found), found
    assert all(p.startswith("Dockerfile:4: ") for p in found), found


def test_package_managers_are_fine_when_the_box_declares_network(tmp_path: Path) -> None:
    assert problems(tmp_path, GOOD + "RUN yum install -y gcc\n", network=True) == []


def test_words_that_merely_contain_a_downloader_are_fine(tmp_path: Path) -> None:
    text = GOOD + "RUN ./configure --with-curl=no && make libcurl-free && echo wgetrc\n"
    assert problems(tmp_path, text) == []


def test_copy_from_an_image_pinned_by_digest_is_fine(tmp_path: Path) -> None:
    pinned = "example.org/tools@sha256:" + "e" * 64
    assert problems(tmp_path, GOOD + f"COPY --from={pinned} /x /x\n") == []


def test_a_dockerfile_that_ignores_the_pinned_base(tmp_path: Path) -> None:
    found = problems(tmp_path, "FROM scratch\nCOPY a /a\n")
    assert found == [
        (
            "Dockerfile: FROM: no stage is built FROM ${BUILDBOX_BASE}; the toolkit passes the "
            "box's pinned base image as the build argument BUILDBOX_BASE "
            "(declare `ARG BUILDBOX_BASE` first)"
        )
    ]
