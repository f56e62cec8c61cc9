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
sdist_llama_tool llama-server "$DEST" -DGGML_NATIVE=ON -DLLAMA_BUILD_SERVER=ON
"$DEST/llama-server" --version >>"$DEST/BUILD-INFO" 2>&1 || true
