// test_model.c: the model config, weight binding, KV cache and Batch building, and the
// forward pass against two references on the default SmolLM2-135M Q4_1 model:
// tests/data/golden/exact.txt, an exact float64 numpy forward of the same dequantized weights
// (scripts/make-golden-exact.py), and tests/data/golden/forward.txt, llama.cpp
// (scripts/make-golden-forward.py).
//
// Against the exact forward (the correctness bar):
//  - greedy continuations (64 tokens; all prompts decoded together, one batch row each per
//    step) identical for at least 9 in 10 prompts (EXACT_GREEDY_FRAC: 11 of the 12), any
//    divergence printed with the exact top-1/top-2 margin there and required to be a tie within
//    our error (margin < EXACT_TIE_MARGIN); while our tokens equal the exact ones, the top-5
//    logits agree within EXACT_LOGIT_MEAN_TOL (mean) and EXACT_LOGIT_MAX_TOL (max);
//  - teacher forcing (prompt + the exact continuation prefilled, several sequences packed per
//    step): top-1 agreement >= EXACT_TOP1_MIN and the same top-5 logit bounds.
// Measured: 12 of 12 greedy runs identical, 768 of 768 teacher-forced rows, top-5 logits off
// by 0.0022 in the mean and 0.025 at most (f16 K/V; f32 K/V: 0.0008 and 0.0045). The exact
// forward's own top-1/top-2 margins go down to 0.0008, so a tie can still flip on another
// SIMD path, hence 11 of 12 and not 12. With 8-bit activations in the matmuls (ggml's and
// sluice's former scheme) the same checks measured 4 of 12, 97.5% and a 0.15 mean.
//
// Against llama.cpp, whose 8-bit activations put it ~0.15 (mean top-5 logit) from the exact
// forward, and which does not agree with itself either (its prefill and token-by-token decode
// differ by 0.13 in the mean, max 0.80, top-1 the same at only 97.4% of the rows):
//  - greedy: any divergence from llama.cpp's tokens happens only at a near tie (llama.cpp's own
//    top-2 margin below TIE_MARGIN there), and at least a third of all golden tokens are matched
//    before the divergences; while our tokens equal llama.cpp's, its top-5 logits agree;
//  - teacher forcing against llama.cpp's own prefill of the same text: top-1 agreement >=
//    TOP1_MIN, each disagreement a near tie, and its top-5 logits agree;
// "Logits agree": |ours - llama.cpp| at llama.cpp's top-5 ids has mean <= LOGIT_MEAN_TOL, at most
// LOGIT_OVER_FRAC of them above TIE_MARGIN, none above LOGIT_MAX_TOL. Every divergence from
// llama.cpp seen today is a step where llama.cpp leaves the exact forward, which we follow.
// A real bug (wrong RoPE, norm, mask, head mapping or KV slot) moves logits by whole units and
// breaks every one of these bounds.
//
// Last, prefill in 7-token chunks gives the same logits and greedy tokens as one prefill.
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "engine/model/gguf.h"
#include "engine/kv_cache.h"
#include "engine/model/model.h"
#include "tests/unit/gguf_build.h"
#include "tests/unit/test.h"

#define N_GEN 64
#define N_TOP 5
#define TIE_MARGIN 0.5f      // logits closer than this are a near tie
#define LOGIT_MEAN_TOL 0.25f // observed 0.159-0.160 (llama.cpp against itself: 0.13)
#define LOGIT_MAX_TOL 2.0f   // observed 0.92-1.08 (llama.cpp against itself: 0.80)
#define LOGIT_OVER_FRAC 0.05 // share above TIE_MARGIN; observed 1.4-1.7% (llama.cpp: 1.0%)
#define TOP1_MIN 0.95        // teacher-forced top-1 agreement; observed 98.05% (llama.cpp: 97.4%)
// Against the exact forward (observed values in the file comment):
#define EXACT_GREEDY_FRAC 0.9       // share of prompts with identical 64-token greedy runs
#define EXACT_TOP1_MIN 0.99         // teacher-forced top-1 agreement; observed 100%
#define EXACT_LOGIT_MEAN_TOL 0.01f  // top-5 logits |ours - exact|, mean; observed 0.0022
#define EXACT_LOGIT_MAX_TOL 0.1f    // and max; observed 0.025
// Logits within EXACT_LOGIT_MAX_TOL can only swap two tokens closer than twice that.
#define EXACT_TIE_MARGIN (2 * EXACT_LOGIT_MAX_TOL)
// The 8-bit activation path (test_int8_activations): its top-5 logits move up to ~0.9 from the
// exact forward's, so two tokens can swap where their exact margin is below about twice that;
// observed swaps at margins up to 0.54.
#define INT8_TIE_MARGIN 1.0f
#define MAX_TOKENS 512
#define BLOCK 16

// ----------------------------------------------------------------------------
// golden data

typedef struct {
    int chat, n_tokens;
    int *tokens;
    int greedy[N_GEN];
    int top_id[N_GEN][N_TOP];
    float top_logit[N_GEN][N_TOP];
    int tf_id[N_GEN][N_TOP];      // teacher-forced: the same text in one prefill
    float tf_logit[N_GEN][N_TOP];
} Golden;

static Golden *golden; // llama.cpp: forward.txt
static int n_golden;
static Golden *exact;  // the exact float64 forward: exact.txt (no tf lines)
static int n_exact;
static Model model;
static bool model_ok;

// Skips '#' comment lines; returns false at EOF.
static bool next_word(FILE *f, char *w, size_t cap) {
    for (;;) {
        int ch;
        while ((ch = fgetc(f)) == ' ' || ch == '\n' || ch == '\t' || ch == '\r') {}
        if (ch == EOF) return false;
        if (ch == '#') {
            while ((ch = fgetc(f)) != '\n' && ch != EOF) {}
            continue;
        }
        ungetc(ch, f);
        char fmt[16];
        snprintf(fmt, sizeof fmt, "%%%zus", cap - 1);
        return fscanf(f, fmt, w) == 1;
    }
}

static void golden_free(Golden *gs, int n) {
    for (int p = 0; gs && p < n; p++) free(gs[p].tokens);
    free(gs);
}

