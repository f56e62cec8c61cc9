// model.c: a Model bound from a WeightSource (views or, where sharding or a format forces
// it, copies), whole or as one tensor-parallel rank's share (DESIGN.md §6), with its activation
// buffers; the forward pass of each family lives in its own file (llama.c).
//
// Tensor parallelism (Megatron): rank r computes its query heads, their KV heads and its slice
// of the MLP's hidden units, so wq/wk/wv/gate/up are row slices (views: rows of a row-major
// matrix are contiguous, quantized or not) and wo/down take the matching input columns (copies,
// see bind_matrix). Each rank's wo and down outputs are partial sums of the whole model's, so
// one all-reduce after each completes them (llama.c).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "engine/model/model.h"

// The LM head with tensor parallelism: split by vocabulary (1: each rank computes its rows'
// logits, then an all-gather) or replicated (0: rank 0 computes all of them while the other
// ranks go on to the next step). Measured on the default model at TP=3 on a 2-core machine
// (30 adjacent pairs of runs, medians of 7-11 steps each): a tie, split/replicated 0.999 for
// a decode step of 1 sequence (6.05 ms), 1.005 for 8 sequences (18.8 ms), 0.993 for a 256-token
// prefill (515 ms). The head streams 30 MB of Q8_0 rows; one thread alone reads them in 1.05 ms
// (~28 GB/s), about the memory's pace, so more cores on it gain little. The split stays: it
// divides an untied head's memory by the ranks, gains where each rank has its own memory
// bandwidth (GPUs), and is the all-gather the NCCL path runs.
#ifndef MODEL_LM_HEAD_SPLIT
#define MODEL_LM_HEAD_SPLIT 1
#endif

// ----------------------------------------------------------------------------
// weights: bind each tensor of the source, checking type and shape, as a view or a copy
//
// Binding runs twice: a first pass checks everything and counts the bytes this rank must own
// (column slices, converted vectors), a second fills the one buffer allocated in between. The
// second pass cannot fail: it sees the same tensors.

typedef struct {
    const WeightSource *src;
    bool *used;      // [n_tensors]: which tensors the forward reads, to reject files with extras
    size_t bytes;    // weight bytes the forward reads
    uint8_t *arena;  // pass 2: Model.owned; pass 1: NULL
    size_t len, cap; // bytes taken (pass 1: counted)
    size_t packed;   // of which weights repacked for the AMX kernels (k_pack)
} Binder;

// n bytes of the rank's own buffer, 64-byte aligned; NULL in the counting pass.
static void *arena_take(Binder *bd, size_t n) {
    size_t off = (bd->len + 63) & ~(size_t)63;
    bd->len = off + n;
    if (!bd->arena) return NULL;
    CHECK(bd->len <= bd->cap, "%zu of %zu bytes", bd->len, bd->cap);
    return bd->arena + off;
}

static const WTensor *bind_find(Binder *bd, const char *name, char *err) {
    const WTensor *t = wsrc_find(bd->src, name);
    if (!t) {
        seterr(err, "tensor %s is missing", name);
        return NULL;
    }
    CHECK(t >= bd->src->tensors && t < bd->src->tensors + bd->src->n_tensors);
    bd->used[t - bd->src->tensors] = true;
    return t;
}

// Which part of a tensor this rank takes: [lo, lo + n) of its rows (a matrix's output
// features; a vector's elements) or of a matrix's columns (input features).
typedef enum { SLICE_ROWS, SLICE_COLS } SliceAxis;
typedef struct {
    SliceAxis axis;
    int64_t lo, n;
} Slice;

static Slice whole(int64_t n) { return (Slice){SLICE_ROWS, 0, n}; }

// The copy of a bound matrix the CPU's 8-bit AMX kernels read, when the settings want one.
static void bind_pack(Binder *bd, QMatrix *m) {
    size_t n = k_pack_bytes(m);
    if (!n) return;
    void *dst = arena_take(bd, n);
    bd->packed += n;
    if (dst) k_pack(m, dst);
}

