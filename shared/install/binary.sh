#!/bin/sh
# binary.sh FILE SHA256 DEST: install a single executable as DEST (a full path), after checking
# its sha256. A mismatch installs nothing and fails the build.
set -eu
file=$1 sha256=$2 dest=$3
actual=$(sha256sum "$file" | cut -d' ' -f1)
if [ "$actual" != "$sha256" ]; then
    echo "buildbox: sha256 mismatch for $file: expected $sha256, got $actual" >&2
    exit 1
fi
mkdir -p "$(dirname "$dest")"
cp "$file" "$dest"
chmod 0755 "$dest"
