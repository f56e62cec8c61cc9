// matmul_q.c: out = x · Wᵀ computed directly on Q4_0 / Q4_1 / Q8_0 weights.
//
// The activation rows are quantized once per call to 16 bits in blocks of 32 (scale d =
// amax/32767, q = round(x / d), and s = d · Σq for the weight's offset term), then every weight
// block, widened to int16, meets every activation block in an integer dot product:
//
//   Q8_0  Σ dw·q_w · dx·q_x                   = dw·dx · Σ q_w q_x
//   Q4_0  Σ dw·(q_w − 8) · dx·q_x             = dw·dx · Σ q_w q_x − 8 · dw · s
//   Q4_1  Σ (dw·q_w + m) · dx·q_x             = dw·dx · Σ q_w q_x + m · s
//
// Why 16 bits by default and not ggml's 8 (matmul_q8.c, --cpu-activations int8): 8-bit
// activations (error up to amax/254 per element) moved this model's logits by ~0.15 on average
// against the exact forward of the same weights, and a small model meets near ties often
// enough that ~2.5% of top-1 picks flipped. At 16 bits the
// error is amax/65534, 258 times smaller, and greedy output follows the exact model. The cost,
// measured on one core (bench/bench_kernels.c): the model's 512-token prefill matmuls 1.24x
// the 8-bit time, decode 1.06x. The integer sums stay exact: |Σ q_w q_x| over a block
// <= 32 · 128 · 32767 < 2^31.
//
// The AVX-512 path takes two blocks per step in two 512-bit registers of 32 int16 each: the
// first holds elements 0..15 of both blocks, the second elements 16..31 (that is how the
// nibbles of two Q4 blocks unpack: low nibbles are elements 0..15, high ones 16..31), so the
// activations are stored in that order: [b0 0..15, b1 0..15, b0 16..31, b1 16..31]. vpmaddwd
// then vpdpwssd leave 16 int32 lanes, 0..7 from block 0 and 8..15 from block 1, each the sum of
// 4 products; they are converted and accumulated in float with the block scales spread over
// the lanes of their block, and summed across lanes once at the end of the row.
//
// The offset terms (m · s, −8 · dw · s) are one float per block: they are kept out of the inner
// loop (which is limited by the multiply ports) and added to the accumulators after it as a
// short dot product of the row's [d, m] pairs, saved while unpacking, with the activation's
// [0, s] pairs. A 4 × 4 tile then sums its 16 accumulators in one transposing reduction that
// adds in exactly the order a single sum does.
//
// For prefill, a tile of R weight rows × T token rows keeps all R·T accumulators in registers,
// so every unpacked weight block is reused T times and every activation block R times. Each
// output element goes through the same instructions in the same order whatever tile it sits in,
// so a row's result does not depend on the rest of the batch or on the thread count.
#include "kernels/cpu/cpu.h"

void kcpu_matmul_q(const KCpu *kc, float *out, const float *x, const QMatrix *w, int n_tokens);

#define XQ_MAX 32767.0f // largest activation quant

typedef struct {
    QType type;
    const uint8_t *w;     // first weight row
    size_t row_bytes;
    int nb, npairs;       // blocks per row, pairs of blocks (the last may be half empty)
    const int16_t *xq;    // quantized activations, row t at xq + t * npairs * 64
    const float *xd;      // row t at xd + t * npairs * 2: block scales
    const float *xs;      // row t at xs + t * npairs * 4: per pair 0 s0 0 s1
    float *out;
    int ldo;              // out row stride (= weight rows)
} QJob;

// ---- activation quantization

// Quantizes one block of 32 floats: q (natural order) and returns d; *s = d · Σq. Every path
// rounds x · (1/d) to nearest even, so they all produce the same quants.
static inline float act_quant_block(const float *x, int16_t *q, float *s) {
#if defined(KCPU_AVX512)
    __m512 a = _mm512_loadu_ps(x), b = _mm512_loadu_ps(x + 16);
    float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
    float d = amax / XQ_MAX, id = d != 0.0f ? 1.0f / d : 0.0f;
    __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, _mm512_set1_ps(id)));
    __m512i qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, _mm512_set1_ps(id)));
    _mm256_storeu_si256((__m256i *)q, _mm512_cvtsepi32_epi16(qa));
    _mm256_storeu_si256((__m256i *)(q + 16), _mm512_cvtsepi32_epi16(qb));
    *s = d * (float)_mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb)); // |Σq| < 2^24: exact
    return d;
