// runner.h: the model runner (nano-vllm's model_runner.py, in C). It owns the KV cache and turns
// one scheduler decision into a forward pass:
//
//   runner_step(r, out, prompt_rows)
//                         1. copy-on-write block copies (every layer, K and V) from out->copies;
//                         2. the Batch of DESIGN.md §4: for each entry, rows for its tokens
//                            [start_pos, start_pos + num_new_tokens) with slots through the
//                            sequence's block table, the table itself, and one logits row for an
//                            entry that samples (its last token; a speculative decode one for its
//                            last token and one per proposal) or, for an entry that wants
//                            prompt logprobs (prompt_rows), one for every row of its chunk;
//                         3. the forward, those logits into r->logits.
//
// Two backends below the same Batch:
//   CPU   N = --tensor-parallel-size ranks (engine/tp.h): a Model and a KVCache per rank, the
//         cache holding only that rank's KV heads; the copies and the forward run on every rank.
//   CUDA  one GpuRunner (engine/gpu_runner.h): weights, KV cache and the forward on the device.
//
// Block ids are the block pool's (scheduler/block_pool.h), used directly as KV block indices on
// every rank: the pool never sees memory and the caches never see ownership.
//
// Speculative decoding with a draft model (CPU): the draft has a KV cache of its own with the same
// block ids, so the target's block tables address both. It mirrors the target: every step's rows
// go through the draft too (runner_step), so for every computed position of every sequence the
// draft's cache holds that token's KV, whoever computed it (prefill, a preempted recompute, a
// prefix-cache hit, a fork). Before the forward, runner_draft proposes: k one-row draft steps per
// speculating sequence, into the slots the scheduler gave the proposals.
//
// Memory plan (CPU): --kv-cache-memory bytes over all ranks together, rounded down to whole
// blocks (a block = every rank's share of every layer's K and V, and the draft's K and V); 0 picks
// kv_cache_default_memory(). Everything is allocated by runner_init_*; runner_step never
// allocates.
#pragma once

#include <stddef.h>

#include "engine/gpu_runner.h"
#include "engine/kv_cache.h"
#include "engine/model/model.h"
#include "engine/tp.h"
#include "scheduler/scheduler.h"

typedef struct {
    int block_size;             // tokens per KV block
    int max_num_seqs;           // entries per step at most
    int max_num_batched_tokens; // rows per step at most (the models were loaded for this many)
    int max_model_len;          // longest sequence: sizes the block-table rows
    size_t kv_cache_memory;     // CPU: bytes of KV cache, all ranks; 0 = kv_cache_default_memory()
    KVType kv_dtype;            // CPU cache element type
    int threads_per_rank;       // CPU: k_init's thread count on each rank
} RunnerConfig;

typedef struct {
    RunnerConfig cfg;
    // ---- CPU backend
    Model *models;              // [tp_size], not owned
    int tp_size;
    KVCache *kv;                // [tp_size] each rank's cache, the same block ids on every rank
    TpGroup tp;
    Model *draft;               // speculative decoding's draft model, not owned; NULL without one
    KVCache draft_kv;           // its cache: the same num_blocks and block ids as the target's
    BatchBuf draft_bb;          // the draft's rows: a proposal step's, then the mirror of a step's
    float *draft_logits;        // (max_num_seqs, draft vocab) one proposal step's logits
    bool draft_done;            // runner_draft ran for the pending step
    // ---- CUDA backend
    GpuRunner *gpu;             // not owned; NULL on the CPU
    // ---- both
    BatchBuf bb;                // the step's Batch arrays
    int *entry_logits_row;      // (max_num_seqs,) logits row of entry e, -1 when it samples nothing
    int *entry_prompt_row;      // (max_num_seqs,) logits row of entry e's first chunk row when the
                                // step asked for its prompt rows, else -1
    float *logits;              // (logits_cap, vocab) rows of this step's sampling entries, then
                                // whole chunks of entries that want prompt logprobs
    int logits_cap;             // max_num_seqs; max_num_batched_tokens once prompt rows are reserved
    int vocab;                  // the model's (the logits' row length)
    int num_blocks;
    size_t block_bytes;         // one block: every rank, every layer, K and V (and the draft's)
    size_t kv_bytes;            // the whole cache, all ranks
} Runner;

// CPU: the KV caches (the same num_blocks on every rank, and the draft's when draft is not NULL),
// the batch arrays and the rank threads (ranks 1..tp_size-1, each k_init'ing itself). SL_ERR when
// the memory holds no block. The draft runs on rank 0's thread.
int runner_init_cpu(Runner *r, Model *models, int tp_size, Model *draft, const RunnerConfig *cfg, char *err);
// CUDA: the batch arrays around g (which made its own memory plan and KV cache).
void runner_init_gpu(Runner *r, GpuRunner *g, int vocab, const ModelConfig *mc, const RunnerConfig *cfg);
void runner_free(Runner *r); // stops the rank threads; accepts a zeroed struct
static inline int runner_num_blocks(const Runner *r) { return r->num_blocks; }

// On the thread that will call runner_step, before the first step: the kernels' scratch of
// rank 0 (CPU); runner_thread_done frees it on the way out.
void runner_thread_init(const Runner *r);
void runner_thread_done(const Runner *r);

// Logs the memory plan (weights, activations, logits, KV cache in blocks and tokens) in one table.
void runner_log_plan(const Runner *r, int max_model_len);

// Whether there is a logits row per batched token (prompt logprobs: every row of a chunk): on the
// CPU, allocated at init (its pages become resident only when prompt logprobs write them); not on
// the GPU, whose logits buffer holds the sampled rows only.
bool runner_has_prompt_rows(const Runner *r);

// With a draft model, before every runner_step: the step's block copies on the draft's cache, then
// for each entry with num_spec > 0 its proposals, written to seq->tokens[start_pos + 1 ..
// start_pos + num_spec]: step j feeds token start_pos + j at its position and takes the argmax of
// the draft's logits over ids < n_vocab (lowest id on ties, as the greedy sampler). The proposals
// are greedy whatever the request samples with: verification (engine_spec.c) needs only that a
// proposal is a fixed token, and then keeps the output distribution exactly.
void runner_draft(Runner *r, const SchedOutput *out, int n_vocab);

// Copies, Batch, forward (see the top of this file). The scheduler's step must be pending.
// prompt_rows (NULL = none) is per entry the number of leading chunk rows whose logits the caller
// wants (prompt logprobs); such an entry gets a logits row for every row of its chunk, its first at
// runner_prompt_row. Needs runner_has_prompt_rows.
void runner_step(Runner *r, const SchedOutput *out, const int *prompt_rows);
static inline float *runner_prompt_row(const Runner *r, int e, int j) {
    return r->logits + (size_t)(r->entry_prompt_row[e] + j) * r->vocab;
}
// Row j (0..num_spec) of a speculative decode entry e: the logits after its last token (j = 0)
// and after each of its proposals; row num_spec is runner_logits_row.
static inline float *runner_spec_row(const Runner *r, const SchedEntry *en, int e, int j) {
    return r->logits + (size_t)(r->entry_logits_row[e] - en->num_spec + j) * r->vocab;
}
// The logits (vocab floats) of entry e, which must sample.
static inline float *runner_logits_row(const Runner *r, int e) {
    return r->logits + (size_t)r->entry_logits_row[e] * r->vocab;
}
