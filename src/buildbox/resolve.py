"""Resolving a box's OS packages with the distribution's own resolver, to pin them in its package
lock (`invoke lock`).

For every platform, a throw-away container of the pinned base (the only step with the network,
the host's) runs ``apt-get update`` and asks apt what ``apt-get install`` of the listed packages
would install: every package with the dependencies the base does not have yet (``-s``), and for
each its URL, size and sha256 (``--print-uris``), which apt takes from the archive's Packages
index after verifying that index against the archive's signed Release file. Nothing is computed
from a download. The result is ``buildboxes/<box>/packages.lock`` (``define.lock``).

rpm (yum/dnf) bases are designed the same way (``dnf install --assumeno`` for the set,
``dnf repoquery --location`` and the repository metadata's sha256 for the pins) but not written
yet: no CentOS or Fedora repository answers from this project's CI, so it could not be tested.
"""

from __future__ import annotations

import re
import shlex
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from debian import deb822

from buildbox.build.bootstrap import mmdebstrap_options, run_mmdebstrap
from buildbox.build.build import ensure_base
from buildbox.build.engine import Engine
from buildbox.define.boxes import Box
from buildbox.define.lock import LOCK_FILE, LockedPackage, PackageLock, PlatformLock
from buildbox.define.project import Project
from buildbox.errors import BuildboxError
from buildbox.files import write_atomically
from buildbox.oci.refs import Reference

_SIMULATED = "@@buildbox-simulated"
_URIS = "@@buildbox-uris"
_INDEX = "@@buildbox-index"
_END = "@@buildbox-end"
#: ``Inst libmagic1 (1:5.44-3 Debian:12.8/stable [amd64])``; an upgrade has ``[old]`` first.
_INST = re.compile(r"^Inst (\S+?)(?::\S+)? (?:\[[^\]]*\] )?\((\S+) .*\[([^\]]+)\]\)")
#: ``'<url>' libmagic1_1%3a5.44-3_amd64.deb 103752 MD5Sum:<hex>``: URL and file name.
_URI = re.compile(r"^'([^']+)' (\S+) \d+ ")
#: ``name=version`` of each ``Inst`` line, for apt-cache show (in the base's sed).
_INST_SED = r"s/^Inst \([^ ]*\) \(\[[^]]*\] \)\{0,1\}(\([^ ]*\) .*/\1=\3/p"


#: apt sources for an archive snapshot, by the base's /etc/os-release ID. Check-Valid-Until is
#: off for these sources only: a snapshot's Release files are old by design.
_DEBIAN_SNAPSHOT = "deb [check-valid-until=no] http://snapshot.debian.org/archive"
_UBUNTU_SNAPSHOT = "deb [check-valid-until=no] http://snapshot.ubuntu.com/ubuntu/{time}"
SNAPSHOT_SOURCES = {
    "debian": (
        _DEBIAN_SNAPSHOT + "/debian/{time} {codename} main",
        _DEBIAN_SNAPSHOT + "/debian/{time} {codename}-updates main",
        _DEBIAN_SNAPSHOT + "/debian-security/{time} {codename}-security main",
    ),
    "ubuntu": (
        _UBUNTU_SNAPSHOT + " {codename} main universe",
        _UBUNTU_SNAPSHOT + " {codename}-updates main universe",
        _UBUNTU_SNAPSHOT + " {codename}-security main universe",
    ),
}


def snapshot_script(snapshot: str) -> list[str]:
    """Shell lines that point apt at the archive snapshot ``snapshot`` instead of the base's
    own sources (the throw-away container's, that is)."""
    lines = [". /etc/os-release", "rm -f /etc/apt/sources.list.d/*", "known="]
    for distro, sources in SNAPSHOT_SOURCES.items():
        quoted = " ".join(
            f'"{line.format(time=snapshot, codename="$VERSION_CODENAME")}"' for line in sources
        )
        write = f'printf "%s\\n" {quoted} >/etc/apt/sources.list'
        lines.append(f'[ "$ID" != {distro} ] || {{ {write}; known=1; }}')
    lines.append(
        '[ -n "$known" ] || { echo "buildbox: no archive snapshot known for $ID"; exit 5; }'
    )
    return lines


