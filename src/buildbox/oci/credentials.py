"""Registry credentials, each for its own host only: the publishing registry's from the
environment (or the local registry's generated ones), every host's from the Docker config."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from buildbox.settings import Settings

USERNAME_VARIABLE = "BUILDBOX_REGISTRY_USERNAME"
PASSWORD_VARIABLE = "BUILDBOX_REGISTRY_PASSWORD"  # noqa: S105 (a variable's name, not a secret)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)  # never printed, not even by repr()
    #: Where they came from, for messages (a variable's name or a file; never their value).
    origin: str = field(default="", compare=False)


def publishing_host(settings: Settings) -> str:
    """The host of ``buildbox.registry``: the one host the environment's credentials are for."""
    return settings.registry.split("/", 1)[0]


def credentials_for(host: str, settings: Settings) -> Credentials | None:
    """Credentials for ``host``, never another host's.

    The publishing registry (``buildbox.registry``'s host) gets the local registry's generated
    credentials when the toolkit runs it, else BUILDBOX_REGISTRY_USERNAME/PASSWORD when both
    are set (in CI they are a job token that must not reach a base image's registry). Any
    host, the publishing one without those variables too, gets its own entry of the Docker
    config (``~/.docker/config.json``, ``DOCKER_CONFIG``) as docker reads it: with docker-py,
    which also asks credential helpers (``credsStore``, ``credHelpers``).
    """
    if host == publishing_host(settings):
        if settings.local_registry:
            config = settings.local_registry_config / "config.json"
            return _from_docker_config(host, config) if config.is_file() else None
        username = os.environ.get(USERNAME_VARIABLE)
        password = os.environ.get(PASSWORD_VARIABLE)
        if username and password:
            return Credentials(username, password, f"{USERNAME_VARIABLE}/{PASSWORD_VARIABLE}")
    return _from_docker_config(host, None)


def _from_docker_config(host: str, path: Path | None) -> Credentials | None:
    """``host``'s entry in the Docker config at ``path`` (None: the user's)."""
    import docker.auth  # here: docker-py is a heavy import most commands never need
    import docker.errors

    try:
        loaded = docker.auth.load_config(str(path) if path else None)
        # Untyped in the stubs: docker-py gives a dict of strings (email may be None), or None.
        found: dict[str, str | None] | None = loaded.resolve_authconfig(host)
    except (docker.errors.DockerException, OSError, ValueError):
        return None
    if not found:
        return None
    # config.json entries come back lower-case, credential helpers' answers capitalised.
    username = found.get("username") or found.get("Username")
    password = found.get("password") or found.get("Password")
    where = path or "DOCKER_CONFIG or ~/.docker/config.json, or a credential helper"
    origin = f"the Docker config's entry for {host} ({where})"
    return Credentials(username, password, origin) if username and password else None
