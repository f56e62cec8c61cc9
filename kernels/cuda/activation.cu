// activation.cu: SiLU-and-multiply, twin of kernels/cpu/activation.c: out = gate · σ(gate) · up.
// Element-wise over n_tokens × dim, float4 when the buffers allow; a grid-stride loop sized to
// fill the device. expf here is CUDA's (≤ 2 ulp), the CPU's a polynomial of ~2 ulp: the two
// agree to f32 rounding, not bit for bit.
#include "kernels/cuda/kcuda.cuh"

#define SILU_THREADS 256
#define SILU_MAX_BLOCKS 4096

static __device__ __forceinline__ float silu_mul(float g, float u) {
    return g / (1.0f + expf(-g)) * u;
}

template <bool VEC>
__global__ void silu_mul_kernel(float *out, const float *gate, const float *up, int64_t n) {
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    int64_t i0 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (VEC) {
        for (int64_t i = i0; i < n / 4; i += stride) {
            float4 g = ((const float4 *)gate)[i], u = ((const float4 *)up)[i];
            ((float4 *)out)[i] = make_float4(silu_mul(g.x, u.x), silu_mul(g.y, u.y), silu_mul(g.z, u.z),
                                             silu_mul(g.w, u.w));
        }
    } else {
        for (int64_t i = i0; i < n; i += stride) out[i] = silu_mul(gate[i], up[i]);
    }
}

extern "C" void k_silu_mul_cuda(float *out, const float *gate, const float *up, int n_tokens, int dim, KStream *s) {
    int64_t n = (int64_t)n_tokens * dim;
    if (n <= 0) return;
    bool vec = n % 4 == 0 && (((uintptr_t)out | (uintptr_t)gate | (uintptr_t)up) & 15) == 0;
    int64_t work = vec ? n / 4 : n;
    int blocks = kcuda_blocks(work, SILU_THREADS);
    if (blocks > SILU_MAX_BLOCKS) blocks = SILU_MAX_BLOCKS;
    if (vec) silu_mul_kernel<true><<<blocks, SILU_THREADS, 0, kstream_of(s)>>>(out, gate, up, n);
    else silu_mul_kernel<false><<<blocks, SILU_THREADS, 0, kstream_of(s)>>>(out, gate, up, n);
    CUDA_CHECK_LAUNCH();
}
