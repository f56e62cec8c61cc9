// scheduler.h: continuous batching over the block pool (nano-vllm's scheduler.py with vLLM V1's
// semantics: a per-request num_computed_tokens and one token budget per step).
//
// Each step the engine thread calls
//   sched_schedule(s, &out)   which sequences run and how many tokens each:
//                             1. decodes of running sequences (one token each), in priority order;
//                             2. the next prefill chunk of running sequences part-way through
//                                their prompt (or through a recompute after preemption);
//                             3. new and preempted sequences from the waiting queue, lowest
//                                priority value first, FCFS within a priority, each admitted
//                                with its prefix-cache hit and a first chunk,
//                             all inside max_num_batched_tokens and max_num_seqs. When the pool
//                             runs out of blocks, the running sequence that comes last in
//                             (priority, arrival) order is preempted: its blocks are freed and it
//                             goes back to the waiting queue to be recomputed (vLLM V1's choice).
//   runner + sampler          read out.entries (seq->tokens, seq->block_table, start_pos, ...),
//                             do out.copies first, and sample out.num_sample_rows tokens;
//                             Speculative proposals (seq->num_spec) extend decodes last, from
//                             the budget and the free (uncached) blocks the real work left:
//                             never by preempting anyone or evicting a prefix-cache block.
//   sched_update(s, ...)      advances num_computed_tokens, appends the sampled tokens, forks
//                             n > 1 groups after their prompt, finishes sequences, puts newly full
//                             blocks in the prefix cache and frees finished sequences' blocks.
//
// Prefix caching: at admission the waiting sequence's full blocks are looked up by chained hash;
// every leading hit is reused, but the last token is always recomputed so even a full hit yields
// logits (a hit covers at most num_tokens - 1 tokens, whole blocks only).
//
// The scheduler never allocates after sched_init: every array is sized for max_num_seqs and
// num_blocks, and sequences come with their arrays from seq_init.
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "scheduler/block_pool.h"
#include "scheduler/sequence.h"

typedef struct {
    int max_num_batched_tokens; // token budget of one step (--max-num-batched-tokens)
    int max_num_seqs;           // running sequences at most (--max-num-seqs)
    int block_size;             // tokens per KV block (--block-size)
    int num_blocks;             // KV blocks in the pool (from the memory plan)
    bool enable_prefix_caching; // --enable-prefix-caching (on by default)
    int max_model_len;          // prompt + output tokens at most (--max-model-len)
    int long_prefill_token_threshold; // a prompt chunk is at most this many tokens (vLLM's
                                // --long-prefill-token-threshold); 0 = only the step's budget
    int kv_window;              // > 0 when every layer attends within a sliding window of at
                                // most this many positions (Mistral): a running sequence's
                                // blocks wholly before the window of its next token go back to
                                // the pool; 0 = keep every block
} SchedConfig;

// One sequence's work in a step: compute KV for tokens [start_pos, start_pos + num_new_tokens)
// of seq->tokens, writing slots through seq->block_table. A decode has num_new_tokens == 1.
typedef struct {
    Sequence *seq;
    int start_pos;      // == seq->num_computed_tokens when scheduled
    int num_new_tokens;
    // Tokens to sample from the logits of this entry's last token: 0 for a prefill chunk that
    // does not complete the sequence's tokens, 1 otherwise, n for a parent whose prompt
    // completes in this step (its n samples fork into the group in sched_update).
    int num_samples;
    int sample_row;     // first row of this entry's samples in the step's sampled[] array
    // Speculative decoding: a decode that carries num_spec proposals (seq->tokens[start_pos + 1..])
    // after its last token, num_new_tokens = 1 + num_spec; each of those rows gets logits. Before
    // sched_update the engine sets num_accepted (0..num_spec): the proposals it kept, whose KV
    // stays; the KV of the rest is rolled back. sampled[sample_row] is the token after them.
    int num_spec;
    int num_accepted;
} SchedEntry;

