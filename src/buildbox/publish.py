"""Push a verified image and its SBOM together, the immutable tag last.

The layers and config come from the engine (``docker save``) and are pushed by our own client, so
the toolkit decides the manifest, hence the digest, and the order: blobs, then the image manifest
by digest, then the SBOM as an OCI 1.1 artifact whose subject is the image, then (where the
registry has no referrers API) the fallback referrers index, and the release tag last. A publish
that dies halfway leaves no release tag; running it again skips the blobs already there.

Tags in registries such as the CNCF distribution registry are not immutable, and HEAD-then-PUT is
a race: the tag is checked before anything is pushed, and read back after it is written.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

from buildbox.errors import BuildboxError
from buildbox.registry import (
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Registry,
    RegistryError,
    digest_of,
    fallback_tag,
)

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"
SBOM_TYPE = "application/vnd.cyclonedx+json"
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Layer:
    path: Path  # the gzip-compressed layer in the cache
    digest: str  # of the compressed bytes
    size: int
    diff_id: str  # of the uncompressed tar


@dataclass(frozen=True)
class PreparedImage:
    """An image ready to push: config, compressed layers, and the manifest over them."""

    config: bytes
    layers: tuple[Layer, ...]
    manifest: bytes

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(OCI_MANIFEST, self.digest, len(self.manifest))


def prepare(client: Any, image_id: str, cache_dir: Path, epoch: int) -> PreparedImage:
    """The image normalised for publishing: config, gzip-compressed layers, and OCI manifest.

    What varies from build to build of the same inputs is taken out, so that the same inputs give
    the same digest (see :func:`normalise_layer` and :func:`normalise_config`); ``epoch`` is the
    source revision's time (or SOURCE_DATE_EPOCH). Config and layers are kept in the cache (by
    image id and epoch, and by normalised diff id), so publishing an unchanged image again
    exports and compresses nothing.
    """
    configs, layers_dir = _ensure(cache_dir / "configs"), _ensure(cache_dir / "layers")
    config_file = configs / f"{image_id.removeprefix('sha256:')}-{epoch}.json"
    config = config_file.read_bytes() if config_file.is_file() else None
    diff_ids = json.loads(config)["rootfs"]["diff_ids"] if config else []
    cached = [_cached_layer(layers_dir, diff_id) for diff_id in diff_ids]
    if config is None or None in cached:
        config, cached = _export(client, image_id, cache_dir, epoch)
        _write(config_file, config)
    layers = tuple(layer for layer in cached if layer is not None)
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [
            {"mediaType": OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.size}
            for layer in layers
        ],
    }
    return PreparedImage(config, layers, _canonical(body))


def _export(
    client: Any, image_id: str, cache_dir: Path, epoch: int
) -> tuple[bytes, list[Layer | None]]:
    """``docker save`` the image: its normalised config, and its layers normalised and cached."""
    with tempfile.TemporaryDirectory(dir=_ensure(cache_dir / "tmp")) as scratch:
        exported = Path(scratch) / "image.tar"
        with exported.open("wb") as stream:
            for chunk in client.images.get(image_id).save(named=False):
                stream.write(chunk)
        with tarfile.open(exported) as archive:
            manifest = json.load(_member(archive, "manifest.json"))[0]
            raw_config = _member(archive, manifest["Config"]).read()
            layers: list[Layer | None] = [
                normalise_layer(_member(archive, name), cache_dir / "layers", epoch)
                for name in manifest["Layers"]
            ]
    diff_ids = [layer.diff_id for layer in layers if layer is not None]
    return normalise_config(raw_config, diff_ids, epoch), layers


def normalise_config(raw: bytes, diff_ids: list[str], epoch: int) -> bytes:
    """The image config without what only says when and where it was built.

    ``created`` (and each history entry's) becomes the source time; the build container's id,
    host name and configuration, the parent (intermediate) image id, and the engine's version
    are dropped; labels, environment, entrypoint and the history's commands stay as they are.
    Keys are sorted.
    """
    config = json.loads(raw)
    created = _timestamp(epoch)
    config["created"] = created
    for entry in config.get("history", []):
        entry["created"] = created
    for key in ("container", "container_config", "docker_version"):
        config.pop(key, None)
    if isinstance(config.get("config"), dict):
        # The build container's host name and its parent image id (an intermediate image).
        config["config"]["Hostname"] = ""
        config["config"].pop("Image", None)
    config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    return _canonical(config)


def normalise_layer(raw: Any, layers_dir: Path, epoch: int) -> Layer:
    """Rewrite one layer tar deterministically, gzip it (fixed header), and cache it.

    Entries are written in path order (hard links last, after their targets), file times are
    clamped to ``epoch``, owner names (not ids) and access/change times are dropped; contents,
    modes, ids and extended attributes (file capabilities) stay.
    """
    diff, compressed = hashlib.sha256(), hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=layers_dir, suffix=".part", delete=False) as target:
        sink = _HashingWriter(target, compressed)
        with gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0, compresslevel=6) as gz:
            plain = _HashingWriter(gz, diff)
            with (
                tarfile.open(fileobj=raw, mode="r:") as source,
                tarfile.open(
                    fileobj=cast(IO[bytes], plain), mode="w|", format=tarfile.PAX_FORMAT
                ) as out,
            ):
                for member in sorted(source.getmembers(), key=lambda m: (m.islnk(), m.name)):
                    clean = copy.copy(member)
                    clean.mtime = min(int(member.mtime), epoch)
                    clean.uname = clean.gname = ""
                    clean.pax_headers = {
                        key: value
                        for key, value in member.pax_headers.items()
                        if key.startswith("SCHILY.xattr.")
                    }
                    out.addfile(clean, source.extractfile(member) if member.isfile() else None)
    diff_id = "sha256:" + diff.hexdigest()
    layer = Layer(layers_dir / f"{diff.hexdigest()}.tar.gz", "sha256:" + compressed.hexdigest(),
                  sink.size, diff_id)  # fmt: skip
    Path(target.name).replace(layer.path)
    facts = {"digest": layer.digest, "size": layer.size}
    _write(layers_dir / f"{diff.hexdigest()}.json", json.dumps(facts).encode())
    return layer


def _timestamp(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _member(archive: tarfile.TarFile, name: str) -> Any:
    extracted = archive.extractfile(name)
    if extracted is None:
        raise BuildboxError(f"the engine's image export lacks {name}")
    return extracted


def _ensure(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _write(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".part", delete=False) as part:
        part.write(data)
    Path(part.name).replace(path)


def _cached_layer(layers_dir: Path, diff_id: str) -> Layer | None:
    stem = diff_id.removeprefix("sha256:")
    data, facts = layers_dir / f"{stem}.tar.gz", layers_dir / f"{stem}.json"
    if not (data.is_file() and facts.is_file()):
        return None
    known = json.loads(facts.read_text())
    return Layer(data, known["digest"], known["size"], diff_id)


class _HashingWriter:
    """A file wrapper that hashes and counts what is written through it."""

    def __init__(self, stream: Any, digest: Any) -> None:
        self.stream, self.digest, self.size = stream, digest, 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        written: int = self.stream.write(data)
        return written

    def flush(self) -> None:
        self.stream.flush()


def _canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def sbom_manifest(subject: Descriptor, sbom: bytes, title: str, created: str) -> bytes:
    """An OCI 1.1 artifact manifest carrying the SBOM, with the image as its subject."""
    return _canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": SBOM_TYPE,
            "config": {"mediaType": OCI_EMPTY, "digest": digest_of(EMPTY_JSON), "size": 2},
            "layers": [
                {
                    "mediaType": SBOM_TYPE,
                    "digest": digest_of(sbom),
                    "size": len(sbom),
                    "annotations": {"org.opencontainers.image.title": title},
                }
            ],
            "subject": subject.as_dict(),
            "annotations": {"org.opencontainers.image.created": created},
        }
    )


def push_image(registry: Registry, repository: str, image: PreparedImage) -> None:
    """Blobs first (skipping those the registry has), then the manifest by digest."""
    registry.upload_blob(repository, digest_of(image.config), image.config)
    for layer in image.layers:
        registry.upload_blob(repository, layer.digest, layer.path)
    registry.put_manifest(repository, image.digest, image.manifest, OCI_MANIFEST)


def attach_sbom(
    registry: Registry, repository: str, subject: Descriptor, sbom: bytes, title: str, created: str
) -> str:
    """Push the SBOM artifact (and the fallback referrers index if needed); its digest."""
    registry.upload_blob(repository, digest_of(EMPTY_JSON), EMPTY_JSON)
    registry.upload_blob(repository, digest_of(sbom), sbom)
    manifest = sbom_manifest(subject, sbom, title, created)
    digest = digest_of(manifest)
    response = registry.put_manifest(repository, digest, manifest, OCI_MANIFEST)
    if "OCI-Subject" not in response.headers:
        # No referrers API: keep the index tagged sha256-<subject hex>, as the spec requires.
        _add_to_fallback_index(registry, repository, subject.digest, digest, len(manifest))
    return digest


def _add_to_fallback_index(
    registry: Registry, repository: str, subject: str, digest: str, size: int
) -> None:
    tag = fallback_tag(subject)
    existing = registry.get_manifest(repository, tag)
    index: dict[str, Any] = (
        json.loads(existing[0]) if existing else {"schemaVersion": 2, "mediaType": OCI_INDEX}
    )
    manifests = [m for m in index.get("manifests", []) if m.get("digest") != digest]
    manifests.append(
        {"mediaType": OCI_MANIFEST, "digest": digest, "size": size, "artifactType": SBOM_TYPE}
    )
    index["manifests"] = sorted(manifests, key=lambda m: m["digest"])
    registry.put_manifest(repository, tag, _canonical(index), OCI_INDEX)


def find_sbom(registry: Registry, repository: str, subject: str) -> bytes | None:
    """The SBOM attached to ``subject``: through the referrers API, else the fallback index."""
    index = registry.referrers(repository, subject)
    if index is None:
        found = registry.get_manifest(repository, fallback_tag(subject))
        index = json.loads(found[0]) if found else {"manifests": []}
    for entry in index.get("manifests", []):
        if entry.get("artifactType") != SBOM_TYPE:
            continue
        manifest = registry.get_manifest(repository, entry["digest"])
        if manifest is None:
            continue
        body = json.loads(manifest[0])
        if body.get("subject", {}).get("digest") != subject:
            continue
        for layer in body.get("layers", []):
            if layer.get("mediaType") == SBOM_TYPE:
                return registry.get_blob(repository, layer["digest"])
    return None


@dataclass(frozen=True)
class PlatformImage:
    """One platform's image, ready to push, with its SBOM."""

    platform: str
    image: PreparedImage
    sbom: bytes
    sbom_title: str


@dataclass(frozen=True)
class Published:
    repository: str  # host/repository
    tag: str
    #: What the tag names: the image manifest for one platform, the OCI index for several.
    digest: str
    #: Per platform: (image manifest digest, SBOM artifact digest).
    platforms: dict[str, tuple[str, str]]
    #: False when the tag already named this very content (nothing new was tagged).
    tagged_now: bool

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}@{self.digest}"


