// test_gpu_ops.c: every CUDA op of the forward pass against its CPU twin (kernels/cpu), on
// seeded random inputs over awkward shapes, outputs poisoned (NaN) before each run. Sampling has
// its own binary (test_gpu_sample.c). Without a GPU: SKIP, never pass.
//
// Tolerances (gpu_test.h): f32 ops 1e-5 relative; ops with bf16 operands 1e-2 (the matmul, the
// prefill attention) or exact where the GPU's result is defined as the twin's rounded to bf16
// (embedding, dequantization, the V half of the cache). Each matmul is also held to 2e-5 against
// a double reference on its own bf16 operands, which catches indexing errors the loose
// tolerance could hide.
#include "tests/gpu/gpu_test.h"

#define MAX_TOKENS 2048
#define MAX_COLS 8192

// ---- quantized test data: random bytes with sane fp16 scales (never NaN or inf)

static void put_fp16(uint8_t *p, float f) {
    uint16_t h = f32_to_fp16(f);
    memcpy(p, &h, 2);
}

static uint8_t *make_qdata(QType t, int64_t rows, int64_t cols) {
    size_t bytes = (size_t)rows * qtype_row_size(t, cols);
    uint8_t *d = xmalloc(bytes);
    for (size_t i = 0; i < bytes; i++) d[i] = (uint8_t)gt_next();
    int64_t n = rows * cols;
    size_t bb = qtype_block_bytes(t);
    size_t nb = bytes / bb;
    switch (t) {
    case QTYPE_F32:
        for (int64_t i = 0; i < n; i++) ((float *)d)[i] = gt_float(-2, 2);
        break;
    case QTYPE_F16:
        for (int64_t i = 0; i < n; i++) put_fp16(d + 2 * i, gt_float(-2, 2));
        break;
    case QTYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = f32_to_bf16(gt_float(-2, 2));
            memcpy(d + 2 * i, &h, 2);
        }
        break;
    case QTYPE_Q4_0:
    case QTYPE_Q8_0:
        for (size_t b = 0; b < nb; b++) put_fp16(d + b * bb, gt_float(0.001f, 0.1f));
        break;
    case QTYPE_Q4_1:
        for (size_t b = 0; b < nb; b++) {
            put_fp16(d + b * bb, gt_float(0.001f, 0.1f));
            put_fp16(d + b * bb + 2, gt_float(-0.5f, 0.5f));
        }
        break;
    case QTYPE_Q6_K:
        for (size_t b = 0; b < nb; b++) put_fp16(d + b * bb + 208, gt_float(0.0001f, 0.01f));
        break;
    default: DIE("no test data for %s", qtype_name(t));
    }
    return d;
}

// ---- embedding and dequantization: exactly the twin's values rounded to bf16

typedef struct {
    QType type;
    int rows, cols, n_tokens;
} EmbedCase;

static void test_embed(void) {
    static const EmbedCase cases[] = {
        {QTYPE_Q8_0, 50, 64, 1},     {QTYPE_Q4_1, 1000, 576, 37}, {QTYPE_Q4_0, 257, 96, 5},
        {QTYPE_F16, 33, 40, 3},      {QTYPE_F32, 9, 8, 11},       {QTYPE_Q6_K, 20, 256, 4},
    };
    for (size_t ci = 0; ci < ARRAY_LEN(cases); ci++) {
        const EmbedCase *c = &cases[ci];
        gt_seed(100 + ci);
        uint8_t *data = make_qdata(c->type, c->rows, c->cols);
        QMatrix qm = {c->type, c->rows, c->cols, data, NULL};
        int *ids = xmalloc(c->n_tokens * sizeof(int));
        for (int t = 0; t < c->n_tokens; t++) ids[t] = t == 0 ? c->rows - 1 : gt_int(c->rows);
        size_t n = (size_t)c->n_tokens * c->cols;
        float *ref = xmalloc(n * sizeof(float));
        k_embed(ref, &qm, ids, c->n_tokens);
        for (size_t i = 0; i < n; i++) ref[i] = gt_bf16_round(ref[i]);

        KDevMatrix dm;
        kdev_matrix_upload(&dm, &qm, gt_stream);
        int *d_ids = gt_upload(ids, c->n_tokens * sizeof(int));
        float *d_out = gt_dev(n * sizeof(float));
        k_embed_cuda(d_out, &dm, d_ids, c->n_tokens, gt_stream);
        float *out = gt_download(d_out, n * sizeof(float));
        EXPECT(memcmp(out, ref, n * sizeof(float)) == 0, "%s %dx%d, %d tokens: not the twin's bf16 values",
               qtype_name(c->type), c->rows, c->cols, c->n_tokens);
        kdev_matrix_free(&dm);
        kdev_free(d_ids), kdev_free(d_out);
        free(out), free(ref), free(ids), free(data);
    }
}