// Reads a golden file into *out (n_out prompts); has_tf: it carries the tf lines.
static int golden_load(const char *path, bool has_tf, Golden **out, int *n_out) {
    FILE *f = fopen(path, "r");
    *out = NULL, *n_out = 0;
    if (!f) return SL_ERR;
    char w[64];
    int rc = SL_ERR, n = 0;
    Golden *gs = NULL;
    if (!next_word(f, w, sizeof w) || strcmp(w, "prompts") || fscanf(f, "%d", &n) != 1 || n < 1) goto done;
    gs = xcalloc(n, sizeof(Golden));
    for (int p = 0; p < n; p++) {
        Golden *g = &gs[p];
        int idx, n_gen;
        if (!next_word(f, w, sizeof w) || strcmp(w, "prompt") ||
            fscanf(f, "%d chat %d n_tokens %d", &idx, &g->chat, &g->n_tokens) != 3 || idx != p || g->n_tokens < 1)
            goto done;
        if (!next_word(f, w, sizeof w) || strcmp(w, "tokens")) goto done;
        g->tokens = xmalloc(sizeof(int) * g->n_tokens);
        for (int i = 0; i < g->n_tokens; i++)
            if (fscanf(f, "%d", &g->tokens[i]) != 1) goto done;
        if (!next_word(f, w, sizeof w) || strcmp(w, "greedy") || fscanf(f, "%d", &n_gen) != 1 || n_gen != N_GEN)
            goto done;
        for (int i = 0; i < N_GEN; i++)
            if (fscanf(f, "%d", &g->greedy[i]) != 1) goto done;
        for (int s = 0; s < N_GEN; s++) {
            int step;
            if (!next_word(f, w, sizeof w) || strcmp(w, "top") || fscanf(f, "%d", &step) != 1 || step != s) goto done;
            for (int k = 0; k < N_TOP; k++)
                if (fscanf(f, "%d %f", &g->top_id[s][k], &g->top_logit[s][k]) != 2) goto done;
        }
        for (int s = 0; has_tf && s < N_GEN; s++) {
            int step;
            if (!next_word(f, w, sizeof w) || strcmp(w, "tf") || fscanf(f, "%d", &step) != 1 || step != s) goto done;
            for (int k = 0; k < N_TOP; k++)
                if (fscanf(f, "%d %f", &g->tf_id[s][k], &g->tf_logit[s][k]) != 2) goto done;
        }
        if (!next_word(f, w, sizeof w) || strcmp(w, "end")) goto done;
    }
    rc = SL_OK;
done:
    fclose(f);
    if (rc != SL_OK) {
        golden_free(gs, n);
        return rc;
    }
    *out = gs, *n_out = n;
    return rc;
}

// ----------------------------------------------------------------------------
// running the model: one KV cache, sequences prefilled in chunks, decode batches

#define SEQ_SLOTS 16              // sequences the cache holds at once
#define SEQ_BLOCKS (512 / BLOCK) // blocks of each: 512 tokens

static KVCache kv;
static BatchBuf bb;
static float *logits; // [MAX_TOKENS, vocab]
// The tests' sequences need no block allocator (the engine's is the block pool): sequence slot s
// owns blocks s, s + SEQ_SLOTS, s + 2 * SEQ_SLOTS, ..., interleaved so that no block table is
// the identity.
static int seq_table[SEQ_SLOTS][SEQ_BLOCKS];

static void kv_setup(void) {
    // room for every golden prompt + continuation at once (16 prompts of 512 tokens)
    kv_cache_init(&kv, model.cfg.n_layers, model.cfg.n_kv_heads, model.cfg.head_dim, BLOCK, KV_F16,
                  SEQ_SLOTS * SEQ_BLOCKS);
    for (int s = 0; s < SEQ_SLOTS; s++)
        for (int j = 0; j < SEQ_BLOCKS; j++) seq_table[s][j] = j * SEQ_SLOTS + s;
    batch_buf_init(&bb, MAX_TOKENS, SEQ_SLOTS, SEQ_BLOCKS);
    logits = xmalloc(sizeof(float) * (size_t)MAX_TOKENS * model.cfg.vocab);
}

// Appends rows pos0..pos0+n-1 of the sequence in slot s to the batch (see batch_buf_add).
static void seq_add(int s, int pos0, const int *tokens, int n, int n_logits) {
    CHECK(s >= 0 && s < SEQ_SLOTS && pos0 + n <= SEQ_BLOCKS * BLOCK, "slot %d, %d positions", s, pos0 + n);
    batch_buf_add(&bb, seq_table[s], SEQ_BLOCKS, BLOCK, pos0, tokens, n, n_logits);
}

// Prefills tokens[0..n) of a fresh sequence in slot s in chunks of `chunk`; the logits of the
// last row go to out (vocab floats).
static void prefill(int s, const int *tokens, int n, int chunk, float *out) {
    for (int pos = 0; pos < n; pos += chunk) {
        int len = MIN(chunk, n - pos);
        batch_buf_clear(&bb);
        seq_add(s, pos, tokens + pos, len, pos + len == n ? 1 : 0);
        model_forward(&model, kv.layers, &bb.b, logits);
    }
    memcpy(out, logits, sizeof(float) * model.cfg.vocab);
}

// Greedy: the largest logit, the first one on ties.
static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static float top2_margin(const Golden *g, int step) { return g->top_logit[step][0] - g->top_logit[step][1]; }

// Differences between our logits and a reference's at its top-5 ids.
typedef struct {
    int n, over;
    double sum, max;
} LogitErr;

static void logit_err_add(LogitErr *e, double diff) {
    diff = fabs(diff);
    e->n++;
    e->sum += diff;
    e->max = MAX(e->max, diff);
    e->over += diff > TIE_MARGIN;
}

static void logit_err_print(const LogitErr *e, const char *what, const char *ref) {
    fprintf(stderr, "  %s: top-5 logits vs %s |diff| mean %.4f max %.4f, %d of %d above %.2f\n", what, ref,
            e->n ? e->sum / e->n : 0, e->max, e->over, e->n, TIE_MARGIN);
}

