// matmul_q8.c: out = x · Wᵀ on Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 weights with 8-bit activations
// (--cpu-activations int8; matmul_q.c is the 16-bit path).
//
// Each activation row is quantized per block of 32 as ggml's Q8_0 / Q8_1 do: d = amax / 127,
// q = round(x / d) in [-127, 127], and Σq kept beside it. Every weight block then meets every
// activation block in an exact int32 dot product, with the weight's offset folded in where it
// is an integer:
//
//   Q8_0  Σ q_w q_x                    (weights as u8 q_w + 128:  Σ (q_w + 128) q_x − 128 Σq_x)
//   Q4_0  Σ (q_w − 8) q_x   = Σ q_w q_x − 8 Σq_x            (q_w in 0..15 is already a u8)
//   Q4_1  Σ q_w q_x, and the min term m · d_x Σq_x is added in float after the row's blocks
//   Q5_0 / Q5_1  as Q4_0 (offset −16) / Q4_1, the quants' fifth bits (a u32 per block) or-ed
//         into the nibbles as 16 (the SIMD paths turn the bits into byte masks)
//   IQ4_NL  as Q8_0 with the weights looked up from the nibbles (vpshufb on the 16-value table)
//
// so a block's integer sum B is the plain integer dot of the stored quants with q_x, and the
// float result is Σ_blocks d_w d_x B (+ Σ_blocks m d_x Σq_x for Q4_1 / Q5_1). vpdpbusd multiplies u8
// by s8, which is why the weights are the unsigned operand: nibbles are 0..15 as stored, and
// Q8_0's s8 quants become u8 by adding 128 (an xor), whose cost is one activation-only integer
// per block. The int32 sums cannot overflow: per lane at most 8 · 255 · 127 plus 128 · 32 · 127.
//
// Paths, picked at run time from the CPU's features (one binary: each path is compiled for its
// own instruction set with a target pragma, and only called when the CPU reports it):
//   avx512-vnni  four blocks per step in two 512-bit registers, vpdpbusd, tiles of 4 weight rows
//                x 4 token rows
//   avx-vnni     one block per 256-bit step, the VEX vpdpbusd, 2 x 2 tiles
//   avx2         the same with vpmaddubsw + vpmaddwd (Q8_0 via |w| and sign(x, w), because
//                255 · 127 · 2 would saturate vpmaddubsw's int16)
//   scalar       plain C
// Every path computes the same int32 block sums; the float epilogue (per-lane d_w · d_x products
// accumulated over the row, then the Q4_1 min term, then one fixed lane reduction) is
// fixed per path and independent of the tile a row sits in, so a row's result does not depend
// on the batch or the thread count. Across paths results agree up to float summation order.
//
// Accuracy (kernels.h, docs/architecture.md): the activation error per element is at most
// amax(block) / 254, 258 times coarser than the 16-bit path.
#include "kernels/cpu/q8.h"

void kcpu_matmul_q8(const KCpu *kc, float *out, const float *x, const QMatrix *w, int n_tokens);

// ---- path selection

static const char *const Q8_PATH_NAMES[KCPU_I8_NPATHS] = {"scalar", "avx2", "avx-vnni", "avx512-vnni", "amx"};
static int q8_path = -1; // chosen on first use; tests may force another (k_int8_path_set)

static bool q8_path_supported(int p) {
#if Q8_SIMD
    __builtin_cpu_init();
    switch (p) {
    case KCPU_I8_AVX512:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
               __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
    case KCPU_I8_AVXVNNI:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avxvnni") &&
               __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
    case KCPU_I8_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
    case KCPU_I8_AMX: return q8_path_supported(KCPU_I8_AVX512) && kcpu_amx_available();
    default: return p == KCPU_I8_SCALAR;
    }
#else
    return p == KCPU_I8_SCALAR;
#endif
}

static int q8_path_get(void) {
    int p = __atomic_load_n(&q8_path, __ATOMIC_ACQUIRE);
    if (p >= 0) return p;
    for (p = KCPU_I8_NPATHS - 1; p > 0 && !q8_path_supported(p); p--) {}
    __atomic_store_n(&q8_path, p, __ATOMIC_RELEASE);
    return p;
}

int kcpu_int8_path(void) {
    int p = q8_path_get();
    return p == KCPU_I8_AMX ? KCPU_I8_AVX512 : p;
}

