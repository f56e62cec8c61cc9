// matmul_k8_amx.c: the K-quant matmuls of matmul_k8.c on AMX-INT8 tiles, for Q2_K / Q3_K / Q4_K /
// Q5_K / Q6_K / IQ4_XS weights repacked at load (k_pack), and the AVX-512 VNNI kernel on the same
// layout.
//
// As matmul_amx.c does for the 32-element types, this is the scalar kernel of matmul_k8.c bit for
// bit, whatever the batch. Each output element gets the exact int32 sums of every super-block,
//
//   I = Σ_j sc_j Σ_{e∈j} q_e q_x,e        M = Σ_g mn_g bsum_g
//
// (j: the scale's sub-blocks, 32 elements for Q4_K / Q5_K / IQ4_XS and 16 for the others; g:
// 16 elements; Q6_K's mn = 32 sc, Q3_K's 4 sc, IQ4_XS's 128 sc), then the scalar kernel's float
// steps in its order, per super-block:
//
//   Q2_K Q4_K Q5_K     acc = fma(d·d_x, (float)I, acc);  acc = fma(−dmin·d_x, (float)M, acc)
//   Q3_K Q6_K IQ4_XS   acc = fma(d·d_x, (float)(I − M), acc)
//
// The tiles take 16 token rows x 16 weight rows: per sub-block one tdpbsud of K = 32 or 16 (A:
// the activation rows as matmul_k8.c quantized them, s8; B: the sub-block's quants unpacked to
// [K/4][16][4] u8), its C stored and taken row by row, I += C · sc_j (vpmulld, one weight row
// per lane). The VNNI kernel (fewer than 16 token rows, the rows past the last 16, decode) makes
// the same sub-block sums with vpdpbusd, one weight row per lane. M is vpdpwssd over pairs of
// 16-element sums.
//
// The repacked layout: the rows in groups of 16 (the last padded with zero rows), each group a
// run of one record per super-block:
//   quants  Q4_K Q5_K Q6_K IQ4_XS: 32 slices of [16 rows][4 bytes]; slice s, byte 4n + e holds
//           element 4s + e of row n in its low nibble and element 128 + 4s + e in its high one
//           (the low 4 bits of q; IQ4_XS's table index, looked up + 128 with vpshufb). Q2_K
//           Q3_K: 16 slices, byte 4n + e holding elements 64c + 4s + e in its bits 2c, 2c + 1
//           (c = 0..3; the low 2 bits of q)
//   masks   Q5_K: 64 of 64 bits, mask k's bit 4n + e bit 4 of element 4k + e of row n; Q6_K:
//           64 for bit 4, then 64 for bit 5; Q3_K: 64 for bit 2
//   scales  [sub-block][16 rows] bytes: Q4_K / Q5_K sc, then mn (8 sub-blocks each); Q3_K,
//           Q6_K and IQ4_XS (8 sub-blocks, 128 bytes) sc, signed; Q2_K sc | mn << 4 as stored
//   d       the 16 rows' d as stored (fp16), then for Q2_K / Q4_K / Q5_K their dmin
// Element row k (elements 4k..4k+3 of the 16 rows: a plane of a slice, plus what its masks
// add) is one row of the tiles' B operand and one register for vpdpbusd. Bytes per record
// (stored bytes of 16 rows in brackets): Q2_K 1,344 (1,344), Q3_K 1,824 (1,760), Q4_K 2,368
// (2,304), Q5_K 2,880 (2,816), Q6_K 3,360 (3,360), IQ4_XS 2,208 (2,176); the 6-bit scales take
// a byte each.
#include "kernels/cpu/k8.h"

#define KA_ROWS 16 // weight rows per group and token rows per tile
#define KA_PREFETCH_BYTES 12288

static inline bool ka_q6(QType t) {
    return t == QTYPE_Q6_K;
}

static inline bool ka_2bit(QType t) { // quants in 2-bit planes (else nibbles)
    return t == QTYPE_Q2_K || t == QTYPE_Q3_K;
}

static inline bool ka_sym(QType t) { // mn a multiple of sc, no dmin
    return t == QTYPE_Q3_K || t == QTYPE_Q6_K || t == QTYPE_IQ4_XS;
}

static inline int ka_scale_bytes(QType t) { // a byte per sub-block and row (Q4_K, Q5_K: sc then mn)
    return t == QTYPE_IQ4_XS ? 128 : 256;
}

