// gemma.c: the forward pass of Gemma 2 and Gemma 3 (text), against the same op table as
// llama.c and bound by the same model.c; where the two differ from the Llama skeleton:
//
//   - the embedding is scaled by sqrt(dim) before the first layer (the LM head, tied to the
//     same table, is not);
//   - each block's output is RMS-normalized (post_attention_norm, post_ffw_norm) before it
//     joins the residual stream, and the MLP has its own input norm (ffn_norm): four norms a
//     layer. Gemma's norms multiply by 1 + w; a GGUF stores 1 + w already (llama.cpp's converter
//     adds the 1) and a safetensors source adds it at load (weights.c), so here they are plain;
//   - the MLP is GeGLU: down(gelu_tanh(gate(x)) * up(x));
//   - scores are scaled by query_pre_attn_scalar^-1/2 (cfg.attn_scale) rather than by head_dim;
//   - the layers alternate sliding-window (local) and global attention (model_layer_window):
//     Gemma 2 every other layer, Gemma 3 five local to one global, and Gemma 3's local layers
//     turn RoPE with their own base (10000) while its global layers may scale positions;
//   - Gemma 2 soft-caps attention scores and the final logits: cap · tanh(x / cap);
//   - Gemma 3 RMS-normalizes each head of q and k before RoPE (as Qwen3).
// RoPE is NeoX's (split halves), Q and K are stored as trained.
//
// Tensor parallelism as in llama.c: each rank's wo and down outputs are partial sums, completed
// by an all-reduce before the post-norms (a norm needs the whole vector).
#include <math.h>

#include "common/common.h"
#include "engine/model/model.h"

void gemma_forward(Model *m, const KVLayer *kv, const Batch *b, float *logits) {
    const ModelConfig *c = &m->cfg;
    const ModelWeights *w = &m->w;
    RunState *s = &m->s;
    const int T = b->n_tokens, dim = c->dim, hd = c->head_dim;
    const float eps = c->norm_eps;
    CHECK(c->gemma && T > 0 && T <= m->max_tokens, "%d rows, room for %d", T, m->max_tokens);
    CHECK(b->n_sample >= 0 && b->n_sample <= T);
    CHECK(kv[0].n_kv_heads == m->n_kv_heads && kv[0].head_dim == hd);
    Comm *comm = m->comm;

    k_embed(s->x, &w->tok_embd, b->token_ids, T);
    k_scale(s->x, (size_t)T * dim, sqrtf((float)dim));

    // s->xs holds the previous block's normalized output until the next norm adds it to x
    for (int l = 0; l < c->n_layers; l++) {
        const LayerWeights *L = &w->layers[l];
        const KVLayer *cache = &kv[l];
        const int window = model_layer_window(c, l);

        if (l == 0) k_rmsnorm(s->xb, s->x, L->attn_norm, T, dim, eps);
        else k_add_rmsnorm(s->xb, s->x, s->xs, L->attn_norm, T, dim, eps);

        model_attn_project(s->q, s->att, s->xb, &L->wq, NULL, L->q_norm, T, hd, eps);
        model_attn_project(s->k, s->att, s->xb, &L->wk, NULL, L->k_norm, T, hd, eps);
        model_attn_project(s->v, s->att, s->xb, &L->wv, NULL, NULL, T, hd, eps);

        // local layers: their own RoPE base (Gemma 3); global ones: the model's, maybe scaled
        bool local = window > 0 && c->rope_base_local > 0;
        k_rope_kv_write(s->q, s->k, s->v, b, cache, m->n_heads, c->rope_dim, local ? c->rope_base_local : c->rope_base,
                        local ? NULL : w->rope_global_factors, c->rope_layout);
        AttnOpt att = {.scale = c->attn_scale, .window = window, .softcap = c->attn_softcap};
        k_attention(s->att, s->q, cache, b, m->n_heads, &att);
        k_matmul(s->delta, s->att, &L->wo, T);
        if (comm) comm_all_reduce_sum(comm, s->delta, (size_t)T * dim);
        k_rmsnorm(s->xs, s->delta, L->post_attn_norm, T, dim, eps);

        // x += post_norm(attention); GeGLU on ffn_norm(x); its post-norm waits in xs
        k_add_rmsnorm(s->xb, s->x, s->xs, L->ffn_norm, T, dim, eps);
        k_matmul(s->gate, s->xb, &L->w_gate, T);
        k_matmul(s->up, s->xb, &L->w_up, T);
        k_gelu_mul(s->gate, s->gate, s->up, T, m->ffn_dim);
        k_matmul(s->delta, s->gate, &L->w_down, T);
        if (comm) comm_all_reduce_sum(comm, s->delta, (size_t)T * dim);
        k_rmsnorm(s->xs, s->delta, L->post_ffw_norm, T, dim, eps);
    }

    if (b->n_sample == 0) return;
    k_add_rmsnorm(s->xb, s->x, s->xs, w->output_norm, T, dim, eps);
    model_lm_head(m, s->xb, b->logits_rows, b->n_sample, logits);
    if (c->final_softcap > 0 && logits && m->tp_rank == 0)
        k_softcap(logits, (size_t)b->n_sample * c->vocab, c->final_softcap);
}
