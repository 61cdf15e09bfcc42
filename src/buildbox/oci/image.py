"""An engine's image export, normalised into what is published: config, gzip layers, manifest.

What varies from build to build of the same inputs is taken out, so that the same inputs give the
same digest: see :func:`normalise_layer` and :func:`normalise_config`. The export itself (``docker
save``) comes from the engine as a stream of tar bytes; nothing here talks to the engine. What is
published is always what the export holds: the cache only saves compressing a layer again, and
only after its bytes are hashed again (see :func:`prepare`).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import tarfile
import tempfile
import zlib
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
    export: Export,
    image_id: str,
    cache_dir: Path,
    epoch: int,
    *,
    level: int = COMPRESS_LEVEL,
    log: Callable[[str], None] = lambda line: None,
) -> PreparedImage:
    """The image ``image_id`` normalised for publishing, from the engine's export.

    ``epoch`` is the source revision's time (or SOURCE_DATE_EPOCH). The config and every layer's
    content come from the export each time: the cache (which a CI job may restore from
    elsewhere) holds only compressed layers, and one is reused only when its bytes are hashed
    again and decompress to the layer the export holds (its diff_id); otherwise it is compressed
    again, and ``log`` says so. On a 64 MiB layer (2-core VM, 2026-12-03) the check costs 0.2 s
    (rewrite-and-hash 0.10 s, gunzip-and-hash 0.10 s) against 0.9 s to compress it, on top of
    the engine's ``docker save``.
    """
    config, layers = _export(export, image_id, cache_dir, epoch, level, log)
    return PreparedImage(config, tuple(layers))


def _export(
    export: Export,
    image_id: str,
    cache_dir: Path,
    epoch: int,
    level: int,
    log: Callable[[str], None],
) -> tuple[bytes, list[Layer]]:
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
            manifest = json.load(_member(archive, "manifest.json", image_id))[0]
            raw_config = _member(archive, manifest["Config"], image_id).read()

        def normalise(name: str) -> Layer:
            with tarfile.open(exported) as own:  # one reader per thread
                diff_id = normalised_diff_id(_member(own, name, image_id), epoch)
                cached = _cached_layer(layers_dir, diff_id, level, log)
                if cached is not None:
                    return cached
                return normalise_layer(
                    _member(own, name, image_id), layers_dir, epoch, level=level, pool=blocks
                )

        # Layers are rewritten side by side, and all their blocks deflated on every core (zlib
        # releases the GIL): one large layer takes all cores too.
        workers = max(1, min(len(manifest["Layers"]), _cores()))
        with (
            ThreadPoolExecutor(max_workers=_cores()) as blocks,
            ThreadPoolExecutor(max_workers=workers) as pool,
        ):
            layers = list(pool.map(normalise, manifest["Layers"]))
    diff_ids = [layer.diff_id for layer in layers]
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
            _rewrite(raw, _HashingWriter(gz, diff), epoch)
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


def normalised_diff_id(raw: IO[bytes], epoch: int) -> str:
    """The diff_id :func:`normalise_layer` gives ``raw``, computed without compressing it."""
    diff = hashlib.sha256()
    _rewrite(raw, _HashingWriter(None, diff), epoch)
    return "sha256:" + diff.hexdigest()


def _rewrite(raw: IO[bytes], plain: _HashingWriter, epoch: int) -> None:
    """The deterministic layer tar of ``raw``, written to ``plain`` (see normalise_layer)."""
    with (
        tarfile.open(fileobj=raw, mode="r:*") as source,
        tarfile.open(fileobj=cast(IO[bytes], plain), mode="w|", format=tarfile.PAX_FORMAT) as out,
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


def _stem(diff_hex: str, level: int) -> str:
    """A cached layer's name: its content, and what decides its compressed bytes."""
    return f"{diff_hex}-{level}-{BLOCK_SIZE // 1024}k"


def _cores() -> int:
    return os.cpu_count() or 1


def _member(archive: tarfile.TarFile, name: str, image_id: str) -> IO[bytes]:
    extracted = archive.extractfile(name)
    if extracted is None:
        raise BuildboxError(f"the engine's export of {image_id} lacks {name}")
    return extracted


def _cached_layer(
    layers_dir: Path, diff_id: str, level: int, log: Callable[[str], None]
) -> Layer | None:
    """The cached compressed layer of ``diff_id``, if its bytes are what its facts say and
    decompress to ``diff_id``; a file that is not is said and left to be written again."""
    stem = _stem(diff_id.removeprefix("sha256:"), level)
    data, facts = layers_dir / f"{stem}.tar.gz", layers_dir / f"{stem}.json"
    if not (data.is_file() and facts.is_file()):
        return None
    try:
        known = json.loads(facts.read_text())
        layer = Layer(data, str(known["digest"]), int(known["size"]), diff_id)
    except (ValueError, KeyError, TypeError):
        log(f"cached layer {diff_id} has unreadable facts ({facts}): compressing it again")
        return None
    compressed, plain, size = hashlib.sha256(), hashlib.sha256(), 0
    inflate = zlib.decompressobj(wbits=31)  # gzip; concatenated members (pgzip) follow below
    try:
        with data.open("rb") as stream:
            while block := stream.read(1 << 20):
                compressed.update(block)
                size += len(block)
                while block:
                    plain.update(inflate.decompress(block))
                    block = inflate.unused_data
                    if inflate.eof:
                        inflate = zlib.decompressobj(wbits=31)
            plain.update(inflate.flush())
    except zlib.error as error:
        log(f"cached layer {diff_id} is not gzip ({error}): compressing it again")
        return None
    found = ("sha256:" + compressed.hexdigest(), size, "sha256:" + plain.hexdigest())
    if found != (layer.digest, layer.size, diff_id):
        log(
            f"cached layer {diff_id} does not hold that layer (sha256 {found[0]}, {size} bytes, "
            f"decompressing to {found[2]}): compressing it again"
        )
        return None
    return layer


class _HashingWriter:
    """A file wrapper that hashes and counts what is written through it (to nothing when
    ``stream`` is None)."""

    def __init__(self, stream: Any, digest: Any) -> None:
        self.stream, self.digest, self.size = stream, digest, 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return len(data) if self.stream is None else int(self.stream.write(data))

    def flush(self) -> None:
        if self.stream is not None:
            self.stream.flush()
