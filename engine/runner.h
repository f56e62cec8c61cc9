// runner.h: the model runner (nano-vllm's model_runner.py, in C). It owns the KV-cache slab and
// turns one scheduler decision into a forward pass:
//
//   runner_step(r, out)   1. copy-on-write block copies (every layer, K and V) from out->copies;
//                         2. the Batch of DESIGN.md §4: for each entry, rows for its tokens
//                            [start_pos, start_pos + num_new_tokens) with slots through the
//                            sequence's block table, the table itself, and one logits row for an
//                            entry that samples (its last token);
//                         3. model_forward, logits of the sampling entries into r->logits.
//
// Block ids are the block pool's (scheduler/block_pool.h), used directly as KV-slab block
// indices: the pool never sees memory and the slab never sees ownership.
//
// Memory plan: the slab takes --kv-cache-memory bytes, rounded down to whole blocks (every layer,
// K and V); 0 picks runner_default_kv_memory(). Everything is allocated by runner_init; runner_step
// never allocates.
#pragma once

#include <stddef.h>

#include "engine/kv_cache.h"
#include "engine/model.h"
#include "scheduler/scheduler.h"

typedef struct {
    int block_size;             // tokens per KV block
    int max_num_seqs;           // entries per step at most
    int max_num_batched_tokens; // rows per step at most (the model was loaded for this many)
    int max_model_len;          // longest sequence: sizes the block-table rows
    size_t kv_cache_memory;     // bytes of the slab; 0 = runner_default_kv_memory()
    KVType kv_dtype;
} RunnerConfig;

typedef struct {
    Model *model;               // not owned
    RunnerConfig cfg;
    KVCache kv;                 // the slab (its own free list is unused: the pool hands out ids)
    BatchBuf bb;                // the step's Batch arrays
    int *entry_logits_row;      // (max_num_seqs,) logits row of entry e, -1 when it samples nothing
    float *logits;              // (max_num_seqs, vocab) rows of this step's sampling entries
    int vocab;
    size_t block_bytes;         // one block, every layer, K and V
    size_t layer_block_bytes;   // one block of one layer's K (or V)
} Runner;

// min(2 GiB, a quarter of physical memory): enough for tens of thousands of tokens of a small
// model, and the slab's pages are only touched as blocks fill.
size_t runner_default_kv_memory(void);

// Carves the KV slab and the batch arrays. SL_ERR when the memory holds no block.
int runner_init(Runner *r, Model *m, const RunnerConfig *cfg, char *err);
void runner_free(Runner *r); // accepts a zeroed struct
static inline int runner_num_blocks(const Runner *r) { return r->kv.num_blocks; }

// Logs the memory plan (weights, activations, logits, KV slab in blocks and tokens) in one table.
void runner_log_plan(const Runner *r, int max_model_len);

// Copies, Batch, forward (see the top of this file). The scheduler's step must be pending.
void runner_step(Runner *r, const SchedOutput *out);
// The logits (vocab floats) of entry e, which must sample.
static inline float *runner_logits_row(const Runner *r, int e) {
    return r->logits + (size_t)r->entry_logits_row[e] * r->vocab;
}

// Copies block src to block dst in every layer, K and V (copy-on-write of a partial block).
void runner_copy_block(Runner *r, int32_t src, int32_t dst);
