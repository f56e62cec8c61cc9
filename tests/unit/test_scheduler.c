// test_scheduler.c: the scheduler with synthetic sequences (fake token ids, no model).
//
// A fake runner stands in for the model: a KV "slab" records, per slot, which token and
// position were written there. Each step it applies the copy-on-write copies, writes the
// scheduled tokens through the block tables, then reads back every position each entry
// attends to and checks it holds that sequence's token. The sampled token is a hash of what
// it read, so outputs depend on the KV content actually reachable through the block tables:
// a wrong prefix hit, a missed copy or a block reused while held changes them. Outputs are
// otherwise independent of scheduling, which lets runs with a tiny pool (many preemptions)
// be compared with runs on a pool that never preempts.
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "scheduler/scheduler.h"
#include "tests/unit/test.h"

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static uint64_t rng_state;
static uint64_t rng_next(void) { return mix64(rng_state += 0x9E3779B97F4A7C15ULL); }
static int rng_int(int lo, int hi) { return lo + (int)(rng_next() % (uint64_t)(hi - lo + 1)); }

// ----------------------------------------------------------------------------
// the simulator

typedef struct {
    Scheduler s;
    SchedOutput out;
    int32_t *kv_tok, *kv_pos; // (num_blocks * block_size,) what each KV slot holds
    int32_t *sampled;         // (max_num_seqs,)
    bool *stop;
    Sequence **decoding;      // running sequences with one token left, before a schedule
    bool stop_on_tokens;      // deterministic stop flags: token % 53 == 0
    int errors;               // step checks that failed (each also printed)
    int steps, preemptions, finished;
} Sim;

#define SIM_ERR(sim, ...)        \
    do {                         \
        TEST_FAIL_(__VA_ARGS__); \
        (sim)->errors++;         \
    } while (0)

static SchedConfig cfg_make(int budget, int max_seqs, int bs, int nblocks, int max_len) {
    return (SchedConfig){.max_num_batched_tokens = budget, .max_num_seqs = max_seqs, .block_size = bs,
                         .num_blocks = nblocks, .enable_prefix_caching = true, .max_model_len = max_len};
}

static void sim_init(Sim *sim, const SchedConfig *cfg) {
    memset(sim, 0, sizeof(*sim));
    char err[ERR_MAX];
    CHECK(sched_init(&sim->s, cfg, err) == SL_OK, "%s", err);
    size_t slots = (size_t)cfg->num_blocks * cfg->block_size;
    sim->kv_tok = xmalloc(slots * sizeof(int32_t));
    sim->kv_pos = xmalloc(slots * sizeof(int32_t));
    for (size_t i = 0; i < slots; i++) sim->kv_tok[i] = sim->kv_pos[i] = -1;
    sim->sampled = xcalloc((size_t)cfg->max_num_seqs, sizeof(int32_t));
    sim->stop = xcalloc((size_t)cfg->max_num_seqs, sizeof(bool));
    sim->decoding = xcalloc((size_t)cfg->max_num_seqs, sizeof(Sequence *));
}

static void sim_free(Sim *sim) {
    sched_free(&sim->s);
    free(sim->kv_tok);
    free(sim->kv_pos);
    free(sim->sampled);
    free(sim->stop);
    free(sim->decoding);
}

static int slot_of(const Sim *sim, const Sequence *seq, int pos) {
    int bs = sim->s.cfg.block_size;
    return seq->block_table[pos / bs] * bs + pos % bs;
}

// Everything a step must satisfy, checked on the plan before it runs.
static void sim_check_plan(Sim *sim, int num_decoding) {
    const SchedOutput *o = &sim->out;
    const SchedConfig *c = &sim->s.cfg;
    const BlockPool *p = &sim->s.pool;
    int tokens = 0, rows = 0, seen_other = 0;
    if (o->num_tokens > c->max_num_batched_tokens) SIM_ERR(sim, "step uses %d tokens > budget", o->num_tokens);
    if (o->num_entries > c->max_num_seqs) SIM_ERR(sim, "%d entries > max_num_seqs", o->num_entries);
    for (int e = 0; e < o->num_entries; e++) {
        const SchedEntry *en = &o->entries[e];
        const Sequence *seq = en->seq;
        tokens += en->num_new_tokens;
        if (en->num_new_tokens < 1 || en->start_pos != seq->num_computed_tokens ||
            en->start_pos + en->num_new_tokens > seq->num_tokens)
            SIM_ERR(sim, "entry %d: start %d + %d of %d tokens (computed %d)", e, en->start_pos,
                    en->num_new_tokens, seq->num_tokens, seq->num_computed_tokens);
        bool completes = en->start_pos + en->num_new_tokens == seq->num_tokens;
        if ((en->num_samples > 0) != completes || en->sample_row != rows)
            SIM_ERR(sim, "entry %d: %d samples at row %d", e, en->num_samples, en->sample_row);
        rows += en->num_samples;
        for (int f = 0; f < e; f++)
            if (o->entries[f].seq == seq) SIM_ERR(sim, "sequence scheduled twice");
        // decodes of sequences running before the step come before anything else
        bool was_decoding = false;
        for (int i = 0; i < num_decoding; i++) was_decoding |= sim->decoding[i] == seq;
        if (!was_decoding) seen_other = 1;
        else if (seen_other) SIM_ERR(sim, "entry %d: a decode after a prefill chunk", e);
        // every slot written this step belongs to this sequence alone and is not cached
        for (int pos = en->start_pos; pos < en->start_pos + en->num_new_tokens; pos++) {
            int32_t b = seq->block_table[pos / c->block_size];
            if (p->refcount[b] != 1 || p->cached[b])
                SIM_ERR(sim, "writes position %d into block %d (refcount %d, cached %d)", pos, b,
                        p->refcount[b], p->cached[b]);
        }
    }
    if (tokens != o->num_tokens || rows != o->num_sample_rows)
        SIM_ERR(sim, "totals: %d tokens vs %d, %d rows vs %d", tokens, o->num_tokens, rows, o->num_sample_rows);
    for (int i = 0; i < o->num_copies; i++)
        if (o->copies[i].src == o->copies[i].dst || p->refcount[o->copies[i].dst] != 1)
            SIM_ERR(sim, "bad copy %d -> %d", o->copies[i].src, o->copies[i].dst);
}

