// quant.cu: weights to bf16 on the device, once at load: the twin of quant.c's dequant_row
// followed by f32_to_bf16, bit for bit.
//
// Q4_0, Q4_1 and Q8_0 (the default model's types) and F32/F16/BF16 are read raw from the file's
// blocks and dequantized here, one 32-element block per thread; each element is computed in
// float exactly as quant.c does (the products are exact, see there), then rounded to bf16 to
// nearest even. Any other type dequant_row() reads is dequantized on the host a slab of rows at a
// time, and only the float -> bf16 rounding runs here.
#include <string.h>

#include "kernels/cuda/kcuda.cuh"

extern "C" {
#include "kernels/quant.h"
}

#define QK 32
#define QUANT_THREADS 256
// Host slab for the types dequantized on the host: 64 MiB of floats at a time.
#define QUANT_HOST_SLAB_FLOATS ((size_t)16 << 20)

static __device__ __forceinline__ float fp16_bits_to_f32(const uint8_t *p) {
    return __half2float(__ushort_as_half((unsigned short)(p[0] | p[1] << 8)));
}

// One block of 32 values: v[j] for j < 32, then stored as four 16-byte writes.
static __device__ __forceinline__ void store_block_bf16(uint16_t *dst, const float *v) {
    uint4 *d = (uint4 *)dst;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float *f = v + 8 * i;
        d[i] = make_uint4(pack_bf16x2(f[0], f[1]), pack_bf16x2(f[2], f[3]), pack_bf16x2(f[4], f[5]),
                          pack_bf16x2(f[6], f[7]));
    }
}

// Q4_0 {fp16 d; u8 qs[16]}: (q - 8) * d, low nibbles first. Q4_1 {fp16 d, m; u8 qs[16]}: q * d + m.
// Q8_0 {fp16 d; i8 qs[32]}: q * d. Block b is thread b's; dst is 16-byte aligned (32 bf16 a block).
template <int TYPE>
__global__ void dequant_blocks_kernel(uint16_t *dst, const uint8_t *src, int64_t n_blocks) {
    int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= n_blocks) return;
    float v[QK];
    if (TYPE == QTYPE_Q4_0) {
        const uint8_t *p = src + b * 18;
        float d = fp16_bits_to_f32(p);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            uint8_t q = p[2 + j];
            v[j] = (float)((q & 0x0f) - 8) * d;
            v[j + 16] = (float)((q >> 4) - 8) * d;
        }
    } else if (TYPE == QTYPE_Q4_1) {
        const uint8_t *p = src + b * 20;
        float d = fp16_bits_to_f32(p), m = fp16_bits_to_f32(p + 2);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            uint8_t q = p[4 + j];
            v[j] = (float)(q & 0x0f) * d + m;
            v[j + 16] = (float)(q >> 4) * d + m;
        }
    } else { // Q8_0
        const uint8_t *p = src + b * 34;
        float d = fp16_bits_to_f32(p);
#pragma unroll
        for (int j = 0; j < QK; j++) v[j] = (float)(int8_t)p[2 + j] * d;
    }
    store_block_bf16(dst + b * QK, v);
}

// F32, F16 and BF16 element by element (any n, any alignment the type allows).
template <int TYPE>
__global__ void convert_kernel(uint16_t *dst, const void *src, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        if (TYPE == QTYPE_F32) dst[i] = f32_to_bf16_bits(((const float *)src)[i]);
        else if (TYPE == QTYPE_F16) dst[i] = f32_to_bf16_bits(__half2float(((const __half *)src)[i]));
        else dst[i] = ((const uint16_t *)src)[i]; // BF16: already there
    }
}

extern "C" bool kcuda_dequant_on_device(QType t) {
    return t == QTYPE_Q4_0 || t == QTYPE_Q4_1 || t == QTYPE_Q8_0 || t == QTYPE_F32 || t == QTYPE_F16 ||
           t == QTYPE_BF16;
}

static int convert_grid(int64_t n) {
    int64_t b = (n + QUANT_THREADS - 1) / QUANT_THREADS;
    return (int)(b < 1 ? 1 : (b > 65535 ? 65535 : b));
}

