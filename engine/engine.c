// engine.c: submit and abort (callers' threads), the engine thread (inbox, step, stop checks,
// finishing requests, stats), create and destroy. The structures and the ownership rules are in
// engine_impl.h; the outbox and the consumer's calls in engine_request.c.
#define _GNU_SOURCE // sched_getaffinity, CPU_COUNT
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"
#include "config/config.h" // fmt_bytes
#include "engine/engine_impl.h"

// ----------------------------------------------------------------------------
// defaults

void engine_config_defaults(EngineConfig *c) {
    *c = (EngineConfig){.max_num_batched_tokens = 512, .max_num_seqs = 64, .block_size = 16,
                        .enable_prefix_caching = true, .max_model_len = 0, .kv_cache_memory = 0,
                        .threads = 0, .kv_dtype = KV_F16, .seed = 0, .tensor_parallel_size = 1,
                        .load_format = LOAD_AUTO, .tokenizer = NULL,  .device = ENGINE_DEVICE_AUTO, .cpu_activations = K_ACT_AUTO,
                        .gpu_memory_utilization = 0.9, .enforce_eager = false,
                        .structured_output_cache_size = 64, .structured_output_compile_timeout = 10};
}

// cache_salt: the root of a request's chain of block hashes. Different roots make every block hash
// and parent differ, so requests with different salts (or none) never share a KV block.
static uint64_t salt_root(const char *salt) {
    uint64_t h = engine_mix64(hash_fnv1a(salt, strlen(salt)) ^ BLOCKPOOL_HASH_ROOT);
    return h ? h : 1; // 0 means "no salt"
}

EngineConfig engine_config_from(const Config *c) {
    EngineConfig e;
    engine_config_defaults(&e);
    e.max_num_batched_tokens = c->max_num_batched_tokens;
    e.max_num_seqs = c->max_num_seqs;
    e.block_size = c->block_size;
    e.enable_prefix_caching = c->enable_prefix_caching;
    e.long_prefill_token_threshold = c->long_prefill_token_threshold;
    e.max_model_len = c->max_model_len;
    e.kv_cache_memory = c->kv_cache_memory;
    e.threads = config_threads(c);
    e.seed = c->seed;
    e.tensor_parallel_size = c->tensor_parallel_size;
    int f = load_format_parse(c->load_format); // config_validate checked the name
    CHECK(f >= 0, "--load-format %s", c->load_format);
    e.load_format = (LoadFormat)f;
    e.tokenizer = c->tokenizer; // read by engine_create only
    e.device = !strcmp(c->device, "cuda") ? ENGINE_DEVICE_CUDA : !strcmp(c->device, "cpu") ? ENGINE_DEVICE_CPU
                                                                                          : ENGINE_DEVICE_AUTO;
    e.gpu_memory_utilization = c->gpu_memory_utilization;
    e.enforce_eager = c->enforce_eager;
    int a = config_choice(c->cpu_activations, CPU_ACTIVATIONS_NAMES); // config_validate checked it
    CHECK(a >= 0, "--cpu-activations %s", c->cpu_activations);
    e.cpu_activations = (KActivations)a;
    e.structured_output_cache_size = c->structured_output_cache_size;
    e.structured_output_compile_timeout = c->structured_output_compile_timeout;
    char err[ERR_MAX];
    CHECK(spec_config_parse(c->speculative_config, &e.spec, err) == SL_OK, "%s", err); // config_validate checked it
    return e;
}

void engine_params_defaults(EngineParams *p) {
    *p = (EngineParams){.sampling = sampling_params_default(), .n = 1, .skip_special_tokens = true,
                        .prompt_logprobs = -1};
}

// ----------------------------------------------------------------------------
// waking consumers

// Marks r for notification at the end of the step; the list holds a reference.
void engine_touch(Engine *e, EngineRequest *r) {
    if (r->touched) return;
    CHECK(e->n_touched < e->cfg.max_num_seqs + 1);
    r->touched = true;
    atomic_fetch_add(&r->refs, 1);
    e->touched[e->n_touched++] = r;
}

static void engine_notify_touched(Engine *e) {
    for (int i = 0; i < e->n_touched; i++) {
        EngineRequest *r = e->touched[i];
        r->touched = false;
        pthread_mutex_lock(&r->mu);
        pthread_cond_broadcast(&r->cv);
        if (r->notify) r->notify(r->notify_ctx);
        pthread_mutex_unlock(&r->mu);
        engine_request_unref(r);
    }
    e->n_touched = 0;
}

// ----------------------------------------------------------------------------
// submit (caller's thread)

