"""The Docker engine behind one object: it owns the docker-py client from connect to close.

Every other module asks the :class:`Engine` for what it needs (an image's facts, a tag, a build
stream, a throw-away container's output, an export) and never sees docker-py, so that failures
become clear messages in one place and another engine could take its place.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any, Self

import docker
import docker.errors
import requests
from docker.models.containers import Container

from buildbox.errors import BuildboxError

#: Every container the toolkit starts carries this label, so that leftovers can be found.
CONTAINER_LABEL = "dev.buildbox.container"

#: What the docker CLI (buildx, import) may see of the environment: an allow-list, so that a
#: release job's registry password, GITHUB_TOKEN or OIDC request token never reaches a build
#: (buildx passes ``--build-arg NAME`` without a value from its own environment).
ALLOWED_VARIABLES = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TERM", "TMPDIR",
        "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "SOURCE_DATE_EPOCH", "SSH_AUTH_SOCK",
        "http_proxy", "https_proxy", "no_proxy", "all_proxy",
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
    }
)  # fmt: skip
ALLOWED_PREFIXES = ("DOCKER_", "BUILDKIT_", "BUILDX_", "LC_")
#: Never passed on, even under an allowed prefix (DOCKER_AUTH_CONFIG, BUILDKIT_..._TOKEN, ...).
SECRET_WORDS = ("TOKEN", "PASSWORD", "PASSWD", "SECRET", "CREDENTIAL", "AUTH", "KEY")


def build_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without what a build has no business seeing (see ALLOWED_VARIABLES)."""
    return {
        name: value
        for name, value in environ.items()
        if (name in ALLOWED_VARIABLES or name.startswith(ALLOWED_PREFIXES))
        and not any(word in name.upper() for word in SECRET_WORDS)
    }


@dataclass(frozen=True)
class LocalImage:
    """What the engine knows of a local image."""

    id: str
    labels: Mapping[str, str]
    #: ``os/architecture`` from the image config.
    platform: str
    #: The digests of its uncompressed layers (``RootFS.Layers``), lowest first.
    diff_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class EngineFacts:
    version: str
    api: str
    #: ``legacy`` (graph drivers such as overlay2) or ``containerd`` (the containerd image store).
    store: str
    driver: str


