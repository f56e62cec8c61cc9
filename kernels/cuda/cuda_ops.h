// cuda_ops.h: the CUDA backend's launchers, seen from C. Plain C types and opaque handles only,
// so engine/ and the tests include this without any CUDA header (DESIGN.md §2).
//
// Every op mirrors its CPU twin in kernels.h (same arguments, same meaning) with three changes:
// the pointers are device pointers, the call is asynchronous on a KStream (it returns before the
// GPU is done; kstream_sync waits), and weights and the KV cache are in the GPU's formats:
//   - weights are bf16 on the device (KDevMatrix), dequantized once at load (quant.cu);
//   - the KV cache is bf16 (dtype KCUDA_KV_BF16), same slot layout as the CPU cache.
// Arithmetic is fp32 except where a bf16 operand is stated (matmul inputs, the prefill attention's
// Q and P on the tensor cores). Tests compare each op with its CPU twin (tests/gpu).
//
// Errors: a CUDA or cuBLAS failure is a broken environment: it aborts with file and line (DIE),
// like CHECK. Launch errors are checked after every launch. kcuda_available() is the one call
// that never aborts: it says whether a usable GPU is there at all.
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "kernels/kernels.h"

// kernels.h's KVType names the CPU caches' dtypes; the CUDA cache is bf16, numbered here until
// kernels.h gives it a member (then: KV_BF16 = 2 there, and these become aliases of it). C code
// sets dtype = KCUDA_KV_BF16; the .cu side compares the stored int with KCUDA_KV_BF16_ID, since
// in C++ a KVType holding 2 (outside its enumerators) is undefined behaviour to form or load.
#define KCUDA_KV_BF16_ID 2
#define KCUDA_KV_BF16 ((KVType)KCUDA_KV_BF16_ID)

// ---- device, streams, memory

// True when a CUDA driver and a device of compute capability >= 9.0 (what this code is built
// for: sm_90) are present. Never aborts; the first call decides and later calls repeat it.
bool kcuda_available(void);
// Why kcuda_available() is false (the driver's error, "device 0 (...) is sm_80; built for sm_90");
// "" when it is true.
const char *kcuda_unavailable_reason(void);
// Device 0's name and multiprocessor count (kcuda_available() must be true).
const char *kcuda_device_name(void);
int kcuda_sm_count(void);

// A stream with what its ops need beside the stream itself: a cuBLAS handle bound to it, the
// cuBLAS workspace, and a bf16 staging buffer for up to max_tokens rows of max_cols matmul
// inputs. Everything is allocated here, so no op allocates (DESIGN.md §5).
typedef struct KStream KStream;
KStream *kstream_create(int max_tokens, int max_cols);
void kstream_sync(KStream *s);
void kstream_free(KStream *s); // accepts NULL

void *kdev_malloc(size_t bytes);
void kdev_free(void *p); // accepts NULL
// Copies and fills, in order with the work already queued. With s == NULL they go to the default
// stream, which the KStreams wait for and are waited by, and a copy to the host is complete when
// the call returns. With a stream they are queued on it (host memory should then be pinned:
// kdev_malloc_host) and complete by the next kstream_sync.
void kdev_memcpy_h2d(void *dst, const void *src, size_t bytes, KStream *s);
void kdev_memcpy_d2h(void *dst, const void *src, size_t bytes, KStream *s);
void kdev_memcpy_d2d(void *dst, const void *src, size_t bytes, KStream *s);
void kdev_memset(void *dst, int byte, size_t bytes, KStream *s);
void *kdev_malloc_host(size_t bytes); // pinned host memory
void kdev_free_host(void *p);         // accepts NULL

// Timing (benchmarks): events recorded on a stream; elapsed time between two after a sync.
typedef struct KEvent KEvent;
KEvent *kevent_create(void);
void kevent_record(KEvent *e, KStream *s);
float kevent_elapsed_ms(KEvent *start, KEvent *end); // waits for end
void kevent_free(KEvent *e);                          // accepts NULL

