// test_engine.c: the engine through engine.h on the real default model (CPU).
//
// Reference outputs come from each request run alone on an engine without prefix caching and
// with a token budget that holds every prompt whole. Every other configuration must reproduce
// them token for token: all requests at once (greedy and seeded sampling mixed, prompts sharing
// long prefixes, a small budget that chunks prefills), a pool too small for the running set
// (preemption and recompute), a budget smaller than one prompt, the prefix cache, and n > 1
// (copy-on-write of the shared partial block). That rests on the kernels computing each row
// independently of the rest of the batch (kernels.h's promise); a mismatch names the request.
// The same at tensor-parallel sizes above one: test_engine_tp.c.
//
// Generations are short (8 tokens) to keep the binary fast; the model is 135M parameters.
#include "tests/unit/engine_jobs.h"

// ----------------------------------------------------------------------------
// references

static Job ref_greedy[NJOBS], ref_seeded[NJOBS];
static bool refs_ready;
static size_t ref_block_bytes; // one KV block of the reference engine (every layer, K and V)

// Each request alone, no prefix caching, every prompt prefilled whole.
static void refs_make(void) {
    if (refs_ready) return;
    jobs_make(ref_greedy, false);
    jobs_make(ref_seeded, true);
    EngineConfig c = cfg_make(512, 4, false, 32 << 20);
    Engine *e = engine_open(&c);
    if (!e) return;
    ref_block_bytes = engine_info(e)->kv_cache_bytes / (size_t)engine_info(e)->num_blocks;
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

// The same with 8-bit activations (--cpu-activations int8), against its own solo references
// (its tokens may differ from the 16-bit path's where two logits nearly tie): all 32 requests
// at once, prefills chunked by the 48-token budget, each makes exactly its solo tokens.
static void test_batch_invariance_int8(void) {
    static Job alone[2 * NJOBS], together[2 * NJOBS];
    jobs_make(alone, false);
    jobs_make(alone + NJOBS, true);
    jobs_make(together, false);
    jobs_make(together + NJOBS, true);
    EngineConfig c = cfg_make(512, 4, false, 32 << 20);
    c.cpu_activations = K_ACT_INT8;
    Engine *e = engine_open(&c);
    ASSERT(e);
    jobs_run_alone(e, alone, 2 * NJOBS);
    engine_destroy(e);
    c = cfg_make(48, 32, true, 64 << 20);
    c.cpu_activations = K_ACT_INT8;
    e = engine_open(&c);
    ASSERT(e);
    EXPECT(k_activations() == K_ACT_INT8, "the engine did not select int8");
    jobs_run_together(e, together, 2 * NJOBS);
    jobs_compare(alone, together, 2 * NJOBS, "int8, together");
    EngineStats st;
    expect_pool_whole(e, &st);
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

static void test_preemption(void) { preemption_at(1); }

// A greedy job on the corpus' first 200 tokens (12 full blocks and a partial one).
static Job corpus_job(int max_tokens) {
    Job j;
    memset(&j, 0, sizeof(j));
    for (int i = 0; i < 200; i++) j.prompt[i] = corpus_ids[i];
    j.n_prompt = 200;
    engine_params_defaults(&j.params);
    j.params.max_tokens = max_tokens;
    j.params.sampling.temperature = 0;
    return j;
}

// A request sharing a 200-token prefix with an earlier one reuses 12 cached blocks and makes the
// same tokens as with the cache off.
static void test_prefix_cache(void) {
    Job a = corpus_job(1), b[2];
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

// cache_salt: a request reuses the KV blocks of earlier requests with the same salt only; other
// salts and no salt never share, while the output stays what the same request computes alone.
static void test_cache_salt(void) {
    EngineConfig c = cfg_make(512, 4, true, 32 << 20);
    Engine *e = engine_open(&c);
    ASSERT(e);
    Job base = corpus_job(4);
    // (salt, cached prompt tokens expected: 0, or at least the 192 of the 12 full blocks)
    const struct {
        const char *salt;
        bool hit;
    } runs[] = {{"alice", false}, {"alice", true}, {"bob", false}, {NULL, false}, {NULL, true}, {"bob", true},
                {"alice", true}, {"alicf", false}};
    Job first = base;
    for (size_t i = 0; i < ARRAY_LEN(runs); i++) {
        Job j = base;
        j.params.cache_salt = runs[i].salt;
        jobs_run_alone(e, &j, 1);
        if (runs[i].hit) EXPECT(j.cached >= 192, "run %zu (%s): cached %d", i, runs[i].salt, j.cached);
        else EXPECT(j.cached == 0, "run %zu (%s): cached %d", i, runs[i].salt ? runs[i].salt : "none", j.cached);
        if (i == 0) first = j;
        else jobs_compare(&first, &j, 1, "a salted run");
    }
    EngineStats st;
    expect_pool_whole(e, &st);
    engine_destroy(e);
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

static void test_parallel_samples(void) { parallel_samples_at(1); }

// A greedy job of up to 48 tokens on a chat prompt whose answer is one sentence and EOS.
static Job stops_base(Engine *e) {
    const char *chat = "<|im_start|>user\nWrite one sentence about a river in spring.<|im_end|>\n<|im_start|>assistant\n";
    Job base;
    memset(&base, 0, sizeof(base));
    int *ids = NULL, cap = 0;
    base.n_prompt = tok_encode(engine_tokenizer(e), chat, strlen(chat), false, true, &ids, &cap);
    memcpy(base.prompt, ids, (size_t)base.n_prompt * sizeof(int32_t));
    free(ids);
    engine_params_defaults(&base.params);
    base.params.sampling.temperature = 0;
    base.params.max_tokens = 48;
    return base;
}

// Stop strings across a token boundary, include_stop_str_in_output, stop_token_ids, EOS,
// ignore_eos, min_tokens and logprobs, on a chat prompt with a known greedy answer.
static void test_stops(void) {
    EngineConfig c = cfg_make(128, 4, true, 16 << 20);
    Engine *e = engine_open(&c);
    ASSERT(e);
    const Tokenizer *tok = engine_tokenizer(e);
    Job base = stops_base(e);

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

// Runs j alone with logprobs (top 5) in the given mode and keeps every token's logprobs in lp.
static void job_logprobs(Engine *e, Job *j, SamplerLogprobsMode mode, SampleLogprobs *lp) {
    j->params.sampling.logprobs = 5;
    j->params.sampling.logprobs_mode = mode;
    EngineRequest *r;
    ASSERT(job_submit(e, j, &r));
    EngineOutput o;
    j->n_out = 0;
    do {
        engine_request_wait(r, 5.0);
        engine_request_take(r, &o);
        const EngineChoice *ch = &o.choices[0];
        for (int k = 0; k < ch->n_tokens && j->n_out < MAX_OUT; k++, j->n_out++) {
            ASSERT(ch->logprobs, "no logprobs");
            j->out[j->n_out] = ch->tokens[k];
            lp[j->n_out] = ch->logprobs[k];
        }
        j->finish = ch->finish;
    } while (!o.finished);
    engine_request_release(r);
}

// The logprob lp gives token id, or NAN when it is not among lp's top ones.
static float lp_of(const SampleLogprobs *lp, int32_t id) {
    for (int i = 0; i < lp->n_top; i++)
        if (lp->top_ids[i] == id) return lp->top_logprobs[i];
    return NAN;
}

// min_tokens holds EOS and stop tokens off after the raw logprobs are taken, as vLLM does: in the
// default (raw) mode a held-off token keeps the probability the model gives it, where it used to
// show -inf; in processed mode it has none.
static void test_min_tokens_logprobs(void) {
    EngineConfig c = cfg_make(128, 4, true, 16 << 20);
    Engine *e = engine_open(&c);
    ASSERT(e);
    static SampleLogprobs ref_lp[MAX_OUT], lp[MAX_OUT];
    Job ref = stops_base(e);
    job_logprobs(e, &ref, SAMPLER_LOGPROBS_RAW, ref_lp);
    int n = ref.n_out;
    int32_t eos = tok_eos(engine_tokenizer(e));
    ASSERT(ref.finish == ENGINE_FINISH_STOP && ref.out[n - 1] == eos && n >= 4, "reference of %d tokens ends in %d", n,
           ref.out[n - 1]);
    EXPECT_EQ_INT(ref_lp[n - 1].top_ids[0], eos); // greedy: EOS was the likeliest at the last step

    // EOS held off for one more token: at step n-1 EOS is still the model's top token, with the
    // reference's logprob; the token chosen instead is the runner-up
    Job j = stops_base(e);
    j.params.min_tokens = n;
    j.params.max_tokens = n;
    job_logprobs(e, &j, SAMPLER_LOGPROBS_RAW, lp);
    EXPECT_EQ_INT(j.n_out, n);
    EXPECT(memcmp(j.out, ref.out, (size_t)(n - 1) * sizeof(int32_t)) == 0, "min_tokens changed the first tokens");
    const SampleLogprobs *a = &lp[n - 1], *b = &ref_lp[n - 1];
    EXPECT(a->token != eos && a->token == b->top_ids[1], "chose %d, the runner-up is %d", a->token, b->top_ids[1]);
    EXPECT_EQ_INT(a->top_ids[0], eos);
    EXPECT(isfinite(lp_of(a, eos)) && lp_of(a, eos) == b->top_logprobs[0], "EOS logprob %g, reference %g",
           lp_of(a, eos), b->top_logprobs[0]);
    EXPECT(a->logprob == b->top_logprobs[1], "chosen %g, reference %g", a->logprob, b->top_logprobs[1]);

    // a stop token held off at the first step: the same, and in processed mode it has no chance
    int32_t first = ref.out[0];
    Job k = stops_base(e);
    k.params.stop_token_ids = &first;
    k.params.n_stop_token_ids = 1;
    k.params.min_tokens = 1;
    k.params.max_tokens = 1;
    job_logprobs(e, &k, SAMPLER_LOGPROBS_RAW, lp);
    EXPECT(lp[0].token == ref_lp[0].top_ids[1] && lp[0].top_ids[0] == first, "chose %d, top %d", lp[0].token,
           lp[0].top_ids[0]);
    EXPECT(lp_of(&lp[0], first) == ref_lp[0].top_logprobs[0], "%g", lp_of(&lp[0], first));
    job_logprobs(e, &k, SAMPLER_LOGPROBS_PROCESSED, lp);
    EXPECT(lp[0].token == ref_lp[0].top_ids[1] && lp[0].top_ids[0] == lp[0].token, "chose %d, top %d", lp[0].token,
           lp[0].top_ids[0]);
    EXPECT(isnan(lp_of(&lp[0], first)), "a held-off token among the processed top 5: %g", lp_of(&lp[0], first));
    EngineStats st;
    expect_pool_whole(e, &st);
    engine_destroy(e);
}

int main(int argc, char **argv) {
    log_level = LOG_WARN;
    if (!corpus_load()) return test_summary();
    RUN(test_create_errors);
    RUN(test_submit_errors);
    RUN(test_batch_invariance);
    RUN(test_batch_invariance_int8);
    RUN(test_chunked_prefill);
    RUN(test_preemption);
    RUN(test_prefix_cache);
    RUN(test_cache_salt);
    RUN(test_abort);
    RUN(test_parallel_samples);
    RUN(test_stops);
    RUN(test_min_tokens_logprobs);
    return test_summary();
}
