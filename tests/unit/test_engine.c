// test_engine.c: the engine through engine.h on the real default model (CPU).
//
// Reference outputs come from each request run alone on an engine without prefix caching and
// with a token budget that holds every prompt whole. Every other configuration must reproduce
// them token for token: all requests at once (greedy and seeded sampling mixed, prompts sharing
// long prefixes, a small budget that chunks prefills), a pool too small for the running set
// (preemption and recompute), a budget smaller than one prompt, the prefix cache, and n > 1
// (copy-on-write of the shared partial block). That rests on the kernels computing each row
// independently of the rest of the batch (kernels.h's promise); a mismatch names the request.
//
// Generations are short (8 tokens) to keep the binary fast; the model is 135M parameters.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/common.h"
#include "engine/engine.h"
#include "tests/unit/test.h"

#define GEN 8        // tokens per invariance request
#define NJOBS 16
#define MAX_OUT 64
#define BS 16

static const char *CORPUS =
    "The river starts in the hills above the town, where snow melts into a hundred small streams. "
    "By the time it reaches the old mill it is wide enough for boats, and in spring it floods the "
    "lower fields. The miller's family kept records of every flood for two hundred years: the date, "
    "the height of the water on the stone wall, and what was lost. Reading them today, you can see "
    "the climate change slowly, one line at a time. In the early years the floods came in April; "
    "later they came in March, and in the last decades sometimes in February. The sluice gates were "
    "rebuilt three times. Each time the engineers made them taller, and each time the river found a "
    "way around them. The current owners turned the mill into a small museum. Visitors walk along "
    "the wall and look for the marks, which are cut into the stone with a chisel and filled with red "
    "paint. Children like to stand next to the highest one, from the great flood of the winter when "
    "the bridge was swept away, and measure themselves against it. Most of them do not reach it. "
    "Outside, the river runs quietly now, brown and slow, past the gardens and under the new bridge. "
    "In the evenings fishermen sit on the bank with thermos flasks and long rods, and talk about the "
    "fish they caught when they were young, which were always larger than anything in the water today. "
    "A heron stands in the shallows near the weir, perfectly still, until it strikes. Further down, "
    "the river meets the canal that was dug to carry coal to the city, and for a mile the two run side "
    "by side, one wild and one straight, separated only by a narrow towpath where people walk their dogs.";

static int32_t corpus_ids[1024];
static int n_corpus;

// A request and what it produced.
typedef struct {
    int32_t prompt[400];
    int n_prompt;
    EngineParams params;
    int32_t out[MAX_OUT];
    int n_out;
    char text[2048];
    size_t text_len;
    EngineFinish finish;
    int cached, completion, stop_str;
    int32_t stop_token;
    uint64_t finish_step;
} Job;

static EngineConfig cfg_make(int budget, int max_seqs, bool prefix_caching, size_t kv_mem) {
    EngineConfig c;
    engine_config_defaults(&c);
    c.max_num_batched_tokens = budget;
    c.max_num_seqs = max_seqs;
    c.block_size = BS;
    c.enable_prefix_caching = prefix_caching;
    c.max_model_len = 256;
    c.kv_cache_memory = kv_mem;
    c.threads = 2;
    return c;
}

static Engine *engine_open(const EngineConfig *c) {
    char err[ERR_MAX];
    Engine *e = NULL;
    if (engine_create(&e, c, TEST_MODEL_PATH, err) != SL_OK) {
        TEST_FAIL_("engine_create: %s", err);
        return NULL;
    }
    return e;
}

static bool job_submit(Engine *e, Job *j, EngineRequest **r) {
    char err[ERR_MAX];
    int rc = engine_submit(e, j->prompt, j->n_prompt, &j->params, NULL, NULL, r, err);
    if (rc != SL_OK) TEST_FAIL_("engine_submit: %s", err);
    return rc == SL_OK;
}

