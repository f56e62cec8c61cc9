#!/usr/bin/env bash
# Builds llama.cpp's llama-quantize, which tests/models/test_requant.py uses to requantize the default
# model into the K-quant and IQ4 types at test time, from the llama.cpp tree vendored in the same
# pinned llama-cpp-python sdist as scripts/build-llama-server.sh (scripts/sdist.sh fetches it).
#
#   bash scripts/build-llama-quantize.sh          # prints the binary's path on the last line
#
# The result lives in $SLUICE_CACHE (default ~/.cache/sluice)/llama-quantize-<version>/ beside
# llama-server's and is not rebuilt when present. GGML_NATIVE=OFF and no OpenMP: quantization then
# runs the same instructions on every x86-64 machine, so a requantized file is the same bytes
# wherever it is made (the tests check its sha256 against the one the committed exact goldens
# were computed from). Only the llama-quantize target (ggml, libllama, common) is built: about
# 10 minutes on 2 cores, under `nice` with -j2 (override with JOBS=N).
set -euo pipefail

VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.16}
CACHE=${SLUICE_CACHE:-$HOME/.cache/sluice}
DEST=$CACHE/llama-quantize-$VERSION
JOBS=${JOBS:-2}

if [ -x "$DEST/llama-quantize" ]; then
    echo "$DEST/llama-quantize"
    exit 0
fi

. "$(dirname "$0")/sdist.sh"
sdist_llama_tool llama-quantize "$DEST" -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON
