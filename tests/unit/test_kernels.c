// test_kernels.c: every CPU op in kernels/kernels.h against a plain reference written here
// (double accumulation, contiguous layouts), on seeded random inputs with awkward shapes, plus
// batch invariance: a row's result must be bitwise the same alone, inside a batch, and with 1
// or 2 threads.
//
// Matmul tolerances. Quantized weights (Q4_0 Q4_1 Q8_0) meet activations quantized to 16 bits
// per block of 32 (d = amax/32767), so against the float reference an output may be off by up
// to Σ_c |w_c| · amax(block of x_c) / 65534 (half a quantization step per element; the float
// rounding of x / d can add ~2^-8 of a step, hence the bound's 1% slack); we check that bound,
// and also check against a reference fed the same 16-bit activations (this file quantizes them
// its own way, the textbook way), where only float rounding is left: 2e-5 · Σ|w·x|.
// Float and dequantized paths: 2e-5 · Σ|w·x|.
#include <stdlib.h>

#include "common/common.h"
#include "kernels/kernels.h"
#include "tests/unit/test.h"

// ---- seeded random numbers (splitmix64), never exactly zero

static uint64_t rng_state;
static uint64_t rng_next(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float rng_uniform(float lo, float hi) { // in [lo, hi), never 0
    float u = (float)((rng_next() >> 40) + 0.5) / (float)(1 << 24);
    float v = lo + (hi - lo) * u;
    return v == 0.0f ? 1e-3f : v;
}
static void fill(float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = rng_uniform(lo, hi);
}

// ---- random weight matrices in a stored format

static void put_u16(uint8_t *p, uint16_t v) {
    memcpy(p, &v, 2);
}

// Random bytes of the type's layout with sane scales (fp16 values in a small range).
static void *make_weights(QType t, int64_t rows, int64_t cols) {
    size_t row_bytes = qtype_row_size(t, cols), bb = qtype_block_bytes(t);
    uint8_t *w = xmalloc(rows * row_bytes);
    for (size_t i = 0; i < rows * row_bytes; i++) w[i] = (uint8_t)rng_next();
    if (t == QTYPE_F32) {
        fill((float *)w, rows * cols, -1.0f, 1.0f);
        return w;
    }
    for (int64_t r = 0; r < rows; r++)
        for (size_t b = 0; b < row_bytes / bb; b++) {
            uint8_t *blk = w + r * row_bytes + b * bb;
            switch (t) {
            case QTYPE_F16:
            case QTYPE_BF16:
                for (size_t e = 0; e < bb; e += 2) {
                    float v = rng_uniform(-1.0f, 1.0f);
                    put_u16(blk + e, t == QTYPE_F16 ? f32_to_fp16(v) : f32_to_bf16(v));
                }
                break;
            case QTYPE_Q4_1:
                put_u16(blk + 2, f32_to_fp16(rng_uniform(-0.2f, 0.0f)));
                __attribute__((fallthrough)); // d at offset 0 like the rest
            case QTYPE_Q4_0:
            case QTYPE_Q5_0:
            case QTYPE_Q8_0: put_u16(blk, f32_to_fp16(rng_uniform(0.002f, 0.03f))); break;
            case QTYPE_Q4_K:
                put_u16(blk, f32_to_fp16(rng_uniform(0.0005f, 0.003f)));
                put_u16(blk + 2, f32_to_fp16(rng_uniform(0.0005f, 0.003f)));
                break;
            default: DIE("test has no generator for %s", qtype_name(t));
            }
        }
    return w;
}

// The textbook 16-bit block quantization of one activation row, dequantized back to float.
static void ref_act_quant(const float *x, float *xq, int n) {
    for (int b = 0; b < n; b += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b + j]));
        float d = amax / 32767.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int j = 0; j < 32; j++) xq[b + j] = (float)(int)nearbyintf(x[b + j] * id) * d;
    }
}

static bool qtype_int_path(QType t) {
    return t == QTYPE_Q4_0 || t == QTYPE_Q4_1 || t == QTYPE_Q8_0;
}

// ---- matmul against the reference

typedef struct {
    QType type;
    int rows, cols, n_tokens;
} MatmulCase;