// A 2-D weight of rows x cols (ggml order: ne[0] = cols, ne[1] = rows), sliced. A row slice is
// a view. A column slice is copied row by row into the rank's buffer: in the stored format
// when it starts and ends on block boundaries (each row's slice is then whole blocks), else
// dequantized to f32 (a block cut in two has no valid encoding).
static int bind_table(Binder *bd, QMatrix *out, const char *name, int64_t rows, int64_t cols, Slice sl, char *err) {
    const WTensor *t = bind_find(bd, name, err);
    if (!t) return SL_ERR;
    if (t->n_dims != 2 || t->ne[0] != cols || t->ne[1] != rows)
        return seterr(err, "tensor %s has shape [%lld, %lld] (%d dims), expected [%lld, %lld]", name,
                      (long long)t->ne[0], (long long)t->ne[1], t->n_dims, (long long)cols, (long long)rows);
    if (!qtype_dequant_supported(t->type))
        return seterr(err, "tensor %s has type %s, which the kernels do not support", name, qtype_name(t->type));
    int blk = qtype_block(t->type);
    size_t row_bytes = qtype_row_size(t->type, cols);
    if (cols % blk != 0 || t->nbytes != (size_t)rows * row_bytes)
        return seterr(err, "tensor %s: %zu bytes do not hold %lld rows of %lld %s values", name, t->nbytes,
                      (long long)rows, (long long)cols, qtype_name(t->type));
    const uint8_t *data = t->data;
    if (sl.axis == SLICE_ROWS) {
        CHECK(sl.lo >= 0 && sl.n >= 0 && sl.lo + sl.n <= rows);
        *out = (QMatrix){.type = t->type, .rows = sl.n, .cols = cols, .data = data + (size_t)sl.lo * row_bytes};
        bd->bytes += (size_t)sl.n * row_bytes;
        return SL_OK;
    }
    CHECK(sl.lo >= 0 && sl.n > 0 && sl.lo + sl.n <= cols);
    if (sl.lo % blk == 0 && sl.n % blk == 0) {
        size_t off = qtype_row_size(t->type, sl.lo), n_bytes = qtype_row_size(t->type, sl.n);
        uint8_t *dst = arena_take(bd, (size_t)rows * n_bytes);
        *out = (QMatrix){.type = t->type, .rows = rows, .cols = sl.n, .data = dst};
        bd->bytes += (size_t)rows * n_bytes;
        for (int64_t r = 0; dst && r < rows; r++) memcpy(dst + r * n_bytes, data + r * row_bytes + off, n_bytes);
        return SL_OK;
    }
    float *dst = arena_take(bd, sizeof(float) * rows * sl.n);
    *out = (QMatrix){.type = QTYPE_F32, .rows = rows, .cols = sl.n, .data = dst};
    bd->bytes += sizeof(float) * rows * sl.n;
    if (!dst) return SL_OK;
    float *row = xmalloc(sizeof(float) * cols);
    for (int64_t r = 0; r < rows; r++) {
        dequant_row(t->type, data + r * row_bytes, row, cols);
        memcpy(dst + r * sl.n, row + sl.lo, sizeof(float) * sl.n);
    }
    free(row);
    return SL_OK;
}

// A matrix the forward multiplies by (bind_table, plus the AMX kernels' copy where wanted).
static int bind_matrix(Binder *bd, QMatrix *out, const char *name, int64_t rows, int64_t cols, Slice sl, char *err) {
    if (bind_table(bd, out, name, rows, cols, sl, err) != SL_OK) return SL_ERR;
    bind_pack(bd, out);
    return SL_OK;
}