// The fake model: copies, writes, then reads and samples.
static void sim_run_model(Sim *sim) {
    const SchedOutput *o = &sim->out;
    int bs = sim->s.cfg.block_size;
    for (int i = 0; i < o->num_copies; i++) {
        memcpy(sim->kv_tok + (size_t)o->copies[i].dst * bs, sim->kv_tok + (size_t)o->copies[i].src * bs, bs * sizeof(int32_t));
        memcpy(sim->kv_pos + (size_t)o->copies[i].dst * bs, sim->kv_pos + (size_t)o->copies[i].src * bs, bs * sizeof(int32_t));
    }
    for (int e = 0; e < o->num_entries; e++) {
        const SchedEntry *en = &o->entries[e];
        for (int pos = en->start_pos; pos < en->start_pos + en->num_new_tokens; pos++) {
            int slot = slot_of(sim, en->seq, pos);
            sim->kv_tok[slot] = en->seq->tokens[pos];
            sim->kv_pos[slot] = pos;
        }
    }
    for (int e = 0; e < o->num_entries; e++) {
        const SchedEntry *en = &o->entries[e];
        const Sequence *seq = en->seq;
        uint64_t h = 0;
        // with a sliding window on every layer, each row reads its window only (the blocks
        // before the first row's may be back in the pool), and the sample sees the last row's
        int w = sim->s.cfg.kv_window, end = en->start_pos + en->num_new_tokens;
        int lo = w > 0 ? MAX(0, en->start_pos - w + 1) : 0, seen = w > 0 ? MAX(0, end - w) : 0;
        for (int pos = lo; pos < end; pos++) {
            int slot = slot_of(sim, seq, pos);
            if (sim->kv_tok[slot] != seq->tokens[pos] || sim->kv_pos[slot] != pos) {
                SIM_ERR(sim, "seq %lld/%d position %d reads token %d pos %d, wants %d", (long long)seq->id,
                        seq->sample_index, pos, sim->kv_tok[slot], sim->kv_pos[slot], seq->tokens[pos]);
                break;
            }
            if (pos >= seen) h = mix64(h * 31 + (uint64_t)sim->kv_tok[slot]);
        }
        for (int j = 0; j < en->num_samples; j++) {
            int sample_index = en->num_samples > 1 ? j : seq->sample_index;
            int32_t tok = 1 + (int32_t)(mix64(h ^ ((uint64_t)sample_index << 40)) % 30000);
            sim->sampled[en->sample_row + j] = tok;
            sim->stop[en->sample_row + j] = sim->stop_on_tokens && tok % 53 == 0;
        }
    }
}

// One engine step. Returns the number of entries.
static int sim_step(Sim *sim) {
    char err[ERR_MAX];
    int nd = 0;
    for (int i = 0; i < sim->s.num_running; i++) {
        Sequence *seq = sim->s.running[i];
        if (seq->num_tokens - seq->num_computed_tokens == 1) sim->decoding[nd++] = seq;
    }
    int n = sched_schedule(&sim->s, &sim->out);
    if (sched_check(&sim->s, err) != SL_OK) SIM_ERR(sim, "after schedule, step %d: %s", sim->steps, err);
    sim_check_plan(sim, nd);
    sim_run_model(sim);
    sched_update(&sim->s, &sim->out, sim->sampled, sim->stop);
    if (sched_check(&sim->s, err) != SL_OK) SIM_ERR(sim, "after update, step %d: %s", sim->steps, err);
    sim->steps++;
    sim->preemptions += sim->out.num_preempted;
    sim->finished += sim->out.num_finished;
    return n;
}

static void sim_run_idle(Sim *sim, int max_steps) {
    while (sched_has_work(&sim->s) && sim->steps < max_steps && sim->errors < 5) sim_step(sim);
    EXPECT(!sched_has_work(&sim->s), "still busy after %d steps", sim->steps);
}

// The pool is whole again: nothing held, every block free or idle in the prefix cache.
static void expect_pool_idle(Sim *sim) {
    const BlockPool *p = &sim->s.pool;
    char err[ERR_MAX];
    EXPECT_EQ_INT(blockpool_num_available(p), p->num_blocks);
    EXPECT_EQ_INT(blockpool_num_free(p) + blockpool_num_cached_idle(p), p->num_blocks);
    for (int b = 0; b < p->num_blocks; b++) EXPECT_EQ_INT(p->refcount[b], 0);
    EXPECT(sched_check(&sim->s, err) == SL_OK, "%s", err);
}

static void make_prompt(int32_t *t, int n, int seed) {
    for (int i = 0; i < n; i++) t[i] = 1 + (int32_t)(mix64((uint64_t)seed * 1000003 + (uint64_t)i) % 30000);
}

static void add_seq(Sim *sim, Sequence *seq, int64_t id, const int32_t *prompt, int n, SeqParams prm) {
    char err[ERR_MAX];
    if (prm.n == 0) prm.n = 1;
    seq_init(seq, id, prompt, n, &prm, sim->s.cfg.max_model_len, sim->s.cfg.block_size);
    int rc = sched_add(&sim->s, seq, err);
    EXPECT(rc == SL_OK, "sched_add %lld: %s", (long long)id, err);
}

// ----------------------------------------------------------------------------
// configuration and admission errors

