// matmul.c: k_matmul, out = x · Wᵀ, dispatched on the weight's stored type.
//
//   Q4_0 Q4_1 Q8_0   integer dots on the stored blocks against 16-bit activations (matmul_q.c)
//                    or, with k_set_activations(K_ACT_INT8), 8-bit ones (matmul_q8.c)
//   Q5_0 Q5_1 IQ4_NL with K_ACT_INT8 as Q4_0 / Q4_1 / Q8_0 (matmul_q8.c); with K_ACT_INT16 as
//                    below
//   Q2_K .. Q6_K     with K_ACT_INT8, integer dots against 8-bit activations per 256 (matmul_k8.c);
//                    with K_ACT_INT16 dequantized rows as below
//   IQ4_XS           as the K-quants on the amx path (repacked) and the scalar one, else as below
//   (K_ACT_AUTO: every quantized type's int8, except Q4_0 Q4_1 Q8_0's int16 off the amx path;
//   k_act_int8)
//   F32 F16          float dots, F16 converted in registers
//   anything else    each weight row dequantized once into the thread's buffer (dequant_row),
//                    then float dots with every token row: correct, not fast
//
// Work is split over weight rows, a contiguous range per thread; a row's dot products with
// all token rows are computed by that thread in a fixed order, so results are batch-invariant.
#include <omp.h>

#include "kernels/cpu/cpu.h"

void kcpu_matmul_q(const KCpu *kc, float *out, const float *x, const QMatrix *w, int n_tokens);
void kcpu_matmul_q8(const KCpu *kc, float *out, const float *x, const QMatrix *w, int n_tokens);
void kcpu_matmul_k8(const KCpu *kc, float *out, const float *x, const QMatrix *w, int n_tokens);

// Process-wide, set at start-up (and by tests between ops), read by every rank's thread.
static int cpu_activations = K_ACT_INT16;

void k_set_activations(KActivations a) {
    CHECK(a == K_ACT_INT16 || a == K_ACT_INT8 || a == K_ACT_AUTO, "activation precision %d", (int)a);
    __atomic_store_n(&cpu_activations, (int)a, __ATOMIC_RELEASE);
}

KActivations k_activations(void) {
    return (KActivations)__atomic_load_n(&cpu_activations, __ATOMIC_ACQUIRE);
}

static bool q16_type(QType t) { return t == QTYPE_Q4_0 || t == QTYPE_Q4_1 || t == QTYPE_Q8_0; }

bool k_act_int8(QType t) {
    KActivations a = k_activations();
    if (a != K_ACT_AUTO) return a == K_ACT_INT8;
    return !q16_type(t) || strcmp(k_int8_path(), "amx") == 0;
}

float kcpu_dot_f32(const float *a, const float *b, int n) {
#if defined(KCPU_AVX512)
    __m512 acc = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc);
    }
    return kcpu_hsum512(acc);
#elif defined(KCPU_AVX2)
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    float s = kcpu_hsum256(acc);
    for (; i < n; i++) s = fmaf(a[i], b[i], s);
    return s;
#else
    float s = 0.0f;
    for (int i = 0; i < n; i++) s = fmaf(a[i], b[i], s);
    return s;
#endif
}

void kcpu_q_drive(const KCpu *kc, const KcpuQDrive *d, const float *x, int n_tokens) {
    int nth = MIN(kc->n_threads, MAX(1, d->rows / 16));
    if (n_tokens <= 2)
        for (int t = 0; t < n_tokens; t++) d->quant_row(d->job, x, t);
#pragma omp parallel num_threads(nth)
    {
        int tid = omp_get_thread_num(), n = omp_get_num_threads();
        if (n_tokens > 2) {
            int lo, hi;
            kcpu_split(n_tokens, tid, n, &lo, &hi);
            for (int t = lo; t < hi; t++) d->quant_row(d->job, x, t);
#pragma omp barrier
        }
        int rt = d->row_tile ? d->row_tile : 4, tiles = (d->rows + rt - 1) / rt, lo, hi;
        kcpu_split(tiles, tid, n, &lo, &hi);
        int r_lo = lo * rt, r_hi = MIN(d->rows, hi * rt);
        size_t head = MIN(d->prefetch_head, (size_t)(r_hi - r_lo) * d->row_bytes);
        for (size_t o = 0; o < head; o += 64) __builtin_prefetch(d->w + (size_t)r_lo * d->row_bytes + o, 0, 3);
        for (int t0 = 0; t0 < n_tokens; t0 += d->token_chunk)
            d->run(d->job, r_lo, r_hi, t0, MIN(n_tokens, t0 + d->token_chunk), kcpu_thread_buf(kc, tid));
    }
}

