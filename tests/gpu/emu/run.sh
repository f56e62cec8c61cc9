#!/usr/bin/env bash
# run.sh: tests/gpu against the CUDA kernels executed on the CPU by a SIMT emulator, for a
# machine without a GPU. It checks the kernels' logic (indexing, fragment layouts, masking,
# context splits, barriers, the sampler's selections) against the CPU twins, nothing about
# speed, and not the hardware itself: the emulated mma/ldmatrix follow the PTX ISA's fragment
# tables, and math functions are the host's. Every CUDA thread is a fiber (x86-64 Linux only).
#
#   bash tests/gpu/emu/run.sh                    the tests (a few minutes)
#   SAN=address bash tests/gpu/emu/run.sh        under ASan (or SAN=undefined)
#   BENCH=1 bash tests/gpu/emu/run.sh            also the benchmarks at BENCH_QUICK sizes
set -euo pipefail
cd "$(dirname "$0")/../../.."
EMU=tests/gpu/emu
B=${BUILD:-build}/gpu-emu${SAN:+-$SAN}
SANF=${SAN:+-fsanitize=$SAN -fno-sanitize-recover=all -fno-omit-frame-pointer}
mkdir -p "$B"
rm -rf "$B/src"
python3 "$EMU/transform.py" . "$B/src"

CXXF="-std=c++17 -O2 -g -w -I$EMU/shim -I$B/src -I. $SANF"
CF="-std=gnu11 -O2 -march=native -g -Wall -Wextra -fopenmp -I. $SANF"
kobj=()
for f in "$B"/src/kernels/cuda/*.cu; do
    o="$B/$(basename "$f" .cu).o"
    g++ $CXXF -x c++ -c "$f" -o "$o"
    kobj+=("$o")
done
g++ $CXXF -c "$EMU/emu.cpp" -o "$B/emu.o"
hobj=()
for f in common/common.c kernels/cpu/*.c engine/sampler.c; do
    o="$B/host_$(echo "$f" | tr / _).o"
    gcc $CF -c "$f" -o "$o"
    hobj+=("$o")
done
progs=(tests/gpu/test_*.c)
[ "${BENCH:-0}" = 1 ] && progs+=(bench/gpu/*.c)
for f in "${progs[@]}"; do
    name=$(basename "$f" .c)
    gcc $CF -c "$f" -o "$B/$name.o"
    g++ $SANF -o "$B/$name" "$B/$name.o" "${hobj[@]}" "${kobj[@]}" "$B/emu.o" -fopenmp -lm
done

# The fiber stacks are the emulator's and live until exit: not a leak of the code under test.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
fail=0
for f in "${progs[@]}"; do
    name=$(basename "$f" .c)
    echo "== $name (emulated)"
    BENCH_QUICK=1 "$B/$name" || fail=1
done
exit $fail
