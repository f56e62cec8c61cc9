// attention.c: paged causal attention over a varlen batch, with GQA.
//
// Query row t of sequence s at position p reads K and V of positions lo..p of s through its
// block table (lo = 0, or p - window + 1 with a sliding window: the keys before it are never
// read, so their blocks may already be reused by another sequence); the rows of this step were
// written there by k_rope_kv_write. One task is up to ATT_MAX_ROWS consecutive rows of one
// sequence and one KV head: the rows' G = n_heads / n_kv_heads query heads each walk the
// context together, so each K and V row is read (and converted to f32) once for all R · G of
// them: once for a decode row's 3 heads, once for the 5 rows of a verification step of
// speculative decoding instead of 5 times, once per 32 rows of a prefill. The softmax is online
// (running max and sum, rescaled per chunk) in f32.
//
// Chunks are 16 positions aligned to position 0 (a window's first chunk masks the positions
// before lo), every step inside a chunk runs in a fixed order, and each row of a task takes its
// own keys of a chunk only, so a row's output depends only on its query, its context and its
// position: never on the other rows in the batch, on how they are grouped into tasks or on how
// the tasks are split across threads.
//
// Measured (SmolLM2 shapes, F16 KV, 2 threads, a 1,700-token context, 30 layers; Xeon with
// AVX-512): 1 row 3.0 ms (3.2 with a task per row), 5 rows 8.1 ms (10.3), 8 rows 10.7 ms
// (15.3); a 512-token prefill of the whole model 1.24x the tokens per second.
//
// A decode row's context streams from memory, scattered over the cache blocks: each task
// prefetches the K and V rows ATT_PREFETCH_AHEAD chunks ahead into L2. Measured with 30 layers'
// caches from memory at a 1,900-token context (bench/bench_kernels.c, AMD EPYC Zen 4, 2 vCPUs,
// medians of 3), against the previous one chunk ahead into L1, which ran out of the core's fill
// buffers: 1 row 10.3 -> 5.8 ms on 1 thread, 8.8 -> 3.9 on 2; 5 rows 20.5 -> 16.2 on 1 thread.
//
// KV dtype: both are supported; KV_F16 is the one to use. A decode row streams its context
// from memory, and F16 halves that: with 30 layers of a 4096-token context (SmolLM2 shapes,
// 1 thread) 0.26 ms a layer against 0.49 for F32. In a 512-token prefill the context sits in
// cache and the conversion costs a little: 5.6 ms a layer against 5.3.
#include <omp.h>

#include "kernels/cpu/cpu.h"

#define ATT_CHUNK 16
#define ATT_MAX_GROUP 64
#define ATT_MAX_ROWS 32 // query rows of one sequence per task (16 and 32 measured 2-4% faster than 8 in a prefill)
#define ATT_MAX_QH (ATT_MAX_ROWS * ATT_MAX_GROUP)
#define ATT_PREFETCH_MAX_ROWS 8 // a sequence with at most this many query rows is decoding (or verifying)
#define ATT_PREFETCH_AHEAD 4    // chunks (3, 4 and 6 measured alike; 1 and 2 slower)

// The first key position a row with n_ctx keys reads: the window's first, or 0.
static inline int att_first_key(const AttnOpt *o, int n_ctx) {
    return o->window > 0 ? MAX(0, n_ctx - o->window) : 0;
}