// ---- F32 and F16 weights: R weight rows x T token rows per tile, 16 columns a step

typedef struct {
    QType type;
    const uint8_t *w;
    size_t row_bytes;
    const float *x;
    int cols;
    float *out;
    int ldo;
    const KCpu *kc; // the caller's context (its threads' buffers)
} FJob;

#if defined(KCPU_AVX512)
#define FT_R 4
#define FT_T 4
#define F_PREFETCH_BYTES 16384

static inline __attribute__((always_inline)) __m512 fload_w(const QType type, const uint8_t *row, int c,
                                                            __mmask16 m) {
    if (type == QTYPE_F16) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, row + (size_t)c * 2));
    return _mm512_maskz_loadu_ps(m, row + (size_t)c * 4);
}

// first: the first tile on these rows in the token chunk, which streams them from memory
// (prefetching ahead as matmul_q.c does).
static inline __attribute__((always_inline)) void ftile(const QType type, const int R, const int T,
                                                        const FJob *j, int r0, int t0, bool first) {
    __m512 acc[FT_R][FT_T];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) acc[r][t] = _mm512_setzero_ps();
    const int es = type == QTYPE_F16 ? 2 : 4, pf_step = R * 16 * es;
    const char *pf = (const char *)j->w + (size_t)r0 * j->row_bytes + F_PREFETCH_BYTES;
    for (int c = 0; c < j->cols; c += 16) {
        if (first)
            for (int k = 0; k < pf_step; k += 64) _mm_prefetch(pf + (size_t)(c / 16) * pf_step + k, _MM_HINT_T0);
        __mmask16 m = j->cols - c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (j->cols - c)) - 1);
        __m512 wv[FT_R];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) wv[r] = fload_w(type, j->w + (size_t)(r0 + r) * j->row_bytes, c, m);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            __m512 xv = _mm512_maskz_loadu_ps(m, j->x + (size_t)(t0 + t) * j->cols + c);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) j->out[(size_t)(t0 + t) * j->ldo + r0 + r] = kcpu_hsum512(acc[r][t]);
}

static inline __attribute__((always_inline)) void fjob_run_type(const QType type, const FJob *j, int r_lo,
                                                                int r_hi, int t_lo, int t_hi) {
    int r = r_lo;
    for (; r + FT_R <= r_hi; r += FT_R) {
        int t = t_lo;
        for (; t + FT_T <= t_hi; t += FT_T) ftile(type, FT_R, FT_T, j, r, t, t == t_lo);
        for (; t < t_hi; t++) ftile(type, FT_R, 1, j, r, t, t == t_lo);
    }
    for (; r < r_hi; r++)
        for (int t = t_lo; t < t_hi; t++) ftile(type, 1, 1, j, r, t, t == t_lo);
}

static void fjob_run(const FJob *j, int r_lo, int r_hi, int t_lo, int t_hi) {
    if (j->type == QTYPE_F16) fjob_run_type(QTYPE_F16, j, r_lo, r_hi, t_lo, t_hi);
    else fjob_run_type(QTYPE_F32, j, r_lo, r_hi, t_lo, t_hi);
}
#else
static void fjob_run(const FJob *j, int r_lo, int r_hi, int t_lo, int t_hi) {
    float *wrow = kcpu_thread_buf(j->kc, omp_get_thread_num());
    for (int r = r_lo; r < r_hi; r++) {
        const uint8_t *row = j->w + (size_t)r * j->row_bytes;
        const float *wr = (const float *)row;
        if (j->type == QTYPE_F16) {
            for (int c = 0; c < j->cols; c++) wrow[c] = kcpu_h2f(kcpu_load_u16(row + 2 * (size_t)c));
            wr = wrow;
        }
        for (int t = t_lo; t < t_hi; t++)
            j->out[(size_t)t * j->ldo + r] = kcpu_dot_f32(wr, j->x + (size_t)t * j->cols, j->cols);
    }
}
#endif