// The llama.cpp bounds (see the file comment).
static void logit_err_check_vs(const LogitErr *e, const char *what, const char *ref) {
    logit_err_print(e, what, ref);
    EXPECT(e->n > 0);
    EXPECT(e->over <= LOGIT_OVER_FRAC * e->n, "%s: %d of %d logits off by more than %.2f", what, e->over, e->n,
           TIE_MARGIN);
    EXPECT(e->max <= LOGIT_MAX_TOL, "%s: max |diff| %.4f", what, e->max);
    EXPECT(e->sum <= LOGIT_MEAN_TOL * e->n, "%s: mean |diff| %.4f", what, e->sum / e->n);
}
static void logit_err_check(const LogitErr *e, const char *what) {
    logit_err_check_vs(e, what, "llama.cpp");
}

// ----------------------------------------------------------------------------
// config and loading

static void test_config_default_model(void) {
    ASSERT(model_ok);
    const ModelConfig *c = &model.cfg;
    EXPECT_STR_EQ(c->arch, "llama");
    EXPECT_EQ_INT(c->n_layers, 30);
    EXPECT_EQ_INT(c->dim, 576);
    EXPECT_EQ_INT(c->n_heads, 9);
    EXPECT_EQ_INT(c->n_kv_heads, 3);
    EXPECT_EQ_INT(c->head_dim, 64);
    EXPECT_EQ_INT(c->ffn_dim, 1536);
    EXPECT_EQ_INT(c->vocab, 49152);
    EXPECT_EQ_INT(c->context_len, 8192);
    EXPECT_EQ_INT(c->rope_dim, 64);
    EXPECT_EQ_INT(c->rope_layout, ROPE_NORMAL);
    EXPECT_NEAR(c->rope_base, 100000.0, 1e-3);
    EXPECT_NEAR(c->norm_eps, 1e-5, 1e-9);
    EXPECT(c->tied_embeddings);
    // tied: the LM head is the embedding table (Q8_0), the layers are Q4_1
    EXPECT(model.w.output.data == model.w.tok_embd.data);
    EXPECT_EQ_INT(model.w.tok_embd.type, QTYPE_Q8_0);
    EXPECT_EQ_INT(model.w.layers[0].wq.type, QTYPE_Q4_1);
    EXPECT_EQ_INT(model.w.layers[29].w_down.rows, 576);
    EXPECT_EQ_INT(model.w.layers[29].w_down.cols, 1536);
    EXPECT_EQ_INT(model.w.layers[0].wk.rows, 192);
    EXPECT_EQ_INT(model_max_cols(&model), 1536);
    EXPECT(model.weight_bytes > 50u << 20 && model.weight_bytes < 120u << 20, "%zu", model.weight_bytes);
}

// Crafted files (tests/unit/gguf_build.h writes them): metadata of a few types, tensors of zeros.
typedef struct {
    const char *name;
    int n_dims;
    int64_t ne[2];
    int type;
} TensorSpec;

static Buf gguf_build(const Meta *kvs, int n_kv, const TensorSpec *ts, int n_t) {
    Buf b = {0};
    gguf_put_header(&b, kvs, n_kv, n_t);
    uint64_t off = 0;
    for (int i = 0; i < n_t; i++) {
        gguf_put_tensor_info(&b, ts[i].name, ts[i].n_dims, ts[i].ne, ts[i].type, off);
        int64_t n = ts[i].ne[0] * (ts[i].n_dims > 1 ? ts[i].ne[1] : 1);
        off += (qtype_row_size(ts[i].type, n) + 31) & ~(uint64_t)31;
    }
    static const uint8_t zeros[32];
    buf_pad(&b);
    for (uint64_t i = 0; i < off; i += 32) buf_put(&b, zeros, 32);
    return b;
}

// A complete 1-layer llama: dim 64, 2 heads of 32, 1 KV head, ffn 96, vocab 8, F32 weights.
static const Meta TINY_KV[] = {
    {"general.architecture", 's', "llama", 0},
    {"llama.block_count", 'u', NULL, 1},
    {"llama.context_length", 'u', NULL, 128},
    {"llama.embedding_length", 'u', NULL, 64},
    {"llama.feed_forward_length", 'u', NULL, 96},
    {"llama.attention.head_count", 'u', NULL, 2},
    {"llama.attention.head_count_kv", 'u', NULL, 1},
    {"llama.attention.layer_norm_rms_epsilon", 'f', NULL, 1e-6},
    {"llama.rope.freq_base", 'f', NULL, 500000},
};
static const TensorSpec TINY_T[] = {
    {"token_embd.weight", 2, {64, 8}, QTYPE_F32},
    {"blk.0.attn_norm.weight", 1, {64, 1}, QTYPE_F32},
    {"blk.0.attn_q.weight", 2, {64, 64}, QTYPE_F32},
    {"blk.0.attn_k.weight", 2, {64, 32}, QTYPE_F32},
    {"blk.0.attn_v.weight", 2, {64, 32}, QTYPE_F32},
    {"blk.0.attn_output.weight", 2, {64, 64}, QTYPE_F32},
    {"blk.0.ffn_norm.weight", 1, {64, 1}, QTYPE_F32},
    {"blk.0.ffn_gate.weight", 2, {64, 96}, QTYPE_F32},
    {"blk.0.ffn_up.weight", 2, {64, 96}, QTYPE_F32},
    {"blk.0.ffn_down.weight", 2, {96, 64}, QTYPE_F32},
    {"output_norm.weight", 1, {64, 1}, QTYPE_F32},
    {"output.weight", 2, {64, 8}, QTYPE_F32},
};
#define TINY_NKV ((int)ARRAY_LEN(TINY_KV))
#define TINY_NT ((int)ARRAY_LEN(TINY_T))

// Writes the buffer to a temp file and runs model_load on it.
static int load_crafted(Buf *b, Model *m, char *err) {
    char path[] = "/tmp/sluice_test_model_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK(write(fd, b->buf, b->len) == (ssize_t)b->len);
    close(fd);
    int rc = model_load(m, path, 4, err);
    unlink(path);
    return rc;
}

