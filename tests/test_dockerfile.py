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
    ("RUN rustup default stable", "rustup default"),
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


DIGEST = "sha256:" + "a" * 64
# Issue 26, point 9: every way past the rule a review found, and what real Dockerfiles do.
# (Dockerfile text after GOOD, or before it when it starts with a parser directive; whether the
# box builds with the network; the fragment the refusal names, or None when it is fine.)
RULES: list[tuple[str, bool, str | None]] = [
    # Wrapper shells, combined flags, wrappers around wrappers: the script is parsed in turn.
    ('RUN sh -ec "curl -fsSL https://example.org/x -o /x"', True, "downloads with 'curl'"),
    ("RUN bash -lc 'wget https://example.org/x'", True, "downloads with 'wget'"),
    ('RUN sh -xc "curl https://example.org/x"', True, "downloads with 'curl'"),
    ("RUN bash -euo pipefail -c 'curl https://example.org/x | tar -x'", True, "'curl'"),
    ("RUN env sh -c 'curl https://example.org/x'", True, "downloads with 'curl'"),
    ("RUN nice -n 10 curl -O https://example.org/x", True, "downloads with 'curl'"),
    ("RUN timeout 60 wget https://example.org/x", True, "downloads with 'wget'"),
    ("RUN sudo -u root -E curl -O https://example.org/x", True, "downloads with 'curl'"),
    ("RUN echo https://example.org/x | xargs -n1 curl -O", True, "downloads with 'curl'"),
    ("RUN busybox sh -c 'wget https://example.org/x'", True, "downloads with 'wget'"),
    ("RUN busybox wget https://example.org/x", True, "downloads with 'wget'"),
    ("RUN su -c 'curl -O https://example.org/x' nobody", True, "downloads with 'curl'"),
    ("RUN find /etc -name '*.url' -exec curl -K {} \\;", True, "downloads with 'curl'"),
    ("RUN env -S 'wget https://example.org/x'", True, "downloads with 'wget'"),
    ("RUN command -p curl https://example.org/x", True, "downloads with 'curl'"),
    # Here-documents: RUN's own script, a script fed to a shell, a script in another language.
    ("RUN <<EOF\nset -e\ncurl -o /x https://example.org/x\nEOF", True, "downloads with 'curl'"),
    ("RUN <<-EOF\n\tcurl https://example.org/x\n\tEOF", True, "downloads with 'curl'"),
    ("RUN bash <<EOF\nwget https://example.org/x\nEOF", True, "downloads with 'wget'"),
    ("RUN <<EOF\n#!/usr/bin/env python3\nimport urllib.request\nEOF", True, "python3"),
    ("RUN python3 - <<EOF\nimport urllib.request\nEOF", True, "python3"),
    # Versioned interpreters, -m pip and the other Python installers.
    ("RUN python3 -m pip -q install requests", True, "downloads with 'python3 -m pip install'"),
    ("RUN python3.11 -m pip install --user requests", True, "'python3.11 -m pip install'"),
    ("RUN pip3.11 install requests", True, "downloads with 'pip3.11 install'"),
    ("RUN pip download -d /wheels requests", True, "downloads with 'pip download'"),
    ("RUN uv pip install requests", True, "downloads with 'uv pip install'"),
    ("RUN pipx install black", True, "downloads with 'pipx install'"),
    ("RUN python3 -c 'import urllib.request as u; u.urlopen(\"https://x\")'", True, "python3"),
    # git with its own options before the subcommand.
    ("RUN git -C /src clone https://example.org/r.git", True, "downloads with 'git clone'"),
    ("RUN git -c http.sslVerify=false fetch origin", True, "downloads with 'git fetch'"),
    ("RUN git --git-dir=/src/.git pull", True, "downloads with 'git pull'"),
    # A command name the check cannot read: refused, network or not.
    ("RUN $(echo curl) https://example.org/x", False, "command name"),
    ("RUN x=curl; $x https://example.org/x", False, "command name"),
    ('RUN "${TOOL}" https://example.org/x', False, "command name"),
    ('RUN eval "curl https://example.org/x"', False, "eval"),
    ('RUN sh -c "$SCRIPT"', False, "command name"),
    ("RUN echo 'curl https://example.org/x' | sh", False, "standard input"),
    ("RUN alias get=curl", False, "alias"),
    ("RUN exec 3<>/dev/tcp/example.org/80", False, "/dev/tcp"),
    ("RUN ln -s /usr/bin/curl /usr/local/bin/fetch", False, "'curl' under another name"),
    ("RUN cp /bin/busybox /tmp/busybox2 && /tmp/busybox2 wget u", False, "'busybox' under another"),
    ("RUN cp /bin/sh /tmp/x", False, "'sh' under another name"),
    ("RUN install -m755 /usr/bin/python3.11 /tmp/py", False, "'python3.11' under another name"),
    ("RUN cp /usr/bin/env /tmp/e", False, "'env' under another name"),
    ("RUN ln -s /usr/bin/python3 /usr/bin/python", False, None),
    ("RUN ln -sf /bin/bash /bin/sh", False, None),
    ("RUN ln -s /bin/busybox /bin/ls", False, None),
    ("RUN trap 'curl -O https://example.org/x' EXIT", False, "downloads with 'curl'"),
    ("RUN /usr/bin/cu?l -O https://example.org/x", False, "which the shell expands"),
    ("RUN script -qc 'curl -O https://example.org/x' /dev/null", True, "downloads with 'curl'"),
    ("RUN echo 'curl -O https://example.org/x' | sh /dev/stdin", False, "standard input"),
    ("RUN make -f - <<EOF\nall:\n\tcurl -O https://example.org/x\nEOF", True, "'curl'"),
    ("RUN git config --global alias.get '!curl' && git get", True, "git alias"),
    ("RUN awk 'BEGIN { system(\"curl -O https://example.org/x\") }'", True, "awk program"),
    ("RUN sed -i 's/^/curl /e' /urls", True, "sed program"),
    # A script written in the Dockerfile is read as the RUN that runs it would be.
    ("RUN cat > /get.sh <<'EOF'\ncurl -O https://example.org/x\nEOF", True, "'curl'"),
    ("COPY <<EOF /usr/local/bin/get.sh\ncurl -O https://example.org/x\nEOF", True, "'curl'"),
    ("COPY <<EOF /usr/local/bin/get\n#!/bin/sh\nwget https://example.org/x\nEOF", True, "'wget'"),
    # Language package managers' download verbs.
    ("RUN npm ci", True, "downloads with 'npm ci'"),
    ("RUN yarn add left-pad", True, "downloads with 'yarn add'"),
    ("RUN pnpm install --frozen-lockfile", True, "downloads with 'pnpm install'"),
    ("RUN npx cowsay hello", True, "downloads with 'npx'"),
    ("RUN go mod download", True, "downloads with 'go mod download'"),
    ("RUN go get example.org/x@v1.0.0", True, "downloads with 'go get'"),
    ("RUN go install example.org/x@v1.2.3", True, "downloads with 'go install'"),
    ("RUN cargo fetch", True, "downloads with 'cargo fetch'"),
    ("RUN cargo install ripgrep", True, "downloads with 'cargo install'"),
    ("RUN cargo build --release", True, "'cargo build' may download"),
    ("RUN go build -o /out/x ./cmd/x", True, "'go build' may download"),
    ("RUN rustup default nightly", True, "downloads with 'rustup default'"),
    # OS package managers: downloads always, installs only with `network: true`.
    ("RUN apt-get download hello", True, "downloads with 'apt-get download'"),
    ("RUN apt-get source hello", True, "downloads with 'apt-get source'"),
    ("RUN yum install -y https://example.org/x.rpm", True, "downloads with 'yum install"),
    ("RUN apk add --no-cache make", False, "'apk add' needs the network"),
    ("RUN microdnf install -y gcc", False, "'microdnf install' needs the network"),
    ("RUN zypper --non-interactive install gcc", False, "'zypper install' needs the network"),
    ("RUN dnf -y install gcc", False, "'dnf install' needs the network"),
    ("RUN yum install -y --nogpgcheck gcc", True, "--nogpgcheck"),
    ("RUN apt-get install -y --allow-unauthenticated hello", True, "--allow-unauthenticated"),
    # ADD of URLs or variables, checksum or not.
    ("ADD ${URL} /x", False, "ADD of a variable"),
    ("ADD $SRC /x", False, "ADD of a variable"),
    (f"ADD --checksum={DIGEST} https://example.org/x.tgz /x", False, "ADD fetches"),
    ("ADD https://github.com/org/repo.git#v1.0 /src", False, "ADD fetches"),
    ("ADD git@github.com:org/repo.git /src", False, "ADD fetches"),
    # RUN's flags and images the builder pulls itself, network or not.
    ("RUN --mount=type=bind,from=alpine:3.19,target=/a ls /a", False, "from=alpine:3.19"),
    ("RUN --mount=type=cache,from=busybox,target=/c true", False, "from=busybox"),
    ("RUN --mount=type=bind,target=/a,from=${IMAGE} true", False, "from=${IMAGE}"),
    ("RUN --network=host make", False, "--network"),
    ("RUN --network=none make", False, "--network"),
    ("RUN --security=insecure make", False, "--security"),
    ("RUN --device=/dev/kvm make", False, "--device"),
    ("COPY --from=alpine:3.19 /bin/busybox /x", False, "--from=alpine:3.19"),
    ("# syntax=docker/dockerfile:1", False, "syntax"),
    ("#syntax = docker/dockerfile:1.7@sha256:abc", False, "syntax"),
    ('SHELL ["python3", "-c"]', False, "SHELL"),
    ("ONBUILD RUN curl -O https://example.org/x", False, "downloads with 'curl'"),
    # Lines as BuildKit joins them: an empty line inside a continuation, one left open at the
    # end, a here-document whose end is written \EOF.
    ("RUN true && \\\n\nenv curl -O https://example.org/x", True, "downloads with 'curl'"),
    ("RUN true && \\\n  curl -O https://example.org/x \\", True, "downloads with 'curl'"),
    ("RUN bash <<\\EOF\nenv curl -O https://example.org/x\nEOF", True, "'curl'"),
    ("RUN bash <<E'O'F\nenv wget https://example.org/x\nEOF", True, "'wget'"),
    # Forms bashlex cannot parse are read conservatively.
    ('RUN case "$(uname -m)" in x86_64) curl -O https://example.org/x ;; esac', True, "'curl'"),
    ('RUN [[ -f /x ]] || eval "$CMD"', False, "eval"),
    # What the project's boxes and real Dockerfiles do: fine.
    ("RUN sh /usr/local/sbin/vault.sh", True, None),
    ("RUN yum install -y unzip xz && yum clean all", True, None),
    ("RUN BUILDBOX_ROOT=/staging sh /buildbox/install.sh", False, None),
    (
        (
            "RUN yum install -y centos-release-scl-rh \\\n && sh /usr/local/sbin/vault.sh \\\n"
            " && yum install -y devtoolset-12-gcc git make which unzip \\\n && yum clean all \\\n"
            " && rm -rf /var/cache/yum"
        ),
        True,
        None,
    ),
    (
        (
            "RUN apt-get update \\\n && DEBIAN_FRONTEND=noninteractive apt-get install -y "
            "--no-install-recommends \\\n    ca-certificates unzip xz-utils \\\n"
            " && rm -rf /var/lib/apt/lists/*"
        ),
        True,
        None,
    ),
    (
        "RUN --mount=type=bind,source=.buildbox,target=/buildbox sh /buildbox/packages.sh",
        False,
        None,
    ),
    ("COPY --from=tools /opt /opt", False, None),
    ("COPY --from=0 /opt /opt", False, None),
    (f"COPY --from=example.org/tools@{DIGEST} /x /x", False, None),
    (f"# syntax=docker/dockerfile:1.7@{DIGEST}", False, None),
    ("# check=error=true", False, None),
    ("RUN --mount=type=bind,from=tools,source=/opt,target=/t cp -a /t/. /opt/", False, None),
    (f"RUN --mount=type=bind,from=example.org/t@{DIGEST},target=/t true", False, None),
    ("RUN --mount=type=cache,target=/root/.cache make -j4", False, None),
    ("RUN --mount=type=tmpfs,target=/tmp make", False, None),
    ("RUN sh -ec 'make -C /src && make -C /src install'", True, None),
    ("RUN bash -o pipefail -c 'ls /usr/bin | sort'", True, None),
    ("RUN <<EOF\nset -eux\nmake -C /src\nEOF", True, None),
    ("RUN cat <<EOF > /etc/motd\nfetch with curl https://example.org\nEOF", True, None),
    ("COPY <<EOF /etc/motd\ncurl https://example.org/x\nEOF", True, None),
    ("RUN <<EOF bash -ex\nmake\nEOF", True, None),
    ("RUN python3 -m venv /opt/venv && python3 -m compileall -q /opt", True, None),
    ("RUN python3 --version && pip3 --version && pip3 list", True, None),
    ("RUN python3 -c 'print(1)'", False, None),
    ("RUN git -C /src log -1 && git -c core.abbrev=12 rev-parse HEAD", True, None),
    ("RUN go build -o /out/x ./cmd/x", False, None),
    ("RUN GOPROXY=off go build -o /out/x ./cmd/x", True, None),
    ("RUN cargo build --offline --release", True, None),
    ("RUN apk add --no-cache make", True, None),
    ("RUN echo curl | tr a-z A-Z", True, None),
    ('RUN x="$(uname -m)" && echo "$x" > /etc/arch', True, None),
    ('RUN make -j"$(nproc)" && make install', True, None),
    ('RUN case "$(uname -m)" in x86_64) echo amd64 ;; *) echo other ;; esac', True, None),
    ("RUN if [[ -f /x ]]; then rm /x; fi", True, None),
    ("RUN echo $((1 + 2)) > /n", True, None),
    ("RUN timeout 600 make test", True, None),
    ("RUN sudo -u builder make", True, None),
    ("RUN find /usr -name '*.a' -exec rm -f {} +", True, None),
    ("RUN busybox --list | sort > /applets", True, None),
    ("RUN env | sort && nice -n 19 make -j2", True, None),
    ("ADD files/archive.tar.gz /opt/", True, None),
    ("ADD --chown=1000:1000 config/ /etc/app/", True, None),
    ('RUN ["/bin/sh", "-c", "make && make install"]', True, None),
    ('SHELL ["/bin/bash", "-o", "pipefail", "-c"]', True, None),
    ("RUN ln -s /usr/bin/python3 /usr/local/bin/python", True, None),
    ("HEALTHCHECK CMD curl -f http://localhost/ || exit 1", True, None),
    ("ONBUILD COPY . /src", True, None),
    ("RUN awk '{ print $1 }' /etc/os-release && sed -i 's/a/b/g' /etc/motd", True, None),
    ("RUN perl -pi -e 's/a/b/g' /etc/motd", True, None),
    (
        (
            "RUN sed -i -e 's|^mirrorlist=|#mirrorlist=|' -e "
            "'s|^#\\?baseurl=http://mirror.centos.org|baseurl=http://vault.centos.org|' /etc/x.repo"
        ),
        True,
        None,
    ),
    ("RUN trap 'rm -rf /tmp/build' EXIT && make", True, None),
]


