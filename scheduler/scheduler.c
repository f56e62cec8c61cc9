// scheduler.c: waiting and running queues, the per-step token budget, chunked prefill,
// prefix-cache admission, preemption by recompute, parallel-sample forks with copy-on-write.
#include "scheduler/scheduler.h"

#include <stdlib.h>
#include <string.h>

#include "common/common.h"

static inline int cdiv(int a, int b) { return (a + b - 1) / b; }

// Every caller has checked blockpool_num_available first, so running dry here is a bug.
static int32_t pool_take(BlockPool *p) {
    int32_t id = blockpool_alloc(p);
    CHECK(id >= 0, "block pool ran dry after a capacity check");
    return id;
}

// ----------------------------------------------------------------------------
// queues. Both stay sorted by seq_order_cmp, so the running tail is always the preemption
// victim and the waiting head the next admission.

static void waiting_insert(Scheduler *s, Sequence *seq) {
    Sequence *after = s->wait_tail; // new arrivals sort last, so walk from the tail
    while (after && seq_order_cmp(seq, after) < 0) after = after->wait_prev;
    seq->wait_prev = after;
    seq->wait_next = after ? after->wait_next : s->wait_head;
    if (seq->wait_next) seq->wait_next->wait_prev = seq; else s->wait_tail = seq;
    if (after) after->wait_next = seq; else s->wait_head = seq;
    s->num_waiting++;
}

static void waiting_remove(Scheduler *s, Sequence *seq) {
    if (seq->wait_prev) seq->wait_prev->wait_next = seq->wait_next; else s->wait_head = seq->wait_next;
    if (seq->wait_next) seq->wait_next->wait_prev = seq->wait_prev; else s->wait_tail = seq->wait_prev;
    seq->wait_prev = seq->wait_next = NULL;
    s->num_waiting--;
}

static void running_insert(Scheduler *s, Sequence *seq) {
    CHECK(s->num_running < s->cfg.max_num_seqs);
    int i = s->num_running;
    while (i > 0 && seq_order_cmp(seq, s->running[i - 1]) < 0) {
        s->running[i] = s->running[i - 1];
        i--;
    }
    s->running[i] = seq;
    s->num_running++;
}

static void running_remove(Scheduler *s, Sequence *seq) {
    int i = s->num_running - 1; // victims and finishers are usually near the tail
    while (i >= 0 && s->running[i] != seq) i--;
    CHECK(i >= 0, "sequence %lld/%d is not running", (long long)seq->id, seq->sample_index);
    memmove(&s->running[i], &s->running[i + 1], (size_t)(s->num_running - 1 - i) * sizeof(Sequence *));
    s->num_running--;
}

// Releases a sequence's blocks tail first: the LRU then evicts a prompt's last blocks before
// its first ones, which more requests share (vLLM frees in the same reverse order).
static void seq_release_blocks(Scheduler *s, Sequence *seq) {
    for (int i = seq->num_blocks - 1; i >= seq->num_dropped_blocks; i--) blockpool_release(&s->pool, seq->block_table[i]);
    seq->num_blocks = 0;
    seq->num_dropped_blocks = 0;
    seq->num_promoted_blocks = 0;
}

// ----------------------------------------------------------------------------
// init / add / abort