// The sequence that owns query row t: the last s with query_start[s] <= t.
static int seq_of_row(const Batch *b, int t) {
    int lo = 0, hi = b->n_seqs - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (b->query_start[mid] <= t) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

static inline const void *kv_row(const KVLayer *c, const void *base, int slot, int g) {
    size_t off = ((size_t)slot * c->n_kv_heads + g) * c->head_dim;
    return c->dtype == KV_F32 ? (const void *)((const float *)base + off)
                              : (const void *)((const uint16_t *)base + off);
}

// K and V rows of positions c0 .. c0+n-1 of KV head g, through the block table (one division
// per chunk: the slot arithmetic otherwise costs as much as the dot products). Positions before
// lo (the window's first, inside its first chunk) get lo's rows: their weights are 0, and the
// blocks that held them may be gone from the table.
static inline void chunk_rows(const KVLayer *c, const int *bt, int c0, int n, int lo, int g, const void **kp,
                              const void **vp) {
    int j0 = MAX(0, lo - c0), p0 = c0 + j0;
    int bs = c->block_size, bi = p0 / bs, off = p0 - bi * bs;
    for (int j = j0; j < n; j++) {
        int slot = bt[bi] * bs + off;
        kp[j] = kv_row(c, c->k, slot, g);
        vp[j] = kv_row(c, c->v, slot, g);
        if (++off == bs) off = 0, bi++;
    }
    for (int j = 0; j < j0; j++) kp[j] = kp[j0], vp[j] = vp[j0];
}

#if defined(KCPU_AVX512)
static inline __attribute__((always_inline)) __m512 kv_load16(const KVType dt, const void *row, int d) {
    if (dt == KV_F16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)row + d)));
    return _mm512_loadu_ps((const float *)row + d);
}

// Lane j = sum of the 16 lanes of v[j]: a transposing reduction tree, cheaper than 16
// separate horizontal sums.
static inline __m512 hsum16x16(__m512 v[16]) {
    __m512 a[8], u[4];
    for (int i = 0; i < 8; i++)
        a[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < 4; i++) {
        __m512d x = _mm512_castps_pd(a[2 * i]), y = _mm512_castps_pd(a[2 * i + 1]);
        u[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
    // u[i], 128-bit lane L, element e: the part of v[4i + e] in lane L. Sum the lanes.
    __m512 w01 = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], 0x88), _mm512_shuffle_f32x4(u[0], u[1], 0xdd));
    __m512 w23 = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], 0x88), _mm512_shuffle_f32x4(u[2], u[3], 0xdd));
    return _mm512_add_ps(_mm512_shuffle_f32x4(w01, w23, 0x88), _mm512_shuffle_f32x4(w01, w23, 0xdd));
}

// cap · tanh(x / cap) lane by lane (Gemma 2's attention-logit soft-capping; rare enough that
// libm's tanhf, the scalar path's, is the right cost for bitwise agreement between the paths)
static inline __m512 softcap16(__m512 x, float cap) {
    float v[16];
    _mm512_storeu_ps(v, x);
    for (int i = 0; i < 16; i++) v[i] = cap * tanhf(v[i] / cap);
    return _mm512_loadu_ps(v);
}

// Scores of one query head against the chunk's keys: lane j = q·k_j (0 past n). NV = head_dim
// / 16 when known at compile time (q then lives in registers and each key's dot runs as two
// independent chains), 0 for any multiple of 16.
static inline __attribute__((always_inline)) __m512 qk16(const KVType dt, const int NV, const float *qh, int hd,
                                                         const void *const *kp, int n) {
    __m512 part[ATT_CHUNK];
    if (NV) {
        __m512 qv[8];
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) qv[v] = _mm512_loadu_ps(qh + 16 * v);
#pragma GCC unroll 16
        for (int j = 0; j < ATT_CHUNK; j++) {
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
            if (j < n) {
#pragma GCC unroll 8
                for (int v = 0; v < NV; v += 2) {
                    a0 = _mm512_fmadd_ps(qv[v], kv_load16(dt, kp[j], 16 * v), a0);
                    if (v + 1 < NV) a1 = _mm512_fmadd_ps(qv[v + 1], kv_load16(dt, kp[j], 16 * v + 16), a1);
                }
            }
            part[j] = _mm512_add_ps(a0, a1);
        }
    } else {
        for (int j = 0; j < ATT_CHUNK; j++) {
            __m512 a = _mm512_setzero_ps();
            if (j < n)
                for (int d = 0; d < hd; d += 16) a = _mm512_fmadd_ps(_mm512_loadu_ps(qh + d), kv_load16(dt, kp[j], d), a);
            part[j] = a;
        }
    }
    return hsum16x16(part);
}

