"""CycloneDX 1.6 SBOMs of buildbox images, built with cyclonedx-python-lib, deterministic.

The same image and inputs give a byte-identical file: the serial number is a UUID derived from the
inputs, the timestamp is the source revision's time (or SOURCE_DATE_EPOCH), every bom-ref is
explicit, and the library keeps components in a sorted order. Every SBOM is validated against the
CycloneDX 1.6 schema before it is written.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cyclonedx.model import (
    ExternalReference,
    ExternalReferenceType,
    HashAlgorithm,
    HashType,
    Property,
    XsUri,
)
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import LicenseExpression
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from buildbox.boxes import Box
from buildbox.build import LABEL_INPUTS
from buildbox.errors import BuildboxError
from buildbox.files import write_atomically
from buildbox.inputs import box_components
from buildbox.packages import OsPackage, inventory
from buildbox.project import Project
from buildbox.source import Revision
from buildbox.verify import Report, require_verified

#: Property names (CycloneDX properties are free-form; a prefix keeps ours apart).
PREFIX = "buildbox:"
_SERIAL_NAMESPACE = uuid.UUID("5b0c8c1e-2f5e-4c38-9d3a-6a4f6f0f2b7e")


@dataclass(frozen=True)
class ImageFacts:
    """What is known of the image: its local id, and its registry digest once published."""

    image_id: str
    platform: str
    inputs_digest: str
    repository: str | None = None
    digest: str | None = None


def sbom_path(project: Project, box: Box, platform: str) -> Path:
    """Where the committed SBOM of the box's current version lives, for one platform."""
    name = f"{box.release_tag}-{platform.replace('/', '-')}.cdx.json"
    return project.settings.root / "sbom" / box.name / name


def build_bom(
    project: Project,
    box: Box,
    facts: ImageFacts,
    report: Report,
    packages: Iterable[OsPackage],
    revision: Revision,
) -> Bom:
    """The SBOM of one platform image of ``box``; refuses versions verify did not see."""
    components = box_components(box, project.library)
    seen = {probe.component: probe for probe in report.probes}
    disagreements = [
        f"{c.name}: pinned {c.version}, but verify saw "
        f"{(seen[c.name].output.splitlines() or ['nothing'])[0]!r} (expected {c.probe.expect!r})"
        if c.name in seen
        else f"{c.name}: verify did not probe it"
        for c in components
        if c.name not in seen or not seen[c.name].ok
    ]
    if disagreements:
        raise BuildboxError(
            "the image does not contain the pinned versions, so no SBOM is written:\n  "
            + "\n  ".join(disagreements)
        )

    image = _image_component(box, facts, revision)
    parts = [_base_component(box.base)]
    for component in components:
        artifact = component.artifact(facts.platform)
        assert artifact is not None  # the box was checked for every platform it builds
        probe = seen[component.name]
        parts.append(
            Component(
                type=ComponentType.APPLICATION,
                name=component.name,
                version=component.version,
                bom_ref=f"component:{component.name}@{component.version}",
                description=component.description or None,
                purl=PackageURL.from_string(component.purl),
                licenses=[LicenseExpression(component.license)],
                hashes=[HashType(alg=HashAlgorithm.SHA_256, content=artifact.sha256)],
                external_references=[
                    ExternalReference(
                        type=ExternalReferenceType.DISTRIBUTION,
                        url=XsUri(artifact.url),
                        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=artifact.sha256)],
                    )
                ],
                properties=[
                    Property(name=f"{PREFIX}install-location", value=component.install.dest),
                    Property(name=f"{PREFIX}sha256-source", value=artifact.sha256_source),
                    Property(name=f"{PREFIX}probe", value=probe.command),
                    Property(name=f"{PREFIX}probe-output", value=probe.output.splitlines()[0]),
                ],
            )
        )
    for package in packages:
        parts.append(
            Component(
                type=ComponentType.LIBRARY if package.kind != "rpm" else ComponentType.APPLICATION,
                name=package.name,
                version=package.version,
                bom_ref=f"os:{package.purl.to_string()}",
                purl=package.purl,
                licenses=[LicenseExpression(package.license)] if package.license else [],
                properties=[Property(name=f"{PREFIX}package-manager", value=package.kind)],
            )
        )
    seed = f"{box.name}|{box.version}|{facts.platform}|{facts.inputs_digest}|{facts.image_id}"
    bom = Bom(
        serial_number=uuid.uuid5(_SERIAL_NAMESPACE, seed),
        metadata=BomMetaData(
            component=image, timestamp=datetime.fromtimestamp(revision.epoch, UTC)
        ),
        components=parts,
        properties=[
            Property(name=f"{PREFIX}box", value=box.name),
            Property(name=f"{PREFIX}box-version", value=box.version),
            Property(name=f"{PREFIX}platform", value=facts.platform),
            Property(name=f"{PREFIX}inputs-digest", value=facts.inputs_digest),
            Property(name=f"{PREFIX}source-revision", value=revision.label),
        ],
    )
    bom.register_dependency(image, parts)
    return bom


