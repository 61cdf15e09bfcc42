#!/bin/sh
# Installs the box's components inside the build, from the verified artifacts the toolkit put in
# the build context. Every line of components.tsv beside this script names one artifact:
#   name  version  kind  sha256  artifact-path  dest  strip-components
# and is handed to <kind>.sh (FILE SHA256 DEST STRIP VERSION, with BUILDBOX_COMPONENT and
# BUILDBOX_PREFIX, the dest in the image, in its environment), which checks the sha256 again
# before it installs anything.
# Files land under $BUILDBOX_ROOT (default /), so a Dockerfile can install into a staging
# directory in one stage and copy only the installed tools into the final image.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=${BUILDBOX_ROOT:-/}
tab=$(printf '\t')
while IFS="$tab" read -r name version kind sha256 artifact dest strip; do
    case "$name" in '' | '#'*) continue ;; esac
    echo "buildbox: installing $name $version ($kind) into $dest"
    BUILDBOX_COMPONENT=$name BUILDBOX_PREFIX=$dest \
        sh "$here/$kind.sh" "$here/$artifact" "$sha256" "$root$dest" "$strip" "$version"
done < "$here/components.tsv"