static void test_dequant(void) {
    static const struct {
        QType type;
        int64_t n;
    } cases[] = {{QTYPE_Q4_0, 32}, {QTYPE_Q4_0, 32 * 777}, {QTYPE_Q4_1, 32 * 3},  {QTYPE_Q8_0, 32 * 1001},
                 {QTYPE_F16, 1},   {QTYPE_F16, 999},       {QTYPE_BF16, 77},      {QTYPE_F32, 12345}};
    for (size_t ci = 0; ci < ARRAY_LEN(cases); ci++) {
        QType t = cases[ci].type;
        int64_t n = cases[ci].n;
        gt_seed(200 + ci);
        uint8_t *data = make_qdata(t, 1, n);
        size_t bytes = qtype_row_size(t, n);
        float *ref = xmalloc(n * sizeof(float));
        dequant_row(t, data, ref, n);
        void *d_src = gt_upload(data, bytes);
        uint16_t *d_dst = gt_dev(n * sizeof(uint16_t));
        k_dequant_bf16_cuda(d_dst, d_src, t, n, gt_stream);
        uint16_t *out = gt_download(d_dst, n * sizeof(uint16_t));
        int64_t bad = 0;
        for (int64_t i = 0; i < n; i++) bad += out[i] != f32_to_bf16(ref[i]);
        EXPECT(bad == 0, "%s x %lld: %lld values differ from f32_to_bf16(dequant_row)", qtype_name(t), (long long)n,
               (long long)bad);
        kdev_free(d_src), kdev_free(d_dst);
        free(out), free(ref), free(data);
    }
}

// ---- matmul (cuBLAS): against the twin (1e-2) and a double reference on the bf16 operands

typedef struct {
    QType type;
    int rows, cols, n_tokens;
    int n_gather; // > 0: the LM-head form, n_gather rows picked from the n_tokens
} MatmulCase;

static void test_matmul(void) {
    static const MatmulCase cases[] = {
        {QTYPE_Q4_1, 576, 576, 1, 0},  {QTYPE_Q4_0, 1536, 576, 7, 0}, {QTYPE_Q8_0, 577, 1536, 33, 0},
        {QTYPE_F16, 1000, 136, 65, 0}, {QTYPE_F32, 129, 200, 3, 0},   {QTYPE_Q6_K, 300, 512, 17, 0},
        {QTYPE_Q8_0, 49152, 576, 17, 3},
    };
    for (size_t ci = 0; ci < ARRAY_LEN(cases); ci++) {
        const MatmulCase *c = &cases[ci];
        gt_seed(300 + ci);
        uint8_t *data = make_qdata(c->type, c->rows, c->cols);
        QMatrix qm = {c->type, c->rows, c->cols, data, NULL};
        size_t nx = (size_t)c->n_tokens * c->cols;
        float *x = xmalloc(nx * sizeof(float));
        gt_fill(x, nx, -1, 1);
        int n_out = c->n_gather ? c->n_gather : c->n_tokens;
        int *rows = xmalloc(n_out * sizeof(int));
        for (int i = 0; i < n_out; i++) rows[i] = c->n_gather ? gt_int(c->n_tokens) : i;
        float *xg = xmalloc((size_t)n_out * c->cols * sizeof(float)); // the rows the op reads
        for (int i = 0; i < n_out; i++) memcpy(xg + (size_t)i * c->cols, x + (size_t)rows[i] * c->cols, c->cols * sizeof(float));
        size_t no = (size_t)n_out * c->rows;
        float *ref = xmalloc(no * sizeof(float));
        k_matmul(ref, xg, &qm, n_out);

        KDevMatrix dm;
        kdev_matrix_upload(&dm, &qm, gt_stream);
        float *d_x = gt_upload(x, nx * sizeof(float)), *d_out = gt_dev(no * sizeof(float));
        int *d_rows = gt_upload(rows, n_out * sizeof(int));
        if (c->n_gather) k_matmul_rows_cuda(d_out, d_x, d_rows, n_out, &dm, gt_stream);
        else k_matmul_cuda(d_out, d_x, &dm, c->n_tokens, gt_stream);
        float *out = gt_download(d_out, no * sizeof(float));
        char what[96];
        snprintf(what, sizeof(what), "%s %dx%d, %d rows vs k_matmul", qtype_name(c->type), c->rows, c->cols, n_out);
        EXPECT_REL(out, ref, no, TOL_BF16, what);

        // The same product in double on exactly the operands the GPU multiplied.
        uint16_t *w = gt_download(dm.data, (size_t)c->rows * c->cols * sizeof(uint16_t));
        float *exact = xmalloc(no * sizeof(float));
        for (int i = 0; i < n_out; i++)
            for (int r = 0; r < c->rows; r++) {
                double s = 0;
                for (int k = 0; k < c->cols; k++)
                    s += (double)bf16_to_f32(w[(size_t)r * c->cols + k]) * gt_bf16_round(xg[(size_t)i * c->cols + k]);
                exact[(size_t)i * c->rows + r] = (float)s;
            }
        snprintf(what, sizeof(what), "%s %dx%d, %d rows vs double", qtype_name(c->type), c->rows, c->cols, n_out);
        EXPECT_REL(out, exact, no, 2e-5, what);
        kdev_matrix_free(&dm);
        kdev_free(d_x), kdev_free(d_out), kdev_free(d_rows);
        free(w), free(exact), free(out), free(ref), free(xg), free(rows), free(x), free(data);
    }
}

