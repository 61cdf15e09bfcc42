"""A box's OS package lock, ``buildboxes/<box>/packages.lock``: every package it installs, pinned,
with the proof that the archive's signing key vouches for each pin.

Written by ``invoke lock`` (``buildbox.resolve``), read by everything else. Per platform: each
package's name, version, architecture, download URL, sha256 and size, as the archive's index
gives them, the base image they were resolved against, and the apt sources they came from: for
each, its signed ``InRelease`` exactly as fetched (kept beside the lock, in ``packages.proof/``),
the fingerprints of the keys that signed it, and the Packages indices with the sha256 and size
the InRelease lists. :func:`proof_problems` re-derives every pin from that chain: signature
(with the project's pinned keyring only) -> index hash -> the index's stanza of each package.
JSON with sorted keys and entries, so a re-lock diffs cleanly in review.
"""

from __future__ import annotations

import email.utils
import gzip
import json
import lzma
import posixpath
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from debian import deb822

from buildbox.define import yamldoc
from buildbox.define.library import url_problem
from buildbox.errors import Problem

LOCK_FILE = "packages.lock"
#: Beside the lock: each source's signed InRelease, exactly as apt fetched it.
PROOF_DIR = "packages.proof"
SCHEMA = "buildbox-packages/2"
#: Locks written before the proof was kept.
_OLD_SCHEMAS = ("buildbox-packages/1",)
#: A box's keyring when box.yaml names none (relative to the project root).
DEFAULT_KEYRING = "shared/keyrings/debian"
#: A .deb's name in the archive's pool: ``name_version_arch.deb`` (the version without epoch).
_DEB_FILE = re.compile(r"[a-z0-9][a-z0-9+.-]*_[A-Za-z0-9.+~-]+_[a-z0-9-]+\.deb")
#: Debian's and Ubuntu's archives, which apt itself reads over plain http: every file is
#: verified by the signed InRelease (as `invoke check` re-derives each pin from it).
ARCHIVE_HOSTS = (
    "deb.debian.org",
    "security.debian.org",
    "snapshot.debian.org",
    "archive.ubuntu.com",
    "security.ubuntu.com",
    "ports.ubuntu.com",
    "snapshot.ubuntu.com",
)
#: Where an archive's snapshots keep every file it ever published, by the ``Origin`` of its
#: signed InRelease: ``<this>/<archive>/<YYYYMMDDTHHMMSSZ>/pool/...``.
SNAPSHOT_ARCHIVES = {
    "Debian": "http://snapshot.debian.org/archive",
    "Ubuntu": "http://snapshot.ubuntu.com",
}
#: ``name`` or ``name=version``, as apt-get install takes them.
_SPEC = re.compile(r"^([a-z0-9][a-z0-9+.-]+)(?:=([A-Za-z0-9.+~:-]+))?$")


@dataclass(frozen=True, order=True)
class LockedPackage:
    name: str
    version: str
    architecture: str
    url: str
    sha256: str
    size: int

    @property
    def filename(self) -> str:
        """The .deb's name in the build context: the archive's (``name_version_arch.deb``, the
        version without its epoch; apt reads a ``%3a`` in a path as an escape)."""
        return posixpath.basename(unquote(urlsplit(self.url).path))


@dataclass(frozen=True, order=True)
class Index:
    """A Packages index of a source, as its signed InRelease lists it."""

    #: Relative to the suite's directory, e.g. ``main/binary-amd64/Packages.xz``.
    path: str
    sha256: str
    size: int


@dataclass(frozen=True, order=True)
class Source:
    """An apt source the packages came from, and the signed InRelease that vouches for it."""

    #: The archive's root, e.g. ``http://deb.debian.org/debian`` (pool/ and dists/ are under it).
    url: str
    #: The directory under dists/ (the InRelease's Suite or Codename), e.g. ``trixie``.
    suite: str
    #: The file in packages.proof/ holding the InRelease as fetched.
    inrelease: str
    #: Primary key fingerprints of the keys whose signature on the InRelease verified.
    signed_by: tuple[str, ...]
    indices: tuple[Index, ...]

    def index_url(self, index: Index) -> str:
        """Where the archive serves ``index`` by its hash (it does while an InRelease lists it)."""
        directory = posixpath.dirname(index.path)
        return f"{self.url}/dists/{self.suite}/{directory}/by-hash/SHA256/{index.sha256}"


@dataclass(frozen=True)
class PlatformLock:
    #: The platform image of the base the packages were resolved against.
    base_image: str
    packages: tuple[LockedPackage, ...]
    #: Where the packages came from, with the proof; every package is in one of their indices.
    sources: tuple[Source, ...] = ()