int sched_init(Scheduler *s, const SchedConfig *cfg, char *err) {
    memset(s, 0, sizeof(*s));
    if (cfg->max_num_seqs < 1) return seterr(err, "max_num_seqs must be >= 1 (got %d)", cfg->max_num_seqs);
    if (cfg->max_model_len < 2) return seterr(err, "max_model_len must be >= 2 (got %d)", cfg->max_model_len);
    if (cfg->max_num_batched_tokens < cfg->max_num_seqs)
        return seterr(err, "--max-num-batched-tokens (%d) must be >= --max-num-seqs (%d)",
                      cfg->max_num_batched_tokens, cfg->max_num_seqs);
    if (cfg->block_size < 1) return seterr(err, "block size must be >= 1 (got %d)", cfg->block_size);
    long need = cdiv(cfg->max_model_len, cfg->block_size);
    if (cfg->num_blocks < need)
        return seterr(err, "KV cache holds %ld tokens (%d blocks of %d), fewer than max_model_len %d; "
                      "lower --max-model-len or give the cache more memory",
                      (long)cfg->num_blocks * cfg->block_size, cfg->num_blocks, cfg->block_size,
                      cfg->max_model_len);
    if (blockpool_init(&s->pool, cfg->num_blocks, cfg->block_size, err) != SL_OK) return SL_ERR;
    s->cfg = *cfg;
    size_t n = (size_t)cfg->max_num_seqs;
    s->running = xcalloc(n, sizeof(Sequence *));
    s->entries_buf = xcalloc(n, sizeof(SchedEntry));
    s->cow_src = xmalloc(n * sizeof(int32_t));
    s->cow_dst = xmalloc(n * sizeof(int32_t));
    s->copies_buf = xcalloc(n, sizeof(SchedBlockCopy));
    s->preempted_buf = xcalloc(n, sizeof(Sequence *));
    s->finished_buf = xcalloc(n, sizeof(Sequence *));
    return SL_OK;
}

void sched_free(Scheduler *s) {
    blockpool_free(&s->pool);
    free(s->running);
    free(s->entries_buf);
    free(s->cow_src);
    free(s->cow_dst);
    free(s->copies_buf);
    free(s->preempted_buf);
    free(s->finished_buf);
    memset(s, 0, sizeof(*s));
}

int sched_add(Scheduler *s, Sequence *seq, char *err) {
    const SchedConfig *c = &s->cfg;
    CHECK(seq->status == SEQ_WAITING && seq->sample_index == 0 && seq->num_blocks == 0);
    int np = seq->num_prompt_tokens;
    if (np < 1) return seterr(err, "the prompt is empty");
    if (np >= c->max_model_len)
        return seterr(err, "the prompt has %d tokens, but this model's maximum context length is %d "
                      "tokens, which leaves no room to generate", np, c->max_model_len);
    if (seq->max_tokens > 0 && (long)np + seq->max_tokens > c->max_model_len)
        return seterr(err, "this model's maximum context length is %d tokens; however, you requested "
                      "%ld tokens (%d in the prompt, %d in the completion)", c->max_model_len,
                      (long)np + seq->max_tokens, np, seq->max_tokens);
    if (seq->n_samples > c->max_num_seqs)
        return seterr(err, "n = %d exceeds the server's max_num_seqs (%d)", seq->n_samples, c->max_num_seqs);
    // seq_init must have used this scheduler's limits, or the arrays could overflow.
    int cap = seq->max_tokens > 0 ? np + seq->max_tokens : c->max_model_len;
    CHECK(seq->max_tokens_total == cap && seq->max_blocks == cdiv(cap, c->block_size),
          "sequence initialised for another max_model_len or block size");
    seq->arrival = s->next_arrival++;
    seq->finish_reason = SEQ_FINISH_NONE;
    waiting_insert(s, seq);
    return SL_OK;
}

static void seq_finish(Scheduler *s, Sequence *seq, SeqFinishReason why) {
    if (seq->status == SEQ_RUNNING) {
        seq_release_blocks(s, seq);
        running_remove(s, seq);
        s->num_running_slots -= seq_num_slots(seq);
    } else if (seq->status == SEQ_WAITING || seq->status == SEQ_PREEMPTED) {
        CHECK(seq->num_blocks == 0);
        waiting_remove(s, seq);
    }
    seq->status = SEQ_FINISHED;
    seq->finish_reason = why;
    // children that never started finish with their parent
    if (!seq->forked) {
        for (int i = 0; i < seq->n_samples - 1; i++) {
            seq->children[i].status = SEQ_FINISHED;
            seq->children[i].finish_reason = why;
        }
    }
}