static const MatmulCase matmul_cases[] = {
    {QTYPE_Q4_1, 576, 576, 1},    // the model's attention projections, decode
    {QTYPE_Q4_1, 192, 576, 5},    // K/V, a few rows
    {QTYPE_Q4_1, 1536, 576, 17},  // gate/up, odd token count across tiles
    {QTYPE_Q4_1, 576, 1536, 50},  // down, crosses a token chunk
    {QTYPE_Q4_1, 37, 96, 7},      // odd rows, odd block count (3)
    {QTYPE_Q4_1, 5, 32, 1},       // one block
    {QTYPE_Q4_0, 67, 160, 4},     // 5 blocks
    {QTYPE_Q4_0, 256, 576, 1},
    {QTYPE_Q8_0, 4099, 576, 2},   // a slice of the LM head, odd rows
    {QTYPE_Q8_0, 9, 224, 13},     // 7 blocks
    {QTYPE_F32, 33, 100, 6},      // columns not a multiple of 16
    {QTYPE_F32, 64, 576, 1},
    {QTYPE_F16, 31, 72, 9},
    {QTYPE_F16, 576, 576, 2},
    {QTYPE_BF16, 17, 64, 3},      // dequantize-a-row path
    {QTYPE_Q5_0, 23, 96, 5},
    {QTYPE_Q4_K, 11, 512, 4},
};

static void check_matmul_case(const MatmulCase *mc) {
    int R = mc->rows, C = mc->cols, N = mc->n_tokens;
    void *wdata = make_weights(mc->type, R, C);
    QMatrix w = {mc->type, R, C, wdata, NULL};
    float *x = xmalloc(sizeof(float) * N * C), *out = xmalloc(sizeof(float) * N * R);
    // Spread the magnitudes so block scales differ a lot within a row.
    for (int i = 0; i < N * C; i++) x[i] = rng_uniform(-1.0f, 1.0f) * ((i / 32) % 3 == 0 ? 4.0f : 0.5f);
    k_matmul(out, x, &w, N);

    size_t row_bytes = qtype_row_size(mc->type, C);
    float *wr = xmalloc(sizeof(float) * C), *xq = xmalloc(sizeof(float) * C);
    int bad = 0;
    double worst = 0.0;
    for (int t = 0; t < N && bad < 5; t++) {
        const float *xt = x + (size_t)t * C;
        bool qx = qtype_int_path(mc->type);
        if (qx) ref_act_quant(xt, xq, C);
        for (int r = 0; r < R && bad < 5; r++) {
            dequant_row(mc->type, (const uint8_t *)wdata + (size_t)r * row_bytes, wr, C);
            double ref = 0, refq = 0, mag = 0, bound = 0;
            for (int c = 0; c < C; c++) {
                ref += (double)wr[c] * xt[c];
                mag += fabs((double)wr[c] * xt[c]);
                if (qx) refq += (double)wr[c] * xq[c];
            }
            if (qx)
                for (int b = 0; b < C; b += 32) {
                    double amax = 0, wsum = 0;
                    for (int j = 0; j < 32; j++) amax = fmax(amax, fabs(xt[b + j])), wsum += fabs(wr[b + j]);
                    bound += wsum * amax / 65534.0;
                }
            double got = out[(size_t)t * R + r], tol = 2e-5 * mag + 1e-6;
            double err = fabs(got - (qx ? refq : ref));
            worst = fmax(worst, err / tol);
            if (err > tol) {
                TEST_FAIL_("%s %dx%d n=%d row %d tok %d: got %.7g want %.7g (tol %.3g)", qtype_name(mc->type),
                           R, C, N, r, t, got, qx ? refq : ref, tol);
                bad++;
            }
            if (qx && fabs(got - ref) > bound * 1.01 + tol) {
                TEST_FAIL_("%s row %d tok %d: %.7g vs float %.7g beyond the 16-bit bound %.3g", qtype_name(mc->type),
                           r, t, got, ref, bound);
                bad++;
            }
        }
    }
    free(wr), free(xq), free(x), free(out), free(wdata);
}

static void test_matmul_vs_reference(void) {
    for (size_t i = 0; i < ARRAY_LEN(matmul_cases); i++) check_matmul_case(&matmul_cases[i]);
}

