// kernels.h: the op interface every backend implements (DESIGN.md §3). The model forward
// (engine/model/llama.c) is written once against these calls. Today each k_<op>() runs its
// CPU implementation in kernels/cpu/<op>.c (OpenMP across cores, SIMD inside); the CUDA twins
// in kernels/cuda/<op>.cu join behind the same calls with the GPU backend.
//
// Shapes are row-major, the last dimension contiguous; [n_tokens, dim] means n_tokens rows.
// No op allocates: scratch comes from k_init(). The CPU ops' scratch and thread count belong to
// the calling thread: each thread that runs ops (the engine thread, or each tensor-parallel
// rank's thread) calls k_init for itself, and then several such threads may run ops at the same
// time, each spreading its work over its own k_threads() (its own OpenMP team). Outputs never
// alias inputs except where a comment says so. Results are deterministic and batch-invariant: a
// row's output is bitwise the same whatever other rows share the call and whatever the
// thread count.
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/quant.h"

// A weight matrix in its stored (possibly quantized) format: rows output features, each of
// cols input features, rows * qtype_row_size(type, cols) bytes. For a GGUF tensor, cols = ne[0]
// and rows = ne[1].
typedef struct {
    QType type;
    int64_t rows, cols;
    const void *data;
    const void *pack; // the weights repacked for the 8-bit AMX kernels (k_pack), or NULL
} QMatrix;

// One layer's slice of the paged KV cache: num_blocks blocks of block_size token slots; slot s
// (= block * block_size + offset) holds n_kv_heads * head_dim values of K and of V.
typedef enum { KV_F32 = 0, KV_F16 = 1, KV_BF16 = 2 } KVType; // BF16: the CUDA cache only
typedef struct {
    void *k, *v;      // [num_blocks * block_size, n_kv_heads, head_dim] each, of dtype
    int num_blocks, block_size, n_kv_heads, head_dim;
    KVType dtype;
} KVLayer;

// The flattened step (DESIGN.md §4), built by the runner. Sequence s owns query rows
// [query_start[s], query_start[s+1]); a row at position p attends to cache positions 0..p of
// its sequence, read through block_tables[s * max_blocks_per_seq + p / block_size].
typedef struct {
    int n_tokens, n_seqs;
    const int *token_ids;     // [n_tokens]
    const int *positions;     // [n_tokens]
    const int *slot_mapping;  // [n_tokens] where each row's K and V are written
    const int *query_start;   // [n_seqs + 1]
    const int *context_lens;  // [n_seqs] cached + new tokens of each sequence after this step
    const int *block_tables;  // [n_seqs * max_blocks_per_seq]
    int max_blocks_per_seq;
    const int *logits_rows;   // [n_sample] rows whose logits the sampler needs
    int n_sample;
} Batch;

typedef enum { ROPE_NORMAL = 0, ROPE_NEOX = 1 } RopeLayout; // adjacent pairs / split halves

// Sets the CALLING THREAD's op thread count and allocates its scratch for up to max_tokens rows
// of at most max_cols input features (the widest matmul input; also >= n_heads * head_dim,
// which attention's per-thread buffers need). Call on the thread that will run the ops, before
// any op there (again to resize, never in the step loop); ops that need scratch (k_matmul,
// k_attention) abort on a thread that has not called it, or when called with more rows or
// columns than it was sized for. Other threads' contexts are untouched.
void k_init(int n_threads, int max_tokens, int max_cols);
int k_threads(void); // the calling thread's count (1 before its k_init)
// Releases the calling thread's scratch (tests, shutdown; a thread that exits without it has it
// released at exit); k_init may be called again after.
void k_free(void);

// out[t, :] = table row ids[t], dequantized.                 out: [n_tokens, table->cols]
void k_embed(float *out, const QMatrix *table, const int *ids, int n_tokens);

// out = x · Wᵀ.                 x: [n_tokens, w->cols]  out: [n_tokens, w->rows]
// Q4_0/Q4_1/Q8_0 weights compute on the stored blocks against x quantized per call to 16 bits
// in blocks of 32 (|error| per element <= amax(block) / 65534, up to float rounding of the
// scale: 258 times finer than ggml's 8-bit activations, whose error flips near-tie tokens);
// F32/F16 in float; other dequantizable types a row at a time. Every output element is
// computed in an order fixed by its own inputs: bitwise the same whatever else is in the batch
// and whatever the thread count.
void k_matmul(float *out, const float *x, const QMatrix *w, int n_tokens);