#else
    float amax = 0.0f;
    for (int j = 0; j < KCPU_QK; j++) amax = kcpu_maxf(amax, fabsf(x[j]));
    float d = amax / XQ_MAX, id = d != 0.0f ? 1.0f / d : 0.0f;
    int sum = 0;
    for (int j = 0; j < KCPU_QK; j++) {
        q[j] = (int16_t)nearbyintf(x[j] * id); // |x · id| <= 32767 · (1 + 2^-23): in range
        sum += q[j];
    }
    *s = d * (float)sum;
    return d;
#endif
}

// Quantizes activation row t of x into the job's layout (see the file comment).
static void act_quant_row(const QJob *j, const float *x, int t) {
    int16_t *xq = (int16_t *)j->xq + (size_t)t * j->npairs * 64;
    float *xd = (float *)j->xd + (size_t)t * j->npairs * 2, *xs = (float *)j->xs + (size_t)t * j->npairs * 4;
    const float *xr = x + (size_t)t * j->nb * KCPU_QK;
    for (int p = 0; p < j->npairs; p++) {
        int16_t q[2][KCPU_QK];
        float d[2] = {0, 0}, s[2] = {0, 0};
        memset(q, 0, sizeof(q));
        for (int h = 0; h < 2 && 2 * p + h < j->nb; h++)
            d[h] = act_quant_block(xr + (size_t)(2 * p + h) * KCPU_QK, q[h], &s[h]);
        int16_t *dst = xq + (size_t)p * 64;
#if defined(KCPU_AVX512) // b0 0..15, b1 0..15, b0 16..31, b1 16..31
        memcpy(dst, q[0], 32);
        memcpy(dst + 16, q[1], 32);
        memcpy(dst + 32, q[0] + 16, 32);
        memcpy(dst + 48, q[1] + 16, 32);
#else
        memcpy(dst, q, sizeof(q));
#endif
        xd[2 * p] = d[0], xd[2 * p + 1] = d[1];
        xs[4 * p] = 0.0f, xs[4 * p + 1] = s[0], xs[4 * p + 2] = 0.0f, xs[4 * p + 3] = s[1];
    }
}

static inline int q_block_bytes(QType t) {
    return t == QTYPE_Q4_0 ? 18 : t == QTYPE_Q4_1 ? 20 : 34;
}

#if defined(KCPU_AVX512)
// ---- AVX-512 VNNI: two blocks per step, R weight rows x T token rows per tile

#define QT_RMAX 4
#define QT_TMAX 4
#ifndef Q_PREFETCH_BYTES
#define Q_PREFETCH_BYTES 12288 // how far ahead of the rows in use decode prefetches (measured)
#endif

typedef struct {
    __m512i lo, hi; // int16 quants: elements 0..15 of both blocks, then 16..31 of both
    __m512 d;       // block scale, lanes 0..7 block 0, 8..15 block 1
} WPair;

// Lanes 0..7 from element i0 of a vector, 8..15 from i1.
static inline __m512i spread_idx(int i0, int i1) {
    return _mm512_set_epi32(i1, i1, i1, i1, i1, i1, i1, i1, i0, i0, i0, i0, i0, i0, i0, i0);
}

