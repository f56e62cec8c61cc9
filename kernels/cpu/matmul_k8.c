// matmul_k8.c: out = x · Wᵀ on the K-quants (Q2_K Q3_K Q4_K Q5_K Q6_K, IQ4_XS) with 8-bit activations
// (--cpu-activations int8; with int16 these types take matmul.c's dequantized float path).
//
// Activations are quantized per 256 as ggml's Q8_K: d_x = amax / 127, q_x = round(x / d_x), and
// the sums of q_x over each 16 elements (bsum) kept beside them. Every K-quant super-block is,
// after unpacking, 256 unsigned quants q in 0..63 with an integer scale sc and an integer
// offset mn per 16 elements, and one or two float scales:
//
//   Q4_K Q5_K Q2_K   value = d·sc·q − dmin·mn          (sc, mn: the 6- or 4-bit scale and min)
//   Q6_K             value = d·sc·(q − 32)  → mn = 32·sc, folded into the integer sum
//   Q3_K             value = d·sc·(q − 4)   → mn = 4·sc   (q: the 2 low bits and the high bit)
//   IQ4_XS           value = d·sc·(q − 128) → mn = 128·sc (q: the IQ4 table's value + 128, 1..241;
//                    sc = the 6-bit scale − 32, the same for both 16s of each 32)
//
// so a super-block's exact integer sums are I = Σ_g sc_g Σ_{e∈g} q_e q_x,e and M = Σ_g mn_g bsum_g,
// and its contribution is d d_x (I − M) (Q6_K, Q3_K) or d d_x I − dmin d_x M (the others).
// The int32 sums cannot overflow: |I| <= 256 · 63 · 127 · 128 (IQ4_XS 256 · 241 · 128 · 32),
// |M| <= 16 · 4096 · 2032. IQ4_XS's q would overflow the SIMD paths' vpmaddubsw (2 · 241 · 128
// > 32767): it takes the scalar kernel here and the AMX kernels on its repacked copy
// (matmul_k8_amx.c), else matmul.c's dequantized float path.
//
// Each 4-row group of a thread's weight rows is unpacked once per token chunk into the thread's
// buffer (q as bytes, 32 at a time with AVX2 on the SIMD paths; sc and mn per 16), then every
// token row meets it. Paths follow matmul_q8.c's choice (kcpu_int8_path):
//   avx512-vnni  vpmaddubsw (u8 q x s8 q_x; 2 · 63 · 127 fits int16) then vpdpwssd with the
//                scales, 64 elements a step, tiles of 4 weight rows x 2 token rows
//   avx-vnni     the same 32 elements a step with the VEX vpdpwssd; avx2: vpmaddwd + vpaddd
//   scalar       plain C, the reference order of the integer sums
//   amx          matrices repacked at load take matmul_k8_amx.c's tiles and VNNI kernel (bit
//                for bit the scalar kernel); the others the avx512-vnni kernel
// The float epilogue (per super-block, lanes converted, times d d_x, accumulated; one lane
// reduction at the end) is fixed per path and independent of the tile a row sits in, so results
// are batch-invariant and thread-count-invariant; across paths they agree up to float order.
//
// Accuracy: the activation error per element is at most amax(256 block) / 254, so
//   |out − exact| <= Σ_blocks Σ|w| · amax / 254 + float rounding
// (tests/unit/test_matmul_q8.c checks that bound).
#include "kernels/cpu/k8.h"

void kcpu_matmul_k8(const KCpu *kc, float *out, const float *x, const QMatrix *w, int n_tokens);

#define K8_ROWS 4 // weight rows unpacked together

// One row unpacked: q[cols]; per 16 elements (group g) scp[g] = sc | sc << 16 (the scale in both
// int16 halves, as the kernels' vpdpwssd pairs want it) and mn[g]; per super-block d and dm.
// The rows of a group lie one after the other in the thread's buffer.
typedef struct {
    uint8_t *q;
    int32_t *scp;
    int16_t *mn;
    float *d, *dm;
} K8Row;

static size_t k8_row_bytes(int cols) {
    int nb = cols / QK_K;
    return (size_t)cols + (size_t)cols / 4 + (size_t)cols / 8 + (size_t)nb * 8;
}

static K8Row k8_row(float *buf, int cols, int r) {
    uint8_t *p = (uint8_t *)buf + k8_row_bytes(cols) * (size_t)r;
    int nb = cols / QK_K;
    K8Row u = {.d = (float *)p, .dm = (float *)p + nb};
    p += (size_t)nb * 8;
    u.scp = (int32_t *)p, u.mn = (int16_t *)(p + cols / 4), u.q = p + cols / 4 + cols / 8;
    return u;
}