static void test_load_tiny_model(void) {
    Buf b = gguf_build(TINY_KV, TINY_NKV, TINY_T, TINY_NT);
    Model m;
    char err[ERR_MAX] = "";
    int rc = load_crafted(&b, &m, err);
    EXPECT_EQ_INT(rc, SL_OK);
    if (rc != SL_OK) fprintf(stderr, "  %s\n", err);
    EXPECT_EQ_INT(m.cfg.head_dim, 32);
    EXPECT_EQ_INT(m.cfg.rope_dim, 32); // defaults to head_dim
    EXPECT_EQ_INT(m.cfg.vocab, 8);
    EXPECT(!m.cfg.tied_embeddings);
    EXPECT(m.w.output.data != m.w.tok_embd.data);
    EXPECT_NEAR(m.cfg.rope_base, 500000, 1e-3);
    model_free(&m);
    model_free(&m); // a zeroed model frees again safely
    free(b.buf);

    // f16 norms (as safetensors and dummy weights have them) are converted to f32 at load, into
    // the model's own buffer; f32 ones stay views
    TensorSpec ts[TINY_NT];
    memcpy(ts, TINY_T, sizeof ts);
    ts[6].type = QTYPE_F16; // blk.0.ffn_norm.weight
    b = gguf_build(TINY_KV, TINY_NKV, ts, TINY_NT);
    rc = load_crafted(&b, &m, err);
    EXPECT_EQ_INT(rc, SL_OK);
    if (rc == SL_OK) {
        const char *own = m.owned, *norm = (const char *)m.w.layers[0].ffn_norm;
        EXPECT(own && norm >= own && norm + 64 * sizeof(float) <= own + m.owned_bytes);
        EXPECT((const char *)m.w.layers[0].attn_norm < own || (const char *)m.w.layers[0].attn_norm >= own + m.owned_bytes);
    }
    model_free(&m);
    free(b.buf);
}

// Each case edits the tiny model (one metadata key or one tensor) and names the error it expects.
static void test_config_errors(void) {
    static const struct {
        const char *what;
        const char *key;   // metadata key to replace or drop (NULL: none)
        Meta kv;           // its new value (kind 0: dropped)
        const char *tensor; // tensor to replace or drop (NULL: none)
        TensorSpec t;      // its new spec (name NULL: dropped)
        const char *extra_tensor;
        const char *want;  // substring of the error
    } cases[] = {
        {"gpt2 arch", "general.architecture", {"general.architecture", 's', "gpt2", 0}, NULL, {0}, NULL,
         "unsupported architecture 'gpt2' (supported: llama, qwen2, qwen3, gemma2, gemma3, phi3)"},
        {"no arch", "general.architecture", {0}, NULL, {0}, NULL, "general.architecture is missing"},
        {"no block_count", "llama.block_count", {0}, NULL, {0}, NULL, "llama.block_count is missing"},
        {"arch key of wrong type", "llama.embedding_length", {"llama.embedding_length", 's', "64", 0}, NULL, {0}, NULL,
         "llama.embedding_length is not an integer"},
        {"more kv heads than heads", "llama.attention.head_count_kv",
         {"llama.attention.head_count_kv", 'u', NULL, 3}, NULL, {0}, NULL, "out of range"},
        {"no eps", "llama.attention.layer_norm_rms_epsilon", {0}, NULL, {0}, NULL, "layer_norm_rms_epsilon is missing"},
        {"rope scaling", NULL, {0}, NULL, {0}, NULL, NULL},
        {"missing tensor", NULL, {0}, "blk.0.ffn_up.weight", {NULL, 0, {0, 0}, 0}, NULL,
         "tensor blk.0.ffn_up.weight is missing"},
        {"wrong shape", NULL, {0}, "blk.0.attn_k.weight", {"blk.0.attn_k.weight", 2, {64, 64}, QTYPE_F32}, NULL,
         "tensor blk.0.attn_k.weight has shape [64, 64] (2 dims), expected [64, 32]"},
        {"norm quantized", NULL, {0}, "blk.0.ffn_norm.weight", {"blk.0.ffn_norm.weight", 1, {64, 1}, QTYPE_Q8_0}, NULL,
         "tensor blk.0.ffn_norm.weight has type Q8_0, expected F32 (or F16/BF16)"},
        {"embedding width", NULL, {0}, "token_embd.weight", {"token_embd.weight", 2, {32, 8}, QTYPE_F32}, NULL,
         "token_embd.weight has shape [32, 8], expected [64, vocab]"},
        {"bias tensor", NULL, {0}, NULL, {0}, "blk.0.attn_q.bias", "tensor blk.0.attn_q.bias is not part of the llama forward"},
    };
    for (size_t ci = 0; ci < ARRAY_LEN(cases); ci++) {
        Meta kvs[TINY_NKV + 2];
        TensorSpec ts[TINY_NT + 1];
        int nkv = 0, nt = 0;
        for (int i = 0; i < TINY_NKV; i++) {
            if (cases[ci].key && !strcmp(TINY_KV[i].key, cases[ci].key)) {
                if (cases[ci].kv.kind) kvs[nkv++] = cases[ci].kv;
            } else kvs[nkv++] = TINY_KV[i];
        }
        const char *want = cases[ci].want;
        if (!strcmp(cases[ci].what, "rope scaling")) {
            kvs[nkv++] = (Meta){"llama.rope.scaling.type", 's', "linear", 0};
            kvs[nkv++] = (Meta){"llama.rope.scaling.factor", 'f', NULL, 4};
            want = "RoPE scaling 'linear' (factor 4) is not supported yet";
        }
        for (int i = 0; i < TINY_NT; i++) {
            if (cases[ci].tensor && !strcmp(TINY_T[i].name, cases[ci].tensor)) {
                if (cases[ci].t.name) ts[nt++] = cases[ci].t;
            } else ts[nt++] = TINY_T[i];
        }
        if (cases[ci].extra_tensor) ts[nt++] = (TensorSpec){cases[ci].extra_tensor, 1, {64, 1}, QTYPE_F32};
        Buf b = gguf_build(kvs, nkv, ts, nt);

        // the config alone, from a parsed buffer
        if (!cases[ci].tensor && !cases[ci].extra_tensor) {
            GGUF g;
            char err[ERR_MAX] = "";
            ASSERT(gguf_parse(&g, b.buf, b.len, err) == SL_OK, "%s: %s", cases[ci].what, err);
            ModelConfig c;
            EXPECT_EQ_INT(model_config_from_gguf(&c, &g, err), SL_ERR);
            EXPECT(strstr(err, want) != NULL, "%s: got '%s', want '%s'", cases[ci].what, err, want);
            gguf_close(&g);
        }
        // the whole load, from a file: the message also names the file
        Model m;
        char err[ERR_MAX] = "";
        EXPECT_EQ_INT(load_crafted(&b, &m, err), SL_ERR);
        EXPECT(strstr(err, want) != NULL && strstr(err, "/tmp/sluice_test_model_") == err,
               "%s: got '%s', want '%s'", cases[ci].what, err, want);
        EXPECT(strchr(err, '\n') == NULL, "one line");
        EXPECT(m.w.layers == NULL && m.s.slab == NULL);
        model_free(&m);
        free(b.buf);
    }
}