// ---- RMSNorm, fused add + RMSNorm, SiLU-and-multiply: f32

static void test_rmsnorm(void) {
    static const struct {
        int n_tokens, dim;
    } cases[] = {{1, 576}, {7, 577}, {33, 4096}, {3, 1}, {2, 8192}, {130, 96}};
    for (size_t ci = 0; ci < ARRAY_LEN(cases); ci++) {
        int nt = cases[ci].n_tokens, dim = cases[ci].dim;
        size_t n = (size_t)nt * dim;
        for (int fused = 0; fused <= 1; fused++) {
            gt_seed(400 + 2 * ci + fused);
            float *x = xmalloc(n * sizeof(float)), *d = xmalloc(n * sizeof(float)), *w = xmalloc(dim * sizeof(float));
            gt_fill(x, n, -2, 2), gt_fill(d, n, -1, 1), gt_fill(w, dim, 0.5f, 1.5f);
            float *d_x = gt_upload(x, n * sizeof(float)), *d_d = gt_upload(d, n * sizeof(float));
            float *d_w = gt_upload(w, dim * sizeof(float)), *d_out = gt_dev(n * sizeof(float));
            float *ref = xmalloc(n * sizeof(float));
            if (fused) {
                k_add_rmsnorm(ref, x, d, w, nt, dim, 1e-5f); // x becomes the new residual
                k_add_rmsnorm_cuda(d_out, d_x, d_d, d_w, nt, dim, 1e-5f, gt_stream);
                float *res = gt_download(d_x, n * sizeof(float));
                // residual + delta is one f32 addition on either side: bit for bit
                EXPECT(memcmp(res, x, n * sizeof(float)) == 0, "%d x %d: residual differs", nt, dim);
                free(res);
            } else {
                k_rmsnorm(ref, x, w, nt, dim, 1e-5f);
                k_rmsnorm_cuda(d_out, d_x, d_w, nt, dim, 1e-5f, gt_stream);
            }
            float *out = gt_download(d_out, n * sizeof(float));
            char what[64];
            snprintf(what, sizeof(what), "%s %d x %d", fused ? "add_rmsnorm" : "rmsnorm", nt, dim);
            EXPECT_REL(out, ref, n, TOL_F32, what);
            kdev_free(d_x), kdev_free(d_d), kdev_free(d_w), kdev_free(d_out);
            free(out), free(ref), free(x), free(d), free(w);
        }
    }
}