static inline float k8_h(const uint8_t *p) {
    return kcpu_h2f(kcpu_load_u16(p));
}

// The scales of super-block b: the 16 group scales sc and offsets mn, d and dm.
static void k8_scales(QType t, const uint8_t *b, int *sc, int *mn, float *d, float *dm) {
    switch (t) {
    case QTYPE_Q4_K:
    case QTYPE_Q5_K:
        *d = k8_h(b), *dm = k8_h(b + 2);
        for (int k = 0; k < 8; k++) {
            int s, m;
            kcpu_k_scale_min(k, b + 4, &s, &m);
            sc[2 * k] = sc[2 * k + 1] = s, mn[2 * k] = mn[2 * k + 1] = m;
        }
        return;
    case QTYPE_Q6_K:
        *d = *dm = k8_h(b + 208);
        for (int g = 0; g < 16; g++) sc[g] = ((const int8_t *)(b + 192))[g], mn[g] = 32 * sc[g];
        return;
    case QTYPE_Q3_K:
        *d = *dm = k8_h(b + 108);
        kcpu_q3k_scales(b + 96, sc);
        for (int g = 0; g < 16; g++) mn[g] = 4 * sc[g];
        return;
    case QTYPE_Q2_K:
        *d = k8_h(b + 80), *dm = k8_h(b + 82);
        for (int g = 0; g < 16; g++) sc[g] = b[g] & 0x0f, mn[g] = b[g] >> 4;
        return;
    case QTYPE_IQ4_XS: // 6-bit ls per 32: a nibble of scales_l, 2 bits of scales_h; sc = ls - 32
        *d = *dm = k8_h(b);
        for (int g = 0; g < 16; g++) {
            const int ib = g / 2;
            const int ls = ((b[4 + ib / 2] >> 4 * (ib % 2)) & 0x0f) | ((b[2 + ib / 4] >> 2 * (ib % 4)) & 3) << 4;
            sc[g] = ls - 32, mn[g] = 128 * sc[g];
        }
        return;
    default: DIE("no int8 K-quant kernel for %s", qtype_name(t));
    }
}

// The 256 quants of super-block b, 0..63, in element order (the scalar path's unpacking; the
// SIMD paths' k8_quants_256 computes the same bytes).
//   Q4_K Q5_K  64-element group j: low nibbles of ql[32j..] then high ones; Q5_K's fifth bits
//              are bits 2j and 2j + 1 of qh[l]
//   Q6_K       each 128: low 4 bits from ql (64 bytes: low nibbles, then high), 2 high bits
//              from qh (32 bytes, bits 2k..2k+1 for the k-th 32 elements)
//   Q2_K Q3_K  element 128n + 32j + l: bits 2j of qs[32n + l]; Q3_K's third bit: bit j + 4n of
//              hm[l]
//   IQ4_XS     element 32j + l: table[low nibble of qs[16j + l]] + 128, 32j + 16 + l the high one
//              (1..241: only the scalar and AMX kernels take it, see the top)
static void k8_quants_scalar(QType t, const uint8_t *b, uint8_t *q) {
    if (t == QTYPE_Q4_K || t == QTYPE_Q5_K) {
        const uint8_t *qh = b + 16, *ql = b + (t == QTYPE_Q5_K ? 48 : 16);
        for (int j = 0; j < 4; j++, ql += 32)
            for (int l = 0; l < 32; l++) {
                int h0 = t == QTYPE_Q5_K ? ((qh[l] >> (2 * j)) & 1) << 4 : 0;
                int h1 = t == QTYPE_Q5_K ? ((qh[l] >> (2 * j + 1)) & 1) << 4 : 0;
                q[64 * j + l] = (uint8_t)((ql[l] & 0x0f) | h0);
                q[64 * j + 32 + l] = (uint8_t)((ql[l] >> 4) | h1);
            }
    } else if (t == QTYPE_Q6_K) {
        const uint8_t *ql = b, *qh = b + 128;
        for (int n = 0; n < QK_K; n += 128, ql += 64, qh += 32)
            for (int l = 0; l < 32; l++) {
                q[n + l] = (uint8_t)((ql[l] & 0x0f) | (qh[l] & 3) << 4);
                q[n + l + 32] = (uint8_t)((ql[l + 32] & 0x0f) | ((qh[l] >> 2) & 3) << 4);
                q[n + l + 64] = (uint8_t)((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4);
                q[n + l + 96] = (uint8_t)((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4);
            }
    } else if (t == QTYPE_IQ4_XS) {
        for (int ib = 0; ib < 8; ib++)
            for (int l = 0; l < 16; l++) {
                q[32 * ib + l] = (uint8_t)(KCPU_IQ4_VALUES[b[8 + 16 * ib + l] & 0x0f] + 128);
                q[32 * ib + 16 + l] = (uint8_t)(KCPU_IQ4_VALUES[b[8 + 16 * ib + l] >> 4] + 128);
            }
    } else {
        const bool q3 = t == QTYPE_Q3_K;
        const uint8_t *hm = b, *qs = b + (q3 ? 32 : 16);
        for (int n = 0; n < 2; n++)
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < 32; l++) {
                    int v = (qs[32 * n + l] >> (2 * j)) & 3;
                    if (q3) v |= ((hm[l] >> (j + 4 * n)) & 1) << 2;
                    q[128 * n + 32 * j + l] = (uint8_t)v;
                }
    }
}

void kcpu_k8_block(QType t, const uint8_t *b, uint8_t q[256], int sc[16], int mn[16]) {
    float d, dm;
    k8_scales(t, b, sc, mn, &d, &dm);
    k8_quants_scalar(t, b, q);
}

#if defined(__x86_64__) && !defined(__clang__)
#define K8_SIMD 1
#include <immintrin.h>
#pragma GCC push_options
#pragma GCC target("avx2")

// Bytes of v whose bit `bit` is set, as `val` (else 0).
static inline __m256i k8_bit(__m256i v, int bit, int val) {
    __m256i m = _mm256_set1_epi8((char)(1 << bit));
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(v, m), m), _mm256_set1_epi8((char)val));
}