// Copy block src into block dst (every layer, K and V) before the step: copy-on-write of a
// partial block shared by parallel samples.
typedef struct {
    int32_t src, dst;
} SchedBlockCopy;

// What one step runs. The arrays belong to the scheduler and stay valid until the next
// sched_schedule; sched_update fills the finished list.
typedef struct {
    SchedEntry *entries;      // decodes first, then prefill chunks
    int num_entries;
    int num_tokens;           // sum of num_new_tokens (<= max_num_batched_tokens)
    int num_decode_tokens;    // decode entries (one token, or one + proposals) (metrics)
    int num_spec_tokens;      // proposals carried (sum of num_spec)
    int num_sample_rows;      // sum of num_samples: the length of sched_update's arrays
    SchedBlockCopy *copies;
    int num_copies;
    Sequence **preempted;     // preempted in this step (now waiting, no blocks)
    int num_preempted;
    Sequence **finished;      // filled by sched_update: finished this step, caller may free
    int num_finished;
} SchedOutput;

typedef struct {
    SchedConfig cfg;
    BlockPool pool;

    Sequence **running;       // (max_num_seqs,) sorted by seq_order_cmp
    int num_running;
    int num_running_slots;    // sum of seq_num_slots over running (<= max_num_seqs)
    Sequence *wait_head, *wait_tail; // waiting queue, sorted by seq_order_cmp
    int num_waiting;
    uint64_t next_arrival;

    // this step: the buffers a SchedOutput points into, sized max_num_seqs
    SchedEntry *entries_buf;
    int32_t *cow_src, *cow_dst; // per entry, -1 when it copies nothing
    SchedBlockCopy *copies_buf;
    Sequence **preempted_buf;
    Sequence **finished_buf;
    bool step_pending;          // between sched_schedule and sched_update
    int budget;                 // tokens left in the step being planned

    // totals for metrics
    uint64_t num_preemptions;
    uint64_t num_steps;
    uint64_t num_window_freed_blocks; // blocks released as out of every layer's window
} Scheduler;

// Validates the config (the pool must hold one max_model_len sequence) and allocates everything.
int sched_init(Scheduler *s, const SchedConfig *cfg, char *err);
void sched_free(Scheduler *s); // accepts a zeroed struct; sequences stay the caller's

// Queues a sequence from seq_init. SL_ERR (nothing queued) when the prompt does not fit
// max_model_len with at least one output token, prompt + max_tokens exceeds it, or n exceeds
// max_num_seqs. The scheduler keeps the pointer until it reports the sequence finished.
int sched_add(Scheduler *s, Sequence *seq, char *err);
// Finishes (SEQ_FINISH_ABORT) every sequence of request `id`, waiting or running, and frees its
// blocks now. Returns how many sequences it finished; the caller may free them at once. Must not
// be called between sched_schedule and sched_update.
int sched_abort(Scheduler *s, int64_t id);

// Plans one step into *out (see the top of this file). Returns out->num_entries.
int sched_schedule(Scheduler *s, SchedOutput *out);
// Ends the step planned by the last sched_schedule. sampled[r] is the token of sample row r
// (rows in entry order, entry.num_samples each); stop[r] (may be NULL) is the caller's stop
// check for that token (EOS, stop strings). Fills out->finished with the sequences finished
// this step (stop, length), whose blocks are already released.
void sched_update(Scheduler *s, SchedOutput *out, const int32_t *sampled, const bool *stop);

static inline bool sched_has_work(const Scheduler *s) { return s->num_running + s->num_waiting > 0; }

// Verifies scheduler and pool invariants: each block's refcount equals the number of running
// block tables that hold it; waiting sequences hold no blocks; block tables cover exactly the
// computed tokens; free + idle cached + used == num_blocks; queues sorted. For tests and debug.
int sched_check(const Scheduler *s, char *err);