// Drains r into j (choice `index`) until it finishes, then releases it.
static void job_collect(Job *j, EngineRequest *r, int index) {
    j->n_out = 0;
    j->text_len = 0;
    EngineOutput o;
    for (double t0 = time_now_s(); time_now_s() - t0 < 600;) { // a hang fails, slowly
        engine_request_wait(r, 5.0);
        engine_request_take(r, &o);
        const EngineChoice *c = &o.choices[index];
        for (int i = 0; i < c->n_tokens && j->n_out < MAX_OUT; i++) j->out[j->n_out++] = c->tokens[i];
        if (j->text_len + c->text_len < sizeof(j->text)) {
            memcpy(j->text + j->text_len, c->text, c->text_len);
            j->text_len += c->text_len;
        }
        if (o.finished) break;
    }
    j->text[j->text_len] = '\0';
    const EngineChoice *c = &o.choices[index];
    j->finish = c->finish;
    j->stop_str = c->stop_str;
    j->stop_token = c->stop_token;
    j->cached = o.cached_tokens;
    j->completion = o.completion_tokens;
    j->finish_step = o.finish_step;
    EXPECT(o.finished, "request did not finish");
    EXPECT_EQ_INT(c->num_tokens, j->n_out);
    engine_request_release(r);
}

static void jobs_run_alone(Engine *e, Job *jobs, int n) {
    for (int i = 0; i < n; i++) {
        EngineRequest *r;
        if (job_submit(e, &jobs[i], &r)) job_collect(&jobs[i], r, 0);
    }
}

static void jobs_run_together(Engine *e, Job *jobs, int n) {
    EngineRequest *rs[64];
    CHECK(n <= 64);
    for (int i = 0; i < n; i++)
        if (!job_submit(e, &jobs[i], &rs[i])) rs[i] = NULL;
    for (int i = 0; i < n; i++)
        if (rs[i]) job_collect(&jobs[i], rs[i], 0);
}

static int jobs_compare(const Job *want, const Job *got, int n, const char *what) {
    int bad = 0;
    for (int i = 0; i < n; i++) {
        bool same = want[i].n_out == got[i].n_out && want[i].finish == got[i].finish &&
                    memcmp(want[i].out, got[i].out, (size_t)want[i].n_out * sizeof(int32_t)) == 0 &&
                    strcmp(want[i].text, got[i].text) == 0;
        if (!same) {
            int k = 0;
            while (k < want[i].n_out && k < got[i].n_out && want[i].out[k] == got[i].out[k]) k++;
            TEST_FAIL_("%s: request %d (prompt %d tokens) differs at output token %d (%d vs %d tokens, finish %s vs %s)",
                       what, i, want[i].n_prompt, k, want[i].n_out, got[i].n_out, engine_finish_name(want[i].finish),
                       engine_finish_name(got[i].finish));
            bad++;
        }
    }
    return bad;
}

// Waits until the engine is idle and checks that every KV block is free or idle in the cache.
static void expect_pool_whole(Engine *e, EngineStats *st) {
    double t0 = time_now_s();
    do {
        engine_stats(e, st);
        if (st->num_running == 0 && st->num_waiting == 0 && st->num_free_blocks == st->num_blocks) break;
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    } while (time_now_s() - t0 < 10);
    EXPECT_EQ_INT(st->num_running, 0);
    EXPECT_EQ_INT(st->num_waiting, 0);
    EXPECT_EQ_INT(st->num_free_blocks, st->num_blocks);
}

// ----------------------------------------------------------------------------
// the workload: 16 prompts, two groups of four sharing a long prefix, lengths 3..~120

static Job ref_greedy[NJOBS], ref_seeded[NJOBS];
static bool refs_ready;

static void jobs_make(Job *jobs, bool seeded) {
    for (int i = 0; i < NJOBS; i++) {
        Job *j = &jobs[i];
        memset(j, 0, sizeof(*j));
        int n = 0;
        // jobs 0-3 share the corpus' first 80 tokens, 4-7 its tokens 200..247; the rest are unique
        if (i < 4) for (int k = 0; k < 80; k++) j->prompt[n++] = corpus_ids[k];
        else if (i < 8) for (int k = 0; k < 48; k++) j->prompt[n++] = corpus_ids[200 + k];
        int tail = 3 + (i * 37) % 41, off = 100 + i * 13;
        for (int k = 0; k < tail; k++) j->prompt[n++] = corpus_ids[(off + k) % n_corpus];
        j->n_prompt = n;
        engine_params_defaults(&j->params);
        j->params.max_tokens = GEN;
        j->params.ignore_eos = true; // every request makes GEN tokens
        if (seeded) {
            j->params.sampling.temperature = 0.9f;
            j->params.sampling.top_p = 0.95f;
            j->params.sampling.seed = 1000 + (uint64_t)i;
            j->params.sampling.has_seed = true;
        } else {
            j->params.sampling.temperature = 0.0f;
        }
    }
}