// A vector of n values (a norm's weight, a bias, RoPE factors), elements [sl.lo, sl.lo + sl.n).
// The forward reads f32: an aligned f32 tensor is a view, f16/bf16 (safetensors, dummy
// weights) or an unaligned f32 one is converted into the rank's buffer.
static int bind_vector(Binder *bd, const float **out, const char *name, int64_t n, Slice sl, char *err) {
    const WTensor *t = bind_find(bd, name, err);
    if (!t) return SL_ERR;
    if (t->n_dims != 1 || t->ne[0] != n)
        return seterr(err, "tensor %s has shape [%lld] (%d dims), expected [%lld]", name, (long long)t->ne[0],
                      t->n_dims, (long long)n);
    if (t->type != QTYPE_F32 && t->type != QTYPE_F16 && t->type != QTYPE_BF16)
        return seterr(err, "tensor %s has type %s, expected F32 (or F16/BF16)", name, qtype_name(t->type));
    if (t->nbytes != qtype_row_size(t->type, n))
        return seterr(err, "tensor %s: %zu bytes do not hold %lld %s values", name, t->nbytes, (long long)n,
                      qtype_name(t->type));
    CHECK(sl.axis == SLICE_ROWS && sl.lo >= 0 && sl.lo + sl.n <= n);
    bd->bytes += sizeof(float) * sl.n;
    if (t->type == QTYPE_F32 && ((uintptr_t)t->data & 3) == 0) {
        *out = (const float *)t->data + sl.lo;
        return SL_OK;
    }
    float *dst = arena_take(bd, sizeof(float) * sl.n);
    *out = dst;
    if (dst) {
        float *all = xmalloc(sizeof(float) * n);
        dequant_row(t->type, t->data, all, n);
        memcpy(dst, all + sl.lo, sizeof(float) * sl.n);
        free(all);
    }
    return SL_OK;
}

