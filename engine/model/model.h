// model.h: a decoder-only transformer (Llama, Mistral, Qwen2, Qwen3, Phi-3, Gemma 2/3) bound
// from a WeightSource (a GGUF file, a safetensors directory or dummy weights), and its forward
// pass over a flattened Batch (DESIGN.md §3-4), whole or as one tensor-parallel rank's share
// (§6).
//
//   ModelConfig  the hyperparameters (model_config.h)
//   Model        one rank's weights, as QMatrix views into the source's tensors (no conversion:
//                the kernels compute on the stored formats) except what sharding or a format
//                forces to be copied, plus the activation buffers, allocated once at load for up
//                to max_tokens rows per step (model.c)
//   model_forward  one step: writes every row's K and V (this rank's heads) into the paged cache
//                and returns the logits of the batch's logits_rows (llama.c, or gemma.c's
//                gemma_forward for Gemma)
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "engine/model/model_config.h"
#include "engine/model/weights.h"
#include "kernels/comm.h"
#include "kernels/kernels.h"

// ---- weights: views into the source's tensors, or into the rank's own copies (Model.owned).
// Shapes are (rows, cols) = (out features, in features); vectors are always f32.
typedef struct {
    const float *attn_norm; // (dim)
    QMatrix wq;             // (n_heads * head_dim, dim)
    QMatrix wk;             // (n_kv_heads * head_dim, dim)
    QMatrix wv;             // (n_kv_heads * head_dim, dim)
    const float *bq, *bk, *bv; // Qwen2 biases: (n_heads * head_dim), (n_kv_heads * head_dim) x2; else NULL
    const float *q_norm, *k_norm; // Qwen3: (head_dim) each; else NULL
    QMatrix wo;             // (dim, n_heads * head_dim)
    const float *ffn_norm;  // (dim)
    QMatrix w_gate;         // (ffn_dim, dim)
    QMatrix w_up;           // (ffn_dim, dim)
    QMatrix w_down;         // (dim, ffn_dim)
    const float *post_attn_norm, *post_ffw_norm; // Gemma: (dim) each, on the blocks' outputs; else NULL
} LayerWeights;

typedef struct {
    QMatrix tok_embd;         // (vocab, dim)
    LayerWeights *layers;     // [n_layers]
    const float *output_norm; // (dim)
    QMatrix output;           // (vocab, dim); the same bytes as tok_embd when tied
    const float *rope_freq_factors; // (rope_dim / 2) llama3 RoPE scaling or LongRoPE divisors, else NULL
    const float *rope_global_factors; // Gemma 3 linear scaling: (rope_dim / 2) divisors of the
                                      // global layers, else NULL
} ModelWeights;

// ---- activations, each sized for max_tokens rows (one slab; the step never allocates)
typedef struct {
    float *x;     // (max_tokens, dim) the residual stream
    float *xb;    // (max_tokens, dim) normalized input of the current block
    float *q;     // (max_tokens, n_heads * head_dim)
    float *k;     // (max_tokens, n_kv_heads * head_dim)
    float *v;     // (max_tokens, n_kv_heads * head_dim)
    float *att;   // (max_tokens, n_heads * head_dim) attention output, before wo
    float *delta; // (max_tokens, dim) a block's output, added to x by the next add_rmsnorm
    float *gate;  // (max_tokens, ffn_dim) gate projection, then silu(gate) * up
    float *up;    // (max_tokens, ffn_dim)
    float *xs;    // (max_tokens, dim) final-normed rows that get logits, gathered
    // LM head split by vocabulary (tp_size > 1): the sampled rows go through in chunks of
    // lm_rows; each rank's [lm_rows, vocab_n] logits are all-gathered, padded to lm_shard
    // columns, into lm_all = [tp_size][lm_rows * lm_shard], which rank 0 interleaves.
    float *lm_part; // (lm_rows * lm_shard)
    float *lm_all;  // (tp_size * lm_rows * lm_shard)
    int lm_rows, lm_shard;
    float *slab;  // the one allocation the fields above point into
    size_t bytes;
} RunState;

