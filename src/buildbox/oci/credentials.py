"""Registry credentials: from the environment, else the Docker config and its helpers."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

USERNAME_VARIABLE = "BUILDBOX_REGISTRY_USERNAME"
PASSWORD_VARIABLE = "BUILDBOX_REGISTRY_PASSWORD"  # noqa: S105 (a variable's name, not a secret)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)  # never printed, not even by repr()


def credentials_for(host: str) -> Credentials | None:
    """Credentials for ``host``: BUILDBOX_REGISTRY_USERNAME/PASSWORD, else the Docker config.

    The Docker config (``~/.docker/config.json``, ``DOCKER_CONFIG``) is read with docker-py,
    which also asks credential helpers (``credsStore``, ``credHelpers``).
    """
    username = os.environ.get(USERNAME_VARIABLE)
    password = os.environ.get(PASSWORD_VARIABLE)
    if username and password:
        return Credentials(username, password)
    import docker.auth  # here: docker-py is a heavy import most commands never need
    import docker.errors

    try:
        # Untyped in the stubs: docker-py gives a dict of strings (email may be None), or None.
        found: dict[str, str | None] | None = docker.auth.load_config().resolve_authconfig(host)
    except (docker.errors.DockerException, OSError, ValueError):
        return None
    if not found:
        return None
    # config.json entries come back lower-case, credential helpers' answers capitalised.
    username = found.get("username") or found.get("Username")
    password = found.get("password") or found.get("Password")
    return Credentials(username, password) if username and password else None
