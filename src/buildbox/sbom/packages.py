"""The OS packages inside an image, from its package database: dpkg, apk or rpm.

dpkg and apk keep plain-text databases, read straight out of the image without running it; rpm's
database is binary, so ``rpm -qa`` runs in a throw-away container (no network) when the image has
one. The parsers are pure functions over the databases' text.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from packageurl import PackageURL

from buildbox.build.engine import Engine
from buildbox.errors import BuildboxError
from buildbox.verify import DPKG_STATUS, dpkg_packages

APK_INSTALLED = "/lib/apk/db/installed"
RPM_DATABASE = "/var/lib/rpm"
OS_RELEASE = "/etc/os-release"
#: Where /etc/os-release usually points (a symlink reads as no file from an image's archive).
USR_OS_RELEASE = "/usr/lib/os-release"
_RPM_QUERY = r"%{NAME}\t%{EPOCH}\t%{VERSION}\t%{RELEASE}\t%{ARCH}\t%{LICENSE}\n"


@dataclass(frozen=True, order=True)
class OsPackage:
    kind: str  # deb, rpm or apk: the purl type
    distro: str  # the purl namespace: debian, ubuntu, centos, alpine, ...
    name: str
    version: str
    arch: str
    license: str = ""
    epoch: str = ""
    #: The purl ``distro`` qualifier: the release, e.g. debian-12 (from /etc/os-release).
    release: str = ""

    @property
    def purl(self) -> PackageURL:
        qualifiers = {"arch": self.arch} if self.arch else {}
        if self.epoch:
            qualifiers["epoch"] = self.epoch
        if self.release:
            qualifiers["distro"] = self.release
        return PackageURL(
            type=self.kind,
            namespace=self.distro or None,
            name=self.name,
            version=self.version,
            qualifiers=qualifiers,
        )


def parse_os_release(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def parse_dpkg_status(text: str, distro: str) -> list[OsPackage]:
    """Installed packages from a dpkg status file (as verify reads it)."""
    return [
        OsPackage("deb", distro, p.name, p.version, p.architecture)
        for p in dpkg_packages(text)
        if p.installed
    ]


def parse_apk_installed(text: str, distro: str) -> list[OsPackage]:
    """Installed packages from apk's database (one ``X:value`` line per field)."""
    packages = []
    for stanza in text.split("\n\n"):
        fields = {line[:1]: line[2:] for line in stanza.splitlines() if line[1:2] == ":"}
        if "P" in fields:
            packages.append(
                OsPackage(
                    "apk",
                    distro,
                    fields["P"],
                    fields.get("V", ""),
                    fields.get("A", ""),
                    fields.get("L", ""),
                )
            )
    return packages


def parse_rpm_query(text: str, distro: str) -> list[OsPackage]:
    """Packages from ``rpm -qa --queryformat`` with _RPM_QUERY's tab-separated fields."""
    packages = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) != 6 or fields[0] == "gpg-pubkey":
            continue  # gpg-pubkey entries are keys, not software
        name, epoch, version, release, arch, license_ = fields
        packages.append(
            OsPackage(
                "rpm",
                distro,
                name,
                f"{version}-{release}",
                arch,
                license_,
                "" if epoch in ("(none)", "0") else epoch,
            )
        )
    return packages


def inventory(
    engine: Engine, image_id: str, dpkg_status: str | None = None
) -> tuple[OsPackage, ...]:
    """Every OS package in the image, sorted; empty for an image without a package database.

    ``dpkg_status``: the image's dpkg status database as verify already read it (not read again).
    """
    paths = [OS_RELEASE, USR_OS_RELEASE, APK_INSTALLED, RPM_DATABASE]
    files = engine.read_files(image_id, paths + ([DPKG_STATUS] if dpkg_status is None else []))
    files.setdefault(DPKG_STATUS, dpkg_status)  # kept when read here, verify's text otherwise
    release = parse_os_release(files[OS_RELEASE] or files[USR_OS_RELEASE] or "")
    distro = release.get("ID", "")
    found: list[OsPackage] = []
    if (dpkg := files[DPKG_STATUS]) is not None:
        found += parse_dpkg_status(dpkg, distro)
    if (apk := files[APK_INSTALLED]) is not None:
        found += parse_apk_installed(apk, distro)
    if files[RPM_DATABASE] is not None:
        query = f"rpm -qa --queryformat '{_RPM_QUERY}'"
        output, status = engine.run_script(image_id, query, 300, "rpm-query")
        if status != 0:
            raise BuildboxError(f"`rpm -qa` failed in {image_id} (exit {status}): {output[-300:]}")
        found += parse_rpm_query(output, distro)
    if distro and release.get("VERSION_ID"):
        found = [replace(p, release=f"{distro}-{release['VERSION_ID']}") for p in found]
    return tuple(sorted(set(found)))
