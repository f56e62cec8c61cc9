// cpu.h: what the CPU ops share and nothing outside kernels/cpu/ sees: the scratch k_init()
// allocates, the thread split, and the small SIMD helpers (horizontal sums, a vector exp) that
// several ops use.
//
// SIMD paths are chosen at compile time (-march=native): KCPU_AVX512 needs AVX-512 F/BW/VL and
// VNNI, KCPU_AVX2 needs AVX2 + FMA + F16C (with AVX-VNNI when present); anything else compiles
// the portable scalar code. The 8-bit activation matmuls (matmul_q8.c) are the exception: they
// pick their instruction set at run time from the CPU's features. Every path computes each
// output element in an order that depends only on that element's inputs (never on the batch or
// the thread split), so results are batch-invariant and deterministic; across paths they agree
// up to float summation order.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "common/common.h"
#include "kernels/kernels.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)
#define KCPU_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define KCPU_AVX2 1
#endif
#if defined(KCPU_AVX512) || defined(KCPU_AVX2)
#include <immintrin.h>
#endif

#define KCPU_QK 32 // elements per quantization block (Q4_0, Q4_1, Q8_0 and the activation format)

// ---- scratch, sized by k_init: one context per calling thread
// Each thread that calls the ops (the engine thread, every tensor-parallel rank thread) calls
// k_init for itself and gets its own KCpu, so ranks running ops at the same time never share
// scratch. An op takes its caller's context with kcpu_ctx() BEFORE opening an OpenMP region and
// hands the pointer to the region: the team's workers are other threads, whose own context is
// empty.
typedef struct {
    int n_threads, max_tokens, max_cols;
    int max_pairs;      // ceil(max_cols / 32 / 2): activation rows are stored in pairs of blocks
    int16_t *xq;        // [max_tokens, max_pairs * 64] activation rows quantized to 16 bits
    float *xd;          // [max_tokens, max_pairs * 2] their block scales
    float *xs;          // [max_tokens, max_pairs * 4] per pair 0 s0 0 s1, s = d * sum(q) (matmul_q.c)
    // matmul_q8.c: the rows quantized to 8 bits, blocks padded to a multiple of 4 (max_quads * 4)
    int max_quads;
    int8_t *xq8;        // [max_tokens, max_quads * 128]
    float *xd8, *xs8;   // [max_tokens, max_quads * 4] block scales, and d * sum(q)
    int32_t *xc;        // [max_tokens, max_quads * 4] the integer offset terms
    int16_t *xbs;       // [max_tokens, max_quads * 8] matmul_k8.c: Σq_x per 16 elements
    float *thread_buf;  // [n_threads, thread_buf_floats] private to each thread of the team
    size_t thread_buf_floats;
} KCpu;

// The calling thread's context; aborts unless k_init ran on this thread.
KCpu *kcpu_ctx(void);
// Aborts unless kc was sized for n_tokens rows of cols features.
void kcpu_check_fits(const KCpu *kc, int n_tokens, int cols);
static inline float *kcpu_thread_buf(const KCpu *kc, int tid) {
    return kc->thread_buf + (size_t)tid * kc->thread_buf_floats;
}
// The contiguous share [*lo, *hi) of n items that thread tid of nth takes (static schedule).
static inline void kcpu_split(int n, int tid, int nth, int *lo, int *hi) {
    int per = n / nth, extra = n % nth;
    *lo = tid * per + MIN(tid, extra);
    *hi = *lo + per + (tid < extra);
}

// ---- fp16 (hardware conversion where there is one)
static inline float kcpu_h2f(uint16_t h) {
#if defined(KCPU_AVX512) || defined(KCPU_AVX2)
    return _cvtsh_ss(h);
#else
    return fp16_to_f32(h);
#endif
}
static inline uint16_t kcpu_f2h(float f) {
#if defined(KCPU_AVX512) || defined(KCPU_AVX2)
    return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
#else
    return f32_to_fp16(f);
#endif
}
static inline uint16_t kcpu_load_u16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

// fmaxf/fminf are library calls (NaN rules); these compile to one instruction.
static inline float kcpu_maxf(float a, float b) {
    return a > b ? a : b;
}
static inline float kcpu_minf(float a, float b) {
    return a < b ? a : b;
}

// ---- exp: a Cephes-style polynomial, the same on every path (the SIMD versions evaluate the
// identical formula lane by lane), max relative error ~2 ulp over the range softmax and SiLU use.
#define KCPU_EXP_HI 88.0f
#define KCPU_EXP_LO (-87.3365447504019f)
static inline float kcpu_expf(float x) {
    x = kcpu_minf(kcpu_maxf(x, KCPU_EXP_LO), KCPU_EXP_HI);
    float n = nearbyintf(x * 1.44269504088896341f);
    float r = fmaf(n, -0.693359375f, x);
    r = fmaf(n, 2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p, r * r, r);
    p += 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &e, 4);
    return p * scale;
}

#if defined(KCPU_AVX512)
static inline __m512 kcpu_exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(KCPU_EXP_LO)), _mm512_set1_ps(KCPU_EXP_HI));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693359375f), x);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
    p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}
#endif

#if defined(KCPU_AVX2)
static inline __m256 kcpu_exp256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(KCPU_EXP_LO)), _mm256_set1_ps(KCPU_EXP_HI));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693359375f), x);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
    p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
#endif

