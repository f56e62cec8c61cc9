// model_llama.c: the Llama family's weights and forward pass, written once against the op
// table in kernels/kernels.h (DESIGN.md §3).
//
// A pre-norm decoder: x = embed(tokens); per layer x += attn(rmsnorm(x)); x += mlp(rmsnorm(x));
// logits = lm_head(rmsnorm(x)) for the rows that sample. Each residual add is fused into the
// next norm (k_add_rmsnorm), so a block's output waits in s->delta until the next norm reads it.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "engine/model.h"

// ----------------------------------------------------------------------------
// weights: bind each tensor as a view into the mapping, checking type and shape

typedef struct {
    const GGUF *g;
    bool *used; // [n_tensors]: which tensors the forward reads, to reject files with extras
    size_t bytes;
} Binder;

static const GGUFTensor *bind_find(Binder *bd, const char *name, char *err) {
    const GGUFTensor *t = gguf_tensor(bd->g, name);
    if (!t) {
        seterr(err, "tensor %s is missing", name);
        return NULL;
    }
    bd->used[t - bd->g->tensors] = true;
    bd->bytes += t->nbytes;
    return t;
}

// A 2-D weight of rows x cols (ggml order: ne[0] = cols, ne[1] = rows) in a matmul format.
static int bind_matrix(Binder *bd, QMatrix *out, const char *name, int64_t rows, int64_t cols, char *err) {
    const GGUFTensor *t = bind_find(bd, name, err);
    if (!t) return SL_ERR;
    if (t->n_dims != 2 || t->ne[0] != cols || t->ne[1] != rows)
        return seterr(err, "tensor %s has shape [%lld, %lld] (%u dims), expected [%lld, %lld]", name,
                      (long long)t->ne[0], (long long)t->ne[1], t->n_dims, (long long)cols, (long long)rows);
    if (!qtype_dequant_supported(t->type))
        return seterr(err, "tensor %s has type %s, which the kernels do not support", name, qtype_name(t->type));
    if (cols % qtype_block(t->type) != 0 || t->nbytes != (size_t)rows * qtype_row_size(t->type, cols))
        return seterr(err, "tensor %s: %zu bytes do not hold %lld rows of %lld %s values", name, t->nbytes,
                      (long long)rows, (long long)cols, qtype_name(t->type));
    *out = (QMatrix){.type = t->type, .rows = rows, .cols = cols, .data = t->data};
    return SL_OK;
}

// A norm's weight vector: F32 of length n.
static int bind_vector(Binder *bd, const float **out, const char *name, int64_t n, char *err) {
    const GGUFTensor *t = bind_find(bd, name, err);
    if (!t) return SL_ERR;
    if (t->n_dims != 1 || t->ne[0] != n)
        return seterr(err, "tensor %s has shape [%lld] (%u dims), expected [%lld]", name, (long long)t->ne[0],
                      t->n_dims, (long long)n);
    if (t->type != QTYPE_F32) return seterr(err, "tensor %s has type %s, expected F32", name, qtype_name(t->type));
    if (((uintptr_t)t->data & 3) != 0) return seterr(err, "tensor %s is not 4-byte aligned in the file", name);
    *out = (const float *)t->data;
    return SL_OK;
}

