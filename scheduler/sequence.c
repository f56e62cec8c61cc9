// sequence.c: allocation, hashing and forking of one Sequence. Policy lives in scheduler.c.
#include "scheduler/sequence.h"

#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "scheduler/block_pool.h"

static void seq_alloc_arrays(Sequence *seq, int max_tokens_total, int block_size) {
    seq->max_tokens_total = max_tokens_total;
    seq->max_blocks = (max_tokens_total + block_size - 1) / block_size;
    seq->tokens = xmalloc((size_t)max_tokens_total * sizeof(int32_t));
    seq->block_table = xmalloc((size_t)MAX(seq->max_blocks, 1) * sizeof(int32_t));
    seq->block_hashes = xmalloc((size_t)MAX(max_tokens_total / block_size, 1) * sizeof(uint64_t));
}

// The fields a parent and each of its n-1 children share at creation.
static void seq_init_fields(Sequence *s, int64_t id, int sample_index, const SeqParams *params) {
    memset(s, 0, sizeof(*s));
    s->id = id;
    s->sample_index = sample_index;
    s->n_samples = params->n;
    s->priority = params->priority;
    s->adapter_id = params->adapter_id;
    s->hash_root = params->hash_root ? params->hash_root : BLOCKPOOL_HASH_ROOT;
    s->no_prefix_hits = params->no_prefix_hits;
    s->max_tokens = params->max_tokens;
    s->status = SEQ_WAITING;
    s->num_cached_tokens = -1;
    s->sched_entry = -1;
}

void seq_init(Sequence *seq, int64_t id, const int32_t *prompt, int num_prompt,
              const SeqParams *params, int max_model_len, int block_size) {
    CHECK(num_prompt >= 0 && block_size > 0 && max_model_len > 0);
    CHECK(params->n >= 1 && params->max_tokens >= 0);
    seq_init_fields(seq, id, 0, params);
    seq->forked = params->n == 1; // a lone sequence has nothing to fork

    // Capacity: the model's limit, or less when max_tokens says so. An over-long prompt still
    // gets room for itself so the struct stays valid until sched_add rejects it.
    long cap = max_model_len;
    if (params->max_tokens > 0) cap = MIN(cap, (long)num_prompt + params->max_tokens);
    cap = MAX(cap, (long)num_prompt);
    CHECK(cap > 0 && cap <= INT32_MAX);
    seq_alloc_arrays(seq, (int)cap, block_size);
    memcpy(seq->tokens, prompt, (size_t)num_prompt * sizeof(int32_t));
    seq->num_prompt_tokens = num_prompt;
    seq->num_tokens = num_prompt;

    if (params->n > 1) {
        seq->children = xcalloc((size_t)params->n - 1, sizeof(Sequence));
        for (int i = 0; i < params->n - 1; i++) {
            Sequence *c = &seq->children[i];
            seq_init_fields(c, id, i + 1, params);
            c->forked = true;
            c->num_prompt_tokens = num_prompt;
            seq_alloc_arrays(c, (int)cap, block_size);
        }
    }
}

void seq_free(Sequence *seq) {
    if (seq->children) {
        for (int i = 0; i < seq->n_samples - 1; i++) seq_free(&seq->children[i]);
        free(seq->children);
    }
    free(seq->tokens);
    free(seq->block_table);
    free(seq->block_hashes);
    memset(seq, 0, sizeof(*seq));
}

int seq_order_cmp(const Sequence *a, const Sequence *b) {
    if (a->priority != b->priority) return a->priority < b->priority ? -1 : 1;
    if (a->arrival != b->arrival) return a->arrival < b->arrival ? -1 : 1;
    if (a->sample_index != b->sample_index) return a->sample_index < b->sample_index ? -1 : 1;
    return 0;
}

void seq_hash_blocks(Sequence *seq, int block_size) {
    int full = seq->num_tokens / block_size;
    for (int i = seq->num_hashed_blocks; i < full; i++) {
        uint64_t parent = i == 0 ? seq->hash_root : seq->block_hashes[i - 1];
        seq->block_hashes[i] = blockpool_hash_block(parent, seq->tokens + (size_t)i * block_size,
                                                    block_size, seq->adapter_id);
    }
    if (full > seq->num_hashed_blocks) seq->num_hashed_blocks = full;
}

void seq_append_token(Sequence *seq, int32_t token) {
    CHECK(seq->num_tokens < seq->max_tokens_total, "sequence %lld/%d is full",
          (long long)seq->id, seq->sample_index);
    seq->tokens[seq->num_tokens++] = token;
}

void seq_fork_into(Sequence *child, const Sequence *parent) {
    CHECK(child->max_tokens_total == parent->max_tokens_total);
    CHECK(child->max_blocks == parent->max_blocks);
    memcpy(child->tokens, parent->tokens, (size_t)parent->num_tokens * sizeof(int32_t));
    child->num_tokens = parent->num_tokens;
    child->num_prompt_tokens = parent->num_prompt_tokens;
    child->num_computed_tokens = parent->num_computed_tokens;
    child->num_cached_tokens = parent->num_cached_tokens;
    memcpy(child->block_table, parent->block_table, (size_t)parent->num_blocks * sizeof(int32_t));
    child->num_blocks = parent->num_blocks;
    child->num_dropped_blocks = parent->num_dropped_blocks;
    memcpy(child->block_hashes, parent->block_hashes,
           (size_t)parent->num_hashed_blocks * sizeof(uint64_t));
    child->num_hashed_blocks = parent->num_hashed_blocks;
    child->num_promoted_blocks = parent->num_promoted_blocks;
    child->arrival = parent->arrival;
    child->status = parent->status;
    child->finish_reason = SEQ_FINISH_NONE;
    child->sched_entry = -1;
}

const char *seq_status_name(SeqStatus s) {
    switch (s) {
    case SEQ_WAITING: return "waiting";
    case SEQ_RUNNING: return "running";
    case SEQ_PREEMPTED: return "preempted";
    case SEQ_FINISHED: return "finished";
    }
    return "?";
}

const char *seq_finish_reason_name(SeqFinishReason r) {
    switch (r) {
    case SEQ_FINISH_NONE: return "";
    case SEQ_FINISH_STOP: return "stop";
    case SEQ_FINISH_LENGTH: return "length";
    case SEQ_FINISH_ABORT: return "abort";
    }
    return "?";
}
