// test_spec.c: speculative decoding (n-gram proposals, and the default model as its own draft
// model) on the real default model (CPU).
//
// --speculative-config parsing; the n-gram proposer on known token runs; and through the engine:
// every request of a mixed workload (greedy, seeded sampling with penalties, small max_tokens,
// stop strings, min_tokens) makes the same tokens and text with speculation as without, run
// alone and all at once under a small token budget (proposals clipped) and a small KV pool
// (preemption); afterwards every block is back and the prefix cache holds the same blocks as
// after the run without speculation; an abort in the middle of speculating leaks nothing.
#include "config/spec_config.h"
#include "engine/engine_impl.h"
#include "engine/spec_ngram.h"
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function" // engine_jobs.h's scenarios for test_engine*.c
#include "tests/unit/engine_jobs.h"
#pragma GCC diagnostic pop

#define NSPEC 8
#define SPEC_GEN 24

static void test_config(void) {
    SpecConfig c;
    char err[ERR_MAX];
    EXPECT_EQ_INT(spec_config_parse(NULL, &c, err), SL_OK);
    EXPECT_EQ_INT(c.method, SPEC_NONE);
    EXPECT_EQ_INT(spec_config_parse("{\"method\": \"ngram\", \"num_speculative_tokens\": 3}", &c, err), SL_OK);
    EXPECT(c.method == SPEC_NGRAM && c.num_speculative_tokens == 3, "k %d", c.num_speculative_tokens);
    EXPECT(c.prompt_lookup_min == 5 && c.prompt_lookup_max == 5, "%d..%d", c.prompt_lookup_min, c.prompt_lookup_max);
    EXPECT_EQ_INT(spec_config_parse("{\"method\":\"ngram\",\"num_speculative_tokens\":2,\"prompt_lookup_max\":3}", &c,
                                    err), SL_OK);
    EXPECT(c.prompt_lookup_min == 3 && c.prompt_lookup_max == 3, "%d..%d", c.prompt_lookup_min, c.prompt_lookup_max);
    EXPECT_EQ_INT(spec_config_parse("{\"method\":\"ngram\",\"num_speculative_tokens\":4,\"prompt_lookup_max\":4,"
                                    "\"prompt_lookup_min\":2,\"disable_by_batch_size\":8}", &c, err), SL_OK);
    EXPECT(c.prompt_lookup_min == 2 && c.prompt_lookup_max == 4 && c.disable_by_batch_size == 8, "parsed");
    EXPECT_EQ_INT(spec_config_parse("{\"model\": \"d.gguf\", \"num_speculative_tokens\": 3}", &c, err), SL_OK);
    EXPECT(c.method == SPEC_DRAFT && c.num_speculative_tokens == 3 && !strcmp(c.model, "d.gguf"), "draft parsed");
    EXPECT_EQ_INT(spec_config_parse("{\"method\": \"draft_model\", \"model\": \"d\", \"num_speculative_tokens\": 1, "
                                    "\"disable_by_batch_size\": 4}", &c, err), SL_OK);
    EXPECT(c.method == SPEC_DRAFT && c.disable_by_batch_size == 4, "draft_model parsed");
    const struct {
        const char *json, *msg;
    } bad[] = {
        {"{", "not valid JSON"},
        {"[]", "expected a JSON object"},
        {"{\"method\": \"eagle\", \"num_speculative_tokens\": 2}", "unknown method \"eagle\""},
        {"{\"num_speculative_tokens\": 2}", "\"method\" (\"ngram\") or \"model\" is required"},
        {"{\"method\": \"ngram\"}", "\"num_speculative_tokens\" is required"},
        {"{\"method\": \"ngram\", \"num_speculative_tokens\": 0}", "between 1 and 16, got 0"},
        {"{\"method\": \"ngram\", \"num_speculative_tokens\": 2.5}", "must be an integer"},
        {"{\"method\": \"ngram\", \"num_speculative_tokens\": 2, \"prompt_lookup_min\": 4, \"prompt_lookup_max\": 2}",
         "\"prompt_lookup_min\" (4) must be <= \"prompt_lookup_max\" (2)"},
        {"{\"method\": \"ngram\", \"num_speculative_tokens\": 2, \"foo\": 1}", "unknown key \"foo\""},
        {"{\"model\": \"\", \"num_speculative_tokens\": 2}", "\"model\" must be a path"},
        {"{\"model\": 7, \"num_speculative_tokens\": 2}", "\"model\" must be a path"},
        {"{\"method\": \"draft_model\", \"num_speculative_tokens\": 2}", "needs \"model\": PATH"},
        {"{\"model\": \"d.gguf\", \"num_speculative_tokens\": 2, \"prompt_lookup_max\": 3}", "are for method \"ngram\""},
        {"{\"method\": \"ngram\", \"model\": \"d.gguf\", \"num_speculative_tokens\": 2}", "takes no \"model\""},
        {"{\"model\": \"d.gguf\"}", "\"num_speculative_tokens\" is required"},
        {"{\"method\": 3, \"num_speculative_tokens\": 2}", "\"method\" must be a string"},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        err[0] = 0;
        EXPECT_EQ_INT(spec_config_parse(bad[i].json, &c, err), SL_ERR);
        EXPECT(strstr(err, bad[i].msg) && strstr(err, "--speculative-config: ") == err, "%s -> %s", bad[i].json, err);
        EXPECT_EQ_INT(c.method, SPEC_NONE);
    }
}