static int weights_bind(Model *m, Binder *bd, char *err) {
    const ModelConfig *c = &m->cfg;
    ModelWeights *w = &m->w;
    const int r = m->tp_rank, hd = c->head_dim;
    const int64_t q_dim = (int64_t)c->n_heads * hd, kv_dim = (int64_t)c->n_kv_heads * hd;
    const int64_t q_lo = (int64_t)r * m->n_heads * hd, q_n = (int64_t)m->n_heads * hd;
    const int64_t kv_lo = (int64_t)r * m->n_kv_heads * hd, kv_n = (int64_t)m->n_kv_heads * hd;
    const int64_t f_lo = (int64_t)r * m->ffn_dim, f_n = m->ffn_dim;
    const Slice q_rows = {SLICE_ROWS, q_lo, q_n}, kv_rows = {SLICE_ROWS, kv_lo, kv_n};
    char name[96];
#define NAME(...) (snprintf(name, sizeof name, __VA_ARGS__), name)
    if (bind_table(bd, &w->tok_embd, "token_embd.weight", c->vocab, c->dim, whole(c->vocab), err)) return SL_ERR;
    const int64_t f = c->ffn_dim;
    for (int l = 0; l < c->n_layers; l++) {
        LayerWeights *L = &w->layers[l];
        if (bind_vector(bd, &L->attn_norm, NAME("blk.%d.attn_norm.weight", l), c->dim, whole(c->dim), err) ||
            bind_matrix(bd, &L->wo, NAME("blk.%d.attn_output.weight", l), c->dim, q_dim,
                        (Slice){SLICE_COLS, q_lo, q_n}, err) ||
            bind_vector(bd, &L->ffn_norm, NAME("blk.%d.ffn_norm.weight", l), c->dim, whole(c->dim), err) ||
            bind_matrix(bd, &L->w_down, NAME("blk.%d.ffn_down.weight", l), c->dim, c->ffn_dim,
                        (Slice){SLICE_COLS, f_lo, f_n}, err))
            return SL_ERR;
        // Phi-3 fuses [q; k; v] and [gate; up] by rows: each part (and each rank's slice of it)
        // is a row range of the fused matrix, so still a view.
        if (c->fused_qkv) {
            const int64_t rows = q_dim + 2 * kv_dim;
            if (bind_matrix(bd, &L->wq, NAME("blk.%d.attn_qkv.weight", l), rows, c->dim, q_rows, err) ||
                bind_matrix(bd, &L->wk, name, rows, c->dim, (Slice){SLICE_ROWS, q_dim + kv_lo, kv_n}, err) ||
                bind_matrix(bd, &L->wv, name, rows, c->dim, (Slice){SLICE_ROWS, q_dim + kv_dim + kv_lo, kv_n}, err))
                return SL_ERR;
        } else if (bind_matrix(bd, &L->wq, NAME("blk.%d.attn_q.weight", l), q_dim, c->dim, q_rows, err) ||
                   bind_matrix(bd, &L->wk, NAME("blk.%d.attn_k.weight", l), kv_dim, c->dim, kv_rows, err) ||
                   bind_matrix(bd, &L->wv, NAME("blk.%d.attn_v.weight", l), kv_dim, c->dim, kv_rows, err)) {
            return SL_ERR;
        }
        if (c->fused_gate_up) {
            if (bind_matrix(bd, &L->w_gate, NAME("blk.%d.ffn_up.weight", l), 2 * f, c->dim,
                            (Slice){SLICE_ROWS, f_lo, f_n}, err) ||
                bind_matrix(bd, &L->w_up, name, 2 * f, c->dim, (Slice){SLICE_ROWS, f + f_lo, f_n}, err))
                return SL_ERR;
        } else if (bind_matrix(bd, &L->w_gate, NAME("blk.%d.ffn_gate.weight", l), f, c->dim,
                               (Slice){SLICE_ROWS, f_lo, f_n}, err) ||
                   bind_matrix(bd, &L->w_up, NAME("blk.%d.ffn_up.weight", l), f, c->dim,
                               (Slice){SLICE_ROWS, f_lo, f_n}, err)) {
            return SL_ERR;
        }
        if (c->qkv_bias && (bind_vector(bd, &L->bq, NAME("blk.%d.attn_q.bias", l), q_dim, q_rows, err) ||
                            bind_vector(bd, &L->bk, NAME("blk.%d.attn_k.bias", l), kv_dim, kv_rows, err) ||
                            bind_vector(bd, &L->bv, NAME("blk.%d.attn_v.bias", l), kv_dim, kv_rows, err)))
            return SL_ERR;
        if (c->qk_norm && (bind_vector(bd, &L->q_norm, NAME("blk.%d.attn_q_norm.weight", l), hd, whole(hd), err) ||
                           bind_vector(bd, &L->k_norm, NAME("blk.%d.attn_k_norm.weight", l), hd, whole(hd), err)))
            return SL_ERR;
        if (c->gemma &&
            (bind_vector(bd, &L->post_attn_norm, NAME("blk.%d.post_attention_norm.weight", l), c->dim, whole(c->dim),
                         err) ||
             bind_vector(bd, &L->post_ffw_norm, NAME("blk.%d.post_ffw_norm.weight", l), c->dim, whole(c->dim), err)))
            return SL_ERR;
    }
    if (bind_vector(bd, &w->output_norm, "output_norm.weight", c->dim, whole(c->dim), err)) return SL_ERR;
    const int half = c->rope_dim / 2;
    if (wsrc_find(bd->src, "rope_freqs.weight") &&
        bind_vector(bd, &w->rope_freq_factors, "rope_freqs.weight", half, whole(half), err))
        return SL_ERR;
    if (c->longrope) { // both sets are the model's; the context length picks one
        const float *lng, *sht;
        if (bind_vector(bd, &lng, "rope_factors_long.weight", half, whole(half), err) ||
            bind_vector(bd, &sht, "rope_factors_short.weight", half, whole(half), err))
            return SL_ERR;
        w->rope_freq_factors = model_longrope_long(c) ? lng : sht;
    }
    if (c->rope_linear_factor > 0) { // Gemma 3: every pair of a global layer slowed alike
        float *g = arena_take(bd, sizeof(float) * half);
        for (int i = 0; g && i < half; i++) g[i] = c->rope_linear_factor;
        w->rope_global_factors = g;
    }
#undef NAME
    // The LM head: this rank's vocabulary rows (all of them, or none when replicated on rank 0).
    Slice lm = {SLICE_ROWS, m->vocab_lo, m->vocab_n};
    if (c->tied_embeddings) {
        // the same bytes as the embedding, already counted
        size_t row_bytes = qtype_row_size(w->tok_embd.type, c->dim);
        w->output = (QMatrix){.type = w->tok_embd.type, .rows = lm.n, .cols = c->dim,
                              .data = (const uint8_t *)w->tok_embd.data + (size_t)lm.lo * row_bytes};
        bind_pack(bd, &w->output);
    } else if (bind_matrix(bd, &w->output, "output.weight", c->vocab, c->dim, lm, err)) {
        return SL_ERR;
    }
    // A tensor we do not read means a variant we do not implement (biases, extra norms, ...):
    // running without it would be silently wrong.
    for (int i = 0; i < bd->src->n_tensors; i++)
        if (!bd->used[i])
            return seterr(err, "tensor %s is not part of the %s forward pass implemented here",
                          bd->src->tensors[i].name, c->arch);
    return SL_OK;
}

