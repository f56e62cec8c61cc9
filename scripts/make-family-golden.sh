#!/usr/bin/env bash
# Remakes tests/data/families/<family>.txt: llama.cpp's greedy tokens and logits on the tiny
# random models of scripts/make-tiny-models.py, the reference tests/models/test_families.py
# checks sluice against. Builds the oracle first (scripts/build-llama-oracle.sh, cached).
#
#   bash scripts/make-family-golden.sh [FAMILY...]      # default: every family of the script
#
# The prompt is the family's BOS and the ids 40, 50, ..., 320 (30 tokens: nearly 4 sliding
# windows of 8), then 8 greedy steps, on a context of the model's context_length (which decides
# LongRoPE's factors in llama.cpp as in sluice).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
oracle=$(bash scripts/build-llama-oracle.sh | tail -n1)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/family-golden.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
families=("$@")
[ ${#families[@]} -gt 0 ] || families=(gemma2 gemma3 gemma3-linear phi3 phi3-short mistral)
mkdir -p tests/data/families
for fam in "${families[@]}"; do
    "$PY" scripts/make-tiny-models.py "$tmp" --family "$fam" >/dev/null
    read -r bos ctx < <("$PY" -c "import gguf,sys; f=gguf.GGUFReader(sys.argv[1]).fields
a=f['general.architecture'].contents(); print(f['tokenizer.ggml.bos_token_id'].contents(), f[a+'.context_length'].contents())" "$tmp/$fam.gguf")
    prompt="$bos $(seq -s ' ' 40 10 320)"
    out=tests/data/families/$fam.txt
    {
        echo "# llama.cpp's greedy tokens and logits for the tiny $fam model (scripts/make-tiny-models.py --seed 17)"
        echo "# made by: bash scripts/make-family-golden.sh $fam  ($(head -c 200 "$(dirname "$oracle")/BUILD-INFO"))"
        echo "# oracle: llama-oracle $fam.gguf $ctx 8 $prompt"
        echo "model_sha256 $(sha256sum "$tmp/$fam.gguf" | cut -d' ' -f1)"
        # shellcheck disable=SC2086
        "$oracle" "$tmp/$fam.gguf" "$ctx" 8 $prompt 2>/dev/null
    } >"$out.tmp"
    mv "$out.tmp" "$out"
    echo "make-family-golden: $out" >&2
done