const char *k_int8_path(void) {
    return Q8_PATH_NAMES[q8_path_get()];
}

bool k_int8_path_set(const char *name) {
    for (int p = 0; p < KCPU_I8_NPATHS; p++)
        if (!strcmp(name, Q8_PATH_NAMES[p])) {
            if (!q8_path_supported(p)) return false;
            __atomic_store_n(&q8_path, p, __ATOMIC_RELEASE);
            return true;
        }
    return false;
}

const char *k_int8_path_name(int i) {
    return i >= 0 && i < KCPU_I8_NPATHS ? Q8_PATH_NAMES[i] : NULL;
}

// ---- the job

// The integer offset per block that turns the kernel's u8 weights into the stored values.
static inline int32_t q8_offset(QType t, int path, int32_t sum) {
    if (t == QTYPE_Q4_0) return -8 * sum;
    if (t == QTYPE_Q5_0) return -16 * sum;
    if (q8_signed(t) && (path == KCPU_I8_AVX512 || path == KCPU_I8_AVXVNNI || path == KCPU_I8_AMX)) return -128 * sum;
    return 0;
}

// Quantizes activation row t. The quants are the same numbers on every path (round to nearest
// even; q8_quant_row_512 computes them for AVX-512 and AMX), only their order in memory differs:
// the AVX-512 path stores each 4 blocks as 128 bytes [b0 0..15, b1 0..15, b2 0..15, b3 0..15]
// then the same for elements 16..31 (see its kernel); the others keep the natural order.
static void q8_quant_row(const Q8Job *j, int path, const float *x, int t) {
    int8_t *xq = (int8_t *)j->xq + (size_t)t * j->nbp * KCPU_QK;
    float *xd = (float *)j->xd + (size_t)t * j->nbp, *xs = (float *)j->xs + (size_t)t * j->nbp;
    int32_t *xc = (int32_t *)j->xc + (size_t)t * j->nbp;
    const float *xr = x + (size_t)t * j->nb * KCPU_QK;
    for (int b = 0; b < j->nbp; b++) {
        int8_t q[KCPU_QK] = {0};
        xd[b] = xs[b] = 0.0f, xc[b] = 0;
        if (b < j->nb) {
            const float *v = xr + (size_t)b * KCPU_QK;
            float amax = 0.0f;
            for (int e = 0; e < KCPU_QK; e++) amax = kcpu_maxf(amax, fabsf(v[e]));
            float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            int32_t sum = 0;
            for (int e = 0; e < KCPU_QK; e++) {
                q[e] = (int8_t)nearbyintf(v[e] * id); // |v · id| <= 127 · (1 + 2^-22): in range
                sum += q[e];
            }
            xd[b] = d, xs[b] = d * (float)sum, xc[b] = q8_offset(j->type, path, sum);
        }
        if (path == KCPU_I8_AVX512) {
            int8_t *quad = xq + (size_t)(b / 4) * 128 + (b % 4) * 16;
            memcpy(quad, q, 16);
            memcpy(quad + 64, q + 16, 16);
        } else {
            memcpy(xq + (size_t)b * KCPU_QK, q, KCPU_QK);
        }
    }
}

// Q4_1's min term Σ_b m_b · d_x Σq_x for the scalar path, added after the row's blocks. The SIMD
// paths add it to their lane accumulators before the lane sum, as a dot product of the row's
// mins (written by the kernels while they unpack the row) with the activation's xs.
static inline float q8_min_term(const float *m, const float *xs, int nb) {
    float s = 0.0f;
    for (int b = 0; b < nb; b++) s = fmaf(m[b], xs[b], s);
    return s;
}

// ---- scalar: the reference order of the other paths' integer sums