static void test_silu_mul(void) {
    static const struct {
        int n_tokens, dim;
    } cases[] = {{1, 1}, {3, 1536}, {7, 1001}, {7, 14336}, {1, 3}};
    for (size_t ci = 0; ci < ARRAY_LEN(cases); ci++) {
        gt_seed(500 + ci);
        size_t n = (size_t)cases[ci].n_tokens * cases[ci].dim;
        float *g = xmalloc(n * sizeof(float)), *u = xmalloc(n * sizeof(float)), *ref = xmalloc(n * sizeof(float));
        gt_fill(g, n, -8, 8), gt_fill(u, n, -2, 2);
        k_silu_mul(ref, g, u, cases[ci].n_tokens, cases[ci].dim);
        float *d_g = gt_upload(g, n * sizeof(float)), *d_u = gt_upload(u, n * sizeof(float));
        float *d_out = gt_dev(n * sizeof(float));
        k_silu_mul_cuda(d_out, d_g, d_u, cases[ci].n_tokens, cases[ci].dim, gt_stream);
        float *out = gt_download(d_out, n * sizeof(float));
        char what[48];
        snprintf(what, sizeof(what), "silu_mul %d x %d", cases[ci].n_tokens, cases[ci].dim);
        EXPECT_REL(out, ref, n, TOL_F32, what);
        kdev_free(d_g), kdev_free(d_u), kdev_free(d_out);
        free(g), free(u), free(ref), free(out);
    }
}

// ---- bias add: one f32 addition per element on either side, so bit for bit

static void test_add_bias(void) {
    static const struct {
        int n_tokens, dim;
        int x_offset; // floats: an x that is not 16-byte aligned takes the scalar kernel
    } cases[] = {{1, 1, 0}, {3, 896, 0}, {7, 130, 0}, {5, 64, 1}, {70000, 8, 0}, {2, 4096, 3}};
    for (size_t ci = 0; ci < ARRAY_LEN(cases); ci++) {
        int nt = cases[ci].n_tokens, dim = cases[ci].dim, off = cases[ci].x_offset;
        size_t n = (size_t)nt * dim;
        gt_seed(550 + ci);
        float *x = xmalloc((n + off) * sizeof(float)), *bias = xmalloc(dim * sizeof(float));
        gt_fill(x, n + off, -4, 4), gt_fill(bias, dim, -1, 1);
        float *d_x = gt_upload(x, (n + off) * sizeof(float)), *d_bias = gt_upload(bias, dim * sizeof(float));
        k_add_bias(x + off, bias, nt, dim);
        k_add_bias_cuda(d_x + off, d_bias, nt, dim, gt_stream);
        float *out = gt_download(d_x, (n + off) * sizeof(float));
        EXPECT(memcmp(out, x, (n + off) * sizeof(float)) == 0, "add_bias %d x %d (offset %d): not the twin's bits", nt,
               dim, off);
        kdev_free(d_x), kdev_free(d_bias);
        free(x), free(bias), free(out);
    }
}

// ---- RoPE + KV write: q and k f32; the cache bf16 at exactly the mapped slots, nowhere else

typedef struct {
    int n_heads, n_kv, head_dim, rope_dim;
    RopeLayout layout;
    int block_size, n_tokens, pos0;
    bool padding; // some rows have slot -1
    bool factors; // llama3 frequency factors (device memory on the GPU side)
} RopeCase;