// The context limit: the model's by default, a smaller request as asked, a larger one refused;
// a sliding-window model is not capped to its window (attention is windowed).
static void test_config_max_len(void) {
    static const struct { int ctx, window, requested, rc, want; } cases[] = {
        {8192, 0, 0, SL_OK, 8192},        {8192, 0, 1000, SL_OK, 1000}, {8192, 0, 8193, SL_ERR, 0},
        {32768, 4096, 0, SL_OK, 32768},   {32768, 4096, 8192, SL_OK, 8192},
        {32768, 4096, 2048, SL_OK, 2048}, {32768, 4096, 40000, SL_ERR, 0},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        ModelConfig c = {.context_len = cases[i].ctx, .sliding_window = cases[i].window};
        char err[ERR_MAX] = "";
        int out = -1;
        EXPECT_EQ_INT(model_config_max_len(&c, cases[i].requested, &out, err), cases[i].rc);
        if (cases[i].rc == SL_OK) EXPECT_EQ_INT(out, cases[i].want);
        else EXPECT(strstr(err, "exceeds the model's context length") != NULL, "%s", err);
    }
}

// ----------------------------------------------------------------------------
// KV cache and Batch building

static void test_kv_cache_blocks(void) {
    size_t per = kv_cache_block_bytes(2, 1, 32, 4, KV_F32);
    EXPECT_EQ_INT(per, 2 * 2 * 4 * 32 * 4);
    EXPECT_EQ_INT(kv_cache_block_bytes(2, 1, 32, 4, KV_F16), per / 2);
    EXPECT_EQ_INT(kv_cache_blocks_in(per - 1, per, 4), 0);
    EXPECT_EQ_INT(kv_cache_blocks_in(per * 3 + per / 2, per, 4), 3);
    EXPECT_EQ_INT(kv_cache_blocks_in((size_t)1 << 50, 1, 16), (1 << 30) / 16); // every slot id fits an int
    size_t def = kv_cache_default_memory();
    EXPECT(def >= ((size_t)1 << 20) && def <= ((size_t)2 << 30), "default KV memory %zu", def);

    KVCache c;
    kv_cache_init(&c, 2, 1, 32, 4, KV_F32, 3);
    EXPECT_EQ_INT(c.num_blocks, 3);
    EXPECT_EQ_INT(c.bytes, 3 * per);
    // layers and K/V are disjoint, consecutive carvings of the slab
    EXPECT((char *)c.layers[0].k == (char *)c.slab);
    EXPECT((char *)c.layers[0].v - (char *)c.layers[0].k == 3 * 4 * 32 * 4);
    EXPECT((char *)c.layers[1].k - (char *)c.layers[0].v == 3 * 4 * 32 * 4);
    EXPECT_EQ_INT(c.layers[1].num_blocks, 3);
    // copy-on-write: block 0 -> block 2 in every layer, K and V; block 1 untouched
    float *f = c.slab;
    size_t nf = c.bytes / sizeof(float), per_half_block = 4 * 32; // floats of one block of one K (or V)
    for (size_t i = 0; i < nf; i++) f[i] = (float)i;
    kv_cache_copy_block(&c, 0, 2);
    int bad = 0;
    for (size_t i = 0; i < nf; i++) {
        size_t half = i / (3 * per_half_block), blk = i / per_half_block % 3, off = i % per_half_block;
        float want = blk == 2 ? (float)(half * 3 * per_half_block + off) : (float)i;
        bad += f[i] != want;
    }
    EXPECT_EQ_INT(bad, 0);

    // a batch of two sequences: a (blocks 2, 0; positions 3..4, both sampled) and a new one
    // (block 1; position 0)
    const int a[] = {2, 0}, b[] = {1};
    BatchBuf B;
    batch_buf_init(&B, 8, 2, 3);
    int ta[] = {11, 12}, tb[] = {21};
    EXPECT_EQ_INT(batch_buf_add(&B, a, 2, 4, 3, ta, 2, 2), 0);
    EXPECT_EQ_INT(batch_buf_add(&B, b, 1, 4, 0, tb, 1, 1), 2);
    EXPECT_EQ_INT(B.b.n_tokens, 3);
    EXPECT_EQ_INT(B.b.n_seqs, 2);
    EXPECT_EQ_INT(B.b.n_sample, 3);
    EXPECT_EQ_INT(B.b.token_ids[1], 12);
    EXPECT_EQ_INT(B.b.slot_mapping[0], 2 * 4 + 3);
    EXPECT_EQ_INT(B.b.slot_mapping[1], 0 * 4 + 0);
    EXPECT_EQ_INT(B.b.slot_mapping[2], 1 * 4 + 0);
    EXPECT_EQ_INT(B.b.query_start[1], 2);
    EXPECT_EQ_INT(B.b.query_start[2], 3);
    EXPECT_EQ_INT(B.b.context_lens[0], 5);
    EXPECT_EQ_INT(B.b.context_lens[1], 1);
    EXPECT_EQ_INT(B.b.block_tables[0], 2);
    EXPECT_EQ_INT(B.b.block_tables[1], 0);
    EXPECT_EQ_INT(B.b.block_tables[2], -1); // beyond the context: unused
    EXPECT_EQ_INT(B.b.block_tables[3], 1);
    EXPECT_EQ_INT(B.b.block_tables[4], -1);
    EXPECT_EQ_INT(B.b.positions[1], 4);
    EXPECT_EQ_INT(B.b.logits_rows[2], 2);
    batch_buf_clear(&B);
    EXPECT_EQ_INT(B.b.n_tokens, 0);
    batch_buf_free(&B);
    kv_cache_free(&c);
    kv_cache_free(&c); // a zeroed cache frees to nothing
}