static void q8_run_scalar(const Q8Job *j, int r_lo, int r_hi, int t_lo, int t_hi, float *mbuf) {
    const int bb = q8_block_bytes(j->type);
    for (int r = r_lo; r < r_hi; r++) {
        const uint8_t *row = j->w + (size_t)r * j->row_bytes;
        for (int b = 0; b < j->nb && q8_has_min(j->type); b++)
            mbuf[b] = kcpu_h2f(kcpu_load_u16(row + (size_t)b * bb + 2));
        for (int t = t_lo; t < t_hi; t++) {
            const int8_t *xq = j->xq + (size_t)t * j->nbp * KCPU_QK;
            const float *xd = j->xd + (size_t)t * j->nbp;
            const int32_t *xc = j->xc + (size_t)t * j->nbp;
            float sum = 0.0f;
            for (int b = 0; b < j->nb; b++) {
                const uint8_t *blk = row + (size_t)b * bb;
                const int8_t *xb = xq + (size_t)b * KCPU_QK;
                int32_t isum = xc[b];
                if (j->type == QTYPE_Q8_0) {
                    const int8_t *q = (const int8_t *)(blk + 2);
                    for (int e = 0; e < KCPU_QK; e++) isum += q[e] * xb[e];
                } else if (j->type == QTYPE_IQ4_NL) {
                    const uint8_t *q = blk + 2;
                    for (int e = 0; e < 16; e++)
                        isum += KCPU_IQ4_VALUES[q[e] & 0x0f] * xb[e] + KCPU_IQ4_VALUES[q[e] >> 4] * xb[e + 16];
                } else {
                    const uint8_t *q = blk + q8_qs_offset(j->type);
                    for (int e = 0; e < 16; e++) isum += (q[e] & 0x0f) * xb[e] + (q[e] >> 4) * xb[e + 16];
                    // (a separate loop: folding the bits into the one above halves Q4's speed)
                    uint32_t qh = q8_is_q5(j->type) ? q8_qh(j->type, blk) : 0;
                    for (int e = 0; qh && e < 32; e++) isum += (int32_t)((qh >> e) & 1) * 16 * xb[e];
                }
                sum = fmaf(kcpu_h2f(kcpu_load_u16(blk)) * xd[b], (float)isum, sum);
            }
            if (q8_has_min(j->type)) sum += q8_min_term(mbuf, j->xs + (size_t)t * j->nbp, j->nb);
            j->out[(size_t)t * j->ldo + r] = sum;
        }
    }
}

#if Q8_SIMD
#include <immintrin.h>

// ---- AVX-512 VNNI: two blocks per step, R weight rows x T token rows per tile

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")

#define Q8_RMAX 4
#define Q8_TMAX 4

// Four blocks per step in two registers: A holds elements 0..15 of the 4 blocks, B elements
// 16..31 (that is how the nibbles of 4 Q4 blocks unpack from one 64-byte register). dpbusd on
// A then on B leaves 16 int32 lanes, lanes 4k..4k+3 of block k, each the sum of 8 products: one
// int-to-float conversion and one scale multiply-add per 128 products.
typedef struct {
    __m512i a, b; // u8 weights, elements 0..15 and 16..31 of blocks 0..3
    __m512 d;     // d_w, lanes 4k..4k+3 from block k
} Q8WQuad;

// Lanes 4k..4k+3 from element k.
static inline __m512i q8_spread4(void) {
    return _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
}