// Every row of a batch must equal, bit for bit, the same row computed alone, and the batch must
// not change with the thread count.
static void test_matmul_batch_invariance(void) {
    static const QType types[] = {QTYPE_Q4_1, QTYPE_Q4_0, QTYPE_Q8_0, QTYPE_F32, QTYPE_F16, QTYPE_Q5_0};
    for (size_t i = 0; i < ARRAY_LEN(types); i++) {
        int R = 75, C = 160, N = 53; // N crosses the 48-row token chunk
        void *wd = make_weights(types[i], R, C);
        QMatrix w = {types[i], R, C, wd, NULL};
        float *x = xmalloc(sizeof(float) * N * C), *batch = xmalloc(sizeof(float) * N * R);
        float *alone = xmalloc(sizeof(float) * R), *one_thread = xmalloc(sizeof(float) * N * R);
        fill(x, (size_t)N * C, -2.0f, 2.0f);
        k_init(2, 64, 2048);
        k_matmul(batch, x, &w, N);
        int mism = 0;
        for (int t = 0; t < N; t++) {
            k_matmul(alone, x + (size_t)t * C, &w, 1);
            if (memcmp(alone, batch + (size_t)t * R, sizeof(float) * R) != 0) mism++;
        }
        // Sub-batches that start mid-way (rows land in different tile slots), of the sizes a
        // verification step of speculative decoding has (each kernel's tails: 2, 3, 4 + 1, ...).
        float *sub = xmalloc(sizeof(float) * 7 * R);
        for (int n = 2; n <= 7; n++) {
            k_matmul(sub, x + (size_t)11 * C, &w, n);
            if (memcmp(sub, batch + (size_t)11 * R, sizeof(float) * n * R) != 0) mism++;
        }
        k_init(1, 64, 2048);
        k_matmul(one_thread, x, &w, N);
        if (memcmp(one_thread, batch, sizeof(float) * N * R) != 0) mism++;
        EXPECT(mism == 0, "%s: %d rows differ", qtype_name(types[i]), mism);
        free(sub), free(wd), free(x), free(batch), free(alone), free(one_thread);
    }
    k_init(2, 64, 2048);
}

// ---- rmsnorm, add_rmsnorm

static void test_rmsnorm(void) {
    static const int dims[] = {576, 100, 7, 1536};
    for (size_t i = 0; i < ARRAY_LEN(dims); i++) {
        int D = dims[i], N = 9;
        float *x = xmalloc(sizeof(float) * N * D), *w = xmalloc(sizeof(float) * D);
        float *out = xmalloc(sizeof(float) * N * D), *res = xmalloc(sizeof(float) * N * D);
        float *delta = xmalloc(sizeof(float) * N * D), *out2 = xmalloc(sizeof(float) * N * D);
        fill(x, (size_t)N * D, -3.0f, 3.0f);
        fill(w, D, -2.0f, 2.0f);
        fill(delta, (size_t)N * D, -1.0f, 1.0f);
        memcpy(res, x, sizeof(float) * N * D);
        k_rmsnorm(out, x, w, N, D, 1e-5f);
        k_add_rmsnorm(out2, res, delta, w, N, D, 1e-5f);
        int bad = 0;
        for (int t = 0; t < N; t++) {
            double ss = 0, ss2 = 0;
            for (int c = 0; c < D; c++) {
                double s = (double)x[t * D + c] + delta[t * D + c];
                ss += (double)x[t * D + c] * x[t * D + c];
                ss2 += s * s;
            }
            double sc = 1.0 / sqrt(ss / D + 1e-5), sc2 = 1.0 / sqrt(ss2 / D + 1e-5);
            for (int c = 0; c < D; c++) {
                double s = (double)x[t * D + c] + delta[t * D + c];
                double r1 = x[t * D + c] * sc * w[c], r2 = s * sc2 * w[c];
                if (fabs(out[t * D + c] - r1) > 1e-5 * (1 + fabs(r1))) bad++;
                if (fabs(out2[t * D + c] - r2) > 1e-5 * (1 + fabs(r2))) bad++;
                if (fabs(res[t * D + c] - s) > 1e-6 * (1 + fabs(s))) bad++;
            }
        }
        EXPECT(bad == 0, "dim %d: %d values off", D, bad);
        free(x), free(w), free(out), free(res), free(delta), free(out2);
    }
}

// ---- silu_mul

// A gated MLP's inputs of n values: gate in [-span, span] with far tails at both ends (exp
// under/overflow territory), up in [-2, 2], and room for the output.
static void gated_inputs(size_t n, float span, float **g, float **u, float **o) {
    *g = xmalloc(sizeof(float) * n), *u = xmalloc(sizeof(float) * n), *o = xmalloc(sizeof(float) * n);
    fill(*g, n, -span, span);
    fill(*u, n, -2.0f, 2.0f);
    (*g)[0] = -95.0f, (*g)[n - 1] = 60.0f;
}

static void test_silu_mul(void) {
    static const int shapes[][2] = {{1, 1536}, {3, 37}, {50, 1536}}; // the last goes parallel
    for (size_t i = 0; i < ARRAY_LEN(shapes); i++) {
        int N = shapes[i][0], D = shapes[i][1];
        size_t n = (size_t)N * D;
        float *g, *u, *o;
        gated_inputs(n, 12.0f, &g, &u, &o);
        k_silu_mul(o, g, u, N, D);
        int bad = 0;
        for (size_t k = 0; k < n; k++) {
            double ref = (double)g[k] / (1.0 + exp(-(double)g[k])) * u[k];
            if (!(fabs(o[k] - ref) <= 2e-6 * (fabs(ref) + 1e-6))) bad++;
        }
        EXPECT(bad == 0, "%dx%d: %d values off", N, D, bad);
        // Single-threaded must agree bitwise.
        float *o1 = xmalloc(sizeof(float) * n);
        k_init(1, 64, 2048);
        k_silu_mul(o1, g, u, N, D);
        k_init(2, 64, 2048);
        EXPECT(memcmp(o, o1, sizeof(float) * n) == 0, "thread count changed silu_mul");
        free(g), free(u), free(o), free(o1);
    }
}