static void test_config_errors(void) {
    Scheduler s;
    char err[ERR_MAX] = "";
    SchedConfig c = cfg_make(64, 4, 16, 3, 64); // 48 tokens of cache for max_model_len 64
    EXPECT_EQ_INT(sched_init(&s, &c, err), SL_ERR);
    EXPECT(strstr(err, "max_model_len") != NULL, "%s", err);
    c = cfg_make(2, 4, 16, 8, 64);
    EXPECT_EQ_INT(sched_init(&s, &c, err), SL_ERR);
    EXPECT(strstr(err, "--max-num-batched-tokens (2) must be >= --max-num-seqs (4)") != NULL, "%s", err);
    c = cfg_make(64, 4, 16, 4, 64);
    EXPECT_EQ_INT(sched_init(&s, &c, err), SL_OK);
    sched_free(&s);
}

static void test_add_rejects_too_long(void) {
    SchedConfig c = cfg_make(64, 4, 16, 8, 64);
    Sim sim;
    sim_init(&sim, &c);
    int32_t prompt[80];
    make_prompt(prompt, 80, 1);
    struct { int np, max_tokens, n; bool ok; const char *msg; } cases[] = {
        {64, 0, 1, false, "maximum context length is 64"},
        {80, 0, 1, false, "maximum context length is 64"},
        {40, 30, 1, false, "you requested 70 tokens (40 in the prompt, 30 in the completion)"},
        {0, 0, 1, false, "empty"},
        {10, 0, 5, false, "max_num_seqs"},
        {63, 0, 1, true, ""},
        {40, 24, 1, true, ""},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        Sequence seq;
        char err[ERR_MAX] = "";
        SeqParams prm = {.n = cases[i].n, .max_tokens = cases[i].max_tokens};
        seq_init(&seq, (int64_t)i, prompt, cases[i].np, &prm, 64, 16);
        int waiting = sim.s.num_waiting;
        int rc = sched_add(&sim.s, &seq, err);
        EXPECT_EQ_INT(rc, cases[i].ok ? SL_OK : SL_ERR);
        EXPECT(cases[i].ok || strstr(err, cases[i].msg) != NULL, "case %zu: %s", i, err);
        EXPECT_EQ_INT(sim.s.num_waiting, waiting + (cases[i].ok ? 1 : 0));
        if (cases[i].ok) sched_abort(&sim.s, (int64_t)i);
        seq_free(&seq);
    }
    sim_free(&sim);
}

// Without max_tokens a sequence stops at max_model_len, with KV for max_model_len - 1 tokens.
static void test_finish_at_max_model_len(void) {
    SchedConfig c = cfg_make(64, 4, 16, 4, 64);
    Sim sim;
    sim_init(&sim, &c);
    int32_t prompt[60];
    make_prompt(prompt, 60, 2);
    Sequence seq;
    add_seq(&sim, &seq, 1, prompt, 60, (SeqParams){0});
    sim_run_idle(&sim, 100);
    EXPECT_EQ_INT(seq.num_tokens, 64);
    EXPECT_EQ_INT(seq.num_computed_tokens, 63);
    EXPECT_EQ_INT(seq.finish_reason, SEQ_FINISH_LENGTH);
    EXPECT_EQ_INT(sim.steps, 4); // the prefill samples the first of the four tokens
    expect_pool_idle(&sim);
    EXPECT_EQ_INT(sim.errors, 0);
    seq_free(&seq);
    sim_free(&sim);
}

// ----------------------------------------------------------------------------
// budget, chunked prefill, order

// One planned entry: {seq index (0 = A, 1 = B, -1 = none), start, k, samples}.
typedef struct { int seq, start, k, samples; } WantEntry;

// A (150-token prompt, 3 outputs) from the start and B (150, 2) from step 1, through the steps
// of `want`, each step's entries checked in order; then both run to the end.
static void run_two_prompts(int budget, int long_prefill_threshold, const WantEntry (*want)[2], size_t n_steps) {
    SchedConfig c = cfg_make(budget, 4, 16, 64, 512);
    c.long_prefill_token_threshold = long_prefill_threshold;
    Sim sim;
    sim_init(&sim, &c);
    int32_t pa[150], pb[150];
    make_prompt(pa, 150, 3);
    make_prompt(pb, 150, 4);
    Sequence seqs[2];
    add_seq(&sim, &seqs[0], 1, pa, 150, (SeqParams){.max_tokens = 3});
    for (size_t st = 0; st < n_steps; st++) {
        if (st == 1) add_seq(&sim, &seqs[1], 2, pb, 150, (SeqParams){.max_tokens = 2});
        int n = sched_schedule(&sim.s, &sim.out);
        int nwant = want[st][1].seq >= 0 ? 2 : 1;
        ASSERT(n == nwant, "step %zu: %d entries", st, n);
        for (int e = 0; e < n; e++) {
            const SchedEntry *en = &sim.out.entries[e];
            EXPECT(en->seq == &seqs[want[st][e].seq], "step %zu entry %d", st, e);
            EXPECT_EQ_INT(en->start_pos, want[st][e].start);
            EXPECT_EQ_INT(en->num_new_tokens, want[st][e].k);
            EXPECT_EQ_INT(en->num_samples, want[st][e].samples);
        }
        EXPECT(sim.out.num_tokens <= c.max_num_batched_tokens);
        sim_run_model(&sim);
        sched_update(&sim.s, &sim.out, sim.sampled, NULL);
    }
    sim_run_idle(&sim, 20);
    EXPECT_EQ_INT(seqs[0].status, SEQ_FINISHED);
    EXPECT_EQ_INT(seq_num_output_tokens(&seqs[0]), 3);
    EXPECT_EQ_INT(seq_num_output_tokens(&seqs[1]), 2);
    expect_pool_idle(&sim);
    EXPECT_EQ_INT(sim.errors, 0);
    seq_free(&seqs[0]);
    seq_free(&seqs[1]);
    sim_free(&sim);
}

