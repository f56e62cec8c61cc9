#!/usr/bin/env bash
# Checks the tree's layout rules (scripts/check-layout.py: includes point one way, no file over
# 1,000 lines), runs every unit test binary under $BUILD/tests, then the Python tests (pytest over
# tests/) unless SKIP_API=1. The layout check and each unit binary print "N passed, N failed";
# this script adds them up and ends with one such line for the whole suite.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
# Tests are not timed; passive OpenMP waits keep them quick when the cores are shared (spinning
# barriers slow a loaded 2-core machine by 10x or more).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
total_pass=0; total_fail=0; broken=()

echo "== layout (scripts/check-layout.py)"
out=$(python3 scripts/check-layout.py 2>&1); rc=$?
printf '%s\n' "$out" | grep -E '^FAIL|^  |passed, [0-9]+ failed' || true
line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -n1)
if [ -z "$line" ]; then
    printf '%s\n' "$out" | tail -n 30; broken+=("check-layout (rc $rc, no summary)"); total_fail=$((total_fail + 1))
else
    total_pass=$((total_pass + $(echo "$line" | cut -d' ' -f1))); total_fail=$((total_fail + $(echo "$line" | cut -d' ' -f3)))
fi

for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    echo "== $name"
    out=$("$t" 2>&1); rc=$?
    printf '%s\n' "$out" | grep -E '^(FAIL|  FAIL|SKIP)|passed, [0-9]+ failed' || true
    line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -n1)
    if [ -z "$line" ]; then
        printf '%s\n' "$out" | tail -n 30
        broken+=("$name (rc $rc, no summary)"); total_fail=$((total_fail + 1)); continue
    fi
    p=$(echo "$line" | cut -d' ' -f1); f=$(echo "$line" | cut -d' ' -f3)
    total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        printf '%s\n' "$out" | tail -n 30
        broken+=("$name (rc $rc)"); total_fail=$((total_fail + 1))
    fi
done

# Python tests: tests/api (HTTP against a daemon) and any other tests/*/test_*.py (differential
# tests that drive the C code through $BUILD/tools/*).
if [ "${SKIP_API:-0}" != 1 ] && ls tests/*/test_*.py >/dev/null 2>&1; then
    echo "== python tests (pytest)"
    out=$(SLUICE_BUILD="$BUILD" .venv/bin/python -m pytest -q -p no:cacheprovider tests 2>&1); rc=$?
    printf '%s\n' "$out" | tail -n 40
    p=$(printf '%s\n' "$out" | grep -oE '[0-9]+ passed' | tail -n1 | cut -d' ' -f1)
    f=$(printf '%s\n' "$out" | grep -oE '[0-9]+ (failed|error)' | awk '{s+=$1} END {print s+0}')
    total_pass=$((total_pass + ${p:-0})); total_fail=$((total_fail + ${f:-0}))
    if [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ]; then broken+=("pytest (rc $rc)"); total_fail=$((total_fail + 1)); fi
fi

for b in "${broken[@]}"; do echo "broken: $b"; done
echo "${total_pass} passed, ${total_fail} failed"
[ "$total_fail" -eq 0 ]