// Loads pair p of a weight row. has1 = 0 for the half-empty last pair of an odd block count.
// Q4 types also store the pair's offset factors at dm + 4p: [d0 m0 d1 m1] for Q4_1, [0 −8d0
// 0 −8d1] for Q4_0, which meet the activation's [0 s0 0 s1].
static inline __attribute__((always_inline)) WPair wpair_load(const QType type, const uint8_t *row, int p,
                                                              const int has1, float *dm) {
    const int bb = q_block_bytes(type);
    const uint8_t *b0 = row + (size_t)2 * p * bb, *b1 = b0 + bb;
    WPair w;
    if (type == QTYPE_Q8_0) {
        __m128i l0 = _mm_loadu_si128((const __m128i *)(b0 + 2)), h0 = _mm_loadu_si128((const __m128i *)(b0 + 18));
        __m128i l1 = has1 ? _mm_loadu_si128((const __m128i *)(b1 + 2)) : _mm_setzero_si128();
        __m128i h1 = has1 ? _mm_loadu_si128((const __m128i *)(b1 + 18)) : _mm_setzero_si128();
        w.lo = _mm512_cvtepi8_epi16(_mm256_inserti128_si256(_mm256_castsi128_si256(l0), l1, 1));
        w.hi = _mm512_cvtepi8_epi16(_mm256_inserti128_si256(_mm256_castsi128_si256(h0), h1, 1));
        uint32_t dd = kcpu_load_u16(b0) | (has1 ? (uint32_t)kcpu_load_u16(b1) << 16 : 0);
        __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128((int)dd)); // d0 d1 0 0
        w.d = _mm512_permutexvar_ps(spread_idx(0, 1), _mm512_castps128_ps512(f));
        return w;
    }
    const int off = type == QTYPE_Q4_1 ? 4 : 2;
    __m128i q0 = _mm_loadu_si128((const __m128i *)(b0 + off));
    __m128i q1 = has1 ? _mm_loadu_si128((const __m128i *)(b1 + off)) : _mm_setzero_si128();
    __m512i z = _mm512_cvtepu8_epi16(_mm256_inserti128_si256(_mm256_castsi128_si256(q0), q1, 1));
    w.lo = _mm512_and_si512(z, _mm512_set1_epi16(0x0f));
    w.hi = _mm512_srli_epi16(z, 4);
    // Q4_1 blocks start with fp16 d, m: read as one u32 each, giving d0 m0 d1 m1. Q4_0 has d
    // alone: placed as 0 d0 0 d1 (so the "m" slots carry d for the offset term).
    uint32_t h0, h1 = 0;
    if (type == QTYPE_Q4_1) {
        memcpy(&h0, b0, 4);
        if (has1) memcpy(&h1, b1, 4);
    } else {
        h0 = (uint32_t)kcpu_load_u16(b0) << 16;
        if (has1) h1 = (uint32_t)kcpu_load_u16(b1) << 16;
    }
    __m128 f = _mm_cvtph_ps(_mm_set_epi32(0, 0, (int)h1, (int)h0));
    _mm_storeu_ps(dm + 4 * p, type == QTYPE_Q4_0 ? _mm_mul_ps(f, _mm_set_ps(-8.0f, 1.0f, -8.0f, 1.0f)) : f);
    const int d0 = type == QTYPE_Q4_1 ? 0 : 1, d1 = d0 + 2;
    w.d = _mm512_permutexvar_ps(spread_idx(d0, d1), _mm512_castps128_ps512(f));
    return w;
}

static inline __attribute__((always_inline)) void tile_step(const QType type, const int R, const int T,
                                                            const QJob *j, int r0, int t0, int p, const int has1,
                                                            __m512 acc[QT_RMAX][QT_TMAX], float *dm) {
    WPair w[QT_RMAX];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
        w[r] = wpair_load(type, j->w + (size_t)(r0 + r) * j->row_bytes, p, has1, dm + (size_t)r * 4 * j->npairs);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        const size_t xi = (size_t)(t0 + t) * j->npairs + p;
        __m512i xlo = _mm512_loadu_si512(j->xq + xi * 64), xhi = _mm512_loadu_si512(j->xq + xi * 64 + 32);
        __m128 d2 = _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)(j->xd + xi * 2))); // d0 d1
        __m512 xd = _mm512_permutexvar_ps(spread_idx(0, 1), _mm512_castps128_ps512(d2));
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            __m512i i = _mm512_dpwssd_epi32(_mm512_madd_epi16(w[r].lo, xlo), w[r].hi, xhi);
            acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(w[r].d, xd), acc[r][t]);
        }
    }
}

