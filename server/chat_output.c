// chat_output.c: parsed chat output, whole and streamed (see chat_output.h), and the reasoning
// parser (tool_parse.h's ReasonParser): thinking text split from the answer.
//
// Like the tool-call machine, the reasoning parser decides only on text that is there (a
// half-written "</think>" is held), so a stream's reasoning and content deltas add up to the
// non-streamed message.
#define _GNU_SOURCE // memmem
#include <stdlib.h>
#include <string.h>

#include "server/chat_output.h"

// ----------------------------------------------------------------------------
// reasoning

#define THINK_OPEN "<think>"
#define THINK_CLOSE "</think>"

enum { R_START = 0, R_THINK, R_LEAD, R_CONTENT };

ReasonFormat reason_format_from_name(const char *name) {
    if (name && !strcmp(name, "deepseek_r1")) return REASON_DEEPSEEK_R1;
    if (name && !strcmp(name, "qwen3")) return REASON_QWEN3;
    return REASON_NONE;
}

void reason_parser_init(ReasonParser *p, ReasonFormat fmt) {
    memset(p, 0, sizeof *p);
    p->fmt = fmt;
}

void reason_parser_free(ReasonParser *p) {
    sbuf_free(&p->hold);
    sbuf_free(&p->reasoning);
    memset(p, 0, sizeof *p);
}

// The longest end of h that is a proper prefix of tag.
static size_t partial_tag(const SBuf *h, const char *tag) {
    size_t l = strlen(tag);
    for (size_t k = MIN(l - 1, h->len); k > 0; k--)
        if (!memcmp(h->data + h->len - k, tag, k)) return k;
    return 0;
}

void reason_parser_feed(ReasonParser *p, const char *s, size_t n, bool final, SBuf *content) {
    SBuf *h = &p->hold;
    sbuf_put(h, s, n);
    for (;;) {
        if (p->state == R_START) {
            size_t l = strlen(THINK_OPEN), k = MIN(l, h->len);
            bool prefix = !memcmp(h->data ? h->data : "", THINK_OPEN, k);
            if (prefix && k < l && !final) return; // "<thi" may still become "<think>"
            if (prefix && k == l) {
                sbuf_consume(h, l);
                p->state = R_THINK;
            } else {
                p->state = p->fmt == REASON_DEEPSEEK_R1 ? R_THINK : R_CONTENT;
            }
        } else if (p->state == R_THINK) {
            const char *hit = h->len ? memmem(h->data, h->len, THINK_CLOSE, strlen(THINK_CLOSE)) : NULL;
            if (!hit) {
                size_t keep = final ? 0 : partial_tag(h, THINK_CLOSE);
                sbuf_put(&p->reasoning, h->data, h->len - keep);
                sbuf_consume(h, h->len - keep);
                return;
            }
            size_t k = (size_t)(hit - h->data);
            sbuf_put(&p->reasoning, h->data, k);
            sbuf_consume(h, k + strlen(THINK_CLOSE));
            p->state = R_LEAD;
        } else if (p->state == R_LEAD) {
            size_t k = strspn(h->data ? h->data : "", " \n\t\r");
            sbuf_consume(h, MIN(k, h->len));
            if (!h->len) return;
            p->state = R_CONTENT;
        } else {
            sbuf_put(content, h->data, h->len);
            sbuf_reset(h);
            return;
        }
    }
}

// ----------------------------------------------------------------------------
// a choice's output

bool chat_out_wanted(const ChatOutConfig *c) { return c->tool_fmt != TOOL_FMT_NONE || c->reason_fmt != REASON_NONE; }

void chat_out_init(ChatOut *o, const ChatOutConfig *c) {
    memset(o, 0, sizeof *o);
    o->cfg = *c;
    if (c->reason_fmt != REASON_NONE) reason_parser_init(&o->rp, c->reason_fmt);
    if (c->tool_fmt != TOOL_FMT_NONE) tool_parser_init(&o->tp, c->tool_fmt, c->single, c->named);
}

void chat_out_free(ChatOut *o) {
    reason_parser_free(&o->rp);
    tool_parser_free(&o->tp);
    sbuf_free(&o->plain);
    sbuf_free(&o->mid);
    free(o->sent_args);
    free(o->ids);
    free(o->view);
    memset(o, 0, sizeof *o);
}

static const SBuf *content(const ChatOut *o) { return o->cfg.tool_fmt != TOOL_FMT_NONE ? &o->tp.content : &o->plain; }