// ---- Gemma's elementwise ops: GeGLU (tanh GELU), soft-capping, scaling

static void test_gelu_softcap_scale(void) {
    static const int shapes[][2] = {{3, 37}, {50, 1536}}; // the second goes parallel
    for (size_t i = 0; i < ARRAY_LEN(shapes); i++) {
        int N = shapes[i][0], D = shapes[i][1];
        size_t n = (size_t)N * D;
        float *g, *u, *o;
        gated_inputs(n, 8.0f, &g, &u, &o);
        k_gelu_mul(o, g, u, N, D);
        int bad = 0;
        for (size_t k = 0; k < n; k++) {
            double x = g[k], ref = 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))) * u[k];
            if (!(fabs(o[k] - ref) <= 1e-5 * (fabs(ref) + 1e-3))) bad++;
        }
        EXPECT(bad == 0, "gelu_mul %dx%d: %d values off", N, D, bad);
        memcpy(o, g, sizeof(float) * n);
        k_softcap(o, n, 5.0f);
        bad = 0;
        for (size_t k = 0; k < n; k++)
            if (!(fabs(o[k] - 5.0 * tanh(g[k] / 5.0)) <= 1e-6 * 5.0)) bad++;
        EXPECT(bad == 0, "softcap %dx%d: %d values off", N, D, bad);
        memcpy(o, g, sizeof(float) * n);
        k_scale(o, n, 8.0f);
        bad = 0;
        for (size_t k = 0; k < n; k++) bad += o[k] != g[k] * 8.0f;
        EXPECT(bad == 0, "scale: %d values off", bad);
        free(g), free(u), free(o);
    }
}

// ---- embed

static void test_embed(void) {
    static const QType types[] = {QTYPE_Q8_0, QTYPE_F16, QTYPE_Q4_1};
    for (size_t i = 0; i < ARRAY_LEN(types); i++) {
        int V = 301, D = 96;
        int ids[] = {0, 300, 17, 17, 150};
        int N = ARRAY_LEN(ids);
        void *tab = make_weights(types[i], V, D);
        QMatrix m = {types[i], V, D, tab, NULL};
        float *out = xmalloc(sizeof(float) * N * D), *ref = xmalloc(sizeof(float) * D);
        k_embed(out, &m, ids, N);
        for (int t = 0; t < N; t++) {
            dequant_row(types[i], (const uint8_t *)tab + (size_t)ids[t] * qtype_row_size(types[i], D), ref, D);
            EXPECT(memcmp(ref, out + (size_t)t * D, sizeof(float) * D) == 0, "%s row %d", qtype_name(types[i]), ids[t]);
        }
        free(tab), free(out), free(ref);
    }
}

// ---- paged KV cache fixtures shared by the rope and attention tests

typedef struct {
    int n_seqs, n_tokens, max_blocks;
    int *positions, *slots, *qstart, *ctx, *btab, *tokens;
    Batch b;
} TestBatch;

// Sequences with contexts ctx[s], of which the last nq[s] positions are this step's rows; their
// blocks are a shuffled permutation of the pool so neighbouring positions live far apart.
static void batch_make(TestBatch *tb, int n_seqs, const int *ctx, const int *nq, int block_size, int num_blocks) {
    memset(tb, 0, sizeof(*tb));
    tb->n_seqs = n_seqs;
    for (int s = 0; s < n_seqs; s++) {
        tb->n_tokens += nq[s];
        tb->max_blocks = MAX(tb->max_blocks, (ctx[s] + block_size - 1) / block_size);
    }
    int *perm = xmalloc(sizeof(int) * num_blocks);
    for (int i = 0; i < num_blocks; i++) perm[i] = i;
    for (int i = num_blocks - 1; i > 0; i--) {
        int j = (int)(rng_next() % (uint64_t)(i + 1)), tmp = perm[i];
        perm[i] = perm[j], perm[j] = tmp;
    }
    tb->positions = xmalloc(sizeof(int) * tb->n_tokens);
    tb->slots = xmalloc(sizeof(int) * tb->n_tokens);
    tb->tokens = xcalloc(tb->n_tokens, sizeof(int));
    tb->qstart = xmalloc(sizeof(int) * (n_seqs + 1));
    tb->ctx = xmalloc(sizeof(int) * n_seqs);
    tb->btab = xmalloc(sizeof(int) * n_seqs * tb->max_blocks);
    int used = 0, row = 0;
    for (int s = 0; s < n_seqs; s++) {
        int nb = (ctx[s] + block_size - 1) / block_size;
        CHECK(used + nb <= num_blocks);
        for (int i = 0; i < tb->max_blocks; i++) tb->btab[s * tb->max_blocks + i] = i < nb ? perm[used + i] : -1;
        used += nb;
        tb->qstart[s] = row;
        tb->ctx[s] = ctx[s];
        for (int p = ctx[s] - nq[s]; p < ctx[s]; p++, row++) {
            tb->positions[row] = p;
            tb->slots[row] = tb->btab[s * tb->max_blocks + p / block_size] * block_size + p % block_size;
        }
    }
    tb->qstart[n_seqs] = row;
    tb->b = (Batch){.n_tokens = tb->n_tokens, .n_seqs = n_seqs, .token_ids = tb->tokens, .positions = tb->positions,
                    .slot_mapping = tb->slots, .query_start = tb->qstart, .context_lens = tb->ctx,
                    .block_tables = tb->btab, .max_blocks_per_seq = tb->max_blocks};
    free(perm);
}