static void test_chunked_prefill_and_decode_first(void) {
    static const WantEntry want[][2] = {
        {{0, 0, 64, 0}, {-1, 0, 0, 0}},
        {{0, 64, 64, 0}, {-1, 0, 0, 0}},  // A's chunk takes the whole budget: B waits
        {{0, 128, 22, 1}, {1, 0, 42, 0}},  // A completes its prompt, B gets the rest
        {{0, 150, 1, 1}, {1, 42, 63, 0}},  // decode first, then B's chunk
        {{0, 151, 1, 1}, {1, 105, 45, 1}}, // A's third token finishes it
        {{1, 150, 1, 1}, {-1, 0, 0, 0}},
    };
    run_two_prompts(64, 0, want, ARRAY_LEN(want));
}

// --long-prefill-token-threshold 40: no prompt chunk above 40 tokens, so the budget left over
// by a capped chunk goes to the next prompt, and a step with decodes stays short.
static void test_long_prefill_threshold(void) {
    static const WantEntry want[][2] = {
        {{0, 0, 40, 0}, {-1, 0, 0, 0}},   // capped: 24 of the 64 tokens stay unused (nobody else)
        {{0, 40, 40, 0}, {1, 0, 24, 0}},  // B is admitted into what A's cap leaves
        {{0, 80, 40, 0}, {1, 24, 24, 0}},
        {{0, 120, 30, 1}, {1, 48, 34, 0}}, // A completes its prompt
        {{0, 150, 1, 1}, {1, 82, 40, 0}},  // a decode, then at most 40 prompt tokens
        {{0, 151, 1, 1}, {1, 122, 28, 1}},
        {{1, 150, 1, 1}, {-1, 0, 0, 0}},
    };
    run_two_prompts(64, 40, want, ARRAY_LEN(want));
}

// Admission follows (priority, arrival): lower priority value first, FCFS within one.
static void test_priority_and_fcfs(void) {
    SchedConfig c = cfg_make(64, 1, 16, 8, 64);
    Sim sim;
    sim_init(&sim, &c);
    int prio[] = {2, 0, 1, 0, 2, 1};
    int64_t want_order[] = {1, 3, 2, 5, 0, 4};
    Sequence seqs[6];
    int32_t prompt[8];
    for (int i = 0; i < 6; i++) {
        make_prompt(prompt, 8, 10 + i);
        add_seq(&sim, &seqs[i], i, prompt, 8, (SeqParams){.priority = prio[i], .max_tokens = 1});
    }
    int k = 0;
    while (sched_has_work(&sim.s) && sim.steps < 20) {
        sim_step(&sim);
        for (int f = 0; f < sim.out.num_finished && k < 6; f++) {
            EXPECT_EQ_INT(sim.out.finished[f]->id, want_order[k]);
            k++;
        }
    }
    EXPECT_EQ_INT(k, 6);
    expect_pool_idle(&sim);
    EXPECT_EQ_INT(sim.errors, 0);
    for (int i = 0; i < 6; i++) seq_free(&seqs[i]);
    sim_free(&sim);
}

// ----------------------------------------------------------------------------
// preemption

// Three sequences outgrow a 12-block pool; the victim is the running one last in (priority,
// arrival) order, and everything still completes with the outputs of a pool that never preempts.
static void test_preemption_order(void) {
    struct { int prio[3]; int first_victim; } cases[] = {
        {{0, 0, 0}, 2}, // FCFS: the most recently arrived
        {{0, 5, 0}, 1}, // the lowest priority, though not the latest
        {{3, 1, 2}, 0},
    };
    for (size_t ci = 0; ci < ARRAY_LEN(cases); ci++) {
        int32_t out_big[3][32], out_small[3][32];
        for (int pass = 0; pass < 2; pass++) {
            SchedConfig c = cfg_make(64, 8, 4, pass == 0 ? 64 : 12, 48);
            Sim sim;
            sim_init(&sim, &c);
            Sequence seqs[3];
            int32_t prompt[12];
            for (int i = 0; i < 3; i++) {
                make_prompt(prompt, 12, 20 + i);
                add_seq(&sim, &seqs[i], i, prompt, 12, (SeqParams){.priority = cases[ci].prio[i], .max_tokens = 20});
            }
            Sequence *first = NULL;
            while (sched_has_work(&sim.s) && sim.steps < 200) {
                sim_step(&sim);
                if (!first && sim.out.num_preempted > 0) {
                    first = sim.out.preempted[0];
                    EXPECT_EQ_INT(first->status, SEQ_PREEMPTED);
                    EXPECT_EQ_INT(first->num_blocks, 0);
                    EXPECT_EQ_INT(first->num_computed_tokens, 0);
                    for (int e = 0; e < sim.out.num_entries; e++) EXPECT(sim.out.entries[e].seq != first);
                }
            }
            EXPECT(!sched_has_work(&sim.s));
            if (pass == 0) {
                EXPECT_EQ_INT(sim.preemptions, 0);
            } else {
                EXPECT(first == &seqs[cases[ci].first_victim], "case %zu: victim %lld", ci,
                       first ? (long long)first->id : -1LL);
                EXPECT(sim.preemptions >= 2, "case %zu: %d preemptions", ci, sim.preemptions);
            }
            for (int i = 0; i < 3; i++) {
                EXPECT_EQ_INT(seqs[i].num_tokens, 32);
                EXPECT_EQ_INT(seqs[i].finish_reason, SEQ_FINISH_LENGTH);
                memcpy(pass == 0 ? out_big[i] : out_small[i], seqs[i].tokens, 32 * sizeof(int32_t));
                seq_free(&seqs[i]);
            }
            expect_pool_idle(&sim);
            EXPECT_EQ_INT(sim.errors, 0);
            sim_free(&sim);
        }
        EXPECT(memcmp(out_big, out_small, sizeof(out_big)) == 0, "case %zu: outputs differ", ci);
    }
}