// k8_quants_scalar's bytes, 32 at a time.
static void k8_quants_256(QType t, const uint8_t *b, uint8_t *q) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(3);
#define LD(p) _mm256_loadu_si256((const __m256i *)(p))
#define ST(p, v) _mm256_storeu_si256((__m256i *)(p), v)
    if (t == QTYPE_Q4_K || t == QTYPE_Q5_K) {
        const bool q5 = t == QTYPE_Q5_K;
        const __m256i qh = q5 ? LD(b + 16) : _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
            __m256i v = LD(b + (q5 ? 48 : 16) + 32 * j);
            __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            if (q5) lo = _mm256_or_si256(lo, k8_bit(qh, 2 * j, 16)), hi = _mm256_or_si256(hi, k8_bit(qh, 2 * j + 1, 16));
            ST(q + 64 * j, lo), ST(q + 64 * j + 32, hi);
        }
    } else if (t == QTYPE_Q6_K) {
        for (int n = 0; n < 2; n++) {
            __m256i a = LD(b + 64 * n), c = LD(b + 64 * n + 32), h = LD(b + 128 + 32 * n);
            __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(h, m2), 4); // bits stay in their byte
            __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m2), 4);
            __m256i h2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m2), 4);
            __m256i h3 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m2), 4);
            ST(q + 128 * n, _mm256_or_si256(_mm256_and_si256(a, m4), h0));
            ST(q + 128 * n + 32, _mm256_or_si256(_mm256_and_si256(c, m4), h1));
            ST(q + 128 * n + 64, _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), m4), h2));
            ST(q + 128 * n + 96, _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(c, 4), m4), h3));
        }
    } else if (t == QTYPE_IQ4_XS) {
        for (int ib = 0; ib < 8; ib++)
            for (int l = 0; l < 16; l++) {
                q[32 * ib + l] = (uint8_t)(KCPU_IQ4_VALUES[b[8 + 16 * ib + l] & 0x0f] + 128);
                q[32 * ib + 16 + l] = (uint8_t)(KCPU_IQ4_VALUES[b[8 + 16 * ib + l] >> 4] + 128);
            }
    } else {
        const bool q3 = t == QTYPE_Q3_K;
        const __m256i hm = LD(b);
        for (int n = 0; n < 2; n++) {
            __m256i v = LD(b + (q3 ? 32 : 16) + 32 * n);
            for (int j = 0; j < 4; j++) {
                __m256i x = _mm256_and_si256(_mm256_srli_epi16(v, 2 * j), m2);
                if (q3) x = _mm256_or_si256(x, k8_bit(hm, j + 4 * n, 4));
                ST(q + 128 * n + 32 * j, x);
            }
        }
    }
