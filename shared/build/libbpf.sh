#!/bin/sh
# libbpf from its source release: static and shared library, headers and libbpf.pc under
# $PREFIX (lib/, include/). Needs a C compiler, make, pkg-config and the libelf and zlib headers
# in the box's first stage. Run by shared/install/source.sh in the unpacked source.
set -eu
cd src
make -j"$JOBS" PREFIX="$PREFIX" LIBDIR="$PREFIX/lib"
make install PREFIX="$PREFIX" LIBDIR="$PREFIX/lib" DESTDIR="$DESTDIR"