#if defined(__x86_64__)
// ---- lane sums, compiled for their own instruction sets so that both the -march paths above
// and the run-time selected kernels of matmul_q8.c (target pragmas) can inline them.
// (clang does not know the pragmas, so they are left out there: it gets each sum only where its
// -march has the set.)
#include <immintrin.h>
#if !defined(__clang__)
#define KCPU_TARGET_PUSH(t) _Pragma("GCC push_options") _Pragma(t)
#define KCPU_TARGET_POP _Pragma("GCC pop_options")
#else
#define KCPU_TARGET_PUSH(t)
#define KCPU_TARGET_POP
#endif
#if !defined(__clang__) || defined(__AVX2__)
KCPU_TARGET_PUSH("GCC target(\"avx2\")")
static inline float kcpu_hsum256(__m256 a) {
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    b = _mm_add_ps(b, _mm_movehl_ps(b, b));
    b = _mm_add_ss(b, _mm_movehdup_ps(b));
    return _mm_cvtss_f32(b);
}
KCPU_TARGET_POP
#endif
#if !defined(__clang__) || (defined(__AVX512F__) && defined(__AVX512DQ__))
KCPU_TARGET_PUSH("GCC target(\"avx512f,avx512dq\")")
// Lane sum in a fixed order (halves folded: 16 -> 8 -> 4 -> 2 -> 1).
static inline float kcpu_hsum512(__m512 v) {
    __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    b = _mm_add_ps(b, _mm_movehl_ps(b, b));
    b = _mm_add_ss(b, _mm_movehdup_ps(b));
    return _mm_cvtss_f32(b);
}
// Sixteen kcpu_hsum512 at once, each lane sum formed by exactly the same additions (16 -> 8 ->
// 4 -> 2 -> 1 by halves), so mixing this with single sums stays bitwise consistent. Lane
// 4i + j of the result is the sum of v[4j + i].
static inline __m512 kcpu_hsum512x16(const __m512 v[16]) {
    __m512 a[8], b[4], c[2];
    for (int i = 0; i < 8; i++) // v[i] + v[i+8] of each vector, two vectors per register
        a[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                             _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xee));
    for (int i = 0; i < 4; i++) // + 4 apart: 128-bit lane L of b[i] now belongs to v[4i + L]
        b[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xdd));
    for (int i = 0; i < 2; i++) { // + 2 apart
        __m512d x = _mm512_castps_pd(b[2 * i]), y = _mm512_castps_pd(b[2 * i + 1]);
        c[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
    return _mm512_add_ps(_mm512_shuffle_ps(c[0], c[1], 0x88), _mm512_shuffle_ps(c[0], c[1], 0xdd)); // + 1 apart
}
KCPU_TARGET_POP
#endif
#endif

// ---- the driver both integer matmuls (matmul_q.c, matmul_q8.c) share (matmul.c)
// quant_row quantizes activation row t into the job's scratch: on the caller's thread for one
// or two rows, else split over the team, before a barrier. Then each thread takes a contiguous
// range of 4-row weight tiles, the same for every chunk of token_chunk token rows, and calls
// run on it chunk by chunk with its own thread buffer; its first prefetch_head bytes of weight
// rows are prefetched first (the tiles prefetch ahead of themselves from there).
typedef struct {
    const void *job;
    void (*quant_row)(const void *job, const float *x, int t);
    void (*run)(const void *job, int r_lo, int r_hi, int t_lo, int t_hi, float *buf);
    const uint8_t *w;
    size_t row_bytes;
    int rows, token_chunk;
    size_t prefetch_head;
    int row_tile; // weight rows per thread share are a multiple of this (0: 4)
} KcpuQDrive;
void kcpu_q_drive(const KCpu *kc, const KcpuQDrive *d, const float *x, int n_tokens);

// The 8-bit matmuls' instruction-set path (matmul_q8.c picks it; matmul_k8.c follows it).
// KCPU_I8_AMX: the AMX tiles for each 16 token rows of a matrix repacked at load (k_pack), the
// VNNI kernel on the repacked layout for the rest; an unpacked matrix takes the KCPU_I8_AVX512
// kernels.
typedef enum { KCPU_I8_SCALAR = 0, KCPU_I8_AVX2, KCPU_I8_AVXVNNI, KCPU_I8_AVX512, KCPU_I8_AMX, KCPU_I8_NPATHS } KcpuI8Path;
// The path matmul_q8.c runs, except KCPU_I8_AMX (AMX implies AVX-512 VNNI): KCPU_I8_AVX512 then,
// the kernels matmul_k8.c runs for K-quant matrices without a repacked copy (matmul_k8_amx.c
// takes those with one).
int kcpu_int8_path(void);
// matmul_amx.c, for its tiles and matmul_k8_amx.c's (x86-64 gcc builds, where AMX is granted):
// loads the calling thread's tile configuration, tmm0 / tmm3 C (16 x 16 int32), tmm1 / tmm4 A
// (16 rows x k bytes), tmm2 / tmm5 B (k / 4 rows x 64 bytes).
void kcpu_amx_config(int k);

// IQ4_NL / IQ4_XS: the 16 values a 4-bit index stands for.
static const int8_t KCPU_IQ4_VALUES[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// Q3_K: its 16 six-bit scales, less 32, from the 12 packed bytes s (low nibbles in bytes 0-7,
// 2-bit tops in bytes 8-11; quant.c's layout note).
static inline void kcpu_q3k_scales(const uint8_t *s, int sc[16]) {
    for (int g = 0; g < 16; g++) {
        int lo = g < 8 ? s[g] & 0x0f : s[g - 8] >> 4;
        sc[g] = (lo | ((s[8 + g % 4] >> (2 * (g / 4))) & 3) << 4) - 32;
    }
}

// Q4_K / Q5_K: scale and min j (0..7) of the 12 packed bytes s (quant.c's layout note).
static inline void kcpu_k_scale_min(int j, const uint8_t *s, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0f) | (s[j - 4] >> 6) << 4;
        *m = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

// Sum of squares / dot product of n floats in a fixed order for the compiled path.
float kcpu_dot_f32(const float *a, const float *b, int n);
