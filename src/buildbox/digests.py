"""Digests and canonical JSON: the one home for ``sha256:<hex>`` and for bytes that hash stably."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_CHUNK = 1024 * 1024


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_of(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``, as OCI descriptors and labels write a digest."""
    return "sha256:" + sha256_hex(data)


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in blocks (artifacts can be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def canonical_json(document: Any) -> bytes:
    """Sorted keys, no whitespace, ASCII: the same document always gives the same bytes."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