static void test_rope_kv_write(void) {
    static const RopeCase cases[] = {
        {9, 3, 64, 64, ROPE_NORMAL, 16, 1, 0, false, false},
        {9, 3, 64, 64, ROPE_NEOX, 16, 37, 5, false, false},
        {32, 8, 128, 128, ROPE_NEOX, 16, 19, 100000, false, false},
        {8, 8, 128, 64, ROPE_NORMAL, 32, 5, 1234, false, false},
        {12, 4, 64, 64, ROPE_NORMAL, 16, 7, 3, true, false},
        {4, 1, 6, 4, ROPE_NEOX, 8, 9, 17, true, false},
        {32, 8, 128, 128, ROPE_NEOX, 16, 21, 70000, false, true}, // Llama 3.1: rope_freqs
        {9, 3, 64, 64, ROPE_NORMAL, 16, 5, 300, true, true},
    };
    for (size_t ci = 0; ci < ARRAY_LEN(cases); ci++) {
        const RopeCase *c = &cases[ci];
        gt_seed(600 + ci);
        int nt = c->n_tokens, hd = c->head_dim;
        int num_blocks = (nt + c->block_size - 1) / c->block_size + 2, n_slots = num_blocks * c->block_size;
        size_t nq = (size_t)nt * c->n_heads * hd, nk = (size_t)nt * c->n_kv * hd, row = (size_t)c->n_kv * hd;
        float *q = xmalloc(nq * sizeof(float)), *k = xmalloc(nk * sizeof(float)), *v = xmalloc(nk * sizeof(float));
        gt_fill(q, nq, -1, 1), gt_fill(k, nk, -1, 1), gt_fill(v, nk, -1, 1);
        int *pos = xmalloc(nt * sizeof(int)), *slots = xmalloc(nt * sizeof(int)), *perm = xmalloc(n_slots * sizeof(int));
        gt_shuffle(perm, n_slots);
        for (int t = 0; t < nt; t++) {
            pos[t] = c->pos0 + t;
            slots[t] = c->padding && t % 3 == 1 ? -1 : perm[t];
        }
        float *d_q = gt_upload(q, nq * sizeof(float)), *d_k = gt_upload(k, nk * sizeof(float));
        float *d_v = gt_upload(v, nk * sizeof(float));
        int *d_pos = gt_upload(pos, nt * sizeof(int)), *d_slots = gt_upload(slots, nt * sizeof(int));
        size_t cache_n = (size_t)n_slots * row;
        uint16_t *d_kc = gt_dev(cache_n * 2), *d_vc = gt_dev(cache_n * 2);

        float ff[64]; // 1 for the fastest pairs up to 8 for the slowest, as llama3 scaling has them
        for (int i = 0; i < c->rope_dim / 2; i++) ff[i] = 1.0f + 7.0f * (float)i / (float)(c->rope_dim / 2);
        float *d_ff = c->factors ? gt_upload(ff, sizeof(float) * (c->rope_dim / 2)) : NULL;

        // the twin on an f32 cache
        float *kc = xcalloc(cache_n, sizeof(float)), *vc = xcalloc(cache_n, sizeof(float));
        KVLayer cpu_cache = {kc, vc, num_blocks, c->block_size, c->n_kv, hd, KV_F32};
        Batch hb = {.n_tokens = nt, .positions = pos, .slot_mapping = slots};
        k_rope_kv_write(q, k, v, &hb, &cpu_cache, c->n_heads, c->rope_dim, 10000.0f, c->factors ? ff : NULL,
                        c->layout);

        KVLayer gpu_cache = {d_kc, d_vc, num_blocks, c->block_size, c->n_kv, hd, KCUDA_KV_BF16};
        Batch db = {.n_tokens = nt, .positions = d_pos, .slot_mapping = d_slots};
        k_rope_kv_write_cuda(d_q, d_k, d_v, &db, &gpu_cache, c->n_heads, c->rope_dim, 10000.0f, d_ff, c->layout,
                             gt_stream);
        float *gq = gt_download(d_q, nq * sizeof(float)), *gk = gt_download(d_k, nk * sizeof(float));
        uint16_t *gkc = gt_download(d_kc, cache_n * 2), *gvc = gt_download(d_vc, cache_n * 2);
        char what[96];
        snprintf(what, sizeof(what), "case %zu: q", ci);
        EXPECT_REL(gq, q, nq, 1e-6, what);
        snprintf(what, sizeof(what), "case %zu: k", ci);
        EXPECT_REL(gk, k, nk, 1e-6, what);

        // Slot by slot: written ones hold the twin's k and v rounded to bf16 (k to within a
        // rounding flip: the two rotations may differ in the last f32 bit), the others are poison.
        float *got = xmalloc(nk * sizeof(float)), *want = xmalloc(nk * sizeof(float));
        int v_bad = 0, stray = 0;
        size_t n_got = 0;
        for (int s = 0; s < n_slots; s++) {
            int t = -1;
            for (int i = 0; i < nt; i++)
                if (slots[i] == s) t = i;
            const uint16_t *kr = gkc + (size_t)s * row, *vr = gvc + (size_t)s * row;
            if (t < 0) {
                for (size_t i = 0; i < row; i++) stray += kr[i] != 0xffff || vr[i] != 0xffff;
                continue;
            }
            for (size_t i = 0; i < row; i++, n_got++) {
                got[n_got] = bf16_to_f32(kr[i]), want[n_got] = gt_bf16_round(kc[(size_t)s * row + i]);
                v_bad += vr[i] != f32_to_bf16(vc[(size_t)s * row + i]);
            }
        }
        snprintf(what, sizeof(what), "case %zu: cached k (bf16) vs the twin's rounded", ci);
        EXPECT_REL(got, want, n_got, 1e-3, what);
        EXPECT(v_bad == 0, "case %zu: %d cached v values are not bf16 of the twin's", ci, v_bad);
        EXPECT(stray == 0, "case %zu: %d values written to slots no row maps to", ci, stray);
        kdev_free(d_q), kdev_free(d_k), kdev_free(d_v), kdev_free(d_pos), kdev_free(d_slots);
        kdev_free(d_kc), kdev_free(d_vc), kdev_free(d_ff);
        free(got), free(want), free(gq), free(gk), free(gkc), free(gvc), free(kc), free(vc);
        free(q), free(k), free(v), free(pos), free(slots), free(perm);
    }
}