// Quad qd of a weight row; n: its blocks (4, or 1..3 in the row's last quad, the rest zeros).
// Q4_1 also writes the quad's 4 mins at m + 4 qd.
static inline __attribute__((always_inline)) Q8WQuad q8_wquad_512(const QType type, const uint8_t *row, int qd,
                                                                  const int n, float *m) {
    const int bb = q8_block_bytes(type);
    const uint8_t *b0 = row + (size_t)4 * qd * bb;
    Q8WQuad w;
    if (q8_has_min(type)) { // d0 m0 .. d3 m3 in one conversion
        uint32_t h[4] = {0, 0, 0, 0};
        for (int k = 0; k < n; k++) memcpy(&h[k], b0 + (size_t)k * bb, 4);
        __m256 f = _mm256_cvtph_ps(_mm_setr_epi32((int)h[0], (int)h[1], (int)h[2], (int)h[3]));
        const __m512i d_idx = _mm512_set_epi32(6, 6, 6, 6, 4, 4, 4, 4, 2, 2, 2, 2, 0, 0, 0, 0);
        w.d = _mm512_permutexvar_ps(d_idx, _mm512_castps256_ps512(f));
        __m256 mins = _mm256_permutevar8x32_ps(f, _mm256_setr_epi32(1, 3, 5, 7, 1, 3, 5, 7));
        _mm_storeu_ps(m + 4 * qd, _mm256_castps256_ps128(mins));
    } else {
        uint16_t h[4] = {0, 0, 0, 0};
        for (int k = 0; k < n; k++) h[k] = kcpu_load_u16(b0 + (size_t)k * bb);
        __m128 f = _mm_cvtph_ps(_mm_setr_epi16((short)h[0], (short)h[1], (short)h[2], (short)h[3], 0, 0, 0, 0));
        w.d = _mm512_permutexvar_ps(q8_spread4(), _mm512_castps128_ps512(f));
    }
    if (type == QTYPE_Q8_0) { // [b0 | b1] and [b2 | b3], then the halves gathered by 64-bit lanes
        __m256i q[4];
        for (int k = 0; k < 4; k++)
            q[k] = k < n ? _mm256_loadu_si256((const __m256i *)(b0 + (size_t)k * bb + 2)) : _mm256_setzero_si256();
        __m512i z01 = _mm512_inserti64x4(_mm512_castsi256_si512(q[0]), q[1], 1);
        __m512i z23 = _mm512_inserti64x4(_mm512_castsi256_si512(q[2]), q[3], 1);
        __m512i lo = _mm512_permutex2var_epi64(z01, _mm512_set_epi64(13, 12, 9, 8, 5, 4, 1, 0), z23);
        __m512i hi = _mm512_permutex2var_epi64(z01, _mm512_set_epi64(15, 14, 11, 10, 7, 6, 3, 2), z23);
        w.a = _mm512_xor_si512(lo, _mm512_set1_epi8((char)0x80));
        w.b = _mm512_xor_si512(hi, _mm512_set1_epi8((char)0x80));
        return w;
    }
    const int off = q8_qs_offset(type);
    __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(b0 + off)));
    if (n > 1) v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(b0 + bb + off)), 1);
    if (n > 2) v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(b0 + 2 * bb + off)), 2);
    if (n > 3) v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(b0 + 3 * bb + off)), 3);
    w.a = _mm512_and_si512(v, _mm512_set1_epi8(0x0f));
    w.b = _mm512_and_si512(_mm512_srli_epi16(v, 4), _mm512_set1_epi8(0x0f));
    if (q8_is_q5(type)) { // fifth bits: bit e of block k's qh is byte 16k + e of a (e < 16) or of b
        uint64_t ma = 0, mb = 0;
        for (int k = 0; k < n; k++) {
            uint32_t qh = q8_qh(type, b0 + (size_t)k * bb);
            ma |= (uint64_t)(qh & 0xffff) << (16 * k), mb |= (uint64_t)(qh >> 16) << (16 * k);
        }
        w.a = _mm512_or_si512(w.a, _mm512_maskz_mov_epi8(ma, _mm512_set1_epi8(16)));
        w.b = _mm512_or_si512(w.b, _mm512_maskz_mov_epi8(mb, _mm512_set1_epi8(16)));
    }
    if (type == QTYPE_IQ4_NL) { // the nibbles index the table, stored + 128 (the offset folds it back)
        __m512i tbl = _mm512_xor_si512(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)KCPU_IQ4_VALUES)),
                                       _mm512_set1_epi8((char)0x80));
        w.a = _mm512_shuffle_epi8(tbl, w.a), w.b = _mm512_shuffle_epi8(tbl, w.b);
    }
    return w;
}

static inline __attribute__((always_inline)) void q8_step_512(const QType type, const int R, const int T,
                                                              const Q8Job *j, int r0, int t0, int qd, const int n,
                                                              __m512 acc[Q8_RMAX][Q8_TMAX], float *m) {
    Q8WQuad w[Q8_RMAX];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
        w[r] = q8_wquad_512(type, j->w + (size_t)(r0 + r) * j->row_bytes, qd, n, m + (size_t)r * j->nbp);
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) {
        const size_t xi = (size_t)(t0 + t) * j->nbp + (size_t)4 * qd; // first block of the quad
        __m512i xa = _mm512_loadu_si512(j->xq + xi * KCPU_QK), xb = _mm512_loadu_si512(j->xq + xi * KCPU_QK + 64);
        __m512 xd = _mm512_permutexvar_ps(q8_spread4(), _mm512_castps128_ps512(_mm_loadu_ps(j->xd + xi)));
        // the offsets go into the first lane of each block (0, 4, 8, 12)
        __m128i c4 = _mm_loadu_si128((const __m128i *)(j->xc + xi));
        __m512i xc = _mm512_maskz_permutexvar_epi32(0x1111, q8_spread4(), _mm512_castsi128_si512(c4));
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            __m512i i = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(xc, w[r].a, xa), w[r].b, xb);
            acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(w[r].d, xd), acc[r][t]);
        }
    }
}

