// rmsnorm.c: RMSNorm, alone and fused with the residual add that precedes it in a pre-norm
// block. The sum of squares runs in a fixed lane order (kcpu_dot_f32), so a row's result
// depends only on that row.
#include <omp.h>

#include "kernels/cpu/cpu.h"

// Rows below this many are not worth waking the other threads for.
#define NORM_PAR_ROWS 8

static void rmsnorm_row(float *out, const float *x, const float *w, int dim, float eps) {
    float ss = kcpu_dot_f32(x, x, dim);
    float scale = 1.0f / sqrtf(ss / (float)dim + eps);
    int i = 0;
#if defined(KCPU_AVX512)
    __m512 sv = _mm512_set1_ps(scale);
    for (; i + 16 <= dim; i += 16)
        _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), sv), _mm512_loadu_ps(w + i)));
#endif
    for (; i < dim; i++) out[i] = (x[i] * scale) * w[i];
}

static void add_row(float *residual, const float *delta, int dim) {
    int i = 0;
#if defined(KCPU_AVX512)
    for (; i + 16 <= dim; i += 16)
        _mm512_storeu_ps(residual + i, _mm512_add_ps(_mm512_loadu_ps(residual + i), _mm512_loadu_ps(delta + i)));
#endif
    for (; i < dim; i++) residual[i] += delta[i];
}

void k_rmsnorm(float *out, const float *x, const float *w, int n_tokens, int dim, float eps) {
    int nth = k_threads(); // the caller's count, read before the region (workers are other threads)
#pragma omp parallel for schedule(static) num_threads(nth) if (n_tokens >= NORM_PAR_ROWS)
    for (int t = 0; t < n_tokens; t++)
        rmsnorm_row(out + (size_t)t * dim, x + (size_t)t * dim, w, dim, eps);
}

void k_add_rmsnorm(float *out, float *residual, const float *delta, const float *w, int n_tokens,
                   int dim, float eps) {
    int nth = k_threads();
#pragma omp parallel for schedule(static) num_threads(nth) if (n_tokens >= NORM_PAR_ROWS)
    for (int t = 0; t < n_tokens; t++) {
        float *r = residual + (size_t)t * dim;
        add_row(r, delta + (size_t)t * dim, dim);
        rmsnorm_row(out + (size_t)t * dim, r, w, dim, eps);
    }
}
