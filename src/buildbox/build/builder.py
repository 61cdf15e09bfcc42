"""Builders turn a build context into a local image: the ``Builder`` protocol, the classic one."""

from __future__ import annotations

import re
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from buildbox.build.context import BuildContext, write_tar
from buildbox.build.engine import Engine
from buildbox.define.dockerfile import BASE_ARG
from buildbox.errors import BuildboxError

_TAIL_LINES = 25
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: Build-log lines about the engine's own bookkeeping, left out of a failure's tail.
_ENGINE_CHATTER = re.compile(r"^( ---> |Removing intermediate container |Successfully )")


@dataclass(frozen=True)
class BuildRequest:
    context: BuildContext
    base: str
    network: bool
    labels: dict[str, str]
    no_cache: bool = False
    #: The source revision's time (SOURCE_DATE_EPOCH): BuildKit stamps the image with it.
    epoch: int = 0
    #: The names the image gets. BuildKit names it as it exports (only a build that succeeded
    #: exports; the containerd image store keeps no unnamed image); the caller tags it after.
    tags: tuple[str, ...] = ()


class Builder(Protocol):
    """Turns a build context into a local image: :class:`ClassicBuilder`, or BuildKit
    (``build.buildkit``)."""

    def build(self, request: BuildRequest, log: Callable[[str], None]) -> str:
        """Build and return the image id; raise BuildFailedError naming the failing step."""
        ...


class BuildFailedError(BuildboxError):
    """The Dockerfile failed; the message names the step and ends with its last lines."""


class ClassicBuilder:
    """The engine's classic builder (the only builder docker-py drives)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def build(self, request: BuildRequest, log: Callable[[str], None]) -> str:
        box = request.context.box.name
        step = "before the first step"
        tail: deque[str] = deque(maxlen=_TAIL_LINES)
        image_id = None
        with tempfile.TemporaryFile() as context_tar:
            write_tar(request.context, context_tar)
            context_tar.seek(0)
            messages = self.engine.classic_build(
                context_tar,
                rm=True,
                forcerm=True,
                pull=False,
                nocache=request.no_cache,
                network_mode="host" if request.network else "none",
                buildargs={BASE_ARG: request.base},
                labels=request.labels,
                platform=request.context.platform,
            )
            try:
                for message in messages:
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
                        raise BuildFailedError(failure(box, step, tail, str(detail)))
                    image_id = message.get("aux", {}).get("ID", image_id)
                    if found := re.match(r"Successfully built ([0-9a-f]+)", text):
                        image_id = image_id or found.group(1)
            except BuildFailedError:
                raise
            except BuildboxError as error:
                raise BuildFailedError(failure(box, step, tail, str(error))) from None
        if image_id is None:
            raise BuildFailedError(failure(box, step, tail, "the engine reported no image"))
        return str(image_id)


def failure(box: str, step: str, tail: deque[str], detail: str) -> str:
    """The message of a failed build: the step, the engine's reason, the log's last lines."""
    lines = "\n".join(f"  | {line}" for line in tail)
    return (
        f"build of box {box} failed at {step.strip()}:\n  {detail}\nLast lines of the "
        f"build log:\n{lines}\nNo tag was moved: the previous images are unchanged."
    )