// Room and an id for every call the parser has found.
static void track_calls(ChatOut *o) {
    int n = o->tp.n_calls;
    if (n > o->cap) {
        int cap = MAX(n, 2 * o->cap);
        o->sent_args = xrealloc(o->sent_args, sizeof(size_t) * (size_t)cap);
        o->ids = xrealloc(o->ids, sizeof *o->ids * (size_t)cap);
        o->view = xrealloc(o->view, sizeof(RespToolCall) * (size_t)cap);
        for (int k = o->cap; k < cap; k++) {
            o->sent_args[k] = 0;
            resp_new_id(o->ids[k], sizeof o->ids[k], "call_");
        }
        o->cap = cap;
    }
}

void chat_out_feed(ChatOut *o, const char *s, size_t n, bool final) {
    if (o->cfg.reason_fmt != REASON_NONE) {
        sbuf_reset(&o->mid);
        reason_parser_feed(&o->rp, s, n, final, &o->mid);
        s = o->mid.data;
        n = o->mid.len;
    }
    if (o->cfg.tool_fmt != TOOL_FMT_NONE) tool_parser_feed(&o->tp, s, n, final);
    else sbuf_put(&o->plain, s, n);
    track_calls(o);
    o->final |= final;
}

static RespToolCall call_view(ChatOut *o, int k) {
    const ToolCallOut *c = &o->tp.calls[k];
    return (RespToolCall){.id = o->ids[k], .name = c->name, .args = c->args.data, .args_len = c->args.len};
}

static void role(ChatOut *o, SBuf *out, const RespMeta *m, int index, bool call) {
    if (o->role_sent) return;
    resp_sse_chat_role(out, m, index, call);
    o->role_sent = true;
}

void chat_out_stream(ChatOut *o, SBuf *out, const RespMeta *m, const RespChoice *step) {
    RespChoice d = *step; // the logprobs go with the first content or reasoning delta only
    bool forced = o->cfg.tool_fmt == TOOL_FMT_ARGS || o->cfg.tool_fmt == TOOL_FMT_JSON_ARRAY; // a call from the start
    const SBuf *parts[2] = {&o->rp.reasoning, content(o)};
    size_t *done[2] = {&o->sent_reasoning, &o->sent_content};
    for (int p = 0; p < 2; p++) {
        if (parts[p]->len <= *done[p]) continue;
        d.text = parts[p]->data + *done[p];
        d.text_len = parts[p]->len - *done[p];
        d.reasoning_delta = p == 0;
        role(o, out, m, step->index, false);
        resp_sse_delta(out, m, &d);
        *done[p] = parts[p]->len;
        d.tokens = NULL, d.n_tokens = 0;
    }
    for (int k = 0; k < o->tp.n_calls; k++) {
        RespToolCall tc = call_view(o, k);
        if (k >= o->sent_calls) {
            role(o, out, m, step->index, true);
            resp_sse_tool_delta(out, m, step->index, k, &tc, "", 0);
            o->sent_calls = k + 1;
        }
        if (tc.args_len > o->sent_args[k]) {
            resp_sse_tool_delta(out, m, step->index, k, NULL, tc.args + o->sent_args[k], tc.args_len - o->sent_args[k]);
            o->sent_args[k] = tc.args_len;
        }
    }
    if (d.tokens) { // held-back text and call text still have their tokens' logprobs
        d.text = "";
        d.text_len = 0;
        d.reasoning_delta = false;
        role(o, out, m, step->index, forced);
        resp_sse_delta(out, m, &d);
    }
    if (o->final) role(o, out, m, step->index, forced); // an empty message still has its role chunk
}

void chat_out_view(ChatOut *o, RespChoice *rc) {
    const SBuf *c = content(o);
    rc->text = c->data ? c->data : "";
    rc->text_len = c->len;
    rc->parsed = true;
    rc->has_reasoning = o->cfg.reason_fmt != REASON_NONE;
    rc->reasoning = o->rp.reasoning.data;
    rc->reasoning_len = o->rp.reasoning.len;
    for (int k = 0; k < o->tp.n_calls; k++) o->view[k] = call_view(o, k);
    rc->calls = o->view;
    rc->n_calls = o->tp.n_calls;
}

const char *chat_out_finish(const ChatOut *o, const char *engine_reason) {
    if (o->tp.n_calls > 0 && o->cfg.tool_fmt != TOOL_FMT_ARGS && engine_reason && !strcmp(engine_reason, "stop"))
        return "tool_calls";
    return engine_reason;
}
