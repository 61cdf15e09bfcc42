"""Resolving a box's OS packages with the distribution's own resolver, to pin them in its package
lock (`invoke lock`).

For every platform, a throw-away container of the pinned base (the only step with the network,
the host's) runs ``apt-get update`` and asks apt what ``apt-get install`` of the listed packages
would install: every package with the dependencies the base does not have yet (``-s``), and for
each its URL, size and sha256 (``--print-uris``), which apt takes from the archive's Packages
index after verifying that index against the archive's signed Release file. Nothing is computed
from a download. The result is ``buildboxes/<box>/packages.lock`` (``define.lock``).

apt's word is not taken alone: every source's signed ``InRelease`` (as apt fetched it) is
verified again on the host with gpgv and the keyring the project pins (``shared/keyrings/``),
each Packages index it lists is fetched by hash into the verified cache, and every pin is
checked against its index's stanza (``define.lock.proof_problems``) before the lock is written,
with the InRelease files beside it in ``packages.proof/``.

rpm (yum/dnf) bases are designed the same way (``dnf install --assumeno`` for the set,
``dnf repoquery --location`` and the repository metadata's sha256 for the pins) but not written
yet: no CentOS or Fedora repository answers from this project's CI, so it could not be tested.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import shlex
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from debian import deb822

from buildbox.build.bootstrap import mmdebstrap_options, run_mmdebstrap
from buildbox.build.build import ensure_base
from buildbox.build.engine import Engine
from buildbox.define.boxes import Box
from buildbox.define.lock import (
    DEFAULT_KEYRING,
    LOCK_FILE,
    PROOF_DIR,
    Index,
    LockedPackage,
    PackageLock,
    PlatformLock,
    Signed,
    Source,
    deb_arch,
    keyring_files,
    proof_problems,
    read_index,
    verify_inrelease,
)
from buildbox.define.project import Project
from buildbox.errors import BuildboxError
from buildbox.fetch import Fetcher, wanted_indices
from buildbox.files import write_atomically
from buildbox.oci.refs import Reference

_SIMULATED = "@@buildbox-simulated"
_URIS = "@@buildbox-uris"
_INDEX = "@@buildbox-index"
_TARGETS = "@@buildbox-targets"
_INRELEASE = "@@buildbox-inrelease"
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
            # The proof: the base's distribution, each Packages index apt used, and each
            # source's InRelease as fetched (base64: the bytes exactly).
            f"echo {_TARGETS}",
            '. /etc/os-release && echo "$ID"',
            (
                "apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(METAKEY) $(FILENAME)' "
                "'Created-By: Packages'"
            ),
            f"echo {_INRELEASE}",
            (
                "for f in /var/lib/apt/lists/*_InRelease; do "
                '[ ! -f "$f" ] || { echo "${f##*/}"; base64 -w0 "$f"; echo; }; done'
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


@dataclass(frozen=True)
class Resolution:
    """A new package lock, and the InRelease files its proof names (by name, as fetched)."""

    lock: PackageLock
    proofs: Mapping[str, bytes]


def proof_name(list_name: str, data: bytes) -> str:
    """The name an InRelease is kept under in packages.proof/: apt's name for it with the start
    of its sha256, so that locks made at different times (per platform) do not collide."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    return f"{list_name.removesuffix('InRelease')}{digest}_InRelease"


def _verified(data: bytes, keyring: tuple[Path, ...], what: str) -> Signed:
    try:
        return verify_inrelease(data, keyring)
    except ValueError as error:
        raise BuildboxError(f"the InRelease of {what}: {error}") from None


def _index(release: deb822.Release, metakey: str, what: str) -> Index:
    """The index ``metakey`` (``main/binary-amd64/Packages``) as the signed Release lists it,
    compressed (the archive serves those by hash)."""
    listed = {str(e["name"]): e for e in release.get("SHA256", [])}
    for name in (f"{metakey}.xz", f"{metakey}.gz", metakey):
        if name in listed:
            return Index(name, str(listed[name]["sha256"]), int(listed[name]["size"]))
    raise BuildboxError(f"the signed InRelease of {what} lists no {metakey} (sha256)")


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


