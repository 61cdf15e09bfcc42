"""The Docker engine, reached through docker-py, with failures turned into clear messages."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import docker
import docker.errors

from buildbox.errors import BuildboxError


@contextmanager
def connected(timeout: int = 600) -> Iterator[Any]:
    """A client for the engine, closed when the block ends."""
    client = connect(timeout)
    try:
        yield client
    finally:
        client.close()


def connect(timeout: int = 600) -> Any:
    """A docker-py client for the engine (DOCKER_HOST, else the local socket), checked to answer."""
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    socket_path = where.removeprefix("unix://")
    if where.startswith("unix://") and not os.path.exists(socket_path):
        # Said here rather than by docker-py, which also leaks the socket of a failed probe.
        raise BuildboxError(
            f"cannot reach the Docker engine at {where}: no such socket. Start it (dockerd, or "
            "`systemctl start docker`) or point DOCKER_HOST at one."
        )
    client = None
    try:
        client = docker.from_env(version="auto", timeout=timeout)
        client.ping()
    except docker.errors.DockerException as error:
        if client is not None:
            client.close()
        raise BuildboxError(
            f"cannot reach the Docker engine at {where}: {_short(error)}. Start it (dockerd, or "
            "`systemctl start docker`) or point DOCKER_HOST at one."
        ) from None
    return client


def _short(error: Exception) -> str:
    text = str(error)
    for marker in ("No such file or directory", "Connection refused", "Permission denied"):
        if marker in text:
            return marker.lower()
    return text
