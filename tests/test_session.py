"""Which images the test session may remove at its end: only those it can tell are its own."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import (
    BASE_NAME_LABEL,
    SESSION,
    SESSION_BASES,
    SESSION_LABEL,
    made_by_this_session,
    session_base,
    this_sessions_images,
)


@pytest.fixture
def base(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr("conftest.SESSION_BASES", set(SESSION_BASES))
    return session_base("127.0.0.1:40001/busybox-base", "sha256:" + "a" * 64).ref


@pytest.mark.parametrize(
    ("labels", "ours"),
    [
        ({SESSION_LABEL: SESSION}, True),
        ({SESSION_LABEL: "another-session"}, False),
        ({BASE_NAME_LABEL: "127.0.0.1:40001/busybox-base@sha256:" + "a" * 64}, True),
        ({BASE_NAME_LABEL: "127.0.0.1:40001/busybox-base:latest"}, True),
        ({BASE_NAME_LABEL: "127.0.0.1:40002/busybox-base@sha256:" + "a" * 64}, False),
        ({BASE_NAME_LABEL: "127.0.0.1:40001/busybox-base-2:latest"}, False),
        ({BASE_NAME_LABEL: "bootstrap:bookworm/minbase"}, False),
        ({}, False),
    ],
)
def test_only_images_labelled_as_this_sessions_are_its_own(
    base: str, labels: dict[str, str], ours: bool
) -> None:
    assert made_by_this_session(labels) is ours


def test_descendants_of_this_sessions_images_are_its_own_ancestors_are_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("conftest.SESSION_BASE_IDS", {"base"})
    entries: list[dict[str, Any]] = [
        {"Id": "scratch-step", "ParentId": "", "Labels": None},  # shared build cache
        {"Id": "base", "ParentId": "scratch-step", "Labels": None},
        {"Id": "copy-step", "ParentId": "base", "Labels": None},
        {"Id": "run-step", "ParentId": "copy-step", "Labels": {}},
        {"Id": "labelled", "ParentId": "", "Labels": {SESSION_LABEL: SESSION}},
        {"Id": "on-labelled", "ParentId": "labelled", "Labels": None},
        {"Id": "elsewhere", "ParentId": "scratch-step", "Labels": {SESSION_LABEL: "other"}},
        {"Id": "on-elsewhere", "ParentId": "elsewhere", "Labels": None},
    ]
    assert this_sessions_images(entries) == {
        "base", "copy-step", "run-step", "labelled", "on-labelled",
    }  # fmt: skip
