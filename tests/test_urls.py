"""Where downloads and registries may be reached: mirrors, allowed URLs, loopback, plain http."""

from __future__ import annotations

from typing import Any

import pytest

from buildbox.define.library import url_problem
from buildbox.errors import BuildboxError
from buildbox.fetch import sources
from buildbox.http import is_loopback, redact
from buildbox.oci.transport import is_plain_http
from buildbox.settings import Mirrors, from_config

GO = "https://dl.google.com/go/go1.24.1.linux-amd64.tar.gz"


def mirrors(config: dict[str, Any]) -> Mirrors:
    """The mirrors as invoke.yaml's ``buildbox.mirrors`` gives them, parsed by the settings."""
    settings = from_config({"mirrors": config, "cache_dir": "/tmp/unused-cache"})
    return settings.mirrors


def test_no_mirror_is_the_url_alone() -> None:
    assert sources(GO, mirrors({})) == [GO]


def test_one_mirror_first_then_upstream() -> None:
    rules = mirrors({"https://dl.google.com/go/": "https://mirror.internal/go/"})
    assert sources(GO, rules) == ["https://mirror.internal/go/go1.24.1.linux-amd64.tar.gz", GO]


def test_several_targets_in_the_order_written() -> None:
    rules = mirrors(
        {"https://dl.google.com/": ["https://b.internal/google/", "https://a.internal/g/"]}
    )
    assert sources(GO, rules) == [
        "https://b.internal/google/go/go1.24.1.linux-amd64.tar.gz",
        "https://a.internal/g/go/go1.24.1.linux-amd64.tar.gz",
        GO,
    ]


def test_most_specific_prefix_first_whatever_the_order_written() -> None:
    written = {
        "https://dl.google.com/": "https://all.internal/",
        "https://dl.google.com/go/": "https://go.internal/",
        "https://": "https://everything.internal/",
    }
    expected = [
        "https://go.internal/go1.24.1.linux-amd64.tar.gz",
        "https://all.internal/go/go1.24.1.linux-amd64.tar.gz",
        "https://everything.internal/dl.google.com/go/go1.24.1.linux-amd64.tar.gz",
        GO,
    ]
    assert sources(GO, mirrors(written)) == expected
    assert sources(GO, mirrors(dict(reversed(list(written.items()))))) == expected


def test_a_prefix_that_does_not_match_is_not_used() -> None:
    rules = mirrors(
        {
            "https://nodejs.org/dist/": "https://mirror.internal/node/",
            "https://dl.google.com/go/go1.23": "https://old.internal/",
            "http://dl.google.com/": "https://plain.internal/",
        }
    )
    assert sources(GO, rules) == [GO]


def test_mirror_settings_of_the_wrong_type_are_one_error() -> None:
    with pytest.raises(BuildboxError, match=r"invoke.yaml: buildbox.mirrors: expected a mapping"):
        mirrors({"https://dl.google.com/": 3})


ALLOWED = ("mirror.corp.example", "10.1.2.3")


@pytest.mark.parametrize(
    "url",
    [
        GO,
        "https://example.org:8443/tool-1.0.tar.gz",
        "http://127.0.0.1:8000/tool.tar.gz",
        "http://127.0.0.2/tool.tar.gz",  # all of 127.0.0.0/8 is loopback
        "http://[::1]:8000/tool.tar.gz",
        "http://localhost/tool.tar.gz",
        "http://localhost:8080/tool.tar.gz",
        "http://mirror.corp.example/tool.tar.gz",
        "http://mirror.corp.example:8080/tool.tar.gz",
        "http://10.1.2.3/tool.tar.gz",
    ],
)
def test_allowed_url(url: str) -> None:
    assert url_problem(url, ALLOWED) is None


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://example.org/tool-1.0.tar.gz", "example.org"),
        ("http://10.1.2.4/tool.tar.gz", "10.1.2.4"),
        ("http://localhost.evil.example/tool.tar.gz", "localhost.evil.example"),
        ("http://127.0.0.1.evil.example/tool.tar.gz", "127.0.0.1.evil.example"),
        ("http://corp.example/tool.tar.gz", "corp.example"),  # allowing a host is not its parent
        ("http://evil.mirror.corp.example/tool.tar.gz", "evil.mirror.corp.example"),
    ],
)
def test_plain_http_to_another_host_is_refused(url: str, host: str) -> None:
    message = url_problem(url, ALLOWED)
    assert message == (
        f"{url!r} uses plain http; use https, or list {host!r} in buildbox.allow_http_hosts in "
        "invoke.yaml"
    )