// A prefill chunk of an older sequence needs blocks a newer, already planned decode holds: the
// decode is taken out of the plan (budget back) and its sequence preempted.
static void test_preempt_planned_decode(void) {
    SchedConfig c = cfg_make(16, 2, 4, 12, 48);
    Sim sim;
    sim_init(&sim, &c);
    int32_t pa[40], pb[6];
    make_prompt(pa, 40, 30);
    make_prompt(pb, 6, 31);
    Sequence a, b;
    add_seq(&sim, &b, 2, pb, 6, (SeqParams){.priority = 1, .max_tokens = 20});
    sim_step(&sim); // B prefills (2 blocks)
    add_seq(&sim, &a, 1, pa, 40, (SeqParams){.priority = 0, .max_tokens = 2});
    sim_step(&sim); // B decodes, A admitted with 15 tokens (4 blocks)
    sim_step(&sim); // B decodes, A 15 more (8 blocks)
    EXPECT_EQ_INT(a.num_computed_tokens, 30);
    EXPECT_EQ_INT(blockpool_num_available(&sim.s.pool), 2);
    sim_step(&sim); // B's decode takes a 3rd block; A's last 10 need 2: B goes
    EXPECT_EQ_INT(sim.out.num_preempted, 1);
    EXPECT(sim.out.preempted[0] == &b);
    ASSERT(sim.out.num_entries == 1);
    EXPECT(sim.out.entries[0].seq == &a);
    EXPECT_EQ_INT(sim.out.entries[0].start_pos, 30);
    EXPECT_EQ_INT(sim.out.entries[0].num_new_tokens, 10);
    EXPECT_EQ_INT(sim.out.num_tokens, 10);
    EXPECT_EQ_INT(b.status, SEQ_PREEMPTED);
    sim_run_idle(&sim, 100);
    EXPECT_EQ_INT(seq_num_output_tokens(&a), 2);
    EXPECT_EQ_INT(seq_num_output_tokens(&b), 20);
    expect_pool_idle(&sim);
    EXPECT_EQ_INT(sim.errors, 0);
    seq_free(&a);
    seq_free(&b);
    sim_free(&sim);
}

// ----------------------------------------------------------------------------
// prefix caching

static void test_prefix_cache_200(void) {
    for (int pc = 0; pc < 2; pc++) {
        SchedConfig c = cfg_make(512, 8, 16, 128, 1024);
        c.enable_prefix_caching = pc;
        Sim sim;
        sim_init(&sim, &c);
        int32_t prompt[260];
        make_prompt(prompt, 260, 40);
        Sequence a, b, d, e;
        add_seq(&sim, &a, 1, prompt, 200, (SeqParams){.max_tokens = 50});
        sim_step(&sim);
        EXPECT_EQ_INT(a.num_cached_tokens, 0);
        // B shares A's 200-token prompt and goes on: 12 whole blocks = 192 tokens hit
        int32_t pb[230];
        memcpy(pb, prompt, 200 * sizeof(int32_t));
        make_prompt(pb + 200, 30, 41);
        add_seq(&sim, &b, 2, pb, 230, (SeqParams){.max_tokens = 5});
        // D is exactly A's first 192 tokens: a full hit, but the last token is recomputed
        add_seq(&sim, &d, 3, prompt, 192, (SeqParams){.max_tokens = 5});
        sim_step(&sim);
        EXPECT_EQ_INT(b.num_cached_tokens, pc ? 192 : 0);
        EXPECT_EQ_INT(d.num_cached_tokens, pc ? 176 : 0);
        EXPECT_EQ_INT(sim.out.entries[1].start_pos, pc ? 192 : 0); // B's first chunk
        EXPECT_EQ_INT(sim.out.entries[2].num_new_tokens, pc ? 16 : 192);
        // shared blocks: one copy, held by each table that uses it
        for (int i = 0; i < 12; i++) {
            bool shared = a.block_table[i] == b.block_table[i];
            EXPECT(shared == (bool)pc, "block %d shared %d", i, shared);
            if (pc) EXPECT_EQ_INT(sim.s.pool.refcount[a.block_table[i]], i < 11 ? 3 : 2);
        }
        EXPECT_EQ_INT(sim.s.pool.hit_tokens, pc ? 192 + 176 : 0);
        sim_run_idle(&sim, 200);
        // after A is gone its prefix still serves a later request from the idle cache
        add_seq(&sim, &e, 4, prompt, 200, (SeqParams){.max_tokens = 1});
        sim_run_idle(&sim, 200);
        EXPECT_EQ_INT(e.num_cached_tokens, pc ? 192 : 0);
        expect_pool_idle(&sim);
        EXPECT_EQ_INT(sim.errors, 0);
        seq_free(&a);
        seq_free(&b);
        seq_free(&d);
        seq_free(&e);
        sim_free(&sim);
    }
}

