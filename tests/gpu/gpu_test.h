// gpu_test.h: what the tests/gpu binaries share: seeded random inputs (never zeros), device
// buffers that start poisoned, and the comparison by relative error that METHOD.md gives per
// precision (‖out − ref‖ / ‖ref‖ in double; NaN or inf never passes).
//
// Each binary lists its cases once (X-macro), so that without a GPU it can say how many it
// skipped: "SKIP: no CUDA device (...)" and "0 passed, 0 failed, N skipped", exit 0.
#pragma once

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"
#include "tests/unit/test.h"

// Tolerances by precision (METHOD.md): f32 arithmetic far under 1e-3, bf16 operands 1e-3..1e-2.
#define TOL_F32 1e-5
#define TOL_BF16 1e-2

static KStream *gt_stream;
static bool gt_verbose; // GT_VERBOSE=1: print every comparison's error, not only failures

// ---- random inputs: splitmix64, reseeded per case so a failure reproduces alone
static uint64_t gt_rng;

static inline void gt_seed(uint64_t seed) {
    gt_rng = seed * 0x9e3779b97f4a7c15ull + 12345;
}
static inline uint64_t gt_next(void) {
    uint64_t z = (gt_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static inline int gt_int(int n) { // [0, n)
    return (int)(gt_next() % (uint64_t)n);
}
// Uniform in [lo, hi), never exactly 0 (zeros hide unwritten outputs and wrong indexing).
static inline float gt_float(float lo, float hi) {
    float f = lo + (hi - lo) * (float)((double)(gt_next() >> 11) * (1.0 / 9007199254740992.0));
    return f == 0.0f ? (hi - lo) * 0.25f : f;
}
static inline void gt_fill(float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = gt_float(lo, hi);
}
// A random permutation of 0..n-1.
static inline void gt_shuffle(int *a, int n) {
    for (int i = 0; i < n; i++) a[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = gt_int(i + 1), t = a[i];
        a[i] = a[j], a[j] = t;
    }
}

// ---- device buffers
#define GT_POISON 0xff // every byte: f32 and bf16 NaN

static inline void *gt_dev(size_t bytes) { // poisoned
    void *p = kdev_malloc(bytes);
    kdev_memset(p, GT_POISON, bytes, NULL);
    return p;
}
static inline void *gt_upload(const void *h, size_t bytes) {
    void *p = kdev_malloc(bytes);
    kdev_memcpy_h2d(p, h, bytes, NULL);
    return p;
}
static inline void *gt_download(const void *d, size_t bytes) { // the caller frees
    kstream_sync(gt_stream);
    void *h = xmalloc(bytes ? bytes : 1);
    kdev_memcpy_d2h(h, d, bytes, NULL);
    return h;
}

// ---- comparison
static inline double gt_rel_err(const float *out, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(out[i])) return INFINITY;
        double d = (double)out[i] - (double)ref[i];
        num += d * d, den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

#define EXPECT_REL(out, ref, n, tol, what)                                                     \
    do {                                                                                       \
        double e_ = gt_rel_err((out), (ref), (n));                                             \
        if (gt_verbose) printf("  %-64s %.3g (tolerance %.1g)\n", (what), e_, (double)(tol));  \
        EXPECT(e_ <= (tol), "%s: relative error %.3g (tolerance %.1g)", (what), e_, (double)(tol)); \
    } while (0)

static inline float gt_bf16_round(float f) {
    return bf16_to_f32(f32_to_bf16(f));
}

// main() for a binary whose cases are listed by CASES(X).
#define GT_COUNT_(fn) +1
#define GT_RUN_(fn) TEST_RUN(fn);
#define GT_MAIN(CASES, max_tokens, max_cols)                                                   \
    int main(void) {                                                                           \
        if (!kcuda_available()) {                                                              \
            printf("SKIP: no CUDA device (%s)\n", kcuda_unavailable_reason());                 \
            printf("0 passed, 0 failed, %d skipped\n", 0 CASES(GT_COUNT_));                    \
            return 0;                                                                          \
        }                                                                                      \
        printf("device: %s, %d multiprocessors\n", kcuda_device_name(), kcuda_sm_count());     \
        gt_verbose = getenv("GT_VERBOSE") && atoi(getenv("GT_VERBOSE")) > 0;                   \
        k_init(2, (max_tokens), (max_cols));                                                   \
        gt_stream = kstream_create((max_tokens), (max_cols));                                  \
        CASES(GT_RUN_)                                                                         \
        kstream_free(gt_stream);                                                               \
        k_free();                                                                              \
        return test_summary();                                                                 \
    }