int sched_abort(Scheduler *s, int64_t id) {
    CHECK(!s->step_pending, "sched_abort between sched_schedule and sched_update");
    int n = 0;
    for (int i = s->num_running - 1; i >= 0; i--) {
        Sequence *seq = s->running[i];
        if (seq->id != id) continue;
        n += seq_num_slots(seq);
        seq_finish(s, seq, SEQ_FINISH_ABORT);
    }
    for (Sequence *seq = s->wait_head, *next; seq; seq = next) {
        next = seq->wait_next;
        if (seq->id != id) continue;
        n += seq_num_slots(seq);
        seq_finish(s, seq, SEQ_FINISH_ABORT);
    }
    return n;
}

// ----------------------------------------------------------------------------
// one step

static void entry_add(Scheduler *s, SchedOutput *out, Sequence *seq, int k, int32_t cow_src,
                      int32_t cow_dst) {
    int e = out->num_entries++;
    CHECK(e < s->cfg.max_num_seqs);
    out->entries[e] = (SchedEntry){.seq = seq, .start_pos = seq->num_computed_tokens, .num_new_tokens = k};
    s->cow_src[e] = cow_src;
    s->cow_dst[e] = cow_dst;
    seq->sched_entry = e;
    s->budget -= k;
}

static void entry_remove(Scheduler *s, SchedOutput *out, Sequence *seq) {
    int e = seq->sched_entry;
    CHECK(e >= 0 && e < out->num_entries && out->entries[e].seq == seq);
    s->budget += out->entries[e].num_new_tokens;
    for (int i = e + 1; i < out->num_entries; i++) {
        out->entries[i - 1] = out->entries[i];
        s->cow_src[i - 1] = s->cow_src[i];
        s->cow_dst[i - 1] = s->cow_dst[i];
        out->entries[i - 1].seq->sched_entry = i - 1;
    }
    out->num_entries--;
    seq->sched_entry = -1;
}

// Frees the victim's blocks and queues it for recompute; if it was already planned in this step
// (a decode given up for an older sequence's prefill chunk), its entry goes too.
static void sched_preempt(Scheduler *s, SchedOutput *out, Sequence *victim) {
    if (victim->sched_entry >= 0) entry_remove(s, out, victim);
    seq_release_blocks(s, victim);
    running_remove(s, victim);
    s->num_running_slots -= seq_num_slots(victim);
    victim->num_computed_tokens = 0;
    victim->num_spec = 0;
    victim->status = SEQ_PREEMPTED;
    victim->num_preemptions++;
    s->num_preemptions++;
    waiting_insert(s, victim);
    out->preempted[out->num_preempted++] = victim;
}

// Gives a running sequence the blocks for k more tokens, copying its write block first when a
// forked sibling shares it. All or nothing: false (nothing changed) when the pool is short.
static bool sched_try_grow(Scheduler *s, Sequence *seq, int k, int32_t *cow_src, int32_t *cow_dst) {
    BlockPool *p = &s->pool;
    int bs = s->cfg.block_size, c = seq->num_computed_tokens;
    int need = cdiv(c + k, bs) - seq->num_blocks;
    CHECK(need >= 0 && c + k <= seq->num_tokens);
    int write_block = c / bs;
    bool cow = c % bs != 0 && p->refcount[seq->block_table[write_block]] > 1;
    if (need + (cow ? 1 : 0) > blockpool_num_available(p)) return false;
    *cow_src = *cow_dst = -1;
    if (cow) {
        int32_t src = seq->block_table[write_block];
        CHECK(!p->cached[src], "a partial block is never in the prefix cache");
        int32_t dst = pool_take(p);
        seq->block_table[write_block] = dst;
        blockpool_release(p, src); // still held by a sibling, so the runner can copy it
        *cow_src = src;
        *cow_dst = dst;
    }
    for (int i = 0; i < need; i++) seq->block_table[seq->num_blocks++] = pool_take(p);
    return true;
}