def parse_sources(
    output: str, platform: str, keyring: tuple[Path, ...]
) -> tuple[str, tuple[Source, ...], dict[str, bytes]]:
    """From :func:`resolve_script`'s output: the base's distribution (os-release ID), the
    sources of the platform's Packages indices, each with its InRelease verified against
    ``keyring`` and the indices it lists, and those InRelease files by proof name."""
    lines = _section(output, _TARGETS, _INRELEASE).splitlines()
    distribution = lines[0].strip() if lines else ""
    arch = deb_arch(platform)
    targets = [
        words
        for line in lines[1:]
        if len(words := line.split()) == 4 and words[2].endswith(f"/binary-{arch}/Packages")
    ]
    raw = _section(output, _INRELEASE, _SIMULATED).splitlines()
    inreleases = {}
    for name, encoded in zip(raw[::2], raw[1::2], strict=False):
        try:
            inreleases[name.strip()] = base64.b64decode(encoded.strip(), validate=True)
        except binascii.Error:
            raise BuildboxError(f"the base printed {name} unreadably (base64)") from None
    grouped: dict[str, tuple[str, str, list[str]]] = {}
    for repo, suite, metakey, filename in targets:
        prefixes = [n for n in inreleases if Path(filename).name.startswith(n[: -len("InRelease")])]
        if not prefixes:
            raise BuildboxError(f"apt used {repo} {suite} {metakey} without a signed InRelease")
        name = max(prefixes, key=len)
        grouped.setdefault(name, (repo.rstrip("/"), suite, []))[2].append(metakey)
    sources, proofs = [], {}
    for name, (url, suite, metakeys) in sorted(grouped.items()):
        what = f"{url} {suite}"
        signed = _verified(inreleases[name], keyring, what)
        indices = tuple(sorted(_index(signed.release, m, what) for m in metakeys))
        kept = proof_name(name, inreleases[name])
        sources.append(Source(url, suite, kept, signed.fingerprints, indices))
        proofs[kept] = inreleases[name]
    if not sources:
        raise BuildboxError(f"apt in the base used no Packages index for {arch}")
    return distribution, tuple(sources), proofs


@dataclass(frozen=True)
class Change:
    platform: str
    kind: str  # added, removed, version
    name: str
    old: str
    new: str


def resolve_bootstrap(
    box: Box, platform: str, keyring: tuple[Path, ...], fetcher: Fetcher
) -> tuple[PlatformLock, dict[str, bytes]]:
    """Every package mmdebstrap installs for the bootstrapped base, pinned from the signed index,
    and the InRelease that signs it.

    mmdebstrap (real apt) runs once online, trusting the pinned keyring only (``signed-by`` on
    its one source, ``--keyring`` instead of the host's trusted.gpg.d); its hooks copy out the
    downloaded .deb names and apt's lists. The InRelease is verified again here, its Packages
    index fetched by hash into the verified cache, and each package's version, URL, sha256 and
    size taken from that index, never from the downloads.
    """
    assert box.bootstrap is not None
    mirror = box.bootstrap.mirror.rstrip("/")
    suite, pool = box.bootstrap.suite, _pool(box, mirror)
    what = f"{pool} {suite}"
    with tempfile.TemporaryDirectory(prefix="buildbox-resolve-") as scratch:
        debs, lists = Path(scratch) / "debs", Path(scratch) / "lists"
        debs.mkdir()
        lists.mkdir()
        # apt's trusted keys are the pinned ones only, not the host's (/etc/apt/trusted.gpg*);
        # readable by apt's unprivileged user, which verifies the signatures.
        Path(scratch).chmod(0o755)
        trusted = Path(scratch) / "trusted.gpg.d"
        trusted.mkdir(mode=0o755)
        for number, key in enumerate(keyring):
            shutil.copyfile(key, trusted / f"{number:02d}-{key.name}")
            (trusted / f"{number:02d}-{key.name}").chmod(0o644)
        options = ["signed-by=" + ",".join(str(key) for key in sorted(trusted.iterdir()))]
        if box.snapshot:  # a snapshot's Release is old by design
            options.append("check-valid-until=no")
        command = [
            "mmdebstrap", "--mode=root", "--format=null", *mmdebstrap_options(box, platform),
            f"--keyring={trusted}", f'--aptopt=Dir::Etc::Trusted "{scratch}/none.gpg"',
            "--skip=essential/unlink", "--skip=cleanup/apt/cache",
            f"--customize-hook=sync-out /var/cache/apt/archives {debs}",
            f"--customize-hook=sync-out /var/lib/apt/lists {lists}",
            suite, "/dev/null", f"deb [{' '.join(options)}] {pool} {suite} main",
        ]  # fmt: skip
        run_mmdebstrap(command, f"resolve the base of {box.name} ({platform})")
        inreleases = sorted(lists.glob("*_InRelease"))
        if len(inreleases) != 1:
            raise BuildboxError(
                f"mmdebstrap fetched {len(inreleases)} InRelease files for {what}, not one "
                "(an archive without a signed InRelease cannot be locked)"
            )
        data = inreleases[0].read_bytes()
        signed = _verified(data, keyring, what)
        index = _index(signed.release, f"main/binary-{deb_arch(platform)}/Packages", what)
        source = Source(pool, suite, proof_name(inreleases[0].name, data),
                        signed.fingerprints, (index,))  # fmt: skip
        chosen = {}
        for deb in sorted(debs.glob("*.deb")):
            name, _, rest = unquote(deb.name).removesuffix(".deb").partition("_")
            version, _, arch = rest.rpartition("_")
            chosen[name] = (version, arch, deb.name)
    [indexed] = _fetch_indices(box.name, platform, (source,), fetcher).values()
    listed = {
        (str(e["Package"]), str(e["Version"]), str(e["Architecture"])): e
        for e in read_index(indexed, index.path, set(chosen))
    }
    found = []
    for name, (version, arch, filename) in sorted(chosen.items()):
        entry = listed.get((name, version, arch))
        if entry is None:
            raise BuildboxError(
                f"mmdebstrap installed {filename}, which the signed index of {what} does not list"
            )
        found.append(
            LockedPackage(name, str(entry["Version"]), arch, f"{pool}/{entry['Filename']}",
                          str(entry["SHA256"]), int(entry["Size"]))
        )  # fmt: skip
    return PlatformLock("", tuple(sorted(found)), (source,)), {source.inrelease: data}