// ---- weights (quant.cu)

// A weight matrix on the device: rows x cols bf16, row-major (rows output features).
typedef struct {
    int64_t rows, cols;
    uint16_t *data; // device, bf16 bits
} KDevMatrix;

// Q4_0, Q4_1, Q8_0, F32, F16 and BF16 rows dequantize on the device; the other types
// dequant_row() reads are dequantized on the host a slab at a time and converted there.
bool kcuda_dequant_on_device(QType t);
// Uploads w and dequantizes it to bf16 (load time: allocates, and waits for the copy).
void kdev_matrix_upload(KDevMatrix *m, const QMatrix *w, KStream *s);
void kdev_matrix_free(KDevMatrix *m); // accepts a zeroed struct
// dst[0..n) = bf16 of the n values of type t stored at src (device memory, raw GGUF blocks).
// The twin of dequant_row followed by f32_to_bf16, bit for bit. t: kcuda_dequant_on_device.
void k_dequant_bf16_cuda(uint16_t *dst, const void *src, QType t, int64_t n, KStream *s);

// ---- the ops (twins of kernels.h)

// out[t, :] = table row ids[t] (bf16 widened to f32). An id outside the table gives a row of NaN
// (the CPU twin aborts; the device cannot, and NaN logits are what a test or a user will see).
void k_embed_cuda(float *out, const KDevMatrix *table, const int *ids, int n_tokens, KStream *s);

// out = x · Wᵀ through cuBLAS: x rounded to bf16, bf16 x bf16 products, fp32 accumulate and out.
// x: [n_tokens, w->cols]  out: [n_tokens, w->rows]. n_tokens <= the stream's max_tokens.
void k_matmul_cuda(float *out, const float *x, const KDevMatrix *w, int n_tokens, KStream *s);
// The LM head on the sampled rows only: out[i] = x[rows[i]] · Wᵀ, rows on the device.
void k_matmul_rows_cuda(float *out, const float *x, const int *rows, int n_rows, const KDevMatrix *w,
                        KStream *s);

void k_rmsnorm_cuda(float *out, const float *x, const float *w, int n_tokens, int dim, float eps,
                    KStream *s);
void k_add_rmsnorm_cuda(float *out, float *residual, const float *delta, const float *w, int n_tokens,
                        int dim, float eps, KStream *s);

// b: n_tokens on the host, positions and slot_mapping on the device. cache: k, v on the device,
// dtype KCUDA_KV_BF16. A slot < 0 or past the cache is not written (the CPU twin aborts on the
// latter; the runner never makes one). freq_factors: rope_dim / 2 floats on the device, or NULL.
void k_rope_kv_write_cuda(float *q, float *k, const float *v, const Batch *b, const KVLayer *cache,
                          int n_heads, int rope_dim, float freq_base, const float *freq_factors,
                          RopeLayout layout, KStream *s);

// x[t, :] += bias (bias: dim floats on the device), the twin of k_add_bias.
void k_add_bias_cuda(float *x, const float *bias, int n_tokens, int dim, KStream *s);

void k_silu_mul_cuda(float *out, const float *gate, const float *up, int n_tokens, int dim, KStream *s);

// ---- attention (attention.cu)
// A plan is built once per step from the host copy of the Batch and serves every layer: which
// rows take the decode kernel (split across thread blocks over the context, FlashDecoding) and
// which query tiles take the prefill kernel (tensor cores), and how long contexts are split.
typedef struct KAttnPlan KAttnPlan;
// Sized for steps of at most max_tokens query rows, n_heads query heads of head_dim.
KAttnPlan *kattn_plan_create(int max_tokens, int n_heads, int head_dim);
// hb: the step's Batch with HOST pointers (n_tokens, n_seqs, positions, query_start). Uploads the
// work lists on s. Call after the previous step's attention has been queued on the same stream.
// window: the sliding window of the layers the plan serves (0: none); a decode row's work
// starts at its window.
void kattn_plan_build(KAttnPlan *p, const Batch *hb, int n_kv_heads, int window, KStream *s);
void kattn_plan_free(KAttnPlan *p); // accepts NULL
// This step's decode rows, decode thread blocks and prefill thread blocks (tests, benchmarks).
void kattn_plan_counts(const KAttnPlan *p, int *decode_rows, int *decode_blocks, int *prefill_tiles);