// ---- attention

#define ATT_MAX_SEQS 6

typedef struct {
    const char *name;
    int n_heads, n_kv, head_dim, block_size;
    int n_seqs;
    int cached[ATT_MAX_SEQS], n_new[ATT_MAX_SEQS]; // per sequence: context before this step, rows now
    bool expect_split;                             // a long decode context split across blocks
    int window;                                    // sliding window (0: none)
    float softcap;                                 // attention-logit soft-cap (0: none)
} AttnCase;

static const AttnCase ATTN_CASES[] = {
    {"1 token", 9, 3, 64, 16, 1, {0}, {1}, false, 0, 0},
    {"decode, block crossings, G=3", 9, 3, 64, 16, 5, {15, 31, 32, 999, 1}, {1, 1, 1, 1, 3}, false, 0, 0},
    {"decode split-K, hd128, G=4", 32, 8, 128, 16, 1, {8000}, {1}, true, 0, 0},
    {"decode G=8, block 32", 32, 4, 128, 32, 3, {100, 2047, 5000}, {1, 1, 1}, false, 0, 0},
    {"decode G=1", 4, 4, 64, 16, 2, {300, 0}, {1, 2}, false, 0, 0},
    {"decode G=16: two head chunks per KV head", 32, 2, 64, 16, 2, {77, 600}, {1, 1}, false, 0, 0},
    {"prefill odd chunk, no prefix", 9, 3, 64, 16, 1, {0}, {77}, false, 0, 0},
    {"prefill over a cached prefix, G=4", 8, 2, 128, 16, 1, {100}, {150}, false, 0, 0},
    {"mixed batch, G=3, hd128", 24, 8, 128, 16, 5, {0, 50, 513, 1000, 7}, {5, 1, 64, 1, 130}, false, 0, 0},
    {"prefill G=8, block 8", 16, 2, 64, 8, 1, {33}, {65}, false, 0, 0},
    {"prefill G=1, hd128", 2, 2, 128, 16, 2, {0, 64}, {200, 64}, false, 0, 0},
    {"decode in a sliding window, split-K", 32, 8, 128, 16, 2, {8000, 40}, {1, 1}, false, 300, 0},
    {"prefill in a sliding window across tiles", 8, 2, 64, 16, 2, {100, 0}, {150, 90}, false, 37, 0},
    {"soft-capped scores, mixed batch", 9, 3, 64, 16, 3, {0, 50, 600}, {70, 1, 1}, false, 0, 3.0f},
    {"window and soft-cap, G=1, hd128", 2, 2, 128, 16, 2, {0, 500}, {130, 1}, false, 64, 5.0f},
};

