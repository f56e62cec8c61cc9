// sequence.h: the state of one sequence the scheduler runs (nano-vllm's sequence.py, in C).
//
// A Sequence holds token ids (the prompt followed by the tokens generated so far), how many of
// them have their KV computed in the cache (num_computed_tokens, vLLM V1's per-request cursor),
// the block table mapping its logical blocks to KV-pool block ids, and the chained hashes of
// its full blocks for prefix caching. It holds no policy: scheduler.c moves it between states.
//
// Ownership: the caller (the engine) allocates a Sequence with seq_init at admission and frees
// it with seq_free once the scheduler reports it finished or aborted. Every array is sized at
// seq_init for the longest the sequence can grow, so the step loop never allocates.
//
// Parallel sampling (n > 1): seq_init also allocates the n-1 children. They stay dormant until
// the parent's prompt is computed; then the scheduler forks them (scheduler.c, sched_update):
// each child copies the parent's tokens and block table and takes a reference on every prompt
// block, and from then on is an independent running sequence. All n share the request id and
// differ by sample_index (the OpenAI "choices" index). seq_free(parent) frees the children, so
// a group is freed once every member is finished (members can finish on different steps).
#pragma once

#include <stdbool.h>
#include <stdint.h>

typedef enum {
    SEQ_WAITING = 0,   // admitted by sched_add, holds no blocks yet
    SEQ_RUNNING = 1,   // in the running set, holds blocks for its computed tokens
    SEQ_PREEMPTED = 2, // evicted from the running set, back in the waiting queue for recompute
    SEQ_FINISHED = 3,  // done (see finish_reason); holds no blocks
} SeqStatus;

typedef enum {
    SEQ_FINISH_NONE = 0,
    SEQ_FINISH_STOP = 1,   // the caller's stop check (EOS, stop string, stop token)
    SEQ_FINISH_LENGTH = 2, // max_tokens reached, or the sequence reached max_model_len
    SEQ_FINISH_ABORT = 3,  // sched_abort (client gone, or an error)
} SeqFinishReason;

// Per-request knobs the scheduler reads; the sampler's knobs live with the engine.
typedef struct {
    int priority;       // lower runs first; FCFS within a priority (vLLM's convention)
    int max_tokens;     // output tokens at most; 0 = until max_model_len
    int n;              // parallel samples of the prompt (>= 1)
    int32_t adapter_id; // part of every block hash, so two adapters never share KV; 0 = none
    uint64_t hash_root; // the parent hash of the first block (cache_salt: blocks are shared only
                        // between sequences with the same root); 0 = BLOCKPOOL_HASH_ROOT
    bool no_prefix_hits; // compute every prompt token (prompt logprobs need every prompt row's
                         // logits); its blocks are still offered to the cache for others
} SeqParams;

typedef struct Sequence Sequence;
struct Sequence {
    int64_t id;         // request id, shared by the n samples of one prompt
    int sample_index;   // 0 for the parent, 1..n-1 for the children
    int n_samples;      // n of the request (the same in parent and children)
    int priority;
    int32_t adapter_id;
    uint64_t hash_root; // parent hash of block 0 (SeqParams.hash_root, or BLOCKPOOL_HASH_ROOT)
    bool no_prefix_hits; // SeqParams.no_prefix_hits
    uint64_t arrival;   // admission order, set by sched_add; children share the parent's
    SeqStatus status;
    SeqFinishReason finish_reason;

    // ---- tokens: prompt then outputs, capacity max_tokens_total
    int32_t *tokens;         // (max_tokens_total,)
    int num_prompt_tokens;
    int num_tokens;          // prompt + outputs so far
    int max_tokens_total;    // min(max_model_len, prompt + max_tokens): reaching it finishes LENGTH
    int max_tokens;          // the request's output limit, 0 = none (sched_add validates it)
    int num_spec;            // speculative proposals at tokens[num_tokens, num_tokens + num_spec):
                             // written by the engine before sched_schedule (a decoding sequence
                             // only, at most max_tokens_total - num_tokens - 1 so that every
                             // accepted proposal plus the next token fits), clipped by the
                             // scheduler to what it plans, 0 after every step

    // ---- KV state
    int num_computed_tokens; // tokens whose KV is in the cache; the next step starts here
    int num_cached_tokens;   // prefix-cache hit at first admission (what usage reports); -1 before
    int32_t *block_table;    // (max_blocks,) block ids, logical block i -> pool block
    int num_blocks;
    int num_dropped_blocks;  // blocks [0, this) left every layer's sliding window and went back
                             // to the pool (SchedConfig.kv_window); their entries are -1
    int max_blocks;          // ceil(max_tokens_total / block_size)

    // ---- prefix caching: hash of full block i chains the hash of block i-1
    uint64_t *block_hashes;  // (max_tokens_total / block_size,)
    int num_hashed_blocks;   // hashes valid for blocks [0, num_hashed_blocks)
    int num_promoted_blocks; // blocks [0, this) already offered to the prefix cache

    // ---- parallel sampling
    Sequence *children;      // (n_samples - 1,) owned by the parent; NULL when n == 1
    bool forked;             // parent: children started; child: always true

    // ---- scheduler bookkeeping (scheduler.c only)
    Sequence *wait_prev, *wait_next; // waiting queue links
    int sched_entry;                 // index in this step's SchedOutput entries, -1 if none
    int num_preemptions;
};

// Allocates a sequence for a prompt. max_model_len and block_size must be the scheduler's
// (sched_add checks); a prompt longer than max_model_len is accepted here and rejected there.
void seq_init(Sequence *seq, int64_t id, const int32_t *prompt, int num_prompt,
              const SeqParams *params, int max_model_len, int block_size);
// Frees the arrays (and the children of a parent). Accepts a zeroed struct.
void seq_free(Sequence *seq);

static inline int seq_num_output_tokens(const Sequence *seq) {
    return seq->num_tokens - seq->num_prompt_tokens;
}
// Scheduler slots the sequence takes in the running set: a parent that has not forked yet
// reserves room for its children, so the fork never exceeds max_num_seqs.
static inline int seq_num_slots(const Sequence *seq) {
    return seq->forked ? 1 : seq->n_samples;
}
// Total order the scheduler uses for priority and FCFS: (priority, arrival, sample_index).
// Negative when a runs before b.
int seq_order_cmp(const Sequence *a, const Sequence *b);

// Computes the chained hashes of every full block of known tokens not hashed yet.
void seq_hash_blocks(Sequence *seq, int block_size);
// Appends one generated token (the capacity is the scheduler's invariant, so overflow aborts).
void seq_append_token(Sequence *seq, int32_t token);
// Makes child a copy of parent's token and KV state at the fork point (block references are
// the scheduler's job). Children are set up by seq_init; this fills their state.
void seq_fork_into(Sequence *child, const Sequence *parent);

const char *seq_status_name(SeqStatus s);
const char *seq_finish_reason_name(SeqFinishReason r); // "stop", "length", "abort" (OpenAI)
