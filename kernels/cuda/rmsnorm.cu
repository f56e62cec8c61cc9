// rmsnorm.cu: RMSNorm and the fused residual add + RMSNorm, twins of kernels/cpu/rmsnorm.c.
//
// One thread block per row. The fused op reads residual and delta once, writes the new residual
// and keeps the sum of squares in registers, then a second sweep (the row is in L1 by then)
// scales it: per element 3 reads and 2 writes, the least the op can move. The sum of squares is
// taken in f32 in a different order than the CPU's, so results agree to f32 rounding
// (relative error ~1e-7), not bit for bit.
#include "kernels/cuda/kcuda.cuh"

#define NORM_THREADS 256

// VEC: dim % 4 == 0 and 16-byte aligned rows, so float4 throughout.
template <bool VEC, bool ADD>
__global__ void __launch_bounds__(NORM_THREADS) rmsnorm_kernel(float *out, float *residual, const float *x,
                                                               const float *delta, const float *w, int dim,
                                                               float eps) {
    __shared__ float red[32];
    size_t off = (size_t)blockIdx.x * dim;
    // In the fused op x is the residual, updated in place.
    const float *xr = (ADD ? residual : x) + off;
    float ss = 0.0f;
    if (VEC) {
        for (int i = threadIdx.x * 4; i < dim; i += blockDim.x * 4) {
            float4 v = *(const float4 *)(xr + i);
            if (ADD) {
                float4 d = *(const float4 *)(delta + off + i);
                v.x += d.x, v.y += d.y, v.z += d.z, v.w += d.w;
                *(float4 *)(residual + off + i) = v;
            }
            ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
    } else {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) {
            float v = xr[i];
            if (ADD) {
                v += delta[off + i];
                residual[off + i] = v;
            }
            ss += v * v;
        }
    }
    ss = block_sum(ss, red);
    // The twin's expression, so the scale rounds the same way given the same sum.
    float scale = 1.0f / sqrtf(ss / (float)dim + eps);
    // Each thread reads back only what it wrote itself above: no barrier needed.
    if (VEC) {
        for (int i = threadIdx.x * 4; i < dim; i += blockDim.x * 4) {
            float4 v = *(const float4 *)(xr + i), g = *(const float4 *)(w + i);
            *(float4 *)(out + off + i) = make_float4(v.x * scale * g.x, v.y * scale * g.y, v.z * scale * g.z,
                                                     v.w * scale * g.w);
        }
    } else {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) out[off + i] = xr[i] * scale * w[i];
    }
}

static bool aligned16(const void *p) {
    return ((uintptr_t)p & 15) == 0;
}

template <bool ADD>
static void rmsnorm_launch(float *out, float *residual, const float *x, const float *delta, const float *w,
                           int n_tokens, int dim, float eps, KStream *s) {
    if (n_tokens <= 0) return;
    CHECK(dim >= 1, "dim %d", dim);
    bool vec = dim % 4 == 0 && aligned16(out) && aligned16(w) &&
               (ADD ? aligned16(residual) && aligned16(delta) : aligned16(x));
    cudaStream_t st = kstream_of(s);
    if (vec) rmsnorm_kernel<true, ADD><<<n_tokens, NORM_THREADS, 0, st>>>(out, residual, x, delta, w, dim, eps);
    else rmsnorm_kernel<false, ADD><<<n_tokens, NORM_THREADS, 0, st>>>(out, residual, x, delta, w, dim, eps);
    CUDA_CHECK_LAUNCH();
}

extern "C" void k_rmsnorm_cuda(float *out, const float *x, const float *w, int n_tokens, int dim, float eps,
                               KStream *s) {
    rmsnorm_launch<false>(out, NULL, x, NULL, w, n_tokens, dim, eps, s);
}

extern "C" void k_add_rmsnorm_cuda(float *out, float *residual, const float *delta, const float *w, int n_tokens,
                                   int dim, float eps, KStream *s) {
    rmsnorm_launch<true>(out, residual, NULL, delta, w, n_tokens, dim, eps, s);
}
