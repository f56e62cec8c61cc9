// matmul.cu: the projections through cuBLAS, twin of kernels/cpu/matmul.c: out = x · Wᵀ.
//
// Weights are bf16 on the device (quant.cu dequantizes them once at load). The activations are
// rounded to bf16 into the stream's staging buffer (fused with the row gather for the LM head on
// the sampled rows), then one GEMM with bf16 inputs, fp32 accumulation and fp32 output. Against
// the twin the error is that of bf16 inputs (relative ~1e-3), and the twin's own 8-bit
// activations on quantized weights.
//
// In cuBLAS's column-major terms W [rows, cols] is a cols x rows matrix A (lda = cols), x [n, cols]
// a cols x n matrix B and out [n, rows] a rows x n matrix C, so the call is C = Aᵀ B.
//
// cuBLAS chooses its kernel by shape, so a row's result can depend on n_tokens (split-K and
// tiling change the summation order): unlike the CPU twin, not batch-invariant bit for bit.
#include "kernels/cuda/kcuda.cuh"

#define CONVERT_THREADS 256

// dst[i, :] = bf16(x[rows ? rows[i] : i, :]), 4 columns a thread when cols % 4 == 0.
template <bool VEC>
__global__ void rows_to_bf16_kernel(__nv_bfloat16 *dst, const float *x, const int *rows, int n, int cols) {
    int i = blockIdx.y;
    if (i >= n) return;
    const float *src = x + (size_t)(rows ? rows[i] : i) * cols;
    uint16_t *d = (uint16_t *)dst + (size_t)i * cols;
    if (VEC) {
        for (int c = (blockIdx.x * blockDim.x + threadIdx.x) * 4; c < cols; c += gridDim.x * blockDim.x * 4) {
            float4 v = *(const float4 *)(src + c);
            *(uint2 *)(d + c) = make_uint2(pack_bf16x2(v.x, v.y), pack_bf16x2(v.z, v.w));
        }
    } else {
        for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += gridDim.x * blockDim.x)
            d[c] = f32_to_bf16_bits(src[c]);
    }
}

static void matmul_launch(float *out, const float *x, const int *rows, int n, const KDevMatrix *w, KStream *s) {
    if (n <= 0) return;
    CHECK(s, "k_matmul_cuda needs a KStream (its cuBLAS handle and staging buffer)");
    int cols = (int)w->cols, m = (int)w->rows;
    CHECK(n <= s->max_tokens && n <= 65535 && cols <= s->max_cols, "%d rows of %d, stream sized for %d of %d", n, cols,
          s->max_tokens, s->max_cols);
    bool vec = cols % 4 == 0 && ((uintptr_t)x & 15) == 0;
    dim3 grid(kcuda_blocks(vec ? cols / 4 : cols, CONVERT_THREADS), n);
    if (grid.x > 8) grid.x = 8; // the stride loop covers the rest; rows supply the parallelism
    if (vec) rows_to_bf16_kernel<true><<<grid, CONVERT_THREADS, 0, s->stream>>>(s->xbf, x, rows, n, cols);
    else rows_to_bf16_kernel<false><<<grid, CONVERT_THREADS, 0, s->stream>>>(s->xbf, x, rows, n, cols);
    CUDA_CHECK_LAUNCH();
    const float alpha = 1.0f, beta = 0.0f;
    CUBLAS_CHECK(cublasGemmEx(s->cublas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, cols, &alpha, w->data, CUDA_R_16BF, cols,
                              s->xbf, CUDA_R_16BF, cols, &beta, out, CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
}

extern "C" void k_matmul_cuda(float *out, const float *x, const KDevMatrix *w, int n_tokens, KStream *s) {
    matmul_launch(out, x, NULL, n_tokens, w, s);
}

extern "C" void k_matmul_rows_cuda(float *out, const float *x, const int *rows, int n_rows, const KDevMatrix *w,
                                   KStream *s) {
    matmul_launch(out, x, rows, n_rows, w, s);
}