@dataclass(frozen=True)
class PackageLock:
    #: The box's base (as box.yaml pins it) when the lock was made.
    base: str
    #: What box.yaml asked for (names, or name=version), sorted.
    requested: tuple[str, ...]
    platforms: dict[str, PlatformLock]
    #: The archive snapshot resolved against ("" for the live archive).
    snapshot: str = ""
    #: The keyring (relative to the project root) that verified every InRelease.
    keyring: str = ""

    @property
    def proofs(self) -> set[str]:
        """The InRelease files in packages.proof/ that the lock names."""
        return {s.inrelease for lock in self.platforms.values() for s in lock.sources}

    def render(self) -> str:
        document = {
            "schema": SCHEMA,
            "base": self.base,
            "requested": sorted(self.requested),
            "snapshot": self.snapshot,
            "keyring": self.keyring,
            "platforms": {
                platform: {
                    "base_image": lock.base_image,
                    "packages": [asdict(p) for p in sorted(lock.packages)],
                    "sources": [asdict(s) for s in sorted(lock.sources)],
                }
                for platform, lock in sorted(self.platforms.items())
            },
        }
        return json.dumps(document, indent=2, sort_keys=True) + "\n"


def parse_spec(spec: str) -> tuple[str, str | None] | None:
    """``make`` -> (make, None); ``make=4.3-4.1`` -> (make, 4.3-4.1); None when malformed."""
    found = _SPEC.match(spec)
    return (found.group(1), found.group(2)) if found else None


def deb_arch(platform: str) -> str:
    """Debian's name for a platform's architecture (linux/arm/v7 is armhf)."""
    return {"linux/arm/v7": "armhf", "linux/arm/v6": "armel"}.get(platform, platform.split("/")[1])


def read(path: Path, shown: str) -> tuple[PackageLock | None, list[Problem]]:
    """The lock at ``path`` if every field of it is well-formed (its schema); otherwise None
    and what is wrong, each problem naming its field."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        return None, [Problem(shown, None, "", f"cannot be read: {error}")]
    except ValueError as error:
        return None, [Problem(shown, None, "", f"is not JSON: {error}")]
    schema = document.get("schema") if isinstance(document, dict) else None
    if schema in _OLD_SCHEMAS:
        message = f"was written without its signed proof (schema {schema!r})"
        return None, [Problem(shown, None, "", message)]
    if not isinstance(document, dict) or schema != SCHEMA:
        message = f"is not a package lock (schema {SCHEMA!r} expected)"
        return None, [Problem(shown, None, "", message)]
    found = [
        replace(problem, field=_field(document, path))
        for path, problem in yamldoc.validate(document, "packages-lock", shown)
    ]
    if found:
        return None, found
    platforms = {
        platform: PlatformLock(
            facts["base_image"],
            tuple(LockedPackage(**entry) for entry in facts["packages"]),
            tuple(
                Source(
                    entry["url"],
                    entry["suite"],
                    entry["inrelease"],
                    tuple(entry["signed_by"]),
                    tuple(Index(**index) for index in entry["indices"]),
                )
                for entry in facts["sources"]
            ),
        )
        for platform, facts in document["platforms"].items()
    }
    lock = PackageLock(
        document["base"],
        tuple(document["requested"]),
        platforms,
        document["snapshot"],
        document["keyring"],
    )
    return lock, []


def _field(document: dict[str, Any], path: yamldoc.FieldPath) -> str:
    """A field of the lock as problems name it: its path in the file, with the package's name
    after a package's index (``platforms.linux/amd64.packages[3](make).size``)."""
    steps = list(path)
    if len(steps) > 3 and steps[0] == "platforms" and steps[2] == "packages":
        entry = document["platforms"][steps[1]]["packages"][steps[3]]
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(name, str) and name:
            return (
                yamldoc.field_name(tuple(steps[:4]))
                + f"({name})"
                + "".join(
                    f".{step}" if isinstance(step, str) else f"[{step}]" for step in steps[4:]
                )
            )
    return yamldoc.field_name(tuple(steps))


