#!/usr/bin/env bash
# Builds llama.cpp's llama-server, the peer that bench/run_serving.py compares sluice against,
# from the llama.cpp tree vendored in the llama-cpp-python source distribution on PyPI (the
# network here reaches PyPI but not GitHub, and pinning the sdist pins the llama.cpp commit).
#
#   bash scripts/build-llama-server.sh            # prints the binary's path on the last line
#
# The result lives outside the repository, in $SLUICE_CACHE (default ~/.cache/sluice):
#   $SLUICE_CACHE/llama-server-<version>/llama-server
# and is not rebuilt when present. Static libraries, so the binary can be copied anywhere.
# The build runs under `nice` with -j2 (override with JOBS=N) because the machine is shared.
set -euo pipefail

VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.16}
CACHE=${SLUICE_CACHE:-$HOME/.cache/sluice}
DEST=$CACHE/llama-server-$VERSION
JOBS=${JOBS:-2}

if [ -x "$DEST/llama-server" ]; then
    echo "build-llama-server: already built" >&2
    echo "$DEST/llama-server"
    exit 0
fi

. "$(dirname "$0")/sdist.sh"
sdist_need_tools cmake g++ make python3

work=$(mktemp -d "${TMPDIR:-/tmp}/llama-server-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
# the sdist carries vendor/llama.cpp (the wheel does not)
src=$(sdist_fetch llama-cpp-python "$VERSION" "$work")/vendor/llama.cpp
[ -f "$src/tools/server/server.cpp" ] || { echo "build-llama-server: no tools/server in $src" >&2; exit 1; }

echo "build-llama-server: configuring (GGML_NATIVE=ON, LLAMA_CURL=OFF, static)" >&2
nice cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_CURL=OFF -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >&2
echo "build-llama-server: building llama-server with -j$JOBS (takes a while on 2 cores)" >&2
nice cmake --build "$work/build" --target llama-server -j "$JOBS" >&2

mkdir -p "$DEST"
cp "$work/build/bin/llama-server" "$DEST/llama-server.tmp"
mv "$DEST/llama-server.tmp" "$DEST/llama-server"    # atomic: a half-copied binary never counts
echo "llama-cpp-python $VERSION sdist, vendor/llama.cpp, GGML_NATIVE=ON, built $(date -u +%FT%TZ) on $(uname -m)" \
    >"$DEST/BUILD-INFO"
"$DEST/llama-server" --version >>"$DEST/BUILD-INFO" 2>&1 || true
echo "build-llama-server: done" >&2
echo "$DEST/llama-server"