static void test_ngram(void) {
    int32_t out[8];
    // "1 2 3 4 9 1 2 3": the suffix "1 2 3" occurred at 0; what followed it was "4 9 1 ..."
    const int32_t a[] = {1, 2, 3, 4, 9, 1, 2, 3};
    EXPECT_EQ_INT(spec_ngram_propose(a, 8, 2, 3, 2, out), 2);
    EXPECT(out[0] == 4 && out[1] == 9, "%d %d", out[0], out[1]);
    // past the end the repetition continues: 4 9 1 2 3 4
    EXPECT_EQ_INT(spec_ngram_propose(a, 8, 2, 3, 6, out), 6);
    const int32_t want[] = {4, 9, 1, 2, 3, 4};
    EXPECT(!memcmp(out, want, sizeof want), "%d %d %d %d %d %d", out[0], out[1], out[2], out[3], out[4], out[5]);
    // the longest match wins over a more recent shorter one: "7 2 3" matches 3 tokens at 0,
    // "2 3" alone matches at 5 (2 tokens)
    const int32_t b[] = {7, 2, 3, 5, 8, 2, 3, 6, 7, 2, 3};
    EXPECT_EQ_INT(spec_ngram_propose(b, 11, 2, 3, 1, out), 1);
    EXPECT_EQ_INT(out[0], 5);
    // with n_max 2 the most recent 2-gram wins
    EXPECT_EQ_INT(spec_ngram_propose(b, 11, 2, 2, 1, out), 1);
    EXPECT_EQ_INT(out[0], 6);
    // shorter than n_min: nothing; no match: nothing; k 0: nothing
    EXPECT_EQ_INT(spec_ngram_propose(b, 11, 4, 4, 3, out), 0);
    const int32_t c[] = {1, 2, 3, 4, 5};
    EXPECT_EQ_INT(spec_ngram_propose(c, 5, 1, 3, 3, out), 0);
    EXPECT_EQ_INT(spec_ngram_propose(a, 8, 2, 3, 0, out), 0);
    // a run of one token proposes more of it
    const int32_t d[] = {5, 6, 6, 6};
    EXPECT_EQ_INT(spec_ngram_propose(d, 4, 1, 2, 3, out), 3);
    EXPECT(out[0] == 6 && out[1] == 6 && out[2] == 6, "run");
}

