// engine_request.c: the id map of live requests, each request's outbox (what the engine thread
// appends and the consumer takes), and the consumer's calls: take, wait, release. See engine.h
// for the contract and engine_impl.h for the structures.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/common.h"
#include "engine/engine_impl.h"

const char *engine_finish_name(EngineFinish f) {
    switch (f) {
    case ENGINE_FINISH_NONE: return "";
    case ENGINE_FINISH_STOP: return "stop";
    case ENGINE_FINISH_LENGTH: return "length";
    case ENGINE_FINISH_ABORT: return "abort";
    }
    return "?";
}

// ----------------------------------------------------------------------------
// the id map

static void map_grow(ReqMap *m) {
    ReqMap old = *m;
    m->cap = old.cap ? old.cap * 2 : 64;
    m->n = 0;
    m->keys = xcalloc(m->cap, sizeof(int64_t));
    m->vals = xcalloc(m->cap, sizeof(EngineRequest *));
    for (uint32_t i = 0; i < old.cap; i++)
        if (old.keys[i]) engine_map_put(m, old.vals[i]);
    free(old.keys);
    free(old.vals);
}

void engine_map_put(ReqMap *m, EngineRequest *r) {
    if (2 * (m->n + 1) > m->cap) map_grow(m);
    uint32_t i = (uint32_t)engine_mix64((uint64_t)r->id) & (m->cap - 1);
    while (m->keys[i]) i = (i + 1) & (m->cap - 1);
    m->keys[i] = r->id;
    m->vals[i] = r;
    m->n++;
}

static int64_t map_slot(const ReqMap *m, int64_t id) {
    if (!m->cap) return -1;
    uint32_t i = (uint32_t)engine_mix64((uint64_t)id) & (m->cap - 1);
    while (m->keys[i]) {
        if (m->keys[i] == id) return i;
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

EngineRequest *engine_map_get(const ReqMap *m, int64_t id) {
    int64_t i = map_slot(m, id);
    return i < 0 ? NULL : m->vals[i];
}

void engine_map_del(ReqMap *m, int64_t id) {
    int64_t slot = map_slot(m, id);
    CHECK(slot >= 0, "request %lld is not in the map", (long long)id);
    uint32_t i = (uint32_t)slot, mask = m->cap - 1;
    m->keys[i] = 0;
    m->n--;
    // backward shift: pull later members of the probe run into the hole when their home allows it
    for (uint32_t j = (i + 1) & mask; m->keys[j]; j = (j + 1) & mask) {
        uint32_t home = (uint32_t)engine_mix64((uint64_t)m->keys[j]) & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->keys[i] = m->keys[j];
            m->vals[i] = m->vals[j];
            m->keys[j] = 0;
            i = j;
        }
    }
}

// ----------------------------------------------------------------------------
// requests: allocation and the outbox

void engine_outbox_init(ChoiceBuf *b, int max_output, bool logprobs) {
    b->cap_tokens = MAX(max_output, 1);
    b->tokens = xmalloc((size_t)b->cap_tokens * sizeof(int32_t));
    if (logprobs) {
        b->cap_logprobs = MIN(b->cap_tokens, 16);
        b->logprobs = xmalloc((size_t)b->cap_logprobs * sizeof(SampleLogprobs));
    }
    b->text_cap = 256;
    b->text = xmalloc(b->text_cap);
    b->text[0] = '\0';
}

static void outbox_free(ChoiceBuf *b) {
    free(b->tokens);
    free(b->logprobs);
    free(b->text);
}

void engine_request_free_state(EngineRequest *r) {
    seq_free(&r->seq);
    bool constrained = false;
    if (r->samples)
        for (int i = 0; i < r->n; i++) {
            sampler_state_free(&r->samples[i].sampler);
            stop_text_free(&r->samples[i].text);
            constrained |= r->samples[i].gm != NULL;
            grammar_matcher_free(r->samples[i].gm);
        }
    if (constrained) atomic_fetch_sub(&r->engine->n_constrained, 1);
    free(r->samples);
    r->samples = NULL;
}

void engine_request_destroy(EngineRequest *r) {
    engine_request_free_state(r);
    stop_spec_free(&r->stop);
    free(r->bias_ids);
    free(r->bias_vals);
    free(r->plp);
    for (int i = 0; i < r->n; i++) {
        outbox_free(&r->pending[i]);
        outbox_free(&r->taken[i]);
    }
    free(r->pending);
    free(r->taken);
    free(r->state);
    free(r->view);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

void engine_request_unref(EngineRequest *r) {
    if (atomic_fetch_sub(&r->refs, 1) == 1) engine_request_destroy(r);
}

// Appends a sampled token (and its logprobs) to a choice's pending half. Under r->mu.
void engine_outbox_push_token(EngineRequest *r, int si, int32_t tok, const SampleLogprobs *lp) {
    ChoiceBuf *b = &r->pending[si];
    CHECK(b->n_tokens < b->cap_tokens, "outbox of request %lld is full", (long long)r->id);
    if (lp) {
        if (b->n_tokens == b->cap_logprobs) {
            b->cap_logprobs = MIN(2 * b->cap_logprobs, b->cap_tokens);
            b->logprobs = xrealloc(b->logprobs, (size_t)b->cap_logprobs * sizeof(SampleLogprobs));
        }
        b->logprobs[b->n_tokens] = *lp;
    }
    b->tokens[b->n_tokens++] = tok;
    r->state[si].num_tokens++;
    r->has_new = true;
}

void engine_outbox_push_text(EngineRequest *r, int si, const char *text, size_t n) {
    if (n == 0) return;
    ChoiceBuf *b = &r->pending[si];
    if (b->text_len + n + 1 > b->text_cap) {
        while (b->text_len + n + 1 > b->text_cap) b->text_cap *= 2;
        b->text = xrealloc(b->text, b->text_cap);
    }
    memcpy(b->text + b->text_len, text, n);
    b->text_len += n;
    b->text[b->text_len] = '\0';
    r->has_new = true;
}

int64_t engine_request_id(const EngineRequest *r) { return r->id; }

void engine_request_end_early(EngineRequest *r, int code, const char *msg) {
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->n; i++) r->state[i].finish = ENGINE_FINISH_ABORT;
    if (code) {
        snprintf(r->error, sizeof r->error, "%s", msg ? msg : "");
        r->out.error = code;
        r->out.error_msg = r->error;
    }
    r->finished = true;
    r->has_new = true;
    r->out.t_finished = time_now_s();
    pthread_cond_broadcast(&r->cv);
    if (r->notify) r->notify(r->notify_ctx);
    pthread_mutex_unlock(&r->mu);
    engine_request_free_state(r);
    engine_request_unref(r);
}

int engine_request_status(EngineRequest *r, const char **msg) {
    pthread_mutex_lock(&r->mu);
    int st = r->out.error ? r->out.error : r->admitted ? 1 : r->finished ? ENGINE_ERR_STOPPED : 0;
    if (msg) *msg = r->out.error ? r->error : NULL;
    pthread_mutex_unlock(&r->mu);
    return st;
}

void engine_request_release(EngineRequest *r) {
    pthread_mutex_lock(&r->mu);
    bool finished = r->finished;
    r->notify = NULL; // the consumer is gone: never call it again
    pthread_mutex_unlock(&r->mu);
    if (!finished) engine_abort(r->engine, r->id);
    engine_request_unref(r);
}

bool engine_request_take(EngineRequest *r, EngineOutput *out) {
    pthread_mutex_lock(&r->mu);
    bool any = r->has_new;
    r->has_new = false;
    for (int i = 0; i < r->n; i++) {
        ChoiceBuf t = r->taken[i];
        r->taken[i] = r->pending[i];
        r->pending[i] = t;
        r->pending[i].n_tokens = 0;
        r->pending[i].text_len = 0;
        r->pending[i].text[0] = '\0';
        const ChoiceBuf *b = &r->taken[i];
        const ChoiceState *st = &r->state[i];
        r->view[i] = (EngineChoice){.index = i, .tokens = b->tokens, .n_tokens = b->n_tokens,
                                    .logprobs = r->want_logprobs ? b->logprobs : NULL, .text = b->text,
                                    .text_len = b->text_len, .finish = st->finish, .stop_token = st->stop_token,
                                    .stop_str = st->stop_str, .num_tokens = st->num_tokens};
    }
    *out = r->out;
    out->prompt_logprobs = NULL;
    if (r->plp_ready && !r->plp_given) { // once: the rows never change after plp_ready
        out->prompt_logprobs = r->plp;
        r->plp_given = true;
    }
    out->choices = r->view;
    out->n_choices = r->n;
    out->finished = r->finished;
    pthread_mutex_unlock(&r->mu);
    return any;
}

bool engine_request_wait(EngineRequest *r, double timeout_s) {
    struct timespec deadline = time_mono_timespec(time_now_s() + (timeout_s >= 0 ? timeout_s : 0));
    pthread_mutex_lock(&r->mu);
    while (!r->has_new && !r->finished) {
        if (timeout_s < 0) pthread_cond_wait(&r->cv, &r->mu);
        else if (pthread_cond_timedwait(&r->cv, &r->mu, &deadline) != 0) break;
    }
    bool any = r->has_new;
    pthread_mutex_unlock(&r->mu);
    return any;
}