// ----------------------------------------------------------------------------
// forward against llama.cpp and the exact forward

enum { REF_LLAMA, REF_EXACT, N_REFS };

// The exact forward's prompts must be forward.txt's, token for token (the decode is shared).
static bool exact_prompts_match(void) {
    if (n_exact != n_golden) return false;
    for (int p = 0; p < n_exact; p++)
        if (exact[p].n_tokens != golden[p].n_tokens ||
            memcmp(exact[p].tokens, golden[p].tokens, sizeof(int) * exact[p].n_tokens) != 0)
            return false;
    return true;
}

// One greedy decode of every prompt (prefilled one by one, then decoded together: one batch row
// each per step), shared by the checks against both references: our tokens, and per reference
// the top-5 logit differences over the steps where our context still equals the reference's.
static struct {
    bool done;
    int (*ours)[N_GEN];
    LogitErr err[N_REFS];
} greedy;

static void greedy_run(void) {
    if (greedy.done) return;
    greedy.done = true;
    const Golden *refs[N_REFS] = {golden, exact_prompts_match() ? exact : NULL};
    int vocab = model.cfg.vocab;
    CHECK(n_golden <= SEQ_SLOTS);
    greedy.ours = xcalloc(n_golden, sizeof *greedy.ours);
    float *rows = xmalloc(sizeof(float) * vocab * n_golden);
    bool (*in_sync)[N_REFS] = xcalloc(n_golden, sizeof *in_sync);
    for (int step = 0; step < N_GEN; step++) {
        const float *l0 = logits;
        if (step == 0) {
            for (int p = 0; p < n_golden; p++) prefill(p, golden[p].tokens, golden[p].n_tokens, MAX_TOKENS,
                                                       rows + (size_t)p * vocab);
            l0 = rows;
        } else {
            batch_buf_clear(&bb);
            for (int p = 0; p < n_golden; p++) {
                int pos = golden[p].n_tokens + step - 1;
                seq_add(p, pos, &greedy.ours[p][step - 1], 1, 1);
            }
            model_forward(&model, kv.layers, &bb.b, logits);
        }
        for (int p = 0; p < n_golden; p++) {
            const float *l = l0 + (size_t)p * vocab;
            greedy.ours[p][step] = argmax(l, vocab);
            for (int r = 0; r < N_REFS; r++) {
                const Golden *g = refs[r] ? &refs[r][p] : NULL;
                if (!g || (step > 0 && !in_sync[p][r])) continue;
                for (int k = 0; k < N_TOP; k++) logit_err_add(&greedy.err[r], l[g->top_id[step][k]] - g->top_logit[step][k]);
                in_sync[p][r] = greedy.ours[p][step] == g->greedy[step];
            }
        }
    }
    free(rows);
    free(in_sync);
}

// The first step where our greedy tokens leave g's (N_GEN: none).
static int greedy_divergence(const int *ours, const Golden *g) {
    int s = 0;
    while (s < N_GEN && ours[s] == g->greedy[s]) s++;
    return s;
}

static void test_greedy_matches_golden(void) {
    ASSERT(model_ok && n_golden >= 10);
    greedy_run();
    logit_err_check(&greedy.err[REF_LLAMA], "greedy decode");
    int identical = 0, matched = 0;
    for (int p = 0; p < n_golden; p++) {
        int s = greedy_divergence(greedy.ours[p], &golden[p]);
        matched += s;
        if (s == N_GEN) {
            identical++;
            continue;
        }
        float margin = top2_margin(&golden[p], s);
        fprintf(stderr, "  greedy: prompt %d diverges at step %d (ours %d, llama.cpp %d; its top-2 margin %.3f)\n", p,
                s, greedy.ours[p][s], golden[p].greedy[s], margin);
        EXPECT(margin < TIE_MARGIN, "prompt %d diverged where llama.cpp was sure (margin %.3f)", p, margin);
    }
    fprintf(stderr, "  greedy: %d of %d prompts identical to llama.cpp over %d tokens; %d of %d tokens matched before "
            "divergence\n", identical, n_golden, N_GEN, matched, n_golden * N_GEN);
    EXPECT(matched * 3 >= n_golden * N_GEN, "%d of %d", matched, n_golden * N_GEN);
}

// Greedy continuations identical to the exact forward's for at least EXACT_GREEDY_FRAC of the
// prompts; any divergence is reported with the exact top-1/top-2 margin at that step.
static void test_greedy_matches_exact(void) {
    ASSERT(model_ok && n_exact >= 10 && exact_prompts_match());
    greedy_run();
    const LogitErr *e = &greedy.err[REF_EXACT];
    logit_err_print(e, "greedy decode", "exact");
    EXPECT(e->n > 0);
    EXPECT(e->max <= EXACT_LOGIT_MAX_TOL, "max |diff| %.4f", e->max);
    EXPECT(e->sum <= EXACT_LOGIT_MEAN_TOL * e->n, "mean |diff| %.4f", e->sum / e->n);
    int identical = 0;
    for (int p = 0; p < n_exact; p++) {
        int s = greedy_divergence(greedy.ours[p], &exact[p]);
        if (s == N_GEN) {
            identical++;
            continue;
        }
        float margin = top2_margin(&exact[p], s);
        fprintf(stderr, "  greedy: prompt %d differs from the exact forward at step %d (ours %d, exact %d; exact "
                "top-1/top-2 margin %.4f)\n", p, s, greedy.ours[p][s], exact[p].greedy[s], margin);
        EXPECT(margin < EXACT_TIE_MARGIN, "prompt %d left the exact forward where it was sure (margin %.4f)", p, margin);
    }
    int need = (int)ceil(EXACT_GREEDY_FRAC * n_exact - 1e-9);
    fprintf(stderr, "  greedy: %d of %d prompts identical to the exact forward over %d tokens (need %d)\n", identical,
            n_exact, N_GEN, need);
    EXPECT(identical >= need, "%d of %d identical", identical, n_exact);
}