// A prompt that ends by starting to repeat an earlier passage, so the continuation copies and
// the proposals are mostly right; the kinds of request alternate.
static void spec_jobs(Job *jobs, const Tokenizer *tok) {
    static const char *const stop[2][1] = {{" March"}, {" boats"}}; // what jobs 3 and 7 copy
    for (int i = 0; i < NSPEC; i++) {
        Job *j = &jobs[i];
        memset(j, 0, sizeof(*j));
        int off = (i * 29) % 200, n = 0;
        for (int k = 0; k < 80; k++) j->prompt[n++] = corpus_ids[off + k];
        for (int k = 0; k < 10 + i; k++) j->prompt[n++] = corpus_ids[off + k];
        j->n_prompt = n;
        engine_params_defaults(&j->params);
        j->params.max_tokens = SPEC_GEN;
        j->params.sampling.temperature = 0;
        switch (i % 4) {
        case 1: // sampled, with penalties that must see the tokens accepted before each row
            j->params.sampling.temperature = 0.8f;
            j->params.sampling.top_p = 0.95f;
            j->params.sampling.repetition_penalty = 1.05f;
            j->params.sampling.presence_penalty = 0.2f;
            j->params.sampling.seed = 77 + (uint64_t)i;
            j->params.sampling.has_seed = true;
            break;
        case 2: j->params.max_tokens = 3 + i; break; // proposals clipped to what is left
        case 3: // a stop string the copy reaches, min_tokens
            j->params.stop = stop[i / 4];
            j->params.n_stop = 1;
            j->params.min_tokens = 2;
            break;
        }
    }
    (void)tok;
}

typedef enum { OFF, NGRAM, DRAFT } SpecKind;

// DRAFT: the default model as its own draft, 4 proposals per step.
static EngineConfig spec_cfg(int budget, int max_seqs, size_t kv_mem, SpecKind kind) {
    EngineConfig c = cfg_make(budget, max_seqs, true, kv_mem);
    char err[ERR_MAX], json[1200];
    if (kind == NGRAM)
        snprintf(json, sizeof json, "{\"method\":\"ngram\",\"num_speculative_tokens\":5,\"prompt_lookup_max\":4,"
                 "\"prompt_lookup_min\":2}");
    else
        snprintf(json, sizeof json, "{\"model\":\"%s\",\"num_speculative_tokens\":4}", TEST_MODEL_PATH);
    if (kind != OFF) CHECK(spec_config_parse(json, &c.spec, err) == SL_OK, "%s", err);
    return c;
}

// The prefix cache's blocks as sorted hashes, and the pool's counts (the engine is idle).
static int cached_hashes(Engine *e, uint64_t *out) {
    const BlockPool *p = &e->sched.pool;
    int n = 0;
    for (int b = 0; b < p->num_blocks; b++)
        if (p->cached[b]) out[n++] = p->hash[b];
    for (int i = 1; i < n; i++) // insertion sort: a few hundred at most
        for (int k = i; k > 0 && out[k - 1] > out[k]; k--) {
            uint64_t t = out[k];
            out[k] = out[k - 1];
            out[k - 1] = t;
        }
    return n;
}

static Job want[NSPEC];            // the jobs without speculation (test_reference)
static uint64_t h_off[4096];        // and the prefix cache after them
static int n_off, blocks_off;

static void test_reference(void) {
    EngineConfig c0 = spec_cfg(512, 4, 16 << 20, OFF);
    Engine *e = engine_open(&c0);
    ASSERT(e);
    spec_jobs(want, engine_tokenizer(e));
    jobs_run_alone(e, want, NSPEC);
    EngineStats st;
    expect_pool_whole(e, &st);
    CHECK(st.num_blocks <= 4096);
    blocks_off = st.num_blocks;
    n_off = cached_hashes(e, h_off);
    engine_destroy(e);
    int stopped = 0;
    for (int i = 3; i < NSPEC; i += 4)
        stopped += want[i].finish == ENGINE_FINISH_STOP && want[i].stop_str == 0;
    EXPECT(stopped >= 1, "no stop-string job stopped on its stop string");
}

