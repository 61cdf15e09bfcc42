"""Where SBOM files go: the committed ones a release writes, and those ``invoke sbom`` writes."""

from __future__ import annotations

from buildbox.define.boxes import Box

#: The committed SBOMs, one per released version and platform: written only by a release.
COMMITTED_DIR = "sbom"
#: Where ``invoke sbom`` writes by default: beside the build outputs, never in COMMITTED_DIR.
OUTPUT_DIR = "dist/sbom"


def filename(box: Box, platform: str) -> str:
    """``v<N>-<os>-<arch>.cdx.json``: one SBOM per box version and platform."""
    return version_filename(box.release_tag, platform)


def version_filename(tag: str, platform: str) -> str:
    return f"{tag}-{platform.replace('/', '-')}.cdx.json"