@pytest.mark.parametrize(("text", "network", "refused"), RULES)
def test_the_dockerfile_rule(tmp_path: Path, text: str, network: bool, refused: str | None) -> None:
    directive = text.startswith("#")
    dockerfile = text + "\n" + GOOD if directive else GOOD + text + "\n"
    found = problems(tmp_path, dockerfile, network)
    if refused is None:
        assert found == []
        return
    line = 1 if directive else 4
    assert any(refused in p for p in found), found
    assert all(p.startswith(f"Dockerfile:{line}: ") for p in found), found


def test_the_box_s_own_shell_scripts_are_read_like_its_run_lines(tmp_path: Path) -> None:
    (tmp_path / "vault.sh").write_text("#!/bin/sh\nset -eu\nsed -i -e 's|a|b|' /etc/x.repo\n")
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "get").write_text("#!/usr/bin/env bash\nset -e\n\ncurl -O https://x\n")
    # No #! line, no .sh: still a script to `sh /notes`, or run directly (ENOEXEC: the shell
    # runs it itself). Binary files and the lock's proof are not.
    (tmp_path / "notes").write_text("echo ready\nwget https://example.org/x\n")
    (tmp_path / "blob").write_bytes(b"\0curl -O https://example.org/x\n")
    (tmp_path / "packages.proof").mkdir()
    (tmp_path / "packages.proof" / "x_InRelease").write_text("wget never run\n")
    text = GOOD + "COPY tools/get /get\nCOPY notes /notes\nRUN /get && sh /notes\n"
    assert problems(tmp_path, text) == [
        (
            "notes:2: script: downloads with 'wget'; a box takes every download from "
            "shared/components.yaml, fetched and verified by the toolkit"
        ),
        (
            "tools/get:4: script: downloads with 'curl'; a box takes every download from "
            "shared/components.yaml, fetched and verified by the toolkit"
        ),
    ]