// With speculation of this kind, the jobs make test_reference's tokens and text: alone (then the
// pool and the prefix cache end as without speculation, and at least half the proposals were
// accepted) and all at once under a budget of 24 tokens (proposals clipped) and a pool of 16 blocks
// (preemption, which the draft model must recompute too).
static void spec_identity(SpecKind kind) {
    static Job got[NSPEC];
    static uint64_t h_on[4096];
    EngineStats st;
    // a block holds the draft's KV too (here as much as the target's): the same number of blocks
    EngineConfig c1 = spec_cfg(512, 4, (kind == DRAFT ? 32 : 16) << 20, kind);
    Engine *e = engine_open(&c1);
    ASSERT(e);
    EXPECT_EQ_INT(engine_info(e)->num_blocks, blocks_off);
    memcpy(got, want, sizeof got);
    jobs_run_alone(e, got, NSPEC);
    jobs_compare(want, got, NSPEC, "speculative, alone");
    expect_pool_whole(e, &st);
    EXPECT(st.spec_drafts > 0 && st.spec_accepted_tokens * 2 > st.spec_draft_tokens,
           "drafts %llu, %llu of %llu proposals accepted", (unsigned long long)st.spec_drafts,
           (unsigned long long)st.spec_accepted_tokens, (unsigned long long)st.spec_draft_tokens);
    uint64_t pos0 = st.spec_accepted_per_pos[0], sum = 0;
    for (int p = 0; p < SPEC_MAX_TOKENS; p++) {
        sum += st.spec_accepted_per_pos[p];
        if (p > 0) EXPECT(st.spec_accepted_per_pos[p] <= st.spec_accepted_per_pos[p - 1], "per position");
    }
    EXPECT(sum == st.spec_accepted_tokens && pos0 <= st.spec_drafts, "per-position sums");
    int n_on = cached_hashes(e, h_on);
    EXPECT_EQ_INT(n_on, n_off);
    EXPECT(n_on == n_off && !memcmp(h_on, h_off, (size_t)n_on * sizeof(uint64_t)), "prefix cache contents differ");

    size_t block_bytes = engine_info(e)->kv_cache_bytes / (size_t)engine_info(e)->num_blocks;
    engine_destroy(e);

    // all at once, a budget of 24 tokens (proposals clipped) and a pool of 16 blocks (preemption)
    EngineConfig c2 = spec_cfg(24, 8, 16 * block_bytes, kind);
    e = engine_open(&c2);
    ASSERT(e);
    memcpy(got, want, sizeof got);
    jobs_run_together(e, got, NSPEC);
    jobs_compare(want, got, NSPEC, "speculative, together");
    expect_pool_whole(e, &st);
    EXPECT(st.num_preemptions > 0, "no preemption with 16 blocks");
    EXPECT(st.spec_drafts > 0, "no drafts");
    char err[ERR_MAX];
    EXPECT(sched_check(&e->sched, err) == SL_OK, "%s", err);
    engine_destroy(e);
}

static void test_identity(void) { spec_identity(NGRAM); }
static void test_identity_draft(void) { spec_identity(DRAFT); }

// The default model as its own draft: every greedy proposal is the target's own next token (the
// kernels are batch invariant, so the draft's one-row logits are the target's verification rows),
// so every proposal is accepted while nothing stops the request early. That holds only if the
// draft's cache has the right KV wherever the draft reads: after preemption and recompute (all at
// once on 20 blocks) and on prefix-cache hits (the same jobs again, alone).
static void test_draft_accepts_all(void) {
    EngineConfig c = spec_cfg(512, 4, 16 << 20, DRAFT);
    Engine *e = engine_open(&c);
    ASSERT(e);
    size_t block_bytes = engine_info(e)->kv_cache_bytes / (size_t)engine_info(e)->num_blocks;
    static Job jobs[NSPEC];
    spec_jobs(jobs, engine_tokenizer(e));
    engine_destroy(e);
    c = spec_cfg(512, 4, 20 * block_bytes, DRAFT);
    c.cpu_activations = K_ACT_AUTO; // the server's default: int8 on the amx path where there is one
    e = engine_open(&c);
    ASSERT(e);
    Job greedy[4], again[4];
    int n = 0;
    for (int i = 0; i < NSPEC; i++) {
        if (i % 4 == 1 || i % 4 == 3) continue; // sampled; min_tokens' bans and stop strings
        greedy[n] = jobs[i];
        greedy[n].params.ignore_eos = true;
        again[n] = greedy[n];
        n++;
    }
    jobs_run_together(e, greedy, n);
    EngineStats st;
    engine_stats(e, &st);
    EXPECT(st.num_preemptions > 0, "no preemption with 20 blocks");
    jobs_run_alone(e, again, n);
    jobs_compare(greedy, again, n, "draft: together vs alone");
    expect_pool_whole(e, &st);
    EXPECT(st.prefix_cache_hits > 0, "no prefix-cache hit");
    EXPECT(st.spec_draft_tokens > 40 && st.spec_accepted_tokens == st.spec_draft_tokens,
           "%llu of %llu proposals accepted", (unsigned long long)st.spec_accepted_tokens,
           (unsigned long long)st.spec_draft_tokens);
    engine_destroy(e);
}

