#!/bin/sh
# tarball.sh FILE SHA256 DEST [STRIP]: unpack a tar archive (gzip, xz or bzip2) into DEST,
# after checking its sha256. A mismatch installs nothing and fails the build.
set -eu
file=$1 sha256=$2 dest=$3 strip=${4:-0}
actual=$(sha256sum "$file" | cut -d' ' -f1)
if [ "$actual" != "$sha256" ]; then
    echo "buildbox: sha256 mismatch for $file: expected $sha256, got $actual" >&2
    exit 1
fi
mkdir -p "$dest"
case "$file" in
    *.tar.gz | *.tgz) flag=z ;;
    *.tar.xz | *.txz) flag=J ;;
    *.tar.bz2 | *.tbz2) flag=j ;;
    *.tar) flag= ;;
    *) echo "buildbox: $file is not a tar archive (.tar, .tar.gz, .tar.xz, .tar.bz2)" >&2; exit 1 ;;
esac
tar -x${flag}f "$file" -C "$dest" --strip-components="$strip" --no-same-owner
