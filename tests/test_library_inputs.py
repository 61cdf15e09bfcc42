"""Bad inputs in shared/components.yaml: each is one clear line from `invoke check` (file, line,
field, what to do), never a traceback, and what the build context is made of stays safe even
when the check is bypassed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from buildbox.build.context import assemble
from buildbox.define.boxes import Box
from buildbox.define.library import Artifact, Component, Install, Library, Probe
from buildbox.errors import BuildboxError
from projects import (
    BASE,
    SHA_A,
    Mutation,
    artifact,
    check_fails_with,
    library,
    make_project,
    run_cli,
    settings_for,
)

LIB = "shared/components.yaml"
TOOL = r"components\.tool"
URL = rf"{TOOL}\.artifacts\.linux/amd64\.url"
SECRET = "s3cr3t-Pa55"
GOOD_URL = "https://example.org/tool-1.0.tar.gz"
PLACEHOLDERS = r"use \{version\}, \{os\}, \{arch\}"


def upstream(url: str = "https://example.org/tool-{version}.tar.gz", **more: str) -> Mutation:
    return library(upstream={"url": url, "checksums": "{url}.sha256", **more})


# (mutation, a regular expression one output line must match)
CASES: dict[str, tuple[Mutation, str]] = {
    # 1. credentials written into a URL of the library
    "userinfo in an artifact url": (
        artifact(url=f"https://user:{SECRET}@example.org/tool-1.0.tar.gz"),
        (
            rf"^{LIB}:\d+: {URL}: 'https://\*\*\*@example\.org/tool-1\.0\.tar\.gz' carries a user "
            r"name or password; .*buildbox\.mirrors in invoke\.yaml.* ~/\.netrc"
        ),
    ),
    "userinfo in a plain-http artifact url": (
        artifact(url=f"http://user:{SECRET}@example.org/tool-1.0.tar.gz"),
        rf"^{LIB}:\d+: {URL}: 'http://\*\*\*@example\.org/.*' carries a user name or password",
    ),
    "user name alone": (
        artifact(url="https://token@example.org/tool-1.0.tar.gz"),
        rf"^{LIB}:\d+: {URL}: 'https://\*\*\*@example\.org/.*' carries a user name or password",
    ),
    "userinfo in the upstream url template": (
        upstream(f"https://u:{SECRET}@example.org/tool-{{version}}.tar.gz"),
        rf"^{LIB}:\d+: {TOOL}\.upstream\.url: .*\*\*\*@example\.org.* carries a user name or",
    ),
    "userinfo in the upstream checksums template": (
        upstream(checksums=f"https://u:{SECRET}@example.org/v{{version}}/SHA256SUMS"),
        rf"^{LIB}:\d+: {TOOL}\.upstream\.checksums: .*\*\*\*@example\.org.* carries a user name",
    ),
    "userinfo in sha256_source (it reaches the SBOM)": (
        artifact(sha256_source=f"https://u:{SECRET}@example.org/SHA256SUMS"),
        rf"^{LIB}:\d+: {TOOL}\.artifacts\.linux/amd64\.sha256_source: .* carries a user name",
    ),
    # 2. a URL urllib cannot parse
    "unclosed IPv6 bracket": (
        artifact(url="https://[::1/x.tar.gz"),
        rf"^{LIB}:\d+: {URL}: 'https://\[::1/x\.tar\.gz' is not a valid URL \(Invalid IPv6 URL\)",
    ),
    "port out of range": (
        artifact(url="https://example.org:99999/x.tar.gz"),
        rf"^{LIB}:\d+: {URL}: '.*' is not a valid URL \(Port out of range",
    ),
    "unparsable upstream template": (
        upstream("https://[::1/tool-{version}.tar.gz"),
        rf"^{LIB}:\d+: {TOOL}\.upstream\.url: .* is not a valid URL",
    ),
    # 3. templates: known placeholders only, used plainly
    "attribute of a placeholder": (
        upstream("https://example.org/tool-{version.foo}.tar.gz"),
        rf"^{LIB}:\d+: {TOOL}\.upstream\.url: '\{{version\.foo\}}' is not a placeholder here; "
        + PLACEHOLDERS,
    ),
    "index of a placeholder": (
        upstream("https://example.org/tool-{version[0]}.tar.gz"),
        rf"^{LIB}:\d+: {TOOL}\.upstream\.url: '\{{version\[0\]\}}' is not a placeholder",
    ),
    "format spec": (
        upstream("https://example.org/tool-{version:>9}.tar.gz"),
        rf"^{LIB}:\d+: {TOOL}\.upstream\.url: '\{{version:>9\}}' is not a placeholder",
    ),
    "conversion": (
        upstream("https://example.org/tool-{arch!r}.tar.gz"),
        rf"^{LIB}:\d+: {TOOL}\.upstream\.url: '\{{arch!r\}}' is not a placeholder",
    ),
    "positional": (
        upstream("https://example.org/tool-{}.tar.gz"),
        rf"^{LIB}:\d+: {TOOL}\.upstream\.url: '\{{\}}' is not a placeholder",
    ),
    "unknown name in the url": (
        upstream("https://example.org/tool-{platform}.tar.gz"),
        rf"^{LIB}:\d+: {TOOL}\.upstream\.url: '\{{platform\}}' is not a placeholder here; "
        + PLACEHOLDERS
        + r" \(write \{\{ and \}\} for a literal brace\)",
    ),
    "url placeholder in the url itself": (
        upstream("https://example.org/{url}"),
        rf"^{LIB}:\d+: {TOOL}\.upstream\.url: '\{{url\}}' is not a placeholder here",
    ),
    "attribute in the checksums template": (
        upstream(checksums="{url.real}.sha256"),
        rf"^{LIB}:\d+: {TOOL}\.upstream\.checksums: '\{{url\.real\}}' is not a placeholder here; "
        + PLACEHOLDERS
        + r", \{url\}, \{filename\}",
    ),
    "unbalanced brace": (
        upstream("https://example.org/tool-{version.tar.gz"),
        rf"^{LIB}:\d+: {TOOL}\.upstream\.url: not a valid template \(.*\); write \{{\{{ and \}}\}}",
    ),
    # 4. the file name an artifact gets in the build context (the URL path's last segment)
    "file name '..'": (
        artifact(url="https://example.org/dist/%2E%2E"),
        rf"^{LIB}:\d+: {URL}: the file name it gives, '\.\.', is not a safe file name",
    ),
    "file name '.'": (
        artifact(url="https://example.org/dist/%2e"),
        rf"^{LIB}:\d+: {URL}: the file name it gives, '\.', is not a safe file name",
    ),
    "encoded slash": (
        artifact(url="https://example.org/dist/tool%2F"),
        rf"^{LIB}:\d+: {URL}: the URL must end in a file name",
    ),
    "encoded newline": (
        artifact(url="https://example.org/dist/tool%0Aevil%09x.tar.gz"),
        rf"^{LIB}:\d+: {URL}: the file name it gives, 'tool\\nevil\\tx\.tar\.gz', is not a safe",
    ),
    "encoded space": (
        artifact(url="https://example.org/dist/my%20tool.tar.gz"),
        (
            rf"^{LIB}:\d+: {URL}: the file name it gives, 'my tool\.tar\.gz', is not a safe "
            r"file name \(letters, digits and \. _ \+ ~ -"
        ),
    ),
    "leading dash": (
        artifact(url="https://example.org/dist/-rf"),
        rf"^{LIB}:\d+: {URL}: the file name it gives, '-rf', is not a safe file name",
    ),
    # 5. unquoted numbers as versions
    "version 2.0 unquoted": (
        library(version=2.0),
        (
            rf"^{LIB}:\d+: {TOOL}\.version: expected a string, got the number 2\.0 "
            r"\(write it in quotes"
        ),
    ),
    "version 2.50 unquoted": (
        library(version=2.5),
        rf"^{LIB}:\d+: {TOOL}\.version: .* got the number 2\.5 \(write it in quotes",
    ),
    "version 3 unquoted": (
        library(version=3),
        rf"^{LIB}:\d+: {TOOL}\.version: expected a string, got 3",
    ),
    "version with a tab (a components.tsv column)": (
        library(version="1.0\tx"),
        rf"^{LIB}:\d+: {TOOL}\.version: expected a version without spaces, slashes or control",
    ),
    # 7. the publisher's checksum file is read under the same URL rule as the artifacts
    "plain-http checksums template": (
        upstream(checksums="http://sums.example.org/tool-{version}.sha256"),
        (
            rf"^{LIB}:\d+: {TOOL}\.upstream\.checksums: 'http://sums\.example\.org/tool-1\.0"
            r"\.sha256' uses plain http; use https, or list 'sums\.example\.org' in "
            r"buildbox\.allow_http_hosts"
        ),
    ),
    "file:// checksums template": (
        upstream(checksums="file:///etc/{filename}.sha256"),
        (
            rf"^{LIB}:\d+: {TOOL}\.upstream\.checksums: 'file:///etc/tool-1\.0\.tar\.gz"
            r"\.sha256' is not a URL"
        ),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_library_input_is_one_clear_line(tmp_path: Path, case: str) -> None:
    mutate, expected = CASES[case]
    root = make_project(tmp_path)
    mutate(root)
    result, _ = check_fails_with(root, expected)
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "mutate",
    [
        artifact(url="http://127.0.0.1:8080/tool-1.0.tar.gz"),
        artifact(url="https://example.org/dist/tool-1.0%2Bbuild_2~rc.tar.gz"),
        artifact(url="https://example.org/a@b/tool-1.0.tar.gz"),  # '@' in the path: no userinfo
        artifact(url=GOOD_URL + "?mirror=https://x.example.org/y"),
        library(version="1.0"),
        upstream(),
        upstream(checksums="https://example.org/v{version}/{os}-{arch}/{filename}.sha256"),
        upstream(checksums="http://127.0.0.1:9/{{literal}}/SHA256SUMS"),
    ],
)
def test_good_library_inputs_pass(tmp_path: Path, mutate: Mutation) -> None:
    root = make_project(tmp_path)
    mutate(root)
    result = run_cli(root, "check")
    assert result.returncode == 0, result.stdout + result.stderr


def _assemble(tmp_path: Path, url: str = GOOD_URL, version: str = "1.0") -> None:
    """Assemble a context for a component that never went through `invoke check`."""
    settings = settings_for(make_project(tmp_path))
    cached = tmp_path / "artifact"
    cached.write_bytes(b"x")
    tool = Component(
        name="tool",
        version=version,
        license="MIT",
        purl="pkg:generic/tool@1.0",
        install=Install("tarball", "/opt/tool"),
        probe=Probe(("tool",), "tool"),
        artifacts=(Artifact("linux/amd64", url, SHA_A, "x"),),
    )
    box = Box(
        name="demo",
        directory=tmp_path / "buildboxes" / "demo",
        version="1",
        base=BASE,
        platforms=("linux/amd64",),
        components=("tool",),
    )
    assemble(box, Library((tool,)), settings, "linux/amd64", {SHA_A: cached})


def test_the_context_writer_takes_a_safe_artifact(tmp_path: Path) -> None:
    _assemble(tmp_path)


@pytest.mark.parametrize(
    ("encoded", "said"),
    [
        ("%2E%2E", "'..'"),
        ("%2e", "'.'"),
        ("tool%2F", "must end in a file name"),
        ("a%0Ab", "'a\\nb'"),
        ("a%09b", "'a\\tb'"),
        ("a%20b", "'a b'"),
        ("-rf", "'-rf'"),
        ("x%7F", "'x\\x7f'"),
    ],
)
def test_the_context_writer_refuses_an_unsafe_artifact_file_name(
    tmp_path: Path, encoded: str, said: str
) -> None:
    """Defence in depth: a Library made without the check still cannot put '..' into the
    context or a line into components.tsv."""
    where = re.escape(f"{LIB}: components.tool.artifacts.linux/amd64.url: ")
    with pytest.raises(BuildboxError, match=where + ".*" + re.escape(said)):
        _assemble(tmp_path, url=f"https://example.org/dist/{encoded}")


def test_the_context_writer_refuses_a_tab_or_newline_in_a_components_tsv_field(
    tmp_path: Path,
) -> None:
    with pytest.raises(BuildboxError, match=r"components\.tsv"):
        _assemble(tmp_path, version="1.0\nevil\tline")
