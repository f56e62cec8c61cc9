// model_config.h: a decoder's hyperparameters, from GGUF metadata (model_config.c) or a Hugging
// Face config.json (model_hf.c), and what the forward pass needs to know of its variant.
#pragma once

#include <stdbool.h>

#include "engine/model/gguf.h"
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
    // ---- variants of the Llama forward (all false / 0 for Llama itself)
    bool qkv_bias;             // Qwen2: q, k and v projections add a bias (blk.N.attn_{q,k,v}.bias)
    bool qk_norm;              // Qwen3: RMSNorm over each head of q and k before RoPE
                               //        (blk.N.attn_{q,k}_norm.weight, (head_dim))
    // ---- sliding-window attention (Mistral v0.1, Qwen2 use_sliding_window, Gemma 2/3):
    // model_layer_window says which layers attend to the last sliding_window positions only.
    int sliding_window;        // 0 = none
    int swa_pattern;           // 0: every layer from swa_first_layer on is windowed; n > 0: layer
                               // l is windowed unless (l + 1) % n == 0 (Gemma 2: 2, Gemma 3: 6)
    int swa_first_layer;       // Qwen2's max_window_layers (0 for the others)
    float rope_base_local;     // Gemma 3: the windowed layers' RoPE base (0 = rope_base)
    float rope_linear_factor;  // Gemma 3 4B+: global layers' positions divided by this (0 = none)
    // ---- Gemma 2/3 (engine/model/gemma.c)
    bool gemma;                // embedding x sqrt(dim), GeGLU, post-attention/-MLP norms
    float attn_scale;          // scores' scale: query_pre_attn_scalar^-1/2 (0 = 1/sqrt(head_dim))
    float attn_softcap;        // Gemma 2: attention-logit soft-cap (0 = none)
    float final_softcap;       // Gemma 2: final-logit soft-cap (0 = none)
    // ---- Phi-3 (llama.c with fused tensors)
    bool fused_qkv;            // blk.N.attn_qkv.weight = [q; k; v] rows
    bool fused_gate_up;        // blk.N.ffn_up.weight = [gate; up] rows (2 ffn_dim)
    // LongRoPE (Phi-3 128k, Phi-3.5, Phi-4-mini): per-pair frequency divisors, the long set when
    // the context exceeds rope_orig_ctx (as llama.cpp picks), and the magnitude factor
    // sqrt(1 + ln(ctx / orig) / ln(orig)) on the rotated dims of q and k.
    bool longrope;
    float rope_attn_factor;    // 0 = 1
    float rope_long[128], rope_short[128]; // from config.json (a GGUF has them as tensors)
    // RoPE scaling "llama3" (Llama 3.1/3.2): per-pair frequency divisors computed at load from
    // these (or, in a GGUF, read from rope_freqs.weight). factor 0 = no scaling.
    float rope_scaling_factor;     // rope_scaling.factor (8 for Llama 3.1)
    float rope_low_freq_factor;    // rope_scaling.low_freq_factor (1)
    float rope_high_freq_factor;   // rope_scaling.high_freq_factor (4)
    int rope_orig_ctx;             // rope_scaling.original_max_position_embeddings (8192)
} ModelConfig;

// The window layer l attends within (0 = the whole context).
int model_layer_window(const ModelConfig *c, int l);
// Whether the forward reads the long LongRoPE factors (the context exceeds the original).
bool model_longrope_long(const ModelConfig *c);

// Reads and checks the hyperparameters. SL_ERR with a one-line message for an unsupported
// architecture (listing the supported ones), a missing key, or inconsistent values.
int model_config_from_gguf(ModelConfig *c, const GGUF *g, char *err);
void model_config_log(const ModelConfig *c);
// Comma-separated list of the architectures model_config_from_gguf accepts.
const char *model_supported_archs(void);
// The context limit to run with: requested (--max-model-len; 0 = the model's context_len).
// SL_ERR when it exceeds what the model was trained for.
int model_config_max_len(const ModelConfig *c, int requested, int *out, char *err);
// From a Hugging Face config.json's text (model_hf.c): architectures LlamaForCausalLM,
// MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM; arch is then "llama" (Mistral too),
// "qwen2" or "qwen3", rope_layout ROPE_NEOX. SL_ERR + one line naming the key for a missing or
// inconsistent value, an unsupported architecture (listing the supported ones) or rope_scaling.
int model_config_from_hf(ModelConfig *c, const char *json, size_t len, char *err);
// The RoPE frequency divisors of llama3 scaling, one per rotated pair (rope_dim / 2), into out.
void model_rope_freq_factors(const ModelConfig *c, float *out);