def field_problems(
    lock: PackageLock, shown: str, allow_http_hosts: tuple[str, ...]
) -> list[Problem]:
    """What the schema cannot say of a lock: where its files come from (as components' URLs,
    and over http also from ARCHIVE_HOSTS), that each .deb's name is an archive file name
    (packages.sh takes it as one unquoted word), that each package is of its platform's
    architecture, and that none is listed twice."""
    found = []
    hosts = (*allow_http_hosts, *ARCHIVE_HOSTS)
    for platform, facts in sorted(lock.platforms.items()):
        for index, source in enumerate(facts.sources):
            if wrong := url_problem(source.url, hosts):
                field = f"platforms.{platform}.sources[{index}].url"
                found.append(Problem(shown, None, field, wrong))
        arch, seen = deb_arch(platform), set()
        for index, package in enumerate(facts.packages):
            field = f"platforms.{platform}.packages[{index}]({package.name})"
            if (package.name, package.architecture) in seen:
                found.append(Problem(shown, None, field, "is listed twice"))
                continue
            seen.add((package.name, package.architecture))
            if package.architecture not in (arch, "all"):
                message = (
                    f"{package.architecture!r} is not the architecture of {platform}; expected "
                    f"{arch} or all"
                )
                found.append(Problem(shown, None, f"{field}.architecture", message))
            if wrong := url_problem(package.url, hosts):
                found.append(Problem(shown, None, f"{field}.url", wrong))
            elif not _DEB_FILE.fullmatch(package.filename):
                message = (
                    f"its file name {package.filename!r} is not an archive file name "
                    "(name_version_arch.deb, of letters, digits and . + ~ - only)"
                )
                found.append(Problem(shown, None, f"{field}.url", message))
    return found


def problems(
    lock_path: Path,
    shown: str,
    base: str,
    snapshot: str,
    requested: tuple[str, ...],
    platforms: tuple[str, ...],
    box: str,
    allow_http_hosts: tuple[str, ...] = (),
) -> tuple[PackageLock | None, list[Problem]]:
    """The lock of a box that lists ``requested`` packages, and what is wrong with it (plain
    http is allowed to loopback, ``allow_http_hosts`` and ARCHIVE_HOSTS)."""
    hint = f"run `invoke lock {box}`"
    if not lock_path.is_file():
        return None, [Problem(shown, None, "", f"missing; the box lists packages: {hint}")]
    lock, wrong = read(lock_path, shown)
    if lock is not None:
        wrong = field_problems(lock, shown, allow_http_hosts)
    if lock is None or wrong:
        again = f"{hint} to write it again"
        return None, [replace(p, message=f"{p.message}; {again}") for p in wrong]
    found = []
    if lock.base != base:
        found.append(
            Problem(shown, None, "base", f"resolved against another base ({lock.base}); {hint}")
        )
    if lock.snapshot != snapshot:
        was = lock.snapshot or "the live archive"
        found.append(
            Problem(
                shown,
                None,
                "snapshot",
                f"resolved against {was}, not {snapshot or 'the live archive'}; {hint}",
            )
        )
    missing = sorted(set(requested) - set(lock.requested))
    if missing:
        found.append(
            Problem(shown, None, "requested", f"{', '.join(missing)} not in the lock; {hint}")
        )
    extra = sorted(set(lock.requested) - set(requested))
    if extra:
        found.append(
            Problem(shown, None, "requested", f"{', '.join(extra)} no longer in box.yaml; {hint}")
        )
    for platform in platforms:
        if platform not in lock.platforms:
            found.append(Problem(shown, None, "platforms", f"no lock for {platform}; {hint}"))
    return lock, found


@dataclass(frozen=True)
class Signed:
    """What gpgv verified of an InRelease: who signed it, and the signed text only."""

    fingerprints: tuple[str, ...]
    release: deb822.Release


def keyring_files(root: Path, keyring: str) -> tuple[Path, ...]:
    """The key files of ``keyring`` (a ``.gpg`` file, or a directory of them) in the project at
    ``root``; ValueError when it is outside the project or holds no keys."""
    path = (root / keyring).resolve()
    if Path(keyring).is_absolute() or not path.is_relative_to(root.resolve()):
        raise ValueError(f"keyring {keyring!r} is not a path inside the project")
    if path.is_dir():
        files = tuple(sorted(path.glob("*.gpg")))
    else:
        files = (path,) if path.is_file() else ()
    if not files:
        raise ValueError(f"keyring {keyring} holds no keys (a .gpg file, or a directory of them)")
    return files


