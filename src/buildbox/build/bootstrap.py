"""Bases bootstrapped from locked packages: mmdebstrap, offline, from verified .debs only.

The packages of the lock are fetched through the verified cache and hashed again (sha256 and
size) as they are copied into a flat apt repository (``apt-ftparchive``) that mmdebstrap
installs from, with no network (``unshare -n``), ``[trusted=yes]`` because every file was just
checked against the lock's sha256, which came from the archive's signed index. With
``SOURCE_DATE_EPOCH`` the root filesystem tarball is the same bytes for the same lock and epoch
on any machine; its sha256 is the base's content digest, which labels and the SBOM carry as an
image base's digest. The tarball becomes a local image (``docker import``).

A base is reused, never trusted by name. Any engine user (or a ``docker pull`` of a lookalike
name) can write a tag such as ``buildbox-base/<box>:<key>``, with any label: so the tag is never
read. The tarball is kept in the cache by its sha256 (``bases/<hex>.tar``, with
``bases/<key>.json`` naming content digest and image id for the bootstrap's inputs), and every
use hashes it again, then looks the image up by its id and checks that its one layer's diff_id
(``docker import`` of an uncompressed tar keeps it as it is: the diff_id is the tar's sha256)
and its label are that digest. A tarball that does not hash to its name is bootstrapped again;
an image that is missing or does not hold the tarball is imported again from it. The verified
id is then named ``buildbox-base.invalid/<box>:<key>`` for the build: BuildKit cannot build
``FROM`` an image id (it asks Docker Hub for ``library/sha256``: moby/buildkit#2204), and a
name on a ``.invalid`` host is one no registry can answer, should the local name be gone. After
the build, :func:`require_built_on` checks that the image's lowest layer is the tarball.

A release reuses a base this way rather than bootstrapping afresh: bootstrapping takes minutes
per platform (about 6 under emulation), and the tarball re-hashed is the same bytes a fresh
bootstrap of the same lock and epoch gives, which `invoke reproduce` checks by bootstrapping
afresh (``fresh``). The cache directory is trusted as far as this goes: it binds a bootstrap's
inputs to a digest, as the release record does for published images.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from buildbox.build.buildkit import docker_cli
from buildbox.build.engine import Engine, LocalImage, build_environment
from buildbox.define.boxes import Box
from buildbox.define.lock import LockedPackage, deb_arch
from buildbox.digests import file_sha256
from buildbox.errors import BuildboxError
from buildbox.files import write_atomically

#: The label an imported base carries: the sha256 of the root filesystem it was made from.
LABEL_CONTENT = "dev.buildbox.base-content"
#: Where local base names live: a host that never resolves (RFC 2606), so no builder can pull
#: a lookalike of a base from a registry.
BASE_HOST = "buildbox-base.invalid"
_IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}")


def bootstrap_base(
    engine: Engine,
    box: Box,
    platform: str,
    debs: Mapping[str, Path],
    epoch: int,
    log: Callable[[str], None] = print,
    fresh: bool = False,
    *,
    cache_dir: Path,
) -> tuple[str, str]:
    """The local image of the box's bootstrapped base for ``platform``, made now if needed (or
    ``fresh``, made again whatever exists): (the local name given to its verified image id just
    now, the content digest ``sha256:<hex>`` of its root filesystem)."""
    assert box.bootstrap is not None
    locked = box.locked(platform)
    # Every locked package asked for by name: from the flat repository, libapt does not count
    # apt as essential, so minbase alone left apt and its dependencies out (verify: image = lock).
    options = [
        *mmdebstrap_options(box, platform),
        "--include=" + ",".join(sorted({p.name for p in locked})),
    ]
    key = hashlib.sha256(
        "\n".join(
            [
                *options,
                box.bootstrap.suite,
                box.bootstrap.mirror,
                str(epoch),
                *sorted(p.sha256 for p in locked),
            ]
        ).encode()
    ).hexdigest()
    bases = cache_dir / "bases"
    record = bases / f"{key}.json"
    reference = f"{BASE_HOST}/{box.name}:{key[:32]}"
    if not fresh and (reused := _reuse(engine, box, platform, record, reference, log)):
        engine.tag(reused[0], reference)
        return reference, reused[1]
    for tool in ("apt-ftparchive", "unshare"):
        if shutil.which(tool) is None:
            raise BuildboxError(
                f"a bootstrapped base needs {tool} (Debian: apt-get install apt-utils util-linux)"
            )
    log(f"bootstrapping the {box.bootstrap.suite} base of {box.name} ({platform}) offline")
    bases.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bootstrap-", dir=bases) as scratch:
        repo, rootfs = Path(scratch) / "repo", Path(scratch) / "rootfs.tar"
        repo.mkdir()
        stage_packages(locked, debs, repo, platform)
        suite = box.bootstrap.suite
        release = [
            f"-oAPT::FTPArchive::Release::{field}={suite}" for field in ("Suite", "Codename")
        ]
        _run(["apt-ftparchive", "packages", "."], repo, repo / "Packages")
        _run(["apt-ftparchive", *release, "release", "."], repo, repo / "Release")
        # Inside the image, apt points at the real archive, not at the build's repository: a
        # file mmdebstrap uploads, so that no box.yaml string is ever part of a shell line.
        sources = Path(scratch) / "sources.list"
        sources.write_text(f"deb {box.bootstrap.mirror} {suite} main\n")
        run_mmdebstrap(
            ["unshare", "--net", "mmdebstrap", "--mode=root", "--format=tar", "--skip=output/dev",
             *options,
             "--customize-hook=" + shlex.join(["upload", str(sources), "/etc/apt/sources.list"]),
             suite, str(rootfs), f"deb [trusted=yes] copy://{repo} ./"],
            f"bootstrap the base of {box.name} ({platform}) from its lock",
            epoch=epoch,
        )  # fmt: skip
        content = "sha256:" + file_sha256(rootfs)
        tarball = bases / f"{content.removeprefix('sha256:')}.tar"
        rootfs.replace(tarball)
    image_id = _import_verified(engine, tarball, platform, content, reference)
    write_atomically(record, json.dumps({"content": content, "image": image_id}))
    engine.tag(image_id, reference)
    return reference, content


def require_built_on(engine: Engine, image_id: str, content: str, box: Box, platform: str) -> None:
    """The image built from a bootstrapped base has that base's root filesystem as its lowest
    layer (whatever happened to the base's local name during the build)."""
    image = engine.image(image_id)
    lowest = image.diff_ids[0] if image is not None and image.diff_ids else "none"
    if lowest != content:
        raise BuildboxError(
            f"{box.name} ({platform}) was not built on its verified base: the image's lowest "
            f"layer is {lowest}, not the base's root filesystem {content}; build it again"
        )


def stage_packages(
    locked: tuple[LockedPackage, ...], debs: Mapping[str, Path], repo: Path, platform: str
) -> None:
    """Copy every locked .deb into ``repo``, hashing the copy (the bytes mmdebstrap reads)
    against the lock's sha256 and size: the repository is ``[trusted=yes]``."""
    for package in locked:
        source = debs.get(package.sha256)
        if source is None:
            raise BuildboxError(f"package {package.name} ({platform}) has not been fetched")
        target = repo / package.filename
        shutil.copyfile(source, target)
        found = (file_sha256(target), target.stat().st_size)
        if found != (package.sha256, package.size):
            raise BuildboxError(
                f"package {package.name} {package.version} ({platform}): {source} has "
                f"{found[1]} bytes and sha256 {found[0]}, not the locked {package.size} bytes "
                f"and sha256 {package.sha256}; delete it from the cache and build again"
            )


def _reuse(
    engine: Engine,
    box: Box,
    platform: str,
    record: Path,
    reference: str,
    log: Callable[[str], None],
) -> tuple[str, str] | None:
    """The base bootstrapped before from the same inputs, verified; None to bootstrap again."""
    try:
        known = json.loads(record.read_text())
        content, image_id = str(known["content"]), str(known["image"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        log(f"{record} is unreadable: bootstrapping the base of {box.name} ({platform}) again")
        return None
    tarball = record.with_name(f"{content.removeprefix('sha256:')}.tar")
    if not tarball.is_file() or "sha256:" + file_sha256(tarball) != content:
        log(
            f"the cached root filesystem of {box.name}'s base ({platform}), {tarball}, is missing "
            f"or does not hash to {content}: bootstrapping it again"
        )
        return None
    image = engine.image(image_id) if _IMAGE_ID.fullmatch(image_id) else None
    if image is None or not _holds(image, content):
        log(
            f"the engine has no image {image_id} holding {tarball.name}: importing the base of "
            f"{box.name} ({platform}) again from it"
        )
        image_id = _import_verified(engine, tarball, platform, content, reference)
        write_atomically(record, json.dumps({"content": content, "image": image_id}))
    return image_id, content


def _holds(image: LocalImage, content: str) -> bool:
    """Whether ``image`` is exactly the root filesystem tarball whose sha256 is ``content``."""
    return image.diff_ids == (content,) and image.labels.get(LABEL_CONTENT) == content


def _import_verified(
    engine: Engine, tarball: Path, platform: str, content: str, reference: str
) -> str:
    """``docker import`` of the verified tarball; the id of the image, checked to hold it."""
    image_id = import_image(engine, tarball, platform, content, reference)
    image = engine.image(image_id)
    if image is None or not _holds(image, content):
        layers = ", ".join(image.diff_ids) if image else "no image"
        raise BuildboxError(
            f"docker import of {tarball} gave {image_id} with layers {layers}, not the one "
            f"layer {content}: this engine changes imported root filesystems; report it"
        )
    return image.id


def import_image(engine: Engine, tarball: Path, platform: str, content: str, reference: str) -> str:
    """Import ``tarball`` as one uncompressed layer, labelled ``content``: its image id."""
    imported = subprocess.run(
        [docker_cli(), "import", "--platform", platform,
         "--change", f"LABEL {LABEL_CONTENT}={content}", str(tarball), reference],
        capture_output=True, text=True, check=False, env=engine.cli_environment(),
    )  # fmt: skip
    if imported.returncode != 0:
        raise BuildboxError(f"docker import of the base failed: {imported.stderr.strip()}")
    printed = imported.stdout.strip()
    if _IMAGE_ID.fullmatch(printed):
        return printed
    named = engine.image(reference)  # an engine that prints no id: the name, checked after
    if named is None:
        raise BuildboxError(f"docker import of the base printed {printed!r} and made no image")
    return named.id


def mmdebstrap_options(box: Box, platform: str) -> list[str]:
    """What a bootstrapped base is, as mmdebstrap takes it (the same online and offline)."""
    assert box.bootstrap is not None
    options = [f"--variant={box.bootstrap.variant}", f"--architectures={deb_arch(platform)}"]
    if box.packages:
        options.append("--include=" + ",".join(box.packages))
    return options


def run_mmdebstrap(command: list[str], what: str, epoch: int | None = None) -> None:
    """Run mmdebstrap (its maintainer scripts run as root) with no registry secret or token in
    its environment, and ``SOURCE_DATE_EPOCH`` when the output must be reproducible."""
    env = build_environment(os.environ)
    if epoch is not None:
        env["SOURCE_DATE_EPOCH"] = str(epoch)
    if shutil.which("mmdebstrap") is None:
        raise BuildboxError(
            f"cannot {what}: a bootstrapped base needs mmdebstrap (Debian: apt-get install "
            "mmdebstrap apt-utils)"
        )
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env,
                          timeout=3600)  # fmt: skip
    if done.returncode != 0:
        tail = "\n  ".join(done.stderr.strip().splitlines()[-15:])
        raise BuildboxError(f"mmdebstrap could not {what} (exit {done.returncode}):\n  {tail}")


def _run(command: list[str], cwd: Path, into: Path) -> None:
    with into.open("w") as stream:
        done = subprocess.run(
            command,
            cwd=cwd,
            stdout=stream,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
            env=build_environment(os.environ),
        )
    if done.returncode != 0:
        raise BuildboxError(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
