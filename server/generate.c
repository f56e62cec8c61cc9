// generate.c: POST /v1/chat/completions and /v1/completions from body to last byte.
//
//   gen_prepare on a worker thread (work.c): validate (openai.c), admission (before tokenizing:
//               sequences), prompt (chat template, tokenizer), context check.
//   gen_start   back on the event thread: admission (prompt tokens), engine_submit; then
//               either queue an SSE response whose reader drains the engine, or suspend
//               until the outputs are complete (non-streaming). Nothing is sent before every
//               check has passed, so a bad request is a plain 4xx even with stream=true.
//   gen_notify  the engine thread's wake-up (request mutex held): resume the connection if it
//               is suspended, else note that something is pending. Never blocks.
//   gen_reader  MHD's content reader for streams: send buffered bytes, else take new outputs
//               and format them, else suspend (or note the stream's end).
//   gen_pump    takes every part's new outputs: SSE events (streaming), accumulated text
//               (non-streaming), or only bookkeeping (orphans, for the live thread).
// A request whose client went away is aborted (gen_abort) and becomes an orphan: the live
// thread (live.c) takes its last outputs and frees it once the engine has finished it.
#include <stdlib.h>
#include <string.h>

#include "server/server_impl.h"

// ----------------------------------------------------------------------------
// admission: sequences admitted and not finished, prompt tokens admitted and not started

static int admit(Server *s, int seqs, long tokens, bool reserve, ApiError *e) {
    pthread_mutex_lock(&s->mu);
    int limit = s->info.max_num_seqs + s->opt.max_queued_requests;
    // one request bigger than a limit still runs alone: an empty queue always admits
    bool over_seqs = s->queued_seqs > 0 && s->queued_seqs + seqs > limit;
    bool over_tokens = tokens > 0 && s->queued_tokens > 0 && s->queued_tokens + tokens > s->opt.max_queued_tokens;
    if (!over_seqs && !over_tokens && reserve) {
        s->queued_seqs += seqs;
        s->queued_tokens += tokens;
    }
    int queued = s->queued_seqs;
    long queued_tokens = s->queued_tokens;
    pthread_mutex_unlock(&s->mu);
    if (over_seqs)
        return api_error(e, 429, "rate_limit_exceeded", "rate_limit_exceeded", NULL,
                         "The server is overloaded: %d sequences are running or waiting (limit %d). Please retry "
                         "after a short wait.", queued, limit);
    if (over_tokens)
        return api_error(e, 429, "rate_limit_exceeded", "rate_limit_exceeded", NULL,
                         "The server is overloaded: %ld prompt tokens are waiting (limit %d). Please retry after a "
                         "short wait.", queued_tokens, s->opt.max_queued_tokens);
    return SL_OK;
}

static void release_part_tokens(GenReq *g, GenPart *p) {
    if (p->started) return;
    p->started = true;
    pthread_mutex_lock(&g->srv->mu);
    g->srv->queued_tokens -= p->n_prompt;
    pthread_mutex_unlock(&g->srv->mu);
}

static void release_seqs(GenReq *g) {
    if (!g->seqs_held) return;
    pthread_mutex_lock(&g->srv->mu);
    g->srv->queued_seqs -= g->seqs_held;
    pthread_mutex_unlock(&g->srv->mu);
    g->seqs_held = 0;
}

// ----------------------------------------------------------------------------
// taking outputs

static void gen_notify(void *ctx) {
    GenReq *g = ctx;
    pthread_mutex_lock(&g->mu);
    if (g->suspended) {
        g->suspended = false;
        MHD_resume_connection(g->conn);
    } else {
        g->pending = true;
    }
    pthread_mutex_unlock(&g->mu);
}

static void token_fill(const Tokenizer *tok, const SampleLogprobs *lp, RespToken *t) {
    t->token = lp->token;
    t->piece = tok_piece(tok, lp->token, &t->piece_len);
    t->logprob = lp->logprob;
    t->n_top = MAX(0, MIN(lp->n_top, OAI_MAX_LOGPROBS));
    t->no_logprob = lp->n_top < 0; // a prompt's first token: nothing predicts it
    t->rank = lp->rank;
    for (int k = 0; k < t->n_top; k++) {
        t->top_token[k] = lp->top_ids[k];
        t->top_piece[k] = tok_piece(tok, lp->top_ids[k], &t->top_len[k]);
        t->top_logprob[k] = lp->top_logprobs[k];
    }
}

// The prompt's tokens as logprobs entries, k alternatives each; the first has none (null).
static void prompt_tokens_fill(const Tokenizer *tok, const SampleLogprobs *plp, int n, int k, RespToken *t) {
    for (int i = 0; i < n; i++) {
        token_fill(tok, &plp[i], &t[i]);
        t[i].n_top = MIN(t[i].n_top, k);
    }
}

