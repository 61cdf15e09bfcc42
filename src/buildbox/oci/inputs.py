"""The inputs manifest: every file a release read from outside the repository, escrowed.

An OCI 1.1 artifact manifest (``artifactType`` :data:`INPUTS_TYPE`) whose subject is the
released index or image, and whose layers are the inputs themselves: each a blob in the
registry by its sha256, annotated with where it came from (URL), what it is (kind), its name
and version, and the platforms that used it. ``oras discover`` finds it beside the SBOMs;
``oras pull`` writes each input under its title. Pure functions over plain data: no registry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from buildbox.digests import canonical_json
from buildbox.errors import BuildboxError
from buildbox.oci.documents import (
    CREATED,
    EMPTY_JSON,
    OCI_EMPTY,
    OCI_MANIFEST,
    TITLE,
    Descriptor,
)

INPUTS_TYPE = "application/vnd.buildbox.inputs.v1+json"
#: Every input is stored as the bytes it was fetched as.
INPUT_MEDIA_TYPE = "application/octet-stream"
URL = "dev.buildbox.input.url"
KIND = "dev.buildbox.input.kind"
NAME = "dev.buildbox.input.name"
VERSION = "dev.buildbox.input.version"
PLATFORMS = "dev.buildbox.input.platforms"
BOX = "dev.buildbox.box"
BOX_VERSION = "dev.buildbox.version"
#: component: an artifact of shared/components.yaml (a binary, an installer or a source
#: tarball); package: a locked OS package; index: a Packages index the lock's proof names.
KINDS = ("component", "package", "index")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_UNSAFE_TITLE = re.compile(r"[^A-Za-z0-9._+~-]")


@dataclass(frozen=True)
class Input:
    """One escrowed input: its bytes' sha256 (hex) and size, and what it is."""

    sha256: str
    size: int
    url: str
    kind: str
    name: str
    version: str
    platforms: tuple[str, ...]

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha256}"

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name} {self.version} ({', '.join(self.platforms)})"


def inputs_manifest(
    subject: Descriptor, box: str, version: str, inputs: Iterable[Input], created: str
) -> bytes:
    """The inputs manifest of the release ``subject`` of ``box`` ``version``: one layer per
    input, in sha256 order (the same inputs always give the same digest)."""
    ordered = sorted(inputs, key=lambda each: each.sha256)
    titles = _titles(ordered)
    layers = [
        {
            "mediaType": INPUT_MEDIA_TYPE,
            "digest": each.digest,
            "size": each.size,
            "annotations": {
                TITLE: titles[each.sha256],
                URL: each.url,
                KIND: each.kind,
                NAME: each.name,
                VERSION: each.version,
                PLATFORMS: ",".join(each.platforms),
            },
        }
        for each in ordered
    ]
    return canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": INPUTS_TYPE,
            "config": Descriptor.of(OCI_EMPTY, EMPTY_JSON).as_dict(),
            "layers": layers,
            "subject": subject.as_dict(),
            "annotations": {CREATED: created, BOX: box, BOX_VERSION: version},
        }
    )


def _titles(inputs: list[Input]) -> dict[str, str]:
    """A file name per input for ``oras pull``: the URL's last segment, made safe; the sha256's
    first 12 digits in front where two inputs would share one."""
    names = {each.sha256: _UNSAFE_TITLE.sub("_", each.url.rstrip("/").rsplit("/", 1)[-1])
             for each in inputs}  # fmt: skip
    counts: dict[str, int] = {}
    for name in names.values():
        counts[name] = counts.get(name, 0) + 1
    return {
        sha: name if name and counts[name] == 1 else f"{sha[:12]}-{name}"
        for sha, name in names.items()
    }


def read_inputs(manifest: bytes, subject: str | None = None) -> list[Input]:
    """The inputs an inputs manifest lists; a clear error when it is not one (or, with
    ``subject``, not the one of that digest)."""
    try:
        body = json.loads(manifest)
    except ValueError as error:
        raise BuildboxError(f"the inputs manifest is not JSON ({error})") from None
    if not isinstance(body, dict) or body.get("artifactType") != INPUTS_TYPE:
        raise BuildboxError(f"the manifest is not an inputs manifest ({INPUTS_TYPE})")
    named = (body.get("subject") or {}).get("digest")
    if subject is not None and named != subject:
        raise BuildboxError(f"the inputs manifest is for {named or 'no subject'}, not {subject}")
    layers = body.get("layers")
    if not isinstance(layers, list):
        raise BuildboxError("the inputs manifest has no layers list")
    return [_input(number, layer) for number, layer in enumerate(layers)]


def _input(number: int, layer: Any) -> Input:
    where = f"the inputs manifest's layers[{number}]"
    if not isinstance(layer, dict):
        raise BuildboxError(f"{where} is not an object")
    digest, size = layer.get("digest"), layer.get("size")
    annotations = layer.get("annotations")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise BuildboxError(f"{where}.digest is not a sha256 digest")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise BuildboxError(f"{where}.size is not a size")
    if not isinstance(annotations, dict) or not all(
        isinstance(annotations.get(key), str) for key in (URL, KIND, NAME, VERSION, PLATFORMS)
    ):
        raise BuildboxError(f"{where}.annotations lack {URL}, {KIND}, {NAME}, {VERSION} or "
                            f"{PLATFORMS}")  # fmt: skip
    if annotations[KIND] not in KINDS:
        raise BuildboxError(f"{where}: kind {annotations[KIND]!r} is not one of {', '.join(KINDS)}")
    return Input(
        sha256=digest.removeprefix("sha256:"),
        size=size,
        url=annotations[URL],
        kind=annotations[KIND],
        name=annotations[NAME],
        version=annotations[VERSION],
        platforms=tuple(p for p in annotations[PLATFORMS].split(",") if p),
    )