// Idle cached blocks are evicted least recently released first; a finished sequence releases
// its blocks tail first, so its prompt's head survives longest.
static void test_lru_eviction_of_cached_blocks(void) {
    SchedConfig c = cfg_make(128, 4, 16, 8, 128);
    Sim sim;
    sim_init(&sim, &c);
    int32_t pa[64], pb[96];
    make_prompt(pa, 64, 50);
    make_prompt(pb, 96, 51);
    Sequence a, b, cc;
    add_seq(&sim, &a, 1, pa, 64, (SeqParams){.max_tokens = 1});
    sim_run_idle(&sim, 10);
    int32_t a_blocks[4];
    memcpy(a_blocks, a.block_table, sizeof(a_blocks)); // the table survives for inspection
    EXPECT_EQ_INT(blockpool_num_cached_idle(&sim.s.pool), 4);
    EXPECT_EQ_INT(sim.s.pool.lru_head, a_blocks[3]);
    EXPECT_EQ_INT(sim.s.pool.lru_tail, a_blocks[0]);
    add_seq(&sim, &b, 2, pb, 96, (SeqParams){.max_tokens = 1}); // 6 blocks: 4 free + 2 evicted
    sim_step(&sim);
    EXPECT_EQ_INT(sim.s.pool.evictions, 2);
    for (int i = 0; i < 4; i++) { // A's last two blocks are gone from the cache, its first two stay
        uint64_t parent = i == 0 ? BLOCKPOOL_HASH_ROOT : a.block_hashes[i - 1];
        EXPECT_EQ_INT(blockpool_lookup(&sim.s.pool, a.block_hashes[i], parent, pa + 16 * i, 0),
                      i < 2 ? a_blocks[i] : -1);
    }
    EXPECT_EQ_INT(b.block_table[4], a_blocks[3]);
    EXPECT_EQ_INT(b.block_table[5], a_blocks[2]);
    sim_run_idle(&sim, 10);
    add_seq(&sim, &cc, 3, pa, 64, (SeqParams){.max_tokens = 1});
    sim_step(&sim);
    EXPECT_EQ_INT(cc.num_cached_tokens, 32); // A's first two blocks only
    EXPECT_EQ_INT(cc.block_table[0], a_blocks[0]);
    EXPECT_EQ_INT(cc.block_table[1], a_blocks[1]);
    sim_run_idle(&sim, 10);
    expect_pool_idle(&sim);
    EXPECT_EQ_INT(sim.errors, 0);
    seq_free(&a);
    seq_free(&b);
    seq_free(&cc);
    sim_free(&sim);
}

// ----------------------------------------------------------------------------
// parallel sampling

static void test_fork_copy_on_write(void) {
    SchedConfig c = cfg_make(64, 4, 4, 32, 64);
    Sim sim;
    sim_init(&sim, &c);
    int32_t prompt[8];
    make_prompt(prompt, 8, 60);
    Sequence g, h;
    add_seq(&sim, &g, 1, prompt, 6, (SeqParams){.n = 3, .max_tokens = 4}); // 1 full block + 2
    add_seq(&sim, &h, 2, prompt, 8, (SeqParams){.n = 2, .max_tokens = 2});
    sim_step(&sim);
    // one entry samples three rows; H waits: 3 + 2 slots > max_num_seqs 4
    ASSERT(sim.out.num_entries == 1);
    EXPECT_EQ_INT(sim.out.entries[0].num_samples, 3);
    EXPECT_EQ_INT(sim.out.num_sample_rows, 3);
    EXPECT_EQ_INT(h.status, SEQ_WAITING);
    EXPECT_EQ_INT(sim.s.num_running, 3);
    EXPECT_EQ_INT(sim.s.num_running_slots, 3);
    Sequence *member[3] = {&g, &g.children[0], &g.children[1]};
    int32_t b0 = g.block_table[0], b1 = g.block_table[1];
    for (int i = 0; i < 3; i++) {
        EXPECT_EQ_INT(member[i]->status, SEQ_RUNNING);
        EXPECT_EQ_INT(member[i]->sample_index, i);
        EXPECT_EQ_INT(member[i]->num_tokens, 7);
        EXPECT_EQ_INT(member[i]->tokens[6], sim.sampled[i]);
        EXPECT_EQ_INT(member[i]->block_table[1], b1);
    }
    EXPECT_EQ_INT(sim.s.pool.refcount[b0], 3);
    EXPECT_EQ_INT(sim.s.pool.refcount[b1], 3);
    // the first decode writes position 6 into the shared partial block: two copies, the last
    // writer keeps the original
    sim_step(&sim);
    EXPECT_EQ_INT(sim.out.num_entries, 3);
    ASSERT(sim.out.num_copies == 2);
    for (int i = 0; i < 2; i++) {
        EXPECT_EQ_INT(sim.out.copies[i].src, b1);
        EXPECT_EQ_INT(sim.out.copies[i].dst, member[i]->block_table[1]);
    }
    EXPECT_EQ_INT(g.children[1].block_table[1], b1);
    EXPECT_EQ_INT(sim.s.pool.refcount[b1], 1);
    EXPECT_EQ_INT(sim.s.pool.refcount[b0], 3);
    EXPECT(member[0]->tokens[6] != member[1]->tokens[6] && member[1]->tokens[6] != member[2]->tokens[6]);
    sim_run_idle(&sim, 50);
    for (int i = 0; i < 3; i++) EXPECT_EQ_INT(seq_num_output_tokens(member[i]), 4);
    // H's prompt is block aligned: its two samples never share a partial block
    EXPECT_EQ_INT(seq_num_output_tokens(&h), 2);
    EXPECT_EQ_INT(seq_num_output_tokens(&h.children[0]), 2);
    expect_pool_idle(&sim);
    EXPECT_EQ_INT(sim.errors, 0);
    seq_free(&g);
    seq_free(&h);
    sim_free(&sim);
}

// ----------------------------------------------------------------------------
// abort

