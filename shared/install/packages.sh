#!/bin/sh
# Installs the box's locked OS packages inside the build, with the network off: the toolkit put
# the verified .deb files beside this script (packages/) and one line per package in
# packages.tsv:
#   name  version  architecture  sha256  file
# Every sha256 is checked again first; then dpkg installs exactly these files (maintainer scripts,
# triggers and the dpkg database as usual) and nothing is downloaded: a dependency the lock
# misses fails the build, naming the package.
# It runs only in a build, as the Dockerfile calls it:
#   RUN --mount=type=bind,source=.buildbox,target=/buildbox BUILDBOX_ROOT=/ sh /buildbox/packages.sh
# dpkg installs into / and the clean-up below deletes dpkg's and apt's logs: on a machine rather
# than an image being built, that would change its packages and erase its administrator's record.
set -eu
case "${BUILDBOX_ROOT-}" in
/) ;;
'')
    echo "buildbox: packages.sh runs only inside a box's build (RUN --mount=... BUILDBOX_ROOT=/" \
        "sh /buildbox/packages.sh); BUILDBOX_ROOT is not set, so nothing was done" >&2
    exit 2
    ;;
*)
    echo "buildbox: packages.sh installs into the root of the image being built:" \
        "BUILDBOX_ROOT must be /, not $BUILDBOX_ROOT; nothing was done" >&2
    exit 2
    ;;
esac
# systemd's own test for a booted system: an image being built never has it.
if [ -d /run/systemd/system ]; then
    echo "buildbox: packages.sh runs only inside a box's build, and this is a booted system" \
        "(/run/systemd/system exists); nothing was done" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
tab=$(printf '\t')
files=""
while IFS="$tab" read -r name version arch sha256 file; do
    case "$name" in '' | '#'*) continue ;; esac
    # Read on stdin, so that busybox's and coreutils' sha256sum print the same "<hex>  -".
    actual=$(sha256sum 2>&1 < "$here/packages/$file") || true
    if [ "${actual%% *}" != "$sha256" ]; then
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
