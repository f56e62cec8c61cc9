// activation.c: the gated MLPs' joins, SwiGLU's out = gate · sigmoid(gate) · up and GeGLU's
// out = gelu_tanh(gate) · up, and two elementwise maps (soft-capping, scaling).
// exp comes from the shared polynomial (cpu.h), the same on every path.
#include <omp.h>

#include "kernels/cpu/cpu.h"

#define SILU_PAR_ELEMS 65536

static void silu_mul_span(float *out, const float *gate, const float *up, size_t n) {
    size_t i = 0;
#if defined(KCPU_AVX512)
    const __m512 one = _mm512_set1_ps(1.0f);
    for (; i + 16 <= n; i += 16) {
        __m512 g = _mm512_loadu_ps(gate + i);
        __m512 e = kcpu_exp512(_mm512_sub_ps(_mm512_setzero_ps(), g));
        __m512 s = _mm512_div_ps(g, _mm512_add_ps(one, e));
        _mm512_storeu_ps(out + i, _mm512_mul_ps(s, _mm512_loadu_ps(up + i)));
    }
#elif defined(KCPU_AVX2)
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i);
        __m256 e = kcpu_exp256(_mm256_sub_ps(_mm256_setzero_ps(), g));
        __m256 s = _mm256_div_ps(g, _mm256_add_ps(one, e));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(s, _mm256_loadu_ps(up + i)));
    }
#endif
    for (; i < n; i++) out[i] = gate[i] / (1.0f + kcpu_expf(-gate[i])) * up[i];
}

void k_silu_mul(float *out, const float *gate, const float *up, int n_tokens, int dim) {
    size_t n = (size_t)n_tokens * dim;
    if (n < SILU_PAR_ELEMS) {
        silu_mul_span(out, gate, up, n);
        return;
    }
    // Split on 16-element boundaries so each element takes the same (vector) path whatever the
    // thread count.
    size_t chunks = (n + 15) / 16;
    int nth = k_threads(); // the caller's count, read before the region (workers are other threads)
#pragma omp parallel num_threads(nth)
    {
        int lo, hi;
        kcpu_split((int)chunks, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
        size_t a = (size_t)lo * 16, b = MIN(n, (size_t)hi * 16);
        if (a < b) silu_mul_span(out + a, gate + a, up + a, b - a);
    }
}

// GELU, tanh approximation: 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), computed as
// x · sigmoid(2u) (the same function: 0.5 (1 + tanh(u)) = 1 / (1 + e^{-2u})), which keeps its
// relative precision in the negative tail where 1 + tanh(u) cancels. Only Gemma uses it, so it
// stays scalar.
static inline float gelu_tanh(float x) {
    const float k = 0.7978845608028654f; // sqrt(2 / pi)
    float u = k * (x + 0.044715f * x * x * x);
    return x / (1.0f + kcpu_expf(-2.0f * u));
}

void k_gelu_mul(float *out, const float *gate, const float *up, int n_tokens, int dim) {
    size_t n = (size_t)n_tokens * dim;
    int nth = k_threads();
#pragma omp parallel for schedule(static) num_threads(nth) if (n >= SILU_PAR_ELEMS)
    for (size_t i = 0; i < n; i++) out[i] = gelu_tanh(gate[i]) * up[i];
}

void k_softcap(float *x, size_t n, float cap) {
    for (size_t i = 0; i < n; i++) x[i] = cap * tanhf(x[i] / cap);
}

void k_scale(float *x, size_t n, float s) {
    for (size_t i = 0; i < n; i++) x[i] *= s;
}