static void test_abort_frees_blocks(void) {
    SchedConfig c = cfg_make(16, 4, 4, 64, 128);
    Sim sim;
    sim_init(&sim, &c);
    int32_t prompt[100];
    make_prompt(prompt, 100, 70);
    Sequence a, b, g, w;
    // A mid-prefill and B mid-decode, sharing A's first blocks through the prefix cache
    add_seq(&sim, &b, 2, prompt, 10, (SeqParams){.max_tokens = 50});
    sim_step(&sim);
    add_seq(&sim, &a, 1, prompt, 100, (SeqParams){0});
    sim_step(&sim);
    sim_step(&sim);
    EXPECT(a.num_computed_tokens > 0 && a.num_computed_tokens < 100, "A is mid-prefill");
    EXPECT(seq_num_output_tokens(&b) >= 2, "B is decoding");
    EXPECT_EQ_INT(a.block_table[0], b.block_table[0]); // shared full block
    EXPECT_EQ_INT(sim.s.pool.refcount[a.block_table[0]], 2);
    EXPECT_EQ_INT(sched_abort(&sim.s, 1), 1);
    EXPECT_EQ_INT(a.status, SEQ_FINISHED);
    EXPECT_EQ_INT(a.finish_reason, SEQ_FINISH_ABORT);
    EXPECT_EQ_INT(sim.s.pool.refcount[b.block_table[0]], 1);
    EXPECT_EQ_INT(sched_abort(&sim.s, 2), 1);
    expect_pool_idle(&sim);
    // a forked group aborts whole; so does one still waiting, children included
    add_seq(&sim, &g, 3, prompt, 9, (SeqParams){.n = 3});
    sim_step(&sim);
    sim_step(&sim);
    add_seq(&sim, &w, 4, prompt, 9, (SeqParams){.n = 2});
    EXPECT_EQ_INT(sched_abort(&sim.s, 3), 3);
    EXPECT_EQ_INT(sched_abort(&sim.s, 4), 2);
    EXPECT_EQ_INT(w.children[0].finish_reason, SEQ_FINISH_ABORT);
    EXPECT_EQ_INT(sched_abort(&sim.s, 99), 0);
    EXPECT(!sched_has_work(&sim.s));
    expect_pool_idle(&sim);
    EXPECT_EQ_INT(sim.errors, 0);
    seq_free(&a);
    seq_free(&b);
    seq_free(&g);
    seq_free(&w);
    sim_free(&sim);
}

// ----------------------------------------------------------------------------
// randomized runs

typedef struct {
    int arrive_step, np, max_tokens, n, priority, prefix, abort_step;
} Job;

// A seeded workload: shared "system prompts", priorities, n in 1..3, some stops and aborts.
static int jobs_make(Job *jobs, int max_jobs, int max_len, bool aborts) {
    int nj = rng_int(max_jobs / 2, max_jobs);
    for (int i = 0; i < nj; i++) {
        Job *j = &jobs[i];
        j->arrive_step = rng_int(0, 60);
        j->np = rng_int(1, max_len / 2);
        j->max_tokens = rng_int(1, max_len - j->np);
        if (rng_int(0, 3) == 0) j->max_tokens = 0; // until max_model_len
        j->n = rng_int(0, 3) == 0 ? rng_int(2, 3) : 1;
        j->priority = rng_int(0, 2);
        j->prefix = rng_int(0, 3); // which shared prefix its prompt starts with
        j->abort_step = aborts && rng_int(0, 4) == 0 ? j->arrive_step + rng_int(0, 30) : -1;
    }
    return nj;
}

// Runs the jobs; returns a hash of every sequence's tokens in job order (0 on failure).
static uint64_t run_jobs(const SchedConfig *c, const Job *jobs, int nj, bool stops, int *preemptions) {
    Sim sim;
    sim_init(&sim, c);
    sim.stop_on_tokens = stops;
    Sequence *seqs = xcalloc((size_t)nj, sizeof(Sequence));
    int32_t *prompt = xmalloc((size_t)c->max_model_len * sizeof(int32_t));
    int added = 0, guard = 0;
    while ((added < nj || sched_has_work(&sim.s)) && guard++ < 20000 && sim.errors == 0) {
        for (int i = 0; i < nj; i++) {
            const Job *j = &jobs[i];
            if (j->arrive_step == sim.steps) {
                make_prompt(prompt, j->np, 1000 + i);
                make_prompt(prompt, MIN(j->np, 40), 9000 + j->prefix); // the shared part
                add_seq(&sim, &seqs[i], i, prompt, j->np,
                        (SeqParams){.n = j->n, .max_tokens = j->max_tokens, .priority = j->priority});
                added++;
            }
            if (j->abort_step == sim.steps && seqs[i].tokens) {
                int alive = 0;
                for (int m = 0; m < j->n; m++)
                    alive += (m == 0 ? &seqs[i] : &seqs[i].children[m - 1])->status != SEQ_FINISHED;
                int got = sched_abort(&sim.s, i);
                EXPECT(got == alive && seqs[i].status == SEQ_FINISHED, "abort %d: %d of %d", i, got, alive);
                char err[ERR_MAX];
                EXPECT(sched_check(&sim.s, err) == SL_OK, "%s", err);
            }
        }
        sim_step(&sim);
    }
    EXPECT(!sched_has_work(&sim.s) && added == nj, "unfinished after %d steps", sim.steps);
    expect_pool_idle(&sim);
    EXPECT_EQ_INT(sim.errors, 0);
    uint64_t h = sim.errors ? 0 : 1;
    for (int i = 0; i < nj; i++) {
        Sequence *seq = &seqs[i];
        for (int m = 0; m < seq->n_samples && h; m++) {
            Sequence *t = m == 0 ? seq : &seq->children[m - 1];
            EXPECT_EQ_INT(t->status, SEQ_FINISHED);
            for (int k = 0; k < t->num_tokens; k++) h = mix64(h ^ (uint64_t)t->tokens[k]);
            h = mix64(h ^ (uint64_t)t->finish_reason);
        }
        seq_free(seq);
    }
    *preemptions = sim.preemptions;
    free(seqs);
    free(prompt);
    sim_free(&sim);
    return h;
}