static RespChoice choice_view(const GenReq *g, const GenChoice *gc, int index) {
    RespChoice rc = {.index = index, .stop_token = -1};
    if (gc->finished) {
        rc.finish_reason = engine_finish_name(gc->finish);
        rc.stop_token = gc->stop_token;
        if (gc->stop_str >= 0 && gc->stop_str < g->req.n_stop) rc.stop_str = g->req.stop[gc->stop_str];
        if (gc->co) rc.finish_reason = chat_out_finish(gc->co, rc.finish_reason);
    }
    return rc;
}

// One choice's new output: an SSE delta (streaming) or appended text and logprobs.
// stream_options.continuous_usage_stats: the usage so far of the choice whose chunk goes out next
// (vLLM's: the prompt, and this choice's output tokens).
static void live_usage(GenReq *g, int index) {
    if (!g->meta.continuous_usage) return;
    const GenPart *p = &g->parts[index / g->req.n];
    g->meta.live = (RespUsage){.prompt_tokens = p->n_prompt, .completion_tokens = g->choices[index].num_tokens,
                               .cached_tokens = p->last.cached_tokens};
}

static void choice_output(GenReq *g, GenChoice *gc, int index, const EngineChoice *ec, bool emit) {
    const Tokenizer *tok = g->srv->tok;
    bool lp = g->req.logprobs >= 0 && ec->logprobs && ec->n_tokens > 0;
    gc->num_tokens = ec->num_tokens;
    if (!emit || g->req.max_tokens == 0) return; // echo with max_tokens 0: the prompt alone
    if (gc->co) chat_out_feed(gc->co, ec->text, ec->text_len, ec->finish != ENGINE_FINISH_NONE);
    if (!g->req.stream) {
        if (!gc->co) sbuf_put(&gc->text, ec->text, ec->text_len);
        for (int i = 0; lp && i < ec->n_tokens; i++) {
            if (gc->n_toks == gc->cap_toks) {
                gc->cap_toks = MAX(16, 2 * gc->cap_toks);
                gc->toks = xrealloc(gc->toks, sizeof(RespToken) * (size_t)gc->cap_toks);
            }
            token_fill(tok, &ec->logprobs[i], &gc->toks[gc->n_toks++]);
        }
        return;
    }
    if (ec->text_len == 0 && !lp && !gc->co) return;
    if (lp && ec->n_tokens > g->cap_scratch) {
        g->cap_scratch = MAX(ec->n_tokens, 2 * g->cap_scratch);
        g->scratch = xrealloc(g->scratch, sizeof(RespToken) * (size_t)g->cap_scratch);
    }
    for (int i = 0; lp && i < ec->n_tokens; i++) token_fill(tok, &ec->logprobs[i], &g->scratch[i]);
    RespChoice rc = {.index = index, .text = ec->text, .text_len = ec->text_len, .stop_token = -1,
                     .tokens = lp ? g->scratch : NULL, .n_tokens = lp ? ec->n_tokens : 0,
                     .text_offset = gc->text_offset};
    live_usage(g, index);
    if (gc->co) chat_out_stream(gc->co, &g->out, &g->meta, &rc);
    else resp_sse_delta(&g->out, &g->meta, &rc);
    for (int i = 0; lp && i < ec->n_tokens; i++)
        gc->text_offset += utf8_count_chars(rc.tokens[i].piece, rc.tokens[i].piece_len);
}

static int finish_metric(EngineFinish f) {
    return f == ENGINE_FINISH_STOP ? METRICS_FINISH_STOP : f == ENGINE_FINISH_LENGTH ? METRICS_FINISH_LENGTH
                                                                                    : METRICS_FINISH_ABORT;
}

static void part_done(GenReq *g, int pi) {
    const GenPart *p = &g->parts[pi];
    const EngineOutput *o = &p->last;
    int n = g->req.n, finish[n];
    for (int j = 0; j < n; j++) finish[j] = finish_metric(g->choices[pi * n + j].finish);
    double a = o->t_arrival;
    if (o->grammar_compile_s > 0) metrics_observe_compile(&g->srv->metrics, o->grammar_compile_s);
    metrics_request_done(&g->srv->metrics, o->t_first_token > 0 ? o->t_first_token - a : -1,
                         o->t_finished > 0 ? o->t_finished - a : -1, o->t_scheduled > 0 ? o->t_scheduled - a : -1,
                         o->prompt_tokens, o->completion_tokens, finish, n);
}

static RespUsage usage_sum(const GenReq *g) {
    RespUsage u = {0};
    for (int i = 0; i < g->n_parts; i++) {
        u.prompt_tokens += g->parts[i].last.prompt_tokens;
        u.completion_tokens += g->parts[i].last.completion_tokens;
        u.cached_tokens += g->parts[i].last.cached_tokens;
    }
    return u;
}

void gen_pump(GenReq *g, bool emit) {
    int n = g->req.n;
    for (int pi = 0; pi < g->n_parts; pi++) {
        GenPart *p = &g->parts[pi];
        EngineOutput o;
        if (p->finished || !engine_request_take(p->er, &o)) continue;
        int new_tokens = 0;
        for (int k = 0; k < o.n_choices; k++) new_tokens += o.choices[k].n_tokens;
        double now = time_now_s();
        if (new_tokens > 0 || o.finished) release_part_tokens(g, p);
        if (new_tokens > 0) {
            if (p->t_last_tokens > 0) metrics_observe_itl(&g->srv->metrics, now - p->t_last_tokens, new_tokens);
            p->t_last_tokens = now;
        }
        for (int k = 0; k < o.n_choices; k++) {
            const EngineChoice *ec = &o.choices[k];
            CHECK(ec->index >= 0 && ec->index < n, "choice index %d of n=%d", ec->index, n);
            int index = pi * n + ec->index;
            GenChoice *gc = &g->choices[index];
            if (gc->finished) continue;
            // The role chunk goes out with the choice's first output, not before the prefill:
            // a client's TTFT (vLLM's: first chunk with choices) must include the prompt. A parsed
            // choice's comes with its first delta (chat_out_stream), once it is known to be text
            // or a call (chat's max_tokens is at least 1, so there is one).
            if (emit && g->req.stream && g->req.kind == OAI_CHAT && !gc->role_sent && !gc->co &&
                ec->finish != ENGINE_FINISH_ABORT && (ec->n_tokens > 0 || ec->finish != ENGINE_FINISH_NONE)) {
                live_usage(g, index);
                resp_sse_chat_role(&g->out, &g->meta, index, false);
                gc->role_sent = true;
            }
            choice_output(g, gc, index, ec, emit);
            if (ec->finish == ENGINE_FINISH_NONE) continue;
            gc->finished = true;
            gc->finish = ec->finish;
            gc->stop_token = ec->stop_token;
            gc->stop_str = ec->stop_str;
            if (ec->finish == ENGINE_FINISH_ABORT) g->aborted = true;
            if (emit && g->req.stream && ec->finish != ENGINE_FINISH_ABORT) {
                RespChoice rc = choice_view(g, gc, index);
                live_usage(g, index);
                resp_sse_finish(&g->out, &g->meta, &rc);
            }
        }
        p->last = o;
        p->last.choices = NULL; // valid only until the next take
        if (o.prompt_logprobs && !p->plp) {
            p->plp = xmalloc(sizeof(SampleLogprobs) * (size_t)p->n_prompt);
            memcpy(p->plp, o.prompt_logprobs, sizeof(SampleLogprobs) * (size_t)p->n_prompt);
        }
        p->last.prompt_logprobs = NULL;
        // max_tokens 0 runs one token (the engine always samples after a prompt) that nobody sees
        if (g->req.max_tokens == 0) p->last.completion_tokens = 0;
        if (o.finished) {
            p->finished = true;
            part_done(g, pi);
        }
    }
    bool all = true;
    for (int pi = 0; pi < g->n_parts; pi++) all &= g->parts[pi].finished;
    if (!all || g->all_finished) return;
    g->all_finished = true;
    release_seqs(g);
    if (!emit || !g->req.stream) return;
    if (g->aborted) {
        pthread_mutex_lock(&g->mu);
        bool shutdown = g->shutdown;
        pthread_mutex_unlock(&g->mu);
        resp_sse_error(&g->out,
                       shutdown ? "The server is shutting down; the request was aborted before it finished."
                                : "The request was aborted before it finished.",
                       "server_error", NULL);
    } else if (g->req.include_usage) {
        RespUsage u = usage_sum(g);
        resp_sse_usage(&g->out, &g->meta, &u);
    }
    resp_sse_done(&g->out);
    g->ended = true;
}

// ----------------------------------------------------------------------------
// streaming: MHD's content reader

static void stream_begin(GenReq *g) {
    for (int i = 0; i < g->n_choices && g->req.kind != OAI_CHAT; i++) {
        const GenPart *p = &g->parts[i / g->req.n];
        if (!p->echo) continue;
        RespChoice rc = {.index = i, .text = p->echo, .text_len = p->echo_len, .stop_token = -1};
        live_usage(g, i);
        resp_sse_delta(&g->out, &g->meta, &rc);
        g->choices[i].text_offset = utf8_count_chars(p->echo, p->echo_len);
    }
    g->stream_started = true;
}