static void batch_free(TestBatch *tb) {
    free(tb->positions), free(tb->slots), free(tb->tokens), free(tb->qstart), free(tb->ctx), free(tb->btab);
}

static float cache_get(const KVLayer *c, const void *base, int slot, int head, int d) {
    size_t i = ((size_t)slot * c->n_kv_heads + head) * c->head_dim + d;
    return c->dtype == KV_F32 ? ((const float *)base)[i] : fp16_to_f32(((const uint16_t *)base)[i]);
}

static void cache_make(KVLayer *c, int num_blocks, int block_size, int nkv, int hd, KVType dt) {
    size_t n = (size_t)num_blocks * block_size * nkv * hd, es = dt == KV_F32 ? 4 : 2;
    *c = (KVLayer){xmalloc(n * es), xmalloc(n * es), num_blocks, block_size, nkv, hd, dt};
    // Random contents everywhere, so reading a wrong slot shows.
    for (size_t i = 0; i < n; i++) {
        float a = rng_uniform(-1.5f, 1.5f), b = rng_uniform(-1.5f, 1.5f);
        if (dt == KV_F32) ((float *)c->k)[i] = a, ((float *)c->v)[i] = b;
        else ((uint16_t *)c->k)[i] = f32_to_fp16(a), ((uint16_t *)c->v)[i] = f32_to_fp16(b);
    }
}

// ---- rope + KV write

typedef struct {
    int n_heads, nkv, hd, rope_dim;
    RopeLayout layout;
    KVType dt;
    bool factors; // llama3-style frequency factors (pair i's frequency divided by f_i)
} RopeCase;