extern "C" void k_dequant_bf16_cuda(uint16_t *dst, const void *src, QType t, int64_t n, KStream *s) {
    CHECK(kcuda_dequant_on_device(t), "no device dequantizer for %s", qtype_name(t));
    if (n <= 0) return;
    cudaStream_t st = kstream_of(s);
    const uint8_t *src8 = (const uint8_t *)src;
    switch (t) {
    case QTYPE_Q4_0:
    case QTYPE_Q4_1:
    case QTYPE_Q8_0: {
        bool whole = n % QK == 0 && ((uintptr_t)dst & 15) == 0;
        CHECK(whole, "%lld %s values at %p", (long long)n, qtype_name(t), (void *)dst);
        int64_t nb = n / QK;
        int grid = kcuda_blocks(nb, QUANT_THREADS);
        if (t == QTYPE_Q4_0) dequant_blocks_kernel<QTYPE_Q4_0><<<grid, QUANT_THREADS, 0, st>>>(dst, src8, nb);
        else if (t == QTYPE_Q4_1) dequant_blocks_kernel<QTYPE_Q4_1><<<grid, QUANT_THREADS, 0, st>>>(dst, src8, nb);
        else dequant_blocks_kernel<QTYPE_Q8_0><<<grid, QUANT_THREADS, 0, st>>>(dst, src8, nb);
        break;
    }
    case QTYPE_F32: convert_kernel<QTYPE_F32><<<convert_grid(n), QUANT_THREADS, 0, st>>>(dst, src, n); break;
    case QTYPE_F16: convert_kernel<QTYPE_F16><<<convert_grid(n), QUANT_THREADS, 0, st>>>(dst, src, n); break;
    default: convert_kernel<QTYPE_BF16><<<convert_grid(n), QUANT_THREADS, 0, st>>>(dst, src, n); break;
    }
    CUDA_CHECK_LAUNCH();
}

extern "C" void kdev_matrix_upload(KDevMatrix *m, const QMatrix *w, KStream *s) {
    CHECK(qtype_dequant_supported(w->type), "no dequantizer for %s", qtype_name(w->type));
    CHECK(w->rows >= 1 && w->cols >= 1, "%lld x %lld", (long long)w->rows, (long long)w->cols);
    m->rows = w->rows;
    m->cols = w->cols;
    int64_t n = w->rows * w->cols;
    m->data = (uint16_t *)kdev_malloc((size_t)n * sizeof(uint16_t));
    size_t row_bytes = qtype_row_size(w->type, w->cols);
    if (kcuda_dequant_on_device(w->type)) {
        size_t bytes = (size_t)w->rows * row_bytes;
        void *raw = kdev_malloc(bytes);
        kdev_memcpy_h2d(raw, w->data, bytes, NULL);
        k_dequant_bf16_cuda(m->data, raw, w->type, n, s);
        kstream_sync(s);
        kdev_free(raw);
        return;
    }
    // The other types: dequant_row on the host, a slab of whole rows at a time.
    int64_t slab_rows = (int64_t)(QUANT_HOST_SLAB_FLOATS / (size_t)w->cols);
    if (slab_rows < 1) slab_rows = 1;
    if (slab_rows > w->rows) slab_rows = w->rows;
    float *host = (float *)xmalloc((size_t)slab_rows * w->cols * sizeof(float));
    float *dev = (float *)kdev_malloc((size_t)slab_rows * w->cols * sizeof(float));
    for (int64_t r0 = 0; r0 < w->rows; r0 += slab_rows) {
        int64_t nr = w->rows - r0 < slab_rows ? w->rows - r0 : slab_rows;
        for (int64_t r = 0; r < nr; r++)
            dequant_row(w->type, (const uint8_t *)w->data + (size_t)(r0 + r) * row_bytes,
                        host + (size_t)r * w->cols, w->cols);
        kdev_memcpy_h2d(dev, host, (size_t)nr * w->cols * sizeof(float), NULL);
        k_dequant_bf16_cuda(m->data + (size_t)r0 * w->cols, dev, QTYPE_F32, nr * w->cols, s);
        kstream_sync(s);
    }
    kdev_free(dev);
    free(host);
}

extern "C" void kdev_matrix_free(KDevMatrix *m) {
    kdev_free(m->data);
    memset(m, 0, sizeof(*m));
}
