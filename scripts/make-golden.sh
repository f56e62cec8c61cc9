#!/usr/bin/env bash
# Regenerates the golden test data in tests/data/ from independent implementations:
# llama-cpp-python (tokenization, greedy continuations, logits) and the gguf package's
# dequantizer, all on the default model. Needs network access to PyPI the first time; CI never
# runs this: the data is checked in.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${REF_VENV:-/opt/refvenv}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import llama_cpp, gguf' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q llama-cpp-python==0.3.16 gguf==0.17.1 numpy
fi
bash scripts/fetch-model.sh
"$VENV/bin/python" scripts/make-quant-data.py
"$VENV/bin/python" scripts/make-golden-tokens.py
"$VENV/bin/python" scripts/make-golden-forward.py
"$VENV/bin/python" scripts/make-golden-exact.py
