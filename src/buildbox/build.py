"""Build a box's image with the Docker engine: hermetic, labelled, tagged only when it succeeded."""

from __future__ import annotations

import json
import platform as host
import re
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import docker.errors

from buildbox.boxes import Box
from buildbox.context import BuildContext, assemble, write_tar
from buildbox.dockerfile import BASE_ARG
from buildbox.errors import BuildboxError
from buildbox.fetch import Fetcher, wanted_for
from buildbox.inputs import inputs_digest
from buildbox.project import Project
from buildbox.refs import is_pinned
from buildbox.registry import DOCKER_LIST, OCI_INDEX, Reference, Registry, credentials_for
from buildbox.source import Revision

LABEL_BOX = "dev.buildbox.box"
LABEL_VERSION = "dev.buildbox.version"
LABEL_INPUTS = "dev.buildbox.inputs-digest"
LABEL_PLATFORM = "dev.buildbox.platform"
#: Set on an image built from a base that is not pinned by digest: it can never be released.
LABEL_FLOATING_BASE = "dev.buildbox.floating-base"

_HOST_PLATFORMS = {"x86_64": "linux/amd64", "amd64": "linux/amd64", "aarch64": "linux/arm64"}
#: The names qemu-user-static registers its binfmt handlers under.
_QEMU_NAMES = {"linux/amd64": "x86_64", "linux/arm64": "aarch64", "linux/arm/v7": "arm"}
_TAIL_LINES = 25
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: Build-log lines about the engine's own bookkeeping, left out of a failure's tail.
_ENGINE_CHATTER = re.compile(r"^( ---> |Removing intermediate container |Successfully )")


def host_platform() -> str:
    machine = host.machine()
    return _HOST_PLATFORMS.get(machine, f"linux/{machine}")


@dataclass(frozen=True)
class BuildRequest:
    context: BuildContext
    base: str
    network: bool
    labels: dict[str, str]
    no_cache: bool = False


class Builder(Protocol):
    """Turns a build context into a local image. The classic builder today; BuildKit later."""

    def build(self, request: BuildRequest, log: Callable[[str], None]) -> str:
        """Build and return the image id; raise BuildFailedError naming the failing step."""
        ...


class BuildFailedError(BuildboxError):
    """The Dockerfile failed; the message names the step and ends with its last lines."""


class ClassicBuilder:
    """The engine's classic builder through docker-py (the only builder docker-py drives)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def build(self, request: BuildRequest, log: Callable[[str], None]) -> str:
        box = request.context.box
        step = "before the first step"
        tail: deque[str] = deque(maxlen=_TAIL_LINES)
        image_id = None
        with tempfile.TemporaryFile() as context_tar:
            write_tar(request.context, context_tar)
            context_tar.seek(0)
            try:
                # decode=True yields each JSON message as the engine sends it: a live build log.
                # Failures arrive as `error` messages inside a successful response, not as
                # exceptions, so every message is inspected.
                for message in self.client.api.build(
                    fileobj=context_tar,
                    custom_context=True,
                    decode=True,
                    rm=True,
                    forcerm=True,
                    pull=False,
                    nocache=request.no_cache,
                    network_mode="host" if request.network else "none",
                    buildargs={BASE_ARG: request.base},
                    labels=request.labels,
                    platform=request.context.platform,
                ):
                    text = _ANSI.sub("", message.get("stream", ""))
                    for line in text.splitlines():
                        if line.startswith("Step "):
                            step = line
                        if line.strip():
                            log(line)
                        if line.strip() and not _ENGINE_CHATTER.match(line):
                            tail.append(line)
                    if "error" in message or "errorDetail" in message:
                        detail = message.get("error") or message["errorDetail"].get("message")
                        raise BuildFailedError(_failure(box, step, tail, str(detail)))
                    image_id = message.get("aux", {}).get("ID", image_id)
                    if found := re.match(r"Successfully built ([0-9a-f]+)", text):
                        image_id = image_id or found.group(1)
            except docker.errors.APIError as error:
                raise BuildFailedError(
                    _failure(box, step, tail, error.explanation or str(error))
                ) from None
        if image_id is None:
            raise BuildFailedError(_failure(box, step, tail, "the engine reported no image"))
        return str(image_id)


def _failure(box: Box, step: str, tail: deque[str], detail: str) -> str:
    lines = "\n".join(f"  | {line}" for line in tail)
    return (
        f"build of box {box.name} failed at {step.strip()}:\n  {detail}\nLast lines of the "
        f"build log:\n{lines}\nNo tag was moved: the previous images are unchanged."
    )


@dataclass(frozen=True)
class BuildResult:
    box: str
    platform: str
    image_id: str
    tags: tuple[str, ...]
    inputs_digest: str
    #: True when an image with the same inputs already existed and nothing was built.
    skipped: bool


def labels(box: Box, platform: str, digest: str, revision: Revision) -> dict[str, str]:
    """The image's labels: ours, and the standard org.opencontainers.image ones."""
    result = {
        LABEL_BOX: box.name,
        LABEL_VERSION: box.version,
        LABEL_INPUTS: digest,
        LABEL_PLATFORM: platform,
        "org.opencontainers.image.title": f"buildbox {box.name}",
        "org.opencontainers.image.description": box.description,
        "org.opencontainers.image.version": box.release_tag,
        "org.opencontainers.image.revision": revision.label,
        "org.opencontainers.image.created": revision.timestamp,
        "org.opencontainers.image.base.name": box.base,
    }
    if is_pinned(box.base):
        result["org.opencontainers.image.base.digest"] = box.base.rsplit("@", 1)[1]
    else:
        result[LABEL_FLOATING_BASE] = "true"
    return result


def local_tags(registry: str, box: Box, platform: str, revision: Revision) -> tuple[str, str]:
    """The release name and the dev tag an image gets locally.

    ``<registry>/<box>:v<N>`` and ``<registry>/<box>-dev:<commit>``; for a platform other than
    this machine's, ``-<os>-<arch>`` is appended to both tags.
    """
    suffix = "" if platform == host_platform() else "-" + platform.replace("/", "-")
    commit = revision.commit[:12] if revision.commit else "local"
    dev = f"{commit}-dirty" if revision.dirty else commit
    repository = f"{registry}/{box.name}"
    return f"{repository}:{box.release_tag}{suffix}", f"{repository}-dev:{dev}{suffix}"


def up_to_date_image(client: Any, box: Box, digest: str) -> str | None:
    """The id of a local image with these inputs and this box version, if there is one."""
    images = client.images.list(
        filters={
            "label": [
                f"{LABEL_BOX}={box.name}",
                f"{LABEL_VERSION}={box.version}",
                f"{LABEL_INPUTS}={digest}",
            ]
        }
    )
    return str(images[0].id) if images else None


def check_emulation(platform: str) -> None:
    """A platform other than this machine's builds only where the kernel can run its binaries."""
    native = host_platform()
    if platform == native:
        return
    arch = _QEMU_NAMES.get(platform, platform.rsplit("/", 1)[-1])
    handler = Path("/proc/sys/fs/binfmt_misc") / f"qemu-{arch}"
    try:
        enabled = handler.read_text().splitlines()[0] == "enabled"
    except (OSError, IndexError):
        enabled = False
    if not enabled:
        raise BuildboxError(
            f"building {platform} on this {native} machine needs emulation, and no binfmt "
            f"handler for {arch} is registered ({handler}). On Debian or Ubuntu: "
            "apt-get install qemu-user-static binfmt-support (then `update-binfmts --enable`)."
        )


def platform_base(base: str, platform: str) -> str:
    """The base image for one platform: a multi-platform index resolved to that platform's image.

    Falls back to ``base`` itself when it is a single image or its registry cannot be asked (the
    engine may then still have it locally, or pull it).
    """
    if not is_pinned(base):
        return base
    try:
        reference = Reference.parse(base)
    except BuildboxError:
        return base
    registry = Registry(reference.host, credentials_for(reference.host), timeout=30)
    try:
        found = registry.get_manifest(reference.repository, reference.digest or "")
    except BuildboxError:
        return base
    finally:
        registry.close()
    if found is None or found[1] not in (OCI_INDEX, DOCKER_LIST):
        return base
    os_name, _, arch = platform.partition("/")
    for entry in json.loads(found[0]).get("manifests", []):
        wanted = entry.get("platform", {})
        if (wanted.get("os"), wanted.get("architecture")) == (os_name, arch.split("/")[0]):
            return f"{reference.name}@{entry['digest']}"
    raise BuildboxError(f"the base image {base} has no {platform} image")


def ensure_base(client: Any, base: str, platform: str, allow_floating: bool) -> str:
    """The base image reference to build ``platform`` from: local, or pulled now."""
    if not is_pinned(base) and not allow_floating:
        raise BuildboxError(
            f"base image {base!r} is not pinned by digest; pin it in box.yaml, or pass "
            "--allow-floating-base for a local experiment (such an image can never be released)"
        )
    chosen = platform_base(base, platform)
    try:
        client.images.get(chosen)
        return chosen
    except docker.errors.ImageNotFound:
        pass
    try:
        client.images.pull(chosen, platform=platform)
    except docker.errors.APIError as error:
        raise BuildboxError(
            f"cannot pull the base image {chosen}: {error.explanation or error}. Is its registry "
            "reachable from the Docker engine (or mirrored)?"
        ) from None
    return chosen


def build_box(
    project: Project,
    box: Box,
    platform: str,
    *,
    client: Any,
    fetcher: Fetcher,
    revision: Revision,
    builder: Builder | None = None,
    log: Callable[[str], None] = print,
    no_cache: bool = False,
    force: bool = False,
    allow_floating_base: bool = False,
) -> BuildResult:
    """Build ``box`` for ``platform`` unless an image with the same inputs exists; tag it."""
    if platform not in box.platforms:
        raise BuildboxError(
            f"box {box.name} does not build for {platform}; its platforms are "
            f"{', '.join(box.platforms)}"
        )
    digest = inputs_digest(box, project.library, project.settings, platform)
    tags = local_tags(project.settings.registry, box, platform, revision)
    # A floating base can change under the same name: never trust an earlier build of it.
    reuse = not (force or no_cache) and is_pinned(box.base)
    existing = up_to_date_image(client, box, digest) if reuse else None
    if existing is None:
        check_emulation(platform)
        base = ensure_base(client, box.base, platform, allow_floating_base)
        fetched = fetcher.fetch_all(wanted_for([box], project.library, platform))
        artifacts = {f.wanted.sha256: f.path for f in fetched}
        context = assemble(box, project.library, project.settings, platform, artifacts)
        request = BuildRequest(
            context, base, box.network, labels(box, platform, digest, revision), no_cache
        )
        image_id = (builder or ClassicBuilder(client)).build(request, log)
    else:
        image_id = existing
    # Tags move only now, after a successful build: a failure leaves every tag where it was.
    for tag in tags:
        repository, _, name = tag.rpartition(":")
        client.api.tag(image_id, repository, name)
    return BuildResult(box.name, platform, image_id, tags, digest, skipped=existing is not None)
