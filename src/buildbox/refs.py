"""Image references: ``[registry/]repository[:tag][@sha256:digest]``."""

from __future__ import annotations

import re

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def is_pinned(reference: str) -> bool:
    """Whether ``reference`` names exactly one image: it ends in ``@sha256:<64 hex>``."""
    return bool(_DIGEST.search(reference))