static int weights_bind(Model *m, char *err) {
    const ModelConfig *c = &m->cfg;
    ModelWeights *w = &m->w;
    Binder bd = {.g = &m->gguf, .used = xcalloc(m->gguf.n_tensors ? m->gguf.n_tensors : 1, sizeof(bool))};
    int64_t q_dim = (int64_t)c->n_heads * c->head_dim, kv_dim = (int64_t)c->n_kv_heads * c->head_dim;
    int rc = SL_ERR;
    char name[96];
#define NAME(...) (snprintf(name, sizeof name, __VA_ARGS__), name)
    if (bind_matrix(&bd, &w->tok_embd, "token_embd.weight", c->vocab, c->dim, err)) goto done;
    w->layers = xcalloc(c->n_layers, sizeof(LayerWeights));
    for (int l = 0; l < c->n_layers; l++) {
        LayerWeights *L = &w->layers[l];
        if (bind_vector(&bd, &L->attn_norm, NAME("blk.%d.attn_norm.weight", l), c->dim, err) ||
            bind_matrix(&bd, &L->wq, NAME("blk.%d.attn_q.weight", l), q_dim, c->dim, err) ||
            bind_matrix(&bd, &L->wk, NAME("blk.%d.attn_k.weight", l), kv_dim, c->dim, err) ||
            bind_matrix(&bd, &L->wv, NAME("blk.%d.attn_v.weight", l), kv_dim, c->dim, err) ||
            bind_matrix(&bd, &L->wo, NAME("blk.%d.attn_output.weight", l), c->dim, q_dim, err) ||
            bind_vector(&bd, &L->ffn_norm, NAME("blk.%d.ffn_norm.weight", l), c->dim, err) ||
            bind_matrix(&bd, &L->w_gate, NAME("blk.%d.ffn_gate.weight", l), c->ffn_dim, c->dim, err) ||
            bind_matrix(&bd, &L->w_up, NAME("blk.%d.ffn_up.weight", l), c->ffn_dim, c->dim, err) ||
            bind_matrix(&bd, &L->w_down, NAME("blk.%d.ffn_down.weight", l), c->dim, c->ffn_dim, err))
            goto done;
    }
    if (bind_vector(&bd, &w->output_norm, "output_norm.weight", c->dim, err)) goto done;
    if (c->tied_embeddings) w->output = w->tok_embd;
    else if (bind_matrix(&bd, &w->output, "output.weight", c->vocab, c->dim, err)) goto done;
#undef NAME
    // A tensor we do not read means a variant we do not implement (biases, extra norms, ...):
    // running without it would be silently wrong.
    for (uint64_t i = 0; i < m->gguf.n_tensors; i++) {
        if (bd.used[i]) continue;
        GGUFStr n = m->gguf.tensors[i].name;
        seterr(err, "tensor %.*s is not part of the %s forward pass implemented here", (int)MIN(n.len, 96), n.ptr,
               c->arch);
        goto done;
    }
    m->weight_bytes = bd.bytes;
    rc = SL_OK;
done:
    free(bd.used);
    return rc;
}

// ----------------------------------------------------------------------------
// activations: one slab, carved into the RunState buffers

static void runstate_alloc(RunState *s, const ModelConfig *c, int max_tokens) {
    size_t T = (size_t)max_tokens;
    size_t q_dim = (size_t)c->n_heads * c->head_dim, kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    struct { float **field; size_t n; } parts[] = {
        {&s->x, T * c->dim},       {&s->xb, T * c->dim},   {&s->q, T * q_dim},
        {&s->k, T * kv_dim},       {&s->v, T * kv_dim},    {&s->att, T * q_dim},
        {&s->delta, T * c->dim},   {&s->gate, T * c->ffn_dim}, {&s->up, T * c->ffn_dim},
        {&s->xs, T * c->dim},
    };
    // each buffer starts on a 64-byte boundary (16 floats) for aligned SIMD rows
    size_t total = 0;
    for (size_t i = 0; i < ARRAY_LEN(parts); i++) total += (parts[i].n + 15) & ~(size_t)15;
    s->slab = xmalloc_aligned(total * sizeof(float));
    s->bytes = total * sizeof(float);
    // zeroed once so that no kernel ever reads uninitialized padding
    memset(s->slab, 0, s->bytes);
    size_t off = 0;
    for (size_t i = 0; i < ARRAY_LEN(parts); i++) {
        *parts[i].field = s->slab + off;
        off += (parts[i].n + 15) & ~(size_t)15;
    }
}

// ----------------------------------------------------------------------------
// load / free