// Outputs with a pool too small for every running request equal those of a pool that never
// fills, for the same seeded workloads; the small pool does preempt.
static void test_small_pool_same_outputs(void) {
    Job jobs[24];
    int total_preemptions = 0;
    for (int seed = 1; seed <= 20; seed++) {
        rng_state = (uint64_t)seed;
        int bs = seed % 2 ? 4 : 16, max_len = 128;
        int nj = jobs_make(jobs, 24, max_len, false);
        SchedConfig big = cfg_make(rng_int(8, 96), 8, bs, 8 * 3 * max_len / bs, max_len);
        SchedConfig small = big;
        small.num_blocks = max_len / bs + rng_int(0, 4);
        int p_big, p_small;
        uint64_t hb = run_jobs(&big, jobs, nj, true, &p_big);
        uint64_t hs = run_jobs(&small, jobs, nj, true, &p_small);
        EXPECT(hb != 0 && hb == hs, "seed %d: outputs differ", seed);
        // capping prompt chunks changes when tokens are computed, never what comes out
        SchedConfig capped = small;
        capped.long_prefill_token_threshold = 1 + seed % 7;
        int p_capped;
        EXPECT(run_jobs(&capped, jobs, nj, true, &p_capped) == hb, "seed %d: outputs differ with a chunk cap", seed);
        EXPECT_EQ_INT(p_big, 0);
        total_preemptions += p_small;
    }
    EXPECT(total_preemptions > 100, "only %d preemptions", total_preemptions);
}

// A sliding window on every layer (Mistral): the blocks before the next token's window go back
// to the pool as the sequence advances, shared ones (parallel samples) once no member holds
// them, and the outputs are those of a pool that never fills.
static void test_sliding_window_frees_blocks(void) {
    SchedConfig c = cfg_make(64, 4, 4, 40, 64);
    c.kv_window = 8;
    Sim sim;
    sim_init(&sim, &c);
    int32_t prompt[30];
    make_prompt(prompt, 30, 77);
    Sequence a;
    add_seq(&sim, &a, 1, prompt, 30, (SeqParams){.n = 2, .max_tokens = 10});
    sim_step(&sim); // the prompt: position 30 reads from 23 on, so blocks 0-4 (positions 0-19) go
    EXPECT_EQ_INT(a.num_dropped_blocks, 5);
    EXPECT_EQ_INT(a.children[0].num_dropped_blocks, 5);
    EXPECT_EQ_INT((int)sim.s.num_window_freed_blocks, 5);
    EXPECT_EQ_INT(a.block_table[4], -1);
    EXPECT_EQ_INT(blockpool_num_available(&sim.s.pool), 40 - 3); // blocks 5-7, shared by the two
    int most_held = 0;
    while (sched_has_work(&sim.s) && sim.steps < 50) {
        sim_step(&sim);
        most_held = MAX(most_held, 40 - blockpool_num_available(&sim.s.pool));
    }
    EXPECT(most_held <= 2 * 4, "%d blocks held", most_held); // per member: 8 positions + a partial block
    EXPECT_EQ_INT(seq_num_output_tokens(&a), 10);
    EXPECT_EQ_INT(seq_num_output_tokens(&a.children[0]), 10);
    EXPECT(sim.s.num_window_freed_blocks >= 5 + 2 * 2, "%d", (int)sim.s.num_window_freed_blocks);
    expect_pool_idle(&sim);
    EXPECT_EQ_INT(sim.errors, 0);
    seq_free(&a);
    sim_free(&sim);

    // random workloads: a small pool gives the big pool's outputs, preempting less than without
    // the window
    Job jobs[24];
    for (int seed = 1; seed <= 10; seed++) {
        rng_state = (uint64_t)seed;
        int bs = seed % 2 ? 4 : 16, max_len = 128;
        int nj = jobs_make(jobs, 24, max_len, false);
        SchedConfig big = cfg_make(rng_int(8, 96), 8, bs, 8 * 3 * max_len / bs, max_len);
        big.kv_window = rng_int(1, 40);
        SchedConfig small = big;
        small.num_blocks = max_len / bs + rng_int(0, 4);
        int p_big, p_small;
        EXPECT(run_jobs(&big, jobs, nj, true, &p_big) == run_jobs(&small, jobs, nj, true, &p_small),
               "seed %d: outputs differ", seed);
    }
}

// Random configurations, arrivals, priorities, n, stops and aborts; the invariants are checked
// after every schedule and every update inside sim_step.
static void test_randomized_stress(void) {
    Job jobs[48];
    int preemptions = 0;
    for (int seed = 100; seed < 300; seed++) {
        rng_state = (uint64_t)seed;
        int bs = (int[]){1, 2, 4, 16}[rng_int(0, 3)];
        int max_len = rng_int(2, 10) * 16;
        int max_seqs = rng_int(3, 12);
        SchedConfig c = cfg_make(rng_int(max_seqs, 128), max_seqs, bs,
                                 (max_len + bs - 1) / bs + rng_int(0, 40), max_len);
        c.enable_prefix_caching = rng_int(0, 4) != 0;
        c.long_prefill_token_threshold = seed % 3 ? 0 : 1 + seed % 23;
        c.kv_window = seed % 4 ? 0 : rng_int(1, max_len);
        int nj = jobs_make(jobs, 48, max_len, true);
        int p;
        run_jobs(&c, jobs, nj, rng_int(0, 1), &p);
        preemptions += p;
    }
    EXPECT(preemptions > 1000, "only %d preemptions", preemptions);
}

int main(void) {
    TEST_RUN(test_config_errors);
    TEST_RUN(test_add_rejects_too_long);
    TEST_RUN(test_finish_at_max_model_len);
    TEST_RUN(test_chunked_prefill_and_decode_first);
    TEST_RUN(test_long_prefill_threshold);
    TEST_RUN(test_priority_and_fcfs);
    TEST_RUN(test_preemption_order);
    TEST_RUN(test_preempt_planned_decode);
    TEST_RUN(test_prefix_cache_200);
    TEST_RUN(test_lru_eviction_of_cached_blocks);
    TEST_RUN(test_fork_copy_on_write);
    TEST_RUN(test_abort_frees_blocks);
    TEST_RUN(test_small_pool_same_outputs);
    TEST_RUN(test_sliding_window_frees_blocks);
    TEST_RUN(test_randomized_stress);
    return test_summary();
}