static inline int ka_masks(QType t) { // 64-bit masks per record
    return t == QTYPE_Q5_K || t == QTYPE_Q3_K ? 64 : t == QTYPE_Q6_K ? 128 : 0;
}

static inline int ka_mask_base(QType t) {
    return ka_2bit(t) ? 1024 : 2048;
}

static inline int ka_quant_bytes(QType t) {
    return ka_mask_base(t) + 8 * ka_masks(t);
}

bool kcpu_k8_amx_packable(QType t) {
    return t == QTYPE_Q2_K || t == QTYPE_Q3_K || t == QTYPE_Q4_K || t == QTYPE_Q5_K || t == QTYPE_Q6_K ||
           t == QTYPE_IQ4_XS;
}

size_t kcpu_k8_amx_record_bytes(QType t) {
    return (size_t)ka_quant_bytes(t) + ka_scale_bytes(t) + (ka_sym(t) ? 32 : 64);
}

// ---- repacking (plain C: it runs once, at load)

// The IQ4 table index whose value + 128 is v.
static int ka_iq4_index(uint8_t v) {
    for (int i = 0; i < 16; i++)
        if (KCPU_IQ4_VALUES[i] + 128 == v) return i;
    DIE("%d is no IQ4 table value + 128", v);
}

// Where the fp16 d (and dmin after it) of a stored super-block lie.
static int ka_d_offset(QType t) {
    return t == QTYPE_Q2_K ? 80 : t == QTYPE_Q3_K ? 108 : t == QTYPE_Q6_K ? 208 : 0;
}

void kcpu_k8_amx_pack(const QMatrix *w, uint8_t *dst) {
    const QType t = w->type;
    const size_t rec = kcpu_k8_amx_record_bytes(t), row_bytes = qtype_row_size(t, w->cols);
    const size_t bb = qtype_block_bytes(t);
    const int nb = (int)(w->cols / QK_K), qb = ka_quant_bytes(t), mb = ka_mask_base(t);
    memset(dst, 0, (size_t)(w->rows + KA_ROWS - 1) / KA_ROWS * nb * rec);
    for (int64_t r = 0; r < w->rows; r++) {
        const int n = (int)(r % KA_ROWS);
        for (int b = 0; b < nb; b++) {
            const uint8_t *blk = (const uint8_t *)w->data + (size_t)r * row_bytes + (size_t)b * bb;
            uint8_t *o = dst + ((size_t)(r / KA_ROWS) * nb + b) * rec, q[QK_K];
            int sc[16], mn[16];
            kcpu_k8_block(t, blk, q, sc, mn);
            if (t == QTYPE_IQ4_XS) // the record keeps the table index (kcpu_k8_block: its value + 128)
                for (int e = 0; e < QK_K; e++) q[e] = (uint8_t)ka_iq4_index(q[e]);
            for (int s = 0; s < (ka_2bit(t) ? 16 : 32); s++)
                for (int e = 0; e < 4; e++) {
                    uint8_t *v = &o[64 * s + 4 * n + e];
                    if (ka_2bit(t))
                        for (int c = 0; c < 4; c++) *v |= (uint8_t)((q[64 * c + 4 * s + e] & 3) << (2 * c));
                    else
                        *v = (uint8_t)((q[4 * s + e] & 0x0f) | (q[128 + 4 * s + e] & 0x0f) << 4);
                }
            for (int k = 0; ka_masks(t) && k < 64; k++)
                for (int e = 0; e < 4; e++) {
                    const int bit = 4 * n + e, el = 4 * k + e;
                    const bool b0 = t == QTYPE_Q3_K ? q[el] & 4 : q[el] & 16, b1 = ka_q6(t) && (q[el] & 32);
                    if (b0) o[mb + 8 * k + bit / 8] |= (uint8_t)(1u << (bit % 8));
                    if (b1) o[mb + 512 + 8 * k + bit / 8] |= (uint8_t)(1u << (bit % 8));
                }
            uint8_t *s = o + qb;
            if (t == QTYPE_Q4_K || t == QTYPE_Q5_K) // sc and mn per 32 elements (matmul_k8.c repeats them per 16)
                for (int j = 0; j < 8; j++)
                    s[16 * j + n] = (uint8_t)sc[2 * j], s[128 + 16 * j + n] = (uint8_t)mn[2 * j];
            else if (t == QTYPE_IQ4_XS) // sc per 32, signed
                for (int j = 0; j < 8; j++) s[16 * j + n] = (uint8_t)sc[2 * j];
            else
                for (int g = 0; g < 16; g++) s[16 * g + n] = (uint8_t)(t == QTYPE_Q2_K ? sc[g] | mn[g] << 4 : sc[g]);
            memcpy(s + ka_scale_bytes(t) + 2 * n, blk + ka_d_offset(t), 2);
            if (!ka_sym(t)) memcpy(s + ka_scale_bytes(t) + 32 + 2 * n, blk + ka_d_offset(t) + 2, 2);
        }
    }
}

