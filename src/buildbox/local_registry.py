"""The registry the toolkit starts itself when none is configured: Debian's docker-registry on
127.0.0.1, its data under the cache directory, reused while it answers, stopped on request.
Only the process this cache directory started counts as it (checked in /proc): another
registry on the port is refused, and a recycled pid is never signalled.

It is what ``buildbox.registry: ""`` means (the main job on a fresh machine, a laptop trying a
release end to end); any other registry (GHCR, ECR, Harbor, ...) is used as configured.

Only its owner uses it: every start generates a random password, kept (0600) in the cache
directory as an htpasswd file for the registry and as a Docker config holding that host's
entry only (``Settings.local_registry_config``), which the toolkit's client and cosign log in
with; anyone else, on this machine too, is refused reads and writes. Deletes are off: a
released tag is never removed through the API (``invoke registry --reset`` empties it).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from buildbox.errors import BuildboxError
from buildbox.files import write_atomically
from buildbox.settings import Settings

BINARY = "docker-registry"
#: Makes the registry's bcrypt password file (apache2-utils, beside docker-registry).
HTPASSWD = "htpasswd"
USERNAME = "buildbox"


def directory(settings: Settings) -> Path:
    return settings.local_registry_dir


def status(host: str) -> int | None:
    """What ``/v2/`` on ``host`` answers (200 open, 401 asking for credentials), or None."""
    try:
        with urllib.request.urlopen(f"http://{host}/v2/", timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, OSError):
        return None


def answers(host: str) -> bool:
    return status(host) in (200, 401)


def ensure_running(settings: Settings) -> str | None:
    """Start the local registry if the settings ask for it and it is not running; its host
    (``127.0.0.1:<port>``), or None when another registry is configured."""
    if not settings.local_registry:
        return None
    host = settings.registry.split("/", 1)[0]
    answer = status(host)
    if answer in (200, 401):
        if _running_pid(settings) is None:
            raise BuildboxError(
                f"{host} answers as a registry, but not the one the toolkit started for this "
                f"cache directory ({directory(settings)}): another checkout's, another cache "
                "directory's or someone else's. Stop it (`invoke registry --stop` where it was "
                "started), or set buildbox.local_registry_port to a free port"
            )
        if answer == 401:
            return host
        _stop_and_wait(settings, host)  # started open, by an older toolkit: restart it closed
    for binary in (BINARY, HTPASSWD):
        if shutil.which(binary) is None:
            raise BuildboxError(
                "buildbox.registry is empty, so the toolkit runs a registry on loopback, which "
                f"needs {binary} (apt-get install docker-registry apache2-utils); or set "
                "buildbox.registry"
            )
    where = directory(settings)
    (where / "data").mkdir(parents=True, exist_ok=True)
    htpasswd = _generate_credentials(settings, host)
    config = where / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {where / 'data'}\n  delete:\n    enabled: false\n"
        f"auth:\n  htpasswd:\n    realm: buildbox-local\n    path: {htpasswd}\n"
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


def _generate_credentials(settings: Settings, host: str) -> Path:
    """A new random password for this start: the registry's htpasswd file (bcrypt, the only
    kind it reads) and the Docker config the toolkit logs in with, both 0600. The htpasswd
    tool hashes it, reading it on stdin (never on a command line); bcrypt's cost adds nothing
    to a random 256-bit password, so the default is kept (each request checks it)."""
    password = secrets.token_urlsafe(32)
    hashed = subprocess.run(
        [HTPASSWD, "-niB", USERNAME], input=password, capture_output=True, text=True,
        check=False, timeout=30,
    )  # fmt: skip
    if hashed.returncode != 0 or not hashed.stdout.startswith(f"{USERNAME}:$2"):
        raise BuildboxError(f"{HTPASSWD} could not hash the local registry's password")
    htpasswd = directory(settings) / "htpasswd"
    _write_secret(htpasswd, hashed.stdout.strip() + "\n")
    token = base64.b64encode(f"{USERNAME}:{password}".encode()).decode()
    config = {"auths": {host: {"auth": token}}}
    _write_secret(settings.local_registry_config / "config.json", json.dumps(config) + "\n")
    return htpasswd


def _write_secret(path: Path, content: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # a new file, so that only 0600 ever holds the secret
    write_atomically(path, content, mode=0o600)


def _stop_and_wait(settings: Settings, host: str) -> None:
    """Stop this cache directory's registry and wait until its port is free."""
    stop(settings)
    deadline = time.monotonic() + 15
    while answers(host):
        if time.monotonic() > deadline:
            raise BuildboxError(f"the local registry on {host} did not stop within 15 s")
        time.sleep(0.1)


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
