#!/usr/bin/env bash
# Runs each libFuzzer harness in $BUILD/fuzz/ (tests/fuzz/fuzz_*.c, built by `make fuzz`) for
# FUZZ_TIME seconds, FUZZ_JOBS of them at a time, and fails when any finds a crash, a leak, a
# sanitizer report or a timeout. Each starts from three corpus folders:
#   $BUILD/corpus/<h>     what earlier runs found (kept between runs; new inputs go here)
#   tests/fuzz/corpus/<h> committed seeds and the inputs of crashes once fixed (regressions)
#   $BUILD/seeds/<h>      seeds made here from tests/data (templates, GGUFs, tokenizer cases)
# A crash's input is written to $BUILD/artifacts/<h>/ and its log tail printed; replay it with
# `$BUILD/fuzz/<h> FILE`. FUZZERS="fuzz_gguf fuzz_chat" runs only those.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-fuzz}
FUZZ_TIME=${FUZZ_TIME:-60}
FUZZ_JOBS=${FUZZ_JOBS:-$(nproc)}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_WAIT_POLICY=passive

# ---- seeds from tests/data (generated, so the repository keeps only small committed seeds)
seeds=$BUILD/seeds
rm -rf "$seeds"
mkdir -p "$seeds"/{fuzz_gguf,fuzz_template,fuzz_tokenizer}
cp tests/data/tokenizer/*.gguf "$seeds/fuzz_gguf/"
for f in tests/data/chat_templates/*.jinja tests/data/chat_templates_tools/*.jinja; do
    cp "$f" "$seeds/fuzz_template/$(basename "$(dirname "$f")")-$(basename "$f")"
done
# tokenizer cases: "flags TAB hex(text) ..." lines; the first input byte picks the tokenizer
# (0 the default model, 1 bpe-tiny, 2 spm-tiny: fuzz_tokenizer.c) and 8 sets parse_special
python3 - "$seeds/fuzz_tokenizer" <<'PY'
import sys, os
out = sys.argv[1]
for pick, name in ((0, "smollm2.txt"), (1, "bpe-tiny-qwen2.txt"), (2, "spm-tiny.txt")):
    with open(os.path.join("tests/data/tokenizer", name), encoding="utf-8") as f:
        cases = [l.split("\t") for l in f if l.strip() and not l.startswith("#")]
    for i, c in enumerate(cases[:120]):
        text = bytes.fromhex(c[1])
        for special in (0, 8):
            with open(os.path.join(out, "%s-%03d-%d" % (name[:-4], i, special)), "wb") as g:
                g.write(bytes([pick | special]) + text)
PY

# Longest input per harness: bodies and texts stay small, so each run tries many.
max_len() {
    case $1 in
        fuzz_gguf) echo 65536 ;; fuzz_template) echo 16384 ;; fuzz_request) echo 16384 ;;
        *) echo 8192 ;;
    esac
}

# libFuzzer dictionaries: request field names and JSON tokens, Jinja syntax and filter names
dict_of() {
    case $1 in
        fuzz_request | fuzz_chat) echo "-dict=tests/fuzz/request.dict" ;;
        fuzz_template) echo "-dict=tests/fuzz/template.dict" ;;
    esac
}

run_one() {
    local h=$1 bin=$BUILD/fuzz/$1
    mkdir -p "$BUILD/corpus/$h" "$BUILD/artifacts/$h" "$BUILD/logs"
    local dirs=("$BUILD/corpus/$h")
    [ -d "tests/fuzz/corpus/$h" ] && dirs+=("tests/fuzz/corpus/$h")
    [ -d "$seeds/$h" ] && dirs+=("$seeds/$h")
    local t0=$SECONDS
    nice "$bin" -max_total_time="$FUZZ_TIME" -timeout=10 -rss_limit_mb=2560 -max_len="$(max_len "$h")" \
        $(dict_of "$h") -print_final_stats=1 -artifact_prefix="$BUILD/artifacts/$h/" "${dirs[@]}" \
        >"$BUILD/logs/$h.log" 2>&1
    local rc=$?
    local runs cov
    runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$BUILD/logs/$h.log" | grep -oE '[0-9]+$')
    cov=$(grep -oE 'cov: [0-9]+' "$BUILD/logs/$h.log" | tail -n1)
    if [ "$rc" -eq 0 ]; then
        echo "ok   $h: ${runs:-?} runs in $((SECONDS - t0)) s, $cov"
    else
        echo "FAIL $h (rc $rc) after $((SECONDS - t0)) s; log $BUILD/logs/$h.log, input in $BUILD/artifacts/$h/:"
        grep -vE '^#[0-9]+|^INFO|^MS:|^\s*$' "$BUILD/logs/$h.log" | tail -n 40
    fi
    return "$rc"
}
export -f run_one max_len dict_of
export BUILD FUZZ_TIME seeds

names=()
for b in "$BUILD"/fuzz/fuzz_*; do
    h=$(basename "$b")
    if [ -n "${FUZZERS:-}" ] && [[ " $FUZZERS " != *" $h "* ]]; then continue; fi
    names+=("$h")
done
[ ${#names[@]} -gt 0 ] || { echo "run-fuzz: no harness in $BUILD/fuzz/"; exit 1; }
echo "fuzz: ${#names[@]} harnesses, ${FUZZ_TIME} s each, $FUZZ_JOBS at a time"
printf '%s\n' "${names[@]}" | xargs -P "$FUZZ_JOBS" -I{} bash -c 'run_one {}'
rc=$?
[ "$rc" -eq 0 ] && echo "fuzz: no crash" || echo "fuzz: FAILED"
exit "$rc"
