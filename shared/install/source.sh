#!/bin/sh
# source.sh FILE SHA256 DEST [STRIP] [VERSION]: build a component from its source tarball with
# its recipe, build/<component>.sh beside this script (from shared/build/), after tarball.sh has
# checked the sha256 and unpacked it: a mismatch builds nothing. The recipe runs in the unpacked
# source with these variables, and installs under $DESTDIR$PREFIX only:
#   PREFIX   where the component lives in the image (its install dest, e.g. /opt/libbpf)
#   DESTDIR  the staging root (install.sh's BUILDBOX_ROOT), as `make install DESTDIR=` takes it
#   VERSION  the pinned version        JOBS  parallel jobs for make -j
# It runs in the box's first stage, which has no network unless the box sets `network: true`.
set -eu
file=$1 sha256=$2 strip=${4:-0} version=${5:-}
here=$(cd "$(dirname "$0")" && pwd)
name=${BUILDBOX_COMPONENT:?install.sh sets BUILDBOX_COMPONENT}
recipe=$here/build/$name.sh
if [ ! -f "$recipe" ]; then
    echo "buildbox: no build recipe for $name ($recipe; shared/build/$name.sh)" >&2
    exit 1
fi
# A fixed path, so that paths compiled into the result are the same on every build.
work=/tmp/buildbox-source/$name
rm -rf "$work"
sh "$here/tarball.sh" "$file" "$sha256" "$work" "$strip"
jobs=$(nproc 2>/dev/null || echo 1)
(cd "$work" && PREFIX=$BUILDBOX_PREFIX DESTDIR=${BUILDBOX_ROOT:-/} VERSION=$version JOBS=$jobs \
    sh "$recipe")
rm -rf "$work"
