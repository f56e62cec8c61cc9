// gpu_bench.h: what the bench/gpu programs share: timing with CUDA events after warm-up, medians,
// random device data (never zeros), the measured copy bandwidth the attention targets are read
// against, and one SUMMARY line per headline number for scripts/gpu-check.sh to collect.
#pragma once

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "kernels/cuda/cuda_ops.h"

typedef void (*BenchFn)(void *ctx, int rep);

// BENCH_QUICK=1 in the environment: small sizes only, a smoke run of every path in seconds.
static bool bench_quick;

static int bench_cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

// Median milliseconds of `reps` runs of fn after `warm` untimed ones, each run between two events.
// fn gets the repetition index, to rotate inputs that would otherwise stay in L2.
static float bench_median_ms(BenchFn fn, void *ctx, KStream *s, int warm, int reps) {
    KEvent *e0 = kevent_create(), *e1 = kevent_create();
    if (bench_quick) warm = 1, reps = 3;
    for (int i = 0; i < warm; i++) fn(ctx, i);
    float *t = xmalloc(reps * sizeof(float));
    for (int i = 0; i < reps; i++) {
        kevent_record(e0, s);
        fn(ctx, i);
        kevent_record(e1, s);
        t[i] = kevent_elapsed_ms(e0, e1);
    }
    qsort(t, reps, sizeof(float), bench_cmp_float);
    float med = t[reps / 2];
    free(t);
    kevent_free(e0), kevent_free(e1);
    return med;
}

// n random floats in [lo, hi) on the device (a fixed seed; never 0).
static float *bench_dev_random(size_t n, float lo, float hi, uint64_t seed) {
    float *h = xmalloc(n * sizeof(float));
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        float f = lo + (hi - lo) * (float)((x >> 40) * (1.0 / 16777216.0));
        h[i] = f == 0.0f ? 0.5f * hi : f;
    }
    float *d = kdev_malloc(n * sizeof(float));
    kdev_memcpy_h2d(d, h, n * sizeof(float), NULL);
    free(h);
    return d;
}

// Fills `n` bf16 values at dst with random data, a 16M-value random slab converted repeatedly.
static void bench_fill_bf16(uint16_t *dst, size_t n, KStream *s) {
    const size_t slab = (size_t)16 << 20;
    float *src = bench_dev_random(slab, -1.0f, 1.0f, 7);
    for (size_t i = 0; i < n; i += slab) k_dequant_bf16_cuda(dst + i, src, QTYPE_F32, (int64_t)MIN(slab, n - i), s);
    kstream_sync(s);
    kdev_free(src);
}

typedef struct {
    void *a, *b;
    size_t bytes;
    KStream *s;
} CopyCtx;

static void bench_copy_run(void *ctx, int rep) {
    CopyCtx *c = ctx;
    (void)rep;
    kdev_memcpy_d2d(c->b, c->a, c->bytes, c->s);
}

// Device-to-device copy bandwidth (1 GiB), bytes read plus written per second (METHOD.md's ceiling).
static double bench_copy_bandwidth(KStream *s) {
    CopyCtx c = {NULL, NULL, (size_t)1 << (bench_quick ? 24 : 30), s};
    c.a = kdev_malloc(c.bytes), c.b = kdev_malloc(c.bytes);
    kdev_memset(c.a, 0x3c, c.bytes, s);
    float ms = bench_median_ms(bench_copy_run, &c, s, 3, 20);
    kdev_free(c.a), kdev_free(c.b);
    return 2.0 * (double)c.bytes / (ms * 1e-3);
}

#define BENCH_SKIP_WITHOUT_GPU()                                                              \
    do {                                                                                      \
        bench_quick = getenv("BENCH_QUICK") && atoi(getenv("BENCH_QUICK")) > 0;               \
        if (!kcuda_available()) {                                                             \
            printf("SKIP: no CUDA device (%s)\n", kcuda_unavailable_reason());                \
            return 0;                                                                         \
        }                                                                                     \
        printf("device: %s, %d multiprocessors\n", kcuda_device_name(), kcuda_sm_count());   \
    } while (0)