static void test_rope_kv_write(void) {
    static const RopeCase cases[] = {
        {9, 3, 64, 64, ROPE_NORMAL, KV_F16, false}, // the default model
        {9, 3, 64, 64, ROPE_NORMAL, KV_F32, false},
        {4, 4, 32, 32, ROPE_NEOX, KV_F32, false},
        {8, 2, 48, 16, ROPE_NORMAL, KV_F16, false}, // partial rotary
        {6, 3, 40, 24, ROPE_NEOX, KV_F16, false},
        {8, 2, 64, 64, ROPE_NEOX, KV_F16, true},    // Llama 3.1's rope_freqs
        {4, 2, 32, 32, ROPE_NORMAL, KV_F32, true},
    };
    for (size_t ci = 0; ci < ARRAY_LEN(cases); ci++) {
        const RopeCase *rc = &cases[ci];
        int ctx[] = {3, 40, 1}, nq[] = {3, 7, 1};
        TestBatch tb;
        batch_make(&tb, 3, ctx, nq, 16, 8);
        tb.slots[1] = -1; // a padding row: rotated, not cached
        KVLayer c;
        cache_make(&c, 8, 16, rc->nkv, rc->hd, rc->dt);
        int N = tb.n_tokens, qn = rc->n_heads * rc->hd, kn = rc->nkv * rc->hd;
        float *q = xmalloc(sizeof(float) * N * qn), *k = xmalloc(sizeof(float) * N * kn);
        float *v = xmalloc(sizeof(float) * N * kn), *q0 = xmalloc(sizeof(float) * N * qn);
        float *k0 = xmalloc(sizeof(float) * N * kn);
        fill(q, (size_t)N * qn, -1, 1), fill(k, (size_t)N * kn, -1, 1), fill(v, (size_t)N * kn, -1, 1);
        memcpy(q0, q, sizeof(float) * N * qn), memcpy(k0, k, sizeof(float) * N * kn);
        // Remember what the padding row's slot would have held to see that it is untouched.
        int pad_slot = tb.btab[0] * 16 + 1;
        float before = cache_get(&c, c.k, pad_slot, 0, 0);
        int bad = 0, half = rc->rope_dim / 2;
        float ff[64]; // 1 for the fastest pairs up to 8 for the slowest, as llama3 scaling has them
        for (int i = 0; i < half; i++) ff[i] = rc->factors ? 1.0f + 7.0f * (float)i / (float)half : 1.0f;
        k_rope_kv_write(q, k, v, &tb.b, &c, rc->n_heads, rc->rope_dim, 10000.0f, rc->factors ? ff : NULL, rc->layout);
        for (int t = 0; t < N; t++) {
            for (int h = 0; h < rc->n_heads + rc->nkv; h++) {
                bool isq = h < rc->n_heads;
                const float *src = isq ? q0 + (size_t)t * qn + h * rc->hd : k0 + (size_t)t * kn + (h - rc->n_heads) * rc->hd;
                const float *got = isq ? q + (size_t)t * qn + h * rc->hd : k + (size_t)t * kn + (h - rc->n_heads) * rc->hd;
                for (int d = 0; d < rc->hd; d++) {
                    double ref = src[d];
                    if (d < rc->rope_dim) {
                        int i = rc->layout == ROPE_NEOX ? d % half : d / 2;
                        int first = rc->layout == ROPE_NEOX ? d < half : d % 2 == 0;
                        int mate = rc->layout == ROPE_NEOX ? (first ? d + half : d - half) : (first ? d + 1 : d - 1);
                        double th = tb.positions[t] * pow(10000.0, -2.0 * i / rc->rope_dim) / ff[i];
                        ref = first ? src[d] * cos(th) - src[mate] * sin(th) : src[mate] * sin(th) + src[d] * cos(th);
                    }
                    if (fabs(got[d] - ref) > 2e-6) bad++;
                }
            }
            if (tb.slots[t] < 0) continue;
            for (int h = 0; h < rc->nkv; h++)
                for (int d = 0; d < rc->hd; d++) {
                    float kk = k[(size_t)t * kn + h * rc->hd + d], vv = v[(size_t)t * kn + h * rc->hd + d];
                    if (rc->dt == KV_F16) kk = fp16_to_f32(f32_to_fp16(kk)), vv = fp16_to_f32(f32_to_fp16(vv));
                    if (cache_get(&c, c.k, tb.slots[t], h, d) != kk || cache_get(&c, c.v, tb.slots[t], h, d) != vv) bad++;
                }
        }
        EXPECT(bad == 0, "case %zu: %d values off", ci, bad);
        EXPECT(cache_get(&c, c.k, pad_slot, 0, 0) == before, "case %zu: padding row was cached", ci);
        free(q), free(k), free(v), free(q0), free(k0), free(c.k), free(c.v);
        batch_free(&tb);
    }
}

// ---- add_bias

static void test_add_bias(void) {
    static const struct {
        int n_tokens, dim, threads;
    } cases[] = {
        {1, 1, 1}, {1, 17, 2}, {3, 576, 2}, {7, 100, 1}, {200, 896, 2}, // the last goes parallel
        {0, 64, 2},                                                     // no rows: nothing to do
    };
    for (size_t ci = 0; ci < ARRAY_LEN(cases); ci++) {
        int N = cases[ci].n_tokens, D = cases[ci].dim;
        size_t n = (size_t)N * D;
        float *x = xmalloc(sizeof(float) * (n + 1)), *x0 = xmalloc(sizeof(float) * (n + 1));
        float *bias = xmalloc(sizeof(float) * D);
        fill(x, n + 1, -4.0f, 4.0f);
        fill(bias, D, -1.0f, 1.0f);
        memcpy(x0, x, sizeof(float) * (n + 1));
        k_init(cases[ci].threads, 64, 2048);
        k_add_bias(x, bias, N, D);
        int bad = 0;
        for (size_t i = 0; i < n; i++) {
            float want = x0[i] + bias[i % D]; // one float addition: exact
            bad += memcmp(&want, &x[i], sizeof(float)) != 0;
        }
        bad += memcmp(&x0[n], &x[n], sizeof(float)) != 0; // nothing past the rows
        EXPECT(bad == 0, "%d x %d, %d threads: %d values off", N, D, cases[ci].threads, bad);
        free(x), free(x0), free(bias);
    }
    k_init(2, 64, 2048);
}

// ---- attention

