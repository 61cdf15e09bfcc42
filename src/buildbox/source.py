"""The source the boxes are built from: every ``git`` call, and the time a revision stands for."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from buildbox.errors import BuildboxError

#: Overrides the commit time as the build time of everything built (reproducible-builds.org).
EPOCH_VARIABLE = "SOURCE_DATE_EPOCH"


@dataclass(frozen=True)
class Revision:
    """``commit`` is None outside a git checkout; ``dirty`` means uncommitted changes."""

    commit: str | None
    dirty: bool
    #: Seconds since the epoch: SOURCE_DATE_EPOCH if set, else the commit's time, else 0.
    epoch: int
    #: The paths with uncommitted changes (as `git status --porcelain` names them).
    changed: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """What labels and records show: the commit, marked when the tree had changes."""
        if self.commit is None:
            return "unknown"
        return f"{self.commit}-dirty" if self.dirty else self.commit

    @property
    def short(self) -> str:
        """What a dev tag shows: 12 hex of the commit, ``-dirty`` with changes, or ``local``."""
        if self.commit is None:
            return "local"
        return f"{self.commit[:12]}-dirty" if self.dirty else self.commit[:12]

    @property
    def timestamp(self) -> str:
        return timestamp(self.epoch)


def timestamp(epoch: int) -> str:
    """``epoch`` as the RFC 3339 UTC time labels, configs and SBOMs carry."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch_override() -> int | None:
    """SOURCE_DATE_EPOCH as a number of seconds, None when unset; a bad value is an error."""
    text = os.environ.get(EPOCH_VARIABLE, "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise BuildboxError(
            f"{EPOCH_VARIABLE}={text!r} is not a whole number of seconds since 1970; "
            f"unset it or set it to e.g. $(git log -1 --format=%ct)"
        )
    return int(text)


def _git(root: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=False, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def revision(root: Path) -> Revision:
    """The checkout at ``root``: its commit, whether it has changes, and its epoch."""
    commit = (_git(root, "rev-parse", "HEAD") or "").strip() or None
    status = _git(root, "status", "--porcelain", "--untracked-files=normal") if commit else None
    changed = tuple(line[3:] for line in (status or "").splitlines() if line.strip())
    override = epoch_override()
    epoch = override if override is not None else (commit_time(root, commit) if commit else 0)
    return Revision(commit=commit, dirty=bool(changed), epoch=epoch, changed=changed)


def origin_url(root: Path) -> str | None:
    """Where the repository at ``root`` lives: its ``origin`` remote's URL, without credentials
    (GitHub Actions' checkout may embed a token), or None without one."""
    url = (_git(root, "remote", "get-url", "origin") or "").strip()
    if not url:
        return None
    scheme, separator, rest = url.partition("://")
    if separator and "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]  # user:token@host/... -> host/...
    return f"{scheme}{separator}{rest}" if separator else url


def commit_time(root: Path, commit: str) -> int:
    """The committer time of ``commit`` (0 when git cannot tell)."""
    text = (_git(root, "log", "-1", "--format=%ct", commit) or "").strip()
    return int(text) if text.isdigit() else 0


def export_tree(root: Path, commit: str, into: Path) -> None:
    """The tree of ``commit`` (from the git repository at ``root``) written to ``into``."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(root), "archive", "--format=tar", commit],
            capture_output=True,
            check=True,
            timeout=300,
        ).stdout
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", b"") or b""
        raise BuildboxError(
            f"cannot read commit {commit} from git: {detail.decode(errors='replace').strip()}"
        ) from None
    with tarfile.open(fileobj=io.BytesIO(archive)) as tree:
        tree.extractall(into, filter="data")