#if defined(__x86_64__) && !defined(__clang__)
#include <immintrin.h>
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c,amx-tile,amx-int8")
#define KA_INLINE static inline __attribute__((always_inline))

static inline int ka_sub_elems(QType t) { // elements per scale
    return t == QTYPE_Q4_K || t == QTYPE_Q5_K || t == QTYPE_IQ4_XS ? 32 : 16;
}

static inline const uint8_t *ka_record(const K8Job *j, int g, int b) {
    return j->pack + ((size_t)g * j->nb + b) * kcpu_k8_amx_record_bytes(j->type);
}

// Slices s0..s0+3 unpacked: w[c][i] is element row R c + s0 + i (R: 32 rows a nibble plane, 16
// a 2-bit one).
KA_INLINE void ka_unpack4(const QType t, const uint8_t *rec, int s0, __m512i w[][8]) {
    const int P = ka_2bit(t) ? 4 : 2, R = ka_2bit(t) ? 16 : 32;
    const __m512i m = _mm512_set1_epi8(ka_2bit(t) ? 3 : 0x0f);
    for (int i = 0; i < 4; i++) {
        __m512i v = _mm512_loadu_si512(rec + 64 * (s0 + i));
        for (int c = 0; c < P; c++)
            w[c][i] = _mm512_and_si512(c ? _mm512_srli_epi16(v, ka_2bit(t) ? 2 * c : 4) : v, m);
    }
    if (t == QTYPE_IQ4_XS) { // the table's values + 128 (u8 for tdpbsud and vpdpbusd)
        const __m512i tbl = _mm512_xor_si512(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)KCPU_IQ4_VALUES)),
                                             _mm512_set1_epi8((char)0x80));
        for (int i = 0; i < 4; i++)
            for (int c = 0; c < P; c++) w[c][i] = _mm512_shuffle_epi8(tbl, w[c][i]);
    }
    if (!ka_masks(t)) return;
    const __m512i add0 = _mm512_set1_epi8(t == QTYPE_Q3_K ? 4 : 16);
    for (int i = 0; i < 4; i++)
        for (int c = 0; c < P; c++) {
            const int k = R * c + s0 + i;
            uint64_t mk;
            memcpy(&mk, rec + ka_mask_base(t) + 8 * k, 8);
            w[c][i] = _mm512_mask_add_epi8(w[c][i], (__mmask64)mk, w[c][i], add0);
            if (ka_q6(t)) {
                memcpy(&mk, rec + ka_mask_base(t) + 512 + 8 * k, 8);
                w[c][i] = _mm512_mask_add_epi8(w[c][i], (__mmask64)mk, w[c][i], _mm512_set1_epi8(32));
            }
        }
}

// The scale of sub-block j of the 16 rows, one per lane.
KA_INLINE __m512i ka_scale(const QType t, const uint8_t *rec, int j) {
    __m128i v = _mm_loadu_si128((const __m128i *)(rec + ka_quant_bytes(t) + 16 * j));
    if (t == QTYPE_Q2_K) return _mm512_and_si512(_mm512_cvtepu8_epi32(v), _mm512_set1_epi32(0x0f));
    return ka_sym(t) ? _mm512_cvtepi8_epi32(v) : _mm512_cvtepu8_epi32(v);
}

