// init.c: k_init: the thread count and the scratch every CPU op draws from, so that no op
// allocates in the step loop. The state belongs to the calling thread (cpu.h): each
// tensor-parallel rank is a thread that calls k_init for itself, and k_free releases only the
// caller's. A thread that exits without k_free still gets its scratch released (a pthread key
// destructor), so a rank thread that dies early leaks nothing.
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>

#include "kernels/cpu/cpu.h"

static _Thread_local KCpu *kcpu_self;
static pthread_key_t kcpu_key;
static pthread_once_t kcpu_key_once = PTHREAD_ONCE_INIT;

static void kcpu_destroy(void *p) {
    KCpu *kc = p;
    free(kc->xq);
    free(kc->xd);
    free(kc->xs);
    free(kc->xq8);
    free(kc->xd8);
    free(kc->xs8);
    free(kc->xc);
    free(kc->xbs);
    free(kc->thread_buf);
    free(kc);
}

static void kcpu_key_make(void) {
    int rc = pthread_key_create(&kcpu_key, kcpu_destroy);
    CHECK(rc == 0, "pthread_key_create: %d", rc);
}

void k_free(void) {
    KCpu *kc = kcpu_self;
    if (!kc) return;
    kcpu_self = NULL;
    pthread_setspecific(kcpu_key, NULL);
    kcpu_destroy(kc);
}

void k_init(int n_threads, int max_tokens, int max_cols) {
    CHECK(n_threads >= 1 && max_tokens >= 1 && max_cols >= 1, "(%d threads, %d tokens, %d cols)",
          n_threads, max_tokens, max_cols);
    k_free();
    pthread_once(&kcpu_key_once, kcpu_key_make);
    KCpu *kc = xcalloc(1, sizeof(KCpu));
    kc->n_threads = n_threads;
    kc->max_tokens = max_tokens;
    kc->max_cols = max_cols;
    int blocks = (max_cols + KCPU_QK - 1) / KCPU_QK;
    kc->max_pairs = (blocks + 1) / 2;
    size_t rows = (size_t)max_tokens;
    kc->xq = xmalloc_aligned(rows * (size_t)kc->max_pairs * 2 * KCPU_QK * sizeof(int16_t));
    kc->xd = xmalloc_aligned(rows * (size_t)kc->max_pairs * 2 * sizeof(float));
    kc->xs = xmalloc_aligned(rows * (size_t)kc->max_pairs * 4 * sizeof(float));
    kc->max_quads = (blocks + 3) / 4;
    kc->xq8 = xmalloc_aligned(rows * (size_t)kc->max_quads * 4 * KCPU_QK);
    kc->xd8 = xmalloc_aligned(rows * (size_t)kc->max_quads * 4 * sizeof(float));
    kc->xs8 = xmalloc_aligned(rows * (size_t)kc->max_quads * 4 * sizeof(float));
    kc->xc = xmalloc_aligned(rows * (size_t)kc->max_quads * 4 * sizeof(int32_t));
    kc->xbs = xmalloc_aligned(rows * (size_t)kc->max_quads * 8 * sizeof(int16_t));
    // Each thread's buffer holds a dequantized weight row (max_cols), the offsets of a matmul
    // tile's weight rows (< max_cols / 2), 4 K-quant rows unpacked by matmul_k8.c (< 2.2 max_cols
    // bytes each), one KV head group's attention accumulators, or the AMX kernels' 16 rows of Q4
    // or K-quant weights unpacked to bytes (16 max_cols bytes) after 4 KiB.
    kc->thread_buf_floats = ((size_t)4 * max_cols + 4096 + 15) & ~(size_t)15;
    kc->thread_buf = xmalloc_aligned((size_t)n_threads * kc->thread_buf_floats * sizeof(float));
    kcpu_self = kc;
    pthread_setspecific(kcpu_key, kc);
    // Also the caller's own default (an OpenMP setting of the calling thread), for code outside
    // these ops that opens parallel regions; the ops themselves name their team size.
    omp_set_num_threads(n_threads);
}

int k_threads(void) {
    return kcpu_self ? kcpu_self->n_threads : 1;
}

KCpu *kcpu_ctx(void) {
    KCpu *kc = kcpu_self;
    CHECK(kc != NULL, "k_init() must run on this thread before its ops (the CPU kernels' scratch is per thread)");
    return kc;
}

void kcpu_check_fits(const KCpu *kc, int n_tokens, int cols) {
    CHECK(n_tokens >= 0 && n_tokens <= kc->max_tokens, "%d tokens, scratch sized for %d", n_tokens,
          kc->max_tokens);
    CHECK(cols <= kc->max_cols, "%d columns, scratch sized for %d", cols, kc->max_cols);
}
