#!/bin/sh
# Installs the box's locked OS packages inside the build, with the network off: the toolkit put
# the verified .deb files beside this script (packages/) and one line per package in
# packages.tsv:
#   name  version  architecture  sha256  file
# Every sha256 is checked again first; then dpkg installs exactly these files (maintainer scripts,
# triggers and the dpkg database as usual) and nothing is downloaded: a dependency the lock
# misses fails the build, naming the package.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tab=$(printf '\t')
files=""
while IFS="$tab" read -r name version arch sha256 file; do
    case "$name" in '' | '#'*) continue ;; esac
    if ! echo "$sha256  $here/packages/$file" | sha256sum -c --status -; then
        echo "buildbox: $name $version ($arch): $file does not have the locked sha256 $sha256" >&2
        exit 1
    fi
    files="$files $here/packages/$file"
done < "$here/packages.tsv"
[ -n "$files" ] || exit 0
echo "buildbox: installing the locked packages:$(echo "$files" | sed 's#[^ ]*/##g')"
# dpkg, given every file at once, unpacks them all and configures them in dependency order;
# a dependency that is neither in the base nor in the lock stops it, naming the package.
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086 # one word per file
dpkg --install --force-confold $files
# What dpkg leaves that says when it ran, not what was installed (as mmdebstrap's
# cleanup/reproducible hook removes it): logs, backups of its databases, ldconfig's cache of
# file times. Without this, two builds of the same lock would differ.
rm -f /var/log/dpkg.log /var/log/alternatives.log /var/log/apt/history.log \
    /var/log/apt/term.log /var/log/apt/eipp.log.xz /var/cache/ldconfig/aux-cache \
    /var/cache/debconf/config.dat-old /var/cache/debconf/templates.dat-old \
    /var/lib/dpkg/status-old /var/lib/dpkg/diversions-old /var/lib/dpkg/statoverride-old