// Tensor parallelism: the draft runs whole on rank 0's thread, after the ranks' forward; the
// tokens are those of the same ranks without speculation.
static void test_draft_tp(void) {
    static Job jobs[NSPEC], got[2][4];
    uint64_t accepted = 0; // (2 threads over 3 ranks: one each)
    for (int k = 0; k < 2; k++) {
        EngineConfig c = spec_cfg(512, 4, 32 << 20, k ? DRAFT : OFF);
        c.tensor_parallel_size = 3;
        c.cpu_activations = K_ACT_AUTO;
        Engine *e = engine_open(&c);
        ASSERT(e);
        spec_jobs(jobs, engine_tokenizer(e));
        memcpy(got[k], jobs, sizeof got[k]);
        jobs_run_together(e, got[k], 4);
        EngineStats st;
        expect_pool_whole(e, &st);
        accepted = st.spec_accepted_tokens;
        engine_destroy(e);
    }
    jobs_compare(got[0], got[1], 4, "draft model, tensor parallel 3");
    EXPECT(accepted > 0, "no proposal accepted");
}

// An abort while the request speculates: it ends at once and holds no block afterwards.
static void spec_abort(SpecKind kind) {
    EngineConfig c = spec_cfg(64, 4, 16 << 20, kind);
    Engine *e = engine_open(&c);
    ASSERT(e);
    static Job jobs[NSPEC];
    spec_jobs(jobs, engine_tokenizer(e));
    Job j = jobs[0]; // greedy, copying
    j.params.max_tokens = 120;
    j.params.ignore_eos = true;
    EngineRequest *r;
    ASSERT(job_submit(e, &j, &r));
    EngineStats st;
    EngineOutput o;
    double t0 = time_now_s();
    do {
        engine_request_wait(r, 0.01);
        engine_request_take(r, &o);
        engine_stats(e, &st);
    } while (st.spec_drafts < 3 && !o.finished && time_now_s() - t0 < 60);
    EXPECT(st.spec_drafts >= 3, "%llu drafts", (unsigned long long)st.spec_drafts);
    engine_abort(e, engine_request_id(r));
    do {
        engine_request_wait(r, 5.0);
        engine_request_take(r, &o);
    } while (!o.finished);
    EXPECT_EQ_INT(o.choices[0].finish, ENGINE_FINISH_ABORT);
    EXPECT(o.completion_tokens < 120, "%d tokens", o.completion_tokens);
    engine_request_release(r);
    expect_pool_whole(e, &st);
    engine_destroy(e);
}

static void test_abort(void) { spec_abort(NGRAM); }
static void test_abort_draft(void) { spec_abort(DRAFT); }

// ----------------------------------------------------------------------------
// the scheduler alone: 100 mixed requests with and without proposals

#define SIM_N 100

// The "model": the token after tokens[0..pos) depends on the two before it only, over 6 ids, so
// runs repeat and the proposals below are often right.
static int32_t sim_next(const int32_t *t, int pos) {
    return (int32_t)((t[pos - 1] * 7 + t[pos - 2] * 3 + pos % 2) % 6);
}

static uint64_t sim_rng = 1;
static uint32_t sim_rand(void) {
    sim_rng = sim_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(sim_rng >> 33);
}

// Runs SIM_N requests (prompts sharing prefixes, max_tokens 1..40, n = 2 for every seventh) to the
// end; with spec, each decoding sequence proposes up to 4 tokens, each wrong with probability
// 1/4, and the scheduler's invariants are checked around every step. Returns the pool's cached
// block hashes (sorted) in hashes, their count as the result; out_tokens gets every sequence's
// final tokens (parent and children) for comparison.
static int sim_spec_planned, sim_spec_accepted; // proposals the scheduler planned, and accepted