#undef LD
#undef ST
}

#pragma GCC pop_options
#else
#define K8_SIMD 0
#endif

static void k8_unpack_row(const K8Job *j, const uint8_t *row, K8Row u) {
    const size_t bb = qtype_block_bytes(j->type);
    for (int b = 0; b < j->nb; b++) {
        const uint8_t *blk = row + (size_t)b * bb;
        int sc[16], mn[16];
        k8_scales(j->type, blk, sc, mn, &u.d[b], &u.dm[b]);
        for (int g = 0; g < 16; g++)
            u.scp[16 * b + g] = (int32_t)((uint32_t)(uint16_t)sc[g] | (uint32_t)sc[g] << 16), u.mn[16 * b + g] = (int16_t)mn[g];
#if K8_SIMD
        if (j->path != KCPU_I8_SCALAR) {
            k8_quants_256(j->type, blk, u.q + (size_t)b * QK_K);
            continue;
        }
#endif
        k8_quants_scalar(j->type, blk, u.q + (size_t)b * QK_K);
    }
}

// Activation row t, the same on every path (one scalar loop, round to nearest even).
static void k8_quant_row(const void *job, const float *x, int t) {
    const K8Job *j = job;
    const float *xr = x + (size_t)t * j->cols;
    int8_t *xq = (int8_t *)j->xq + (size_t)t * j->cols;
    float *xd = (float *)j->xd + (size_t)t * j->nb;
    int16_t *bs = (int16_t *)j->xbs + (size_t)t * j->nb * 16;
    for (int b = 0; b < j->nb; b++) {
        const float *v = xr + (size_t)b * QK_K;
        float amax = 0.0f;
        for (int e = 0; e < QK_K; e++) amax = kcpu_maxf(amax, fabsf(v[e]));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        xd[b] = d;
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int e = 16 * g; e < 16 * g + 16; e++) {
                int8_t q = (int8_t)nearbyintf(v[e] * id); // |v · id| <= 127 · (1 + 2^-22)
                xq[(size_t)b * QK_K + e] = q, s += q;
            }
            bs[16 * b + g] = (int16_t)s;
        }
    }
}

// ---- scalar

static void k8_dot_scalar(const K8Job *j, K8Row u, int t, int r) {
    const int8_t *xq = j->xq + (size_t)t * j->cols;
    const int16_t *bs = j->xbs + (size_t)t * j->nb * 16;
    float sum = 0.0f;
    for (int b = 0; b < j->nb; b++) {
        int32_t isum = 0, msum = 0;
        for (int g = 0; g < 16; g++) {
            const size_t e0 = (size_t)b * QK_K + 16 * (size_t)g;
            int32_t s = 0;
            for (int e = 0; e < 16; e++) s += u.q[e0 + e] * xq[e0 + e];
            isum += (int16_t)u.scp[16 * b + g] * s;
            msum += u.mn[(size_t)b * 16 + g] * bs[16 * b + g];
        }
        float dx = j->xd[(size_t)t * j->nb + b];
        if (j->sym) {
            sum = fmaf(u.d[b] * dx, (float)(isum - msum), sum);
        } else {
            sum = fmaf(u.d[b] * dx, (float)isum, sum);
            sum = fmaf(-u.dm[b] * dx, (float)msum, sum);
        }
    }
    j->out[(size_t)t * j->ldo + r] = sum;
}

static void k8_tiles_scalar(const K8Job *j, float *buf, int r0, int R, int t_lo, int t_hi) {
    for (int t = t_lo; t < t_hi; t++)
        for (int r = 0; r < R; r++) k8_dot_scalar(j, k8_row(buf, j->cols, r), t, r0 + r);
}

#if K8_SIMD

// ---- AVX-512 VNNI: 64 elements a step, R weight rows x T token rows

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")

// Rows rb..rb+R of the unpacked group (weight rows r0..) with token rows t0..t0+T.
static inline __attribute__((always_inline)) void k8_tile_512(const bool sym, const int R, const int T,
                                                              const K8Job *j, float *buf, int rb, int r0, int t0) {
    K8Row u[K8_ROWS];
    for (int r = 0; r < R; r++) u[r] = k8_row(buf, j->cols, rb + r);
    __m512 acc[K8_ROWS][2];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int t = 0; t < T; t++) acc[r][t] = _mm512_setzero_ps();
    // lanes 4k..4k+3 from element k: the scale of group k of the 4 in a 64-element step
    const __m512i spread4 = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    for (int b = 0; b < j->nb; b++) {
        __m512i is[K8_ROWS][2];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++)
