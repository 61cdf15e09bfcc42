"""A bootstrapped base is trusted only as far as its bytes: every .deb is hashed again as it goes
into the bootstrap repository, a base is reused by image id after its root filesystem is hashed
again (never by a tag anyone can write), no box.yaml string is part of a shell line, and a
remote BuildKit never resolves a local base by name.

Engine-free: real .deb files (dpkg-deb) and real apt-ftparchive; mmdebstrap and ``docker import``
are stand-ins that record what they were asked to do (their real runs are in test_bootstrap.py).
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from buildbox.build import bootstrap
from buildbox.build.builder import BuildRequest
from buildbox.build.buildkit import BuildKitBuilder
from buildbox.build.context import BuildContext
from buildbox.build.engine import Engine, LocalImage
from buildbox.define.boxes import Bootstrap, Box
from buildbox.define.lock import LockedPackage, PackageLock, PlatformLock
from buildbox.errors import BuildboxError

PLATFORM = "linux/amd64"
EPOCH = 1_700_000_000
MIRROR = "http://deb.debian.org/debian"
CONTENT_LABEL = bootstrap.LABEL_CONTENT


def make_deb(where: Path, name: str, version: str = "1.0") -> Path:
    """A real, tiny .deb (dpkg-deb --build of a scratch tree: nothing is installed)."""
    tree = where / f"{name}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: amd64\n"
        "Maintainer: t <t@example.invalid>\nDescription: test package\n"
    )
    (tree / "usr" / "share" / name).mkdir(parents=True)
    (tree / "usr" / "share" / name / "README").write_text(f"{name}\n")
    deb = where / f"{name}_{version}_amd64.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)],
        check=True, capture_output=True,
    )  # fmt: skip
    return deb


def locked(deb: Path, name: str) -> LockedPackage:
    data = deb.read_bytes()
    url = f"{MIRROR}/pool/main/{name[0]}/{name}/{deb.name}"
    return LockedPackage(name, "1.0", "amd64", url, hashlib.sha256(data).hexdigest(), len(data))


@dataclass
class FakeEngine:
    """The engine's images by id and by name; ``planted`` answers for every base name."""

    images: dict[str, LocalImage] = field(default_factory=dict)
    planted: LocalImage | None = None

    def image(self, reference: str) -> LocalImage | None:
        if self.planted is not None and reference.startswith("buildbox-base"):
            return self.planted
        return self.images.get(reference)

    def tag(self, image_id: str, reference: str) -> None:
        self.images[reference] = self.images[image_id]

    def cli_environment(self) -> dict[str, str]:
        return {}


@dataclass
class Bootstrapping:
    """A box with two locked packages, its fetched .debs, and the stand-ins' records."""

    box: Box
    debs: dict[str, Path]
    cache: Path
    engine: FakeEngine
    commands: list[list[str]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    imports: list[Path] = field(default_factory=list)
    said: list[str] = field(default_factory=list)

    def run(self, fresh: bool = False) -> tuple[str, str]:
        return bootstrap.bootstrap_base(
            cast(Engine, self.engine), self.box, PLATFORM, self.debs, EPOCH, self.said.append,
            fresh, cache_dir=self.cache,
        )  # fmt: skip


def rootfs_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("etc/debian_version")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"12\n"))
    return buffer.getvalue()


