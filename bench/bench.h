// bench.h: what the C benchmarks share (bench_engine.c, bench_prefill.c, bench_kernels.c): a
// fixed-seed generator for their prompts, and sorting for medians.
#pragma once

#include <stdint.h>
#include <stdlib.h>

static uint64_t bench_rng_state = 0x9E3779B97F4A7C15ull;
static inline uint32_t bench_rng_u32(void) {
    bench_rng_state ^= bench_rng_state << 13, bench_rng_state ^= bench_rng_state >> 7,
        bench_rng_state ^= bench_rng_state << 17;
    return (uint32_t)(bench_rng_state >> 16);
}

// n prompt ids, printable-ish ones away from the special tokens at the start of the vocabulary.
static inline void bench_random_prompt(int32_t *ids, int n, int vocab) {
    for (int k = 0; k < n; k++) ids[k] = 100 + (int32_t)(bench_rng_u32() % (uint32_t)(vocab - 200));
}

static inline int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