#pragma GCC unroll 2
            for (int t = 0; t < T; t++) is[r][t] = _mm512_setzero_si512();
        for (int c = 0; c < 4; c++) {
            const size_t e0 = (size_t)b * QK_K + 64 * (size_t)c;
            __m512i wq[K8_ROWS], ws[K8_ROWS];
#pragma GCC unroll 4
            for (int r = 0; r < R; r++)
                wq[r] = _mm512_loadu_si512(u[r].q + e0),
                ws[r] = _mm512_permutexvar_epi32(spread4, _mm512_castsi128_si512(_mm_loadu_si128(
                                                              (const __m128i *)(u[r].scp + 16 * b + 4 * c))));
#pragma GCC unroll 2
            for (int t = 0; t < T; t++) {
                __m512i xv = _mm512_loadu_si512(j->xq + (size_t)(t0 + t) * j->cols + e0);
#pragma GCC unroll 4
                for (int r = 0; r < R; r++)
                    is[r][t] = _mm512_dpwssd_epi32(is[r][t], _mm512_maddubs_epi16(wq[r], xv), ws[r]);
            }
        }
#pragma GCC unroll 2
        for (int t = 0; t < T; t++) {
            const size_t xb = (size_t)(t0 + t) * j->nb + b;
            __m256i bs = _mm256_loadu_si256((const __m256i *)(j->xbs + xb * 16));
            float dx = j->xd[xb];
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                __m256i mv = _mm256_loadu_si256((const __m256i *)(u[r].mn + (size_t)b * 16));
                __m512i m = _mm512_zextsi256_si512(_mm256_madd_epi16(mv, bs));
                if (sym) {
                    __m512i s = _mm512_sub_epi32(is[r][t], m);
                    acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(u[r].d[b] * dx), acc[r][t]);
                } else {
                    acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[r][t]), _mm512_set1_ps(u[r].d[b] * dx), acc[r][t]);
                    acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(m), _mm512_set1_ps(-u[r].dm[b] * dx), acc[r][t]);
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int t = 0; t < T; t++) j->out[(size_t)(t0 + t) * j->ldo + r0 + r] = kcpu_hsum512(acc[r][t]);
}

static inline __attribute__((always_inline)) void k8_tiles_512_sym(const bool sym, const K8Job *j, float *buf,
                                                                   int r0, int R, int t_lo, int t_hi) {
    int t = t_lo;
    if (R == K8_ROWS) {
        for (; t + 2 <= t_hi; t += 2) k8_tile_512(sym, K8_ROWS, 2, j, buf, 0, r0, t);
        if (t < t_hi) k8_tile_512(sym, K8_ROWS, 1, j, buf, 0, r0, t);
        return;
    }
    for (; t < t_hi; t++)
        for (int r = 0; r < R; r++) k8_tile_512(sym, 1, 1, j, buf, r, r0 + r, t);
}

static void k8_tiles_512(const K8Job *j, float *buf, int r0, int R, int t_lo, int t_hi) {
    if (j->sym) k8_tiles_512_sym(true, j, buf, r0, R, t_lo, t_hi);
    else k8_tiles_512_sym(false, j, buf, r0, R, t_lo, t_hi);
}

#pragma GCC pop_options

// ---- AVX2 / AVX-VNNI: 32 elements a step, one row x one token per tile

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avxvnni")

static inline __attribute__((always_inline)) void k8_dot_256(const int vnni, const bool sym, const K8Job *j,
                                                             K8Row u, int t, int r) {
    __m256 acc = _mm256_setzero_ps();
    const int8_t *xq = j->xq + (size_t)t * j->cols;
    for (int b = 0; b < j->nb; b++) {
        __m256i is = _mm256_setzero_si256();
        for (int c = 0; c < 8; c++) {
            const size_t e0 = (size_t)b * QK_K + 32 * (size_t)c;
            __m256i p = _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(u.q + e0)),
                                             _mm256_loadu_si256((const __m256i *)(xq + e0)));
            __m256i s = _mm256_permutevar8x32_epi32(
                _mm256_castsi128_si256(_mm_loadl_epi64((const __m128i *)(u.scp + 16 * b + 2 * c))),
                _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
            is = vnni ? _mm256_dpwssd_avx_epi32(is, p, s) : _mm256_add_epi32(is, _mm256_madd_epi16(p, s));
        }
        const size_t xb = (size_t)t * j->nb + b;
        __m256i m = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(u.mn + (size_t)b * 16)),
                                      _mm256_loadu_si256((const __m256i *)(j->xbs + xb * 16)));
        float dx = j->xd[xb];
        if (sym) {
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(is, m)), _mm256_set1_ps(u.d[b] * dx), acc);
        } else {
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_set1_ps(u.d[b] * dx), acc);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(m), _mm256_set1_ps(-u.dm[b] * dx), acc);
        }
    }
    j->out[(size_t)t * j->ldo + r] = kcpu_hsum256(acc);
}

