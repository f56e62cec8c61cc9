#!/usr/bin/env bash
# gpu-check.sh: the CUDA kernels' whole check in one device call (DESIGN.md §10, issue 6):
# build for sm_90, the kernels' resource report (registers, spills, stack) and tensor-core
# instructions, tests/gpu against the CPU twins, the microbenchmarks, then a short summary table
# last (the device tool returns the end of the output). Full logs go to $OUT when the device tool
# runs it (the folder that comes back), else to $BUILD/gpu-check.
#
#   bash scripts/gpu-check.sh               build, test, benchmark (a few minutes on an H100)
#   QUICK=1 bash scripts/gpu-check.sh       benchmarks at small sizes (a smoke run)
#   SANITIZE=1 bash scripts/gpu-check.sh    also run the tests under compute-sanitizer memcheck
#
# The build needs the CUDA toolkit and gcc only, none of the server's Debian -dev libraries
# (make gpu-check-bins, kernels/cuda/cuda.mk). Without a GPU every binary prints SKIP.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
LOG=${OUT:-$BUILD/gpu-check}
mkdir -p "$LOG"
rows=()
row() { rows+=("$1"); }

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem \
    --format=csv 2>&1 | tee "$LOG/device.txt" || true
command -v nvcc >/dev/null || { echo "nvcc not found"; exit 1; }
nvcc --version | tail -n 2

echo "== build: make CUDA=1 gpu-check-bins"
if ! make -j"$(nproc)" CUDA=1 BUILD="$BUILD" gpu-check-bins >"$LOG/build.log" 2>&1; then
    tail -n 40 "$LOG/build.log"
    echo "build FAILED (full log: $LOG/build.log)"
    exit 1
fi
n_warn=$(grep -ci 'warning' "$LOG/build.log")
row "build | sm_90, -Wall -Wextra | $n_warn warnings"

echo "== resources (ptxas -v): registers, shared memory, stack, spills"
: >"$LOG/resources.txt"
for f in kernels/cuda/*.cu; do
    echo "-- $f" >>"$LOG/resources.txt"
    nvcc -O3 -arch=sm_90 -std=c++17 -I. -Xptxas -v -c "$f" -o /dev/null 2>&1 |
        grep -E 'Compiling entry|registers|spill|stack' >>"$LOG/resources.txt"
done
spills=$(grep -E 'bytes spill (stores|loads)' "$LOG/resources.txt" | grep -cvE ' 0 bytes spill stores, 0 bytes spill loads')
# The attention kernels must keep everything in registers and shared memory: no stack at all.
# (rope's double sincos has a small frame of its own: CUDA's slow-path argument reduction.)
attn_stack=$(grep -A1 -E 'entry function .*attn_' "$LOG/resources.txt" | grep -E 'bytes stack frame' |
    grep -cv '^ *0 bytes stack frame')
grep -A2 -E 'attn_(decode|prefill)' "$LOG/resources.txt" | grep -E 'entry|registers' | sed 's/ptxas info *: //' | head -n 24
row "resources | kernels with spills / attention kernels with a stack frame | $spills / $attn_stack"
if command -v cuobjdump >/dev/null; then
    cuobjdump -sass "$BUILD/kernels/cuda/attention.o" >"$LOG/attention.sass" 2>&1
    hmma=$(grep -c 'HMMA' "$LOG/attention.sass"); ldsm=$(grep -c 'LDSM' "$LOG/attention.sass")
    ldgsts=$(grep -c 'LDGSTS' "$LOG/attention.sass"); ldl=$(grep -cE '\b(LDL|STL)\b' "$LOG/attention.sass")
    row "attention SASS | HMMA / LDSM / LDGSTS / local LDL+STL | $hmma / $ldsm / $ldgsts / $ldl"
fi

echo "== tests"
for t in "$BUILD"/tests/gpu/test_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    GT_VERBOSE=1 timeout 600 "$t" >"$LOG/$name.log" 2>&1
    rc=$?
    grep -E '^(FAIL|  FAIL|SKIP|device)|passed, [0-9]+ failed' "$LOG/$name.log" | head -n 40
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$LOG/$name.log" | tail -n 1)
    row "$name | ${line:-no summary line} | rc $rc"
    if [ "${SANITIZE:-0}" = 1 ] && command -v compute-sanitizer >/dev/null; then
        timeout 900 compute-sanitizer --tool memcheck --leak-check full "$t" >"$LOG/$name.memcheck.log" 2>&1
        mrc=$?
        msum=$(grep -E 'ERROR SUMMARY' "$LOG/$name.memcheck.log" | tail -n 1)
        row "$name memcheck | ${msum:-no summary} | rc $mrc"
    fi
done

echo "== benchmarks${QUICK:+ (quick)}"
for b in "$BUILD"/bench/gpu/*; do
    [ -x "$b" ] || continue
    name=$(basename "$b")
    BENCH_QUICK=${QUICK:-0} timeout 420 "$b" 2>&1 | tee "$LOG/$name.log"
    rc=${PIPESTATUS[0]}
    [ "$rc" -ne 0 ] && row "$name | FAILED | rc $rc"
    while IFS= read -r l; do row "${l#SUMMARY | }"; done < <(grep '^SUMMARY' "$LOG/$name.log")
done

echo
echo "== summary ($(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1))"
printf '%s\n' "${rows[@]}" | sed 's/ *| */|/g' | column -t -s '|' 2>/dev/null || printf '%s\n' "${rows[@]}"