static ssize_t gen_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    GenReq *g = cls;
    for (;;) {
        if (g->out.len > 0) {
            size_t n = MIN(max, g->out.len);
            memcpy(buf, g->out.data, n);
            sbuf_consume(&g->out, n);
            g->t_sent = time_now_s();
            return (ssize_t)n;
        }
        if (g->ended) return MHD_CONTENT_READER_END_OF_STREAM;
        pthread_mutex_lock(&g->mu);
        bool gone = g->client_gone, keepalive = g->keepalive_due;
        g->keepalive_due = false;
        pthread_mutex_unlock(&g->mu);
        if (gone) return MHD_CONTENT_READER_END_WITH_ERROR;
        if (!g->stream_started) {
            stream_begin(g);
            continue;
        }
        gen_pump(g, true);
        if (g->out.len > 0 || g->ended) continue;
        if (keepalive) {
            resp_sse_keepalive(&g->out);
            continue;
        }
        pthread_mutex_lock(&g->mu);
        if (g->pending) { // the engine had more while we were taking
            g->pending = false;
            pthread_mutex_unlock(&g->mu);
            continue;
        }
        g->suspended = true;
        g->t_last_send = g->t_sent;
        MHD_suspend_connection(g->conn);
        pthread_mutex_unlock(&g->mu);
        return 0;
    }
}

// ----------------------------------------------------------------------------
// non-streaming: suspend until every choice has finished, then one JSON body

static enum MHD_Result reply_final(GenReq *g, struct MHD_Connection *c) {
    Server *s = g->srv;
    if (g->aborted) {
        ApiError e;
        pthread_mutex_lock(&g->mu);
        bool shutdown = g->shutdown;
        pthread_mutex_unlock(&g->mu);
        api_error(&e, 503, "server_error", "service_unavailable", NULL, "%s",
                  shutdown ? "The server is shutting down; the request was aborted before it finished."
                           : "The request was aborted before it finished.");
        return http_reply_error(c, s, &e);
    }
    RespChoice *rc = xcalloc((size_t)g->n_choices, sizeof(RespChoice));
    RespToken **own = xcalloc((size_t)g->n_choices * 2, sizeof(RespToken *)); // freed below
    const OaiRequest *r = &g->req;
    for (int i = 0; i < g->n_choices; i++) {
        GenChoice *gc = &g->choices[i];
        const GenPart *p = &g->parts[i / r->n];
        rc[i] = choice_view(g, gc, i);
        rc[i].text = gc->text.data ? gc->text.data : "";
        rc[i].text_len = gc->text.len;
        if (gc->co) chat_out_view(gc->co, &rc[i]);
        if (r->logprobs >= 0 && r->echo && p->plp) { // the prompt's tokens first, then the output's
            int np = p->n_prompt;
            RespToken *t = own[2 * i] = xmalloc(sizeof(RespToken) * (size_t)(np + gc->n_toks));
            prompt_tokens_fill(g->srv->tok, p->plp, np, r->logprobs, t);
            if (gc->n_toks) memcpy(t + np, gc->toks, sizeof(RespToken) * (size_t)gc->n_toks);
            rc[i].tokens = t;
            rc[i].n_tokens = np + gc->n_toks;
            rc[i].text_offset = 0;
        } else if (r->logprobs >= 0) {
            rc[i].tokens = gc->toks;
            rc[i].n_tokens = gc->n_toks;
            rc[i].text_offset = utf8_count_chars(p->echo, p->echo_len);
        }
        if (r->prompt_logprobs >= 0 && p->plp) {
            RespToken *t = own[2 * i + 1] = xmalloc(sizeof(RespToken) * (size_t)p->n_prompt);
            prompt_tokens_fill(g->srv->tok, p->plp, p->n_prompt, r->prompt_logprobs, t);
            rc[i].prompt_lp = t;
            rc[i].n_prompt_lp = p->n_prompt;
        }
    }
    RespUsage u = usage_sum(g);
    SBuf b = {0};
    if (g->req.kind == OAI_CHAT) resp_chat_body(&b, &g->meta, rc, g->n_choices, &u);
    else resp_completion_body(&b, &g->meta, rc, g->n_choices, &u);
    for (int i = 0; i < 2 * g->n_choices; i++) free(own[i]);
    free(own);
    free(rc);
    enum MHD_Result ret = http_reply_json(c, s, 200, &b);
    sbuf_free(&b);
    return ret;
}

// A constrained request's parts wait for their grammar to compile before the engine takes them.
// Returns 1 once every part is queued, 0 while one still waits, or SL_ERR with e filled when a
// grammar was refused (invalid: 400 naming the field that held it; too slow: 408).
static int grammar_status(GenReq *g, ApiError *e) {
    if (g->req.grammar_kind == GRAMMAR_NONE || g->grammar_ready) return 1;
    bool ready = true;
    for (int i = 0; i < g->n_parts; i++) {
        const char *msg = NULL;
        int st = engine_request_status(g->parts[i].er, &msg);
        if (st == ENGINE_ERR_GRAMMAR_TIMEOUT)
            return api_error(e, 408, NULL, "timeout", g->req.grammar_param, "%s", msg);
        if (st == ENGINE_ERR_GRAMMAR)
            return api_error(e, 400, NULL, "invalid_value", g->req.grammar_param, "Invalid '%s': %s",
                             g->req.grammar_param, msg);
        if (st == ENGINE_ERR_STOPPED) // aborted while it waited (shutdown)
            return api_error(e, 503, "server_error", "service_unavailable", NULL,
                             "The request was aborted before it started.");
        ready &= st == 1;
    }
    g->grammar_ready = ready;
    return ready ? 1 : 0;
}

