"""Bases bootstrapped from locked packages: mmdebstrap, offline, from verified .debs only.

The packages of the lock are fetched through the verified cache; they become a flat apt
repository (``apt-ftparchive``) that mmdebstrap installs from, with no network (``unshare -n``),
``[trusted=yes]`` because every file was checked against the lock's sha256, which came from
the archive's signed index. With ``SOURCE_DATE_EPOCH`` the root filesystem tarball is the same
bytes for the same lock and epoch on any machine; its sha256 is the base's content digest,
which labels and the SBOM carry as an image base's digest. The tarball becomes a local image
(``docker import``), named by that digest.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from buildbox.build.buildkit import docker_cli
from buildbox.build.engine import Engine
from buildbox.define.boxes import Box
from buildbox.digests import file_sha256
from buildbox.errors import BuildboxError

#: The label an imported base carries: the sha256 of the root filesystem it was made from.
LABEL_CONTENT = "dev.buildbox.base-content"


def bootstrap_base(
    engine: Engine,
    box: Box,
    platform: str,
    debs: dict[str, Path],
    epoch: int,
    log: Callable[[str], None] = print,
    fresh: bool = False,
) -> tuple[str, str]:
    """The local image of the box's bootstrapped base for ``platform``, made now if needed (or
    ``fresh``, made again whatever exists): (its reference, the content digest ``sha256:<hex>``
    of its root filesystem)."""
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
                str(epoch),
                *sorted(p.sha256 for p in locked),
            ]
        ).encode()
    ).hexdigest()
    reference = f"buildbox-base/{box.name}:{key[:32]}"
    existing = engine.image(reference)
    if existing is not None and existing.labels.get(LABEL_CONTENT) and not fresh:
        return reference, existing.labels[LABEL_CONTENT]
    for tool in ("apt-ftparchive", "unshare"):
        if shutil.which(tool) is None:
            raise BuildboxError(
                f"a bootstrapped base needs {tool} (Debian: apt-get install apt-utils util-linux)"
            )
    log(f"bootstrapping the {box.bootstrap.suite} base of {box.name} ({platform}) offline")
    with tempfile.TemporaryDirectory(prefix="buildbox-bootstrap-") as scratch:
        repo, rootfs = Path(scratch) / "repo", Path(scratch) / "rootfs.tar"
        repo.mkdir()
        for package in locked:
            source = debs.get(package.sha256)
            if source is None:
                raise BuildboxError(f"package {package.name} ({platform}) has not been fetched")
            shutil.copyfile(source, repo / package.filename)
        suite = box.bootstrap.suite
        release = [
            f"-oAPT::FTPArchive::Release::{field}={suite}" for field in ("Suite", "Codename")
        ]
        _run(["apt-ftparchive", "packages", "."], repo, repo / "Packages")
        _run(["apt-ftparchive", *release, "release", "."], repo, repo / "Release")
        sources = f"deb {box.bootstrap.mirror} {suite} main"
        run_mmdebstrap(
            ["unshare", "--net", "mmdebstrap", "--mode=root", "--format=tar", "--skip=output/dev",
             *options,
             # Inside the image, apt points at the real archive, not at the build's repository.
             f"--customize-hook=echo '{sources}' > \"$1/etc/apt/sources.list\"",
             suite, str(rootfs), f"deb [trusted=yes] copy://{repo} ./"],
            f"bootstrap the base of {box.name} ({platform}) from its lock",
            env={**os.environ, "SOURCE_DATE_EPOCH": str(epoch)},
        )  # fmt: skip
        content = "sha256:" + file_sha256(rootfs)
        imported = subprocess.run(
            [docker_cli(), "import", "--platform", platform,
             "--change", f"LABEL {LABEL_CONTENT}={content}", str(rootfs), reference],
            capture_output=True, text=True, check=False, env=engine.cli_environment(),
        )  # fmt: skip
        if imported.returncode != 0:
            raise BuildboxError(f"docker import of the base failed: {imported.stderr.strip()}")
    return reference, content


def mmdebstrap_options(box: Box, platform: str) -> list[str]:
    """What a bootstrapped base is, as mmdebstrap takes it (the same online and offline)."""
    assert box.bootstrap is not None
    options = [f"--variant={box.bootstrap.variant}", f"--architectures={deb_arch(platform)}"]
    if box.packages:
        options.append("--include=" + ",".join(box.packages))
    return options


def deb_arch(platform: str) -> str:
    """Debian's name for a platform's architecture (linux/arm/v7 is armhf)."""
    return {"linux/arm/v7": "armhf", "linux/arm/v6": "armel"}.get(platform, platform.split("/")[1])


def run_mmdebstrap(command: list[str], what: str, env: dict[str, str] | None = None) -> None:
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
            command, cwd=cwd, stdout=stream, stderr=subprocess.PIPE, text=True, check=False
        )
    if done.returncode != 0:
        raise BuildboxError(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
