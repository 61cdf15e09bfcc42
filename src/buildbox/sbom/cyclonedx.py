"""The describe stage: the CycloneDX 1.6 SBOM of a built, verified image, made with
cyclonedx-python-lib, deterministic, and validated once (an :class:`Sbom` is valid by making).

The same image and inputs give a byte-identical file: the serial number is a UUID derived from the
inputs, the timestamp is the source revision's time (or SOURCE_DATE_EPOCH), every bom-ref is
explicit, and the library keeps components in a sorted order. Every SBOM is validated against the
CycloneDX 1.6 schema before it is written.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

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
from cyclonedx.model.dependency import Dependable, Dependency
from cyclonedx.model.license import LicenseExpression
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from buildbox.build.build import Built
from buildbox.build.engine import Engine
from buildbox.build.labels import LABEL_INPUTS
from buildbox.define.boxes import Box
from buildbox.define.inputs import box_components
from buildbox.define.library import Component as LibraryComponent
from buildbox.define.project import Project
from buildbox.digests import file_sha256
from buildbox.errors import BuildboxError
from buildbox.files import write_atomically
from buildbox.oci.image import PreparedImage
from buildbox.oci.refs import Reference
from buildbox.sbom import validation
from buildbox.sbom.packages import OsPackage, inventory
from buildbox.sbom.paths import COMMITTED_DIR, OUTPUT_DIR, filename
from buildbox.source import Revision
from buildbox.verify import Report

#: Property names (CycloneDX properties are free-form; a prefix keeps ours apart).
PREFIX = "buildbox:"
_SERIAL_NAMESPACE = uuid.UUID("5b0c8c1e-2f5e-4c38-9d3a-6a4f6f0f2b7e")


def _with_indexed_dependencies(bom: Bom) -> Bom:
    """``bom``, finding an already registered dependency by a set look-up.

    The library's ``register_dependency`` scans every entry, and its own ``validate()`` (run by
    every serialisation) calls it once per component: quadratic in the packages of an image, even
    with every entry made up front as build_bom does (so in 11.12.0: CycloneDX/cyclonedx-python-lib
    issue 1006). Rendering 2,000 packages took 1.6 s with the library's method and 1.0 s with
    this, 8,000 packages 22 s and 4.3 s (medians of 5, the same bytes). Registering a known target
    with no new dependencies changes nothing, so such calls return at once; everything else goes
    to the library. Set on this one object (a subclass would not be serialised: the library's
    serialiser knows ``Bom`` itself).
    """
    library_method = bom.register_dependency
    known: tuple[int, set[str]] = (-1, set())

    def register_dependency(
        target: Dependable, depends_on: Iterable[Dependable] | None = None
    ) -> None:
        nonlocal known
        if depends_on is None:
            if known[0] != len(bom.dependencies):
                known = (len(bom.dependencies), {str(d.ref.value) for d in bom.dependencies})
            if target.bom_ref.value in known[1]:
                return
        library_method(target, depends_on)

    bom.register_dependency = register_dependency  # type: ignore[method-assign]
    return bom


@dataclass(frozen=True)
class ImageFacts:
    """What is known of the image: its local id, and its registry digest once published."""

    image_id: str
    platform: str
    inputs_digest: str
    repository: str | None = None
    digest: str | None = None
    #: The base's digest as the image's label records it (a bootstrapped base's content).
    base_digest: str | None = None


def output_path(project: Project, box: Box, platform: str, asked: str | None) -> Path:
    """Where ``invoke sbom`` writes: ``asked``, else under dist/sbom/; never the committed sbom/,
    which belongs to `invoke release` (audit compares it with the registry)."""
    root = project.settings.root
    default = root / OUTPUT_DIR / box.name / filename(box, platform)
    path = Path(asked).resolve() if asked else default
    if path.is_relative_to(root / COMMITTED_DIR):
        raise BuildboxError(
            f"{project.settings.shown(path)} is in {COMMITTED_DIR}/, which only `invoke release` "
            f"writes (the committed SBOMs that `invoke audit` checks); choose another --output"
        )
    return path


def build_bom(
    project: Project,
    box: Box,
    facts: ImageFacts,
    report: Report,
    packages: Iterable[OsPackage],
    revision: Revision,
) -> Bom:
    """The SBOM of one platform image of ``box``; refuses versions verify did not see."""
    components = box_components(box, project.library, facts.platform)
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
    parts = [_base_component(box.base, facts.base_digest, bootstrapped=box.bootstrap is not None)]
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
                    _download(artifact.url, artifact.sha256, component.built_from_source)
                ],
                properties=[
                    Property(name=f"{PREFIX}install-location", value=component.install.dest),
                    Property(name=f"{PREFIX}sha256-source", value=artifact.sha256_source),
                    *_source_build(component, project),
                    Property(name=f"{PREFIX}probe", value=probe.command),
                    Property(name=f"{PREFIX}probe-output", value=probe.output.splitlines()[0]),
                ],
            )
        )
    locked = {(p.name, p.version, p.architecture): p for p in box.locked(facts.platform)}
    for package in packages:
        pin = locked.get((package.name, package.version, package.arch))
        properties = [Property(name=f"{PREFIX}package-manager", value=package.kind)]
        if pin is not None:
            properties.append(Property(name=f"{PREFIX}locked", value="packages.lock"))
        parts.append(
            Component(
                type=ComponentType.LIBRARY if package.kind != "rpm" else ComponentType.APPLICATION,
                name=package.name,
                version=package.version,
                bom_ref=f"os:{package.purl.to_string()}",
                purl=package.purl,
                licenses=[LicenseExpression(package.license)] if package.license else [],
                hashes=[HashType(alg=HashAlgorithm.SHA_256, content=pin.sha256)] if pin else [],
                external_references=[_download(pin.url, pin.sha256)] if pin else [],
                properties=properties,
            )
        )
    seed = f"{box.name}|{box.version}|{facts.platform}|{facts.inputs_digest}|{facts.image_id}"
    bom = Bom(
        serial_number=uuid.uuid5(_SERIAL_NAMESPACE, seed),
        metadata=BomMetaData(
            component=image, timestamp=datetime.fromtimestamp(revision.epoch, UTC)
        ),
        components=parts,
        # What bom.register_dependency(image, parts) records, set at once: that method scans
        # every earlier entry, which is quadratic in the number of packages.
        dependencies=[
            Dependency(ref=image.bom_ref, dependencies=[Dependency(ref=p.bom_ref) for p in parts]),
            *(Dependency(ref=p.bom_ref) for p in parts),
        ],
        properties=[
            Property(name=f"{PREFIX}box", value=box.name),
            Property(name=f"{PREFIX}box-version", value=box.version),
            Property(name=f"{PREFIX}platform", value=facts.platform),
            Property(name=f"{PREFIX}inputs-digest", value=facts.inputs_digest),
            Property(name=f"{PREFIX}source-revision", value=revision.label),
        ],
    )
    return _with_indexed_dependencies(bom)


def _download(url: str, sha256: str, source: bool = False) -> ExternalReference:
    """Where a pinned file (a build, or the source a component was built from) was downloaded
    from, with its sha256."""
    kind = (
        ExternalReferenceType.SOURCE_DISTRIBUTION if source else ExternalReferenceType.DISTRIBUTION
    )
    return ExternalReference(
        type=kind,
        url=XsUri(url),
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=sha256)],
    )


def _source_build(component: LibraryComponent, project: Project) -> list[Property]:
    """For a component built from source in the box: that it was, and with which recipe."""
    if not component.built_from_source:
        return []
    recipe = project.settings.build_recipes_dir / f"{component.name}.sh"
    return [
        Property(name=f"{PREFIX}built-from-source", value="true"),
        Property(name=f"{PREFIX}build-recipe", value=project.settings.shown(recipe)),
        Property(name=f"{PREFIX}build-recipe-sha256", value=file_sha256(recipe)),
    ]


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


def _base_component(
    base: str, content: str | None = None, *, bootstrapped: bool = False
) -> Component:
    if bootstrapped or base.startswith("bootstrap:"):
        known = content or ""
        return Component(
            type=ComponentType.OPERATING_SYSTEM,
            name=base,
            version=known or "unknown",
            bom_ref=f"base:{base}",
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=known.removeprefix("sha256:"))]
            if known
            else [],
            properties=[
                Property(name=f"{PREFIX}role", value="base, bootstrapped from packages.lock"),
                Property(name=f"{PREFIX}base-content", value="sha256 of the root filesystem"),
            ],
        )
    reference = Reference.parse(base, default_host=True)
    # The image built on, as its label says: a multi-platform base's platform image.
    digest = content or reference.digest
    return Component(
        type=ComponentType.CONTAINER,
        name=reference.name,
        version=digest or reference.tag or "latest",
        bom_ref=f"base:{base}",
        purl=_oci_purl(reference.name, digest) if digest else None,
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


@dataclass(frozen=True)
class Sbom:
    """One platform image's SBOM, CycloneDX 1.6 JSON, validated once: make one with
    :meth:`checked` (or :func:`render`), never directly."""

    platform: str
    text: str

    @classmethod
    def checked(cls, platform: str, text: str) -> Sbom:
        """``text`` as an SBOM; an error unless it is valid CycloneDX 1.6."""
        validate(text)
        return cls(platform, text)

    @property
    def data(self) -> bytes:
        return self.text.encode()


def describe(
    engine: Engine,
    project: Project,
    box: Box,
    built: Built,
    report: Report,
    revision: Revision,
    prepared: PreparedImage | None = None,
    repository: str | None = None,
) -> Sbom:
    """The SBOM of ``built``, which ``report`` verified: its OS packages read from the image.

    ``prepared`` (the normalised image a release publishes to ``repository``) makes the SBOM
    name the image by the digests it is published under; without it, by the local image id.
    """
    facts = ImageFacts(
        # The normalised config's digest: the same for every build of these inputs.
        image_id=prepared.config_digest if prepared else built.image_id,
        platform=built.platform,
        inputs_digest=built.image.labels.get(LABEL_INPUTS, ""),
        repository=repository,
        digest=prepared.digest if prepared else None,
        base_digest=built.base_digest,
    )
    packages = inventory(engine, built.image_id, report.dpkg_status)
    return render(build_bom(project, box, facts, report, packages, revision), built.platform)


def render(bom: Bom, platform: str) -> Sbom:
    """The SBOM as CycloneDX 1.6 JSON, validated against the schema."""
    return Sbom.checked(platform, JsonV1Dot6(bom).output_as_string(indent=2) + "\n")


def validate(text: str) -> None:
    """Raise unless ``text`` is valid CycloneDX 1.6 JSON (the library's strict schema)."""
    found = validation.problems(text)
    if found:
        raise BuildboxError(
            f"the SBOM is not valid CycloneDX 1.6, so it was not written: {'; '.join(found[:5])}"
        )


def write(path: Path, sbom: Sbom) -> None:
    """Write ``path`` atomically (never a half-written file); ``sbom`` is valid by making."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, sbom.text)