// One rank's part of the model (the whole model at tp_size 1). With tensor parallelism
// (Megatron style, DESIGN.md §6) rank r holds KV heads [r * n_kv_heads, (r + 1) * n_kv_heads)
// of the full model and the query heads that read them, ffn_dim columns of gate/up and the
// matching rows of down, the matching input columns of wo; the LM head's vocabulary rows
// [vocab_lo, vocab_lo + vocab_n); the embedding and norms whole. The weights' shapes in
// ModelWeights above are this rank's (n_heads etc. below, not cfg's).
typedef struct {
    ModelConfig cfg;     // the whole model
    int tp_rank, tp_size;
    int n_heads, n_kv_heads, ffn_dim; // this rank's share: cfg's / tp_size
    int vocab_lo, vocab_n;            // LM-head rows this rank computes
    Comm *comm;          // the rank's communicator; NULL at tp_size 1
    ModelWeights w;      // this rank's weights (views into the source, or into `owned`)
    RunState s;          // this rank's activations (shapes with this rank's widths)
    int max_tokens;      // rows one model_forward call may carry
    WeightSource *src;   // where the weights live (not owned unless owns_src)
    bool owns_src;
    void *owned;         // weights this rank had to copy or convert (column slices, f32 norms)
    size_t owned_bytes;
    size_t weight_bytes; // bytes of all weights this rank's forward reads
} Model;

// The sizes --tensor-parallel-size may take for c: divisors of both n_heads and n_kv_heads
// (whole GQA groups per rank) that also divide ffn_dim. SL_OK, or SL_ERR with "tensor parallel
// size N does not divide the model's 9 attention heads and 3 KV heads; valid sizes: 1, 3".
int model_tp_check(const ModelConfig *c, int tp_size, char *err);
// The largest n (floats) any collective of a rank's forward uses: the group's Comm must allow
// it (comm_cpu_group_create's max_floats). At least max_tokens * dim (the all-reduces).
size_t model_comm_max_floats(const ModelConfig *c, int max_tokens, int tp_size);

// Rank tp_rank's share of the model in src (which must outlive *m), activations for max_tokens
// rows. comm: that rank's handle (NULL at tp_size 1). Binds and checks every tensor (type,
// shape, bytes); a tensor the forward does not read is an error. SL_ERR + err; *m is then
// zeroed (model_free on it is a no-op).
int model_load_shard(Model *m, WeightSource *src, int max_tokens, int tp_rank, int tp_size, Comm *comm,
                     char *err);
// The whole model from path (wsrc_open with LOAD_AUTO; the model owns the source).
int model_load(Model *m, const char *path, int max_tokens, char *err);
void model_free(Model *m);
// The widest input row a matmul of this rank sees (for the k_init of the rank's thread).
int model_max_cols(const Model *m);

// One step over b: rows 0..b->n_tokens (<= max_tokens) of token ids at their positions; K and
// V of every row are written into the paged cache kv ([cfg.n_layers] layers of this rank's KV
// heads: a KVCache's layers) at b->slot_mapping, attention reads it through b->block_tables. logits: [b->n_sample, vocab] (the whole vocabulary), row i for batch
// row b->logits_rows[i]. With tensor parallelism every rank calls this at the same time with
// the same b and its own kv; rank 0's logits get the result, the other ranks may pass NULL.
void model_forward(Model *m, const KVLayer *kv, const Batch *b, float *logits);
// gemma.c: model_forward for cfg.gemma (model_forward hands it over).
void gemma_forward(Model *m, const KVLayer *kv, const Batch *b, float *logits);
// llama.c, shared with gemma.c: the LM head on rows[0..n_sample) of the final-normed xb
// (gathered into s.xs; split by vocabulary or not), and one projection of the attention input
// (out = xb · wᵀ (+ bias), then, with head_norm, RMSNorm over each head; tmp: scratch for it).
void model_lm_head(Model *m, const float *xb, const int *rows, int n_sample, float *logits);
void model_attn_project(float *out, float *tmp, const float *xb, const QMatrix *w, const float *bias,
                        const float *head_norm, int T, int head_dim, float eps);