static enum MHD_Result queue_stream(Server *s, GenReq *g, struct MHD_Connection *c);

static enum MHD_Result wait_or_reply(GenReq *g, struct MHD_Connection *c) {
    for (;;) {
        ApiError e;
        int gs = grammar_status(g, &e);
        if (gs < 0) { // nothing was sent yet: a plain error, and the other parts go
            gen_abort(g);
            g->refused = true;
            return http_reply_error(c, g->srv, &e);
        }
        if (gs == 1 && g->req.stream) return queue_stream(g->srv, g, c);
        if (!g->req.stream) gen_pump(g, true);
        if (g->all_finished) return reply_final(g, c);
        pthread_mutex_lock(&g->mu);
        if (g->client_gone) {
            pthread_mutex_unlock(&g->mu);
            return MHD_NO; // closes the connection; the completion callback aborts the request
        }
        if (g->pending) {
            g->pending = false;
            pthread_mutex_unlock(&g->mu);
            continue;
        }
        g->suspended = true;
        MHD_suspend_connection(c);
        pthread_mutex_unlock(&g->mu);
        return MHD_YES;
    }
}

enum MHD_Result gen_resume(Server *s, HttpConn *hc, struct MHD_Connection *c) {
    (void)s;
    if (hc->gen->refused) return MHD_YES; // its error is queued already
    return wait_or_reply(hc->gen, c);
}

// ----------------------------------------------------------------------------
// start, end, abort

static int submit_error(int rc, const char *err, const OaiRequest *r, ApiError *e) {
    if (rc == ENGINE_ERR_CONTEXT)
        return api_error(e, 400, NULL, "context_length_exceeded", r->kind == OAI_CHAT ? "messages" : "prompt", "%s", err);
    if (rc == ENGINE_ERR_STOPPED)
        return api_error(e, 503, "server_error", "service_unavailable", NULL, "%s", err);
    if (rc == ENGINE_ERR_GRAMMAR) // a grammar that failed before (cached): refused at once
        return api_error(e, 400, NULL, "invalid_value", r->grammar_param, "Invalid '%s': %s", r->grammar_param, err);
    // the engine's messages name the parameter as "Invalid 'name': ..."
    char param[OAI_PARAM_MAX] = "";
    const char *q = strchr(err, '\''), *q2 = q ? strchr(q + 1, '\'') : NULL;
    if (q2 && q2 - q - 1 < (long)sizeof param) memcpy(param, q + 1, (size_t)(q2 - q - 1));
    return api_error(e, 400, NULL, "invalid_value", param[0] ? param : NULL, "%s", err);
}

static void engine_params_from(const OaiRequest *r, EngineParams *ep) {
    engine_params_defaults(ep);
    SamplingParams *sp = &ep->sampling;
    *sp = sampling_params_default();
    sp->temperature = r->temperature;
    sp->top_p = r->top_p;
    sp->min_p = r->min_p;
    sp->top_k = r->top_k;
    sp->presence_penalty = r->presence_penalty;
    sp->frequency_penalty = r->frequency_penalty;
    sp->repetition_penalty = r->repetition_penalty;
    sp->n_logit_bias = r->n_bias;
    sp->logit_bias_ids = r->bias_ids;
    sp->logit_bias_vals = r->bias_vals;
    sp->has_seed = r->has_seed;
    sp->seed = r->seed;
    sp->logprobs = r->logprobs;
    // echo with logprobs shows the prompt's logprobs: the engine computes the larger k of the two
    ep->prompt_logprobs = MAX(r->prompt_logprobs, r->echo ? r->logprobs : -1);
    ep->min_tokens = r->min_tokens;
    ep->n = r->n;
    ep->priority = r->priority;
    ep->ignore_eos = r->ignore_eos;
    ep->stop_token_ids = r->stop_token_ids;
    ep->n_stop_token_ids = r->n_stop_token_ids;
    ep->stop = (const char *const *)r->stop;
    ep->n_stop = r->n_stop;
    ep->include_stop_str_in_output = r->include_stop_str_in_output;
    ep->skip_special_tokens = r->skip_special_tokens;
    ep->cache_salt = r->cache_salt;
    ep->grammar_kind = r->grammar_kind;
    ep->grammar = r->grammar;
    ep->grammar_len = r->grammar_len;
}