// M's weights, as int16 pairs per lane for vpdpwssd against a token row's bsum pairs (16-element
// groups 2p and 2p + 1): Q4_K / Q5_K mn of sub-block p twice; Q2_K the two groups' mn; Q6_K /
// Q3_K 32 sc / 4 sc of the two groups.
KA_INLINE void ka_mins(const QType t, const uint8_t *rec, __m512i mp[8]) {
    const uint8_t *s = rec + ka_quant_bytes(t);
    for (int p = 0; p < 8; p++) {
        __m512i lo, hi;
        if (t == QTYPE_Q4_K || t == QTYPE_Q5_K) {
            lo = hi = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(s + 128 + 16 * p)));
        } else if (t == QTYPE_IQ4_XS) { // 128 sc of sub-block p, both groups
            lo = hi = _mm512_slli_epi32(ka_scale(t, rec, p), 7);
        } else if (t == QTYPE_Q2_K) {
            lo = _mm512_srli_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(s + 32 * p))), 4);
            hi = _mm512_srli_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(s + 32 * p + 16))), 4);
        } else {
            const int sh = ka_q6(t) ? 5 : 2;
            lo = _mm512_slli_epi32(ka_scale(t, rec, 2 * p), sh);
            hi = _mm512_slli_epi32(ka_scale(t, rec, 2 * p + 1), sh);
        }
        mp[p] = _mm512_or_si512(_mm512_and_si512(lo, _mm512_set1_epi32(0xffff)), _mm512_slli_epi32(hi, 16));
    }
}

// The float steps of one super-block for one token row (see the top).
KA_INLINE __m512 ka_epilogue(const QType t, const uint8_t *rec, __m512i is, __m512i ms, float dx, __m512 acc) {
    const uint8_t *dp = rec + ka_quant_bytes(t) + ka_scale_bytes(t);
    __m512 dd = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)dp)), _mm512_set1_ps(dx));
    if (ka_sym(t)) return _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(_mm512_sub_epi32(is, ms)), acc);
    __m512 ndm = _mm512_xor_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(dp + 32))), _mm512_set1_ps(-0.0f));
    acc = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(is), acc);
    return _mm512_fmadd_ps(_mm512_mul_ps(ndm, _mm512_set1_ps(dx)), _mm512_cvtepi32_ps(ms), acc);
}

// M for token row t of super-block b.
KA_INLINE __m512i ka_msum(const K8Job *j, const __m512i mp[8], int t, int b) {
    const int16_t *bs = j->xbs + ((size_t)t * j->nb + b) * 16;
    __m512i ms = _mm512_setzero_si512();
    for (int p = 0; p < 8; p++) {
        int32_t pair;
        memcpy(&pair, bs + 2 * p, 4);
        ms = _mm512_dpwssd_epi32(ms, mp[p], _mm512_set1_epi32(pair));
    }
    return ms;
}

KA_INLINE void ka_store(const K8Job *j, int g, int t, int nr, __m512 acc) {
    __mmask16 mk = nr >= KA_ROWS ? (__mmask16)0xffff : (__mmask16)((1u << nr) - 1);
    _mm512_mask_storeu_ps(j->out + (size_t)t * j->ldo + g * KA_ROWS, mk, acc);
}