static int submit_validate(const Engine *e, const int32_t *prompt, int n_prompt, const EngineParams *p,
                           char *err) {
    const EngineInfo *in = &e->info;
    if (n_prompt < 1 || !prompt) return seterr(err, "the prompt is empty");
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= in->vocab)
            return seterr(err, "prompt token %d at position %d is outside the vocabulary (0..%d)", prompt[i], i,
                          in->vocab - 1);
    if (p->n < 1 || p->n > in->max_num_seqs)
        return seterr(err, "Invalid 'n': must be between 1 and %d (--max-num-seqs), got %d", in->max_num_seqs, p->n);
    if (p->max_tokens < 0)
        return seterr(err, "Invalid 'max_tokens': must be >= 1 (0: no limit), got %d", p->max_tokens);
    if (p->min_tokens < 0) return seterr(err, "Invalid 'min_tokens': must be >= 0, got %d", p->min_tokens);
    if (p->max_tokens > 0 && p->min_tokens > p->max_tokens)
        return seterr(err, "Invalid 'min_tokens': must be <= max_tokens (%d), got %d", p->max_tokens, p->min_tokens);
    if (sampling_params_validate(&p->sampling, in->vocab, err) != SL_OK) return SL_ERR;
    if (p->prompt_logprobs < -1 || p->prompt_logprobs > SAMPLER_MAX_LOGPROBS)
        return seterr(err, "Invalid 'prompt_logprobs': expected a value between 0 and %d, got %d",
                      SAMPLER_MAX_LOGPROBS, p->prompt_logprobs);
    if (p->prompt_logprobs >= 0 && in->device != ENGINE_DEVICE_CPU)
        return seterr(err, "Invalid 'prompt_logprobs': not supported on --device %s yet (the GPU runner returns "
                      "sampled rows' logits only)", engine_device_name(in->device));
    int len = in->max_model_len;
    if (n_prompt >= len) {
        seterr(err, "This model's maximum context length is %d tokens. However, your request has %d input "
               "tokens, which leaves no room for output. Please reduce the length of the input.", len, n_prompt);
        return ENGINE_ERR_CONTEXT;
    }
    if (p->max_tokens > 0 && (long)n_prompt + p->max_tokens > len) {
        seterr(err, "This model's maximum context length is %d tokens. However, you requested %ld tokens (%d in "
               "the input, %d in the completion). Please reduce the length of the input or completion.", len,
               (long)n_prompt + p->max_tokens, n_prompt, p->max_tokens);
        return ENGINE_ERR_CONTEXT;
    }
    return SL_OK;
}

