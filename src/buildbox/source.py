"""The source revision the boxes are built from (git), and the time it stands for."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


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
    def timestamp(self) -> str:
        return datetime.fromtimestamp(self.epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _git(root: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=False, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def revision(root: Path) -> Revision:
    commit = (_git(root, "rev-parse", "HEAD") or "").strip() or None
    status = _git(root, "status", "--porcelain", "--untracked-files=normal") if commit else None
    committed = (_git(root, "log", "-1", "--format=%ct") or "").strip() if commit else None
    epoch_text = os.environ.get("SOURCE_DATE_EPOCH") or committed or "0"
    try:
        epoch = int(epoch_text)
    except ValueError:
        epoch = 0
    changed = tuple(line[3:] for line in (status or "").splitlines() if line.strip())
    return Revision(commit=commit, dirty=bool(changed), epoch=epoch, changed=changed)