static void attn_case_run(const AttnCase *c, KAttnPlan *plan) {
    int hd = c->head_dim, bs = c->block_size, H = c->n_heads, nkv = c->n_kv;
    int qs[ATT_MAX_SEQS + 1] = {0}, ctx[ATT_MAX_SEQS], max_blocks = 0, total_blocks = 0;
    for (int s = 0; s < c->n_seqs; s++) {
        qs[s + 1] = qs[s] + c->n_new[s];
        ctx[s] = c->cached[s] + c->n_new[s];
        int nb = (ctx[s] + bs - 1) / bs;
        max_blocks = MAX(max_blocks, nb), total_blocks += nb;
    }
    int nt = qs[c->n_seqs], num_blocks = total_blocks + 3, n_slots = num_blocks * bs;
    // Block tables from a shuffled pool: no sequence's blocks are contiguous.
    int *pool = xmalloc(num_blocks * sizeof(int)), *bt = xmalloc((size_t)c->n_seqs * max_blocks * sizeof(int));
    gt_shuffle(pool, num_blocks);
    int *pos = xmalloc(nt * sizeof(int)), used = 0;
    for (int s = 0; s < c->n_seqs; s++) {
        for (int b = 0; b < max_blocks; b++) bt[s * max_blocks + b] = b * bs < ctx[s] ? pool[used++] : 0;
        for (int i = 0; i < c->n_new[s]; i++) pos[qs[s] + i] = c->cached[s] + i;
    }
    // The cache: random values at every position of every sequence; NaN everywhere else, so a
    // read past a context shows.
    size_t row = (size_t)nkv * hd, cache_n = (size_t)n_slots * row;
    uint16_t *kb = xmalloc(cache_n * 2), *vb = xmalloc(cache_n * 2);
    float *kf = xmalloc(cache_n * sizeof(float)), *vf = xmalloc(cache_n * sizeof(float));
    memset(kb, GT_POISON, cache_n * 2), memset(vb, GT_POISON, cache_n * 2);
    for (size_t i = 0; i < cache_n; i++) kf[i] = vf[i] = NAN;
    for (int s = 0; s < c->n_seqs; s++)
        for (int p = 0; p < ctx[s]; p++) {
            size_t off = (size_t)(bt[s * max_blocks + p / bs] * bs + p % bs) * row;
            for (size_t i = 0; i < row; i++) {
                kb[off + i] = f32_to_bf16(gt_float(-2, 2)), vb[off + i] = f32_to_bf16(gt_float(-1, 1));
                kf[off + i] = bf16_to_f32(kb[off + i]), vf[off + i] = bf16_to_f32(vb[off + i]);
            }
        }
    // With a window: every position before the first row's window is poisoned too (NaN), and the
    // table entries of the blocks wholly before it point far outside the cache, as the
    // scheduler's dropped blocks do (-1): neither twin may read them.
    for (int s = 0; c->window > 0 && s < c->n_seqs; s++) {
        int lo = MAX(0, c->cached[s] - c->window + 1);
        for (int p = 0; p < lo; p++) {
            size_t off = (size_t)(bt[s * max_blocks + p / bs] * bs + p % bs) * row;
            memset(kb + off, GT_POISON, row * 2), memset(vb + off, GT_POISON, row * 2);
            for (size_t i = 0; i < row; i++) kf[off + i] = vf[off + i] = NAN;
        }
        for (int b = 0; (b + 1) * bs <= lo; b++) bt[s * max_blocks + b] = -1000000;
    }
    size_t nq = (size_t)nt * H * hd;
    float *q = xmalloc(nq * sizeof(float)), *ref = xmalloc(nq * sizeof(float));
    gt_fill(q, nq, -2, 2);
    const AttnOpt opt = {.scale = 1.0f / sqrtf((float)hd), .window = c->window, .softcap = c->softcap};
    Batch hb = {.n_tokens = nt, .n_seqs = c->n_seqs, .positions = pos, .query_start = qs, .context_lens = ctx,
                .block_tables = bt, .max_blocks_per_seq = max_blocks};
    KVLayer cpu_cache = {kf, vf, num_blocks, bs, nkv, hd, KV_F32};
    k_attention(ref, q, &cpu_cache, &hb, H, &opt);

    int *d_pos = gt_upload(pos, nt * sizeof(int)), *d_qs = gt_upload(qs, (c->n_seqs + 1) * sizeof(int));
    int *d_ctx = gt_upload(ctx, c->n_seqs * sizeof(int));
    int *d_bt = gt_upload(bt, (size_t)c->n_seqs * max_blocks * sizeof(int));
    uint16_t *d_kc = gt_upload(kb, cache_n * 2), *d_vc = gt_upload(vb, cache_n * 2);
    float *d_q = gt_upload(q, nq * sizeof(float)), *d_out = gt_dev(nq * sizeof(float));
    Batch db = {.n_tokens = nt, .n_seqs = c->n_seqs, .positions = d_pos, .query_start = d_qs,
                .context_lens = d_ctx, .block_tables = d_bt, .max_blocks_per_seq = max_blocks};
    KVLayer gpu_cache = {d_kc, d_vc, num_blocks, bs, nkv, hd, KCUDA_KV_BF16};
    kattn_plan_build(plan, &hb, nkv, c->window, gt_stream);
    k_attention_cuda(d_out, d_q, &gpu_cache, &db, plan, H, &opt, gt_stream);
    float *out = gt_download(d_out, nq * sizeof(float));
    float *q_after = gt_download(d_q, nq * sizeof(float));
    EXPECT(memcmp(q_after, q, nq * sizeof(float)) == 0, "%s: q changed", c->name);

    // Decode rows (f32 arithmetic on the same bf16 values) and prefill rows (bf16 Q and P on the
    // tensor cores) are held to their own tolerances.
    int decode_rows, decode_blocks, prefill_tiles;
    kattn_plan_counts(plan, &decode_rows, &decode_blocks, &prefill_tiles);
    int want_decode = 0;
    for (int s = 0; s < c->n_seqs; s++) {
        bool dec = c->n_new[s] <= 4;
        want_decode += dec ? c->n_new[s] : 0;
        size_t a = (size_t)qs[s] * H * hd, n = (size_t)c->n_new[s] * H * hd;
        char what[128];
        snprintf(what, sizeof(what), "%s: sequence %d (%s, context %d)", c->name, s, dec ? "decode" : "prefill", ctx[s]);
        EXPECT_REL(out + a, ref + a, n, dec ? 1e-4 : TOL_BF16, what);
    }
    EXPECT_EQ_INT(decode_rows, want_decode);
    if (c->expect_split) EXPECT(decode_blocks > decode_rows * nkv, "%s: no split (%d blocks)", c->name, decode_blocks);
    kdev_free(d_pos), kdev_free(d_qs), kdev_free(d_ctx), kdev_free(d_bt), kdev_free(d_kc), kdev_free(d_vc);
    kdev_free(d_q), kdev_free(d_out);
    free(out), free(q_after), free(q), free(ref), free(kb), free(vb), free(kf), free(vf);
    free(pool), free(bt), free(pos);
}