// What a chat choice's output is read back as: forced calls (tool_choice required / named) in
// the grammar's format whatever the flags; calls in --tool-call-parser's format for "auto" when
// --enable-auto-tool-choice is on; thinking text with --reasoning-parser (not under a forced call,
// whose grammar leaves no room for it).
static ChatOutConfig chat_out_config(const Server *s, const OaiRequest *r) {
    ChatOutConfig cc = {0};
    if (r->kind != OAI_CHAT) return cc;
    cc.single = !r->parallel_tool_calls;
    cc.reason_fmt = s->reason_fmt;
    if (r->tool_choice == OAI_TOOL_CHOICE_NAMED) cc.tool_fmt = TOOL_FMT_ARGS, cc.named = r->tool_name;
    else if (r->tool_choice == OAI_TOOL_CHOICE_REQUIRED) cc.tool_fmt = TOOL_FMT_JSON_ARRAY;
    else if (r->tool_choice == OAI_TOOL_CHOICE_AUTO) cc.tool_fmt = s->tool_fmt;
    if (cc.tool_fmt == TOOL_FMT_ARGS || cc.tool_fmt == TOOL_FMT_JSON_ARRAY) cc.reason_fmt = REASON_NONE;
    return cc;
}

// --enable-log-requests: the prompt as a JSON string, cut to --max-log-len characters (vLLM
// slices the Python string: code points, so a character is never split).
static void log_prompt_add(GenReq *g, const char *text, size_t len) {
    int max = g->srv->opt.max_log_len;
    size_t cut = max >= 0 ? utf8_prefix_len(text, len, (size_t)max) : len;
    if (g->log_prompt.len) sbuf_puts(&g->log_prompt, ",");
    json_str(&g->log_prompt, text, cut);
}

// The token ids of part i (malloc'd), its echo text when asked, and the context check.
static int part_prompt(Server *s, GenReq *g, int i, int32_t **ids, int *n, int *max_out, ApiError *e) {
    const OaiRequest *r = &g->req;
    GenPart *p = &g->parts[i];
    char *text = NULL;
    size_t len = 0;
    *ids = NULL;
    if (r->kind == OAI_CHAT) {
        if (chat_render(&s->chat, r, &text, &len, e) != SL_OK) return SL_ERR;
        // the template writes BOS itself when the model wants one; add_special_tokens adds another
        int *v = NULL, cap = 0;
        *n = tok_encode(s->tok, text, len, r->add_special_tokens && tok_add_bos(s->tok), true, &v, &cap);
        *ids = (int32_t *)v;
        if (s->opt.enable_log_requests) log_prompt_add(g, text, len);
        free(text);
    } else if (r->prompts[i].text) {
        *ids = server_encode(s, r->prompts[i].text, r->prompts[i].len, r->add_special_tokens, n);
        if (r->echo) p->echo = xstrndup(r->prompts[i].text, r->prompts[i].len), p->echo_len = r->prompts[i].len;
    } else {
        *n = r->prompts[i].n_ids;
        *ids = xmalloc(sizeof(int32_t) * (size_t)*n);
        memcpy(*ids, r->prompts[i].ids, sizeof(int32_t) * (size_t)*n);
        if (r->echo) p->echo = tok_decode(s->tok, (const int *)*ids, *n, false, &p->echo_len);
    }
    if (s->opt.enable_log_requests && r->kind != OAI_CHAT) {
        if (r->prompts[i].text) {
            log_prompt_add(g, r->prompts[i].text, r->prompts[i].len);
        } else { // token ids: the text they stand for
            size_t tlen = 0;
            char *t = tok_decode(s->tok, (const int *)*ids, *n, false, &tlen);
            log_prompt_add(g, t, tlen);
            free(t);
        }
    }
    int keep = r->truncate_prompt_tokens < 0 ? s->info.max_model_len : r->truncate_prompt_tokens;
    if (keep > 0 && *n > keep) { // vLLM keeps the prompt's end
        memmove(*ids, *ids + (*n - keep), sizeof(int32_t) * (size_t)keep);
        *n = keep;
    }
    p->n_prompt = *n;
    return oai_check_context(r, *n, s->info.max_model_len, s->opt.max_tokens, max_out, e);
}

// The response id, as vLLM: "<prefix><X-Request-Id>", else "<prefix><request_id>" from the body,
// else the id the headers phase made (so that an early error and the response name the same id).
// Without a client header the response's X-Request-Id is this id.
static void request_id(HttpConn *hc, const OaiRequest *r, RespMeta *m) {
    const char *prefix = r->kind == OAI_CHAT ? "chatcmpl-" : "cmpl-";
    const char *base = hc->client_id ? hc->client_id : r->request_id;
    if (base) snprintf(m->id, sizeof m->id, "%s%.*s", prefix, (int)(sizeof m->id - 1 - strlen(prefix)), base);
    else snprintf(m->id, sizeof m->id, "%s", hc->req_id);
    if (!hc->client_id) snprintf(hc->req_id, sizeof hc->req_id, "%s", m->id);
}

