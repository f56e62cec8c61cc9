#!/usr/bin/env bash
# Builds scripts/oracle/llama-oracle.cpp, llama.cpp as the reference forward of the model
# families (scripts/make-family-golden.sh), against libllama from the llama.cpp tree vendored
# in the llama-cpp-python sdist on PyPI (as scripts/build-llama-server.sh: the network here
# reaches PyPI, not GitHub, and the sdist pins the llama.cpp commit). Only the `llama` library
# target is built (no server, tools or examples), GGML_NATIVE=OFF so that the result does not
# depend on the build machine's CPU, no OpenMP: ~10 minutes on 2 cores.
#
#   bash scripts/build-llama-oracle.sh            # prints the binary's path on the last line
#
# The result lives in $SLUICE_CACHE (default ~/.cache/sluice)/llama-oracle-<version>/ and is not
# rebuilt when present. Not part of CI: the goldens it makes are committed.
set -euo pipefail

VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.16}
CACHE=${SLUICE_CACHE:-$HOME/.cache/sluice}
DEST=$CACHE/llama-oracle-$VERSION
JOBS=${JOBS:-2}
HERE=$(cd "$(dirname "$0")" && pwd)

# (rebuilt when the program's source is newer than the binary)
[ "$DEST/llama-oracle" -nt "$HERE/oracle/llama-oracle.cpp" ] && { echo "$DEST/llama-oracle"; exit 0; }
missing=$(for t in cmake g++ make python3; do command -v "$t" >/dev/null || echo "$t"; done)
[ -z "$missing" ] || { echo "build-llama-oracle: missing:" $missing >&2; exit 1; }

mkdir -p "$DEST"
src=$DEST/llama_cpp_python-$VERSION/vendor/llama.cpp
if [ ! -f "$src/include/llama.h" ]; then
    PIP="python3 -m pip"
    python3 -m pip --version >/dev/null 2>&1 || PIP="$HERE/../.venv/bin/python -m pip"
    echo "build-llama-oracle: downloading llama-cpp-python==$VERSION (sdist)" >&2
    $PIP download -q --disable-pip-version-check --no-binary :all: --no-deps \
        "llama-cpp-python==$VERSION" -d "$DEST/dl" >&2
    tar -xzf "$DEST"/dl/llama_cpp_python-"$VERSION".tar.gz -C "$DEST"
fi
if [ ! -f "$DEST/build/src/libllama.a" ]; then
    echo "build-llama-oracle: building libllama with -j$JOBS (takes a while on 2 cores)" >&2
    nice cmake -S "$src" -B "$DEST/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF \
        -DGGML_OPENMP=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF >&2
    nice cmake --build "$DEST/build" --target llama -j "$JOBS" >&2
fi
b=$DEST/build
g++ -O2 -std=c++17 -I"$src/include" -I"$src/ggml/include" "$HERE/oracle/llama-oracle.cpp" \
    "$b/src/libllama.a" "$b/ggml/src/libggml.a" "$b/ggml/src/libggml-cpu.a" "$b/ggml/src/libggml-base.a" \
    -lpthread -lm -o "$DEST/llama-oracle.tmp"
mv "$DEST/llama-oracle.tmp" "$DEST/llama-oracle"
echo "llama-cpp-python $VERSION sdist, vendor/llama.cpp, GGML_NATIVE=OFF, built $(date -u +%FT%TZ) on $(uname -m)" \
    >"$DEST/BUILD-INFO"
echo "$DEST/llama-oracle"