// acc[h] = acc[h] · corr[h] + Σ_j p[h][j] · v_j for HG heads at once, NV vectors each, all in
// registers: each V row is loaded (and converted) once for the HG heads, and the HG · NV
// accumulators are independent chains.
static inline __attribute__((always_inline)) void pv_group(const KVType dt, const int NV, const int HG, float *acc,
                                                           int hd, const float *pr, const float *corr,
                                                           const void *const *vp, int n) {
    __m512 a[4][8];
#pragma GCC unroll 4
    for (int h = 0; h < HG; h++)
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++)
            a[h][v] = _mm512_mul_ps(_mm512_loadu_ps(acc + (size_t)h * hd + 16 * v), _mm512_set1_ps(corr[h]));
    for (int j = 0; j < n; j++) {
        __m512 vv[8];
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) vv[v] = kv_load16(dt, vp[j], 16 * v);
#pragma GCC unroll 4
        for (int h = 0; h < HG; h++) {
            __m512 pj = _mm512_set1_ps(pr[h * ATT_CHUNK + j]);
#pragma GCC unroll 8
            for (int v = 0; v < NV; v++) a[h][v] = _mm512_fmadd_ps(pj, vv[v], a[h][v]);
        }
    }
#pragma GCC unroll 4
    for (int h = 0; h < HG; h++)
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) _mm512_storeu_ps(acc + (size_t)h * hd + 16 * v, a[h][v]);
}

// The same for one head of any head_dim that is a multiple of 16, 64 floats at a time.
static inline __attribute__((always_inline)) void pv_head(const KVType dt, float *ah, int hd, const float *ph,
                                                          float corr, const void *const *vp, int n) {
    __m512 cv = _mm512_set1_ps(corr);
    int d = 0;
    for (; d + 64 <= hd; d += 64) {
        __m512 a0 = _mm512_mul_ps(_mm512_loadu_ps(ah + d), cv), a1 = _mm512_mul_ps(_mm512_loadu_ps(ah + d + 16), cv);
        __m512 a2 = _mm512_mul_ps(_mm512_loadu_ps(ah + d + 32), cv), a3 = _mm512_mul_ps(_mm512_loadu_ps(ah + d + 48), cv);
        for (int j = 0; j < n; j++) {
            __m512 pj = _mm512_set1_ps(ph[j]);
            a0 = _mm512_fmadd_ps(pj, kv_load16(dt, vp[j], d), a0);
            a1 = _mm512_fmadd_ps(pj, kv_load16(dt, vp[j], d + 16), a1);
            a2 = _mm512_fmadd_ps(pj, kv_load16(dt, vp[j], d + 32), a2);
            a3 = _mm512_fmadd_ps(pj, kv_load16(dt, vp[j], d + 48), a3);
        }
        _mm512_storeu_ps(ah + d, a0), _mm512_storeu_ps(ah + d + 16, a1);
        _mm512_storeu_ps(ah + d + 32, a2), _mm512_storeu_ps(ah + d + 48, a3);
    }
    for (; d < hd; d += 16) {
        __m512 a = _mm512_mul_ps(_mm512_loadu_ps(ah + d), cv);
        for (int j = 0; j < n; j++) a = _mm512_fmadd_ps(_mm512_set1_ps(ph[j]), kv_load16(dt, vp[j], d), a);
        _mm512_storeu_ps(ah + d, a);
    }
}

