// matmul_k8.c: out = x · Wᵀ on the K-quants (Q2_K Q3_K Q4_K Q5_K Q6_K) with 8-bit activations
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
//
// so a super-block's exact integer sums are I = Σ_g sc_g Σ_{e∈g} q_e q_x,e and M = Σ_g mn_g bsum_g,
// and its contribution is d d_x (I − M) (Q6_K, Q3_K) or d d_x I − dmin d_x M (the others).
// The int32 sums cannot overflow: |I| <= 256 · 63 · 127 · 128, |M| <= 16 · 4096 · 2032.
//
// Each 4-row group of a thread's weight rows is unpacked once per token chunk into the thread's
// buffer (q as bytes, sc as int16 repeated per pair of elements, mn as int16), then every token
// row meets it. Paths follow matmul_q8.c's choice (kcpu_int8_path):
//   avx512-vnni  vpmaddubsw (u8 q x s8 q_x; 2 · 63 · 127 fits int16) then vpdpwssd with the
//                scales, 64 elements a step, tiles of 4 weight rows x 2 token rows
//   avx-vnni     the same 32 elements a step with the VEX vpdpwssd; avx2: vpmaddwd + vpaddd
//   scalar       plain C, the reference order of the integer sums
// The float epilogue (per super-block, lanes converted, times d d_x, accumulated; one lane
// reduction at the end) is fixed per path and independent of the tile a row sits in, so results
// are batch-invariant and thread-count-invariant; across paths they agree up to float order.
//
// Accuracy: the activation error per element is at most amax(256 block) / 254, so
//   |out − exact| <= Σ_blocks Σ|w| · amax / 254 + float rounding
// (tests/unit/test_matmul_q8.c checks that bound).
#include "kernels/cpu/cpu.h"

void kcpu_matmul_k8(const KCpu *kc, float *out, const float *x, const QMatrix *w, int n_tokens);

#define K8_ROWS 4 // weight rows unpacked together

typedef struct {
    QType type;
    bool sym;             // the offset is an integer multiple of the scale (Q3_K, Q6_K)
    const uint8_t *w;
    size_t row_bytes;
    int nb, cols;         // super-blocks per row, cols = 256 nb
    const int8_t *xq;     // row t at xq + t * cols
    const float *xd;      // row t at xd + t * nb
    const int16_t *xbs;   // row t at xbs + t * nb * 16
    float *out;
    int ldo, path;
} K8Job;

// One row unpacked: q[cols], sc[cols / 2] (sc of element pair k = sc of group k / 8),
// mn[cols / 16], d[nb], dm[nb]; the rows of a group lie one after the other.
typedef struct {
    uint8_t *q;
    int16_t *sc, *mn;
    float *d, *dm;
} K8Row;

static size_t k8_row_bytes(int cols) {
    int nb = cols / QK_K;
    return (size_t)cols + (size_t)cols + (size_t)cols / 8 + (size_t)nb * 8;
}

static K8Row k8_row(float *buf, int cols, int r) {
    uint8_t *p = (uint8_t *)buf + k8_row_bytes(cols) * (size_t)r;
    int nb = cols / QK_K;
    K8Row u = {.d = (float *)p, .dm = (float *)p + nb};
    p += (size_t)nb * 8;
    u.sc = (int16_t *)p, u.mn = (int16_t *)(p + cols), u.q = p + cols + cols / 8;
    return u;
}

static inline float k8_h(const uint8_t *p) {
    return kcpu_h2f(kcpu_load_u16(p));
}