// ----------------------------------------------------------------------------
// tensor-parallel shares

int model_tp_check(const ModelConfig *c, int tp_size, char *err) {
    char valid[160] = "";
    for (int n = 1; n <= c->n_kv_heads; n++)
        if (c->n_heads % n == 0 && c->n_kv_heads % n == 0 && c->ffn_dim % n == 0)
            snprintf(valid + strlen(valid), sizeof valid - strlen(valid), "%s%d", valid[0] ? ", " : "", n);
    if (tp_size >= 1 && c->n_heads % tp_size == 0 && c->n_kv_heads % tp_size == 0 && c->ffn_dim % tp_size == 0)
        return SL_OK;
    if (tp_size >= 1 && c->n_heads % tp_size == 0 && c->n_kv_heads % tp_size == 0)
        return seterr(err, "tensor parallel size %d does not divide the model's feed-forward width %d; valid sizes: %s",
                      tp_size, c->ffn_dim, valid);
    return seterr(err, "tensor parallel size %d does not divide the model's %d attention heads and %d KV heads; "
                  "valid sizes: %s", tp_size, c->n_heads, c->n_kv_heads, valid);
}

// The split LM head's shard width (ceil: the last rank's is shorter) and the sampled rows per
// all-gather: as many as keep one gather within the all-reduce's max_tokens * dim floats.
static void lm_head_plan(const ModelConfig *c, int max_tokens, int tp_size, int *shard, int *rows) {
    *shard = (c->vocab + tp_size - 1) / tp_size;
    int64_t fit = (int64_t)max_tokens * c->dim / *shard;
    *rows = (int)MAX(1, MIN(fit, max_tokens));
}

size_t model_comm_max_floats(const ModelConfig *c, int max_tokens, int tp_size) {
    size_t n = (size_t)max_tokens * c->dim;
    if (MODEL_LM_HEAD_SPLIT && tp_size > 1) {
        int shard, rows;
        lm_head_plan(c, max_tokens, tp_size, &shard, &rows);
        n = MAX(n, (size_t)shard * rows);
    }
    return n;
}

// ----------------------------------------------------------------------------
// activations: one slab, carved into the RunState buffers

static void runstate_alloc(RunState *s, const Model *m, int max_tokens) {
    const ModelConfig *c = &m->cfg;
    size_t T = (size_t)max_tokens;
    size_t q_dim = (size_t)m->n_heads * c->head_dim, kv_dim = (size_t)m->n_kv_heads * c->head_dim;
    bool split = MODEL_LM_HEAD_SPLIT && m->tp_size > 1;
    if (split) lm_head_plan(c, max_tokens, m->tp_size, &s->lm_shard, &s->lm_rows);
    size_t lm = split ? (size_t)s->lm_rows * s->lm_shard : 0;
    struct { float **field; size_t n; } parts[] = {
        {&s->x, T * c->dim},       {&s->xb, T * c->dim},   {&s->q, T * q_dim},
        {&s->k, T * kv_dim},       {&s->v, T * kv_dim},    {&s->att, T * q_dim},
        {&s->delta, T * c->dim},   {&s->gate, T * m->ffn_dim}, {&s->up, T * m->ffn_dim},
        {&s->xs, T * c->dim},      {&s->lm_part, lm},      {&s->lm_all, lm * m->tp_size},
    };
    // each buffer starts on a 64-byte boundary (16 floats) for aligned SIMD rows
    size_t total = 0;
    for (size_t i = 0; i < ARRAY_LEN(parts); i++) total += (parts[i].n + 15) & ~(size_t)15;
    s->slab = xmalloc_aligned(total * sizeof(float));
    s->bytes = total * sizeof(float);
    // zeroed once so that no kernel (or collective) ever reads uninitialized padding
    memset(s->slab, 0, s->bytes);
    size_t off = 0;
    for (size_t i = 0; i < ARRAY_LEN(parts); i++) {
        *parts[i].field = parts[i].n ? s->slab + off : NULL;
        off += (parts[i].n + 15) & ~(size_t)15;
    }
}

