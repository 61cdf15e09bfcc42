"""This machine's platform, and whether the kernel can run another platform's binaries."""

from __future__ import annotations

import platform as host
from pathlib import Path

from buildbox.errors import BuildboxError

_HOST_PLATFORMS = {"x86_64": "linux/amd64", "amd64": "linux/amd64", "aarch64": "linux/arm64"}
#: The names qemu-user-static registers its binfmt handlers under.
_QEMU_NAMES = {"linux/amd64": "x86_64", "linux/arm64": "aarch64", "linux/arm/v7": "arm"}
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")


def host_platform() -> str:
    machine = host.machine()
    return _HOST_PLATFORMS.get(machine, f"linux/{machine}")


def check_emulation(platform: str, binfmt_dir: Path = BINFMT_DIR) -> None:
    """A platform other than this machine's builds only where the kernel can run its binaries."""
    native = host_platform()
    if platform == native:
        return
    arch = _QEMU_NAMES.get(platform, platform.rsplit("/", 1)[-1])
    handler = binfmt_dir / f"qemu-{arch}"
    try:
        enabled = handler.read_text().splitlines()[0] == "enabled"
    except (OSError, IndexError):
        enabled = False
    if not enabled:
        raise BuildboxError(
            f"building {platform} on this {native} machine needs emulation, and no binfmt "
            f"handler for {arch} is registered ({handler}). On Debian or Ubuntu: "
            "apt-get install qemu-user-static binfmt-support (then `update-binfmts --enable`)."
        )
