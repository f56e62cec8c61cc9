// matmul_amx.c: the 8-bit activation matmuls (matmul_q8.c) on AMX-INT8 tiles, for Q4_0 / Q4_1 /
// Q5_0 / Q5_1 / Q8_0 / IQ4_NL weights repacked at load (k_pack), and the AVX-512 VNNI kernel on the same
// layout. k_pack hands the K-quants to matmul_k8_amx.c, which follows the same plan.
//
// Batch invariance decides the design. AMX pays off from 16 token rows up (a tile is 16 rows);
// fewer rows, and the rows past the last whole 16 of a batch, take the VNNI kernel (a tile
// configured for 6 to 15 rows was tried: slower than the VNNI kernel at every count in the
// engine, the tile work per block costing as much for 6 rows as for 16). A row's
// result must not depend on which kernel it met, so both produce, for each output element, the
// exact int32 sum of every block (the tile's dot product of one block: K = 32; the VNNI kernel's
// 8 vpdpbusd per block with one weight row per lane), and then the same float epilogue, in the
// order the scalar kernel of matmul_q8.c uses:
//
//   acc = fma((float)(B_b + c_b), d_w,b · d_x,b, acc)   over the blocks b in order, from 0
//   Q4_1 / Q5_1: mt = fma(m_b, d_x,b Σq_x,b, mt) likewise; acc += mt
//
// (B_b + c_b: the block's integer sum plus matmul_q8.c's offset term, exact). So "amx" is bit
// for bit the "scalar" path, whatever the batch, and bit for bit itself between its two kernels.
// The other SIMD paths of matmul_q8.c spread a block over lanes and differ in the last bits.
//
// The repacked layout: the rows in groups of 16 (the last padded with zero rows), each group a
// run of one record per block:
//   Q4_0 / Q4_1  256 bytes: 4 slices of [16 rows][4 bytes], slice s holding bytes 4s..4s+3 of
//   IQ4_NL       each row's stored nibbles: low nibbles elements 4s..4s+3, high 16+4s..19+4s
//   Q5_0 / Q5_1  as Q4, then 64 bytes: 8 masks of 64 bits, mask k's bit 4n + e the fifth bit of
//                the element that byte 4n + e of unpacked slice k holds (row n; slices 0-3 the
//                low nibbles, 4-7 the high ones)
//   Q8_0         512 bytes: 8 slices of [16 rows][4 bytes], elements 4s..4s+3 + 128 (as u8)
//   then d_w of the 16 rows as stored, fp16 (32 bytes), and for Q4_1 / Q5_1 their mins m (32
//   bytes).
// A slice unpacked (Q4: & 0x0f and >> 4; Q5: then + 16 where its mask says; IQ4_NL: then the
// table's value + 128, vpshufb, the offset term −128 Σq_x folding the 128 back) is one row of the
// B operand in the tiles' VNNI layout
// ([K/4][N][4]) and one u8 register for vpdpbusd. The activation rows (natural order, s8) are the
// A operand as they lie in matmul_q8.c's scratch, so the dot is tdpbsud (s8 x u8). Memory: 288 /
// 320 / 352 / 384 / 544 / 288 bytes per 16 blocks, exactly the stored Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 / IQ4_NL
// bytes (plus the last group's padding rows), on top of the file's mapping (whose pages the
// forward then no longer reads). Decode streams as many bytes as on the other paths (f32 scales, 1.2x the bytes for
// Q4_1, measured 18% slower from memory).
#include <pthread.h>

#include "kernels/cpu/k8.h"
#include "kernels/cpu/q8.h"

#if Q8_SIMD
#include <cpuid.h>
#include <errno.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define AMX_ROWS 16 // weight rows per group (tile columns) and token rows per tile

static inline int amx_quant_bytes(QType t) {
    return t == QTYPE_Q8_0 ? 512 : q8_is_q5(t) ? 256 + 64 : 256;
}

size_t kcpu_amx_record_bytes(QType t) {
    return (size_t)amx_quant_bytes(t) + 32 + (q8_has_min(t) ? 32 : 0);
}

static bool amx_packable(QType t) {
    return t == QTYPE_Q4_0 || t == QTYPE_Q4_1 || t == QTYPE_Q5_0 || t == QTYPE_Q5_1 || t == QTYPE_Q8_0 ||
           t == QTYPE_IQ4_NL;
}

// ---- permission and detection

static bool amx_ok;
static pthread_once_t amx_once = PTHREAD_ONCE_INIT;