// One task: rows [t0, t1) of sequence s (consecutive positions: a decode row, a verification
// step's rows, a slice of a prefill chunk) and the G query heads of each that share KV head g.
// The task walks the union of the rows' contexts chunk by chunk; each chunk's K and V rows are
// read, and converted from F16, once into kf / vf for all R · G query heads. Each row then takes
// from the chunk exactly the keys it would take alone (its own count n and window start), with
// the same operations in the same order, so its result does not depend on the task's other rows.
// Per chunk and row: the scores and softmax update of every head first (independent of each
// other, so they overlap), then the weighted V sums.
static inline __attribute__((always_inline)) void att_task_avx512(const KVType dt, const int NV, float *out,
                                                                  const float *q, const KVLayer *c, const Batch *b,
                                                                  int s, int t0, int t1, int g, int n_heads,
                                                                  const AttnOpt *o, float *buf) {
    const int hd = c->head_dim, G = n_heads / c->n_kv_heads, R = t1 - t0, QH = R * G;
    const float scale = o->scale;
    const int *bt = b->block_tables + (size_t)s * b->max_blocks_per_seq;
    const bool prefetch = b->query_start[s + 1] - b->query_start[s] <= ATT_PREFETCH_MAX_ROWS;
    // [R·G][hd] accumulators, [R·G][16] probabilities, then the chunk's K and V rows in f32
    float *acc = buf, *pr = buf + (size_t)QH * hd, *kf = pr + (size_t)QH * ATT_CHUNK, *vf = kf + ATT_CHUNK * hd;
    float m[ATT_MAX_QH], l[ATT_MAX_QH], corr[ATT_MAX_QH];
    int n_ctx[ATT_MAX_ROWS] = {0}, lo[ATT_MAX_ROWS] = {0};
    for (int r = 0; r < R; r++) n_ctx[r] = b->positions[t0 + r] + 1, lo[r] = att_first_key(o, n_ctx[r]);
    int ctx_max = n_ctx[0], lo_min = lo[0];
    for (int r = 1; r < R; r++) ctx_max = MAX(ctx_max, n_ctx[r]), lo_min = MIN(lo_min, lo[r]);
    for (int i = 0; i < QH; i++) m[i] = -INFINITY, l[i] = 0.0f;
    memset(acc, 0, (size_t)QH * hd * sizeof(float));
    const int row_bytes = hd * (dt == KV_F16 ? 2 : 4);
    const void *kp[ATT_CHUNK], *vp[ATT_CHUNK], *kn[ATT_CHUNK], *vn[ATT_CHUNK];
    const int first = lo_min / ATT_CHUNK * ATT_CHUNK;
    chunk_rows(c, bt, first, MIN(ATT_CHUNK, ctx_max - first), lo_min, g, kn, vn);
    for (int c0 = first; c0 < ctx_max; c0 += ATT_CHUNK) {
        int n_all = MIN(ATT_CHUNK, ctx_max - c0);
        memcpy(kp, kn, sizeof(kp)), memcpy(vp, vn, sizeof(vp));
        int n_next = MIN(ATT_CHUNK, ctx_max - c0 - ATT_CHUNK);
        if (n_next > 0) chunk_rows(c, bt, c0 + ATT_CHUNK, n_next, lo_min, g, kn, vn);
        // A decode row's context comes from memory: fetch the chunk ATT_PREFETCH_AHEAD ahead
        // into L2 (see the top). The rows of a prefill chunk find their context in cache, where
        // prefetching only costs.
        int n_far = MIN(ATT_CHUNK, ctx_max - c0 - ATT_PREFETCH_AHEAD * ATT_CHUNK);
        if (n_far > 0 && prefetch) {
            const void *kf2[ATT_CHUNK], *vf2[ATT_CHUNK];
            chunk_rows(c, bt, c0 + ATT_PREFETCH_AHEAD * ATT_CHUNK, n_far, lo_min, g, kf2, vf2);
            for (int j = 0; j < n_far; j++)
                for (int o = 0; o < row_bytes; o += 64) {
                    _mm_prefetch((const char *)kf2[j] + o, _MM_HINT_T1);
                    _mm_prefetch((const char *)vf2[j] + o, _MM_HINT_T1);
                }
        }
        // The chunk in f32 (exact), read by every query head of the task. Keys before a row's
        // window (after the earliest row's) are masked out below, whatever they hold.
        const void *kx[ATT_CHUNK], *vx[ATT_CHUNK];
        for (int j = 0; j < n_all; j++) {
            if (dt == KV_F32) {
                kx[j] = kp[j], vx[j] = vp[j];
                continue;
            }
            for (int d = 0; d < hd; d += 16) {
                _mm512_storeu_ps(kf + j * hd + d, kv_load16(KV_F16, kp[j], d));
                _mm512_storeu_ps(vf + j * hd + d, kv_load16(KV_F16, vp[j], d));
            }
            kx[j] = kf + j * hd, vx[j] = vf + j * hd;
        }
        for (int r = 0; r < R; r++) {
            const int n = MIN(ATT_CHUNK, n_ctx[r] - c0);
            if (n <= 0 || c0 + ATT_CHUNK <= lo[r]) continue; // past this row's context, before its window
            // positions before lo (in the window's first chunk) are masked out like those past n
            __mmask16 valid = (__mmask16)(((1u << n) - 1) & ~((1u << MAX(0, lo[r] - c0)) - 1));
            const float *qr = q + ((size_t)(t0 + r) * n_heads + (size_t)g * G) * hd;
            float *ar = acc + (size_t)r * G * hd, *prr = pr + (size_t)r * G * ATT_CHUNK, *cr = corr + r * G;
            float *mr = m + r * G, *lr = l + r * G;
            for (int h = 0; h < G; h++) {
                __m512 sc = _mm512_mul_ps(qk16(KV_F32, NV, qr + (size_t)h * hd, hd, kx, n), _mm512_set1_ps(scale));
                if (o->softcap > 0) sc = softcap16(sc, o->softcap);
                float mnew = kcpu_maxf(mr[h], _mm512_mask_reduce_max_ps(valid, sc));
                cr[h] = kcpu_expf(mr[h] - mnew);
                __m512 p = _mm512_maskz_mov_ps(valid, kcpu_exp512(_mm512_sub_ps(sc, _mm512_set1_ps(mnew))));
                lr[h] = lr[h] * cr[h] + kcpu_hsum512(p);
                mr[h] = mnew;
                _mm512_storeu_ps(prr + h * ATT_CHUNK, p);
            }
            int h = 0;
            if (NV == 4)
                for (; h + 4 <= G; h += 4)
                    pv_group(KV_F32, 4, 4, ar + (size_t)h * hd, hd, prr + h * ATT_CHUNK, cr + h, vx, n);
            if (NV == 4 && G - h == 3) // GQA 3 (SmolLM2): one pass, 12 independent chains
                pv_group(KV_F32, 4, 3, ar + (size_t)h * hd, hd, prr + h * ATT_CHUNK, cr + h, vx, n), h += 3;
            if (NV == 4 || NV == 8)
                for (; h + 2 <= G; h += 2)
                    pv_group(KV_F32, NV, 2, ar + (size_t)h * hd, hd, prr + h * ATT_CHUNK, cr + h, vx, n);
            if (NV)
                for (; h < G; h++) pv_group(KV_F32, NV, 1, ar + (size_t)h * hd, hd, prr + h * ATT_CHUNK, cr + h, vx, n);
            for (; h < G; h++) pv_head(KV_F32, ar + (size_t)h * hd, hd, prr + h * ATT_CHUNK, cr[h], vx, n);
        }
    }
    for (int r = 0; r < R; r++) {
        float *og = out + ((size_t)(t0 + r) * n_heads + (size_t)g * G) * hd;
        for (int h = 0; h < G; h++) {
            const float *a = acc + ((size_t)r * G + h) * hd;
            __m512 inv = _mm512_set1_ps(1.0f / l[r * G + h]);
            for (int d = 0; d < hd; d += 16)
                _mm512_storeu_ps(og + (size_t)h * hd + d, _mm512_mul_ps(_mm512_loadu_ps(a + d), inv));
        }
    }
}
#endif