static inline __attribute__((always_inline)) void q8_tile_512(const QType type, const int R, const int T,
                                                              const Q8Job *j, int r0, int t0, float *m, bool first) {
    __m512 acc[Q8_RMAX][Q8_TMAX];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) acc[r][t] = _mm512_setzero_ps();
    const int full = j->nb / 4;
    const char *pf = (const char *)j->w + (size_t)r0 * j->row_bytes + Q8_PREFETCH_BYTES;
    const int pf_step = R * 4 * q8_block_bytes(type);
    for (int qd = 0; qd < full; qd++) {
        if (first)
            for (int k = 0; k < pf_step; k += 64) _mm_prefetch(pf + (size_t)qd * pf_step + k, _MM_HINT_T0);
        q8_step_512(type, R, T, j, r0, t0, qd, 4, acc, m);
    }
    switch (j->nb % 4) {
    case 1: q8_step_512(type, R, T, j, r0, t0, full, 1, acc, m); break;
    case 2: q8_step_512(type, R, T, j, r0, t0, full, 2, acc, m); break;
    case 3: q8_step_512(type, R, T, j, r0, t0, full, 3, acc, m); break;
    default: break;
    }
    if (q8_has_min(type)) { // the min term into the lanes, 16 blocks at a time
        const int n = j->nbp;
        for (int k = 0; k < n; k += 16) {
            __mmask16 mk = n - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - k)) - 1);
            __m512 mv[Q8_RMAX];
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) mv[r] = _mm512_maskz_loadu_ps(mk, m + (size_t)r * n + k);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                __m512 xv = _mm512_maskz_loadu_ps(mk, j->xs + (size_t)(t0 + t) * n + k);
#pragma GCC unroll 4
                for (int r = 0; r < R; r++) acc[r][t] = _mm512_fmadd_ps(mv[r], xv, acc[r][t]);
            }
        }
    }
    if (R == 4 && T == 4) { // one transposing reduction (the same additions as kcpu_hsum512)
        __m512 v[16];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++)
#pragma GCC unroll 4
            for (int t = 0; t < 4; t++) v[4 * r + t] = acc[r][t];
        float s[16];
        _mm512_storeu_ps(s, kcpu_hsum512x16(v));
        for (int r = 0; r < 4; r++)
            for (int t = 0; t < 4; t++) j->out[(size_t)(t0 + t) * j->ldo + r0 + r] = s[4 * t + r];
    } else {
#pragma GCC unroll 4
        for (int r = 0; r < R; r++)
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) j->out[(size_t)(t0 + t) * j->ldo + r0 + r] = kcpu_hsum512(acc[r][t]);
    }
}

static inline __attribute__((always_inline)) void q8_rows_512(const QType type, const Q8Job *j, int r_lo, int r_hi,
                                                              int t_lo, int t_hi, float *m) {
    int r = r_lo;
    for (; r + 4 <= r_hi; r += 4) {
        int t = t_lo;
        for (; t + 4 <= t_hi; t += 4) q8_tile_512(type, 4, 4, j, r, t, m, t == t_lo);
        // the rest in one pass over the rows (a verification step's 2 or 3 rows, say)
        if (t_hi - t == 3) q8_tile_512(type, 4, 3, j, r, t, m, t == t_lo);
        else if (t_hi - t == 2) q8_tile_512(type, 4, 2, j, r, t, m, t == t_lo);
        else if (t < t_hi) q8_tile_512(type, 4, 1, j, r, t, m, t == t_lo);
    }
    for (; r < r_hi; r++) {
        int t = t_lo;
        for (; t + 4 <= t_hi; t += 4) q8_tile_512(type, 1, 4, j, r, t, m, t == t_lo);
        for (; t < t_hi; t++) q8_tile_512(type, 1, 1, j, r, t, m, t == t_lo);
    }
}