// Prefills prompt + ref's greedy continuation for every prompt (whole sequences packed into
// steps of up to MAX_TOKENS rows) and hands row_fn the logits of the 64 rows that predict the
// continuation: row s has seen the prompt and ref's tokens 0..s-1.
typedef void (*RowFn)(int prompt, int step, const float *l, void *ctx);

static void teacher_forced_run(const Golden *ref, int n_ref, RowFn row_fn, void *ctx) {
    int vocab = model.cfg.vocab;
    int p = 0;
    while (p < n_ref) {
        int first = p, rows = 0;
        int *tokens[SEQ_SLOTS];
        batch_buf_clear(&bb);
        while (p < n_ref && p - first < SEQ_SLOTS) {
            const Golden *g = &ref[p];
            int n = g->n_tokens + N_GEN - 1; // the last greedy token is never fed
            if (rows + n > MAX_TOKENS) break;
            int *t = tokens[p - first] = xmalloc(sizeof(int) * n);
            memcpy(t, g->tokens, sizeof(int) * g->n_tokens);
            memcpy(t + g->n_tokens, g->greedy, sizeof(int) * (N_GEN - 1));
            seq_add(p - first, 0, t, n, N_GEN);
            rows += n;
            p++;
        }
        CHECK(p > first, "a golden sequence longer than %d tokens", MAX_TOKENS);
        model_forward(&model, kv.layers, &bb.b, logits);
        for (int q = first; q < p; q++) {
            for (int s = 0; s < N_GEN; s++) row_fn(q, s, logits + ((size_t)(q - first) * N_GEN + s) * vocab, ctx);
            free(tokens[q - first]);
        }
    }
}

typedef struct {
    int agree, agree_decode, total;
    LogitErr err;
} TFStats;

static void tf_row_llama(int q, int s, const float *l, void *ctx) {
    TFStats *st = ctx;
    const Golden *g = &golden[q];
    int top = argmax(l, model.cfg.vocab);
    st->agree += top == g->tf_id[s][0];
    if (top != g->tf_id[s][0]) {
        // a near tie on llama.cpp's side: our pick is in its top-5, close to its best
        float gap = INFINITY;
        for (int k = 1; k < N_TOP; k++)
            if (g->tf_id[s][k] == top) gap = g->tf_logit[s][0] - g->tf_logit[s][k];
        EXPECT(gap < TIE_MARGIN, "prompt %d row %d: ours %d, llama.cpp %d by %.3f", q, s, top, g->tf_id[s][0], gap);
    }
    st->agree_decode += top == g->greedy[s];
    st->total++;
    for (int k = 0; k < N_TOP; k++) logit_err_add(&st->err, l[g->tf_id[s][k]] - g->tf_logit[s][k]);
}

// Prompt + llama.cpp's continuation against llama.cpp's own prefill of the same text.
static void test_teacher_forced_matches_golden(void) {
    ASSERT(model_ok && n_golden >= 10);
    TFStats st = {0};
    teacher_forced_run(golden, n_golden, tf_row_llama, &st);
    fprintf(stderr, "  teacher-forced: top-1 agreement with llama.cpp's prefill %d/%d (%.2f%%), with its decode %d/%d\n",
            st.agree, st.total, 100.0 * st.agree / st.total, st.agree_decode, st.total);
    EXPECT(st.agree >= TOP1_MIN * st.total, "%d/%d", st.agree, st.total);
    logit_err_check(&st.err, "teacher-forced");
}

static void tf_row_exact(int q, int s, const float *l, void *ctx) {
    TFStats *st = ctx;
    const Golden *g = &exact[q];
    int top = argmax(l, model.cfg.vocab);
    st->agree += top == g->greedy[s];
    if (top != g->greedy[s]) {
        fprintf(stderr, "  teacher-forced: prompt %d row %d: ours %d, exact %d (exact top-1/top-2 margin %.4f)\n", q, s,
                top, g->greedy[s], top2_margin(g, s));
        EXPECT(top2_margin(g, s) < EXACT_TIE_MARGIN, "prompt %d row %d: not a tie", q, s);
    }
    st->total++;
    for (int k = 0; k < N_TOP; k++) logit_err_add(&st->err, l[g->top_id[s][k]] - g->top_logit[s][k]);
}

// Prompt + the exact forward's continuation in one prefill: its top-1 at >= EXACT_TOP1_MIN of
// the rows, and its top-5 logits (the exact forward's prefill and decode logits are the same).
static void test_teacher_forced_matches_exact(void) {
    ASSERT(model_ok && n_exact >= 10);
    TFStats st = {0};
    teacher_forced_run(exact, n_exact, tf_row_exact, &st);
    fprintf(stderr, "  teacher-forced: top-1 agreement with the exact forward %d/%d (%.2f%%)\n", st.agree, st.total,
            100.0 * st.agree / st.total);
    EXPECT(st.agree >= EXACT_TOP1_MIN * st.total, "%d/%d", st.agree, st.total);
    logit_err_print(&st.err, "teacher-forced", "exact");
    EXPECT(st.err.max <= EXACT_LOGIT_MAX_TOL, "max |diff| %.4f", st.err.max);
    EXPECT(st.err.sum <= EXACT_LOGIT_MEAN_TOL * st.err.n, "mean |diff| %.4f", st.err.sum / st.err.n);
}