static void test_attention(void) {
    for (size_t ci = 0; ci < ARRAY_LEN(ATTN_CASES); ci++) {
        const AttnCase *c = &ATTN_CASES[ci];
        gt_seed(700 + ci);
        KAttnPlan *plan = kattn_plan_create(MAX_TOKENS, c->n_heads, c->head_dim);
        attn_case_run(c, plan);
        kattn_plan_free(plan);
    }
}

static const AttnCase *attn_case(const char *name_prefix) {
    for (size_t i = 0; i < ARRAY_LEN(ATTN_CASES); i++)
        if (strncmp(ATTN_CASES[i].name, name_prefix, strlen(name_prefix)) == 0) return &ATTN_CASES[i];
    DIE("no attention case %s", name_prefix);
}

// One plan serving several steps in a row (it is rebuilt per step, reused by every layer).
static void test_attention_plan_reuse(void) {
    gt_seed(800);
    KAttnPlan *plan = kattn_plan_create(MAX_TOKENS, 24, 128);
    attn_case_run(attn_case("mixed batch"), plan);
    attn_case_run(attn_case("mixed batch"), plan);
    kattn_plan_free(plan);
    plan = kattn_plan_create(MAX_TOKENS, 32, 128);
    attn_case_run(attn_case("decode split-K"), plan);
    attn_case_run(attn_case("decode G=8"), plan); // another group size on the same plan
    kattn_plan_free(plan);
}

#define CASES(X)                                                                               \
    X(test_embed)                                                                              \
    X(test_dequant)                                                                            \
    X(test_matmul)                                                                             \
    X(test_rmsnorm)                                                                            \
    X(test_silu_mul)                                                                           \
    X(test_add_bias)                                                                           \
    X(test_rope_kv_write)                                                                      \
    X(test_attention)                                                                          \
    X(test_attention_plan_reuse)

GT_MAIN(CASES, MAX_TOKENS, MAX_COLS)