static int sim_run(bool spec, int num_blocks, int32_t (*out_tokens)[2][160], int *preemptions, uint64_t *hashes) {
    SchedConfig cfg = {.max_num_batched_tokens = 48, .max_num_seqs = 8, .block_size = 4, .num_blocks = num_blocks,
                       .enable_prefix_caching = true, .max_model_len = 120};
    Scheduler sc;
    char err[ERR_MAX];
    CHECK(sched_init(&sc, &cfg, err) == SL_OK, "%s", err);
    static Sequence seqs[SIM_N];
    sim_rng = 42;
    for (int i = 0; i < SIM_N; i++) {
        int32_t prompt[64];
        int n = 6 + (int)(sim_rand() % 40);
        for (int k = 0; k < n; k++) prompt[k] = k < 24 ? (int32_t)((i % 3) * 5 + k % 4) : (int32_t)(sim_rand() % 6);
        SeqParams sp = {.max_tokens = 1 + (int)(sim_rand() % 40), .n = i % 7 == 0 ? 2 : 1};
        seq_init(&seqs[i], i + 1, prompt, n, &sp, cfg.max_model_len, cfg.block_size);
        CHECK(sched_add(&sc, &seqs[i], err) == SL_OK, "%s", err);
    }
    SchedOutput out;
    int32_t sampled[16], truth[SPEC_MAX_TOKENS + 1];
    while (sched_has_work(&sc)) {
        for (int i = 0; spec && i < sc.num_running; i++) {
            Sequence *q = sc.running[i];
            int room = q->max_tokens_total - q->num_tokens - 1;
            if (q->num_tokens - q->num_computed_tokens != 1 || !q->forked || room <= 0) continue;
            int k = MIN(4, room);
            for (int j = 0; j < k; j++) {
                int pos = q->num_tokens + j;
                int32_t t = sim_next(q->tokens, pos);
                q->tokens[pos] = sim_rand() % 4 == 0 ? (t + 1) % 6 : t; // later ones build on the guesses
            }
            q->num_spec = k;
        }
        sched_schedule(&sc, &out);
        if (sched_check(&sc, err) != SL_OK) TEST_FAIL_("planned step: %s", err);
        for (int e = 0; e < out.num_entries; e++) {
            SchedEntry *en = &out.entries[e];
            if (en->num_samples == 0) continue;
            Sequence *q = en->seq;
            if (en->num_spec == 0) {
                for (int j = 0; j < en->num_samples; j++) sampled[en->sample_row + j] = sim_next(q->tokens, q->num_tokens);
                continue;
            }
            // verification: the true token at each row, given the proposals before it
            int a = 0;
            for (;; a++) {
                truth[a] = sim_next(q->tokens, q->num_tokens + a);
                if (a == en->num_spec || truth[a] != q->tokens[q->num_tokens + a]) break;
            }
            en->num_accepted = a;
            sampled[en->sample_row] = truth[a];
            sim_spec_planned += en->num_spec;
            sim_spec_accepted += a;
        }
        sched_update(&sc, &out, sampled, NULL);
        if (sched_check(&sc, err) != SL_OK) TEST_FAIL_("after the step: %s", err);
    }
    const BlockPool *p = &sc.pool;
    EXPECT_EQ_INT(blockpool_num_available(p), p->num_blocks);
    int n = 0;
    for (int b = 0; b < p->num_blocks; b++)
        if (p->cached[b]) hashes[n++] = p->hash[b];
    for (int i = 1; i < n; i++)
        for (int k = i; k > 0 && hashes[k - 1] > hashes[k]; k--) {
            uint64_t t = hashes[k];
            hashes[k] = hashes[k - 1];
            hashes[k - 1] = t;
        }
    for (int i = 0; i < SIM_N; i++) {
        for (int c = 0; c < seqs[i].n_samples; c++) {
            const Sequence *q = c == 0 ? &seqs[i] : &seqs[i].children[c - 1];
            EXPECT(q->status == SEQ_FINISHED && q->finish_reason == SEQ_FINISH_LENGTH, "request %d", i);
            memset(out_tokens[i][c], 0xff, sizeof out_tokens[i][c]);
            memcpy(out_tokens[i][c], q->tokens, (size_t)q->num_tokens * sizeof(int32_t));
        }
        seq_free(&seqs[i]);
    }
    *preemptions = (int)sc.num_preemptions;
    sched_free(&sc);
    return n;
}

