"""An engine's image export, normalised into what is published: config, gzip layers, manifest.

What varies from build to build of the same inputs is taken out, so that the same inputs give the
same digest: see :func:`normalise_layer` and :func:`normalise_config`. The export itself (``docker
save``) comes from the engine as a stream of tar bytes; nothing here talks to the engine.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from buildbox.digests import canonical_json, digest_of
from buildbox.errors import BuildboxError
from buildbox.files import write_atomically
from buildbox.oci.documents import (
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    image_manifest,
)
from buildbox.oci.pgzip import BLOCK_SIZE, ParallelGzipWriter
from buildbox.source import timestamp

#: A fixed compression level (with pgzip.BLOCK_SIZE): part of what decides the published bytes.
COMPRESS_LEVEL = 6
#: The export of one image: ``docker save`` tar bytes, in order.
Export = Callable[[], Iterable[bytes]]


@dataclass(frozen=True)
class Layer:
    path: Path  # the gzip-compressed layer in the cache
    digest: str  # of the compressed bytes
    size: int
    diff_id: str  # of the uncompressed tar

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(OCI_LAYER_GZIP, self.digest, self.size)


@dataclass(frozen=True)
class PreparedImage:
    """An image ready to push: config, compressed layers, and the manifest over them."""

    config: bytes
    layers: tuple[Layer, ...]

    @property
    def manifest(self) -> bytes:
        return image_manifest(Descriptor.of(OCI_CONFIG, self.config), [
            layer.descriptor for layer in self.layers
        ])  # fmt: skip

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)

    @property
    def config_digest(self) -> str:
        """The config names every layer by its uncompressed digest: this is the content's id."""
        return digest_of(self.config)

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor.of(OCI_MANIFEST, self.manifest)


def prepare(
    export: Export, image_id: str, cache_dir: Path, epoch: int, *, level: int = COMPRESS_LEVEL
) -> PreparedImage:
    """The image ``image_id`` normalised for publishing, exported only when not cached.

    ``epoch`` is the source revision's time (or SOURCE_DATE_EPOCH). Config and layers are kept in
    the cache (by image id and epoch, and by normalised diff id), so publishing an unchanged image
    again exports and compresses nothing.
    """
    configs, layers_dir = cache_dir / "configs", cache_dir / "layers"
    config_file = configs / f"{image_id.removeprefix('sha256:')}-{epoch}-{level}.json"
    config = config_file.read_bytes() if config_file.is_file() else None
    diff_ids = json.loads(config)["rootfs"]["diff_ids"] if config else []
    cached = [_cached_layer(layers_dir, diff_id, level) for diff_id in diff_ids]
    if config is None or None in cached:
        config, cached = _export(export, cache_dir, epoch, level)
        write_atomically(config_file, config)
    return PreparedImage(config, tuple(layer for layer in cached if layer is not None))


def _export(
    export: Export, cache_dir: Path, epoch: int, level: int
) -> tuple[bytes, list[Layer | None]]:
    """Read a ``docker save`` stream: its normalised config, and its layers normalised, cached."""
    scratch_root = cache_dir / "tmp"
    scratch_root.mkdir(parents=True, exist_ok=True)
    layers_dir = cache_dir / "layers"
    layers_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch_root) as scratch:
        exported = Path(scratch) / "image.tar"
        with exported.open("wb") as stream:
            for chunk in export():
                stream.write(chunk)
        with tarfile.open(exported) as archive:
            manifest = json.load(_member(archive, "manifest.json"))[0]
            raw_config = _member(archive, manifest["Config"]).read()

        def normalise(name: str) -> Layer | None:
            with tarfile.open(exported) as own:  # one reader per thread
                return normalise_layer(
                    _member(own, name), layers_dir, epoch, level=level, pool=blocks
                )

        # Layers are rewritten side by side, and all their blocks deflated on every core (zlib
        # releases the GIL): one large layer takes all cores too.
        workers = max(1, min(len(manifest["Layers"]), _cores()))
        with (
            ThreadPoolExecutor(max_workers=_cores()) as blocks,
            ThreadPoolExecutor(max_workers=workers) as pool,
        ):
            layers = list(pool.map(normalise, manifest["Layers"]))
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
    created = timestamp(epoch)
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
    return canonical_json(config)


def normalise_layer(
    raw: IO[bytes],
    layers_dir: Path,
    epoch: int,
    *,
    level: int = COMPRESS_LEVEL,
    pool: Executor | None = None,
) -> Layer:
    """Rewrite one layer tar deterministically, gzip it (fixed header, deflated in blocks on
    ``pool``'s threads or on every core, see ``oci.pgzip``), and cache it.

    Entries are written in path order (hard links last, after their targets), file times are
    clamped to ``epoch``, owner names (not ids) and access/change times are dropped; contents,
    modes, ids and extended attributes (file capabilities) stay. The gzip bytes also depend on
    the machine's zlib (zlib and zlib-ng differ at the same level): reproduce compares content
    (the uncompressed digests) as well, see ``release.reproduce``.
    """
    diff, compressed = hashlib.sha256(), hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=layers_dir, suffix=".part", delete=False) as target:
        sink = _HashingWriter(target, compressed)
        with (
            contextlib.nullcontext(pool) if pool else ThreadPoolExecutor(_cores()) as blocks,
            ParallelGzipWriter(cast(IO[bytes], sink), level, blocks, 2 * _cores()) as gz,
        ):
            plain = _HashingWriter(gz, diff)
            with (
                tarfile.open(fileobj=raw, mode="r:*") as source,
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
        target.flush()
        os.fsync(target.fileno())
    stem = _stem(diff.hexdigest(), level)
    layer = Layer(layers_dir / f"{stem}.tar.gz", "sha256:" + compressed.hexdigest(), sink.size,
                  "sha256:" + diff.hexdigest())  # fmt: skip
    Path(target.name).replace(layer.path)
    write_atomically(
        layers_dir / f"{stem}.json", json.dumps({"digest": layer.digest, "size": layer.size})
    )
    return layer


def _stem(diff_hex: str, level: int) -> str:
    """A cached layer's name: its content, and what decides its compressed bytes."""
    return f"{diff_hex}-{level}-{BLOCK_SIZE // 1024}k"


def _cores() -> int:
    return os.cpu_count() or 1


def _member(archive: tarfile.TarFile, name: str) -> IO[bytes]:
    extracted = archive.extractfile(name)
    if extracted is None:
        raise BuildboxError(f"the engine's image export lacks {name}")
    return extracted


def _cached_layer(layers_dir: Path, diff_id: str, level: int) -> Layer | None:
    stem = _stem(diff_id.removeprefix("sha256:"), level)
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