// The portable path (also any head_dim that is not a multiple of 16): the same chunked online
// softmax, one element at a time.
static inline float kv_get(const KVLayer *c, const void *row, int d) {
    return c->dtype == KV_F32 ? ((const float *)row)[d] : kcpu_h2f(((const uint16_t *)row)[d]);
}

static void att_task_scalar(float *out, const float *q, const KVLayer *c, const Batch *b, int t, int h0, int G,
                            int n_heads, const AttnOpt *o, float *buf) {
    const int hd = c->head_dim, g = h0 / (n_heads / c->n_kv_heads);
    const int s = seq_of_row(b, t), n_ctx = b->positions[t] + 1, lo = att_first_key(o, n_ctx);
    const int *bt = b->block_tables + (size_t)s * b->max_blocks_per_seq;
    float *acc = buf, *pr = buf + (size_t)G * hd;
    float m[ATT_MAX_GROUP], l[ATT_MAX_GROUP];
    const float *qg = q + ((size_t)t * n_heads + h0) * hd;
    for (int h = 0; h < G; h++) m[h] = -INFINITY, l[h] = 0.0f;
    memset(acc, 0, (size_t)G * hd * sizeof(float));
    for (int c0 = lo / ATT_CHUNK * ATT_CHUNK; c0 < n_ctx; c0 += ATT_CHUNK) {
        int n = MIN(ATT_CHUNK, n_ctx - c0), j0 = MAX(0, lo - c0); // keys j < j0: before the window
        const void *kp[ATT_CHUNK], *vp[ATT_CHUNK];
        chunk_rows(c, bt, c0, n, lo, g, kp, vp);
        for (int h = 0; h < G; h++) {
            const float *qh = qg + (size_t)h * hd;
            float *ph = pr + h * ATT_CHUNK, mx = -INFINITY;
            for (int j = 0; j < n; j++) {
                float dot = 0.0f;
                for (int d = 0; d < hd; d++) dot += qh[d] * kv_get(c, kp[j], d);
                ph[j] = dot * o->scale;
                if (o->softcap > 0) ph[j] = o->softcap * tanhf(ph[j] / o->softcap);
                if (j >= j0) mx = kcpu_maxf(mx, ph[j]);
            }
            float mnew = kcpu_maxf(m[h], mx), corr = kcpu_expf(m[h] - mnew), sum = 0.0f;
            for (int j = 0; j < n; j++) {
                ph[j] = j < j0 ? 0.0f : kcpu_expf(ph[j] - mnew);
                sum += ph[j];
            }
            l[h] = l[h] * corr + sum;
            m[h] = mnew;
            for (int d = 0; d < hd; d++) acc[(size_t)h * hd + d] *= corr;
        }
        for (int j = 0; j < n; j++)
            for (int h = 0; h < G; h++)
                for (int d = 0; d < hd; d++) acc[(size_t)h * hd + d] += pr[h * ATT_CHUNK + j] * kv_get(c, vp[j], d);
    }
    float *og = out + ((size_t)t * n_heads + h0) * hd;
    for (int h = 0; h < G; h++)
        for (int d = 0; d < hd; d++) og[(size_t)h * hd + d] = acc[(size_t)h * hd + d] / l[h];
}