#define K8_TILES_256(name, vnni)                                                                   \
    static void name(const K8Job *j, float *buf, int r0, int R, int t_lo, int t_hi) {              \
        for (int t = t_lo; t < t_hi; t++)                                                          \
            for (int r = 0; r < R; r++) {                                                          \
                if (j->sym) k8_dot_256(vnni, true, j, k8_row(buf, j->cols, r), t, r0 + r);         \
                else k8_dot_256(vnni, false, j, k8_row(buf, j->cols, r), t, r0 + r);               \
            }                                                                                      \
    }
K8_TILES_256(k8_tiles_avxvnni, 1)
K8_TILES_256(k8_tiles_avx2, 0)

#pragma GCC pop_options
#endif

// ---- the matmul

#define K8_TOKEN_CHUNK 48

static void k8_run(const void *job, int r_lo, int r_hi, int t_lo, int t_hi, float *buf) {
    const K8Job *j = job;
    CHECK(j->type != QTYPE_IQ4_XS || j->path == KCPU_I8_SCALAR, "IQ4_XS on the %d path's K kernels", j->path);
    void (*tiles)(const K8Job *, float *, int, int, int, int) = k8_tiles_scalar;
#if K8_SIMD
    tiles = j->path == KCPU_I8_AVX512    ? k8_tiles_512
            : j->path == KCPU_I8_AVXVNNI ? k8_tiles_avxvnni
            : j->path == KCPU_I8_AVX2    ? k8_tiles_avx2
                                         : tiles;
#endif
    for (int r0 = r_lo; r0 < r_hi; r0 += K8_ROWS) {
        int R = MIN(K8_ROWS, r_hi - r0);
        for (int r = 0; r < R; r++)
            k8_unpack_row(j, j->w + (size_t)(r0 + r) * j->row_bytes, k8_row(buf, j->cols, r));
        tiles(j, buf, r0, R, t_lo, t_hi);
    }
}

static void k8_run_amx(const void *job, int r_lo, int r_hi, int t_lo, int t_hi, float *buf) {
    kcpu_k8_amx_run(job, r_lo, r_hi, t_lo, t_hi, buf);
}

void kcpu_matmul_k8(const KCpu *kc, float *out, const float *x, const QMatrix *w, int n_tokens) {
    bool whole_blocks = w->cols % QK_K == 0;
    CHECK(whole_blocks, "%s matrix with %lld columns", qtype_name(w->type), (long long)w->cols);
    kcpu_check_fits(kc, n_tokens, (int)w->cols);
    CHECK(k8_row_bytes((int)w->cols) * K8_ROWS <= kc->thread_buf_floats * sizeof(float));
    K8Job j = {
        .type = w->type,
        .sym = w->type == QTYPE_Q3_K || w->type == QTYPE_Q6_K || w->type == QTYPE_IQ4_XS,
        .w = w->data,
        .row_bytes = qtype_row_size(w->type, w->cols),
        .nb = (int)(w->cols / QK_K),
        .cols = (int)w->cols,
        .xq = kc->xq8,
        .xd = kc->xd8,
        .xbs = kc->xbs,
        .out = out,
        .ldo = (int)w->rows,
        .path = kcpu_int8_path(),
    };
    KcpuQDrive d = {&j, k8_quant_row, k8_run, j.w, j.row_bytes, (int)w->rows, K8_TOKEN_CHUNK, 12288, 0};
    if (w->pack && !strcmp(k_int8_path(), "amx")) { // repacked (k_pack): the AMX kernels, by groups of 16 rows
        j.pack = w->pack, j.rows = (int)w->rows;
        d.run = k8_run_amx, d.w = j.pack, d.row_bytes = (size_t)j.nb * kcpu_k8_amx_record_bytes(j.type) / 16;
        d.row_tile = 16;
    }
    kcpu_q_drive(kc, &d, x, n_tokens);
}