int engine_submit(Engine *e, const int32_t *prompt, int n_prompt, const EngineParams *p, EngineNotifyFn notify,
                  void *notify_ctx, EngineRequest **out, char *err) {
    *out = NULL;
    int rc = submit_validate(e, prompt, n_prompt, p, err);
    if (rc != SL_OK) return rc;
    EngineRequest *r = xcalloc(1, sizeof(EngineRequest));
    if (stop_spec_init(&r->stop, p->stop, p->n_stop, p->stop_token_ids, p->n_stop_token_ids, e->info.vocab,
                       p->min_tokens, p->ignore_eos, p->include_stop_str_in_output, err) != SL_OK) {
        free(r);
        return SL_ERR;
    }
    r->engine = e;
    atomic_init(&r->refs, 2); // the caller's and the engine's
    r->n = p->n;
    r->n_prompt = n_prompt;
    r->want_logprobs = p->sampling.logprobs >= 0;
    r->prompt_lp = p->prompt_logprobs;
    if (r->prompt_lp >= 0) {
        r->plp = xcalloc((size_t)n_prompt, sizeof(SampleLogprobs));
        r->plp[0] = (SampleLogprobs){.token = prompt[0], .n_top = -1}; // nothing comes before it
        for (int i = 1; i < n_prompt; i++) r->plp[i].token = prompt[i];
        r->plp_done = n_prompt == 1;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    r->notify = notify;
    r->notify_ctx = notify_ctx;
    r->out.t_arrival = time_now_s();

    SamplingParams sp = p->sampling;
    if (sp.n_logit_bias > 0) { // the params point at the request's own copies from now on
        r->bias_ids = xmalloc((size_t)sp.n_logit_bias * sizeof(int32_t));
        r->bias_vals = xmalloc((size_t)sp.n_logit_bias * sizeof(float));
        memcpy(r->bias_ids, sp.logit_bias_ids, (size_t)sp.n_logit_bias * sizeof(int32_t));
        memcpy(r->bias_vals, sp.logit_bias_vals, (size_t)sp.n_logit_bias * sizeof(float));
        sp.logit_bias_ids = r->bias_ids;
        sp.logit_bias_vals = r->bias_vals;
    }

    pthread_mutex_lock(&e->inbox_mu);
    r->id = ++e->next_id;
    pthread_mutex_unlock(&e->inbox_mu);
    // Without a seed: the engine's --seed (if any) mixed with the request id, so the run is
    // reproducible; else the sampler draws a fresh one per sample.
    if (!sp.has_seed && e->cfg.seed != 0) {
        sp.seed = engine_mix64(e->cfg.seed ^ engine_mix64((uint64_t)r->id));
        sp.has_seed = true;
    }

    SeqParams sq = {.priority = p->priority, .max_tokens = p->max_tokens, .n = p->n,
                    .hash_root = p->cache_salt ? salt_root(p->cache_salt) : 0,
                    .no_prefix_hits = p->prompt_logprobs >= 0};
    seq_init(&r->seq, r->id, prompt, n_prompt, &sq, e->info.max_model_len, e->info.block_size);
    int max_output = r->seq.max_tokens_total - n_prompt;
    r->samples = xcalloc((size_t)r->n, sizeof(Sample));
    r->pending = xcalloc((size_t)r->n, sizeof(ChoiceBuf));
    r->taken = xcalloc((size_t)r->n, sizeof(ChoiceBuf));
    r->state = xcalloc((size_t)r->n, sizeof(ChoiceState));
    r->view = xcalloc((size_t)r->n, sizeof(EngineChoice));
    for (int i = 0; i < r->n; i++) {
        Sample *s = &r->samples[i];
        s->params = sp;
        if (sp.has_seed) s->params.seed = sp.seed + (uint64_t)i;
        sampler_state_init(&s->sampler, &s->params, e->info.vocab, prompt, n_prompt, max_output);
        detok_init(&s->detok, p->skip_special_tokens);
        stop_text_init(&s->text, &r->stop, (size_t)e->detok_cap);
        s->stop_token = -1;
        s->stop_str = -1;
        engine_outbox_init(&r->pending[i], max_output, r->want_logprobs);
        engine_outbox_init(&r->taken[i], max_output, r->want_logprobs);
        r->state[i] = (ChoiceState){.stop_token = -1, .stop_str = -1};
    }
    r->out.prompt_tokens = n_prompt;

    if (p->grammar_kind != GRAMMAR_NONE) { // queued once its grammar is compiled (structured.h)
        r->grammar_kind = p->grammar_kind;
        rc = so_submit(e->so, r, p->grammar_kind, p->grammar ? p->grammar : "", p->grammar ? p->grammar_len : 0, err);
        if (rc != SL_OK) {
            engine_request_destroy(r);
            return rc;
        }
    } else if (!engine_inbox_push(e, r, false)) {
        engine_request_destroy(r);
        seterr(err, "the server is shutting down");
        return ENGINE_ERR_STOPPED;
    }
    *out = r;
    return SL_OK;
}

bool engine_inbox_push(Engine *e, EngineRequest *r, bool wake) {
    pthread_mutex_lock(&e->inbox_mu);
    if (e->stopping) {
        pthread_mutex_unlock(&e->inbox_mu);
        return false;
    }
    pthread_mutex_lock(&r->mu); // before the engine can see it: no notify may come first
    r->admitted = true;
    if (wake && r->notify) r->notify(r->notify_ctx);
    pthread_mutex_unlock(&r->mu);
    if (e->inbox_tail) e->inbox_tail->inbox_next = r;
    else e->inbox_head = r;
    e->inbox_tail = r;
    e->n_inbox++;
    pthread_cond_signal(&e->inbox_cv);
    pthread_mutex_unlock(&e->inbox_mu);
    return true;
}

void engine_abort(Engine *e, int64_t id) {
    if (so_abort(e->so, id)) return; // it was waiting for its grammar
    pthread_mutex_lock(&e->inbox_mu);
    if (!e->stopping) { // a stopping engine aborts everything itself
        if (e->n_aborts == e->cap_aborts) {
            e->cap_aborts = e->cap_aborts ? 2 * e->cap_aborts : 16;
            e->aborts = xrealloc(e->aborts, (size_t)e->cap_aborts * sizeof(int64_t));
        }
        e->aborts[e->n_aborts++] = id;
        pthread_cond_signal(&e->inbox_cv);
    }
    pthread_mutex_unlock(&e->inbox_mu);
}

// ----------------------------------------------------------------------------
// engine thread: finishing samples and requests

static EngineFinish finish_of(SeqFinishReason why) {
    switch (why) {
    case SEQ_FINISH_STOP: return ENGINE_FINISH_STOP;
    case SEQ_FINISH_LENGTH: return ENGINE_FINISH_LENGTH;
    case SEQ_FINISH_ABORT: return ENGINE_FINISH_ABORT;
    case SEQ_FINISH_NONE: break;
    }
    DIE("sequence finished without a reason");
}

static void engine_finish_request(Engine *e, EngineRequest *r) {
    int completion = 0, preemptions = r->seq.num_preemptions;
    for (int i = 0; i < r->n; i++) completion += r->samples[i].num_out;
    for (int i = 0; i < r->n - 1; i++) preemptions += r->seq.children[i].num_preemptions;
    pthread_mutex_lock(&r->mu);
    r->finished = true;
    r->has_new = true;
    r->out.completion_tokens = completion;
    r->out.cached_tokens = MAX(r->seq.num_cached_tokens, 0);
    r->out.num_preemptions = preemptions;
    r->out.t_scheduled = r->t_scheduled;
    r->out.t_first_token = r->t_first_token;
    r->out.t_finished = time_now_s();
    r->out.finish_step = atomic_load(&e->steps_begun);
    pthread_mutex_unlock(&r->mu);

    engine_map_del(&e->map, r->id);
    if (r->active_prev) r->active_prev->active_next = r->active_next;
    else e->active_head = r->active_next;
    if (r->active_next) r->active_next->active_prev = r->active_prev;
    engine_request_free_state(r); // the sequences and samplers; the outbox stays for the consumer
    engine_request_unref(r);      // the engine's reference (the notify list may still hold one)
}

// Ends sample si: flushes its held text into the outbox and records why it ended.
static void engine_finish_sample(Engine *e, EngineRequest *r, int si, EngineFinish why) {
    Sample *s = &r->samples[si];
    CHECK(!s->finished);
    s->finished = true;
    int n = 0;
    if (s->stop_kind != STOP_STRING) n = detok_flush(&s->detok, e->detok_buf, e->detok_cap);
    size_t n_final;
    stop_text_push(&s->text, &r->stop, e->detok_buf, (size_t)n, false, true, &n_final);
    pthread_mutex_lock(&r->mu);
    engine_outbox_push_text(r, si, s->text.buf, n_final);
    r->state[si].finish = why;
    r->state[si].stop_token = s->stop_kind == STOP_TOKEN ? s->stop_token : -1;
    r->state[si].stop_str = s->stop_kind == STOP_STRING ? s->stop_str : -1;
    r->has_new = true;
    pthread_mutex_unlock(&r->mu);
    stop_text_consume(&s->text, n_final);
    e->st.requests_finished[why]++;
    engine_touch(e, r);
    if (++r->n_finished == r->n) engine_finish_request(e, r);
}

// Aborts a request now (engine thread): frees its blocks, ends its unfinished samples.
static void engine_abort_now(Engine *e, int64_t id) {
    EngineRequest *r = engine_map_get(&e->map, id);
    if (!r) return; // finished already, or never existed
    sched_abort(&e->sched, id);
    for (int i = 0; i < r->n && r->samples; i++)
        if (!r->samples[i].finished) engine_finish_sample(e, r, i, ENGINE_FINISH_ABORT);
    engine_notify_touched(e);
}

// ----------------------------------------------------------------------------
// engine thread: one step

static void engine_step(Engine *e) {
    SchedOutput *out = &e->out;
    atomic_fetch_add(&e->steps_begun, 1);
    double t0 = time_now_s();
    if (e->cfg.spec.method != SPEC_NONE) engine_spec_propose(e);
    sched_schedule(&e->sched, out);
    double t1 = time_now_s();
    bool any_prompt_rows = false;
    for (int i = 0; i < out->num_entries; i++) {
        const SchedEntry *en = &out->entries[i];
        EngineRequest *r = engine_map_get(&e->map, en->seq->id);
        e->prompt_rows[i] = 0;
        if (!r || r->prompt_lp < 0 || r->plp_done) continue;
        // rows start_pos.. predict prompt tokens start_pos+1..; the prompt's last row predicts the
        // first output token (sampling's row, not a prompt logprob)
        int end = MIN(en->start_pos + en->num_new_tokens, r->n_prompt - 1);
        e->prompt_rows[i] = MAX(0, end - en->start_pos);
        any_prompt_rows |= e->prompt_rows[i] > 0;
    }
    int n_masks = engine_masks_post(e, out);
    if (e->runner.draft) runner_draft(&e->runner, out, e->info.vocab);
    runner_step(&e->runner, out, any_prompt_rows ? e->prompt_rows : NULL);
    if (n_masks) mask_worker_wait(&e->masks);
    double t2 = time_now_s();
    if (any_prompt_rows) engine_prompt_logprobs(e, out);

    for (int i = 0; i < out->num_entries; i++) {
        const SchedEntry *en = &out->entries[i];
        EngineRequest *r = engine_map_get(&e->map, en->seq->id);
        CHECK(r, "sequence %lld has no request", (long long)en->seq->id);
        if (r->t_scheduled == 0) {
            r->t_scheduled = t0;
            pthread_mutex_lock(&r->mu);
            r->out.t_scheduled = t0;
            pthread_mutex_unlock(&r->mu);
        }
        if (en->num_samples == 0) continue;
        if (r->plp_done && !r->plp_ready) { // the prompt is complete: the first take carries them
            CHECK(r->prompt_lp >= 0);
            pthread_mutex_lock(&r->mu);
            r->plp_ready = true;
            r->has_new = true;
            pthread_mutex_unlock(&r->mu);
            engine_touch(e, r);
        }
        if (!r->prompt_counted) {
            r->prompt_counted = true;
            e->st.prompt_tokens += (uint64_t)r->n_prompt;
        }
        if (en->num_spec > 0) {
            engine_spec_verify(e, r, &out->entries[i], i);
            continue;
        }
        float *row = runner_logits_row(&e->runner, i);
        for (int j = 0; j < en->num_samples; j++) engine_sample_one(e, r, en, j, row);
    }
    double t3 = time_now_s();

    sched_update(&e->sched, out, e->sampled, e->stop_flags);
    for (int i = 0; i < out->num_finished; i++) {
        Sequence *seq = out->finished[i];
        EngineRequest *r = engine_map_get(&e->map, seq->id);
        CHECK(r);
        engine_finish_sample(e, r, seq->sample_index, finish_of(seq->finish_reason));
    }
    double t4 = time_now_s();
    engine_notify_touched(e);

    e->st.step_tokens += (uint64_t)out->num_tokens;
    e->st.generation_tokens += (uint64_t)out->num_sample_rows;
    e->st.time_schedule += (t1 - t0) + (t4 - t3);
    e->st.time_forward += t2 - t1;
    double t5 = time_now_s();
    e->st.time_sample += (t3 - t2) + (t5 - t4);
    if (out->num_decode_tokens == out->num_tokens) {
        e->st.num_decode_steps++;
        e->st.time_decode_steps += t5 - t0;
        // a lone sequence's step by its rows (a batch's rows each read their own context)
        if (e->cfg.spec.method != SPEC_NONE && out->num_entries == 1)
            spec_cost_add(&e->spec_cost, out->num_tokens, t5 - t0);
    }
}

static void engine_publish_stats(Engine *e) {
    const BlockPool *p = &e->sched.pool;
    EngineStats *s = &e->st;
    s->num_running = e->sched.num_running;
    s->num_waiting = e->sched.num_waiting;
    s->num_blocks = p->num_blocks;
    s->num_free_blocks = blockpool_num_available(p);
    s->kv_usage = blockpool_usage(p);
    s->prefix_cache_queries = p->query_tokens;
    s->prefix_cache_hits = p->hit_tokens;
    s->num_preemptions = e->sched.num_preemptions;
    s->num_window_freed_blocks = e->sched.num_window_freed_blocks;
    pthread_mutex_lock(&e->inbox_mu);
    e->st_pub = *s;
    e->n_inbox -= e->n_taken;
    e->n_taken = 0;
    pthread_mutex_unlock(&e->inbox_mu);
}

void engine_stats(Engine *e, EngineStats *out) {
    pthread_mutex_lock(&e->inbox_mu);
    *out = e->st_pub;
    out->num_waiting += e->n_inbox;
    pthread_mutex_unlock(&e->inbox_mu);
    StructuredStats so;
    so_stats(e->so, &so);
    out->grammar_queries = so.queries;
    out->grammar_cache_hits = so.hits;
    out->grammar_compiles = so.compiles;
    out->num_grammar_compiling = so.num_compiling;
    out->num_waiting += so.num_compiling;
    out->num_constrained = atomic_load(&e->n_constrained);
    out->num_steps = atomic_load(&e->steps_begun);
}

// Moves new requests into the scheduler and applies aborts. Blocks while there is nothing to do.
// Returns false when the engine is stopping.
static bool engine_take_inbox(Engine *e) {
    pthread_mutex_lock(&e->inbox_mu);
    while (!e->stopping && !e->inbox_head && e->n_aborts == 0 && !sched_has_work(&e->sched))
        pthread_cond_wait(&e->inbox_cv, &e->inbox_mu);
    if (e->stopping) {
        pthread_mutex_unlock(&e->inbox_mu);
        return false;
    }
    EngineRequest *head = e->inbox_head;
    e->inbox_head = e->inbox_tail = NULL;
    e->n_taken = e->n_inbox;
    int64_t *aborts = e->aborts;
    int n_aborts = e->n_aborts, cap = e->cap_aborts;
    e->aborts = e->aborts_eng;
    e->cap_aborts = e->cap_aborts_eng;
    e->n_aborts = 0;
    e->aborts_eng = aborts;
    e->cap_aborts_eng = cap;
    pthread_mutex_unlock(&e->inbox_mu);

    for (EngineRequest *r = head, *next; r; r = next) {
        next = r->inbox_next;
        r->inbox_next = NULL;
        char err[ERR_MAX];
        int rc = sched_add(&e->sched, &r->seq, err);
        CHECK(rc == SL_OK, "engine_submit let through a request the scheduler rejects: %s", err);
        // engine_submit refused prompt logprobs where the runner has no row per batched token
        CHECK(r->prompt_lp < 0 || runner_has_prompt_rows(&e->runner));
        engine_map_put(&e->map, r);
        r->active_next = e->active_head;
        if (e->active_head) e->active_head->active_prev = r;
        e->active_head = r;
    }
    for (int i = 0; i < n_aborts; i++) engine_abort_now(e, aborts[i]);
    return true;
}

static void *engine_main(void *arg) {
    Engine *e = arg;
    runner_thread_init(&e->runner); // rank 0's kernels run on this thread
    while (engine_take_inbox(e)) {
        if (sched_has_work(&e->sched)) engine_step(e);
        engine_publish_stats(e);
    }
    runner_thread_done(&e->runner);
    return NULL;
}

// ----------------------------------------------------------------------------
// create / destroy

static int cpu_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return MAX(CPU_COUNT(&set), 1);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static void engine_free(Engine *e) {
    so_destroy(e->so);
    sched_free(&e->sched);
    runner_free(&e->runner); // stops the rank threads before their models go
    for (int i = 0; i < e->n_models; i++) model_free(&e->models[i]);
    if (e->draft_loaded) model_free(&e->draft);
    wsrc_close(&e->draft_src);
    free(e->models);
    if (e->comm_group) comm_cpu_group_destroy(e->comm_group);
    free(e->comms);
    if (e->gpu) gpu_runner_destroy(e->gpu);
    engine_text_close(&e->text);
    wsrc_close(&e->src);
    sampler_scratch_free(&e->scratch);
    mask_worker_free(&e->masks);
    free(e->mask_row);
    free(e->row_copy);
    free(e->eog_ids);
    free(e->ban);
    free(e->detok_buf);
    free(e->sampled);
    free(e->prompt_rows);
    free(e->stop_flags);
    free(e->touched);
    free(e->map.keys);
    free(e->map.vals);
    free(e->aborts);
    free(e->aborts_eng);
    pthread_mutex_destroy(&e->inbox_mu);
    pthread_cond_destroy(&e->inbox_cv);
    free(e);
}

const char *engine_device_name(EngineDevice d) {
    switch (d) {
    case ENGINE_DEVICE_AUTO: return "auto";
    case ENGINE_DEVICE_CPU: return "cpu";
    case ENGINE_DEVICE_CUDA: return "cuda";
    }
    return "?";
}

// --device auto|cpu|cuda against what this build and machine have, and the TP size.
static int engine_pick_device(Engine *e, char *err) {
    EngineConfig *c = &e->cfg;
    char why[ERR_MAX] = "";
    bool gpu = c->device != ENGINE_DEVICE_CPU && gpu_runner_available(why) && gpu_runner_supports(&e->src.cfg, why);
    if (c->device == ENGINE_DEVICE_CUDA && !gpu) return seterr(err, "--device cuda: %s", why);
    e->info.device = gpu ? ENGINE_DEVICE_CUDA : ENGINE_DEVICE_CPU;
    if (c->device == ENGINE_DEVICE_AUTO)
        log_info("device: %s (--device auto%s%s)", gpu ? "cuda" : "cpu", gpu ? "" : ": ", gpu ? "" : why);
    if (gpu && c->tensor_parallel_size > 1)
        return seterr(err, "--tensor-parallel-size %d: tensor parallelism runs on the CPU only so far (the GPU engine "
                      "drives one device); pass --device cpu or --tensor-parallel-size 1", c->tensor_parallel_size);
    return SL_OK;
}

// The window every layer attends within (the widest, when they differ), or 0 when a layer sees
// the whole context (Gemma's global layers): then no block ever leaves every window.
static int engine_kv_window(const ModelConfig *mc) {
    int w = 0;
    for (int l = 0; l < mc->n_layers; l++) {
        int lw = model_layer_window(mc, l);
        if (lw == 0) return 0;
        w = MAX(w, lw);
    }
    return w;
}

// The CPU ranks: a communicator for more than one, then each rank's share of the weights.
static int engine_load_cpu(Engine *e, char *err) {
    const EngineConfig *c = &e->cfg;
    const ModelConfig *mc = &e->src.cfg;
    int n = c->tensor_parallel_size;
    e->models = xcalloc((size_t)n, sizeof(Model));
    e->comms = xcalloc((size_t)n, sizeof(Comm *));
    if (n > 1) {
        size_t max_floats = model_comm_max_floats(mc, c->max_num_batched_tokens, n); // the largest collective
        e->comm_group = comm_cpu_group_create(n, max_floats, e->comms);
    }
    for (int r = 0; r < n; r++) {
        if (model_load_shard(&e->models[r], &e->src, c->max_num_batched_tokens, r, n, e->comms[r], err) != SL_OK)
            return SL_ERR;
        e->n_models++;
    }
    return SL_OK;
}

// Fails fast, with numbers that would fit, when the KV cache cannot hold one max_model_len sequence.
static int engine_check_kv(Engine *e, char *err) {
    const EngineConfig *c = &e->cfg;
    long kv_tokens = (long)runner_num_blocks(&e->runner) * c->block_size;
    if (kv_tokens >= c->max_model_len) return SL_OK;
    char have[32], need[32];
    size_t need_bytes = (size_t)((c->max_model_len + c->block_size - 1) / c->block_size) * e->runner.block_bytes;
    if (e->gpu)
        return seterr(err, "the KV cache (%s) holds %ld tokens, fewer than max_model_len %d: use --max-model-len %ld "
                      "or less, or a larger --gpu-memory-utilization (%s of KV cache needed)",
                      fmt_bytes(e->runner.kv_bytes, have, sizeof have), kv_tokens, c->max_model_len, kv_tokens,
                      fmt_bytes(need_bytes, need, sizeof need));
    return seterr(err, "the KV cache (%s) holds %ld tokens, fewer than max_model_len %d: use --max-model-len %ld or "
                  "less, or --kv-cache-memory %s or more", fmt_bytes(e->runner.kv_bytes, have, sizeof have), kv_tokens,
                  c->max_model_len, kv_tokens, fmt_bytes(need_bytes, need, sizeof need));
}

int engine_create(Engine **out, const EngineConfig *cfg, const char *model_path, char *err) {
    *out = NULL;
    double t0 = time_now_s();
    Engine *e = xcalloc(1, sizeof(Engine));
    pthread_mutex_init(&e->inbox_mu, NULL);
    pthread_cond_init(&e->inbox_cv, NULL);
    e->cfg = *cfg;
    e->cfg.tokenizer = NULL; // the caller's string is read here only
    EngineConfig *c = &e->cfg;
    EngineInfo *in = &e->info;
    char msg[ERR_MAX];
    if (c->max_num_seqs < 1 || c->max_num_batched_tokens < 1 || c->block_size < 1 || c->max_model_len < 0 ||
        c->tensor_parallel_size < 1) {
        seterr(err, "engine: max_num_seqs, max_num_batched_tokens, block_size and tensor_parallel_size must be >= 1");
        goto fail;
    }
    // the device first: a refusal must not wait for weights to load (or a dummy 8B to generate)
    if (wsrc_open(&e->src, model_path, c->load_format, err) != SL_OK) goto fail;
    if (engine_pick_device(e, err) != SL_OK) goto fail; // (the family decides whether the GPU runner can)
    double open_s = time_now_s() - t0; // mapping the files, or generating dummy weights
    const ModelConfig *mc = &e->src.cfg;
    model_config_log(mc);
    if (model_tp_check(mc, c->tensor_parallel_size, msg) != SL_OK) {
        seterr(err, "--tensor-parallel-size: %s", msg);
        goto fail;
    }
    if (model_config_max_len(mc, c->max_model_len, &c->max_model_len, err) != SL_OK) goto fail;

    // ---- the tokenizer and the chat template
    double t_tok = time_now_s();
    if (engine_text_open(&e->text, &e->src, cfg->tokenizer, err) != SL_OK) goto fail;
    double tok_s = time_now_s() - t_tok;
    e->tok = e->text.tok;
    int vocab = tok_vocab_size(e->tok);
    if (vocab > mc->vocab) {
        seterr(err, "%s: the tokenizer has %d tokens, the model %d", model_path, vocab, mc->vocab);
        goto fail;
    }
    log_info("tokenizer: %s (%d tokens)", e->text.tok_origin, vocab);
    if (vocab < mc->vocab) // the sampler sees only the tokenizer's ids
        log_info("the model's vocabulary has %d rows, the tokenizer %d tokens: ids %d..%d are never sampled",
                 mc->vocab, vocab, vocab, mc->vocab - 1);

    // ---- the weights, then the KV cache and the buffers
    if (c->threads <= 0) c->threads = cpu_count();
    int threads_per_rank = MAX(1, c->threads / c->tensor_parallel_size);
    RunnerConfig rc = {.block_size = c->block_size, .max_num_seqs = c->max_num_seqs,
                       .max_num_batched_tokens = c->max_num_batched_tokens, .max_model_len = c->max_model_len,
                       .kv_cache_memory = c->kv_cache_memory, .kv_dtype = c->kv_dtype,
                       .threads_per_rank = threads_per_rank};
    double t_load = time_now_s();
    if (in->device == ENGINE_DEVICE_CUDA) {
        GpuRunnerConfig gc = {.max_num_batched_tokens = c->max_num_batched_tokens, .max_num_seqs = c->max_num_seqs,
                              .max_model_len = c->max_model_len, .block_size = c->block_size,
                              .gpu_memory_utilization = c->gpu_memory_utilization, .enforce_eager = c->enforce_eager};
        if (gpu_runner_create(&e->gpu, &e->src, &gc, err) != SL_OK) goto fail;
        const GpuRunnerStats *st = gpu_runner_stats(e->gpu);
        in->load_s = open_s + st->load_s;
        in->alloc_s = st->alloc_s;
        in->graph_s = st->graph_s;
        runner_init_gpu(&e->runner, e->gpu, mc->vocab, mc, &rc);
        if (c->kv_cache_memory) log_warn("--kv-cache-memory is for the CPU: on cuda the KV cache takes what "
                                         "--gpu-memory-utilization leaves");
    } else {
        // process-wide (kernels.h): the last engine created in a process sets it for all
        k_set_activations(c->cpu_activations);
        if (c->cpu_activations == K_ACT_INT8)
            log_info("cpu matmuls: 8-bit activations, %s kernels (picked from the CPU's features)%s", k_int8_path(),
                     strcmp(k_int8_path(), "amx")
                         ? ""
                         : "; avx512-vnni for types other than Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/IQ4_NL/Q2_K..Q6_K/IQ4_XS");
        else if (c->cpu_activations == K_ACT_AUTO && k_act_int8(QTYPE_Q4_1))
            log_info("cpu matmuls: 8-bit activations, amx kernels for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/IQ4_NL/Q2_K..Q6_K/"
                     "IQ4_XS, avx512-vnni for other quantized types (--cpu-activations auto on a CPU with AMX; int16 keeps the "
                     "exact path)");
        else if (c->cpu_activations == K_ACT_AUTO)
            log_info("cpu matmuls: 16-bit activations for Q4_0/Q4_1/Q8_0, 8-bit (%s kernels) for other quantized "
                     "types (--cpu-activations auto)", k_int8_path());
        else
            log_info("cpu matmuls: 16-bit activations (--cpu-activations int16)");
        if (engine_load_cpu(e, err) != SL_OK) goto fail;
        if (c->spec.method == SPEC_DRAFT && engine_spec_load_draft(e, engine_kv_window(mc), err) != SL_OK) goto fail;
        double t_alloc = time_now_s();
        in->load_s = open_s + (t_alloc - t_load);
        if (runner_init_cpu(&e->runner, e->models, c->tensor_parallel_size, e->draft_loaded ? &e->draft : NULL, &rc,
                            err) != SL_OK)
            goto fail;
        in->alloc_s = time_now_s() - t_alloc;
    }
    if (engine_check_kv(e, err) != SL_OK) goto fail;
    if (c->spec.method != SPEC_NONE && !runner_has_prompt_rows(&e->runner)) {
        seterr(err, "--speculative-config: speculative decoding runs on the CPU only so far (its verification "
               "needs a logits row per proposal); pass --device cpu");
        goto fail;
    }
    SchedConfig sc = {.max_num_batched_tokens = c->max_num_batched_tokens, .max_num_seqs = c->max_num_seqs,
                      .block_size = c->block_size, .num_blocks = runner_num_blocks(&e->runner),
                      .enable_prefix_caching = c->enable_prefix_caching, .max_model_len = c->max_model_len,
                      .long_prefill_token_threshold = c->long_prefill_token_threshold,
                      .kv_window = engine_kv_window(mc)};
    if (sched_init(&e->sched, &sc, err) != SL_OK) goto fail;

    snprintf(in->arch, sizeof in->arch, "%s", mc->arch);
    in->vocab = vocab;
    in->model_vocab = mc->vocab;
    in->context_len = mc->context_len;
    in->max_model_len = c->max_model_len;
    in->max_num_seqs = c->max_num_seqs;
    in->max_num_batched_tokens = c->max_num_batched_tokens;
    in->block_size = c->block_size;
    in->num_blocks = runner_num_blocks(&e->runner);
    in->kv_cache_bytes = e->runner.kv_bytes;
    in->threads = in->device == ENGINE_DEVICE_CUDA ? 0 : threads_per_rank * c->tensor_parallel_size;
    in->tensor_parallel_size = c->tensor_parallel_size;
    in->load_format = e->src.format;
    in->spec_k = c->spec.method != SPEC_NONE ? c->spec.num_speculative_tokens : 0;

    sampler_scratch_init(&e->scratch, vocab);
    e->row_copy = xmalloc_aligned((size_t)vocab * sizeof(float));
    e->eog_ids = xmalloc((size_t)vocab * sizeof(int32_t));
    for (int id = 0; id < vocab; id++)
        if (tok_is_eog(e->tok, id)) e->eog_ids[e->n_eog++] = id;
    e->ban = xmalloc(((size_t)e->n_eog + STOP_MAX_TOKEN_IDS) * sizeof(int32_t));
    e->detok_cap = detok_out_cap(e->tok);
    e->detok_buf = xmalloc((size_t)e->detok_cap);
    e->sampled = xcalloc((size_t)c->max_num_seqs, sizeof(int32_t));
    e->prompt_rows = xcalloc((size_t)c->max_num_seqs, sizeof(int));
    e->stop_flags = xcalloc((size_t)c->max_num_seqs, sizeof(bool));
    e->touched = xcalloc((size_t)c->max_num_seqs + 1, sizeof(EngineRequest *));
    e->mask_row = xcalloc((size_t)c->max_num_seqs, sizeof(int));
    mask_worker_init(&e->masks, c->max_num_seqs, vocab);
    e->so = so_create(e, e->tok, vocab, c->structured_output_cache_size, c->structured_output_compile_timeout);

    log_info("engine: %s (%s), %s, tensor parallel %d, max_model_len %d, max_num_seqs %d, max_num_batched_tokens %d, "
             "block size %d, prefix caching %s, %d threads", mc->arch, load_format_name(e->src.format),
             engine_device_name(in->device), c->tensor_parallel_size, c->max_model_len, c->max_num_seqs,
             c->max_num_batched_tokens, c->block_size, c->enable_prefix_caching ? "on" : "off", in->threads);
    runner_log_plan(&e->runner, c->max_model_len);
    if (c->spec.method != SPEC_NONE) engine_spec_log(e);
    engine_publish_stats(e);

    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        seterr(err, "engine: cannot start the engine thread");
        goto fail;
    }
    e->thread_started = true;
    // exec -> ready is logged by the server; this is engine_create's part of it
    double total = time_now_s() - t0;
    char graphs[64] = "";
    if (in->device == ENGINE_DEVICE_CUDA) snprintf(graphs, sizeof graphs, " + CUDA graphs %.2f s", in->graph_s);
    log_info("start-up: engine %.2f s = weights %.2f s (%s %.2f s, %s %.2f s) + tokenizer %.2f s + allocation %.2f s "
             "(KV cache, buffers%s)%s", total, in->load_s, e->src.format == LOAD_DUMMY ? "generating" : "opening",
             open_s, in->device == ENGINE_DEVICE_CUDA ? "upload" : c->tensor_parallel_size > 1 ? "sharding" : "binding",
             in->load_s - open_s, tok_s, in->alloc_s, c->tensor_parallel_size > 1 ? ", rank threads" : "", graphs);
    *out = e;
    return SL_OK;
fail:
    engine_free(e);
    return SL_ERR;
}