static enum MHD_Result queue_stream(Server *s, GenReq *g, struct MHD_Connection *c) {
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4 * 1024, gen_reader, g, NULL);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    access_decorate(s, c, resp, 200);
    enum MHD_Result ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    metrics_http_status(&s->metrics, 200);
    return ret;
}

// gen_prepare's result: the request and its prompts' tokens, or the error to answer.
typedef struct GenPrep {
    GenReq *g;                   // NULL: refused before any tokenizing
    int32_t **ids;               // (g->n_parts) each part's prompt tokens
    int *n_ids, *max_out;
    long tokens;
    int rc;
    ApiError e;
} GenPrep;

void gen_prepare(Server *s, HttpConn *hc, OaiKind kind) {
    GenPrep *p = hc->prep = xcalloc(1, sizeof *p);
    OaiLimits lim = {.vocab = s->info.vocab, .max_n = s->opt.max_n, .max_tokens = s->opt.max_tokens,
                     .model_names = (const char *const *)s->names.items, .n_model_names = s->names.n};
    GenReq *g = xcalloc(1, sizeof *g);
    g->srv = s;
    g->fd = -1;
    pthread_mutex_init(&g->mu, NULL);
    OaiRequest *r = &g->req;
    p->rc = oai_parse(kind, hc->body.data, hc->body.len, &lim, r, &p->e);
    sbuf_free(&hc->body);
    g->n_parts = kind == OAI_CHAT ? 1 : r->n_prompts;
    if (p->rc != SL_OK || admit(s, g->n_parts * r->n, 0, false, &p->e) != SL_OK) { // refused before tokenizing
        p->rc = SL_ERR;
        g->n_parts = 0;
        gen_free(g);
        return;
    }
    p->g = g;
    g->parts = xcalloc((size_t)g->n_parts, sizeof(GenPart));
    p->ids = xcalloc((size_t)g->n_parts, sizeof(int32_t *));
    p->n_ids = xcalloc((size_t)g->n_parts, sizeof(int));
    p->max_out = xcalloc((size_t)g->n_parts, sizeof(int));
    for (int i = 0; p->rc == SL_OK && i < g->n_parts; i++) {
        p->rc = part_prompt(s, g, i, &p->ids[i], &p->n_ids[i], &p->max_out[i], &p->e);
        p->tokens += p->n_ids[i];
    }
}

// The prompts' arrays (the request itself is gen_start's, or freed there).
static void prep_arrays_free(GenPrep *p) {
    for (int i = 0; p->ids && i < p->g->n_parts; i++) free(p->ids[i]);
    free(p->ids);
    free(p->n_ids);
    free(p->max_out);
}

void gen_prep_free(GenPrep *p) {
    if (!p) return;
    if (p->g) {
        prep_arrays_free(p);
        for (int i = 0; i < p->g->n_parts; i++) p->g->parts[i].started = true; // nothing reserved
        gen_free(p->g);
    }
    free(p);
}

