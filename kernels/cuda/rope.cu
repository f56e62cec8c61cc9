// rope.cu: rotary position embedding on q and k fused with the write of k and v into the paged
// bf16 cache, twin of kernels/cpu/rope.c.
//
// One thread block per token. The block first forms the token's cos/sin table in shared memory:
// the inverse frequencies come from the host, computed with the same pow() as the twin (and
// divided by the llama3 frequency factors, device memory, in double as the twin does), and the
// angles pos · inv_freq are formed and reduced in double, as there, so the two agree to the last
// bit of the table nearly always. Then every (head, pair) of q and k is rotated in place, and
// once the block's k is rotated (a barrier), k and v are written to the token's slot in bf16.
#include <math.h>

#include "kernels/cuda/kcuda.cuh"

#define ROPE_THREADS 128
#define ROPE_MAX_PAIRS 256

typedef struct {
    double inv_freq[ROPE_MAX_PAIRS]; // base^(-2i / rope_dim), by value: 2 KiB of kernel parameters
} RopeFreqs;

// The pair (x[a], x[b]) of each layout: adjacent dims (NORMAL) or the two halves (NEOX).
static __device__ __forceinline__ void rope_pair(float *x, int i, int half, bool neox, float c, float s) {
    int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
    float x0 = x[a], x1 = x[b];
    x[a] = x0 * c - x1 * s;
    x[b] = x0 * s + x1 * c;
}

template <bool VEC>
__global__ void __launch_bounds__(ROPE_THREADS) rope_kv_write_kernel(
    float *q, float *k, const float *v, const int *positions, const int *slot_mapping, uint16_t *kc, uint16_t *vc,
    int n_slots, int n_heads, int n_kv, int hd, int half, bool neox, const RopeFreqs freqs, const float *factors) {
    __shared__ float cs[ROPE_MAX_PAIRS], sn[ROPE_MAX_PAIRS];
    int t = blockIdx.x;
    double pos = positions[t];
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        double s, c, f = freqs.inv_freq[i];
        if (factors) f /= (double)factors[i];
        sincos(pos * f, &s, &c);
        cs[i] = (float)c;
        sn[i] = (float)s;
    }
    __syncthreads();
    float *qt = q + (size_t)t * n_heads * hd, *kt = k + (size_t)t * n_kv * hd;
    for (int j = threadIdx.x; j < n_heads * half; j += blockDim.x) {
        int h = j / half, i = j - h * half;
        rope_pair(qt + (size_t)h * hd, i, half, neox, cs[i], sn[i]);
    }
    for (int j = threadIdx.x; j < n_kv * half; j += blockDim.x) {
        int h = j / half, i = j - h * half;
        rope_pair(kt + (size_t)h * hd, i, half, neox, cs[i], sn[i]);
    }
    int slot = slot_mapping[t];
    if (slot < 0 || slot >= n_slots) return; // a padding row (or a runner bug): rotate, don't cache
    __syncthreads(); // the rotated k of other threads, read back below
    int n = n_kv * hd;
    const float *vt = v + (size_t)t * n;
    uint16_t *kd = kc + (size_t)slot * n, *vd = vc + (size_t)slot * n;
    if (VEC) {
        for (int i = threadIdx.x * 4; i < n; i += blockDim.x * 4) {
            float4 a = *(const float4 *)(kt + i), b = *(const float4 *)(vt + i);
            *(uint2 *)(kd + i) = make_uint2(pack_bf16x2(a.x, a.y), pack_bf16x2(a.z, a.w));
            *(uint2 *)(vd + i) = make_uint2(pack_bf16x2(b.x, b.y), pack_bf16x2(b.z, b.w));
        }
    } else {
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            kd[i] = f32_to_bf16_bits(kt[i]);
            vd[i] = f32_to_bf16_bits(vt[i]);
        }
    }
}

extern "C" void k_rope_kv_write_cuda(float *q, float *k, const float *v, const Batch *b, const KVLayer *cache,
                                     int n_heads, int rope_dim, float freq_base, const float *freq_factors,
                                     RopeLayout layout, KStream *s) {
    int hd = cache->head_dim, half = rope_dim / 2;
    bool dims_ok = (rope_dim & 1) == 0 && rope_dim >= 2 && rope_dim <= hd && half <= ROPE_MAX_PAIRS;
    CHECK(dims_ok, "rope_dim %d, head_dim %d", rope_dim, hd);
    CHECK(kv_dtype_id(cache) == KCUDA_KV_BF16_ID, "the CUDA KV cache is bf16 (dtype %d)", kv_dtype_id(cache));
    if (b->n_tokens <= 0) return;
    // The twin's inverse frequencies, computed the same way (host pow in double).
    RopeFreqs f;
    for (int i = 0; i < half; i++) f.inv_freq[i] = pow((double)freq_base, -2.0 * i / rope_dim);
    int n = cache->n_kv_heads * hd;
    bool vec = n % 4 == 0 && (((uintptr_t)k | (uintptr_t)v | (uintptr_t)cache->k | (uintptr_t)cache->v) & 15) == 0;
    int n_slots = cache->num_blocks * cache->block_size;
    uint16_t *kc = (uint16_t *)cache->k, *vc = (uint16_t *)cache->v;
    bool neox = layout == ROPE_NEOX;
    cudaStream_t st = kstream_of(s);
    if (vec)
        rope_kv_write_kernel<true><<<b->n_tokens, ROPE_THREADS, 0, st>>>(
            q, k, v, b->positions, b->slot_mapping, kc, vc, n_slots, n_heads, cache->n_kv_heads, hd, half, neox, f,
            freq_factors);
    else
        rope_kv_write_kernel<false><<<b->n_tokens, ROPE_THREADS, 0, st>>>(
            q, k, v, b->positions, b->slot_mapping, kc, vc, n_slots, n_heads, cache->n_kv_heads, hd, half, neox, f,
            freq_factors);
    CUDA_CHECK_LAUNCH();
}
