"""The registry the toolkit starts itself when none is configured: Debian's docker-registry on
127.0.0.1, its data under the cache directory, reused while it answers, stopped on request.
Only the process this cache directory started counts as it (checked in /proc): another
registry on the port is refused, and a recycled pid is never signalled.

It is what ``buildbox.registry: ""`` means (the main job on a fresh machine, a laptop trying a
release end to end); any other registry (GHCR, ECR, Harbor, ...) is used as configured.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

from buildbox.errors import BuildboxError
from buildbox.settings import Settings

BINARY = "docker-registry"


def directory(settings: Settings) -> Path:
    return settings.cache_dir / "registry"


def answers(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/v2/", timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def ensure_running(settings: Settings) -> str | None:
    """Start the local registry if the settings ask for it and it is not running; its host
    (``127.0.0.1:<port>``), or None when another registry is configured."""
    if not settings.local_registry:
        return None
    host = settings.registry.split("/", 1)[0]
    if answers(host):
        if _running_pid(settings) is not None:
            return host
        raise BuildboxError(
            f"{host} answers as a registry, but not the one the toolkit started for this cache "
            f"directory ({directory(settings)}): another checkout's, another cache directory's "
            "or someone else's. Stop it (`invoke registry --stop` where it was started), or set "
            "buildbox.local_registry_port to a free port"
        )
    if shutil.which(BINARY) is None:
        raise BuildboxError(
            "buildbox.registry is empty, so the toolkit runs a registry on loopback, which needs "
            f"Debian's {BINARY} (apt-get install docker-registry); or set buildbox.registry"
        )
    where = directory(settings)
    (where / "data").mkdir(parents=True, exist_ok=True)
    config = where / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {where / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {host}\n"
    )
    # Started as a daemon of its own (a new session, no Popen object to outlive): later
    # commands reuse it while it answers.
    log = where / "registry.log"
    pid = os.posix_spawnp(
        BINARY,
        [BINARY, "serve", str(config)],
        os.environ,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )
    (where / "pid").write_text(str(pid))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            tail = log.read_text(errors="replace")[-600:]
            raise BuildboxError(f"the local registry on {host} did not start: {tail}")
        if answers(host):
            return host
        time.sleep(0.1)
    raise BuildboxError(f"the local registry on {host} did not answer within 15 s")


def reset(settings: Settings) -> None:
    """Stop the local registry and delete everything it holds (a new start is empty)."""
    stop(settings)
    shutil.rmtree(directory(settings), ignore_errors=True)


def stop(settings: Settings) -> bool:
    """Stop the local registry this toolkit started (its data stays); whether one ran."""
    pid = _running_pid(settings)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pid = None  # it ended just now
    (directory(settings) / "pid").unlink(missing_ok=True)
    return pid is not None


def _running_pid(settings: Settings) -> int | None:
    """The pid of the registry this cache directory started, if that process still runs: the
    recorded pid whose command line serves this directory's config (a pid can be recycled)."""
    where = directory(settings)
    try:
        pid = int((where / "pid").read_text())
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if str(where / "config.yml").encode() in command else None
