"""Writing files so that readers never see half of one: the one home for atomic writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, content: str | bytes, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``content``: readers see the old file or the new one, never half.

    The data is flushed to disk (fsync) before the rename, so a crash cannot leave an empty or
    partial file under the final name. The file keeps its old permissions (else ``mode``, else
    0644). The parent directory is created if needed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    with tempfile.NamedTemporaryFile(
        "wb", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    ) as temporary:
        temporary.write(data)
        temporary.flush()
        os.fsync(temporary.fileno())
    try:
        keep = path.stat().st_mode & 0o777 if path.exists() else None
        os.chmod(temporary.name, keep if keep is not None else (mode or 0o644))
        os.replace(temporary.name, path)
    except BaseException:
        Path(temporary.name).unlink(missing_ok=True)
        raise