def verify_inrelease(data: bytes, keyring: tuple[Path, ...]) -> Signed:
    """Check an InRelease's signatures with gpgv against ``keyring`` only (in an empty home: no
    default keyring, no configuration); ValueError when no key of it made a good signature.

    python-debian's ``GpgInfo`` is not used: it keeps one signature of several (Debian signs
    with three keys) and lets gpgv fall back to the home's default keyring.
    """
    if shutil.which("gpgv") is None:
        raise ValueError("gpgv is needed to verify it (Debian: apt-get install gpgv)")
    with tempfile.TemporaryDirectory(prefix="buildbox-gpgv-") as home:
        payload = Path(home) / "signed"
        command = ["gpgv", "--homedir", home, "--status-fd", "1", "--output", str(payload)]
        for key in keyring:
            command += ["--keyring", str(key)]
        done = subprocess.run(
            [*command, "-"], input=data, capture_output=True, check=False, timeout=60
        )
        status = [
            line.split()[1:]
            for line in done.stdout.decode(errors="replace").splitlines()
            if line.startswith("[GNUPG:] ") and len(line.split()) > 1
        ]
        if any(words[0] == "BADSIG" for words in status):
            raise ValueError("a signature on it is bad: it was changed after it was signed")
        # VALIDSIG <key fingerprint> ... <primary key fingerprint>: the primary key's.
        signers = sorted({w[10] for w in status if w[0] == "VALIDSIG" and len(w) > 10})
        if not signers or not payload.is_file():
            raise ValueError("it has no good signature by a key of the pinned keyring")
        text = payload.read_text(encoding="utf-8")
    return Signed(tuple(signers), deb822.Release(text))


#: The first line of a Packages stanza: which stanzas to parse (an index has ~70,000).
_STANZA = re.compile(r"\APackage: (\S+)\n")


def read_index(path: Path, name: str, packages: set[str]) -> list[deb822.Packages]:
    """The stanzas of ``packages`` in the Packages index at ``path`` (compressed as ``name``,
    its path in the InRelease, says: .xz, .gz or none)."""
    compression = posixpath.splitext(name)[1]
    if compression == ".xz":
        text = lzma.decompress(path.read_bytes()).decode("utf-8")
    elif compression == ".gz":
        text = gzip.decompress(path.read_bytes()).decode("utf-8")
    else:
        text = path.read_text(encoding="utf-8")
    return [
        deb822.Packages(stanza)
        for stanza in text.split("\n\n")
        if (first := _STANZA.match(stanza)) and first.group(1) in packages
    ]


def proof_problems(
    lock: PackageLock,
    shown: str,
    proofs: Mapping[str, bytes],
    keyring: tuple[Path, ...],
    indices: Mapping[str, Path],
    box: str,
) -> list[Problem]:
    """Every pin of ``lock`` that its proof does not vouch for: each source's InRelease (in
    ``proof_dir``) must carry good signatures by the keys the lock names, from ``keyring`` only;
    each index's sha256 and size must be what that InRelease lists; and each package must be
    its index's stanza (version, URL, sha256, size). ``proofs`` holds the InRelease files by
    name; ``indices`` maps an index's sha256 to the verified file (an index missing from it was
    reported by the caller)."""
    hint = f"run `invoke lock {box}` (packages.lock and {PROOF_DIR}/ are written together)"
    found: list[Problem] = []
    for platform, facts in sorted(lock.platforms.items()):
        where = f"platforms.{platform}"
        wrong: list[Problem] = []
        stanzas: dict[tuple[str, str], list[tuple[Source, deb822.Packages]]] = {}
        names = {p.name for p in facts.packages}
        if not facts.sources:
            wrong.append(Problem(shown, None, where, f"names no signed source; {hint}"))
        for source in facts.sources:
            shown_proof = f"{PROOF_DIR}/{source.inrelease}"
            if source.inrelease not in proofs:
                message = f"{shown_proof} is missing; {hint}"
                wrong.append(Problem(shown, None, f"{where}.sources", message))
                continue
            try:
                signed = verify_inrelease(proofs[source.inrelease], keyring)
            except ValueError as error:
                message = f"{shown_proof}: {error}; {hint}"
                wrong.append(Problem(shown, None, f"{where}.sources", message))
                continue
            unsigned = sorted(set(source.signed_by) - set(signed.fingerprints))
            if unsigned:
                message = (
                    f"{shown_proof} has no good signature by {', '.join(unsigned)}, which the "
                    f"lock names (the pinned keyring verifies {', '.join(signed.fingerprints)})"
                )
                wrong.append(Problem(shown, None, f"{where}.sources", f"{message}; {hint}"))
            suites = (signed.release.get("Suite"), signed.release.get("Codename"))
            if source.suite not in suites:
                message = f"{shown_proof} is the InRelease of {suites[1]}, not of {source.suite}"
                wrong.append(Problem(shown, None, f"{where}.sources", f"{message}; {hint}"))
                continue
            listed = {
                str(entry["name"]): (str(entry["sha256"]), int(entry["size"]))
                for entry in signed.release.get("SHA256", [])
            }
            for index in source.indices:
                if listed.get(index.path) != (index.sha256, index.size):
                    message = (
                        f"{source.suite}/{index.path}: sha256 {index.sha256} ({index.size} "
                        f"bytes) is not what {shown_proof} lists ({listed.get(index.path)})"
                    )
                    wrong.append(Problem(shown, None, f"{where}.sources", f"{message}; {hint}"))
                elif index.sha256 in indices:
                    for stanza in read_index(indices[index.sha256], index.path, names):
                        key = (str(stanza["Package"]), str(stanza["Architecture"]))
                        stanzas.setdefault(key, []).append((source, stanza))
        found.extend(wrong)
        if wrong:
            continue  # the packages cannot be checked against an unproven index
        for position, package in enumerate(facts.packages):
            found.extend(
                _package_problems(
                    package,
                    stanzas.get((package.name, package.architecture), []),
                    shown,
                    f"{where}.packages[{position}]({package.name})",
                    hint,
                )
            )
    return found