@pytest.fixture
def bootstrapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Bootstrapping:
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    names = ("base-files", "hello")
    debs = [make_deb(fetched, name) for name in names]
    packages = tuple(locked(deb, name) for deb, name in zip(debs, names, strict=True))
    lock = PackageLock("bootstrap:bookworm/minbase", ("hello",), {
        PLATFORM: PlatformLock("", packages)
    })  # fmt: skip
    box = Box(
        "demo", tmp_path / "demo", "1", "bootstrap:bookworm/minbase", (PLATFORM,), (),
        packages=("hello",), lock=lock, bootstrap=Bootstrap("bookworm", "minbase", MIRROR),
    )  # fmt: skip
    state = Bootstrapping(
        box, {p.sha256: d for p, d in zip(packages, debs, strict=True)}, tmp_path / "cache",
        FakeEngine(),
    )  # fmt: skip

    def mmdebstrap(command: list[str], what: str, epoch: int | None = None) -> None:
        state.commands.append(command)
        for argument in command:
            if argument.startswith("--customize-hook=upload "):
                state.sources.append(Path(argument.split()[1]).read_text())
        Path(command[-2]).write_bytes(rootfs_tar())

    def docker_import(
        engine: Engine, tarball: Path, platform: str, content: str, reference: str
    ) -> str:
        state.imports.append(tarball)
        diff_id = "sha256:" + hashlib.sha256(tarball.read_bytes()).hexdigest()
        image_id = "sha256:" + hashlib.sha256(f"{diff_id} {content}".encode()).hexdigest()
        image = LocalImage(image_id, {CONTENT_LABEL: content}, platform, (diff_id,))
        state.engine.images[image_id] = state.engine.images[reference] = image
        return image_id

    monkeypatch.setattr(bootstrap, "run_mmdebstrap", mmdebstrap)
    monkeypatch.setattr(bootstrap, "import_image", docker_import)
    return state


CONTENT = "sha256:" + hashlib.sha256(rootfs_tar()).hexdigest()


def test_a_one_byte_deb_is_refused_naming_the_package(bootstrapping: Bootstrapping) -> None:
    hello = bootstrapping.box.locked(PLATFORM)[1]
    dummy = bootstrapping.cache.parent / "dummy.deb"
    dummy.write_bytes(b"x")
    bootstrapping.debs[hello.sha256] = dummy
    with pytest.raises(BuildboxError) as raised:
        bootstrapping.run()
    message = str(raised.value)
    assert message.startswith(f"package hello 1.0 ({PLATFORM}): {dummy} has 1 bytes and sha256 ")
    assert f"not the locked {hello.size} bytes and sha256 {hello.sha256}" in message
    assert bootstrapping.commands == [], "mmdebstrap ran on an unverified .deb"


def test_a_planted_tag_with_a_forged_label_is_not_trusted(bootstrapping: Bootstrapping) -> None:
    forged = "sha256:" + "f" * 64
    bootstrapping.engine.planted = LocalImage(
        "sha256:" + "e" * 64, {CONTENT_LABEL: forged}, PLATFORM, (forged,)
    )
    reference, content = bootstrapping.run()
    assert content != forged, "a tag and label anyone can write became the base digest"
    assert content == CONTENT
    assert reference.startswith("buildbox-base.invalid/demo:")
    built_on = bootstrapping.engine.images[reference]  # the name, given to the verified image
    assert built_on.id != "sha256:" + "e" * 64
    assert built_on.diff_ids == (CONTENT,)
    assert len(bootstrapping.commands) == 1


def test_a_base_is_reused_by_id_after_its_rootfs_is_hashed_again(
    bootstrapping: Bootstrapping,
) -> None:
    first = bootstrapping.run()
    assert first[1] == CONTENT
    assert (bootstrapping.cache / "bases" / f"{CONTENT.removeprefix('sha256:')}.tar").is_file()
    assert bootstrapping.run() == first
    assert (len(bootstrapping.commands), len(bootstrapping.imports)) == (1, 1)

    # The image is gone (pruned, or another engine): imported again from the verified tarball.
    bootstrapping.engine.images.clear()
    assert bootstrapping.run() == first
    assert (len(bootstrapping.commands), len(bootstrapping.imports)) == (1, 2)
    assert "importing the base of demo (linux/amd64) again" in bootstrapping.said[-1]

    # The tarball does not hash to its name: bootstrapped again, from the verified .debs.
    tarball = bootstrapping.cache / "bases" / f"{CONTENT.removeprefix('sha256:')}.tar"
    tarball.write_bytes(tarball.read_bytes().replace(b"12\n", b"13\n"))
    assert bootstrapping.run()[1] == CONTENT
    assert len(bootstrapping.commands) == 2
    assert f"does not hash to {CONTENT}: bootstrapping it again" in bootstrapping.said[-2]


