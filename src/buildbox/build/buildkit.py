"""The BuildKit builder, driven through ``docker buildx build``.

docker-py drives only the classic builder, and BuildKit's own API (gRPC, with sessions for the
context) has no well-kept Python client; the buildx CLI is how Docker itself drives BuildKit, on
the engine's embedded BuildKit (the ``docker`` driver) or on a remote one (``remote``,
``kubernetes``, ``docker-container`` drivers), so the toolkit runs it and reads its plain
progress output. The build context goes in as a tar stream on stdin, as with the classic builder.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from collections import deque
from collections.abc import Callable
from pathlib import Path

from buildbox.build.builder import BuildFailedError, BuildRequest, failure
from buildbox.build.context import write_tar
from buildbox.build.engine import Engine
from buildbox.define.dockerfile import BASE_ARG
from buildbox.errors import BuildboxError
from buildbox.oci.refs import is_pinned

_TAIL_LINES = 25
#: ``#7 [components 3/3] RUN sh /buildbox/install.sh``: a build step starts.
_STEP = re.compile(r"^#(\d+) (\[[^\]]*\d+/\d+\] .*)$")
#: ``#7 0.123 output``: a line a step printed.
_OUTPUT = re.compile(r"^#(\d+) \d+\.\d+ (.*)$")
#: ``#7 ERROR: process ... did not complete successfully: exit code: 3``.
_ERROR = re.compile(r"^#(\d+) ERROR: (.*)$")


def docker_cli() -> str:
    """The docker CLI, which runs buildx; a clear error when it is not installed."""
    found = shutil.which("docker")
    if found is None:
        raise BuildboxError(
            "the BuildKit builder needs the docker CLI with buildx (Debian: apt-get install "
            "docker-cli docker-buildx); or set buildbox.builder: classic in invoke.yaml"
        )
    return found


@functools.cache
def buildx_version(cli: str, host: str) -> str | None:
    """``docker buildx version`` (e.g. ``github.com/docker/buildx 0.13.1 ...``), None without it."""
    try:
        found = subprocess.run(
            [cli, "buildx", "version"], capture_output=True, text=True, timeout=30, check=False,
            env=Engine.cli_environment_for(host),
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return found.stdout.strip() if found.returncode == 0 else None


def builder_driver(engine: Engine, instance: str | None) -> str:
    """The buildx driver of ``instance`` (the current builder when None): docker, remote, ..."""
    command = [docker_cli(), "buildx", "inspect", *([instance] if instance else [])]
    found = subprocess.run(
        command, capture_output=True, text=True, timeout=60, check=False,
        env=engine.cli_environment(),
    )  # fmt: skip
    if found.returncode != 0:
        raise BuildboxError(
            f"no buildx builder {instance or '(default)'}: {found.stderr.strip()[:300]} "
            "(`docker buildx ls` lists them)"
        )
    match = re.search(r"^Driver:\s*(\S+)", found.stdout, re.MULTILINE)
    return match.group(1) if match else "docker"


#: What BuildKit reports when another build created the same image name first.
_NAME_RACE = "already exists"


class BuildKitBuilder:
    """BuildKit through ``docker buildx build``; ``instance`` names a buildx builder."""

    def __init__(self, engine: Engine, instance: str | None = None) -> None:
        self.engine = engine
        self.instance = instance or None

    def command(self, request: BuildRequest, iidfile: Path, driver: str) -> list[str]:
        """The ``docker buildx build`` arguments for ``request`` (context on stdin)."""
        if driver != "docker" and not is_pinned(request.base):
            # Another machine's BuildKit sees no local image: it resolves any name (an image
            # id too) on a registry, a short one on Docker Hub, where anyone may publish it.
            raise BuildboxError(
                f"{request.context.box.name}: the base {request.base} is not pinned by digest, "
                f"and buildx builder {self.instance} (driver {driver}) would look it up on a "
                "registry; build with the engine's own BuildKit (no buildbox.buildx_builder) "
                "or the classic builder (a bootstrapped base is a local image)"
            )
        command = [
            docker_cli(), "buildx", "build", "-",
            "--progress=plain",
            "--platform", request.context.platform,
            "--network", "host" if request.network else "none",
            "--build-arg", f"{BASE_ARG}={request.base}",
            # BuildKit sets image and history times from it (normalisation clamps the rest).
            "--build-arg", f"SOURCE_DATE_EPOCH={request.epoch}",
            # Plain images, as the classic builder makes: no attestation manifests beside them.
            "--provenance=false", "--sbom=false",
            "--iidfile", str(iidfile),
        ]  # fmt: skip
        for tag in request.tags:
            command += ["--tag", tag]
        for key, value in sorted(request.labels.items()):
            command += ["--label", f"{key}={value}"]
        if request.no_cache:
            command.append("--no-cache")
        if self.instance:
            command += ["--builder", self.instance]
        if driver != "docker":
            # Another machine's BuildKit: the image must come back into this engine.
            command.append("--load")
        return command

    def build(self, request: BuildRequest, log: Callable[[str], None]) -> str:
        try:
            return self._build(request, log)
        except BuildFailedError as error:
            # Two builds of the same box and commit on one engine (two jobs on one machine)
            # can both name the image at the same moment; the image store then refuses the
            # later name. Its content is the same: building once more names it as usual.
            if _NAME_RACE not in str(error) or not request.tags:
                raise
            log(f"another build named {request.tags[0]} at the same moment; building again")
            return self._build(request, log)

    def _build(self, request: BuildRequest, log: Callable[[str], None]) -> str:
        box = request.context.box.name
        driver = builder_driver(self.engine, self.instance) if self.instance else "docker"
        steps: dict[str, str] = {}
        tails: dict[str, deque[str]] = {}
        failed: str | None = None
        detail = ""
        with tempfile.TemporaryDirectory(prefix="buildbox-buildkit-") as scratch:
            iidfile = Path(scratch) / "iid"
            context = Path(scratch) / "context.tar"
            with context.open("wb") as stream:
                write_tar(request.context, stream)
            with (
                context.open("rb") as stdin,
                subprocess.Popen(
                    self.command(request, iidfile, driver), stdin=stdin, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, text=True, errors="replace",
                    env=self.engine.cli_environment(),
                ) as process,
            ):  # fmt: skip
                assert process.stdout is not None
                for raw in process.stdout:
                    line = raw.rstrip("\n")
                    if line.strip():
                        log(line)
                    if started := _STEP.match(line):
                        steps[started.group(1)] = started.group(2)
                        tails.setdefault(started.group(1), deque(maxlen=_TAIL_LINES))
                    elif output := _OUTPUT.match(line):
                        tails.setdefault(output.group(1), deque(maxlen=_TAIL_LINES)).append(
                            output.group(2)
                        )
                    elif error := _ERROR.match(line):
                        failed, detail = error.group(1), error.group(2)
                    elif line.startswith("ERROR: ") and not detail:
                        detail = line.removeprefix("ERROR: ")
                code = process.wait()
            image_id = iidfile.read_text().strip() if iidfile.is_file() else ""
        if code != 0 or not image_id:
            step = steps.get(failed or "", "before the first step")
            tail = tails.get(failed or "", deque())
            reason = detail or f"docker buildx build exited {code} and reported no image"
            raise BuildFailedError(failure(box, step, tail, reason))
        # The iidfile names the image config; the containerd image store's image ids are
        # manifest digests. The image's name says which one the engine calls it.
        named = self.engine.image(request.tags[0]) if request.tags else None
        return named.id if named is not None else image_id
