// embed.cu: the embedding gather, twin of kernels/cpu/embed.c. The table is the bf16 matrix
// quant.cu made at load (tied embeddings share it with the LM head); each output row is one
// table row widened to f32, so the result is the twin's rounded to bf16, exactly.
//
// One thread block per token; 16-byte loads (8 bf16) and 32-byte stores when the width allows.
#include "kernels/cuda/kcuda.cuh"

#define EMBED_THREADS 128

template <bool VEC>
__global__ void embed_kernel(float *out, const uint16_t *table, int64_t rows, int cols, const int *ids) {
    int t = blockIdx.x, id = ids[t];
    float *o = out + (size_t)t * cols;
    if (id < 0 || id >= rows) { // the CPU twin aborts; here the row shows as NaN
        for (int c = threadIdx.x; c < cols; c += blockDim.x) o[c] = __int_as_float(0x7fc00000);
        return;
    }
    const uint16_t *row = table + (size_t)id * cols;
    if (VEC) {
        for (int c = threadIdx.x * 8; c < cols; c += blockDim.x * 8) {
            float f[8];
            bf16x8_to_f32(*(const uint4 *)(row + c), f);
            *(float4 *)(o + c) = make_float4(f[0], f[1], f[2], f[3]);
            *(float4 *)(o + c + 4) = make_float4(f[4], f[5], f[6], f[7]);
        }
    } else {
        for (int c = threadIdx.x; c < cols; c += blockDim.x) o[c] = bf16_bits_to_f32(row[c]);
    }
}

extern "C" void k_embed_cuda(float *out, const KDevMatrix *table, const int *ids, int n_tokens, KStream *s) {
    if (n_tokens <= 0) return;
    int cols = (int)table->cols;
    // Rows stay 16-byte aligned when cols is a multiple of 8 (bf16 in, f32 out).
    bool vec = cols % 8 == 0 && ((uintptr_t)table->data & 15) == 0 && ((uintptr_t)out & 15) == 0;
    if (vec) embed_kernel<true><<<n_tokens, EMBED_THREADS, 0, kstream_of(s)>>>(out, table->data, table->rows, cols, ids);
    else embed_kernel<false><<<n_tokens, EMBED_THREADS, 0, kstream_of(s)>>>(out, table->data, table->rows, cols, ids);
    CUDA_CHECK_LAUNCH();
}