int model_load(Model *m, const char *path, int max_tokens, char *err) {
    memset(m, 0, sizeof *m);
    CHECK(max_tokens > 0);
    if (gguf_open(&m->gguf, path, err) != SL_OK) return SL_ERR;
    char why[ERR_MAX];
    if (model_config_from_gguf(&m->cfg, &m->gguf, why) != SL_OK || weights_bind(m, why) != SL_OK) {
        seterr(err, "%s: %s", path, why);
        model_free(m);
        return SL_ERR;
    }
    m->max_tokens = max_tokens;
    runstate_alloc(&m->s, &m->cfg, max_tokens);
    return SL_OK;
}

void model_free(Model *m) {
    free(m->w.layers);
    free(m->s.slab);
    gguf_close(&m->gguf);
    memset(m, 0, sizeof *m);
}

int model_max_cols(const Model *m) {
    const ModelConfig *c = &m->cfg;
    return MAX(MAX(c->dim, c->ffn_dim), c->n_heads * c->head_dim);
}

// ----------------------------------------------------------------------------
// forward

// Copies the rows that get logits next to each other, so the LM head runs on those only.
// (A host copy: the CUDA backend will need this as an op.)
static void rows_gather(float *out, const float *x, const int *rows, int n, int dim) {
    for (int i = 0; i < n; i++) memcpy(out + (size_t)i * dim, x + (size_t)rows[i] * dim, sizeof(float) * dim);
}

void model_forward(Model *m, const KVCache *kv, const Batch *b, float *logits) {
    const ModelConfig *c = &m->cfg;
    const ModelWeights *w = &m->w;
    RunState *s = &m->s;
    int T = b->n_tokens, dim = c->dim;
    CHECK(T > 0 && T <= m->max_tokens, "%d rows, room for %d", T, m->max_tokens);
    CHECK(b->n_sample >= 0 && b->n_sample <= T);
    CHECK(kv->n_layers == c->n_layers && kv->n_kv_heads == c->n_kv_heads && kv->head_dim == c->head_dim);
    const float attn_scale = 1.0f / sqrtf((float)c->head_dim);

    // token embeddings start the residual stream
    k_embed(s->x, &w->tok_embd, b->token_ids, T);

    for (int l = 0; l < c->n_layers; l++) {
        const LayerWeights *L = &w->layers[l];
        const KVLayer *cache = &kv->layers[l];

        // attention rmsnorm (from layer 1 on, the previous MLP's output joins the residual first)
        if (l == 0) k_rmsnorm(s->xb, s->x, L->attn_norm, T, dim, c->norm_eps);
        else k_add_rmsnorm(s->xb, s->x, s->delta, L->attn_norm, T, dim, c->norm_eps);

        // QKV projections
        k_matmul(s->q, s->xb, &L->wq, T);
        k_matmul(s->k, s->xb, &L->wk, T);
        k_matmul(s->v, s->xb, &L->wv, T);

        // RoPE on q and k, then this step's K and V into the paged cache
        k_rope_kv_write(s->q, s->k, s->v, b, cache, c->n_heads, c->rope_dim, c->rope_base, c->rope_layout);

        // paged causal attention over each sequence's cached context, and the output projection
        k_attention(s->att, s->q, cache, b, c->n_heads, attn_scale);
        k_matmul(s->delta, s->att, &L->wo, T);

        // ffn rmsnorm, after the attention output joins the residual
        k_add_rmsnorm(s->xb, s->x, s->delta, L->ffn_norm, T, dim, c->norm_eps);

        // SwiGLU MLP: down(silu(gate(x)) * up(x))
        k_matmul(s->gate, s->xb, &L->w_gate, T);
        k_matmul(s->up, s->xb, &L->w_up, T);
        k_silu_mul(s->gate, s->gate, s->up, T, c->ffn_dim); // in place: elementwise
        k_matmul(s->delta, s->gate, &L->w_down, T);
    }

    // final norm (the last MLP's output joins first) and the LM head, on the sampled rows only
    if (b->n_sample == 0) return;
    k_add_rmsnorm(s->xb, s->x, s->delta, w->output_norm, T, dim, c->norm_eps);
    rows_gather(s->xs, s->xb, b->logits_rows, b->n_sample, dim);
    k_matmul(logits, s->xs, &w->output, b->n_sample);
}
