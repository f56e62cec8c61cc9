// bias.c: k_add_bias, x[t, :] += bias: the Q, K and V projection biases of Qwen2 (the matmuls
// have none of their own). One float addition per element, so any split over threads gives the
// same bits.
#include <omp.h>

#include "kernels/cpu/cpu.h"

// Below this many elements the other threads cost more to wake than the additions.
#define BIAS_PAR_ELEMS 65536

static void add_bias_row(float *x, const float *bias, int dim) {
    int i = 0;
#if defined(KCPU_AVX512)
    for (; i + 16 <= dim; i += 16)
        _mm512_storeu_ps(x + i, _mm512_add_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(bias + i)));
#endif
    for (; i < dim; i++) x[i] += bias[i];
}

void k_add_bias(float *x, const float *bias, int n_tokens, int dim) {
    int nth = k_threads(); // the caller's count, read before the region (workers are other threads)
    bool par = (size_t)n_tokens * dim >= BIAS_PAR_ELEMS;
#pragma omp parallel for schedule(static) num_threads(nth) if (par)
    for (int t = 0; t < n_tokens; t++) add_bias_row(x + (size_t)t * dim, bias, dim);
}