// The tasks of a step with rpg rows per task: each sequence's rows in ceil(rows / rpg) groups,
// each group once per KV head.
static int att_tasks(const Batch *b, int rpg, int nkv) {
    int tasks = 0;
    for (int s = 0; s < b->n_seqs; s++) tasks += (b->query_start[s + 1] - b->query_start[s] + rpg - 1) / rpg * nkv;
    return tasks;
}

// Rows per task: at most ATT_MAX_ROWS, as many as the thread buffer holds, and fewer while the
// step would have under two tasks a thread (a verification step's 5 rows of one sequence: 2 row
// groups x 3 KV heads, not 3 tasks on 2 threads). How rows are grouped never changes a result.
static int att_rows_per_task(const KCpu *kc, const Batch *b, int n_heads, int nkv, int hd) {
    const size_t G = (size_t)(n_heads / nkv), scratch = 2 * ATT_CHUNK * (size_t)hd;
    CHECK(G * (hd + ATT_CHUNK) + scratch <= kc->thread_buf_floats, "k_init(max_cols) too small for %d heads of %d",
          n_heads, hd);
    int rpg = (int)MIN((size_t)ATT_MAX_ROWS, (kc->thread_buf_floats - scratch) / (G * (hd + ATT_CHUNK)));
    while (rpg > 1 && att_tasks(b, rpg, nkv) < 2 * kc->n_threads) rpg = (rpg + 1) / 2;
    return rpg;
}

