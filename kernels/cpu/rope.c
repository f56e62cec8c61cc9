// rope.c: rotary position embedding on q and k, fused with the write of k and v into the paged
// KV cache through the batch's slot mapping.
//
// Pair i of a head (i < rope_dim / 2) turns by theta_i = pos · base^(−2i / rope_dim) / f_i, with
// f_i = freq_factors[i] when given (llama3 RoPE scaling, Llama 3.1's rope_freqs) and 1 otherwise:
// ROPE_NORMAL pairs adjacent dims (x[2i], x[2i+1]) (llama GGUFs, whose converter permuted Q
// and K for it); ROPE_NEOX pairs the halves (x[i], x[i + rope_dim/2]). Angles are formed and
// reduced in double, so positions far into a long context keep their precision.
#include <omp.h>

#include "kernels/cpu/cpu.h"

#define ROPE_MAX_PAIRS 256

static void rope_head(float *x, const float *cs, const float *sn, int half, RopeLayout layout) {
    int stride = layout == ROPE_NEOX ? 1 : 2, other = layout == ROPE_NEOX ? half : 1;
    for (int i = 0; i < half; i++) {
        float *a = x + (size_t)i * stride, *b = a + other;
        float x0 = *a, x1 = *b;
        *a = x0 * cs[i] - x1 * sn[i];
        *b = x0 * sn[i] + x1 * cs[i];
    }
}

static void kv_store(const KVLayer *c, void *base, int slot, const float *src) {
    size_t n = (size_t)c->n_kv_heads * c->head_dim;
    if (c->dtype == KV_F32) {
        memcpy((float *)base + (size_t)slot * n, src, n * sizeof(float));
        return;
    }
    uint16_t *dst = (uint16_t *)base + (size_t)slot * n;
    size_t i = 0;
#if defined(KCPU_AVX512)
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
    for (; i < n; i++) dst[i] = kcpu_f2h(src[i]);
}

void k_rope_kv_write(float *q, float *k, const float *v, const Batch *b, const KVLayer *cache,
                     int n_heads, int rope_dim, float freq_base, const float *freq_factors, RopeLayout layout) {
    int hd = cache->head_dim, nkv = cache->n_kv_heads, half = rope_dim / 2;
    bool dims_ok = (rope_dim & 1) == 0 && rope_dim <= hd && half <= ROPE_MAX_PAIRS;
    CHECK(dims_ok, "rope_dim %d, head_dim %d", rope_dim, hd);
    int n_slots = cache->num_blocks * cache->block_size;
    double inv_freq[ROPE_MAX_PAIRS];
    for (int i = 0; i < half; i++) {
        inv_freq[i] = pow((double)freq_base, -2.0 * i / rope_dim);
        if (freq_factors) inv_freq[i] /= (double)freq_factors[i]; // the CUDA twin divides the same way
    }
    int nth = k_threads(); // the caller's count, read before the region (workers are other threads)
#pragma omp parallel for schedule(static) num_threads(nth) if (b->n_tokens >= 16)
    for (int t = 0; t < b->n_tokens; t++) {
        float cs[ROPE_MAX_PAIRS], sn[ROPE_MAX_PAIRS];
        double pos = b->positions[t];
        for (int i = 0; i < half; i++) {
            double theta = pos * inv_freq[i];
            cs[i] = (float)cos(theta);
            sn[i] = (float)sin(theta);
        }
        float *qt = q + (size_t)t * n_heads * hd, *kt = k + (size_t)t * nkv * hd;
        for (int h = 0; h < n_heads; h++) rope_head(qt + (size_t)h * hd, cs, sn, half, layout);
        for (int h = 0; h < nkv; h++) rope_head(kt + (size_t)h * hd, cs, sn, half, layout);
        int slot = b->slot_mapping[t];
        if (slot < 0) continue; // a padding row: nothing to cache
        CHECK(slot < n_slots, "slot %d of %d", slot, n_slots);
        kv_store(cache, cache->k, slot, kt);
        kv_store(cache, cache->v, slot, v + (size_t)t * nkv * hd);
    }
}