def resolve_script(packages: tuple[str, ...], snapshot: str = "") -> str:
    """The shell script the base runs: apt's verified index, and what install would take.

    ``--print-uris`` gives each file's URL (its hash is the weakest the index has, MD5 on
    Debian 12's apt); the sha256 and size come from ``apt-cache show``, i.e. the Packages index
    apt verified against the archive's signed Release file.
    """
    listed = shlex.join(packages)
    options = "-y --no-install-recommends"
    return "\n".join(
        [
            "set -eu",
            "export DEBIAN_FRONTEND=noninteractive",
            "command -v apt-get >/dev/null || { echo 'buildbox: no apt-get in the base'; exit 3; }",
            *(snapshot_script(snapshot) if snapshot else []),
            (
                "apt-get update -q >/tmp/buildbox-update.log 2>&1 || "
                "{ cat /tmp/buildbox-update.log; exit 4; }"
            ),
            f"apt-get install -s {options} {listed} >/tmp/buildbox-simulated",
            f"echo {_SIMULATED}",
            "cat /tmp/buildbox-simulated",
            f"echo {_URIS}",
            f"apt-get install --print-uris -qq {options} {listed}",
            f"echo {_INDEX}",
            (
                f"sed -n {shlex.quote(_INST_SED)} /tmp/buildbox-simulated "
                "| xargs -r apt-cache show --no-all-versions"
            ),
            f"echo {_END}",
        ]
    )


def _section(output: str, start: str, end: str) -> str:
    return output.partition(start + "\n")[2].partition(end)[0]


def parse_resolution(output: str) -> tuple[LockedPackage, ...]:
    """The packages apt would install, from :func:`resolve_script`'s output, sorted by name."""
    chosen = [
        m.groups()
        for line in _section(output, _SIMULATED, _URIS).splitlines()
        if (m := _INST.match(line))
    ]
    urls = {
        m.group(2): m.group(1)
        for line in _section(output, _URIS, _INDEX).splitlines()
        if (m := _URI.match(line.strip()))
    }
    index = {
        (str(p["Package"]), str(p["Version"]), str(p["Architecture"])): p
        for p in deb822.Packages.iter_paragraphs(_section(output, _INDEX, _END), use_apt_pkg=False)
        if "Package" in p
    }
    packages = []
    for name, version, arch in chosen:
        filename = f"{name}_{version.replace(':', '%3a')}_{arch}.deb"
        entry = index.get((name, version, arch))
        url = urls.get(filename)
        if entry is None or url is None or "SHA256" not in entry:
            raise BuildboxError(
                f"apt would install {name} {version} ({arch}) but its index gave no URL and "
                "sha256 for it (is it from a local source, or already downloaded in the base?)"
            )
        if not unquote(url).endswith("/" + str(entry["Filename"])):
            raise BuildboxError(f"{name} {version}: apt's URL {url} is not its index's file")
        packages.append(
            LockedPackage(name, version, arch, url, str(entry["SHA256"]), int(entry["Size"]))
        )
    return tuple(sorted(packages))


@dataclass(frozen=True)
class Change:
    platform: str
    kind: str  # added, removed, version
    name: str
    old: str
    new: str


def resolve_bootstrap(box: Box, platform: str) -> tuple[LockedPackage, ...]:
    """Every package mmdebstrap installs for the bootstrapped base, pinned from the index.

    mmdebstrap (real apt, which verifies the archive's signed Release file) runs once online;
    its hooks copy out the downloaded .deb names and apt's verified lists: each package's
    version, sha256 and size come from those lists, never from the downloads.
    """
    assert box.bootstrap is not None
    mirror = box.bootstrap.mirror.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="buildbox-resolve-") as scratch:
        debs, lists = Path(scratch) / "debs", Path(scratch) / "lists"
        debs.mkdir()
        lists.mkdir()
        command = [
            "mmdebstrap", "--mode=root", "--format=null", *mmdebstrap_options(box, platform),
            "--skip=essential/unlink", "--skip=cleanup/apt/cache",
            f"--customize-hook=sync-out /var/cache/apt/archives {debs}",
            f"--customize-hook=sync-out /var/lib/apt/lists {lists}",
            box.bootstrap.suite, "/dev/null", _source(box, mirror),
        ]  # fmt: skip
        run_mmdebstrap(command, f"resolve the base of {box.name} ({platform})")
        index: dict[tuple[str, str, str], deb822.Packages] = {}
        for packages_file in lists.glob("*_Packages"):
            with packages_file.open(encoding="utf-8") as stream:
                for entry in deb822.Packages.iter_paragraphs(stream, use_apt_pkg=False):
                    if entry is None or "Package" not in entry:
                        continue
                    key = (str(entry["Package"]), str(entry["Version"]),
                           str(entry["Architecture"]))  # fmt: skip
                    index[key] = entry
        found = []
        for deb in sorted(debs.glob("*.deb")):
            name, _, rest = unquote(deb.name).removesuffix(".deb").partition("_")
            version, _, arch = rest.rpartition("_")
            listed = index.get((name, version, arch))
            if listed is None:
                raise BuildboxError(
                    f"mmdebstrap installed {deb.name}, which the archive's index does not list"
                )
            url = f"{_pool(box, mirror)}/{listed['Filename']}"
            found.append(
                LockedPackage(name, version, arch, url, str(listed["SHA256"]), int(listed["Size"]))
            )
    return tuple(sorted(found))


