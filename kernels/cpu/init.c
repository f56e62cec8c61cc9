// init.c: k_init: the thread count and the scratch every CPU op draws from, so that no op
// allocates in the step loop.
#include <omp.h>
#include <stdlib.h>

#include "kernels/cpu/cpu.h"

KCpu kcpu;

void k_free(void) {
    free(kcpu.xq);
    free(kcpu.xd);
    free(kcpu.xs);
    free(kcpu.thread_buf);
    memset(&kcpu, 0, sizeof(kcpu));
}

void k_init(int n_threads, int max_tokens, int max_cols) {
    CHECK(n_threads >= 1 && max_tokens >= 1 && max_cols >= 1, "(%d threads, %d tokens, %d cols)",
          n_threads, max_tokens, max_cols);
    k_free();
    kcpu.n_threads = n_threads;
    kcpu.max_tokens = max_tokens;
    kcpu.max_cols = max_cols;
    int blocks = (max_cols + KCPU_QK - 1) / KCPU_QK;
    kcpu.max_pairs = (blocks + 1) / 2;
    size_t rows = (size_t)max_tokens;
    kcpu.xq = xmalloc_aligned(rows * (size_t)kcpu.max_pairs * 2 * KCPU_QK * sizeof(int16_t));
    kcpu.xd = xmalloc_aligned(rows * (size_t)kcpu.max_pairs * 2 * sizeof(float));
    kcpu.xs = xmalloc_aligned(rows * (size_t)kcpu.max_pairs * 4 * sizeof(float));
    // Each thread's buffer holds a dequantized weight row (max_cols), the offsets of a matmul
    // tile's weight rows (< max_cols / 2), or one KV head group's attention accumulators.
    kcpu.thread_buf_floats = ((size_t)2 * max_cols + 4096 + 15) & ~(size_t)15;
    kcpu.thread_buf = xmalloc_aligned((size_t)n_threads * kcpu.thread_buf_floats * sizeof(float));
    // Also the caller's own default, for code outside these ops that opens parallel regions;
    // the ops themselves name their team size (num_threads) because this setting is per thread.
    omp_set_num_threads(n_threads);
}

int k_threads(void) {
    return kcpu.n_threads > 0 ? kcpu.n_threads : 1;
}

void kcpu_check_fits(int n_tokens, int cols) {
    CHECK(kcpu.n_threads > 0, "k_init() must run before any op");
    CHECK(n_tokens >= 0 && n_tokens <= kcpu.max_tokens, "%d tokens, scratch sized for %d", n_tokens,
          kcpu.max_tokens);
    CHECK(cols <= kcpu.max_cols, "%d columns, scratch sized for %d", cols, kcpu.max_cols);
}