// Each request alone, no prefix caching, every prompt prefilled whole.
static void refs_make(void) {
    if (refs_ready) return;
    jobs_make(ref_greedy, false);
    jobs_make(ref_seeded, true);
    EngineConfig c = cfg_make(512, 4, false, 32 << 20);
    Engine *e = engine_open(&c);
    if (!e) return;
    jobs_run_alone(e, ref_greedy, NJOBS);
    jobs_run_alone(e, ref_seeded, NJOBS);
    engine_destroy(e);
    for (int i = 0; i < NJOBS; i++) {
        EXPECT_EQ_INT(ref_greedy[i].n_out, GEN);
        EXPECT_EQ_INT(ref_seeded[i].n_out, GEN);
    }
    // the seeded ones really sample: some differ from greedy
    int differ = 0;
    for (int i = 0; i < NJOBS; i++) differ += memcmp(ref_greedy[i].out, ref_seeded[i].out, sizeof(int32_t) * GEN) != 0;
    EXPECT(differ >= NJOBS / 2, "only %d seeded requests differ from greedy", differ);
    refs_ready = true;
}

// ----------------------------------------------------------------------------
// tests

// Configuration errors are reported, not fatal, and leave nothing behind.
static void test_create_errors(void) {
    struct {
        const char *path;
        int max_model_len;
        size_t kv_mem;
        const char *msg;
    } cases[] = {
        {TEST_DATA_DIR "/no-such-model.gguf", 256, 16 << 20, "no-such-model.gguf"},
        {TEST_MODEL_PATH, 1 << 20, 16 << 20, "exceeds the model's context length"},
        {TEST_MODEL_PATH, 4096, 4 << 20, "use --max-model-len 176 or less, or --kv-cache-memory 90.00 MiB or more"},
        {TEST_MODEL_PATH, 256, 1000, "holds no KV block"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        EngineConfig c = cfg_make(64, 4, true, cases[i].kv_mem);
        c.max_model_len = cases[i].max_model_len;
        char err[ERR_MAX] = "";
        Engine *e = (Engine *)1;
        EXPECT_EQ_INT(engine_create(&e, &c, cases[i].path, err), SL_ERR);
        EXPECT(e == NULL, "case %zu", i);
        EXPECT(strstr(err, cases[i].msg) != NULL, "case %zu: \"%s\"", i, err);
    }
}

static void test_submit_errors(void) {
    EngineConfig c = cfg_make(64, 4, true, 16 << 20);
    c.max_model_len = 128;
    Engine *e = engine_open(&c);
    ASSERT(e);
    EXPECT_EQ_INT(engine_info(e)->max_model_len, 128);
    int32_t prompt[200];
    for (int i = 0; i < 200; i++) prompt[i] = corpus_ids[i];
    struct {
        int n_prompt, max_tokens, min_tokens, n, rc;
        float temperature;
        int32_t bad_token;
        const char *stop, *msg;
    } cases[] = {
        {128, 0, 0, 1, ENGINE_ERR_CONTEXT, 0, -1, NULL, "maximum context length is 128 tokens"},
        {200, 0, 0, 1, ENGINE_ERR_CONTEXT, 0, -1, NULL, "your request has 200 input tokens"},
        {100, 29, 0, 1, ENGINE_ERR_CONTEXT, 0, -1, NULL, "you requested 129 tokens (100 in the input, 29 in"},
        {0, 0, 0, 1, SL_ERR, 0, -1, NULL, "empty"},
        {10, 0, 0, 5, SL_ERR, 0, -1, NULL, "'n'"},
        {10, 0, 0, 1, SL_ERR, 3.0f, -1, NULL, "temperature"},
        {10, 4, 5, 1, SL_ERR, 0, -1, NULL, "min_tokens"},
        {10, 0, 0, 1, SL_ERR, 0, 49152, NULL, "vocabulary"},
        {10, 0, 0, 1, SL_ERR, 0, -1, "", "stop"},
        {127, 0, 0, 1, SL_OK, 0, -1, NULL, ""},
        {100, 28, 0, 1, SL_OK, 0, -1, NULL, ""},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        EngineParams p;
        engine_params_defaults(&p);
        p.max_tokens = cases[i].max_tokens;
        p.min_tokens = cases[i].min_tokens;
        p.n = cases[i].n;
        p.sampling.temperature = cases[i].temperature;
        const char *stops[1] = {cases[i].stop};
        if (cases[i].stop) {
            p.stop = stops;
            p.n_stop = 1;
        }
        int32_t saved = prompt[3];
        if (cases[i].bad_token >= 0) prompt[3] = cases[i].bad_token;
        char err[ERR_MAX] = "";
        EngineRequest *r = NULL;
        int rc = engine_submit(e, prompt, cases[i].n_prompt, &p, NULL, NULL, &r, err);
        prompt[3] = saved;
        EXPECT(rc == cases[i].rc, "case %zu: rc %d, want %d (%s)", i, rc, cases[i].rc, err);
        EXPECT(rc == SL_OK || strstr(err, cases[i].msg), "case %zu: message \"%s\"", i, err);
        EXPECT((r != NULL) == (rc == SL_OK), "case %zu", i);
        if (r) engine_request_release(r); // aborts it
    }
    EngineStats st;
    expect_pool_whole(e, &st);
    EXPECT_EQ_INT(st.requests_finished[ENGINE_FINISH_ABORT], 2);
    engine_destroy(e);
}

// All 32 requests (16 greedy, 16 seeded) at once, with a budget of 48 tokens so prefills are
// chunked and share steps with decodes: every one makes exactly its solo tokens and text.
static void test_batch_invariance(void) {
    refs_make();
    ASSERT(refs_ready);
    static Job jobs[2 * NJOBS];
    jobs_make(jobs, false);
    jobs_make(jobs + NJOBS, true);
    EngineConfig c = cfg_make(48, 32, true, 64 << 20);
    Engine *e = engine_open(&c);
    ASSERT(e);
    jobs_run_together(e, jobs, 2 * NJOBS);
    jobs_compare(ref_greedy, jobs, NJOBS, "greedy, together");
    jobs_compare(ref_seeded, jobs + NJOBS, NJOBS, "seeded, together");
    EngineStats st;
    expect_pool_whole(e, &st);
    EXPECT_EQ_INT(st.generation_tokens, 2 * NJOBS * GEN);
    EXPECT(st.prefix_cache_hits > 0, "no prefix-cache hit among requests sharing 48-80 token prefixes");
    engine_destroy(e);
}

// A prompt four times the token budget is prefilled in chunks and makes the same tokens.
static void test_chunked_prefill(void) {
    refs_make();
    ASSERT(refs_ready);
    static Job jobs[NJOBS];
    jobs_make(jobs, false); // jobs 0 and 1 of the greedy set have prompts of 83 and 120 tokens
    EngineConfig c = cfg_make(24, 4, false, 16 << 20);
    Engine *e = engine_open(&c);
    ASSERT(e);
    EXPECT(jobs[1].n_prompt > 4 * 24, "prompt of %d tokens", jobs[1].n_prompt);
    jobs_run_alone(e, jobs, 2);
    jobs_compare(ref_greedy, jobs, 2, "chunked prefill");
    EngineStats st;
    engine_stats(e, &st);
    EXPECT(st.num_steps >= (uint64_t)(jobs[0].n_prompt + jobs[1].n_prompt) / 24, "%llu steps",
           (unsigned long long)st.num_steps);
    engine_destroy(e);
}

// Eight requests with one-block prompts, all admitted at once into a pool of 9 blocks: each
// needs a second block at its 17th token, so the scheduler preempts and recomputes. Outputs equal
// those made alone (greedy and seeded), and afterwards every block is back.
static void test_preemption(void) {
    static Job jobs[8], want[8];
    for (int i = 0; i < 8; i++) {
        Job *j = &want[i];
        memset(j, 0, sizeof(*j));
        j->n_prompt = 10 + i % 6;
        for (int k = 0; k < j->n_prompt; k++) j->prompt[k] = corpus_ids[(250 + 17 * i + k) % n_corpus];
        engine_params_defaults(&j->params);
        j->params.max_tokens = GEN;
        j->params.ignore_eos = true;
        j->params.sampling.temperature = i % 2 ? 0.8f : 0.0f;
        j->params.sampling.seed = 5 + (uint64_t)i;
        j->params.sampling.has_seed = true;
        jobs[i] = *j;
    }
    EngineConfig c = cfg_make(512, 8, false, 16 << 20);
    c.max_model_len = 128;
    Engine *e = engine_open(&c);
    ASSERT(e);
    jobs_run_alone(e, want, 8);
    size_t block_bytes = engine_info(e)->kv_cache_bytes / (size_t)engine_info(e)->num_blocks;
    engine_destroy(e);

    c.enable_prefix_caching = true;
    c.kv_cache_memory = 9 * block_bytes;
    e = engine_open(&c);
    ASSERT(e);
    EXPECT_EQ_INT(engine_info(e)->num_blocks, 9);
    jobs_run_together(e, jobs, 8);
    jobs_compare(want, jobs, 8, "small pool");
    EngineStats st;
    expect_pool_whole(e, &st);
    EXPECT(st.num_preemptions >= 2, "%llu preemptions", (unsigned long long)st.num_preemptions);
    fprintf(stderr, "     %llu preemptions\n", (unsigned long long)st.num_preemptions);
    engine_destroy(e);
}

// A request sharing a 200-token prefix with an earlier one reuses 12 cached blocks and makes the
// same tokens as with the cache off.
static void test_prefix_cache(void) {
    Job a, b[2];
    memset(&a, 0, sizeof(a));
    for (int i = 0; i < 200; i++) a.prompt[i] = corpus_ids[i];
    a.n_prompt = 200;
    engine_params_defaults(&a.params);
    a.params.max_tokens = 1;
    a.params.sampling.temperature = 0;
    for (int k = 0; k < 2; k++) {
        b[k] = a;
        for (int i = 0; i < 20; i++) b[k].prompt[200 + i] = corpus_ids[210 + i];
        b[k].n_prompt = 220;
        b[k].params.max_tokens = GEN;
        b[k].params.ignore_eos = true;
    }
    for (int k = 0; k < 2; k++) {
        EngineConfig c = cfg_make(512, 4, k == 1, 32 << 20);
        Engine *e = engine_open(&c);
        ASSERT(e);
        Job aa = a;
        jobs_run_alone(e, &aa, 1);
        jobs_run_alone(e, &b[k], 1);
        EXPECT_EQ_INT(aa.cached, 0);
        EngineStats st;
        engine_stats(e, &st);
        if (k == 1) {
            EXPECT(b[k].cached >= 192, "cached %d", b[k].cached);
            EXPECT(st.prefix_cache_hits >= 192, "hits %llu", (unsigned long long)st.prefix_cache_hits);
            EXPECT_EQ_INT(st.prefix_cache_queries, 420);
        } else {
            EXPECT_EQ_INT(b[k].cached, 0);
        }
        engine_destroy(e);
    }
    jobs_compare(&b[0], &b[1], 1, "prefix cache on vs off");
}

// Aborts land between steps: a request aborted mid-prefill or mid-decode finishes with "abort"
// in the step during which the abort came (or the next, when it came between two steps) and
// holds no block afterwards.
static void test_abort(void) {
    EngineConfig c = cfg_make(16, 4, true, 16 << 20);
    Engine *e = engine_open(&c);
    ASSERT(e);
    for (int mode = 0; mode < 2; mode++) { // 0: mid-prefill, 1: mid-decode
        Job j;
        memset(&j, 0, sizeof(j));
        for (int i = 0; i < 200; i++) j.prompt[i] = corpus_ids[(i * 7 + mode) % n_corpus];
        j.n_prompt = mode == 0 ? 200 : 20;
        engine_params_defaults(&j.params);
        j.params.max_tokens = mode == 0 ? 50 : 200;
        j.params.ignore_eos = true;
        EngineRequest *r;
        ASSERT(job_submit(e, &j, &r));
        EngineStats st;
        uint64_t s0 = 0;
        double t0 = time_now_s();
        for (;;) { // wait until the request is well into its prefill (or decode)
            EngineOutput o;
            engine_request_wait(r, 0.01);
            engine_request_take(r, &o);
            engine_stats(e, &st);
            if (mode == 0 && st.num_steps >= 3) break;
            if (mode == 1 && o.choices[0].num_tokens >= 3) break;
            if (time_now_s() - t0 > 60) break;
        }
        engine_stats(e, &st);
        s0 = st.num_steps;
        EXPECT(st.num_free_blocks < st.num_blocks, "the request holds blocks");
        engine_abort(e, engine_request_id(r));
        EngineOutput o;
        do {
            engine_request_wait(r, 5.0);
            engine_request_take(r, &o);
        } while (!o.finished);
        EXPECT_EQ_INT(o.choices[0].finish, ENGINE_FINISH_ABORT);
        if (mode == 0) EXPECT_EQ_INT(o.completion_tokens, 0);
        else EXPECT(o.completion_tokens >= 3 && o.completion_tokens < 200, "%d tokens", o.completion_tokens);
        EXPECT(o.finish_step <= s0 + 1, "aborted at step %llu, finished at %llu", (unsigned long long)s0,
               (unsigned long long)o.finish_step);
        engine_request_release(r);
        expect_pool_whole(e, &st);
        EXPECT(st.num_steps <= s0 + 1, "%llu steps after the abort", (unsigned long long)(st.num_steps - s0));
    }
    engine_destroy(e);
}

// n = 3 with a seed: sample i is what n = 1 with seed + i makes. The prompt ends inside a block,
// so the first decode of each sample copies the shared partial block (copy-on-write).
static void test_parallel_samples(void) {
    EngineConfig c = cfg_make(128, 8, true, 16 << 20);
    Engine *e = engine_open(&c);
    ASSERT(e);
    Job group, solo[3], got[3];
    memset(&group, 0, sizeof(group));
    for (int i = 0; i < 37; i++) group.prompt[i] = corpus_ids[40 + i];
    group.n_prompt = 37;
    engine_params_defaults(&group.params);
    group.params.max_tokens = GEN;
    group.params.ignore_eos = true;
    group.params.sampling.temperature = 1.0f;
    group.params.sampling.seed = 77;
    group.params.sampling.has_seed = true;
    for (int i = 0; i < 3; i++) {
        solo[i] = group;
        solo[i].params.sampling.seed = 77 + (uint64_t)i;
    }
    jobs_run_alone(e, solo, 3);
    group.params.n = 3;
    EngineRequest *r;
    ASSERT(job_submit(e, &group, &r));
    // collect all three choices from one request
    EngineOutput o;
    for (int i = 0; i < 3; i++) {
        got[i] = group;
        got[i].n_out = 0;
        got[i].text_len = 0;
    }
    do {
        engine_request_wait(r, 5.0);
        engine_request_take(r, &o);
        for (int i = 0; i < o.n_choices; i++) {
            const EngineChoice *ch = &o.choices[i];
            for (int k = 0; k < ch->n_tokens && got[i].n_out < MAX_OUT; k++) got[i].out[got[i].n_out++] = ch->tokens[k];
            if (got[i].text_len + ch->text_len < sizeof(got[i].text)) {
                memcpy(got[i].text + got[i].text_len, ch->text, ch->text_len);
                got[i].text_len += ch->text_len;
            }
            got[i].finish = ch->finish;
        }
    } while (!o.finished);
    for (int i = 0; i < 3; i++) got[i].text[got[i].text_len] = '\0';
    EXPECT_EQ_INT(o.completion_tokens, 3 * GEN);
    engine_request_release(r);
    jobs_compare(solo, got, 3, "n = 3 vs seed + i");
    EXPECT(memcmp(got[0].out, got[1].out, sizeof(int32_t) * GEN) != 0, "samples 0 and 1 are the same");
    EngineStats st;
    expect_pool_whole(e, &st);
    engine_destroy(e);
}

// Stop strings across a token boundary, include_stop_str_in_output, stop_token_ids, EOS,
// ignore_eos, min_tokens and logprobs, on a chat prompt with a known greedy answer.
static void test_stops(void) {
    EngineConfig c = cfg_make(128, 4, true, 16 << 20);
    Engine *e = engine_open(&c);
    ASSERT(e);
    const Tokenizer *tok = engine_tokenizer(e);
    const char *chat = "<|im_start|>user\nWrite one sentence about a river in spring.<|im_end|>\n<|im_start|>assistant\n";
    Job base;
    memset(&base, 0, sizeof(base));
    int *ids = NULL, cap = 0;
    base.n_prompt = tok_encode(tok, chat, strlen(chat), false, true, &ids, &cap);
    memcpy(base.prompt, ids, (size_t)base.n_prompt * sizeof(int32_t));
    free(ids);
    engine_params_defaults(&base.params);
    base.params.sampling.temperature = 0;
    base.params.max_tokens = 48;

    Job ref = base;
    jobs_run_alone(e, &ref, 1);
    ASSERT(ref.n_out >= 8, "reference of %d tokens: \"%s\"", ref.n_out, ref.text);
    // the streamed text is the decode of the tokens (an EOS at the end has no text)
    int n_text_tokens = ref.n_out - (ref.finish == ENGINE_FINISH_STOP ? 1 : 0);
    size_t dlen;
    char *dec = tok_decode(tok, ref.out, n_text_tokens, true, &dlen);
    EXPECT_STR_EQ(ref.text, dec);
    free(dec);

    // a boundary between tokens i and i+1 with 2 bytes on each side, the first place that text occurs
    size_t off[MAX_OUT + 1] = {0};
    for (int i = 0; i < n_text_tokens; i++) {
        char *t = tok_decode(tok, ref.out, i + 1, true, &dlen);
        off[i + 1] = dlen;
        free(t);
    }
    int bi = -1;
    char stop[8] = "";
    for (int i = 2; i + 1 < n_text_tokens && bi < 0; i++) {
        size_t b = off[i + 1];
        if (off[i + 1] - off[i] < 2 || off[i + 2] - off[i + 1] < 2) continue;
        memcpy(stop, ref.text + b - 2, 4);
        stop[4] = '\0';
        if (strstr(ref.text, stop) == ref.text + b - 2) bi = i;
    }
    ASSERT(bi >= 0, "no usable token boundary in \"%s\"", ref.text);
    size_t b = off[bi + 1];
    const char *stops[2] = {"no such text", stop};
    for (int include = 0; include < 2; include++) {
        Job j = base;
        j.params.stop = stops;
        j.params.n_stop = 2;
        j.params.include_stop_str_in_output = include;
        jobs_run_alone(e, &j, 1);
        EXPECT_EQ_INT(j.finish, ENGINE_FINISH_STOP);
        EXPECT_EQ_INT(j.stop_str, 1);
        EXPECT_EQ_INT(j.n_out, bi + 2); // the stop string completes with token bi + 1
        size_t want_len = include ? b + 2 : b - 2;
        EXPECT(j.text_len == want_len && memcmp(j.text, ref.text, want_len) == 0,
               "stop \"%s\" include %d: \"%s\", want %zu bytes of \"%s\"", stop, include, j.text, want_len, ref.text);
    }
    // a stop token: its own text is left out
    {
        Job j = base;
        int32_t stop_ids[1] = {ref.out[4]};
        j.params.stop_token_ids = stop_ids;
        j.params.n_stop_token_ids = 1;
        jobs_run_alone(e, &j, 1);
        int first = 0;
        while (ref.out[first] != stop_ids[0]) first++;
        EXPECT_EQ_INT(j.finish, ENGINE_FINISH_STOP);
        EXPECT_EQ_INT(j.stop_token, stop_ids[0]);
        EXPECT_EQ_INT(j.n_out, first + 1);
        EXPECT(j.text_len == off[first] && memcmp(j.text, ref.text, off[first]) == 0, "\"%s\"", j.text);
    }
    // EOS, made the likeliest token by a logit bias so the outcome does not hang on the model:
    // it stops at once; ignore_eos runs to max_tokens through it; min_tokens holds it off
    {
        int32_t eos = tok_eos(tok);
        float big = 100.0f;
        Job j = base;
        j.params.sampling.n_logit_bias = 1;
        j.params.sampling.logit_bias_ids = &eos;
        j.params.sampling.logit_bias_vals = &big;
        Job k = j, m = j;
        jobs_run_alone(e, &j, 1);
        EXPECT_EQ_INT(j.finish, ENGINE_FINISH_STOP);
        EXPECT_EQ_INT(j.n_out, 1);
        EXPECT_EQ_INT(j.out[0], eos);
        EXPECT_EQ_INT(j.text_len, 0);
        k.params.ignore_eos = true;
        k.params.max_tokens = 3;
        jobs_run_alone(e, &k, 1);
        EXPECT_EQ_INT(k.finish, ENGINE_FINISH_LENGTH);
        EXPECT_EQ_INT(k.n_out, 3);
        EXPECT(k.out[0] == eos && k.out[2] == eos, "%d %d", k.out[0], k.out[2]);
        m.params.min_tokens = 3;
        m.params.max_tokens = 10;
        jobs_run_alone(e, &m, 1);
        EXPECT_EQ_INT(m.finish, ENGINE_FINISH_STOP);
        EXPECT_EQ_INT(m.n_out, 4);
        EXPECT(memcmp(m.out, ref.out, 3 * sizeof(int32_t)) == 0, "min_tokens changed the first tokens");
        EXPECT_EQ_INT(m.out[3], eos);
        EXPECT(m.text_len == off[3] && memcmp(m.text, ref.text, off[3]) == 0, "\"%s\"", m.text);
    }
    // logprobs: the greedy token is the most likely one
    {
        Job j = base;
        j.params.max_tokens = 4;
        j.params.sampling.logprobs = 3;
        EngineRequest *r;
        ASSERT(job_submit(e, &j, &r));
        EngineOutput o;
        int seen = 0;
        do {
            engine_request_wait(r, 5.0);
            engine_request_take(r, &o);
            const EngineChoice *ch = &o.choices[0];
            for (int k = 0; k < ch->n_tokens; k++, seen++) {
                ASSERT(ch->logprobs, "no logprobs");
                const SampleLogprobs *lp = &ch->logprobs[k];
                EXPECT_EQ_INT(ch->tokens[k], ref.out[seen]);
                EXPECT_EQ_INT(lp->n_top, 3);
                EXPECT_EQ_INT(lp->top_ids[0], ch->tokens[k]);
                EXPECT(lp->logprob <= 0 && lp->top_logprobs[0] >= lp->top_logprobs[1], "logprobs %g %g %g",
                       lp->logprob, lp->top_logprobs[0], lp->top_logprobs[1]);
            }
        } while (!o.finished);
        EXPECT_EQ_INT(seen, 4);
        engine_request_release(r);
    }
    EngineStats st;
    expect_pool_whole(e, &st);
    engine_destroy(e);
}

// An argument runs only the tests whose names contain it.
#define RUN(fn)                                                                   \
    if (argc < 2 || strstr(#fn, argv[1])) {                                       \
        double t0_ = time_now_s();                                                \
        TEST_RUN(fn);                                                             \
        fprintf(stderr, "     %.1f s\n", time_now_s() - t0_);                    \
    }

int main(int argc, char **argv) {
    log_level = LOG_WARN;
    // the corpus tokenized once, through a throwaway engine's tokenizer
    {
        EngineConfig c = cfg_make(16, 1, false, 8 << 20);
        c.max_model_len = 64;
        Engine *e = engine_open(&c);
        if (!e) return test_summary();
        int *ids = NULL, cap = 0;
        n_corpus = tok_encode(engine_tokenizer(e), CORPUS, strlen(CORPUS), false, false, &ids, &cap);
        CHECK(n_corpus >= 300 && n_corpus <= 1024, "%d corpus tokens", n_corpus);
        memcpy(corpus_ids, ids, (size_t)n_corpus * sizeof(int32_t));
        free(ids);
        engine_destroy(e);
    }
    RUN(test_create_errors);
    RUN(test_submit_errors);
    RUN(test_batch_invariance);
    RUN(test_chunked_prefill);
    RUN(test_preemption);
    RUN(test_prefix_cache);
    RUN(test_abort);
    RUN(test_parallel_samples);
    RUN(test_stops);
    return test_summary();
}