#define F_TOKEN_CHUNK 32

static void matmul_float(const KCpu *kc, float *out, const float *x, const QMatrix *w, int n_tokens) {
    FJob j = {w->type, w->data, qtype_row_size(w->type, w->cols), x, (int)w->cols, out, (int)w->rows, kc};
    int rows = (int)w->rows;
    int nth = MIN(kc->n_threads, MAX(1, rows / 16));
#pragma omp parallel num_threads(nth)
    {
        int tiles = (rows + 3) / 4, lo, hi;
        kcpu_split(tiles, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
        int r_lo = lo * 4, r_hi = MIN(rows, hi * 4);
        for (int t0 = 0; t0 < n_tokens; t0 += F_TOKEN_CHUNK)
            fjob_run(&j, r_lo, r_hi, t0, MIN(n_tokens, t0 + F_TOKEN_CHUNK));
    }
}

// ---- any other type dequant_row can read
static void matmul_dequant(const KCpu *kc, float *out, const float *x, const QMatrix *w, int n_tokens) {
    CHECK(qtype_dequant_supported(w->type), "no matmul for %s weights", qtype_name(w->type));
    size_t row_bytes = qtype_row_size(w->type, w->cols);
    int rows = (int)w->rows, cols = (int)w->cols;
    int nth = MIN(kc->n_threads, MAX(1, rows / 16));
#pragma omp parallel num_threads(nth)
    {
        int tid = omp_get_thread_num(), lo, hi;
        kcpu_split(rows, tid, omp_get_num_threads(), &lo, &hi);
        float *wrow = kcpu_thread_buf(kc, tid);
        for (int r = lo; r < hi; r++) {
            dequant_row(w->type, (const uint8_t *)w->data + (size_t)r * row_bytes, wrow, cols);
            for (int t = 0; t < n_tokens; t++)
                out[(size_t)t * rows + r] = kcpu_dot_f32(wrow, x + (size_t)t * cols, cols);
        }
    }
}

void k_matmul(float *out, const float *x, const QMatrix *w, int n_tokens) {
    if (n_tokens <= 0) return;
    const KCpu *kc = kcpu_ctx(); // the caller's: the OpenMP workers below are other threads
    kcpu_check_fits(kc, n_tokens, (int)w->cols);
    switch (w->type) {
    case QTYPE_Q4_0:
    case QTYPE_Q4_1:
    case QTYPE_Q8_0:
    case QTYPE_Q5_0:
    case QTYPE_Q5_1:
    case QTYPE_IQ4_NL:
    case QTYPE_Q2_K:
    case QTYPE_Q3_K:
    case QTYPE_Q4_K:
    case QTYPE_Q5_K:
    case QTYPE_Q6_K: {
        bool kq = qtype_block(w->type) == QK_K, q16 = q16_type(w->type);
        if (k_act_int8(w->type)) (kq ? kcpu_matmul_k8 : kcpu_matmul_q8)(kc, out, x, w, n_tokens);
        else if (!q16) matmul_dequant(kc, out, x, w, n_tokens);
        else kcpu_matmul_q(kc, out, x, w, n_tokens);
        break;
    }
    case QTYPE_IQ4_XS: // its table values + 128 overflow the VNNI K kernels' vpmaddubsw: the AMX
                       // kernels on the repacked copy, or the scalar reference; else dequantized
        if (k_act_int8(w->type) && ((w->pack && !strcmp(k_int8_path(), "amx")) || !strcmp(k_int8_path(), "scalar")))
            kcpu_matmul_k8(kc, out, x, w, n_tokens);
        else matmul_dequant(kc, out, x, w, n_tokens);
        break;
    case QTYPE_F32:
    case QTYPE_F16: matmul_float(kc, out, x, w, n_tokens); break;
    default: matmul_dequant(kc, out, x, w, n_tokens); break;
    }
}