// Extends the planned decode entry e by its sequence's proposals, as many as the budget and the
// free blocks allow, once the step's real work is planned: a guess never takes budget or blocks
// from a prefill or an admission, never preempts anyone, and never evicts a prefix-cache block
// (it takes only blocks that hold nothing cached), so the prefix cache holds what it would
// without speculation whatever the proposals were. Where every spare block is cached, proposals
// stop at the end of the sequence's last block until its own tokens take the next one.
static void sched_plan_spec(Scheduler *s, SchedOutput *out, int e) {
    SchedEntry *en = &out->entries[e];
    Sequence *seq = en->seq;
    int bs = s->cfg.block_size, end = en->start_pos + en->num_new_tokens;
    CHECK(en->num_new_tokens == 1 && end == seq->num_tokens);
    int fit = (seq->num_blocks + blockpool_num_free(&s->pool)) * bs - end;
    int k = MIN(MIN(seq->num_spec, s->budget), fit);
    if (k <= 0) return;
    CHECK(end + k < seq->max_tokens_total, "proposals leave no room for the token after them");
    int need = cdiv(end + k, bs) - seq->num_blocks;
    for (int i = 0; i < need; i++) seq->block_table[seq->num_blocks++] = pool_take(&s->pool);
    en->num_new_tokens += k;
    en->num_spec = k;
    s->budget -= k;
}

// Plans k tokens of running sequence seq, preempting from the running tail until its blocks fit.
// Returns false when seq itself was the victim.
static bool sched_plan_running(Scheduler *s, SchedOutput *out, Sequence *seq, int k) {
    for (;;) {
        int32_t src, dst;
        if (sched_try_grow(s, seq, k, &src, &dst)) {
            entry_add(s, out, seq, k, src, dst);
            return true;
        }
        Sequence *victim = s->running[s->num_running - 1];
        sched_preempt(s, out, victim);
        if (victim == seq) return false;
    }
}

// The next prompt chunk of a sequence with `remaining` tokens to compute: what the budget leaves,
// capped by --long-prefill-token-threshold so that one long prompt cannot fill a step that
// running decodes wait on (their inter-token latency is the step time).
static int sched_chunk(const Scheduler *s, int remaining) {
    int k = MIN(remaining, s->budget);
    int cap = s->cfg.long_prefill_token_threshold;
    return cap > 0 ? MIN(k, cap) : k;
}

// Admits the waiting head: reuses its prefix-cache hit, allocates blocks for a first chunk.
// False (nothing changed) when the pool cannot hold the chunk.
static bool sched_try_admit(Scheduler *s, SchedOutput *out, Sequence *seq) {
    BlockPool *p = &s->pool;
    int bs = s->cfg.block_size;
    CHECK(seq->num_blocks == 0 && seq->num_computed_tokens == 0);

    // The longest run of leading full blocks in the cache, leaving the last token to compute.
    int hits = 0, idle_hits = 0;
    if (s->cfg.enable_prefix_caching) {
        seq_hash_blocks(seq, bs);
        int max_hits = seq->no_prefix_hits ? 0 : (seq->num_tokens - 1) / bs;
        for (; hits < max_hits; hits++) {
            uint64_t parent = hits == 0 ? seq->hash_root : seq->block_hashes[hits - 1];
            int32_t id = blockpool_lookup(p, seq->block_hashes[hits], parent,
                                          seq->tokens + (size_t)hits * bs, seq->adapter_id);
            if (id < 0) break;
            seq->block_table[hits] = id; // provisional until the check below passes
            if (p->refcount[id] == 0) idle_hits++;
        }
    }
    int hit_tokens = hits * bs;
    int k = sched_chunk(s, seq->num_tokens - hit_tokens);
    int need = cdiv(hit_tokens + k, bs) - hits;
    // an idle hit leaves the LRU when referenced, so it cannot also serve as a new block
    if (need > blockpool_num_available(p) - idle_hits) return false;

    for (int i = 0; i < hits; i++) blockpool_ref(p, seq->block_table[i]);
    seq->num_blocks = hits;
    for (int i = 0; i < need; i++) seq->block_table[seq->num_blocks++] = pool_take(p);
    seq->num_computed_tokens = hit_tokens;
    seq->num_promoted_blocks = hits; // already cached
    if (seq->num_cached_tokens < 0) seq->num_cached_tokens = hit_tokens;
    if (s->cfg.enable_prefix_caching) {
        p->query_tokens += (uint64_t)seq->num_tokens;
        p->hit_tokens += (uint64_t)hit_tokens;
    }

    waiting_remove(s, seq);
    running_insert(s, seq);
    s->num_running_slots += seq_num_slots(seq);
    seq->status = SEQ_RUNNING;
    entry_add(s, out, seq, k, -1, -1);
    return true;
}