// Linux keeps the 8 KiB tile state off until a process asks for it (arch_prctl
// ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA); a tile instruction without the permission is a
// SIGILL. The grant covers every thread of the process, existing and future.
static void amx_detect(void) {
#if Q8_SIMD
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    bool tile = d & (1u << 24), int8 = d & (1u << 25);
    if (!tile || !int8) return;
    enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
    amx_ok = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    if (!amx_ok)
        log_warn("the CPU has AMX-INT8 but the kernel refused the tile state (arch_prctl: %s): the 8-bit "
                 "kernels use AVX-512 VNNI", strerror(errno));
#endif
}

bool kcpu_amx_available(void) {
    pthread_once(&amx_once, amx_detect);
    return amx_ok;
}

// ---- repacking (plain C: it runs once, at load)

// The K-quants Q2_K..Q6_K have their own records (matmul_k8_amx.c).
size_t k_pack_bytes(const QMatrix *w) {
    const bool k = kcpu_k8_amx_packable(w->type);
    const int blk = k ? QK_K : KCPU_QK;
    if (!(k || amx_packable(w->type)) || w->cols % blk || w->rows <= 0 || !k_act_int8(w->type) ||
        strcmp(k_int8_path(), "amx") != 0)
        return 0;
    size_t groups = (size_t)(w->rows + AMX_ROWS - 1) / AMX_ROWS;
    return groups * (size_t)(w->cols / blk) * (k ? kcpu_k8_amx_record_bytes(w->type) : kcpu_amx_record_bytes(w->type));
}

void k_pack(QMatrix *w, void *dst) {
    if (kcpu_k8_amx_packable(w->type)) {
        kcpu_k8_amx_pack(w, dst);
        w->pack = dst;
        return;
    }
    const size_t rec = kcpu_amx_record_bytes(w->type), row_bytes = qtype_row_size(w->type, w->cols);
    const int nb = (int)(w->cols / KCPU_QK), bb = q8_block_bytes(w->type), qb = amx_quant_bytes(w->type);
    const bool q8 = w->type == QTYPE_Q8_0, q5 = q8_is_q5(w->type);
    uint8_t *p = dst;
    memset(p, 0, k_pack_bytes(w));
    for (int64_t r = 0; r < w->rows; r++) {
        const int n = (int)(r % AMX_ROWS);
        for (int b = 0; b < nb; b++) {
            const uint8_t *blk = (const uint8_t *)w->data + (size_t)r * row_bytes + (size_t)b * bb;
            uint8_t *o = p + ((size_t)(r / AMX_ROWS) * nb + b) * rec;
            const uint8_t *q = blk + (q8 ? 2 : q8_qs_offset(w->type));
            for (int s = 0; s < (q8 ? 8 : 4); s++) // slices of 64 bytes: Q8_0's quants, Q4 / Q5's nibbles
                for (int e = 0; e < 4; e++) o[64 * s + 4 * n + e] = q8 ? (uint8_t)(q[4 * s + e] ^ 0x80) : q[4 * s + e];
            if (q5) { // mask k, bit 4n + e: element 4k + e (k < 4) or 16 + 4(k - 4) + e
                uint32_t qh = q8_qh(w->type, blk);
                for (int k = 0; k < 8; k++)
                    for (int e = 0; e < 4; e++) {
                        int el = k < 4 ? 4 * k + e : 16 + 4 * (k - 4) + e, bit = 4 * n + e;
                        if ((qh >> el) & 1) o[256 + 8 * k + bit / 8] |= (uint8_t)(1u << (bit % 8));
                    }
            }
            memcpy(o + qb + 2 * n, blk, 2); // d, and Q4_1 / Q5_1's m, as the fp16 they are
            if (q8_has_min(w->type)) memcpy(o + qb + 32 + 2 * n, blk + 2, 2);
        }
    }
    w->pack = dst;
}

#if Q8_SIMD
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,amx-tile,amx-int8")

static inline const uint8_t *amx_record(const Q8Job *j, int g, int b) {
    return j->pack + ((size_t)g * j->nb + b) * kcpu_amx_record_bytes(j->type);
}

// The record's quants as 8 u8 registers, k: elements 4k..4k+3 of each of the 16 rows.
static inline __attribute__((always_inline)) void amx_unpack(const QType type, const uint8_t *rec, __m512i w[8]) {
    // unrolled, so w stays in registers (gcc kept a rolled loop's w on the stack in amx_vnni)
    if (type == QTYPE_Q8_0) {
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) w[k] = _mm512_loadu_si512(rec + 64 * k);
        return;
    }
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        __m512i v = _mm512_loadu_si512(rec + 64 * k);
        w[k] = _mm512_and_si512(v, _mm512_set1_epi8(0x0f));
        w[k + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), _mm512_set1_epi8(0x0f));
    }
    if (q8_is_q5(type))
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) {
            uint64_t m;
            memcpy(&m, rec + 256 + 8 * k, 8);
            w[k] = _mm512_mask_add_epi8(w[k], (__mmask64)m, w[k], _mm512_set1_epi8(16));
        }
    if (type == QTYPE_IQ4_NL) {
        __m512i tbl = _mm512_xor_si512(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)KCPU_IQ4_VALUES)),
                                       _mm512_set1_epi8((char)0x80));
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) w[k] = _mm512_shuffle_epi8(tbl, w[k]);
    }
}