enum MHD_Result gen_start(Server *s, HttpConn *hc, struct MHD_Connection *c) {
    GenPrep *p = hc->prep;
    hc->prep = NULL;
    ApiError e = p->e;
    GenReq *g = p->g;
    if (!g) {
        free(p);
        return http_reply_error(c, s, &e);
    }
    OaiRequest *r = &g->req;
    OaiKind kind = r->kind;
    int rc = p->rc, seqs = g->n_parts * r->n;
    int32_t **ids = p->ids;
    int *n_ids = p->n_ids, *max_out = p->max_out;
    if (rc == SL_OK) rc = admit(s, seqs, p->tokens, true, &e);
    if (rc == SL_OK) {
        g->seqs_held = seqs;
        g->n_choices = seqs;
        g->choices = xcalloc((size_t)seqs, sizeof(GenChoice));
        ChatOutConfig cc = chat_out_config(s, r);
        for (int i = 0; i < seqs; i++) {
            GenChoice *gc = &g->choices[i];
            const GenPart *p = &g->parts[i / r->n];
            gc->stop_token = gc->stop_str = -1;
            if (chat_out_wanted(&cc)) chat_out_init(gc->co = xmalloc(sizeof(ChatOut)), &cc);
            if (p->echo && !r->stream) sbuf_put(&gc->text, p->echo, p->echo_len); // streams send it first
        }
        // vLLM reports the name the request used (any served name), else the first
        resp_meta_init(&g->meta, kind, r->model ? r->model : s->model_name, "fp_sluice", r->stream && r->include_usage);
        g->meta.continuous_usage = r->stream && r->continuous_usage;
        g->meta.tokens_as_ids = r->tokens_as_ids;
        request_id(hc, r, &g->meta);
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        g->fd = ci ? ci->connect_fd : -1;
        g->interim_ok = hc->http11;
        g->conn = c; // before submit: a notify may come at once
        g->t_sent = g->t_last_send = g->t_last_peek = time_now_s();
    } else {
        for (int i = 0; i < g->n_parts; i++) g->parts[i].started = true; // nothing reserved
    }
    EngineParams ep;
    engine_params_from(r, &ep);
    // mistral's [TOOL_CALLS] is a control token: the parser has to see it (vLLM does the same)
    if (g->n_choices && g->choices[0].co && g->choices[0].co->cfg.tool_fmt == TOOL_FMT_MISTRAL)
        ep.skip_special_tokens = false;
    int submitted = 0;
    for (int i = 0; rc == SL_OK && i < g->n_parts; i++) {
        char err[ERR_MAX];
        GenPart *p = &g->parts[i];
        ep.max_tokens = r->max_tokens == 0 ? 1 : max_out[i];
        ep.min_tokens = MIN(r->min_tokens, max_out[i]);
        int src = engine_submit(s->engine, ids[i], n_ids[i], &ep, gen_notify, g, &p->er, err);
        if (src != SL_OK) {
            rc = submit_error(src, err, r, &e);
            break;
        }
        p->id = engine_request_id(p->er);
        submitted++;
    }
    prep_arrays_free(p);
    free(p);
    if (rc != SL_OK) {
        for (int i = submitted; i < g->n_parts; i++) {
            release_part_tokens(g, &g->parts[i]);
            g->parts[i].finished = true;
        }
        pthread_mutex_lock(&g->mu);
        g->conn = NULL;
        pthread_mutex_unlock(&g->mu);
        if (submitted == 0) {
            gen_free(g);
        } else { // an orphan from the start: the live thread frees it once the engine is done
            gen_abort(g);
            live_add(s, g);
        }
        return http_reply_error(c, s, &e);
    }
    hc->gen = g;
    live_add(s, g);
    return wait_or_reply(g, c);
}

void gen_stats(const GenReq *g, GenStats *st) {
    RespUsage u = usage_sum(g);
    memset(st, 0, sizeof *st);
    st->prompt_tokens = u.prompt_tokens;
    st->cached_tokens = u.cached_tokens;
    st->completion_tokens = u.completion_tokens;
    for (int i = 0; i < g->n_parts; i++) {
        double t = g->parts[i].last.t_first_token;
        if (t > 0 && (st->t_first_token == 0 || t < st->t_first_token)) st->t_first_token = t;
    }
    size_t k = 0;
    for (int i = 0; i < g->n_choices && k + 8 < sizeof st->finish; i++) {
        const GenChoice *gc = &g->choices[i];
        // a choice still running when the connection ends is aborted right after this line
        const char *f = gc->finished ? engine_finish_name(gc->finish) : "abort";
        k += (size_t)snprintf(st->finish + k, sizeof st->finish - k, "%s%s", i ? "," : "", f);
    }
    if (k >= sizeof st->finish) k = sizeof st->finish - 1;
    if (!k) snprintf(st->finish, sizeof st->finish, "-");
    st->prompt = g->log_prompt.len ? g->log_prompt.data : NULL;
    st->prompt_list = g->req.kind != OAI_CHAT;
}

void gen_abort(GenReq *g) {
    for (int i = 0; i < g->n_parts; i++)
        if (g->parts[i].er) engine_abort(g->srv->engine, g->parts[i].id);
}

void gen_conn_closed(GenReq *g, bool ok) {
    (void)ok; // a stream that went out whole has all_finished; anything else is aborted
    if (!g->all_finished) gen_abort(g);
    pthread_mutex_lock(&g->mu);
    g->conn = NULL;
    g->suspended = false;
    pthread_mutex_unlock(&g->mu);
    // from here on the live thread owns g
}

void gen_free(GenReq *g) {
    for (int i = 0; i < g->n_parts; i++) {
        if (g->parts && g->parts[i].er) engine_request_release(g->parts[i].er);
        if (g->parts) {
            release_part_tokens(g, &g->parts[i]);
            free(g->parts[i].echo);
            free(g->parts[i].plp);
        }
    }
    release_seqs(g);
    for (int i = 0; i < g->n_choices; i++) {
        sbuf_free(&g->choices[i].text);
        free(g->choices[i].toks);
        if (g->choices[i].co) chat_out_free(g->choices[i].co);
        free(g->choices[i].co);
    }
    free(g->choices);
    free(g->parts);
    free(g->scratch);
    sbuf_free(&g->out);
    sbuf_free(&g->log_prompt);
    oai_request_free(&g->req);
    pthread_mutex_destroy(&g->mu);
    free(g);
}