// Plain softmax attention over the sequence's K/V gathered into contiguous arrays, in double.
static void ref_attention(float *out, const float *q, const KVLayer *c, const TestBatch *tb, int n_heads,
                          const AttnOpt *o) {
    int hd = c->head_dim, nkv = c->n_kv_heads, G = n_heads / nkv, bs = c->block_size;
    for (int s = 0; s < tb->n_seqs; s++) {
        int n_ctx = tb->ctx[s];
        float *K = xmalloc(sizeof(float) * n_ctx * nkv * hd), *V = xmalloc(sizeof(float) * n_ctx * nkv * hd);
        for (int p = 0; p < n_ctx; p++) {
            int slot = tb->btab[s * tb->max_blocks + p / bs] * bs + p % bs;
            for (int h = 0; h < nkv; h++)
                for (int d = 0; d < hd; d++) {
                    K[((size_t)p * nkv + h) * hd + d] = cache_get(c, c->k, slot, h, d);
                    V[((size_t)p * nkv + h) * hd + d] = cache_get(c, c->v, slot, h, d);
                }
        }
        double *w = xmalloc(sizeof(double) * n_ctx);
        for (int t = tb->qstart[s]; t < tb->qstart[s + 1]; t++)
            for (int h = 0; h < n_heads; h++) {
                int kh = h / G, np = tb->positions[t] + 1, lo = o->window > 0 ? MAX(0, np - o->window) : 0;
                const float *qh = q + ((size_t)t * n_heads + h) * hd;
                double mx = -INFINITY, sum = 0;
                for (int p = lo; p < np; p++) {
                    double dot = 0;
                    for (int d = 0; d < hd; d++) dot += (double)qh[d] * K[((size_t)p * nkv + kh) * hd + d];
                    w[p] = dot * o->scale;
                    if (o->softcap > 0) w[p] = o->softcap * tanh(w[p] / o->softcap);
                    mx = fmax(mx, w[p]);
                }
                for (int p = lo; p < np; p++) sum += (w[p] = exp(w[p] - mx));
                for (int d = 0; d < hd; d++) {
                    double acc = 0;
                    for (int p = lo; p < np; p++) acc += w[p] * V[((size_t)p * nkv + kh) * hd + d];
                    out[((size_t)t * n_heads + h) * hd + d] = (float)(acc / sum);
                }
            }
        free(K), free(V), free(w);
    }
}

typedef struct {
    int n_heads, nkv, hd, block_size;
    KVType dt;
    int window;    // sliding window (0: none)
    float softcap; // attention-logit soft-cap (0: none)
} AttCase;

// Overwrites K and V of every cache block that lies wholly before the last window of sequence s
// with NaN: a windowed kernel that reads none of it gives bitwise the same rows.
static void poison_before_window(KVLayer *c, const TestBatch *tb, int s, int window) {
    int lo = MAX(0, tb->ctx[s] - window), n = c->n_kv_heads * c->head_dim;
    for (int blk = 0; (blk + 1) * c->block_size <= lo; blk++)
        for (int i = 0; i < c->block_size * n; i++) {
            size_t at = (size_t)tb->btab[s * tb->max_blocks + blk] * c->block_size * n + i;
            if (c->dtype == KV_F32) ((float *)c->k)[at] = ((float *)c->v)[at] = NAN;
            else ((uint16_t *)c->k)[at] = ((uint16_t *)c->v)[at] = 0x7e00; // f16 NaN
        }
}