// Rollback: the same tokens, the pool whole afterwards, and (with a pool that never evicts) the
// same prefix-cache contents as without speculation; with a small pool, preemption too.
static void test_rollback_sim(void) {
    static int32_t t0[SIM_N][2][160], t1[SIM_N][2][160];
    static uint64_t h0[2048], h1[2048];
    int p0, p1;
    int n0 = sim_run(false, 2048, t0, &p0, h0);
    sim_spec_planned = sim_spec_accepted = 0;
    int n1 = sim_run(true, 2048, t1, &p1, h1);
    EXPECT(sim_spec_accepted > 200 && sim_spec_planned - sim_spec_accepted > 200, "%d of %d proposals accepted",
           sim_spec_accepted, sim_spec_planned);
    EXPECT(n0 > 100 && n0 == n1 && !memcmp(h0, h1, (size_t)n0 * sizeof(uint64_t)), "prefix cache: %d vs %d blocks", n0,
           n1);
    EXPECT(!memcmp(t0, t1, sizeof t0), "tokens differ with speculation (large pool)");
    sim_run(false, 40, t0, &p0, h0);
    sim_run(true, 40, t1, &p1, h1);
    EXPECT(p0 > 0 && p1 > 0, "no preemption in a 40-block pool (%d, %d)", p0, p1);
    EXPECT(!memcmp(t0, t1, sizeof t0), "tokens differ with speculation (small pool)");
}

// A proposal never evicts a prefix-cache block: once every spare block is cached, a decode's
// proposals stop at the end of its last block, and the cache keeps what it would hold without them.
static void test_spec_no_eviction(void) {
    SchedConfig cfg = {.max_num_batched_tokens = 64, .max_num_seqs = 4, .block_size = 4, .num_blocks = 5,
                       .enable_prefix_caching = true, .max_model_len = 20};
    Scheduler sc;
    char err[ERR_MAX];
    CHECK(sched_init(&sc, &cfg, err) == SL_OK, "%s", err);
    static Sequence r1, r2;
    int32_t p1[8] = {1, 2, 3, 4, 5, 6, 7, 8}, p2[12] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 9, 8, 7}, sampled[4] = {0};
    SchedOutput out;
    // r1: an 8-token prompt and one token: its 2 full blocks end in the cache, 3 blocks stay free
    SeqParams sp1 = {.max_tokens = 1, .n = 1}, sp2 = {.max_tokens = 8, .n = 1};
    seq_init(&r1, 1, p1, 8, &sp1, cfg.max_model_len, cfg.block_size);
    CHECK(sched_add(&sc, &r1, err) == SL_OK, "%s", err);
    sched_schedule(&sc, &out);
    sched_update(&sc, &out, sampled, NULL);
    EXPECT(r1.status == SEQ_FINISHED, "r1 finished");
    // r2: a 12-token prompt takes the 3 free blocks; its first decode token evicts one cached block
    seq_init(&r2, 2, p2, 12, &sp2, cfg.max_model_len, cfg.block_size);
    CHECK(sched_add(&sc, &r2, err) == SL_OK, "%s", err);
    for (int step = 0; step < 2; step++) {
        sched_schedule(&sc, &out);
        sched_update(&sc, &out, sampled, NULL);
    }
    EXPECT(r2.num_blocks == 4 && r2.num_tokens == 14 && sc.pool.evictions == 1, "r2: %d blocks, %d tokens, %llu "
           "evictions", r2.num_blocks, r2.num_tokens, (unsigned long long)sc.pool.evictions);
    // 4 proposals at positions 14..17: 16 and 17 would need a fifth block, which only the cache has
    for (int j = 0; j < 4; j++) r2.tokens[r2.num_tokens + j] = 1;
    r2.num_spec = 4;
    sched_schedule(&sc, &out);
    EXPECT(out.num_entries == 1 && out.entries[0].num_spec == 2, "%d proposals planned, want 2 (to the block's end)",
           out.num_entries ? out.entries[0].num_spec : -1);
    EXPECT(sc.pool.evictions == 1 && r2.num_blocks == 4, "a proposal evicted a cached block");
    out.entries[0].num_accepted = 0;
    sched_update(&sc, &out, sampled, NULL);
    while (sched_has_work(&sc)) {
        sched_schedule(&sc, &out);
        sched_update(&sc, &out, sampled, NULL);
    }
    EXPECT(r2.status == SEQ_FINISHED && sched_check(&sc, err) == SL_OK, "r2 did not finish cleanly: %s", err);
    sched_free(&sc);
    seq_free(&r1), seq_free(&r2);
}