def index_manifest(images: list[tuple[str, PreparedImage]]) -> bytes:
    """An OCI image index over (platform, image) pairs, in platform order."""
    entries = []
    for name, image in sorted(images, key=lambda pair: pair[0]):
        os_name, _, rest = name.partition("/")
        architecture, _, variant = rest.partition("/")
        platform = {"architecture": architecture, "os": os_name}
        if variant:
            platform["variant"] = variant
        entries.append({**image.descriptor.as_dict(), "platform": platform})
    return _canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})


def top_manifest(images: list[PlatformImage]) -> tuple[bytes, str]:
    """What the tag will name: the image itself for one platform, an index for several."""
    if len(images) == 1:
        return images[0].image.manifest, OCI_MANIFEST
    return index_manifest([(entry.platform, entry.image) for entry in images]), OCI_INDEX


def check_tag(registry: Registry, repository: str, tag: str, digest: str) -> bool:
    """True when ``tag`` already names ``digest``; False when absent; refuse when elsewhere."""
    existing = registry.manifest_digest(repository, tag)
    if existing is None:
        return False
    if existing != digest:
        raise BuildboxError(
            f"{registry.host}/{repository}:{tag} already points at {existing}; this release is "
            f"{digest}. A released version is immutable: bump the box's version to publish "
            "new content. The registry was not changed."
        )
    return True


def publish(
    registry: Registry,
    repository: str,
    tag: str,
    images: list[PlatformImage],
    created: str,
    *,
    immutable: bool = True,
) -> Published:
    """Push every platform image and its SBOM, the index if several, then the tag; re-read it."""
    top, media_type = top_manifest(images)
    digest = digest_of(top)
    already = check_tag(registry, repository, tag, digest) if immutable else False
    platforms = {}
    for entry in images:
        push_image(registry, repository, entry.image)
        platforms[entry.platform] = (
            entry.image.digest,
            attach_sbom(
                registry, repository, entry.image.descriptor, entry.sbom, entry.sbom_title, created
            ),
        )
    if media_type == OCI_INDEX:
        registry.put_manifest(repository, digest, top, OCI_INDEX)
    if not already:
        registry.put_manifest(repository, tag, top, media_type)
    now = registry.manifest_digest(repository, tag)
    if now != digest:
        raise RegistryError(
            f"after tagging, {registry.host}/{repository}:{tag} points at {now}, not "
            f"{digest}: someone else wrote the tag at the same time. Investigate before anyone "
            "pins it."
        )
    return Published(
        f"{registry.host}/{repository}", tag, digest, platforms, tagged_now=not already
    )
