#!/bin/sh
# zip.sh FILE SHA256 DEST [STRIP]: unpack a zip archive into DEST after checking its sha256,
# dropping STRIP leading directories. Uses unzip, else Python's zipfile, else busybox unzip.
set -eu
file=$1 sha256=$2 dest=$3 strip=${4:-0}
actual=$(sha256sum "$file" | cut -d' ' -f1)
if [ "$actual" != "$sha256" ]; then
    echo "buildbox: sha256 mismatch for $file: expected $sha256, got $actual" >&2
    exit 1
fi
unpacked=$(mktemp -d)
if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$file" -d "$unpacked"
elif command -v python3 >/dev/null 2>&1; then
    python3 -m zipfile -e "$file" "$unpacked"
elif command -v python >/dev/null 2>&1; then
    python -m zipfile -e "$file" "$unpacked"
elif command -v busybox >/dev/null 2>&1; then
    busybox unzip -q -o "$file" -d "$unpacked"
else
    echo "buildbox: no unzip, python or busybox in this stage to unpack $file" >&2
    exit 1
fi
top=$unpacked
while [ "$strip" -gt 0 ]; do
    set -- "$top"/*
    if [ "$#" -ne 1 ] || [ ! -d "$1" ]; then
        echo "buildbox: $file: cannot strip a directory level: expected exactly one" >&2
        exit 1
    fi
    top=$1
    strip=$((strip - 1))
done
mkdir -p "$dest"
cp -R "$top"/. "$dest"/
rm -rf "$unpacked"
# zipfile does not keep the executable bit: restore it for anything under bin/.
if [ -d "$dest/bin" ]; then chmod -R a+x "$dest/bin"; fi
