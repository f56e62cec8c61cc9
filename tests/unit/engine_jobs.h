// engine_jobs.h: what test_engine.c and test_engine_tp.c share: a corpus tokenized by the
// default model, requests ("jobs") run through engine.h alone or all at once and compared token
// for token, and the preemption and copy-on-write scenarios both run (at one rank and at three).
// Static functions, each used by both binaries.
#pragma once

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/common.h"
#include "engine/engine.h"
#include "tests/unit/engine_open.h"
#include "tests/unit/test.h"

#define GEN 8        // tokens per invariance request
#define NJOBS 16
#define MAX_OUT 64

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

// The corpus tokenized once, through a throwaway engine's tokenizer. False when the model is missing.
static bool corpus_load(void) {
    EngineConfig c = cfg_make(16, 1, false, 8 << 20);
    c.max_model_len = 64;
    Engine *e = engine_open(&c);
    if (!e) return false;
    int *ids = NULL, cap = 0;
    n_corpus = tok_encode(engine_tokenizer(e), CORPUS, strlen(CORPUS), false, false, &ids, &cap);
    CHECK(n_corpus >= 300 && n_corpus <= 1024, "%d corpus tokens", n_corpus);
    memcpy(corpus_ids, ids, (size_t)n_corpus * sizeof(int32_t));
    free(ids);
    engine_destroy(e);
    return true;
}

// ----------------------------------------------------------------------------
// scenarios run at several tensor-parallel sizes

// Eight requests with one-block prompts, all admitted at once into a pool of 9 blocks: each
// needs a second block at its 17th token, so the scheduler preempts and recomputes. Outputs equal
// those made alone (greedy and seeded), and afterwards every block is back.
static void preemption_at(int tp) {
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
    c.tensor_parallel_size = tp;
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
    fprintf(stderr, "     %llu preemptions at tensor parallel size %d\n", (unsigned long long)st.num_preemptions, tp);
    engine_destroy(e);
}

// n = 3 with a seed: sample i is what n = 1 with seed + i makes. The prompt ends inside a block,
// so the first decode of each sample copies the shared partial block (copy-on-write).
static void parallel_samples_at(int tp) {
    EngineConfig c = cfg_make(128, 8, true, 16 << 20);
    c.tensor_parallel_size = tp;
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

// An argument runs only the tests whose names contain it.
#define RUN(fn)                                                                   \
    if (argc < 2 || strstr(#fn, argv[1])) {                                       \
        double t0_ = time_now_s();                                                \
        TEST_RUN(fn);                                                             \
        fprintf(stderr, "     %.1f s\n", time_now_s() - t0_);                    \
    }