void engine_destroy(Engine *e) {
    if (!e) return;
    pthread_mutex_lock(&e->inbox_mu);
    e->stopping = true;
    pthread_cond_broadcast(&e->inbox_cv);
    pthread_mutex_unlock(&e->inbox_mu);
    if (e->thread_started) pthread_join(e->thread, NULL);
    so_destroy(e->so); // parked requests end with an abort; none reaches the inbox any more
    e->so = NULL;

    // The engine thread is gone: this thread plays its part. Requests still in the inbox are
    // admitted first so that every unfinished request ends the same way, with an abort.
    for (EngineRequest *r = e->inbox_head, *next; r; r = next) {
        next = r->inbox_next;
        char err[ERR_MAX];
        CHECK(sched_add(&e->sched, &r->seq, err) == SL_OK, "%s", err);
        engine_map_put(&e->map, r);
        r->active_next = e->active_head;
        if (e->active_head) e->active_head->active_prev = r;
        e->active_head = r;
    }
    e->inbox_head = e->inbox_tail = NULL;
    while (e->active_head) engine_abort_now(e, e->active_head->id);
    engine_free(e);
}

const EngineInfo *engine_info(const Engine *e) { return &e->info; }
const Tokenizer *engine_tokenizer(const Engine *e) { return e->tok; }
const char *engine_chat_template(const Engine *e) { return e->text.chat_template; }

const char *engine_chat_template_origin(const Engine *e) {
    return e->text.chat_template ? e->text.template_origin : "";
}
