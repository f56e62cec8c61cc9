// llama.c: the Llama family's forward pass (Llama, Mistral, Qwen2, Qwen3, Phi-3), written once
// against the op table in kernels/kernels.h (DESIGN.md §3), whole or as one tensor-parallel
// rank (§6). The weights it reads are bound by model.c.
//
// A pre-norm decoder: x = embed(tokens); per layer x += attn(rmsnorm(x)); x += mlp(rmsnorm(x));
// logits = lm_head(rmsnorm(x)) for the rows that sample. Each residual add is fused into the
// next norm (k_add_rmsnorm), so a block's output waits in s->delta until the next norm reads it.
// Variants: Qwen2 adds a bias to q, k and v; Qwen3 RMS-normalizes each head of q and k before
// RoPE; Llama 3.1 divides RoPE frequencies by per-pair factors; Mistral (and Qwen2 with
// use_sliding_window) attends within a sliding window. Phi-3 is this forward too: its fused QKV
// and gate-up matrices are bound as row views (model.c), it rotates the first rope_dim dims of
// each head only (partial rotary), and LongRoPE divides the frequencies by per-pair factors and
// scales the rotated dims by rope_attn_factor.
//
// Tensor parallelism: each rank's wo and down outputs are partial sums of the whole model's, so
// one all-reduce after each completes them; the all-reduce adds in rank order, so every rank
// holds bitwise the same residual stream and nothing else needs to be kept in step.
#include <math.h>
#include <string.h>

#include "common/common.h"
#include "engine/model/model.h"

// ----------------------------------------------------------------------------
// forward

// Copies the rows that get logits next to each other, so the LM head runs on those only.
// (A host copy: the CUDA backend will need this as an op.)
static void rows_gather(float *out, const float *x, const int *rows, int n, int dim) {
    for (int i = 0; i < n; i++) memcpy(out + (size_t)i * dim, x + (size_t)rows[i] * dim, sizeof(float) * dim);
}

// One projection of the attention input: out = xb · wᵀ (+ bias), then (Qwen3) RMSNorm over
// each head of head_dim. tmp: room for the un-normed projection (norms do not run in place).
void model_attn_project(float *out, float *tmp, const float *xb, const QMatrix *w, const float *bias,
                        const float *head_norm, int T, int head_dim, float eps) {
    float *y = head_norm ? tmp : out;
    k_matmul(y, xb, w, T);
    if (bias) k_add_bias(y, bias, T, (int)w->rows);
    if (head_norm) k_rmsnorm(out, y, head_norm, T * (int)(w->rows / head_dim), head_dim, eps);
}

// The LM head of a rank holding vocabulary rows [vocab_lo, vocab_lo + vocab_n): chunks of
// sampled rows go through the rank's rows, then an all-gather of every rank's [rows, vocab_n]
// block (padded to lm_shard columns: a collective moves the same n on every rank), and rank 0
// interleaves the blocks into whole-vocabulary rows.
static void lm_head_split(Model *m, int n_sample, float *logits) {
    RunState *s = &m->s;
    const int vocab = m->cfg.vocab, shard = s->lm_shard, dim = m->cfg.dim;
    for (int i0 = 0; i0 < n_sample; i0 += s->lm_rows) {
        int n = MIN(s->lm_rows, n_sample - i0);
        if (m->vocab_n > 0) k_matmul(s->lm_part, s->xs + (size_t)i0 * dim, &m->w.output, n);
        comm_all_gather(m->comm, s->lm_part, s->lm_all, (size_t)n * shard);
        if (m->tp_rank != 0 || !logits) continue;
        for (int r = 0; r < m->tp_size; r++) {
            int lo = MIN(vocab, r * shard), len = MIN(vocab, lo + shard) - lo;
            const float *part = s->lm_all + (size_t)r * n * shard;
            for (int i = 0; i < n; i++)
                memcpy(logits + (size_t)(i0 + i) * vocab + lo, part + (size_t)i * len, sizeof(float) * len);
        }
    }
}

void model_lm_head(Model *m, const float *xb, const int *rows, int n_sample, float *logits) {
    rows_gather(m->s.xs, xb, rows, n_sample, m->cfg.dim);
    if (m->s.lm_part) lm_head_split(m, n_sample, logits);
    else if (m->vocab_n == m->cfg.vocab) k_matmul(logits, m->s.xs, &m->w.output, n_sample);
    // else: the replicated head, computed by rank 0 alone
}