int sched_schedule(Scheduler *s, SchedOutput *out) {
    CHECK(!s->step_pending, "sched_schedule twice without sched_update");
    *out = (SchedOutput){.entries = s->entries_buf, .copies = s->copies_buf,
                         .preempted = s->preempted_buf, .finished = s->finished_buf};
    s->budget = s->cfg.max_num_batched_tokens;

    // 1. decodes, one token each, in priority order
    for (int i = 0; i < s->num_running && s->budget > 0; i++) {
        Sequence *seq = s->running[i];
        if (seq->num_tokens - seq->num_computed_tokens != 1) continue;
        if (!sched_plan_running(s, out, seq, 1)) break; // it was the last one left to preempt
    }
    // 2. the next chunk of running sequences still in their prompt (or in a recompute)
    for (int i = 0; i < s->num_running && s->budget > 0; i++) {
        Sequence *seq = s->running[i];
        int remaining = seq->num_tokens - seq->num_computed_tokens;
        if (remaining <= 1) continue;
        if (!sched_plan_running(s, out, seq, sched_chunk(s, remaining))) break;
    }
    // 3. admissions, strictly in queue order; none in a step that had to preempt (vLLM V1),
    //    since a preempted sequence would only take back the blocks it just gave up
    if (out->num_preempted == 0) {
        while (s->wait_head && s->budget > 0) {
            Sequence *seq = s->wait_head;
            if (s->num_running_slots + seq_num_slots(seq) > s->cfg.max_num_seqs) break;
            if (!sched_try_admit(s, out, seq)) break;
        }
    }
    // 4. speculative proposals, from what the real work left: budget and free blocks
    for (int e = 0; e < out->num_entries && s->budget > 0; e++)
        if (out->entries[e].seq->num_spec > 0) sched_plan_spec(s, out, e);

    // sample rows, copies and totals, in entry order
    for (int e = 0; e < out->num_entries; e++) {
        SchedEntry *en = &out->entries[e];
        Sequence *seq = en->seq;
        bool completes = en->start_pos + en->num_new_tokens == seq->num_tokens + en->num_spec;
        en->num_samples = completes ? seq_num_slots(seq) : 0;
        en->sample_row = out->num_sample_rows;
        out->num_sample_rows += en->num_samples;
        out->num_tokens += en->num_new_tokens;
        if (en->num_new_tokens == 1 + en->num_spec && en->start_pos >= seq->num_prompt_tokens)
            out->num_decode_tokens += en->num_new_tokens;
        out->num_spec_tokens += en->num_spec;
        if (s->cow_src[e] >= 0) out->copies[out->num_copies++] = (SchedBlockCopy){s->cow_src[e], s->cow_dst[e]};
    }
    CHECK(out->num_tokens + s->budget == s->cfg.max_num_batched_tokens);
    // proposals not planned in this step are dropped (the engine proposes afresh next step)
    for (int i = 0; i < s->num_running; i++) {
        Sequence *seq = s->running[i];
        seq->num_spec = seq->sched_entry >= 0 ? out->entries[seq->sched_entry].num_spec : 0;
    }
    s->step_pending = true;
    s->num_steps++;
    return out->num_entries;
}

