// kcuda.cuh: what the .cu files share and nothing outside kernels/cuda/ sees: the error checks,
// the KStream behind the opaque handle, bf16 helpers and block-wide reductions.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

extern "C" {
#include "common/common.h"
}
#include "kernels/cuda/cuda_ops.h"

// A failed CUDA call is a broken environment (DESIGN.md §7): log the call and the cause, exit.
#define CUDA_CHECK(call)                                                                         \
    do {                                                                                         \
        cudaError_t e_ = (call);                                                                 \
        if (e_ != cudaSuccess) DIE("CUDA: %s: %s (%s)", #call, cudaGetErrorString(e_), cudaGetErrorName(e_)); \
    } while (0)
// After every launch: a bad configuration is reported here, not at the next sync.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
#define CUBLAS_CHECK(call)                                                                       \
    do {                                                                                         \
        cublasStatus_t s_ = (call);                                                              \
        if (s_ != CUBLAS_STATUS_SUCCESS) DIE("cuBLAS: %s: %s", #call, cublasGetStatusString(s_)); \
    } while (0)

struct KStream {
    cudaStream_t stream;
    cublasHandle_t cublas;
    void *cublas_ws; // cuBLAS workspace, so its calls never allocate
    size_t cublas_ws_bytes;
    __nv_bfloat16 *xbf; // [max_tokens, max_cols] matmul inputs rounded to bf16
    int max_tokens, max_cols;
};

static inline cudaStream_t kstream_of(KStream *s) {
    return s ? s->stream : (cudaStream_t)0;
}

// The cache's dtype as the int C stored (see KCUDA_KV_BF16_ID in cuda_ops.h).
static inline int kv_dtype_id(const KVLayer *c) {
    static_assert(sizeof(KVType) == sizeof(int), "KVType is an int in C");
    int d;
    memcpy(&d, &c->dtype, sizeof d);
    return d;
}

static inline int kcuda_blocks(int64_t n, int per_block) {
    int64_t b = (n + per_block - 1) / per_block;
    return (int)(b < 1 ? 1 : b);
}

// ---- bf16: the cache and weights are raw uint16 bits outside this folder
static __device__ __forceinline__ float bf16_bits_to_f32(uint16_t h) {
    return __uint_as_float((uint32_t)h << 16);
}
// Round to nearest even, like quant.c's f32_to_bf16 (NaN stays NaN).
static __device__ __forceinline__ uint16_t f32_to_bf16_bits(float f) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}
// Two floats as the low and high halves of one bf16x2 word (low = first element in memory).
static __device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    return (uint32_t)f32_to_bf16_bits(lo) | (uint32_t)f32_to_bf16_bits(hi) << 16;
}
// The 8 bf16 of a 16-byte load, widened.
static __device__ __forceinline__ void bf16x8_to_f32(uint4 v, float *f) {
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        f[2 * i] = __uint_as_float(w[i] << 16);
        f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}

// ---- reductions (blockDim.x a multiple of 32, at most 1024)
static __device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// The sum over the block, returned to every thread. `red` holds 32 floats of shared memory; the
// order of the additions is fixed by blockDim, so the result is deterministic.
static __device__ __forceinline__ float block_sum(float v, float *red) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); // red may still be read by a previous call
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < n_warps ? red[lane] : 0.0f;
    return warp_sum(v);
}