def _image_component(box: Box, facts: ImageFacts, revision: Revision) -> Component:
    properties = [
        Property(name=f"{PREFIX}image-id", value=facts.image_id),
        Property(name=f"{PREFIX}platform", value=facts.platform),
    ]
    purl = None
    hashes = []
    if facts.digest:
        hashes = [HashType(alg=HashAlgorithm.SHA_256, content=facts.digest.removeprefix("sha256:"))]
        purl = _oci_purl(facts.repository or box.name, facts.digest, facts.platform)
        properties.append(Property(name=f"{PREFIX}image-digest", value=facts.digest))
    return Component(
        type=ComponentType.CONTAINER,
        name=f"buildbox-{box.name}",
        version=box.release_tag,
        bom_ref=f"image:{box.name}@{box.release_tag}:{facts.platform}",
        description=box.description or None,
        purl=purl,
        hashes=hashes,
        properties=properties,
    )


def _base_component(base: str) -> Component:
    name, _, digest = base.partition("@")
    repository = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
    return Component(
        type=ComponentType.CONTAINER,
        name=repository,
        version=digest or name,
        bom_ref=f"base:{base}",
        purl=_oci_purl(repository, digest) if digest else None,
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=digest.removeprefix("sha256:"))]
        if digest
        else [],
        properties=[Property(name=f"{PREFIX}role", value="base image")],
    )


def _oci_purl(repository: str, digest: str, platform: str | None = None) -> PackageURL:
    """``pkg:oci/<name>@<digest>?repository_url=<registry/repository>`` (the purl spec's form)."""
    qualifiers = {"repository_url": repository}
    if platform:
        qualifiers["arch"] = platform.split("/", 1)[1]
    return PackageURL(
        type="oci", name=repository.rsplit("/", 1)[-1], version=digest, qualifiers=qualifiers
    )


def describe_image(
    client: Any, project: Project, box: Box, image_ref: str, revision: Revision
) -> str:
    """Verify the image, inventory its OS packages, and render its SBOM (validated)."""
    report = require_verified(client, project, box, image_ref, "no SBOM is written")
    image = client.images.get(image_ref)
    facts = ImageFacts(
        image_id=image.id,
        platform=report.platform,
        inputs_digest=image.labels.get(LABEL_INPUTS, ""),
        repository=None,
        digest=None,
    )
    bom = build_bom(project, box, facts, report, inventory(client, image.id), revision)
    return render(bom)


def render(bom: Bom) -> str:
    """The SBOM as CycloneDX 1.6 JSON, validated against the schema."""
    text = JsonV1Dot6(bom).output_as_string(indent=2) + "\n"
    validate(text)
    return text


def validate(text: str) -> None:
    """Raise unless ``text`` is valid CycloneDX 1.6 JSON."""
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    if errors:
        listed = errors if isinstance(errors, Iterable) else [errors]
        details = "; ".join(str(getattr(e, "data", e))[:200] for e in listed)
        raise BuildboxError(
            f"the SBOM is not valid CycloneDX 1.6, so it was not written: {details}"
        )


def write(path: Path, text: str) -> None:
    """Validate, then write ``path`` atomically (never a half-written or invalid SBOM)."""
    validate(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, text)


# --- comparing two SBOMs ---------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    kind: str  # added, removed, version, hash
    name: str
    purl_type: str
    old: str
    new: str


def load(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BuildboxError(f"no SBOM at {path}") from None
    except (OSError, ValueError) as error:
        raise BuildboxError(f"{path} is not a readable JSON SBOM: {error}") from None
    return data


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Components added, removed, or whose version or sha256 changed, between two SBOMs."""
    before, after = _index(old), _index(new)
    changes = []
    for key in sorted(before.keys() | after.keys()):
        a, b = before.get(key), after.get(key)
        if a is None and b is not None:
            changes.append(Change("added", key[1], key[0], "", b["version"]))
        elif b is None and a is not None:
            changes.append(Change("removed", key[1], key[0], a["version"], ""))
        elif a is not None and b is not None:
            if a["version"] != b["version"]:
                changes.append(Change("version", key[1], key[0], a["version"], b["version"]))
            elif a["sha256"] != b["sha256"]:
                changes.append(Change("hash", key[1], key[0], a["sha256"], b["sha256"]))
    return changes


def _index(bom: dict[str, Any]) -> dict[tuple[str, str], dict[str, str]]:
    """Components by identity: (purl type, name with namespace and arch), version left out."""
    index = {}
    for component in bom.get("components", []):
        purl = component.get("purl")
        parsed = PackageURL.from_string(purl) if purl else None
        kind = parsed.type if parsed else component.get("type", "")
        name = component.get("name", "")
        if parsed and parsed.namespace:
            name = f"{parsed.namespace}/{name}"
        if parsed and isinstance(parsed.qualifiers, dict) and parsed.qualifiers.get("arch"):
            name = f"{name} ({parsed.qualifiers['arch']})"
        hashes = [h.get("content", "") for h in component.get("hashes", [])]
        index[(kind, name)] = {
            "version": str(component.get("version", "")),
            "sha256": hashes[0] if hashes else "",
        }
    return index