// The 16 rows' scales (or mins), stored as fp16: the same floats kcpu_h2f gives the scalar kernel.
static inline __m512 amx_f16x16(const uint8_t *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

// The epilogue's tail: Q4_1's min term (here unless mt holds it), then the rows' results (nr
// of the group's 16 valid).
static inline __attribute__((always_inline)) void amx_finish(const QType type, const int T, const Q8Job *j, int g,
                                                             int t0, int nr, __m512 *acc, const __m512 *mt_done) {
    if (q8_has_min(type) && mt_done)
        for (int t = 0; t < T; t++) acc[t] = _mm512_add_ps(acc[t], mt_done[t]);
    else if (q8_has_min(type))
        for (int t = 0; t < T; t++) {
            __m512 mt = _mm512_setzero_ps();
            const float *xs = j->xs + (size_t)(t0 + t) * j->nbp;
            for (int b = 0; b < j->nb; b++)
                mt = _mm512_fmadd_ps(amx_f16x16(amx_record(j, g, b) + amx_quant_bytes(type) + 32), _mm512_set1_ps(xs[b]),
                                     mt);
            acc[t] = _mm512_add_ps(acc[t], mt);
        }
    __mmask16 mk = nr >= AMX_ROWS ? (__mmask16)0xffff : (__mmask16)((1u << nr) - 1);
    for (int t = 0; t < T; t++) _mm512_mask_storeu_ps(j->out + (size_t)(t0 + t) * j->ldo + g * AMX_ROWS, mk, acc[t]);
}

// acc = fma((float)(isum + c), d_w · d_x, acc): the one float step per block, as the scalar kernel.
static inline __attribute__((always_inline)) __m512 amx_block_fma(__m512i isum, int32_t c, __m512 dw, float dx,
                                                                  __m512 acc) {
    __m512 v = _mm512_cvtepi32_ps(_mm512_add_epi32(isum, _mm512_set1_epi32(c)));
    return _mm512_fmadd_ps(v, _mm512_mul_ps(dw, _mm512_set1_ps(dx)), acc);
}

// T (1..4) token rows against a group of 16 weight rows: one row per lane, 8 vpdpbusd a block.
static inline __attribute__((always_inline)) void amx_vnni(const QType type, const int T, const Q8Job *j, int g,
                                                           int t0, int nr) {
    // mt: Q4_1 / Q5_1's min term, its own chain beside acc (a pass after would be one dependent
    // fma per block for a single token row)
    __m512 acc[4], mt[4];
    for (int t = 0; t < T; t++) acc[t] = mt[t] = _mm512_setzero_ps();
    const int rec_bytes = (int)kcpu_amx_record_bytes(type);
    for (int b = 0; b < j->nb; b++) {
        const uint8_t *rec = amx_record(j, g, b);
        // decode streams the records (a thread's groups are contiguous): ask ahead of the stream,
        // into L2 (T1). A T0 prefetch holds one of the core's few L1 fill buffers until its line
        // arrives: with decode's misses in flight the prefetches themselves stalled (perf put
        // ~45% of this kernel's decode samples on them); decode steps measured 15-20% shorter.
        for (int o = 0; o < rec_bytes; o += 64) _mm_prefetch((const char *)rec + Q8_PREFETCH_BYTES + o, _MM_HINT_T1);
        __m512i w[8];
        amx_unpack(type, rec, w);
        __m512 dw = amx_f16x16(rec + amx_quant_bytes(type));
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const size_t xi = (size_t)(t0 + t) * j->nbp + b;
            const int8_t *xq = j->xq + xi * KCPU_QK;
            // four short chains, not one of 8 dependent vpdpbusd (integer sums: any order is exact)
            __m512i i[4];
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) {
                int32_t x4;
                memcpy(&x4, xq + 4 * k, 4);
                __m512i p = k < 4 ? _mm512_setzero_si512() : i[k - 4];
                i[k % 4] = _mm512_dpbusd_epi32(p, w[k], _mm512_set1_epi32(x4));
            }
            __m512i sum = _mm512_add_epi32(_mm512_add_epi32(i[0], i[1]), _mm512_add_epi32(i[2], i[3]));
            acc[t] = amx_block_fma(sum, j->xc[xi], dw, j->xd[xi], acc[t]);
            if (q8_has_min(type))
                mt[t] = _mm512_fmadd_ps(amx_f16x16(rec + amx_quant_bytes(type) + 32), _mm512_set1_ps(j->xs[xi]), mt[t]);
        }
    }
    amx_finish(type, T, j, g, t0, nr, acc, mt);
}