// disable_by_batch_size: four requests of the same length, submitted together, speculate at 8 in
// every step and at 2 only in the few steps where one runs alone (the first may start a step or
// two before the others reach the engine, and then ends that much earlier than the last); their
// tokens are the same either way.
// The cost line through decode steps' times, and the proposal length it leads to.
static void test_cost_model(void) {
    SpecCost c = {0};
    double t1 = 0, per_row = 0;
    for (int i = 0; i < 40; i++) spec_cost_add(&c, 5, 0.012); // every step 5 rows: no slope to fit
    EXPECT(!spec_cost_line(&c, &t1, &per_row), "a line through one row count");
    // then steps of 1..5 rows on a line: the fit finds it, the old steps all but decayed away
    for (int i = 0; i < 200; i++) spec_cost_add(&c, 1 + i % 5, 0.008 + 0.002 * (i % 5));
    EXPECT(spec_cost_line(&c, &t1, &per_row), "no line");
    EXPECT(fabs(t1 - 0.008) < 2e-5 && fabs(per_row - 0.002) < 2e-5, "t1 %g, per row %g", t1, per_row);
    SpecCost early = {0};
    for (int i = 0; i < 4; i++) spec_cost_add(&early, 1 + i, 0.01 * (1 + i));
    EXPECT(!spec_cost_line(&early, &t1, &per_row), "a line from 4 steps");
    // a, t1 (ms), per row (ms), bound -> length
    static const struct {
        double a, t1, c;
        int lmax, want;
    } cases[] = {
        {1.0, 8.0, 0.0, 4, 4},  // free rows, every proposal accepted: all of them
        {0.67, 8.0, 0.3, 4, 4}, // rows cheap against the step (AMX): all
        {0.67, 8.3, 2.8, 4, 2}, // 1.50 / 1.52 / 1.45 tokens per 10 ms at 1 / 2 / 3
        {0.67, 8.3, 2.8, 1, 1}, // the bound
        {0.2, 8.3, 2.8, 4, 0},  // a row costs more than it brings
        {0.5, 8.3, 4.0, 4, 1},  // 1.22 / 1.20 / 1.07 tokens per 10 ms at 1 / 0 / 2
        {0.95, 4.0, 1.6, 4, 4}, // copying: high acceptance pays for long runs
        {0.0, 8.0, 0.0, 4, 0},  // nothing accepted, even free rows bring nothing
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        int got = spec_best_len(cases[i].a, cases[i].t1, cases[i].c, cases[i].lmax);
        EXPECT(got == cases[i].want, "case %zu: length %d, want %d", i, got, cases[i].want);
    }
}

static void test_disable_by_batch_size(void) {
    static Job jobs[NSPEC], got[2][4];
    uint64_t drafts[2];
    for (int k = 0; k < 2; k++) {
        EngineConfig c = spec_cfg(512, 4, 16 << 20, NGRAM);
        c.spec.disable_by_batch_size = k == 0 ? 2 : 8;
        Engine *e = engine_open(&c);
        ASSERT(e);
        spec_jobs(jobs, engine_tokenizer(e));
        for (int i = 0; i < 4; i++) {
            got[k][i] = jobs[0]; // greedy, copying; all the same length
            got[k][i].params.ignore_eos = true;
        }
        jobs_run_together(e, got[k], 4);
        EngineStats st;
        expect_pool_whole(e, &st);
        drafts[k] = st.spec_drafts;
        engine_destroy(e);
    }
    EXPECT(drafts[1] >= 8 && drafts[0] * 2 < drafts[1], "drafts %llu at 2, %llu at 8", (unsigned long long)drafts[0],
           (unsigned long long)drafts[1]);
    jobs_compare(got[0], got[1], 4, "disable_by_batch_size 2 vs 8");
}

int main(int argc, char **argv) {
    log_level = LOG_WARN;
    RUN(test_config);
    RUN(test_ngram);
    RUN(test_rollback_sim);
    RUN(test_spec_no_eviction);
    RUN(test_cost_model);
    if (!corpus_load()) return test_summary();
    RUN(test_reference);
    RUN(test_identity);
    RUN(test_identity_draft);
    RUN(test_draft_accepts_all);
    RUN(test_draft_tp);
    RUN(test_abort);
    RUN(test_abort_draft);
    RUN(test_disable_by_batch_size);
    return test_summary();
}