// out[t0 .. t0+T) x [r0 .. r0+R); dm: room for R rows of 4 * npairs floats. first: this is the
// first tile on these weight rows in the token chunk (the one that brings them from memory).
static inline __attribute__((always_inline)) void tile(const QType type, const int R, const int T, const QJob *j,
                                                       int r0, int t0, float *dm, bool first) {
    __m512 acc[QT_RMAX][QT_TMAX];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) acc[r][t] = _mm512_setzero_ps();
    int full = j->nb / 2;
    // Decode streams the weights from memory once and is bound by it: ask for the bytes
    // Q_PREFETCH_BYTES ahead while computing on these rows (the tile moves R * 2 blocks a step).
    // This doubled single-thread decode bandwidth; prefetching past the end is harmless. The
    // later tiles of a chunk find the rows in L1.
    const char *pf = (const char *)j->w + (size_t)r0 * j->row_bytes + Q_PREFETCH_BYTES;
    const int pf_step = R * 2 * q_block_bytes(type);
    for (int p = 0; p < full; p++) {
        if (first && Q_PREFETCH_BYTES > 0)
            for (int k = 0; k < pf_step; k += 64) _mm_prefetch(pf + (size_t)p * pf_step + k, _MM_HINT_T0);
        tile_step(type, R, T, j, r0, t0, p, 1, acc, dm);
    }
    if (j->nb & 1) tile_step(type, R, T, j, r0, t0, full, 0, acc, dm);
    // The offset terms join the accumulators as a float dot over the [d m] / [0 s] slots.
    if (type != QTYPE_Q8_0) {
        const int n = 4 * j->npairs;
        for (int k = 0; k < n; k += 16) {
            __mmask16 m = n - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - k)) - 1);
            __m512 dv[QT_RMAX];
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) dv[r] = _mm512_maskz_loadu_ps(m, dm + (size_t)r * n + k);
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) {
                __m512 xv = _mm512_maskz_loadu_ps(m, j->xs + (size_t)(t0 + t) * n + k);
#pragma GCC unroll 4
                for (int r = 0; r < R; r++) acc[r][t] = _mm512_fmadd_ps(dv[r], xv, acc[r][t]);
            }
        }
    }
    if (R == 4 && T == 4) { // one transposing reduction, then out[t][r0..r0+3] per 128-bit lane
        __m512 v[16];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++)
#pragma GCC unroll 4
            for (int t = 0; t < 4; t++) v[4 * r + t] = acc[r][t];
        __m512 s = kcpu_hsum512x16(v);
        float *o = j->out + (size_t)t0 * j->ldo + r0;
        _mm_storeu_ps(o, _mm512_castps512_ps128(s));
        _mm_storeu_ps(o + j->ldo, _mm512_extractf32x4_ps(s, 1));
        _mm_storeu_ps(o + 2 * (size_t)j->ldo, _mm512_extractf32x4_ps(s, 2));
        _mm_storeu_ps(o + 3 * (size_t)j->ldo, _mm512_extractf32x4_ps(s, 3));
        return;
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) j->out[(size_t)(t0 + t) * j->ldo + r0 + r] = kcpu_hsum512(acc[r][t]);
}

#ifndef TILE_R
#define TILE_R 4 // weight rows per tile
#endif
#ifndef TILE_T
// Token rows per tile in prefill: 16 accumulators, 4 rows' unpacked halves (8) and scales (4)
// leave the activations one zmm short, so one accumulator spills. 4 x 3 does not spill and
// measured ~5% faster at 512 rows but ~7% slower at 16 (five tiles and a single row); 4 x 4
// also keeps the one transposing reduction.
#define TILE_T 4
#endif

// Rows [r_lo, r_hi) x tokens [t_lo, t_hi) of one weight type.
static inline __attribute__((always_inline)) void q_block_run(const QType type, const QJob *j, int r_lo, int r_hi,
                                                              int t_lo, int t_hi, float *dm) {
    int r = r_lo;
    for (; r + TILE_R <= r_hi; r += TILE_R) {
        int t = t_lo;
        for (; t + TILE_T <= t_hi; t += TILE_T) tile(type, TILE_R, TILE_T, j, r, t, dm, t == t_lo);
        // the rest in one pass over the rows (a verification step's 2 or 3 rows, say)
        if (TILE_T >= 4 && t_hi - t == 3) tile(type, TILE_R, 3, j, r, t, dm, t == t_lo);
        else if (TILE_T >= 3 && t_hi - t == 2) tile(type, TILE_R, 2, j, r, t, dm, t == t_lo);
        else
            for (; t < t_hi; t++) tile(type, TILE_R, 1, j, r, t, dm, t == t_lo);
    }
    for (; r < r_hi; r++) {
        int t = t_lo;
        for (; t + TILE_T <= t_hi; t += TILE_T) tile(type, 1, TILE_T, j, r, t, dm, t == t_lo);
        for (; t < t_hi; t++) tile(type, 1, 1, j, r, t, dm, t == t_lo);
    }
}

