#!/usr/bin/env bash
# Builds XGrammar's C++ core (the grammar engine behind structured output, as in vLLM and
# SGLang) from its pinned PyPI source distribution, which carries cpp/, include/ and 3rdparty/.
# Static, no Python bindings, no LTO objects (so gcc, clang and the sanitizer builds all link it).
#
#   bash scripts/build-xgrammar.sh      # prints the install prefix on the last line
#
# The result lives outside the repository, in $SLUICE_CACHE (default ~/.cache/sluice):
#   $SLUICE_CACHE/xgrammar-<version>/{lib/libxgrammar.a,include/}
# and is not rebuilt when present. Runs under `nice` with -j2 (JOBS=N to change).
set -euo pipefail

VERSION=0.2.8
SHA256=8305646fd2b319d6c3003f51a1665e54cbbe9cba1fb636bc41d0b46434ccbb80
CACHE=${SLUICE_CACHE:-$HOME/.cache/sluice}
DEST=$CACHE/xgrammar-$VERSION
JOBS=${JOBS:-2}

if [ -f "$DEST/lib/libxgrammar.a" ] && [ -f "$DEST/include/xgrammar/xgrammar.h" ]; then
    echo "build-xgrammar: already built" >&2
    echo "$DEST"
    exit 0
fi

. "$(dirname "$0")/sdist.sh"
sdist_need_tools cmake g++ make python3

work=$(mktemp -d "${TMPDIR:-/tmp}/xgrammar-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
src=$(sdist_fetch xgrammar "$VERSION" "$work" "$SHA256")

# The sdist's cmake/config.cmake forces the Python bindings on (they need tvm_ffi); a
# config.cmake in the build directory takes precedence over it.
mkdir -p "$work/build"
cat >"$work/build/config.cmake" <<'CFG'
set(CMAKE_BUILD_TYPE Release)
set(XGRAMMAR_BUILD_PYTHON_BINDINGS OFF)
set(XGRAMMAR_ENABLE_COVERAGE OFF)
set(XGRAMMAR_BUILD_CXX_TESTS OFF)
set(XGRAMMAR_ENABLE_CPPTRACE OFF)
set(XGRAMMAR_ENABLE_INTERNAL_CHECK OFF)
CFG
echo "build-xgrammar: configuring (static, no Python bindings)" >&2
# -fno-lto after the project's -flto=auto: the archive then holds ordinary objects.
nice cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CXX_FLAGS="-fno-lto -Wno-error" -DCMAKE_INSTALL_PREFIX="$DEST.tmp" >&2
echo "build-xgrammar: building with -j$JOBS (a few minutes on 2 cores)" >&2
nice cmake --build "$work/build" --target xgrammar -j "$JOBS" >&2
rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp/lib" "$DEST.tmp/include"
cp "$work/build/libxgrammar.a" "$DEST.tmp/lib/"
cp -r "$src/include/xgrammar" "$DEST.tmp/include/"
cp -r "$src/3rdparty/dlpack/include/dlpack" "$DEST.tmp/include/"
cp "$src/3rdparty/picojson/picojson.h" "$DEST.tmp/include/"
cp "$src/LICENSE" "$src/NOTICE" "$DEST.tmp/"
echo "xgrammar $VERSION sdist (sha256 $SHA256), built $(date -u +%FT%TZ) on $(uname -m)" \
    >"$DEST.tmp/BUILD-INFO"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"       # atomic: a half-built cache never counts
echo "build-xgrammar: done" >&2
echo "$DEST"