def _source(box: Box, mirror: str) -> str:
    """mmdebstrap's source: the mirror, or its archive snapshot (whose Release is old)."""
    if not box.snapshot or box.bootstrap is None:
        return mirror
    return f"deb [check-valid-until=no] {_pool(box, mirror)} {box.bootstrap.suite} main"


def _pool(box: Box, mirror: str) -> str:
    """Where the lock's URLs point: the mirror, or its archive snapshot."""
    if not box.snapshot:
        return mirror
    if "ubuntu" in mirror:
        return f"http://snapshot.ubuntu.com/ubuntu/{box.snapshot}"
    return f"http://snapshot.debian.org/archive/debian/{box.snapshot}"


def changes(old: PackageLock | None, new: PackageLock) -> list[Change]:
    """What a new lock adds, removes or moves to another version, per platform."""
    found = []
    for platform, lock in sorted(new.platforms.items()):
        before = {p.name: p for p in old.platforms[platform].packages} if (
            old and platform in old.platforms) else {}  # fmt: skip
        after = {p.name: p for p in lock.packages}
        for name in sorted(before.keys() | after.keys()):
            a, b = before.get(name), after.get(name)
            if a is None and b is not None:
                found.append(Change(platform, "added", name, "", b.version))
            elif b is None and a is not None:
                found.append(Change(platform, "removed", name, a.version, ""))
            elif a is not None and b is not None and (a.version, a.sha256) != (b.version, b.sha256):
                found.append(Change(platform, "version", name, a.version, b.version))
    return found


def resolve_box(
    project: Project,
    box: Box,
    *,
    engine: Engine,
    platform: str | None = None,
    log: Callable[[str], None] = print,
) -> PackageLock:
    """Resolve the box's packages for each platform (or just ``platform``, keeping the others
    from the current lock) against its pinned base."""
    if not box.packages and box.bootstrap is None:
        raise BuildboxError(f"box {box.name} lists no packages: nothing to lock")
    platforms: dict[str, PlatformLock] = {}
    if (
        platform is not None
        and box.lock is not None
        and (box.lock.base, box.lock.snapshot) == (box.base, box.snapshot)
    ):
        platforms = {p: facts for p, facts in box.lock.platforms.items() if p != platform}
    for each in box.platforms_for(platform):
        if box.bootstrap is not None:
            log(f"resolving the bootstrapped base of {box.name} ({each}) with mmdebstrap")
            platforms[each] = PlatformLock("", resolve_bootstrap(box, each))
            continue
        base = ensure_base(engine, box.base, each, False, project.settings)
        log(f"resolving {len(box.packages)} package(s) for {box.name} ({each}) in {base}")
        output, status = engine.run_script(
            base, resolve_script(box.packages, box.snapshot), 1800, "lock", network="host"
        )
        if status != 0:
            tail = "\n  ".join(output.strip().splitlines()[-15:])
            raise BuildboxError(
                f"apt could not resolve {' '.join(box.packages)} for {box.name} ({each}) in "
                f"{base} (exit {status}):\n  {tail}"
            )
        digest = Reference.parse(base, default_host=True).digest or base
        platforms[each] = PlatformLock(digest, parse_resolution(output))
    return PackageLock(box.base, tuple(sorted(box.packages)), platforms, box.snapshot)


def write(box: Box, lock: PackageLock) -> None:
    write_atomically(box.directory / LOCK_FILE, lock.render())