// ----------------------------------------------------------------------------
// end of step

// Offers the sequence's newly computed full blocks to the prefix cache.
static void seq_promote_blocks(Scheduler *s, Sequence *seq) {
    int bs = s->cfg.block_size;
    int full = seq->num_computed_tokens / bs;
    if (!s->cfg.enable_prefix_caching || full <= seq->num_promoted_blocks) return;
    seq_hash_blocks(seq, bs);
    for (int b = seq->num_promoted_blocks; b < full; b++) {
        uint64_t parent = b == 0 ? seq->hash_root : seq->block_hashes[b - 1];
        blockpool_promote(&s->pool, seq->block_table[b], seq->block_hashes[b], parent,
                          seq->tokens + (size_t)b * bs, seq->adapter_id);
    }
    seq->num_promoted_blocks = full;
}

// With every layer windowed (cfg.kv_window): the next token, at position num_computed_tokens,
// reads keys from num_computed_tokens - kv_window + 1 on, and so does every later one; the
// blocks wholly before that go back to the pool (a cached one stays in the prefix cache: its
// KV is still right for a sequence that shares the prefix). The attention kernels never read a
// block before a row's window, so the -1 left in the table is never followed.
static void seq_drop_window_blocks(Scheduler *s, Sequence *seq) {
    if (s->cfg.kv_window <= 0) return;
    int first = seq->num_computed_tokens - s->cfg.kv_window + 1;
    int n = MIN(MAX(0, first) / s->cfg.block_size, seq->num_blocks);
    for (; seq->num_dropped_blocks < n; seq->num_dropped_blocks++) {
        blockpool_release(&s->pool, seq->block_table[seq->num_dropped_blocks]);
        seq->block_table[seq->num_dropped_blocks] = -1;
        s->num_window_freed_blocks++;
    }
}

// A verified decode: the accepted proposals become tokens and keep their KV; the slots of the
// rejected ones are rolled back, and the blocks that held only those go back to the pool (fresh
// blocks, never in the prefix cache: a block is offered only once its tokens are computed).
static void seq_spec_rollback(Scheduler *s, Sequence *seq, const SchedEntry *en) {
    CHECK(en->num_accepted >= 0 && en->num_accepted <= en->num_spec && en->num_samples == 1 && seq->forked);
    CHECK(seq->num_tokens == en->start_pos + 1);
    seq->num_tokens += en->num_accepted;
    seq->num_computed_tokens = seq->num_tokens;
    int keep = cdiv(seq->num_computed_tokens, s->cfg.block_size);
    while (seq->num_blocks > keep) blockpool_release(&s->pool, seq->block_table[--seq->num_blocks]);
    seq->num_spec = 0;
}

// Starts the n-1 children of a parent whose prompt is now computed: each shares every block.
static void seq_fork_children(Scheduler *s, Sequence *parent) {
    for (int i = 0; i < parent->n_samples - 1; i++) {
        Sequence *child = &parent->children[i];
        seq_fork_into(child, parent);
        for (int b = child->num_dropped_blocks; b < child->num_blocks; b++) blockpool_ref(&s->pool, child->block_table[b]);
        child->status = SEQ_RUNNING;
        running_insert(s, child);
    }
    // the parent reserved n slots; now it and each child take one
    parent->forked = true;
}