static void q8_run_avx512(const Q8Job *j, int r_lo, int r_hi, int t_lo, int t_hi, float *m) {
    switch (j->type) {
    case QTYPE_Q4_0: q8_rows_512(QTYPE_Q4_0, j, r_lo, r_hi, t_lo, t_hi, m); break;
    case QTYPE_Q4_1: q8_rows_512(QTYPE_Q4_1, j, r_lo, r_hi, t_lo, t_hi, m); break;
    case QTYPE_Q5_0: q8_rows_512(QTYPE_Q5_0, j, r_lo, r_hi, t_lo, t_hi, m); break;
    case QTYPE_IQ4_NL: q8_rows_512(QTYPE_IQ4_NL, j, r_lo, r_hi, t_lo, t_hi, m); break;
    case QTYPE_Q5_1: q8_rows_512(QTYPE_Q5_1, j, r_lo, r_hi, t_lo, t_hi, m); break;
    case QTYPE_Q8_0: q8_rows_512(QTYPE_Q8_0, j, r_lo, r_hi, t_lo, t_hi, m); break;
    default: DIE("no int8 kernel for %s", qtype_name(j->type));
    }
}

// q8_quant_row for the AVX-512 and AMX paths, the same numbers: the max of |v| is exact in any
// order, v · id is the same one float multiply, and vcvtps2dq rounds to nearest even as
// nearbyintf does (both under the default rounding mode). Decode quantizes before every matmul
// on one thread, where the scalar loop took ~4% of a step.
static void q8_quant_row_512(const Q8Job *j, int path, const float *x, int t) {
    int8_t *xq = (int8_t *)j->xq + (size_t)t * j->nbp * KCPU_QK;
    float *xd = (float *)j->xd + (size_t)t * j->nbp, *xs = (float *)j->xs + (size_t)t * j->nbp;
    int32_t *xc = (int32_t *)j->xc + (size_t)t * j->nbp;
    const float *xr = x + (size_t)t * j->nb * KCPU_QK;
    for (int b = 0; b < j->nbp; b++) {
        __m128i q0 = _mm_setzero_si128(), q1 = _mm_setzero_si128();
        xd[b] = xs[b] = 0.0f, xc[b] = 0;
        if (b < j->nb) {
            __m512 v0 = _mm512_loadu_ps(xr + (size_t)b * KCPU_QK), v1 = _mm512_loadu_ps(xr + (size_t)b * KCPU_QK + 16);
            float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
            float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            __m512i i0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, _mm512_set1_ps(id)));
            __m512i i1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, _mm512_set1_ps(id)));
            int32_t sum = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
            q0 = _mm512_cvtepi32_epi8(i0), q1 = _mm512_cvtepi32_epi8(i1);
            xd[b] = d, xs[b] = d * (float)sum, xc[b] = q8_offset(j->type, path, sum);
        }
        int8_t *lo = path == KCPU_I8_AVX512 ? xq + (size_t)(b / 4) * 128 + (b % 4) * 16 : xq + (size_t)b * KCPU_QK;
        _mm_storeu_si128((__m128i *)lo, q0);
        _mm_storeu_si128((__m128i *)(lo + (path == KCPU_I8_AVX512 ? 64 : 16)), q1);
    }
}

#pragma GCC pop_options

// ---- AVX2 and AVX-VNNI: one block per 256-bit step, 2 x 2 tiles, activations in natural order.
// Both are compiled with AVX-VNNI allowed; the AVX2 instance (vnni = 0) contains no VNNI
// instruction, as the constant branch in q8_dot_256 is folded away before code generation.

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avxvnni")

// The int32 sums of 4 u8 x s8 products per lane, plus acc. AVX2 without VNNI takes Q8_0's
// signed weights as |w| and moves their signs onto x.
static inline __attribute__((always_inline)) __m256i q8_dot_256(const int vnni, const QType type, __m256i acc,
                                                                __m256i w, __m256i x) {
    if (vnni) return _mm256_dpbusd_avx_epi32(acc, w, x);
    if (q8_signed(type)) x = _mm256_sign_epi8(x, w), w = _mm256_abs_epi8(w);
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1)));
}

