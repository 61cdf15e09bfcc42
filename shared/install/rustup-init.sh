#!/bin/sh
# rustup-init.sh FILE SHA256 DEST STRIP VERSION: check rustup-init's sha256, then install the Rust
# toolchain VERSION (minimal profile) with RUSTUP_HOME=DEST/rustup and CARGO_HOME=DEST/cargo.
# rustup downloads the toolchain itself (the box needs `network: true`) and checks every package
# against the sha256 in the release channel's manifest; the final image sets the same RUSTUP_HOME
# and CARGO_HOME (under the DEST it is copied to).
set -eu
file=$1 sha256=$2 dest=$3 version=$5
actual=$(sha256sum "$file" | cut -d' ' -f1)
if [ "$actual" != "$sha256" ]; then
    echo "buildbox: sha256 mismatch for $file: expected $sha256, got $actual" >&2
    exit 1
fi
installer=$(mktemp)
cp "$file" "$installer"
chmod 0755 "$installer"
RUSTUP_HOME="$dest/rustup" CARGO_HOME="$dest/cargo" \
    "$installer" -y --no-modify-path --profile minimal --default-toolchain "$version"
rm -f "$installer"