// The 8-bit activation path (--cpu-activations int8) quantizes the matmul inputs as llama.cpp
// does, so it is held to the bounds llama.cpp meets, against both references: teacher-forced
// top-1 agreement with the exact forward >= TOP1_MIN, each miss a near tie there (top-2 margin
// < INT8_TIE_MARGIN), top-5 logits within the llama.cpp bounds; greedy runs leave the exact
// forward only at near ties; and the checks against llama.cpp above pass unchanged. The
// agreement is printed for docs/architecture.md. Any float rounding change (another SIMD path, a
// kernel's summation order) can move an activation across an 8-bit rounding boundary and the
// logits by up to the int8 error, so these figures vary by a few rows between builds and paths.
// Runs last: it replaces the greedy run the tests above share.
static void tf_row_int8(int q, int s, const float *l, void *ctx) {
    TFStats *st = ctx;
    const Golden *g = &exact[q];
    int top = argmax(l, model.cfg.vocab);
    st->agree += top == g->greedy[s];
    if (top != g->greedy[s])
        EXPECT(top2_margin(g, s) < INT8_TIE_MARGIN, "int8: prompt %d row %d: ours %d, exact %d by %.3f", q, s, top,
               g->greedy[s], top2_margin(g, s));
    st->total++;
    for (int k = 0; k < N_TOP; k++) logit_err_add(&st->err, l[g->top_id[s][k]] - g->top_logit[s][k]);
}

static void test_int8_activations(void) {
    ASSERT(model_ok && n_exact >= 10 && exact_prompts_match());
    k_set_activations(K_ACT_INT8);
    // reloaded as the engine loads it with int8 set: on the "amx" path the matrices get the
    // repacked copy its kernels read
    char err[ERR_MAX];
    model_free(&model);
    model_ok = model_load(&model, TEST_MODEL_PATH, MAX_TOKENS, err) == SL_OK;
    ASSERT(model_ok, "%s", err);
    fprintf(stderr, "  int8 activations, %s kernels%s\n", k_int8_path(),
            model.w.layers[0].wq.pack ? " (weights repacked)" : "");
    TFStats st = {0};
    teacher_forced_run(exact, n_exact, tf_row_int8, &st);
    fprintf(stderr, "  int8 teacher-forced: top-1 agreement with the exact forward %d/%d (%.2f%%)\n", st.agree,
            st.total, 100.0 * st.agree / st.total);
    EXPECT(st.agree >= TOP1_MIN * st.total, "%d/%d", st.agree, st.total);
    logit_err_check_vs(&st.err, "int8 teacher-forced", "exact");
    free(greedy.ours);
    memset(&greedy, 0, sizeof greedy);
    greedy_run();
    int identical = 0;
    for (int p = 0; p < n_exact; p++) {
        int s = greedy_divergence(greedy.ours[p], &exact[p]);
        identical += s == N_GEN;
        if (s < N_GEN)
            EXPECT(top2_margin(&exact[p], s) < INT8_TIE_MARGIN, "int8: prompt %d left the exact forward at step %d by %.3f",
                   p, s, top2_margin(&exact[p], s));
    }
    fprintf(stderr, "  int8 greedy: %d of %d prompts identical to the exact forward over %d tokens\n", identical, n_exact,
            N_GEN);
    test_greedy_matches_golden();
    test_teacher_forced_matches_golden();
    k_set_activations(K_ACT_INT16);
}

// Prefill in 7-token chunks (each chunk attends to its cached prefix) against one prefill:
// the same last-row logits and the same 16 greedy tokens.
static void test_chunked_prefill_matches_single(void) {
    ASSERT(model_ok && n_golden >= 10);
    int vocab = model.cfg.vocab;
    float *one = xmalloc(sizeof(float) * vocab), *chunked = xmalloc(sizeof(float) * vocab);
    const int picks[] = {5, 8, 11}; // long plain, system chat, long chat
    for (size_t i = 0; i < ARRAY_LEN(picks); i++) {
        const Golden *g = &golden[picks[i]];
        prefill(0, g->tokens, g->n_tokens, MAX_TOKENS, one);
        prefill(1, g->tokens, g->n_tokens, 7, chunked);
        double max_diff = 0;
        for (int v = 0; v < vocab; v++) max_diff = MAX(max_diff, fabs(one[v] - chunked[v]));
        EXPECT(max_diff < 1e-3, "prompt %d: chunked logits differ by %g", picks[i], max_diff);
        // decode both sequences side by side in one batch
        int ta = argmax(one, vocab), tb = argmax(chunked, vocab);
        for (int s = 0; s < 16; s++) {
            EXPECT_EQ_INT(ta, tb);
            int pos = g->n_tokens + s;
            batch_buf_clear(&bb);
            seq_add(0, pos, &ta, 1, 1);
            seq_add(1, pos, &tb, 1, 1);
            model_forward(&model, kv.layers, &bb.b, logits);
            ta = argmax(logits, vocab);
            tb = argmax(logits + vocab, vocab);
        }
    }
    free(one);
    free(chunked);
}

int main(void) {
    char err[ERR_MAX];
    model_ok = model_load(&model, TEST_MODEL_PATH, MAX_TOKENS, err) == SL_OK;
    if (!model_ok) fprintf(stderr, "cannot load the default model: %s\n", err);
    if (golden_load(TEST_DATA_DIR "/golden/forward.txt", true, &golden, &n_golden) != SL_OK)
        fprintf(stderr, "cannot read %s\n", TEST_DATA_DIR "/golden/forward.txt");
    if (golden_load(TEST_DATA_DIR "/golden/exact.txt", false, &exact, &n_exact) != SL_OK)
        fprintf(stderr, "cannot read %s\n", TEST_DATA_DIR "/golden/exact.txt");
    if (model_ok) {
        k_init(2, MAX_TOKENS, model_max_cols(&model));
        kv_setup();
    }
    TEST_RUN(test_config_default_model);
    TEST_RUN(test_load_tiny_model);
    TEST_RUN(test_config_errors);
    TEST_RUN(test_config_max_len);
    TEST_RUN(test_kv_cache_blocks);
    TEST_RUN(test_greedy_matches_golden);
    TEST_RUN(test_greedy_matches_exact);
    TEST_RUN(test_teacher_forced_matches_golden);
    TEST_RUN(test_teacher_forced_matches_exact);
    TEST_RUN(test_chunked_prefill_matches_single);
    TEST_RUN(test_int8_activations);
    if (model_ok) {
        kv_cache_free(&kv);
        batch_buf_free(&bb);
        free(logits);
        model_free(&model);
    }
    golden_free(golden, n_golden);
    golden_free(exact, n_exact);
    free(greedy.ours);
    return test_summary();
}