// Super-block b of a row: q[256], the 16 group scales sc and offsets mn, d and dm.
static void k8_unpack_block(QType t, const uint8_t *b, uint8_t *q, int *sc, int *mn, float *d, float *dm) {
    switch (t) {
    case QTYPE_Q4_K:
    case QTYPE_Q5_K: {
        *d = k8_h(b), *dm = k8_h(b + 2);
        const uint8_t *qh = b + 16, *ql = b + (t == QTYPE_Q5_K ? 48 : 16);
        for (int j = 0; j < 4; j++, ql += 32) {
            for (int h = 0; h < 2; h++) {
                int s, m;
                kcpu_k_scale_min(2 * j + h, b + 4, &s, &m);
                sc[4 * j + 2 * h] = sc[4 * j + 2 * h + 1] = s;
                mn[4 * j + 2 * h] = mn[4 * j + 2 * h + 1] = m;
            }
            for (int l = 0; l < 32; l++) {
                int hi0 = t == QTYPE_Q5_K ? ((qh[l] >> (2 * j)) & 1) << 4 : 0;
                int hi1 = t == QTYPE_Q5_K ? ((qh[l] >> (2 * j + 1)) & 1) << 4 : 0;
                q[64 * j + l] = (uint8_t)((ql[l] & 0x0f) | hi0);
                q[64 * j + 32 + l] = (uint8_t)((ql[l] >> 4) | hi1);
            }
        }
        return;
    }
    case QTYPE_Q6_K: {
        const uint8_t *ql = b, *qh = b + 128;
        *d = *dm = k8_h(b + 208);
        for (int g = 0; g < 16; g++) sc[g] = ((const int8_t *)(b + 192))[g], mn[g] = 32 * sc[g];
        for (int n = 0; n < QK_K; n += 128, ql += 64, qh += 32)
            for (int l = 0; l < 32; l++) {
                q[n + l] = (uint8_t)((ql[l] & 0x0f) | (qh[l] & 3) << 4);
                q[n + l + 32] = (uint8_t)((ql[l + 32] & 0x0f) | ((qh[l] >> 2) & 3) << 4);
                q[n + l + 64] = (uint8_t)((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4);
                q[n + l + 96] = (uint8_t)((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4);
            }
        return;
    }
    case QTYPE_Q3_K:
    case QTYPE_Q2_K: {
        const bool q3 = t == QTYPE_Q3_K;
        const uint8_t *hm = b, *qs = b + (q3 ? 32 : 16), *s = b + (q3 ? 96 : 0);
        if (q3) {
            *d = *dm = k8_h(b + 108);
            for (int g = 0; g < 16; g++) {
                int lo = g < 8 ? s[g] & 0x0f : s[g - 8] >> 4;
                sc[g] = (lo | ((s[8 + g % 4] >> (2 * (g / 4))) & 3) << 4) - 32, mn[g] = 4 * sc[g];
            }
        } else {
            *d = k8_h(b + 80), *dm = k8_h(b + 82);
            for (int g = 0; g < 16; g++) sc[g] = s[g] & 0x0f, mn[g] = s[g] >> 4;
        }
        // element 128n + 32j + l: bits 2j of qs[32n + l], the high bit j + 4n of hm[l] (Q3_K)
        for (int n = 0; n < 2; n++)
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < 32; l++) {
                    int v = (qs[32 * n + l] >> (2 * j)) & 3;
                    if (q3) v |= ((hm[l] >> (j + 4 * n)) & 1) << 2;
                    q[128 * n + 32 * j + l] = (uint8_t)v;
                }
        return;
    }
    default: DIE("no int8 K-quant kernel for %s", qtype_name(t));
    }
}

static void k8_unpack_row(const K8Job *j, const uint8_t *row, K8Row u) {
    const size_t bb = qtype_block_bytes(j->type);
    for (int b = 0; b < j->nb; b++) {
        int sc[16], mn[16];
        k8_unpack_block(j->type, row + (size_t)b * bb, u.q + (size_t)b * QK_K, sc, mn, &u.d[b], &u.dm[b]);
        for (int g = 0; g < 16; g++) {
            for (int k = 0; k < 8; k++) u.sc[(size_t)b * 128 + 8 * g + k] = (int16_t)sc[g];
            u.mn[(size_t)b * 16 + g] = (int16_t)mn[g];
        }
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
            isum += u.sc[e0 / 2] * s;
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

#if defined(__x86_64__) && !defined(__clang__)
#include <immintrin.h>

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
                wq[r] = _mm512_loadu_si512(u[r].q + e0), ws[r] = _mm512_loadu_si512(u[r].sc + e0 / 2);
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
            __m256i s = _mm256_loadu_si256((const __m256i *)(u.sc + e0 / 2));
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
    void (*tiles)(const K8Job *, float *, int, int, int, int) = k8_tiles_scalar;
#if defined(__x86_64__) && !defined(__clang__)
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

void kcpu_matmul_k8(const KCpu *kc, float *out, const float *x, const QMatrix *w, int n_tokens) {
    bool whole_blocks = w->cols % QK_K == 0;
    CHECK(whole_blocks, "%s matrix with %lld columns", qtype_name(w->type), (long long)w->cols);
    kcpu_check_fits(kc, n_tokens, (int)w->cols);
    CHECK(k8_row_bytes((int)w->cols) * K8_ROWS <= kc->thread_buf_floats * sizeof(float));
    K8Job j = {
        .type = w->type,
        .sym = w->type == QTYPE_Q3_K || w->type == QTYPE_Q6_K,
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
    KcpuQDrive d = {&j, k8_quant_row, k8_run, j.w, j.row_bytes, (int)w->rows, K8_TOKEN_CHUNK, 12288};
    kcpu_q_drive(kc, &d, x, n_tokens);
}