class Engine:
    """A connection to the Docker engine (``DOCKER_HOST``, else the local socket).

    Use it as a context manager: ``with Engine.connect() as engine: ...``.
    """

    def __init__(self, client: docker.DockerClient, where: str) -> None:
        self._client = client
        self.where = where

    @classmethod
    def connect(cls, timeout: int = 600) -> Engine:
        """A client for the engine, checked to answer; a clear error when it does not."""
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        socket_path = where.removeprefix("unix://")
        if where.startswith("unix://") and not os.path.exists(socket_path):
            # Said here rather than by docker-py, which also leaks the socket of a failed probe.
            raise BuildboxError(
                f"cannot reach the Docker engine at {where}: no such socket. Start it (dockerd, "
                "or `systemctl start docker`) or point DOCKER_HOST at one."
            )
        client = None
        try:
            client = docker.from_env(version="auto", timeout=timeout)
            client.ping()
        except docker.errors.DockerException as error:
            if client is not None:
                client.close()
            raise BuildboxError(
                f"cannot reach the Docker engine at {where}: {_short(error)}. Start it (dockerd, "
                "or `systemctl start docker`) or point DOCKER_HOST at one."
            ) from None
        return cls(client, where)

    def close(self) -> None:
        self._client.close()

    def cli_environment(self) -> dict[str, str]:
        """The environment in which the docker CLI (buildx) talks to this same engine: the
        allowed variables only (no registry secrets or tokens)."""
        return self.cli_environment_for(self.where)

    @staticmethod
    def cli_environment_for(where: str) -> dict[str, str]:
        return {**build_environment(os.environ), "DOCKER_HOST": where}

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def describe(self) -> EngineFacts:
        """The engine's version and image store."""
        version, info = self._client.version(), self._client.info()
        driver_type = dict(map(tuple, info.get("DriverStatus") or [])).get("driver-type", "")
        store = "containerd" if "snapshotter" in str(driver_type) else "legacy"
        return EngineFacts(
            version=str(version.get("Version", "?")),
            api=str(version.get("ApiVersion", "?")),
            store=store,
            driver=str(info.get("Driver", "?")),
        )

    # --- images ---------------------------------------------------------------------------

    def image(self, reference: str) -> LocalImage | None:
        """The local image ``reference`` names, or None when there is none."""
        try:
            found = self._client.images.get(reference)
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as error:
            raise BuildboxError(
                f"the engine cannot look up {reference}: {_explain(error)}"
            ) from None
        attrs = found.attrs
        return LocalImage(
            id=str(found.id),
            labels=dict(found.labels or {}),
            platform=f"{attrs.get('Os', 'linux')}/{attrs.get('Architecture', '')}",
            diff_ids=tuple((attrs.get("RootFS") or {}).get("Layers") or ()),
        )

    def find_image(self, labels: Mapping[str, str]) -> str | None:
        """The id of a local image carrying all of ``labels``, if there is one."""
        wanted = [f"{key}={value}" for key, value in labels.items()]
        images = self._client.images.list(filters={"label": wanted})
        return str(images[0].id) if images else None

    def tag(self, image_id: str, reference: str) -> None:
        repository, _, tag = reference.rpartition(":")
        self._client.api.tag(image_id, repository, tag)

    def pull(self, reference: str, platform: str) -> None:
        try:
            self._client.images.pull(reference, platform=platform)
        except docker.errors.APIError as error:
            raise BuildboxError(
                f"cannot pull the base image {reference}: {_explain(error)}. Is its registry "
                "reachable from the Docker engine (or mirrored)?"
            ) from None

    def save(self, image_id: str) -> Iterator[bytes]:
        """The image as ``docker save`` writes it: a tar stream."""
        yield from self._client.images.get(image_id).save(named=False)

    # --- builds ---------------------------------------------------------------------------

    def classic_build(self, context: IO[bytes], **options: Any) -> Iterator[dict[str, Any]]:
        """The classic builder's messages, decoded, as the engine sends them.

        Failures arrive as ``error`` messages inside a successful response (checked by the
        caller); an API error is raised as :class:`BuildboxError`.
        """
        try:
            yield from self._client.api.build(
                fileobj=context, custom_context=True, decode=True, **options
            )
        except docker.errors.APIError as error:
            raise BuildboxError(_explain(error)) from None

    # --- throw-away containers ------------------------------------------------------------

    def run_script(
        self, image_id: str, script: str, timeout: float, purpose: str, network: str = "none"
    ) -> tuple[str, int | None]:
        """Run ``script`` with /bin/sh in one container: unprivileged, removed after, with no
        network unless ``network="host"`` (package resolution, the only step that needs it).

        The container is labelled ``dev.buildbox.container=<purpose>``. Returns the output
        (stdout and stderr together) and the exit status, None on timeout.
        """
        container = None
        try:
            container = self._client.containers.create(
                image_id,
                entrypoint=["/bin/sh", "-c"],
                command=[script],
                network_mode=network,
                privileged=False,
                security_opt=["no-new-privileges"],
                labels={CONTAINER_LABEL: purpose},
            )
            container.start()
            try:
                status = container.wait(timeout=timeout)
            except requests.exceptions.RequestException:  # the wait timed out
                return "", None
            output = container.logs(stdout=True, stderr=True).decode(errors="replace")
            return output, int(status.get("StatusCode", -1))
        except docker.errors.APIError as error:
            raise BuildboxError(f"the container did not run: {_explain(error)}") from None
        finally:
            if container is not None:
                container.remove(force=True)

    def read_files(self, image_id: str, paths: list[str]) -> dict[str, str | None]:
        """The text of each file in the image (None: absent or not a file), without running it.

        A directory counts as present: its value is the empty string.
        """
        container = self._client.containers.create(
            image_id, network_mode="none", entrypoint=["/bin/sh"], labels={CONTAINER_LABEL: "read"}
        )
        try:
            return {path: _read(container, path) for path in paths}
        finally:
            container.remove(force=True)


def _read(container: Container, path: str) -> str | None:
    try:
        stream, _ = container.get_archive(path)
    except docker.errors.NotFound:
        return None
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
        member = archive.next()
        if member is None:
            return None
        if member.isdir():
            return ""
        extracted = archive.extractfile(member) if member.isfile() else None
        return extracted.read().decode(errors="replace") if extracted else None


def _explain(error: docker.errors.APIError) -> str:
    return str(getattr(error, "explanation", None) or error)


def _short(error: Exception) -> str:
    text = str(error)
    for marker in ("No such file or directory", "Connection refused", "Permission denied"):
        if marker in text:
            return marker.lower()
    return text
