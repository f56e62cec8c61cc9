// bias.cu: x[t, :] += bias, twin of kernels/cpu/bias.c (Qwen2's QKV biases). One f32 addition
// per element, as there, so the two agree bit for bit.
//
// Grid: x covers a row's columns (4 per thread when rows are 16-byte aligned float4s), y the rows,
// striding when there are more rows than the grid's y limit.
#include "kernels/cuda/kcuda.cuh"

#define BIAS_THREADS 256
#define BIAS_MAX_ROW_BLOCKS 65535 // gridDim.y's limit

template <bool VEC>
__global__ void __launch_bounds__(BIAS_THREADS) add_bias_kernel(float *x, const float *bias, int n_tokens, int dim) {
    int c = (blockIdx.x * blockDim.x + threadIdx.x) * (VEC ? 4 : 1);
    if (c >= dim) return;
    if (VEC) {
        float4 bv = *(const float4 *)(bias + c);
        for (int t = blockIdx.y; t < n_tokens; t += gridDim.y) {
            float4 *p = (float4 *)(x + (size_t)t * dim + c);
            float4 v = *p;
            v.x += bv.x, v.y += bv.y, v.z += bv.z, v.w += bv.w;
            *p = v;
        }
    } else {
        float bv = bias[c];
        for (int t = blockIdx.y; t < n_tokens; t += gridDim.y) x[(size_t)t * dim + c] += bv;
    }
}

extern "C" void k_add_bias_cuda(float *x, const float *bias, int n_tokens, int dim, KStream *s) {
    CHECK(n_tokens >= 0 && dim >= 1, "%d tokens of %d", n_tokens, dim);
    if (n_tokens == 0) return;
    bool vec = dim % 4 == 0 && (((uintptr_t)x | (uintptr_t)bias) & 15) == 0;
    int per_thread = vec ? 4 : 1;
    dim3 grid(kcuda_blocks(dim, BIAS_THREADS * per_thread), n_tokens < BIAS_MAX_ROW_BLOCKS ? n_tokens : BIAS_MAX_ROW_BLOCKS);
    cudaStream_t st = kstream_of(s);
    if (vec) add_bias_kernel<true><<<grid, BIAS_THREADS, 0, st>>>(x, bias, n_tokens, dim);
    else add_bias_kernel<false><<<grid, BIAS_THREADS, 0, st>>>(x, bias, n_tokens, dim);
    CUDA_CHECK_LAUNCH();
}
