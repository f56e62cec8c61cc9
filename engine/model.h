// model.h: a decoder-only transformer of the Llama family loaded from a GGUF file, and its
// forward pass over a flattened Batch (DESIGN.md §3-4).
//
//   ModelConfig  the hyperparameters, from GGUF metadata (model_config.c)
//   Model        the weights, as QMatrix views into the file's read-only mmap (no conversion:
//                the kernels compute on the stored quantized formats), plus the activation
//                buffers, allocated once at load for up to max_tokens rows per step
//   model_forward  one step: writes every row's K and V into the paged cache and returns the
//                logits of the batch's logits_rows (model_llama.c)
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "engine/gguf.h"
#include "engine/kv_cache.h"
#include "kernels/kernels.h"

#define MODEL_ARCH_MAX 32

typedef struct {
    char arch[MODEL_ARCH_MAX]; // general.architecture ("llama")
    int n_layers;              // {arch}.block_count
    int dim;                   // {arch}.embedding_length: width of the residual stream
    int n_heads;               // {arch}.attention.head_count
    int n_kv_heads;            // {arch}.attention.head_count_kv (GQA; = n_heads when absent)
    int head_dim;              // {arch}.attention.key_length, else dim / n_heads
    int ffn_dim;               // {arch}.feed_forward_length: hidden width of the SwiGLU MLP
    int vocab;                 // rows of token_embd.weight (= tokenizer.ggml.tokens length)
    int context_len;           // {arch}.context_length: the longest context it was trained for
    float rope_base;           // {arch}.rope.freq_base (10000 when absent)
    int rope_dim;              // {arch}.rope.dimension_count: leading dims of a head rotated
    RopeLayout rope_layout;    // ROPE_NORMAL for llama GGUFs (the converter permutes Q and K)
    float norm_eps;            // {arch}.attention.layer_norm_rms_epsilon
    bool tied_embeddings;      // no output.weight: the LM head reuses token_embd.weight
} ModelConfig;

// Reads and checks the hyperparameters. SL_ERR with a one-line message for an unsupported
// architecture (listing the supported ones), a missing key, or inconsistent values.
int model_config_from_gguf(ModelConfig *c, const GGUF *g, char *err);
void model_config_log(const ModelConfig *c);
// Comma-separated list of the architectures model_config_from_gguf accepts.
const char *model_supported_archs(void);
// The context limit to run with: requested (--max-model-len; 0 = the model's context_len).
// SL_ERR when it exceeds what the model was trained for.
int model_config_max_len(const ModelConfig *c, int requested, int *out, char *err);

// ---- weights: views into the mapping. Shapes are (rows, cols) = (out features, in features).
typedef struct {
    const float *attn_norm; // (dim)
    QMatrix wq;             // (n_heads * head_dim, dim)
    QMatrix wk;             // (n_kv_heads * head_dim, dim)
    QMatrix wv;             // (n_kv_heads * head_dim, dim)
    QMatrix wo;             // (dim, n_heads * head_dim)
    const float *ffn_norm;  // (dim)
    QMatrix w_gate;         // (ffn_dim, dim)
    QMatrix w_up;           // (ffn_dim, dim)
    QMatrix w_down;         // (dim, ffn_dim)
} LayerWeights;

typedef struct {
    QMatrix tok_embd;         // (vocab, dim)
    LayerWeights *layers;     // [n_layers]
    const float *output_norm; // (dim)
    QMatrix output;           // (vocab, dim); the same bytes as tok_embd when tied
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
    float *slab;  // the one allocation the fields above point into
    size_t bytes;
} RunState;

typedef struct {
    ModelConfig cfg;
    ModelWeights w;
    RunState s;
    int max_tokens;      // rows one model_forward call may carry
    GGUF gguf;           // owns the mapping the weights point into
    size_t weight_bytes; // bytes of all tensors the forward reads
} Model;

// Opens the GGUF, reads the config, binds and checks every tensor (type, shape, bytes), and
// allocates activations for max_tokens rows. SL_ERR + err on any file problem; *m is left
// zeroed (model_free on it is a no-op). Kernels must be set up separately with
// k_init(threads, max_tokens, model_max_cols(m)).
int model_load(Model *m, const char *path, int max_tokens, char *err);
void model_free(Model *m);
// The widest input row a matmul sees (for k_init's scratch).
int model_max_cols(const Model *m);

// One step over b: rows 0..b->n_tokens (<= max_tokens) of token ids at their positions; K and
// V of every row are written into kv at b->slot_mapping, attention reads kv through
// b->block_tables. logits: [b->n_sample, vocab], row i for batch row b->logits_rows[i].
void model_forward(Model *m, const KVCache *kv, const Batch *b, float *logits);
