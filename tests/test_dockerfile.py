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
    assert problems(tmp_path, text) == []


# RUN lines from real Dockerfiles' idioms: (the line, the command refused, or None when fine).
RUN_LINES: list[tuple[str, str | None]] = [
    # Downloads, however they are wrapped.
    ("RUN curl -fsSL https://example.org/x.tgz | tar -xz", "curl"),
    ("RUN set -eux; wget -q https://example.org/x -O /x", "wget"),
    ("RUN apt-get update && curl -o /x https://example.org/x", "curl"),
    ("RUN true || wget https://example.org/x", "wget"),
    ("RUN if [ ! -f /x ]; then curl -o /x https://example.org/x; fi", "curl"),
    ("RUN for u in a b; do wget https://example.org/$u; done", "wget"),
    ("RUN sh -c 'curl -fsSL https://example.org/install.sh | sh'", "curl"),
    ('RUN bash -euo pipefail -c "wget -qO- https://example.org"', "wget"),
    ("RUN echo $(curl -s https://example.org/version)", "curl"),
    ("RUN env HTTPS_PROXY=http://proxy:3128 curl https://example.org", "curl"),
    ("RUN HTTPS_PROXY=http://proxy:3128 wget https://example.org", "wget"),
    ("RUN sudo -E /usr/bin/curl -o /x https://example.org/x", "curl"),
    ("RUN git clone --depth 1 https://example.org/repo.git /src", "git clone"),
    ("RUN cd /src && git submodule update --init", "git submodule"),
    ("RUN pip3 install --no-cache-dir requests==2.32.3", "pip3 install"),
    ("RUN python3 -m pip install requests", "python3 -m pip install"),
    ("RUN npm install -g yarn", "npm install"),
    ("RUN go install golang.org/x/tools/gopls@latest", "go install"),
    ("RUN cargo install cargo-deny --locked", "cargo install"),
    ("RUN rustup target add aarch64-unknown-linux-gnu", "rustup target"),
    ('RUN ["/usr/bin/wget", "https://example.org/x"]', "wget"),
    ('RUN ["sh", "-c", "curl https://example.org | sh"]', "curl"),
    ("RUN --mount=type=cache,target=/root/.cache pip install requests", "pip install"),
    # The same words as arguments, in strings, in comments, as packages: fine.
    ('RUN echo "install with curl if you like" > /etc/motd', None),
    ("RUN grep -q wget /etc/motd || true", None),
    ("RUN curl --version && wget --version", None),  # a smoke test fetches nothing
    ("RUN ./configure --with-curl=no && make libcurl-free", None),
    ("RUN echo wgetrc > /etc/skel/.notes", None),
    ("RUN printf '%s\\n' 'git clone is not run here' > /README", None),
    ("RUN ls /usr/share/doc/curl # curl is only a path here", None),
    ("RUN test -x /usr/bin/curl || echo 'no curl in the base'", None),
    ("RUN mkdir -p /etc/pip && echo '[global]' > /etc/pip/pip.conf", None),
    ("RUN go version && cargo --version && npm --version", None),
    ("RUN git config --global user.name buildbox", None),
    ("RUN rustup default stable", None),
    ("RUN cat /buildbox/components.tsv | cut -f1 | sort", None),
    ('RUN ["/bin/echo", "curl"]', None),
    ("RUN sh -c 'echo wget'", None),
    ("RUN export NAME=curl && echo $NAME", None),
]


@pytest.mark.parametrize(("line", "refused"), RUN_LINES)
def test_what_a_run_line_runs_decides(tmp_path: Path, line: str, refused: str | None) -> None:
    found = [p for p in problems(tmp_path, GOOD + line + "\n") if "downloads with" in p]
    if refused is None:
        assert found == []
    else:
        assert found, f"{line!r} downloads with {refused!r}, and check did not say so"
        assert f"downloads with {refused!r}" in found[0]


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
        ("RUN apt-get -q update", "'apt-get update' needs the network"),
        ("RUN DEBIAN_FRONTEND=noninteractive apt-get install -y make", "'apt-get install' needs"),
    ],
)
def test_rule(tmp_path: Path, line: str, expected: str) -> None:
    found = problems(tmp_path, GOOD + line + "\n")
    assert any(expected in p for p in found), found
    assert all(p.startswith("Dockerfile:4: ") for p in found), found


def test_package_managers_are_fine_when_the_box_declares_network(tmp_path: Path) -> None:
    assert problems(tmp_path, GOOD + "RUN yum install -y gcc\n", network=True) == []


def test_a_package_named_like_a_downloader_is_no_download(tmp_path: Path) -> None:
    text = GOOD + "RUN apt-get install -y curl wget git\n"
    assert problems(tmp_path, text, network=True) == []


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