void k_attention(float *out, const float *q, const KVLayer *cache, const Batch *b, int n_heads, const AttnOpt *o) {
    CHECK(o->scale > 0 && o->window >= 0 && o->softcap >= 0);
    const int nkv = cache->n_kv_heads, hd = cache->head_dim;
    bool groups_ok = nkv > 0 && n_heads % nkv == 0 && n_heads / nkv <= ATT_MAX_GROUP;
    CHECK(groups_ok, "%d heads, %d KV heads", n_heads, nkv);
    const KCpu *kc = kcpu_ctx(); // the caller's: the OpenMP workers below are other threads
    for (int t = 0; t < b->n_tokens; t++)
        CHECK(b->positions[t] >= 0 && b->positions[t] < b->max_blocks_per_seq * cache->block_size,
              "row %d at position %d", t, b->positions[t]);
    // A task is a few consecutive rows of one sequence and the query heads that share one KV
    // head, so each K and V row is read and converted once for all of them. (Splitting a decode
    // row's group into single heads balances 3 tasks over 2 threads better, but measured slower:
    // the K/V traffic triples.)
    const int rpg = att_rows_per_task(kc, b, n_heads, nkv, hd), G = n_heads / nkv;
    const int tasks = att_tasks(b, rpg, nkv);
#pragma omp parallel num_threads(kc->n_threads) if (tasks > 1)
    {
        int tid = omp_get_thread_num(), lo, hi;
        kcpu_split(tasks, tid, omp_get_num_threads(), &lo, &hi);
        float *buf = kcpu_thread_buf(kc, tid);
        for (int s = 0, first = 0; s < b->n_seqs && first < hi; s++) {
            const int q0 = b->query_start[s], rows = b->query_start[s + 1] - q0, ng = (rows + rpg - 1) / rpg;
            for (int k = MAX(0, lo - first); k < ng * nkv && first + k < hi; k++) {
                // KV head k / ng, group k % ng of the sequence's rows (split evenly): the groups of
                // a head side by side, so that a contiguous share of tasks mixes group sizes
                const int g = k / ng, grp = k % ng;
                const int t0 = q0 + rows * grp / ng, t1 = q0 + rows * (grp + 1) / ng;
#if defined(KCPU_AVX512)
                bool f16 = cache->dtype == KV_F16;
                if (hd == 64) {
                    if (f16) att_task_avx512(KV_F16, 4, out, q, cache, b, s, t0, t1, g, n_heads, o, buf);
                    else att_task_avx512(KV_F32, 4, out, q, cache, b, s, t0, t1, g, n_heads, o, buf);
                    continue;
                }
                if (hd == 128) {
                    if (f16) att_task_avx512(KV_F16, 8, out, q, cache, b, s, t0, t1, g, n_heads, o, buf);
                    else att_task_avx512(KV_F32, 8, out, q, cache, b, s, t0, t1, g, n_heads, o, buf);
                    continue;
                }
                if (hd % 16 == 0) {
                    if (f16) att_task_avx512(KV_F16, 0, out, q, cache, b, s, t0, t1, g, n_heads, o, buf);
                    else att_task_avx512(KV_F32, 0, out, q, cache, b, s, t0, t1, g, n_heads, o, buf);
                    continue;
                }
#endif
                for (int t = t0; t < t1; t++) att_task_scalar(out, q, cache, b, t, g * G, G, n_heads, o, buf);
            }
            first += ng * nkv;
        }
    }
}