static void q_run(const QJob *j, int r_lo, int r_hi, int t_lo, int t_hi, float *dm) {
    switch (j->type) {
    case QTYPE_Q4_0: q_block_run(QTYPE_Q4_0, j, r_lo, r_hi, t_lo, t_hi, dm); break;
    case QTYPE_Q4_1: q_block_run(QTYPE_Q4_1, j, r_lo, r_hi, t_lo, t_hi, dm); break;
    case QTYPE_Q8_0: q_block_run(QTYPE_Q8_0, j, r_lo, r_hi, t_lo, t_hi, dm); break;
    default: DIE("no quantized kernel for %s", qtype_name(j->type));
    }
}

#elif defined(KCPU_AVX2)
// ---- AVX2 (+ AVX-VNNI when present): one block per step as two 256-bit halves of 16 int16
// (elements 0..15, 16..31: the low and high nibbles of a Q4 block), R x T tiles as above.
// Activations in natural order; the 8 int32 lanes hold the same 4-product sums whether the
// second half goes through vpdpwssd or through vpmaddwd + vpaddd.

#define QT_RMAX 2
#define QT_TMAX 2

static inline __m256i dot_s16_acc(__m256i acc, __m256i a, __m256i b) {
#if defined(__AVXVNNI__)
    return _mm256_dpwssd_avx_epi32(acc, a, b);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
#endif
}

static inline __attribute__((always_inline)) void tile(const QType type, const int R, const int T,
                                                       const QJob *j, int r0, int t0) {
    const int bb = q_block_bytes(type);
    __m256 acc[QT_RMAX][QT_TMAX];
#pragma GCC unroll 2
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
    for (int b = 0; b < j->nb; b++) {
        __m256i wlo[QT_RMAX], whi[QT_RMAX];
        float dw[QT_RMAX], mw[QT_RMAX];
#pragma GCC unroll 2
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = j->w + (size_t)(r0 + r) * j->row_bytes + (size_t)b * bb;
            dw[r] = kcpu_h2f(kcpu_load_u16(blk));
            if (type == QTYPE_Q8_0) {
                wlo[r] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 2)));
                whi[r] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 18)));
                mw[r] = 0.0f;
            } else {
                __m256i z = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(blk + (type == QTYPE_Q4_1 ? 4 : 2))));
                wlo[r] = _mm256_and_si256(z, _mm256_set1_epi16(0x0f));
                whi[r] = _mm256_srli_epi16(z, 4);
                mw[r] = type == QTYPE_Q4_1 ? kcpu_h2f(kcpu_load_u16(blk + 2)) : -8.0f * dw[r];
            }
        }
#pragma GCC unroll 2
        for (int t = 0; t < T; t++) {
            const int16_t *xb = j->xq + (size_t)(t0 + t) * j->npairs * 64 + (size_t)b * KCPU_QK;
            __m256i xlo = _mm256_loadu_si256((const __m256i *)xb), xhi = _mm256_loadu_si256((const __m256i *)(xb + 16));
            float dx = j->xd[(size_t)(t0 + t) * j->npairs * 2 + b];
            float s8 = 0.125f * j->xs[(size_t)(t0 + t) * j->npairs * 4 + 2 * b + 1]; // over the block's 8 lanes
#pragma GCC unroll 2
            for (int r = 0; r < R; r++) {
                __m256i i = dot_s16_acc(_mm256_madd_epi16(wlo[r], xlo), whi[r], xhi);
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_set1_ps(dw[r] * dx), acc[r][t]);
                if (type != QTYPE_Q8_0)
                    acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(mw[r]), _mm256_set1_ps(s8), acc[r][t]);
            }
        }
    }
#pragma GCC unroll 2
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int t = 0; t < T; t++) j->out[(size_t)(t0 + t) * j->ldo + r0 + r] = kcpu_hsum256(acc[r][t]);
}

// 2 x 2: the 4 accumulators, 4 unpacked weight halves and 2 activation halves fit the 16 ymm.
#define TILE_R 2
#define TILE_T 2

static inline __attribute__((always_inline)) void q_block_run(const QType type, const QJob *j, int r_lo,
                                                              int r_hi, int t_lo, int t_hi) {
    int r = r_lo;
    for (; r + TILE_R <= r_hi; r += TILE_R) {
        int t = t_lo;
        for (; t + TILE_T <= t_hi; t += TILE_T) tile(type, TILE_R, TILE_T, j, r, t);
        for (; t < t_hi; t++) tile(type, TILE_R, 1, j, r, t);
    }
    for (; r < r_hi; r++)
        for (int t = t_lo; t < t_hi; t++) tile(type, 1, 1, j, r, t);
}