// The 16 x 16 int32 block sums of one block (C, stored at c) into the accumulators.
static inline __attribute__((always_inline)) void amx_take(const QType type, const Q8Job *j, int g, int t0, int b,
                                                           const int32_t *c, __m512 acc[AMX_ROWS]) {
    __m512 dw = amx_f16x16(amx_record(j, g, b) + amx_quant_bytes(type));
#pragma GCC unroll 16
    for (int t = 0; t < AMX_ROWS; t++) {
        const size_t xi = (size_t)(t0 + t) * j->nbp + b;
        acc[t] = amx_block_fma(_mm512_loadu_si512(c + 16 * t), j->xc[xi], dw, j->xd[xi], acc[t]);
    }
}

// The B operand of block b: the record itself (Q8_0) or its unpacked copy in bq (Q4, Q5).
static inline const uint8_t *amx_b(const QType type, const Q8Job *j, int g, int b, const uint8_t *bq) {
    return type == QTYPE_Q8_0 ? amx_record(j, g, b) : bq + (size_t)b * 512;
}

// Blocks b and b + 1: their dot products (tiles 0-2 and 3-5), the sums stored to c.
static inline __attribute__((always_inline)) void amx_pair(const QType type, const Q8Job *j, int g, const int8_t *a,
                                                           long lda, int b, const uint8_t *bq, int32_t *c) {
    _tile_loadd(1, a + (size_t)b * KCPU_QK, lda);
    _tile_loadd(2, amx_b(type, j, g, b, bq), 64);
    _tile_loadd(4, a + (size_t)(b + 1) * KCPU_QK, lda);
    _tile_loadd(5, amx_b(type, j, g, b + 1, bq), 64);
    _tile_zero(0);
    _tile_zero(3);
    _tile_dpbsud(0, 1, 2);
    _tile_dpbsud(3, 4, 5);
    _tile_stored(0, c, 64);
    _tile_stored(3, c + 256, 64);
}

// 16 token rows against a group: per block one tdpbsud of K = 32 (A: the 16 activation rows'
// block, B: the record unpacked to [8][16][4] u8), its 16 x 16 int32 sums stored and taken into
// the float accumulators row by row, in block order. Software-pipelined by pairs of blocks:
// pair p + 1's dot products are issued before pair p's sums are read back (cbuf: 2 x 2 KiB),
// so the tiles' latency and the stores' round trip overlap the float work.
static inline __attribute__((always_inline)) void amx_tile(const QType type, const Q8Job *j, int g, int t0, int nr,
                                                           int32_t *cbuf, const uint8_t *bq) {
    __m512 acc[AMX_ROWS];
#pragma GCC unroll 16
    for (int t = 0; t < AMX_ROWS; t++) acc[t] = _mm512_setzero_ps();
    const long lda = (long)j->nbp * KCPU_QK;
    const int8_t *a = j->xq + (size_t)t0 * j->nbp * KCPU_QK;
    const int pairs = j->nb / 2;
    for (int p = 0; p <= pairs; p++) {
        if (p < pairs) amx_pair(type, j, g, a, lda, 2 * p, bq, cbuf + 512 * (p & 1));
        if (p > 0) {
            const int32_t *c = cbuf + 512 * ((p - 1) & 1);
            amx_take(type, j, g, t0, 2 * p - 2, c, acc);
            amx_take(type, j, g, t0, 2 * p - 1, c + 256, acc);
        }
    }
    if (j->nb % 2) {
        const int b = j->nb - 1;
        _tile_loadd(1, a + (size_t)b * KCPU_QK, lda);
        _tile_loadd(2, amx_b(type, j, g, b, bq), 64);
        _tile_zero(0);
        _tile_dpbsud(0, 1, 2);
        _tile_stored(0, cbuf, 64);
        amx_take(type, j, g, t0, b, cbuf, acc);
    }
    amx_finish(type, AMX_ROWS, j, g, t0, nr, acc, NULL);
}