// The activation precision of the Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/IQ4_NL and K-quant (Q2_K..Q6_K)
// matmuls (--cpu-activations), process-wide: set it before ops run (tests switch it between
// ops). K_ACT_INT16 (the default) is the path above (Q5_0/Q5_1/IQ4_NL and the K-quants
// dequantized a row at a time).
// K_ACT_INT8 quantizes x to 8 bits per block of 32 as ggml's Q8_0 does, or per 256 as Q8_K for
// the K-quants (|error| per element <= amax(block) / 254), and uses u8 x s8 integer dot products
// (vpdpbusd, or AMX tiles for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 where the CPU has them; vpmaddubsw + vpdpwssd for
// the K-quants' per-16 scales): twice the integer throughput or more, at 258 times the
// activation error. It stays deterministic and batch-invariant; against the 16-bit path it
// differs by that error.
// K_ACT_AUTO (--cpu-activations auto, the server's default): int8 for the types int16 would
// dequantize a row at a time (Q5_0, Q5_1, IQ4_NL, the K-quants: 7-20x faster there, at the 8-bit
// activation error); for Q4_0/Q4_1/Q8_0 int8 where the "amx" path runs (the tiles take 8-bit
// operands only: prefill and batched decode twice as fast, as llama.cpp does there), else int16
// (their integer kernel: the exact path, at most 1.2-1.4x slower there). Chosen per matrix type
// and fixed for the process, so a row's result still depends on nothing but the row.
typedef enum { K_ACT_INT16 = 0, K_ACT_INT8 = 1, K_ACT_AUTO = 2 } KActivations;
void k_set_activations(KActivations a);
KActivations k_activations(void);
// Whether matmuls of a matrix of type t take 8-bit activations under the current setting.
bool k_act_int8(QType t);
// The instruction-set path the 8-bit kernels use, picked at run time from the CPU's features:
// "amx", "avx512-vnni", "avx-vnni", "avx2" or "scalar" (the first the CPU supports, in that
// order; "amx" also needs the kernel's permission for the tile state, asked on the first call).
// "amx" computes bit for bit what "scalar" does; the others differ from it in the last bits.
const char *k_int8_path(void);
// Forces a path (tests, bench); false, changing nothing, for an unknown name or one the CPU
// lacks. k_int8_path_name(i) lists them for i = 0, 1, ... (NULL past the last).
bool k_int8_path_set(const char *name);
const char *k_int8_path_name(int i);
// The "amx" path reads Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 weights (matmul_amx.c) and Q2_K..Q6_K weights
// (matmul_k8_amx.c) repacked for the tiles:
// k_pack_bytes is the size of that copy when the current settings (int8 activations, the "amx"
// path) want one, else 0; k_pack writes it to dst (64-byte aligned, k_pack_bytes long, kept as
// long as w is used) from w->data and sets w->pack. Matrices without one take the VNNI kernels.
size_t k_pack_bytes(const QMatrix *w);
void k_pack(QMatrix *w, void *dst);

// out[t] = x[t] / sqrt(mean(x[t]²) + eps) * w.          x, out: [n_tokens, dim]  w: [dim]
void k_rmsnorm(float *out, const float *x, const float *w, int n_tokens, int dim, float eps);
// residual += delta, then out = rmsnorm(residual) * w (the pre-norm block's join).
void k_add_rmsnorm(float *out, float *residual, const float *delta, const float *w, int n_tokens,
                   int dim, float eps);

// Rotates q [n_tokens, n_heads, head_dim] and k [n_tokens, n_kv_heads, head_dim] in place at
// b->positions (first rope_dim dims of each head), then writes k and v into cache at
// b->slot_mapping (converted to the cache's dtype). A slot < 0 marks a padding row: rotated,
// not cached. Pair i turns by pos · freq_base^(−2i / rope_dim).
// freq_factors (rope_dim / 2 values, or NULL for none) divide pair i's frequency (llama3 RoPE
// scaling: Llama 3.1's rope_freqs).
void k_rope_kv_write(float *q, float *k, const float *v, const Batch *b, const KVLayer *cache,
                     int n_heads, int rope_dim, float freq_base, const float *freq_factors, RopeLayout layout);

// How k_attention scores: scale (usually 1/sqrt(head_dim); Gemma's query_pre_attn_scalar),
// window (> 0: a row at position p attends to positions p - window + 1 .. p only, Mistral's and
// Gemma's sliding window; 0: the whole context), softcap (> 0: each scaled score s becomes
// softcap · tanh(s / softcap) before the softmax, Gemma 2's attention-logit soft-capping).
typedef struct {
    float scale;
    int window;
    float softcap;
} AttnOpt;

// Paged causal attention with GQA (query head h reads KV head h / (n_heads / n_kv_heads)).
// q, out: [n_tokens, n_heads, head_dim]. Row t of sequence s at position p = positions[t]
// attends to cache positions 0..p of s (so every row of this step must already be written), or
// to the last o->window of them. Softmax in f32. KV_F16 halves the cache bandwidth and is the
// faster choice on CPU too (see kernels/cpu/attention.c).
void k_attention(float *out, const float *q, const KVLayer *cache, const Batch *b, int n_heads,
                 const AttnOpt *o);

// x[t, :] += bias over n_tokens rows of dim (Qwen2's QKV biases).
void k_add_bias(float *x, const float *bias, int n_tokens, int dim);

// out[i] = silu(gate[i]) * up[i] over n_tokens rows of dim (out may be gate or up).
void k_silu_mul(float *out, const float *gate, const float *up, int n_tokens, int dim);
// out[i] = gelu(gate[i]) * up[i], GELU's tanh approximation (Gemma's GeGLU, HF's
// gelu_pytorch_tanh), over n_tokens rows of dim (out may be gate or up).
void k_gelu_mul(float *out, const float *gate, const float *up, int n_tokens, int dim);
// x[i] = cap · tanh(x[i] / cap) over n values in place (Gemma 2's final-logit soft-capping).
void k_softcap(float *x, size_t n, float cap);
// x[i] *= s over n values in place (Gemma's embedding scale, Phi-3's LongRoPE magnitude).
void k_scale(float *x, size_t n, float s);