static void q_run(const QJob *j, int r_lo, int r_hi, int t_lo, int t_hi, float *dm) {
    (void)dm;
    switch (j->type) {
    case QTYPE_Q4_0: q_block_run(QTYPE_Q4_0, j, r_lo, r_hi, t_lo, t_hi); break;
    case QTYPE_Q4_1: q_block_run(QTYPE_Q4_1, j, r_lo, r_hi, t_lo, t_hi); break;
    case QTYPE_Q8_0: q_block_run(QTYPE_Q8_0, j, r_lo, r_hi, t_lo, t_hi); break;
    default: DIE("no quantized kernel for %s", qtype_name(j->type));
    }
}

#else
// ---- portable scalar path: one block at a time, exact integer dots, float accumulation

static void q_run(const QJob *j, int r_lo, int r_hi, int t_lo, int t_hi, float *dm) {
    (void)dm;
    const int bb = q_block_bytes(j->type);
    for (int r = r_lo; r < r_hi; r++) {
        const uint8_t *row = j->w + (size_t)r * j->row_bytes;
        for (int t = t_lo; t < t_hi; t++) {
            const int16_t *xq = j->xq + (size_t)t * j->npairs * 64;
            const float *xd = j->xd + (size_t)t * j->npairs * 2, *xs = j->xs + (size_t)t * j->npairs * 4;
            float sum = 0.0f;
            for (int b = 0; b < j->nb; b++) {
                const uint8_t *blk = row + (size_t)b * bb;
                const int16_t *xb = xq + (size_t)b * KCPU_QK;
                float dx = xd[b], s = xs[2 * b + 1];
                float dw = kcpu_h2f(kcpu_load_u16(blk)), m = 0.0f;
                int32_t isum = 0;
                if (j->type == QTYPE_Q8_0) {
                    const int8_t *q = (const int8_t *)(blk + 2);
                    for (int e = 0; e < KCPU_QK; e++) isum += q[e] * xb[e];
                } else {
                    const uint8_t *q = blk + (j->type == QTYPE_Q4_1 ? 4 : 2);
                    for (int e = 0; e < 16; e++) isum += (q[e] & 0x0f) * xb[e] + (q[e] >> 4) * xb[e + 16];
                    m = j->type == QTYPE_Q4_1 ? kcpu_h2f(kcpu_load_u16(blk + 2)) : -8.0f * dw;
                }
                sum += dw * dx * (float)isum + m * s;
            }
            j->out[(size_t)t * j->ldo + r] = sum;
        }
    }
}
#endif

// Token rows per pass over a thread's weight rows in prefill: the quantized activations of a
// chunk (~55 KB at 576 columns) stay in L1/L2 while the weight rows stream past them (16 to 64
// measured the same).
#ifndef Q_TOKEN_CHUNK
#define Q_TOKEN_CHUNK 48
#endif

static void q_quant_row(const void *j, const float *x, int t) {
    act_quant_row(j, x, t);
}
static void q_run_any(const void *j, int r_lo, int r_hi, int t_lo, int t_hi, float *dm) {
    q_run(j, r_lo, r_hi, t_lo, t_hi, dm);
}

void kcpu_matmul_q(const KCpu *kc, float *out, const float *x, const QMatrix *w, int n_tokens) {
    bool whole_blocks = w->cols % KCPU_QK == 0;
    CHECK(whole_blocks, "%s matrix with %lld columns", qtype_name(w->type), (long long)w->cols);
    kcpu_check_fits(kc, n_tokens, (int)w->cols);
    QJob j = {
        .type = w->type,
        .w = w->data,
        .row_bytes = qtype_row_size(w->type, w->cols),
        .nb = (int)(w->cols / KCPU_QK),
        .xq = kc->xq,
        .xd = kc->xd,
        .xs = kc->xs,
        .out = out,
        .ldo = (int)w->rows,
    };
    j.npairs = (j.nb + 1) / 2;
#if defined(KCPU_AVX512)
    const size_t head = Q_PREFETCH_BYTES; // the tiles prefetch that far ahead of themselves
#else
    const size_t head = 0;
#endif
    KcpuQDrive d = {&j, q_quant_row, q_run_any, j.w, j.row_bytes, (int)w->rows, Q_TOKEN_CHUNK, head, 4};
    kcpu_q_drive(kc, &d, x, n_tokens);
}