def _package_problems(
    package: LockedPackage,
    candidates: list[tuple[Source, deb822.Packages]],
    shown: str,
    field: str,
    hint: str,
) -> list[Problem]:
    """What is wrong with one locked package, given its stanzas in the signed indices."""
    if not candidates:
        message = f"{package.name} ({package.architecture}) is in none of the signed indices"
        return [Problem(shown, None, field, f"{message}; {hint}")]
    same = [(s, stanza) for s, stanza in candidates if stanza["Version"] == package.version]
    if not same:
        versions = ", ".join(sorted({str(stanza["Version"]) for _, stanza in candidates}))
        message = f"{package.version} is not in the signed index, which has {versions}"
        return [Problem(shown, None, f"{field}.version", f"{message}; {hint}")]
    for source, stanza in same:
        if unquote(package.url) == f"{source.url}/{stanza['Filename']}":
            break
    else:
        source, stanza = same[0]
        message = f"{package.url} is not the signed index's {source.url}/{stanza['Filename']}"
        return [Problem(shown, None, f"{field}.url", f"{message}; {hint}")]
    found = []
    if package.sha256 != stanza["SHA256"]:
        message = f"{package.sha256} is not the signed index's sha256 {stanza['SHA256']}"
        found.append(Problem(shown, None, f"{field}.sha256", f"{message}; {hint}"))
    if str(package.size) != stanza["Size"]:
        message = f"{package.size} is not the signed index's size {stanza['Size']}"
        found.append(Problem(shown, None, f"{field}.size", f"{message}; {hint}"))
    return found


def snapshot_roots(sources: tuple[Source, ...], proofs: Path) -> dict[str, str]:
    """Per archive root of ``sources`` (a Debian or Ubuntu archive): its snapshot at the time of
    its newest signed InRelease in ``proofs`` (its ``Date``), where every file the lock took from
    it stays after the archive drops it. Unverified here: it only says where to look (what comes
    from there is checked against the pinned sha256)."""
    newest: dict[str, tuple[str, str]] = {}
    for source in sources:
        try:
            release = deb822.Release((proofs / source.inrelease).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        origin, when = str(release.get("Origin", "")), _archive_time(release.get("Date"))
        root = source.url.rstrip("/")
        if origin in SNAPSHOT_ARCHIVES and when and when > newest.get(root, ("", ""))[0]:
            newest[root] = (when, origin)
    found = {}
    for root, (when, origin) in newest.items():
        archive = posixpath.basename(urlsplit(root).path)
        if not archive.startswith(origin.lower()):  # a mirror's own path: the main archive
            archive = origin.lower()
        found[root] = f"{SNAPSHOT_ARCHIVES[origin]}/{archive}/{when}"
    return found


def snapshot_url(url: str, roots: Mapping[str, str]) -> str:
    """The archive snapshot's address of the file at ``url`` (``roots``: from
    :func:`snapshot_roots`); "" when it is under none of them."""
    for root, snapshot in roots.items():
        if url.startswith(root + "/"):
            return snapshot + url[len(root) :]
    return ""


def _archive_time(date: object) -> str:
    """An InRelease's ``Date`` (RFC 2822, UTC) as a snapshot's time, ``20261121T091544Z``;
    "" when it is none."""
    try:
        when = email.utils.parsedate_to_datetime(str(date))
    except (TypeError, ValueError):
        return ""
    if when.tzinfo is None:
        return ""
    return when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