def test_plain_http_is_refused_without_an_allow_list() -> None:
    assert url_problem("http://mirror.corp.example/tool.tar.gz", ()) is not None


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("ftp://example.org/tool.tar.gz", "ftp"),
        ("file://example.org/tmp/tool.tar.gz", "file"),
        ("s3://bucket.example/tool.tar.gz", "s3"),
        ("ftp://localhost/tool.tar.gz", "ftp"),  # loopback does not make other schemes fine
    ],
)
def test_other_schemes_are_refused(url: str, scheme: str) -> None:
    assert url_problem(url, ALLOWED) == f"{url!r} uses {scheme!r}; expected an https URL"


@pytest.mark.parametrize(
    "url",
    [
        "file:///tmp/tool.tar.gz",
        "https:///tool.tar.gz",
        "/tmp/tool.tar.gz",
        "tool.tar.gz",
        "example.org/tool.tar.gz",
        "",
    ],
)
def test_no_host_is_refused(url: str) -> None:
    assert url_problem(url, ALLOWED) == f"{url!r} is not a URL; expected https://host/path/file"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("127.255.255.254", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("192.168.1.1", False),
        ("::", False),
        ("[::2]", False),
        ("ghcr.io", False),
        ("localhost.example", False),
        ("128.0.0.1", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("host", "plain"),
    [
        ("127.0.0.1:5000", True),
        ("127.0.0.1", True),
        ("localhost:5000", True),
        ("localhost", True),
        ("[::1]:5000", True),
        ("[::1]", True),
        ("127.0.0.2:5000", True),
        ("ghcr.io", False),
        ("ghcr.io:443", False),
        ("docker.io", False),
        ("10.0.0.1:5000", False),
        ("registry.example.com:5000", False),
        ("[::2]:5000", False),
    ],
)
def test_is_plain_http(host: str, plain: bool) -> None:
    assert is_plain_http(host) is plain


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "downloading http://user:SECRET@127.0.0.1:8/x.tgz",
            "downloading http://***@127.0.0.1:8/x.tgz",
        ),
        ("https://a:b@c@mirror.invalid/p?q=u:v@w", "https://***@mirror.invalid/p?q=u:v@w"),
        (
            "HTTP://token@h.invalid/x and ftp://x:y@z.invalid",
            "HTTP://***@h.invalid/x and ftp://***@z.invalid",
        ),
        ("http://mirror.invalid/path@x, user@host", "http://mirror.invalid/path@x, user@host"),
    ],
)
def test_the_userinfo_of_every_url_is_redacted(text: str, shown: str) -> None:
    assert redact(text) == shown


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://[::1/x.tgz", "Invalid IPv6 URL"),
        ("https://example.org:99999/x.tgz", "Port out of range"),
        ("https://example.org:port/x.tgz", "Port could not be cast"),
    ],
)
def test_an_unparsable_url_is_a_reason_not_an_exception(url: str, why: str) -> None:
    problem = url_problem(url, ())
    assert problem is not None
    assert f"{url!r} is not a valid URL ({why}" in problem


@pytest.mark.parametrize(
    "url",
    [
        "https://user:SECRET@example.org/x.tgz",
        "http://SECRET@127.0.0.1:8080/x.tgz",
        "https://:SECRET@example.org/x.tgz",
        "https://user:SECRET@[::1/x.tgz",
        "ftp://user:SECRET@example.org/x.tgz",
    ],
)
def test_credentials_in_a_url_are_refused_and_never_shown(url: str) -> None:
    problem = url_problem(url, ("example.org",))
    assert problem is not None
    assert "SECRET" not in problem
    assert "***@" in problem
