"""What the docker CLI (buildx, import) and the build's subprocesses may see of the environment:
an allow-list, so a release job's registry password, GITHUB_TOKEN or OIDC request token never
reaches a build step."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from buildbox.build.bootstrap import run_mmdebstrap
from buildbox.build.engine import Engine

SECRETS = {
    "GITHUB_TOKEN": "ghs_secret1",
    "GH_TOKEN": "ghs_secret2",
    "BUILDBOX_REGISTRY_USERNAME": "ci-actor",
    "BUILDBOX_REGISTRY_PASSWORD": "secret3",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "secret4",
    "ACTIONS_ID_TOKEN_REQUEST_URL": "https://token.invalid/",
    "ACTIONS_RUNTIME_TOKEN": "secret5",
    "COSIGN_PASSWORD": "secret6",
    "AWS_SECRET_ACCESS_KEY": "secret7",
    "DOCKER_AUTH_CONFIG": '{"auths": {}}',
    "DOCKER_PASSWORD": "secret8",
    "BUILDKIT_SECRET": "secret9",
    "INVOKE_BUILDBOX_SIGNING_KEY": "env://KEY",
}
KEPT = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/ci",
    "DOCKER_CONFIG": "/home/ci/.docker",
    "DOCKER_CERT_PATH": "/certs",
    "BUILDKIT_PROGRESS": "plain",
    "BUILDX_BUILDER": "remote",
    "SOURCE_DATE_EPOCH": "1700000000",
    "https_proxy": "http://proxy.invalid:3128",
    "NO_PROXY": "127.0.0.1",
    "LANG": "C.UTF-8",
    "TMPDIR": "/tmp",
}


def test_the_cli_environment_has_no_secrets_or_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**SECRETS, **KEPT}.items():
        monkeypatch.setenv(name, value)
    environment = Engine.cli_environment_for("unix:///run/engine.sock")
    leaked = sorted(set(SECRETS) & set(environment))
    assert not leaked, f"the build's environment carries {leaked}"
    assert not set(SECRETS.values()) & set(environment.values())
    assert {name: environment.get(name) for name in KEPT} == KEPT
    assert environment["DOCKER_HOST"] == "unix:///run/engine.sock"


def test_mmdebstrap_whose_package_scripts_run_as_root_gets_no_secrets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A real process in mmdebstrap's place writes down the environment it was given.
    seen = tmp_path / "environment"
    program = tmp_path / "bin" / "mmdebstrap"
    program.parent.mkdir()
    program.write_text(f"#!/bin/sh\nenv > {seen}\n")
    program.chmod(0o755)
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PATH", f"{program.parent}{os.pathsep}{os.environ['PATH']}")
    run_mmdebstrap([str(program)], "bootstrap a test base", epoch=1700000001)
    environment = dict(line.split("=", 1) for line in seen.read_text().splitlines() if "=" in line)
    leaked = sorted(set(SECRETS) & set(environment))
    assert not leaked, f"mmdebstrap's environment carries {leaked}"
    assert environment["SOURCE_DATE_EPOCH"] == "1700000001"