static inline __attribute__((always_inline)) void q8_tile_256(const int vnni, const QType type, const int R,
                                                              const int T, const Q8Job *j, int r0, int t0, float *m) {
    const int bb = q8_block_bytes(type);
    __m256 acc[2][2];
#pragma GCC unroll 2
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
    for (int b = 0; b < j->nb; b++) {
        __m256i wq[2];
        float dw[2];
#pragma GCC unroll 2
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = j->w + (size_t)(r0 + r) * j->row_bytes + (size_t)b * bb;
            dw[r] = kcpu_h2f(kcpu_load_u16(blk));
            if (type == QTYPE_Q8_0) {
                wq[r] = _mm256_loadu_si256((const __m256i *)(blk + 2));
                if (vnni) wq[r] = _mm256_xor_si256(wq[r], _mm256_set1_epi8((char)0x80));
            } else {
                __m128i v = _mm_loadu_si128((const __m128i *)(blk + q8_qs_offset(type)));
                __m128i lo = _mm_and_si128(v, _mm_set1_epi8(0x0f));
                __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi8(0x0f));
                wq[r] = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
                if (q8_is_q5(type)) { // byte e takes bit e of qh: spread its bytes, test one bit each
                    __m256i h = _mm256_shuffle_epi8(_mm256_set1_epi32((int)q8_qh(type, blk)),
                                                    _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202,
                                                                       0x0303030303030303));
                    const __m256i bits = _mm256_set1_epi64x((long long)0x8040201008040201ull);
                    h = _mm256_cmpeq_epi8(_mm256_and_si256(h, bits), bits);
                    wq[r] = _mm256_or_si256(wq[r], _mm256_and_si256(h, _mm256_set1_epi8(16)));
                }
                if (type == QTYPE_IQ4_NL) { // the table, + 128 for vpdpbusd (the offset folds it back)
                    __m256i tbl = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)KCPU_IQ4_VALUES));
                    if (vnni) tbl = _mm256_xor_si256(tbl, _mm256_set1_epi8((char)0x80));
                    wq[r] = _mm256_shuffle_epi8(tbl, wq[r]);
                }
                if (q8_has_min(type)) m[(size_t)r * j->nbp + b] = kcpu_h2f(kcpu_load_u16(blk + 2));
            }
        }
#pragma GCC unroll 2
        for (int t = 0; t < T; t++) {
            const size_t xi = (size_t)(t0 + t) * j->nbp + b;
            __m256i xq = _mm256_loadu_si256((const __m256i *)(j->xq + xi * KCPU_QK));
            __m256i xc = _mm256_castsi128_si256(_mm_cvtsi32_si128(j->xc[xi])); // into lane 0
            float dx = j->xd[xi];
#pragma GCC unroll 2
            for (int r = 0; r < R; r++) {
                __m256i i = q8_dot_256(vnni, type, xc, wq[r], xq);
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_set1_ps(dw[r] * dx), acc[r][t]);
            }
        }
    }
    if (q8_has_min(type)) // the min term into the lanes, 8 blocks at a time
        for (int k = 0; k < j->nb; k += 8) {
            __m256i mk = _mm256_cmpgt_epi32(_mm256_set1_epi32(j->nb - k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
#pragma GCC unroll 2
            for (int t = 0; t < T; t++) {
                __m256 xv = _mm256_maskload_ps(j->xs + (size_t)(t0 + t) * j->nbp + k, mk);
#pragma GCC unroll 2
                for (int r = 0; r < R; r++)
                    acc[r][t] = _mm256_fmadd_ps(_mm256_maskload_ps(m + (size_t)r * j->nbp + k, mk), xv, acc[r][t]);
            }
        }
#pragma GCC unroll 2
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int t = 0; t < T; t++) j->out[(size_t)(t0 + t) * j->ldo + r0 + r] = kcpu_hsum256(acc[r][t]);
}

static inline __attribute__((always_inline)) void q8_rows_256(const int vnni, const QType type, const Q8Job *j,
                                                              int r_lo, int r_hi, int t_lo, int t_hi, float *m) {
    int r = r_lo;
    for (; r + 2 <= r_hi; r += 2) {
        int t = t_lo;
        for (; t + 2 <= t_hi; t += 2) q8_tile_256(vnni, type, 2, 2, j, r, t, m);
        for (; t < t_hi; t++) q8_tile_256(vnni, type, 2, 1, j, r, t, m);
    }
    for (; r < r_hi; r++)
        for (int t = t_lo; t < t_hi; t++) q8_tile_256(vnni, type, 1, 1, j, r, t, m);
}