def _fetch_indices(
    box: str, platform: str, sources: tuple[Source, ...], fetcher: Fetcher
) -> dict[str, Path]:
    """The sources' Packages indices, fetched by hash into the verified cache."""
    lock = PackageLock("", (), {platform: PlatformLock("", (), sources)})
    return {f.wanted.sha256: f.path for f in fetcher.fetch_all(wanted_indices(box, lock))}


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
    fetcher: Fetcher,
    platform: str | None = None,
    log: Callable[[str], None] = print,
) -> Resolution:
    """Resolve the box's packages for each platform (or just ``platform``, keeping the others
    from the current lock) against its pinned base, with the proof that vouches for each pin."""
    if not box.packages and box.bootstrap is None:
        raise BuildboxError(f"box {box.name} lists no packages: nothing to lock")
    keyring_name = (box.bootstrap.keyring if box.bootstrap else "") or DEFAULT_KEYRING
    platforms: dict[str, PlatformLock] = {}
    if (
        platform is not None
        and box.lock is not None
        and (box.lock.base, box.lock.snapshot) == (box.base, box.snapshot)
    ):
        platforms = {p: facts for p, facts in box.lock.platforms.items() if p != platform}
    proofs: dict[str, bytes] = {}
    for each in box.platforms_for(platform):
        if box.bootstrap is not None:
            log(f"resolving the bootstrapped base of {box.name} ({each}) with mmdebstrap")
            keyring = _keyring(project, keyring_name, box)
            platforms[each], found = resolve_bootstrap(box, each, keyring, fetcher)
            proofs.update(found)
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
        # An image base's archive is its distribution's: that keyring, pinned by the project.
        distribution = _section(output, _TARGETS, _INRELEASE).strip().partition("\n")[0]
        keyring_name = f"shared/keyrings/{distribution}" if distribution else DEFAULT_KEYRING
        keyring = _keyring(project, keyring_name, box)
        _, sources, found = parse_sources(output, each, keyring)
        digest = Reference.parse(base, default_host=True).digest or base
        platforms[each] = PlatformLock(digest, parse_resolution(output), sources)
        proofs.update(found)
    lock = PackageLock(box.base, tuple(sorted(box.packages)), platforms, box.snapshot,
                       keyring_name)  # fmt: skip
    _check_new(project, box, lock, proofs, fetcher)
    return Resolution(lock, proofs)


def _keyring(project: Project, name: str, box: Box) -> tuple[Path, ...]:
    try:
        return keyring_files(project.settings.root, name)
    except ValueError as error:
        raise BuildboxError(
            f"cannot lock {box.name}: {error}; the project pins archive keys under "
            "shared/keyrings/ (see its README.md)"
        ) from None


def _check_new(
    project: Project, box: Box, lock: PackageLock, proofs: Mapping[str, bytes], fetcher: Fetcher
) -> None:
    """A new lock passes what ``invoke check`` will ask of it, or is not written."""
    keyring = _keyring(project, lock.keyring, box)
    proof_dir = box.directory / PROOF_DIR
    kept = {n: (proof_dir / n).read_bytes() for n in lock.proofs - proofs.keys()
            if (proof_dir / n).is_file()}  # fmt: skip
    indices = {f.wanted.sha256: f.path for f in fetcher.fetch_all(wanted_indices(box.name, lock))}
    shown = project.settings.shown(box.directory / LOCK_FILE)
    wrong = proof_problems(lock, shown, {**kept, **proofs}, keyring, indices, box.name)
    if wrong:
        lines = "\n".join(f"  {problem}" for problem in wrong)
        raise BuildboxError(f"the new lock of {box.name} is not what the signed indices say:\n"
                            f"{lines}")  # fmt: skip


def write(box: Box, resolution: Resolution) -> None:
    """The lock and its proof: the InRelease files it names (no others) in packages.proof/."""
    proof_dir = box.directory / PROOF_DIR
    proof_dir.mkdir(exist_ok=True)
    for name, data in sorted(resolution.proofs.items()):
        write_atomically(proof_dir / name, data)
    write_atomically(box.directory / LOCK_FILE, resolution.lock.render())
    for stale in proof_dir.iterdir():
        if stale.name not in resolution.lock.proofs:
            stale.unlink()