// Palette 1; tmm0, tmm3: C, 16 rows x 16 int32; tmm1, tmm4: A, 16 rows x k bytes; tmm2, tmm5:
// B, k / 4 rows x 64 bytes. Each thread configures its own tiles (the state is per thread).
void kcpu_amx_config(int k) {
    struct {
        uint8_t palette, start_row, reserved[14];
        uint16_t colsb[16];
        uint8_t rows[16];
    } cfg = {.palette = 1,
             .colsb = {64, (uint16_t)k, 64, 64, (uint16_t)k, 64},
             .rows = {16, 16, (uint8_t)(k / 4), 16, 16, (uint8_t)(k / 4)}};
    // gcc does not see ldtilecfg read the struct and drops the stores of colsb and rows (found
    // when this moved out of line): make it materialize every byte first
    __asm__ volatile("" : : "m"(cfg) : "memory");
    _tile_loadconfig(&cfg);
}

// buf: the thread's buffer, 4 KiB of int32 sums then the group's Q4 / Q5 records unpacked (512
// bytes a block: init.c sizes it), written once per group for all its token tiles.
static inline __attribute__((always_inline)) void amx_rows(const QType type, const Q8Job *j, int r_lo, int r_hi,
                                                           int t_lo, int t_hi, float *buf) {
    int32_t *cbuf = (int32_t *)buf;
    uint8_t *bq = (uint8_t *)(buf + 1024);
    const bool tiles = t_hi - t_lo >= AMX_ROWS;
    if (tiles) kcpu_amx_config(KCPU_QK);
    for (int r = r_lo; r < r_hi; r += AMX_ROWS) {
        const int g = r / AMX_ROWS, nr = MIN(AMX_ROWS, j->rows - r);
        if (tiles && type != QTYPE_Q8_0)
            for (int b = 0; b < j->nb; b++) {
                __m512i w[8];
                const uint8_t *rec = amx_record(j, g, b);
                for (int o = 0; o < (int)kcpu_amx_record_bytes(type); o += 64)
                    _mm_prefetch((const char *)rec + Q8_PREFETCH_BYTES + o, _MM_HINT_T0);
                amx_unpack(type, rec, w);
                for (int k = 0; k < 8; k++) _mm512_storeu_si512(bq + (size_t)b * 512 + 64 * k, w[k]);
            }
        int t = t_lo;
        for (; t + AMX_ROWS <= t_hi; t += AMX_ROWS) amx_tile(type, j, g, t, nr, cbuf, bq);
        for (; t + 4 <= t_hi; t += 4) amx_vnni(type, 4, j, g, t, nr);
        switch (t_hi - t) { // the rest in one pass over the group's records
        case 3: amx_vnni(type, 3, j, g, t, nr); break;
        case 2: amx_vnni(type, 2, j, g, t, nr); break;
        case 1: amx_vnni(type, 1, j, g, t, nr); break;
        }
    }
    // Back to the init state: tile data in use makes every context switch save and restore
    // 8 KiB more, and decode, which follows a prefill on the same threads, uses no tiles.
    if (tiles) _tile_release();
}

void kcpu_amx_run(const Q8Job *j, int r_lo, int r_hi, int t_lo, int t_hi, float *m) {
    CHECK(r_lo % AMX_ROWS == 0, "row share %d..%d", r_lo, r_hi);
    switch (j->type) {
    case QTYPE_Q4_0: amx_rows(QTYPE_Q4_0, j, r_lo, r_hi, t_lo, t_hi, m); break;
    case QTYPE_Q4_1: amx_rows(QTYPE_Q4_1, j, r_lo, r_hi, t_lo, t_hi, m); break;
    case QTYPE_Q5_0: amx_rows(QTYPE_Q5_0, j, r_lo, r_hi, t_lo, t_hi, m); break;
    case QTYPE_Q5_1: amx_rows(QTYPE_Q5_1, j, r_lo, r_hi, t_lo, t_hi, m); break;
    case QTYPE_Q8_0: amx_rows(QTYPE_Q8_0, j, r_lo, r_hi, t_lo, t_hi, m); break;
    case QTYPE_IQ4_NL: amx_rows(QTYPE_IQ4_NL, j, r_lo, r_hi, t_lo, t_hi, m); break;
    default: DIE("no AMX kernel for %s", qtype_name(j->type));
    }
}

#pragma GCC pop_options
#else
void kcpu_amx_run(const Q8Job *j, int r_lo, int r_hi, int t_lo, int t_hi, float *m) {
    (void)j, (void)r_lo, (void)r_hi, (void)t_lo, (void)t_hi, (void)m;
    DIE("AMX kernels are not compiled into this build (clang or not x86-64)");
}
#endif