def test_an_image_that_does_not_hold_the_tarball_is_refused(
    bootstrapping: Bootstrapping, monkeypatch: pytest.MonkeyPatch
) -> None:
    def recompressing_import(
        engine: Engine, tarball: Path, platform: str, content: str, reference: str
    ) -> str:
        image = LocalImage("sha256:" + "d" * 64, {CONTENT_LABEL: content}, platform, ("x",))
        bootstrapping.engine.images[image.id] = image
        return image.id

    monkeypatch.setattr(bootstrap, "import_image", recompressing_import)
    with pytest.raises(BuildboxError, match=r"gave sha256:d{64} with layers x, not the one layer"):
        bootstrapping.run()


def test_the_mirror_reaches_mmdebstrap_only_in_a_file(bootstrapping: Bootstrapping) -> None:
    bootstrapping.run()
    [command] = bootstrapping.commands
    assert not [argument for argument in command if "deb.debian.org" in argument]
    [hook] = [argument for argument in command if argument.startswith("--customize-hook=")]
    assert hook.startswith("--customize-hook=upload ")
    assert hook.endswith(" /etc/apt/sources.list")
    assert bootstrapping.sources == [f"deb {MIRROR} bookworm main\n"]


def test_an_image_not_built_on_the_verified_base_is_refused(
    bootstrapping: Bootstrapping,
) -> None:
    engine = cast(Engine, bootstrapping.engine)
    good = LocalImage("sha256:" + "1" * 64, {}, PLATFORM, (CONTENT, "sha256:" + "2" * 64))
    other = LocalImage("sha256:" + "3" * 64, {}, PLATFORM, ("sha256:" + "4" * 64, CONTENT))
    bootstrapping.engine.images.update({good.id: good, other.id: other})
    bootstrap.require_built_on(engine, good.id, CONTENT, bootstrapping.box, PLATFORM)
    with pytest.raises(BuildboxError) as raised:
        bootstrap.require_built_on(engine, other.id, CONTENT, bootstrapping.box, PLATFORM)
    assert str(raised.value) == (
        f"demo ({PLATFORM}) was not built on its verified base: the image's lowest layer is "
        f"sha256:{'4' * 64}, not the base's root filesystem {CONTENT}; build it again"
    )


# --- a remote BuildKit never resolves a local base by name ------------------------------------


def request(box: Box, base: str) -> BuildRequest:
    return BuildRequest(BuildContext(box, PLATFORM, ()), base, False, {})


@pytest.mark.parametrize(
    "base",
    ["buildbox-base.invalid/demo:0123", "sha256:" + "a" * 64, "buildbox-base/demo:0", "debian:12"],
    ids=["local-base", "image-id", "short-name", "tag"],
)
def test_a_remote_builder_refuses_a_base_not_pinned_by_digest(
    bootstrapping: Bootstrapping, base: str, tmp_path: Path
) -> None:
    builder = BuildKitBuilder(cast(Engine, bootstrapping.engine), "farm")
    with pytest.raises(BuildboxError) as raised:
        builder.command(request(bootstrapping.box, base), tmp_path / "iid", "remote")
    message = str(raised.value)
    assert f"the base {base} is not pinned by digest" in message
    assert "buildx builder farm (driver remote)" in message


def test_a_local_base_builds_on_the_engines_own_buildkit(
    bootstrapping: Bootstrapping, tmp_path: Path
) -> None:
    builder = BuildKitBuilder(cast(Engine, bootstrapping.engine))
    local = "buildbox-base.invalid/demo:0123"
    command = builder.command(request(bootstrapping.box, local), tmp_path / "iid", "docker")
    assert f"BUILDBOX_BASE={local}" in command
    pinned = "registry.example.invalid/debian@sha256:" + "b" * 64
    remote = BuildKitBuilder(cast(Engine, bootstrapping.engine), "farm")
    assert "--load" in remote.command(request(bootstrapping.box, pinned), tmp_path / "i", "remote")