// T (1..4) token rows against a group of 16 weight rows: one row per lane. The sub-blocks go by
// the planes of the same slices (Q4_K: j, j + 4; Q6_K: g, g + 8; Q2_K / Q3_K: g, g + 4, g + 8,
// g + 12).
KA_INLINE void ka_vnni(const QType t, const int T, const K8Job *j, int g, int t0, int nr) {
    const int E = ka_sub_elems(t), KR = E / 4, P = ka_2bit(t) ? 4 : 2, NP = QK_K / E / P;
    const int rec_bytes = (int)kcpu_k8_amx_record_bytes(t);
    __m512 acc[4];
    for (int i = 0; i < T; i++) acc[i] = _mm512_setzero_ps();
    for (int b = 0; b < j->nb; b++) {
        const uint8_t *rec = ka_record(j, g, b);
        // decode streams the records (a thread's groups are contiguous): ask ahead of the stream,
        // into L2 (T1: see matmul_amx.c's amx_vnni)
        for (int o = 0; o < rec_bytes; o += 64) _mm_prefetch((const char *)rec + KA_PREFETCH_BYTES + o, _MM_HINT_T1);
        __m512i is[4];
        for (int i = 0; i < T; i++) is[i] = _mm512_setzero_si512();
        for (int p = 0; p < NP; p++) {
            __m512i w[4][8];
            for (int qq = 0; qq < KR / 4; qq++) {
                __m512i u[4][8];
                ka_unpack4(t, rec, KR * p + 4 * qq, u);
                for (int c = 0; c < P; c++)
                    for (int i = 0; i < 4; i++) w[c][4 * qq + i] = u[c][i];
            }
            for (int c = 0; c < P; c++) {
                const int sub = p + c * NP;
                const __m512i sc = ka_scale(t, rec, sub);
#pragma GCC unroll 4
                for (int i = 0; i < T; i++) {
                    const int8_t *xq = j->xq + (size_t)(t0 + i) * j->cols + (size_t)b * QK_K + E * sub;
                    __m512i d[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
#pragma GCC unroll 8
                    for (int k = 0; k < KR; k++) {
                        int32_t x4;
                        memcpy(&x4, xq + 4 * k, 4);
                        d[k & 1] = _mm512_dpbusd_epi32(d[k & 1], w[c][k], _mm512_set1_epi32(x4));
                    }
                    is[i] = _mm512_add_epi32(is[i], _mm512_mullo_epi32(_mm512_add_epi32(d[0], d[1]), sc));
                }
            }
        }
        __m512i mp[8];
        ka_mins(t, rec, mp);
        for (int i = 0; i < T; i++)
            acc[i] = ka_epilogue(t, rec, is[i], ka_msum(j, mp, t0 + i, b), j->xd[(size_t)(t0 + i) * j->nb + b], acc[i]);
    }
    for (int i = 0; i < T; i++) ka_store(j, g, t0 + i, nr, acc[i]);
}

// One sub-block's dot products for 16 token rows (tiles 0-2 or 3-5), C stored to c.
#define KA_DOT(tc, ta, tb)                                                                         \
    do {                                                                                           \
        _tile_loadd(ta, a + (size_t)b * QK_K + E * sub, lda);                                      \
        _tile_loadd(tb, bq + (size_t)b * 4096 + 64 * KR * sub, 64);                                \
        _tile_zero(tc);                                                                            \
        _tile_dpbsud(tc, ta, tb);                                                                  \
        _tile_stored(tc, c, 64);                                                                   \
    } while (0)

// 16 token rows against a group whose quants bq holds unpacked (4 KiB a super-block). Software
// pipelined by one sub-block: s + 1's dot products are issued before s's sums are read back
// (cbuf: 2 x 1 KiB), so the tiles' latency overlaps the integer work. facc: the float
// accumulators, [16 token rows][16 lanes].
KA_INLINE void ka_tile(const QType t, const K8Job *j, int g, int t0, int nr, int32_t *cbuf, float *facc,
                       const uint8_t *bq) {
    const int E = ka_sub_elems(t), KR = E / 4, S = QK_K / E, total = j->nb * S;
    const long lda = j->cols;
    const int8_t *a = j->xq + (size_t)t0 * j->cols;
    for (int i = 0; i < KA_ROWS; i++) _mm512_storeu_ps(facc + 16 * i, _mm512_setzero_ps());
    __m512i is[KA_ROWS];
    for (int s = 0; s <= total; s++) {
        if (s < total) {
            const int b = s / S, sub = s % S;
            int32_t *c = cbuf + 256 * (s & 1);
            if (s & 1) KA_DOT(3, 4, 5);
            else KA_DOT(0, 1, 2);
        }
        if (s == 0) continue;
        const int b = (s - 1) / S, sub = (s - 1) % S;
        const int32_t *c = cbuf + 256 * ((s - 1) & 1);
        const uint8_t *rec = ka_record(j, g, b);
        const __m512i sc = ka_scale(t, rec, sub);
#pragma GCC unroll 16
        for (int i = 0; i < KA_ROWS; i++) {
            __m512i p = _mm512_mullo_epi32(_mm512_loadu_si512(c + 16 * i), sc);
            is[i] = sub ? _mm512_add_epi32(is[i], p) : p;
        }
        if (sub < S - 1) continue;
        __m512i mp[8];
        ka_mins(t, rec, mp);
        for (int i = 0; i < KA_ROWS; i++) {
            __m512 acc = ka_epilogue(t, rec, is[i], ka_msum(j, mp, t0 + i, b), j->xd[(size_t)(t0 + i) * j->nb + b],
                                     _mm512_loadu_ps(facc + 16 * i));
            _mm512_storeu_ps(facc + 16 * i, acc);
        }
    }
    for (int i = 0; i < KA_ROWS; i++) ka_store(j, g, t0 + i, nr, _mm512_loadu_ps(facc + 16 * i));
}

// buf: the thread's buffer: 2 KiB of int32 sums, 1 KiB of float accumulators, then from 4 KiB
// the group's quants unpacked (4 KiB a super-block: init.c sizes it), written once per group
// for all its token tiles.
KA_INLINE void ka_rows(const QType t, const K8Job *j, int r_lo, int r_hi, int t_lo, int t_hi, float *buf) {
    int32_t *cbuf = (int32_t *)buf;
    float *facc = buf + 512;
    uint8_t *bq = (uint8_t *)(buf + 1024);
    const bool tiles = t_hi - t_lo >= KA_ROWS;
    if (tiles) kcpu_amx_config(ka_sub_elems(t)); // tiles 0-2 and 3-5: C, A, B of K = a sub-block
    for (int r = r_lo; r < r_hi; r += KA_ROWS) {
        const int g = r / KA_ROWS, nr = MIN(KA_ROWS, j->rows - r);
        if (tiles)
            for (int b = 0; b < j->nb; b++) {
                const uint8_t *rec = ka_record(j, g, b);
                for (int s0 = 0; s0 < (ka_2bit(t) ? 16 : 32); s0 += 4) {
                    __m512i w[4][8];
                    ka_unpack4(t, rec, s0, w);
                    uint8_t *o = bq + (size_t)b * 4096 + 64 * s0; // element row R c + s0 + i at o + 64 (R c + i)
                    for (int c = 0; c < (ka_2bit(t) ? 4 : 2); c++)
                        for (int i = 0; i < 4; i++)
                            _mm512_storeu_si512(o + 64 * ((ka_2bit(t) ? 16 : 32) * c + i), w[c][i]);
                }
            }
        int tk = t_lo;
        for (; tk + KA_ROWS <= t_hi; tk += KA_ROWS) ka_tile(t, j, g, tk, nr, cbuf, facc, bq);
        for (; tk + 4 <= t_hi; tk += 4) ka_vnni(t, 4, j, g, tk, nr);
        switch (t_hi - tk) { // the rest in one pass over the group's records
        case 3: ka_vnni(t, 3, j, g, tk, nr); break;
        case 2: ka_vnni(t, 2, j, g, tk, nr); break;
        case 1: ka_vnni(t, 1, j, g, tk, nr); break;
        }
    }
    if (tiles) _tile_release(); // as matmul_amx.c: decode, which follows, uses no tiles
}

void kcpu_k8_amx_run(const K8Job *j, int r_lo, int r_hi, int t_lo, int t_hi, float *buf) {
    CHECK(r_lo % KA_ROWS == 0, "row share %d..%d", r_lo, r_hi);
    switch (j->type) {
    case QTYPE_Q2_K: ka_rows(QTYPE_Q2_K, j, r_lo, r_hi, t_lo, t_hi, buf); break;
    case QTYPE_Q3_K: ka_rows(QTYPE_Q3_K, j, r_lo, r_hi, t_lo, t_hi, buf); break;
    case QTYPE_Q4_K: ka_rows(QTYPE_Q4_K, j, r_lo, r_hi, t_lo, t_hi, buf); break;
    case QTYPE_Q5_K: ka_rows(QTYPE_Q5_K, j, r_lo, r_hi, t_lo, t_hi, buf); break;
    case QTYPE_Q6_K: ka_rows(QTYPE_Q6_K, j, r_lo, r_hi, t_lo, t_hi, buf); break;
    case QTYPE_IQ4_XS: ka_rows(QTYPE_IQ4_XS, j, r_lo, r_hi, t_lo, t_hi, buf); break;
    default: DIE("no AMX kernel for %s", qtype_name(j->type));
    }
}

#pragma GCC pop_options
#else
void kcpu_k8_amx_run(const K8Job *j, int r_lo, int r_hi, int t_lo, int t_hi, float *buf) {
    (void)j, (void)r_lo, (void)r_hi, (void)t_lo, (void)t_hi, (void)buf;
    DIE("AMX kernels are not compiled into this build (clang or not x86-64)");
}
#endif