// LongRoPE's magnitude: the rotated dims of every head of x ([T, n_heads, head_dim]) times f
// (a rotation is linear, so scaling before it is scaling after).
static void rope_magnitude(float *x, int T, int n_heads, int head_dim, int rope_dim, float f) {
    for (size_t r = 0; r < (size_t)T * n_heads; r++) k_scale(x + r * head_dim, (size_t)rope_dim, f);
}

void model_forward(Model *m, const KVLayer *kv, const Batch *b, float *logits) {
    const ModelConfig *c = &m->cfg;
    if (c->gemma) {
        gemma_forward(m, kv, b, logits);
        return;
    }
    const ModelWeights *w = &m->w;
    RunState *s = &m->s;
    int T = b->n_tokens, dim = c->dim, hd = c->head_dim;
    CHECK(T > 0 && T <= m->max_tokens, "%d rows, room for %d", T, m->max_tokens);
    CHECK(b->n_sample >= 0 && b->n_sample <= T);
    CHECK(kv[0].n_kv_heads == m->n_kv_heads && kv[0].head_dim == hd, "a cache of %d KV heads for a rank of %d",
          kv[0].n_kv_heads, m->n_kv_heads);
    AttnOpt att = {.scale = 1.0f / sqrtf((float)hd)};
    Comm *comm = m->comm;

    // token embeddings start the residual stream
    k_embed(s->x, &w->tok_embd, b->token_ids, T);

    for (int l = 0; l < c->n_layers; l++) {
        const LayerWeights *L = &w->layers[l];
        const KVLayer *cache = &kv[l];

        // attention rmsnorm (from layer 1 on, the previous MLP's output joins the residual first)
        if (l == 0) k_rmsnorm(s->xb, s->x, L->attn_norm, T, dim, c->norm_eps);
        else k_add_rmsnorm(s->xb, s->x, s->delta, L->attn_norm, T, dim, c->norm_eps);

        // QKV projections of this rank's heads (att is free until attention: the norms' scratch)
        model_attn_project(s->q, s->att, s->xb, &L->wq, L->bq, L->q_norm, T, hd, c->norm_eps);
        model_attn_project(s->k, s->att, s->xb, &L->wk, L->bk, L->k_norm, T, hd, c->norm_eps);
        model_attn_project(s->v, s->att, s->xb, &L->wv, L->bv, NULL, T, hd, c->norm_eps);

        // RoPE on q and k, then this step's K and V into the paged cache
        if (c->rope_attn_factor > 0 && c->rope_attn_factor != 1.0f) {
            rope_magnitude(s->q, T, m->n_heads, hd, c->rope_dim, c->rope_attn_factor);
            rope_magnitude(s->k, T, m->n_kv_heads, hd, c->rope_dim, c->rope_attn_factor);
        }
        k_rope_kv_write(s->q, s->k, s->v, b, cache, m->n_heads, c->rope_dim, c->rope_base, w->rope_freq_factors,
                        c->rope_layout);

        // paged causal attention over each sequence's cached context, and the output projection
        // (this rank's heads' share of it, summed over the ranks)
        att.window = model_layer_window(c, l);
        k_attention(s->att, s->q, cache, b, m->n_heads, &att);
        k_matmul(s->delta, s->att, &L->wo, T);
        if (comm) comm_all_reduce_sum(comm, s->delta, (size_t)T * dim);

        // ffn rmsnorm, after the attention output joins the residual
        k_add_rmsnorm(s->xb, s->x, s->delta, L->ffn_norm, T, dim, c->norm_eps);

        // SwiGLU MLP: down(silu(gate(x)) * up(x)) over this rank's hidden units, summed
        k_matmul(s->gate, s->xb, &L->w_gate, T);
        k_matmul(s->up, s->xb, &L->w_up, T);
        k_silu_mul(s->gate, s->gate, s->up, T, m->ffn_dim); // in place: elementwise
        k_matmul(s->delta, s->gate, &L->w_down, T);
        if (comm) comm_all_reduce_sum(comm, s->delta, (size_t)T * dim);
    }

    // final norm (the last MLP's output joins first) and the LM head, on the sampled rows only
    if (b->n_sample == 0) return;
    k_add_rmsnorm(s->xb, s->x, s->delta, w->output_norm, T, dim, c->norm_eps);
    model_lm_head(m, s->xb, b->logits_rows, b->n_sample, logits);
}