// ----------------------------------------------------------------------------
// load / free

int model_load_shard(Model *m, WeightSource *src, int max_tokens, int tp_rank, int tp_size, Comm *comm,
                     char *err) {
    memset(m, 0, sizeof *m);
    CHECK(max_tokens > 0 && tp_size >= 1 && tp_rank >= 0 && tp_rank < tp_size);
    CHECK(tp_size == 1 || (comm && comm->rank == tp_rank && comm->size == tp_size), "rank %d of %d", tp_rank, tp_size);
    m->cfg = src->cfg;
    const ModelConfig *c = &m->cfg;
    char why[ERR_MAX];
    if (model_tp_check(c, tp_size, why) != SL_OK) return seterr(err, "%s: %s", src->path, why);
    m->tp_rank = tp_rank, m->tp_size = tp_size;
    m->comm = tp_size > 1 ? comm : NULL;
    m->n_heads = c->n_heads / tp_size;
    m->n_kv_heads = c->n_kv_heads / tp_size;
    m->ffn_dim = c->ffn_dim / tp_size;
    if (MODEL_LM_HEAD_SPLIT) {
        int shard = (c->vocab + tp_size - 1) / tp_size;
        m->vocab_lo = MIN(c->vocab, tp_rank * shard);
        m->vocab_n = MIN(c->vocab, m->vocab_lo + shard) - m->vocab_lo;
    } else {
        m->vocab_lo = 0;
        m->vocab_n = tp_rank == 0 ? c->vocab : 0;
    }
    m->src = src;
    m->w.layers = xcalloc(c->n_layers, sizeof(LayerWeights));

    Binder bd = {.src = src, .used = xcalloc(src->n_tensors ? src->n_tensors : 1, sizeof(bool))};
    int rc = weights_bind(m, &bd, why);
    if (rc == SL_OK) {
        m->owned_bytes = bd.len;
        m->owned = bd.len ? xmalloc_aligned(bd.len) : NULL;
        bd = (Binder){.src = src, .used = bd.used, .arena = m->owned, .cap = bd.len};
        CHECK(weights_bind(m, &bd, why) == SL_OK, "%s", why);
        m->weight_bytes = bd.bytes;
        if (bd.packed)
            log_info("rank %d: %.1f MiB of weights repacked for the AMX tiles (the weights the forward reads: %.1f MiB)", tp_rank,
                     bd.packed / 1048576.0, bd.bytes / 1048576.0);
    }
    free(bd.used);
    if (rc != SL_OK) {
        seterr(err, "%s: %s", src->path, why);
        model_free(m);
        return SL_ERR;
    }
    m->max_tokens = max_tokens;
    runstate_alloc(&m->s, m, max_tokens);
    return SL_OK;
}

int model_load(Model *m, const char *path, int max_tokens, char *err) {
    memset(m, 0, sizeof *m);
    WeightSource *src = xcalloc(1, sizeof *src);
    if (wsrc_open(src, path, LOAD_AUTO, err) != SL_OK) {
        free(src);
        return SL_ERR;
    }
    if (model_load_shard(m, src, max_tokens, 0, 1, NULL, err) != SL_OK) {
        wsrc_close(src);
        free(src);
        return SL_ERR;
    }
    m->owns_src = true;
    return SL_OK;
}

void model_free(Model *m) {
    free(m->w.layers);
    free(m->s.slab);
    free(m->owned);
    if (m->owns_src && m->src) {
        wsrc_close(m->src);
        free(m->src);
    }
    memset(m, 0, sizeof *m);
}

int model_max_cols(const Model *m) {
    return MAX(MAX(m->cfg.dim, m->ffn_dim), m->n_heads * m->cfg.head_dim);
}