#define Q8_RUN_256(name, vnni)                                                                   \
    static void name(const Q8Job *j, int r_lo, int r_hi, int t_lo, int t_hi, float *m) {         \
        switch (j->type) {                                                                       \
        case QTYPE_Q4_0: q8_rows_256(vnni, QTYPE_Q4_0, j, r_lo, r_hi, t_lo, t_hi, m); break;     \
        case QTYPE_Q4_1: q8_rows_256(vnni, QTYPE_Q4_1, j, r_lo, r_hi, t_lo, t_hi, m); break;     \
        case QTYPE_Q5_0: q8_rows_256(vnni, QTYPE_Q5_0, j, r_lo, r_hi, t_lo, t_hi, m); break;     \
        case QTYPE_IQ4_NL: q8_rows_256(vnni, QTYPE_IQ4_NL, j, r_lo, r_hi, t_lo, t_hi, m); break; \
        case QTYPE_Q5_1: q8_rows_256(vnni, QTYPE_Q5_1, j, r_lo, r_hi, t_lo, t_hi, m); break;     \
        case QTYPE_Q8_0: q8_rows_256(vnni, QTYPE_Q8_0, j, r_lo, r_hi, t_lo, t_hi, m); break;     \
        default: DIE("no int8 kernel for %s", qtype_name(j->type));                              \
        }                                                                                        \
    }
Q8_RUN_256(q8_run_avxvnni, 1)
Q8_RUN_256(q8_run_avx2, 0)

#pragma GCC pop_options
#endif // Q8_SIMD

// ---- the matmul

#define Q8_TOKEN_CHUNK 48 // token rows per pass over a thread's weight rows (as matmul_q.c)

static void q8_quant_any(const void *j, const float *x, int t) {
    int path = ((const Q8Job *)j)->path;
#if Q8_SIMD
    if (path == KCPU_I8_AVX512 || path == KCPU_I8_AMX) {
        q8_quant_row_512(j, path, x, t);
        return;
    }
#endif
    q8_quant_row(j, path, x, t);
}
static void q8_run_any(const void *j, int r_lo, int r_hi, int t_lo, int t_hi, float *m) {
    ((const Q8Job *)j)->run(j, r_lo, r_hi, t_lo, t_hi, m);
}

void kcpu_matmul_q8(const KCpu *kc, float *out, const float *x, const QMatrix *w, int n_tokens) {
    bool whole_blocks = w->cols % KCPU_QK == 0;
    CHECK(whole_blocks, "%s matrix with %lld columns", qtype_name(w->type), (long long)w->cols);
    kcpu_check_fits(kc, n_tokens, (int)w->cols);
    int path = q8_path_get();
    if (path == KCPU_I8_AMX && !w->pack) path = KCPU_I8_AVX512; // not repacked (k_pack): the VNNI kernels
    Q8Job j = {
        .type = w->type,
        .w = w->data,
        .row_bytes = qtype_row_size(w->type, w->cols),
        .nb = (int)(w->cols / KCPU_QK),
        .xq = kc->xq8,
        .xd = kc->xd8,
        .xc = kc->xc,
        .xs = kc->xs8,
        .out = out,
        .ldo = (int)w->rows,
        .rows = (int)w->rows,
        .pack = path == KCPU_I8_AMX ? w->pack : NULL,
        .path = path,
    };
    j.nbp = (j.nb + 3) & ~3;
    void (*run)(const Q8Job *, int, int, int, int, float *) = q8_run_scalar;
#if Q8_SIMD
    run = path == KCPU_I8_AVX512    ? q8_run_avx512
          : path == KCPU_I8_AVXVNNI ? q8_run_avxvnni
          : path == KCPU_I8_AVX2    ? q8_run_avx2
                                    : run;
    run = path == KCPU_I8_AMX ? kcpu_amx_run : run;
#endif
    j.run = run;
    // the thread buffer holds the Q4_1 mins of a tile's rows: 4 * nbp floats
    KcpuQDrive d = {&j, q8_quant_any, q8_run_any, j.w, j.row_bytes, (int)w->rows, Q8_TOKEN_CHUNK, Q8_PREFETCH_BYTES, 4};
    if (j.pack) // the repacked layout goes by groups of 16 rows, each a run of nb records
        d.w = j.pack, d.row_bytes = (size_t)j.nb * kcpu_amx_record_bytes(j.type) / 16, d.row_tile = 16;
    kcpu_q_drive(kc, &d, x, n_tokens);
}