static void test_attention(void) {
    static const AttCase cases[] = {
        {9, 3, 64, 16, KV_F16, 0, 0}, // the default model: GQA 3
        {9, 3, 64, 16, KV_F32, 0, 0},
        {4, 4, 64, 5, KV_F16, 0, 0},  // GQA 1, blocks of 5
        {8, 2, 32, 7, KV_F32, 0, 0},  // GQA 4
        {8, 2, 128, 16, KV_F16, 0, 0},
        {6, 2, 40, 16, KV_F32, 0, 0}, // head_dim not a multiple of 16: the portable path
        {9, 3, 64, 16, KV_F16, 20, 0}, // sliding windows that start inside a chunk
        {8, 2, 32, 7, KV_F32, 5, 0},
        {4, 4, 64, 5, KV_F16, 0, 8.0f},  // Gemma 2's soft-capped scores
        {6, 2, 40, 16, KV_F32, 7, 5.0f}, // both, on the portable path
    };
    // A decode row at a block boundary, a prefill chunk over a cached prefix, a fresh prompt, a
    // one-token context, a long decode row, and a verification step of speculative decoding (a
    // few rows of a long context, which the kernel takes together).
    int ctx[] = {17, 45, 9, 1, 130, 100}, nq[] = {1, 12, 9, 1, 1, 5};
    for (size_t ci = 0; ci < ARRAY_LEN(cases); ci++) {
        const AttCase *ac = &cases[ci];
        int num_blocks = 0;
        for (int s = 0; s < 6; s++) num_blocks += (ctx[s] + ac->block_size - 1) / ac->block_size;
        num_blocks += 3;
        TestBatch tb;
        batch_make(&tb, 6, ctx, nq, ac->block_size, num_blocks);
        KVLayer c;
        cache_make(&c, num_blocks, ac->block_size, ac->nkv, ac->hd, ac->dt);
        int N = tb.n_tokens, qn = ac->n_heads * ac->hd;
        float *q = xmalloc(sizeof(float) * N * qn), *out = xmalloc(sizeof(float) * N * qn);
        float *ref = xmalloc(sizeof(float) * N * qn), *one = xmalloc(sizeof(float) * qn);
        fill(q, (size_t)N * qn, -2.0f, 2.0f);
        const AttnOpt opt = {.scale = 1.0f / sqrtf((float)ac->hd), .window = ac->window, .softcap = ac->softcap};
        k_attention(out, q, &c, &tb.b, ac->n_heads, &opt);
        ref_attention(ref, q, &c, &tb, ac->n_heads, &opt);
        int bad = 0;
        for (int i = 0; i < N * qn; i++)
            if (!(fabs(out[i] - ref[i]) <= 3e-5 * (1.0 + fabs(ref[i])))) bad++;
        EXPECT(bad == 0, "case %zu: %d of %d values off", ci, bad, N * qn);

        // Each row alone (a one-row batch of its own sequence) must match bitwise.
        int mism = 0;
        for (int s = 0; s < tb.n_seqs; s++)
            for (int t = tb.qstart[s]; t < tb.qstart[s + 1]; t++) {
                int qs1[2] = {0, 1};
                Batch b1 = {.n_tokens = 1, .n_seqs = 1, .token_ids = tb.tokens, .positions = &tb.positions[t],
                            .slot_mapping = &tb.slots[t], .query_start = qs1, .context_lens = &tb.ctx[s],
                            .block_tables = tb.btab + s * tb.max_blocks, .max_blocks_per_seq = tb.max_blocks};
                k_attention(one, q + (size_t)t * qn, &c, &b1, ac->n_heads, &opt);
                if (memcmp(one, out + (size_t)t * qn, sizeof(float) * qn) != 0) mism++;
            }
        // Each sequence alone: with few tasks the kernel splits a sequence's rows into smaller
        // groups (the verification step's 5 rows: 2 + 3 per KV head).
        for (int s = 0; s < tb.n_seqs; s++) {
            int t = tb.qstart[s], n = tb.qstart[s + 1] - t, qs[2] = {0, n};
            Batch bs = {.n_tokens = n, .n_seqs = 1, .token_ids = tb.tokens, .positions = &tb.positions[t],
                        .slot_mapping = &tb.slots[t], .query_start = qs, .context_lens = &tb.ctx[s],
                        .block_tables = tb.btab + s * tb.max_blocks, .max_blocks_per_seq = tb.max_blocks};
            k_attention(ref, q + (size_t)t * qn, &c, &bs, ac->n_heads, &opt);
            if (memcmp(ref, out + (size_t)t * qn, sizeof(float) * qn * n) != 0) mism++;
        }
        k_init(1, 64, 2048);
        k_attention(ref, q, &c, &tb.b, ac->n_heads, &opt);
        k_init(2, 64, 2048);
        if (memcmp(ref, out, sizeof(float) * N * qn) != 0) mism++;
        EXPECT(mism == 0, "case %zu: %d rows not batch-invariant", ci, mism);
        if (ac->window > 0) {
            // keys before the window are never read: the long decode row (sequence 4) is the same
            // with its blocks before the window poisoned
            poison_before_window(&c, &tb, 4, ac->window);
            k_attention(ref, q, &c, &tb.b, ac->n_heads, &opt);
            int t = tb.qstart[4];
            EXPECT(memcmp(ref + (size_t)t * qn, out + (size_t)t * qn, sizeof(float) * qn) == 0,
                   "case %zu: the windowed row read keys before its window", ci);
        }
        free(q), free(out), free(ref), free(one), free(c.k), free(c.v);
        batch_free(&tb);
    }
}

int main(void) {
    rng_state = 20240607;
    k_init(2, 64, 2048);
    TEST_RUN(test_matmul_vs_reference);
    TEST_RUN(test_matmul_batch_invariance);
    TEST_RUN(test_rmsnorm);
    TEST_RUN(test_silu_mul);
    TEST_RUN(test_gelu_softcap_scale);
    TEST_RUN(test_embed);
    TEST_RUN(test_rope_kv_write);
    TEST_RUN(test_add_bias);
    TEST_RUN(test_attention);
    k_free();
    return test_summary();
}
