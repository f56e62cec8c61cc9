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
# NCCL has no emulation: comm.cu and its test (test_gpu_comm) run on a device only.
kobj=()
for f in "$B"/src/kernels/cuda/*.cu; do
    [ "$(basename "$f")" = comm.cu ] && continue
    o="$B/$(basename "$f" .cu).o"
    g++ $CXXF -x c++ -c "$f" -o "$o"
    kobj+=("$o")
done
g++ $CXXF -c "$EMU/emu.cpp" -o "$B/emu.o"
hobj=()
for f in common/common.c kernels/cpu/*.c engine/sampling/sampler.c; do
    o="$B/host_$(echo "$f" | tr / _).o"
    gcc $CF -c "$f" -o "$o"
    hobj+=("$o")
done
progs=()
# test_gpu_engine loads models: it links the whole engine (below), not just the twins.
for f in tests/gpu/test_*.c; do
    case "$f" in tests/gpu/test_gpu_comm.c | tests/gpu/test_gpu_engine.c) ;; *) progs+=("$f") ;; esac
done
[ "${BENCH:-0}" = 1 ] && for f in bench/gpu/*.c; do [ "$f" = bench/gpu/bench_gpu_engine.c ] || progs+=("$f"); done
for f in "${progs[@]}"; do
    name=$(basename "$f" .c)
    gcc $CF -c "$f" -o "$B/$name.o"
    g++ $SANF -o "$B/$name" "$B/$name.o" "${hobj[@]}" "${kobj[@]}" "$B/emu.o" -fopenmp -lm
done
# The GPU runner over the emulated kernels (its graphs replayed by the emulator's capture): the
# engine's sources, gpu_runner.c with SLUICE_CUDA, the tiny dummy model (GPU_TEST_QUICK).
eobj=()
for f in common/*.c config/*.c kernels/cpu/*.c scheduler/*.c engine/*.c engine/*/*.c; do
    o="$B/eng_$(echo "$f" | tr / _).o"
    gcc $CF -DTEST_DATA_DIR="\"$PWD/tests/data\"" -DTEST_MODEL_PATH="\"$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf\"" \
        $([ "$f" = engine/gpu_runner.c ] && echo -DSLUICE_CUDA) -c "$f" -o "$o"
    eobj+=("$o")
done
gcc $CF -DTEST_DATA_DIR="\"$PWD/tests/data\"" -DTEST_MODEL_PATH="\"$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf\"" \
    -c tests/gpu/test_gpu_engine.c -o "$B/test_gpu_engine.o"
g++ $SANF -o "$B/test_gpu_engine" "$B/test_gpu_engine.o" "${eobj[@]}" "${kobj[@]}" "$B/emu.o" -fopenmp -lpcre2-8 -lcjson -lm
progs+=(tests/gpu/test_gpu_engine.c)

# The fiber stacks are the emulator's and live until exit: not a leak of the code under test.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
fail=0
for f in "${progs[@]}"; do
    name=$(basename "$f" .c)
    echo "== $name (emulated)"
    BENCH_QUICK=1 GPU_TEST_QUICK=1 "$B/$name" || fail=1
done
exit $fail