// The twin of k_attention: q, out [n_tokens, n_heads, head_dim] f32 on the device; b with device
// pointers (positions, block_tables; n_tokens, max_blocks_per_seq on the host); cache bf16.
// head_dim 64 or 128; n_heads a multiple of cache->n_kv_heads (any group size: a decode block
// serves up to 8 query heads of one KV head, larger groups take several). o: scale, window (the
// plan's) and soft-cap as k_attention's; keys before a row's window are never read.
void k_attention_cuda(float *out, const float *q, const KVLayer *cache, const Batch *b,
                      const KAttnPlan *plan, int n_heads, const AttnOpt *o, KStream *s);

// ---- sampling on the device (sample.cu); the CPU twin is engine/sampling/sampler.c's
// sampler_sample (min_tokens bans not yet: see sample.cu).
// One row of logits per request. Same pipeline and parameters as sampler.h: logit bias, then
// penalties, then greedy or temperature / min-p / top-k / top-p and one draw. The draw uses u,
// the request's next uniform from its own seeded generator (sampler_rng_uniform on the host), so
// seeds give the same stream on either backend. Only KSampleOut comes back to the host.
#define KSAMPLE_MAX_LOGPROBS 20 // sampler.h's SAMPLER_MAX_LOGPROBS
#define KSAMPLE_TEMP_EPS 1e-5f  // sampler.h's SAMPLER_TEMP_EPS: below it, greedy

typedef struct {
    float temperature, top_p, min_p;
    int top_k;
    float presence_penalty, frequency_penalty, repetition_penalty;
    int logprobs;           // -1: none; else 0..KSAMPLE_MAX_LOGPROBS others beside the chosen one
    int logprobs_processed; // 0: of the raw logits (vLLM's default); 1: after bias and penalties
    int bias_start, n_bias; // this row's entries in the bias array
    int pen_start, n_pen;   // this row's entries in the penalty array
    double u;               // in [0, 1)
} KSampleRow;

// orig is written by the kernel: the logit before the entry changed it, so raw logprobs survive
// the in-place update of the row.
typedef struct {
    int32_t id;
    float val; // added to the logit; repeated ids add up, in array order
    float orig;
} KSampleBias;

// One distinct token the request has seen (sampler.h's SamplerTokenCount): in its prompt and/or
// output. The repetition penalty applies to every entry; frequency and presence when count > 0.
typedef struct {
    int32_t token;
    int32_t count; // occurrences in the output
    float orig;
} KSamplePenalty;

// logprob, n_top and the lists are filled when the row asked for logprobs (else 0).
typedef struct {
    int32_t token; // -1 if the row's logits had no finite maximum (the CPU twin aborts)
    float logprob;
    int32_t n_top;
    int32_t top_ids[KSAMPLE_MAX_LOGPROBS]; // most likely first, ties to the lower id
    float top_logprobs[KSAMPLE_MAX_LOGPROBS];
} KSampleOut;

// logits: [n_rows, vocab] on the device, modified in place (bias, penalties) like the CPU twin.
// rows, bias, pen, out: device arrays; each row needs its own bias and penalty entries (the
// kernel writes their orig). pen: the request's SamplerState entries when any penalty is on.
// bias or pen may be NULL when no row has entries. vocab <= KSAMPLE_MAX_VOCAB.
#define KSAMPLE_MAX_VOCAB (1 << 20)
void k_sample_cuda(KSampleOut *out, float *logits, int n_rows, int vocab, const KSampleRow *rows,
                   KSampleBias *bias, KSamplePenalty *pen, KStream *s);

#ifdef __cplusplus
}
#endif