void sched_update(Scheduler *s, SchedOutput *out, const int32_t *sampled, const bool *stop) {
    CHECK(s->step_pending && out->entries == s->entries_buf, "sched_update without sched_schedule");
    out->num_finished = 0;
    for (int e = 0; e < out->num_entries; e++) {
        SchedEntry *en = &out->entries[e];
        Sequence *seq = en->seq;
        CHECK(seq->status == SEQ_RUNNING && seq->num_computed_tokens == en->start_pos);
        seq->sched_entry = -1;
        if (en->num_spec > 0) seq_spec_rollback(s, seq, en);
        else seq->num_computed_tokens += en->num_new_tokens;
        seq_promote_blocks(s, seq);
        seq_drop_window_blocks(s, seq);
        if (en->num_samples == 0) continue;
        if (!seq->forked) seq_fork_children(s, seq);
        for (int j = 0; j < en->num_samples; j++) {
            Sequence *t = j == 0 ? seq : &seq->children[j - 1];
            int row = en->sample_row + j;
            seq_append_token(t, sampled[row]);
            SeqFinishReason why = SEQ_FINISH_NONE;
            if (stop && stop[row]) why = SEQ_FINISH_STOP;
            else if (t->num_tokens >= t->max_tokens_total) why = SEQ_FINISH_LENGTH;
            if (why != SEQ_FINISH_NONE) {
                seq_finish(s, t, why);
                out->finished[out->num_finished++] = t;
            }
        }
    }
    s->step_pending = false;
}

// ----------------------------------------------------------------------------
// invariants

int sched_check(const Scheduler *s, char *err) {
    const SchedConfig *c = &s->cfg;
    int rc = SL_OK, slots = 0;
    int32_t *expected = xcalloc((size_t)c->num_blocks, sizeof(int32_t));
    for (int i = 0; i < s->num_running && rc == SL_OK; i++) {
        const Sequence *seq = s->running[i];
        if (seq->status != SEQ_RUNNING)
            rc = seterr(err, "running[%d] has status %s", i, seq_status_name(seq->status));
        else if (i > 0 && seq_order_cmp(s->running[i - 1], seq) >= 0)
            rc = seterr(err, "running[%d] is out of order", i);
        int covered = seq->num_computed_tokens;
        if (s->step_pending && seq->sched_entry >= 0) covered += s->entries_buf[seq->sched_entry].num_new_tokens;
        if (rc == SL_OK && seq->num_blocks != cdiv(covered, c->block_size))
            rc = seterr(err, "sequence %lld/%d holds %d blocks for %d tokens", (long long)seq->id,
                        seq->sample_index, seq->num_blocks, covered);
        if (rc == SL_OK && (covered > seq->num_tokens + seq->num_spec || (!s->step_pending && covered >= seq->num_tokens)))
            rc = seterr(err, "sequence %lld/%d has %d of %d tokens computed", (long long)seq->id,
                        seq->sample_index, covered, seq->num_tokens);
        for (int b = seq->num_dropped_blocks; b < seq->num_blocks && rc == SL_OK; b++) {
            int32_t id = seq->block_table[b];
            if (id < 0 || id >= c->num_blocks) rc = seterr(err, "block table holds bad id %d", id);
            else expected[id]++;
        }
        slots += seq_num_slots(seq);
    }
    if (rc == SL_OK && (slots != s->num_running_slots || slots > c->max_num_seqs))
        rc = seterr(err, "running slots %d, counter %d, max %d", slots, s->num_running_slots, c->max_num_seqs);
    int nw = 0;
    for (const Sequence *seq = s->wait_head; seq && rc == SL_OK; seq = seq->wait_next, nw++) {
        if (seq->status != SEQ_WAITING && seq->status != SEQ_PREEMPTED)
            rc = seterr(err, "waiting sequence has status %s", seq_status_name(seq->status));
        else if (seq->num_blocks != 0 || seq->num_computed_tokens != 0)
            rc = seterr(err, "waiting sequence holds %d blocks", seq->num_blocks);
        else if (seq->wait_prev && seq_order_cmp(seq->wait_prev, seq) >= 0)
            rc = seterr(err, "waiting queue is out of order");
    }
    if (rc == SL_OK && nw != s->num_waiting) rc = seterr(err, "%d waiting, counter %d", nw, s->num_waiting);
    if (rc == SL_OK) rc = blockpool_check(&s->pool, expected, err);
    free(expected);
    return rc;
}
