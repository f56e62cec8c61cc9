// respond.c: response JSON and SSE framing (see respond.h).
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "server/openai_impl.h"
#include "server/respond.h"

// ----------------------------------------------------------------------------
// SBuf

void sbuf_free(SBuf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

void sbuf_reset(SBuf *b) {
    b->len = 0;
    if (b->data) b->data[0] = 0;
}

static void sbuf_reserve(SBuf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = MAX(b->cap * 2, b->len + extra + 1);
    cap = MAX(cap, 256);
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

void sbuf_put(SBuf *b, const void *p, size_t n) {
    sbuf_reserve(b, n);
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

void sbuf_puts(SBuf *b, const char *s) { sbuf_put(b, s, strlen(s)); }

void sbuf_printf(SBuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    CHECK(n >= 0);
    sbuf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void sbuf_consume(SBuf *b, size_t n) {
    CHECK(n <= b->len);
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = 0;
}

// ----------------------------------------------------------------------------
// JSON values

void json_str(SBuf *b, const char *s, size_t n) {
    static const char HEX[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    sbuf_reserve(b, n + 2);
    sbuf_put(b, "\"", 1);
    size_t run = 0; // start of the pending run of bytes that need no escape
    for (size_t i = 0; i < n;) {
        unsigned char c = u[i];
        const char *esc = NULL;
        char ubuf[7];
        int step = 1;
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c == '\b') esc = "\\b";
        else if (c == '\f') esc = "\\f";
        else if (c < 0x20) {
            snprintf(ubuf, sizeof ubuf, "\\u%c%c%c%c", '0', '0', HEX[c >> 4], HEX[c & 15]);
            esc = ubuf;
        } else if (c >= 0x80) {
            int bad = 1;
            step = utf8_char_len(u + i, n - i, &bad);
            if (step <= 0) {
                esc = "\xEF\xBF\xBD"; // U+FFFD for each maximal ill-formed subpart, as Python decodes
                step = step < 0 ? -step : bad; // a character cut off at the end is one subpart
            } else if (step == 3 && c == 0xE2 && u[i + 1] == 0x80 && (u[i + 2] == 0xA8 || u[i + 2] == 0xA9)) {
                esc = u[i + 2] == 0xA8 ? "\\u2028" : "\\u2029";
            }
        }
        if (esc) {
            sbuf_put(b, s + run, i - run);
            sbuf_puts(b, esc);
            run = i + (size_t)step;
        }
        i += (size_t)step;
    }
    sbuf_put(b, s + run, n - run);
    sbuf_put(b, "\"", 1);
}

void json_float(SBuf *b, float v) {
    if (!isfinite(v)) {
        sbuf_puts(b, "-9999.0");
        return;
    }
    char buf[32];
    if (v == floorf(v) && fabsf(v) < 1e7f) { // -10.0, not -1e+01
        snprintf(buf, sizeof buf, "%.1f", (double)v);
        sbuf_puts(b, buf);
        return;
    }
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    sbuf_puts(b, buf);
    // a JSON number that reads as a float in Python (-1.0, not -1), as OpenAI's bodies do
    if (!strpbrk(buf, ".en")) sbuf_puts(b, ".0");
}

static void json_cstr(SBuf *b, const char *s) {
    if (s) json_str(b, s, strlen(s));
    else sbuf_puts(b, "null");
}

// ----------------------------------------------------------------------------
// shared pieces

void resp_new_id(char *out, size_t cap, const char *prefix) {
    unsigned char rnd[12];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        // no entropy source: the clock and a counter still keep ids distinct in this process
        static unsigned long counter;
        unsigned long c = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
        double t = time_now_s();
        memcpy(rnd, &t, 8);
        memcpy(rnd + 8, &c, 4);
    }
    int k = snprintf(out, cap, "%s", prefix);
    for (size_t i = 0; i < sizeof rnd && (size_t)k < cap; i++) k += snprintf(out + k, cap - (size_t)k, "%02x", rnd[i]);
}

void resp_meta_init(RespMeta *m, OaiKind kind, const char *model, const char *fingerprint, bool include_usage) {
    memset(m, 0, sizeof *m);
    resp_new_id(m->id, sizeof m->id, kind == OAI_CHAT ? "chatcmpl-" : "cmpl-");
    m->kind = kind;
    m->created = (int64_t)time(NULL);
    m->model = model;
    m->fingerprint = fingerprint;
    m->include_usage = include_usage;
}

// {"id":…,"object":…,"created":…,"model":…,"system_fingerprint":… (no closing brace)
static void head(SBuf *b, const RespMeta *m, bool chunk) {
    sbuf_puts(b, "{\"id\":");
    json_cstr(b, m->id);
    sbuf_puts(b, m->kind == OAI_CHAT ? (chunk ? ",\"object\":\"chat.completion.chunk\"" : ",\"object\":\"chat.completion\"")
                                     : ",\"object\":\"text_completion\"");
    sbuf_printf(b, ",\"created\":%lld,\"model\":", (long long)m->created);
    json_cstr(b, m->model);
    sbuf_puts(b, ",\"system_fingerprint\":");
    json_cstr(b, m->fingerprint);
}

static void usage(SBuf *b, const RespUsage *u) {
    sbuf_printf(b,
                "{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d,"
                "\"prompt_tokens_details\":{\"cached_tokens\":%d}}",
                u->prompt_tokens, u->completion_tokens, u->prompt_tokens + u->completion_tokens, u->cached_tokens);
}

static void token_bytes(SBuf *b, const char *p, size_t n) {
    sbuf_put(b, "[", 1);
    for (size_t i = 0; i < n; i++) sbuf_printf(b, i ? ",%u" : "%u", (unsigned char)p[i]);
    sbuf_put(b, "]", 1);
}

// A token as logprobs name it: its text, or with return_tokens_as_token_ids "token_id:N" (vLLM's
// form, for clients that need ids where a piece is not valid UTF-8), written into buf. Chat's
// "bytes" are those of whichever name it got, as in vLLM.
static const char *token_label(const RespMeta *m, int32_t id, const char *piece, size_t *len, char buf[32]) {
    if (!m->tokens_as_ids) return piece;
    *len = (size_t)snprintf(buf, 32, "token_id:%d", (int)id);
    return buf;
}

// chat: {"content":[{token, logprob, bytes, top_logprobs:[…]}…],"refusal":null}
static void chat_logprobs(SBuf *b, const RespMeta *m, const RespChoice *c) {
    if (!c->tokens) {
        sbuf_puts(b, "null");
        return;
    }
    char buf[32];
    sbuf_puts(b, "{\"content\":[");
    for (int i = 0; i < c->n_tokens; i++) {
        const RespToken *t = &c->tokens[i];
        size_t len = t->piece_len;
        const char *name = token_label(m, t->token, t->piece, &len, buf);
        sbuf_puts(b, i ? ",{\"token\":" : "{\"token\":");
        json_str(b, name, len);
        sbuf_puts(b, ",\"logprob\":");
        json_float(b, t->logprob);
        sbuf_puts(b, ",\"bytes\":");
        token_bytes(b, name, len);
        sbuf_puts(b, ",\"top_logprobs\":[");
        for (int k = 0; k < t->n_top; k++) {
            len = t->top_len[k];
            name = token_label(m, t->top_token[k], t->top_piece[k], &len, buf);
            sbuf_puts(b, k ? ",{\"token\":" : "{\"token\":");
            json_str(b, name, len);
            sbuf_puts(b, ",\"logprob\":");
            json_float(b, t->top_logprob[k]);
            sbuf_puts(b, ",\"bytes\":");
            token_bytes(b, name, len);
            sbuf_put(b, "}", 1);
        }
        sbuf_puts(b, "]}");
    }
    sbuf_puts(b, "],\"refusal\":null}");
}

// completions: one token's name as a JSON string
static void completion_token(SBuf *b, const RespMeta *m, int32_t id, const char *piece, size_t len) {
    char buf[32];
    const char *name = token_label(m, id, piece, &len, buf);
    json_str(b, name, len);
}

// completions: {"tokens":[…],"token_logprobs":[…],"top_logprobs":[{piece:lp}…],"text_offset":[…]}
static void completion_logprobs(SBuf *b, const RespMeta *m, const RespChoice *c) {
    if (!c->tokens) {
        sbuf_puts(b, "null");
        return;
    }
    sbuf_puts(b, "{\"tokens\":[");
    for (int i = 0; i < c->n_tokens; i++) {
        if (i) sbuf_put(b, ",", 1);
        completion_token(b, m, c->tokens[i].token, c->tokens[i].piece, c->tokens[i].piece_len);
    }
    sbuf_puts(b, "],\"token_logprobs\":[");
    for (int i = 0; i < c->n_tokens; i++) {
        if (i) sbuf_put(b, ",", 1);
        if (c->tokens[i].no_logprob) sbuf_puts(b, "null");
        else json_float(b, c->tokens[i].logprob);
    }
    sbuf_puts(b, "],\"top_logprobs\":[");
    for (int i = 0; i < c->n_tokens; i++) {
        const RespToken *t = &c->tokens[i];
        if (t->no_logprob) { // echo: nothing predicts the prompt's first token
            sbuf_puts(b, i ? ",null" : "null");
            continue;
        }
        sbuf_puts(b, i ? ",{" : "{");
        bool chosen_listed = false;
        for (int k = 0; k < t->n_top; k++) {
            if (k) sbuf_put(b, ",", 1);
            completion_token(b, m, t->top_token[k], t->top_piece[k], t->top_len[k]);
            sbuf_put(b, ":", 1);
            json_float(b, t->top_logprob[k]);
            // a key appears once: the same piece (or id) is the chosen token's entry already
            chosen_listed |= m->tokens_as_ids ? t->top_token[k] == t->token
                                              : t->top_len[k] == t->piece_len &&
                                                    !memcmp(t->top_piece[k], t->piece, t->piece_len);
        }
        if (!chosen_listed) { // OpenAI lists the chosen token too
            if (t->n_top) sbuf_put(b, ",", 1);
            completion_token(b, m, t->token, t->piece, t->piece_len);
            sbuf_put(b, ":", 1);
            json_float(b, t->logprob);
        }
        sbuf_put(b, "}", 1);
    }
    // positions in the text as the client's language indexes it: code points (vLLM's Python
    // string lengths), not bytes
    sbuf_puts(b, "],\"text_offset\":[");
    size_t off = c->text_offset;
    for (int i = 0; i < c->n_tokens; i++) {
        sbuf_printf(b, i ? ",%zu" : "%zu", off);
        off += utf8_count_chars(c->tokens[i].piece, c->tokens[i].piece_len);
    }
    sbuf_puts(b, "]}");
}

static void prompt_lp_entry(SBuf *b, int32_t id, float lp, int rank, const char *piece, size_t len) {
    sbuf_printf(b, "\"%d\":{\"logprob\":", id);
    json_float(b, lp);
    sbuf_printf(b, ",\"rank\":%d,\"decoded_token\":", rank);
    json_str(b, piece, len);
    sbuf_put(b, "}", 1);
}

// vLLM's prompt_logprobs: [null, {"<id>": {"logprob", "rank", "decoded_token"}, ...}, ...], the prompt
// token first, then the top-k alternatives (ranks 1..k) that are not it.
static void prompt_logprobs(SBuf *b, const RespChoice *c) {
    sbuf_puts(b, ",\"prompt_logprobs\":[");
    for (int i = 0; i < c->n_prompt_lp; i++) {
        const RespToken *t = &c->prompt_lp[i];
        if (i) sbuf_put(b, ",", 1);
        if (t->no_logprob) {
            sbuf_puts(b, "null");
            continue;
        }
        sbuf_put(b, "{", 1);
        prompt_lp_entry(b, t->token, t->logprob, t->rank, t->piece, t->piece_len);
        for (int k = 0; k < t->n_top; k++)
            if (t->top_token[k] != t->token) {
                sbuf_put(b, ",", 1);
                prompt_lp_entry(b, t->top_token[k], t->top_logprob[k], k + 1, t->top_piece[k], t->top_len[k]);
            }
        sbuf_put(b, "}", 1);
    }
    sbuf_put(b, "]", 1);
}

static void stop_reason(SBuf *b, const RespChoice *c) {
    sbuf_puts(b, ",\"stop_reason\":");
    if (c->stop_str) json_cstr(b, c->stop_str);
    else if (c->stop_token >= 0) sbuf_printf(b, "%d", c->stop_token);
    else sbuf_puts(b, "null");
}

// ----------------------------------------------------------------------------
// non-streaming bodies

// message.reasoning_content and message.tool_calls of a parsed chat choice
static void message_parts(SBuf *b, const RespChoice *c) {
    if (c->has_reasoning) {
        sbuf_puts(b, ",\"reasoning_content\":");
        if (c->reasoning_len) json_str(b, c->reasoning, c->reasoning_len);
        else sbuf_puts(b, "null");
    }
    if (c->n_calls == 0) return;
    sbuf_puts(b, ",\"tool_calls\":[");
    for (int k = 0; k < c->n_calls; k++) {
        const RespToolCall *t = &c->calls[k];
        sbuf_puts(b, k ? ",{\"id\":" : "{\"id\":");
        json_cstr(b, t->id);
        sbuf_puts(b, ",\"type\":\"function\",\"function\":{\"name\":");
        json_cstr(b, t->name);
        sbuf_puts(b, ",\"arguments\":");
        json_str(b, t->args ? t->args : "", t->args_len);
        sbuf_puts(b, "}}");
    }
    sbuf_put(b, "]", 1);
}

void resp_chat_body(SBuf *b, const RespMeta *m, const RespChoice *c, int n, const RespUsage *u) {
    head(b, m, false);
    sbuf_puts(b, ",\"choices\":[");
    for (int i = 0; i < n; i++) {
        sbuf_printf(b, "%s{\"index\":%d,\"message\":{\"role\":\"assistant\",\"content\":", i ? "," : "", c[i].index);
        if (c[i].parsed && c[i].text_len == 0) sbuf_puts(b, "null");
        else json_str(b, c[i].text ? c[i].text : "", c[i].text_len);
        message_parts(b, &c[i]);
        sbuf_puts(b, ",\"refusal\":null},\"logprobs\":");
        chat_logprobs(b, m, &c[i]);
        sbuf_puts(b, ",\"finish_reason\":");
        json_cstr(b, c[i].finish_reason);
        stop_reason(b, &c[i]);
        sbuf_put(b, "}", 1);
    }
    sbuf_put(b, "]", 1);
    if (n > 0 && c[0].prompt_lp) prompt_logprobs(b, &c[0]); // vLLM: one list for the response
    sbuf_puts(b, ",\"usage\":");
    usage(b, u);
    sbuf_put(b, "}", 1);
}

void resp_completion_body(SBuf *b, const RespMeta *m, const RespChoice *c, int n, const RespUsage *u) {
    head(b, m, false);
    sbuf_puts(b, ",\"choices\":[");
    for (int i = 0; i < n; i++) {
        sbuf_printf(b, "%s{\"index\":%d,\"text\":", i ? "," : "", c[i].index);
        json_str(b, c[i].text ? c[i].text : "", c[i].text_len);
        sbuf_puts(b, ",\"logprobs\":");
        completion_logprobs(b, m, &c[i]);
        sbuf_puts(b, ",\"finish_reason\":");
        json_cstr(b, c[i].finish_reason);
        stop_reason(b, &c[i]);
        if (c[i].prompt_lp) prompt_logprobs(b, &c[i]);
        sbuf_put(b, "}", 1);
    }
    sbuf_puts(b, "],\"usage\":");
    usage(b, u);
    sbuf_put(b, "}", 1);
}

void resp_error_body(SBuf *b, const ApiError *e) {
    sbuf_puts(b, "{\"error\":{\"message\":");
    json_cstr(b, e->message);
    sbuf_puts(b, ",\"type\":");
    json_cstr(b, e->type ? e->type : "invalid_request_error");
    sbuf_puts(b, ",\"param\":");
    json_cstr(b, e->param[0] ? e->param : NULL);
    sbuf_puts(b, ",\"code\":");
    json_cstr(b, e->code);
    sbuf_puts(b, "}}");
}

// ----------------------------------------------------------------------------
// SSE

static void chunk_tail(SBuf *b, const RespMeta *m) {
    if (m->continuous_usage) {
        sbuf_puts(b, "],\"usage\":");
        usage(b, &m->live);
        sbuf_puts(b, "}\n\n");
        return;
    }
    sbuf_puts(b, m->include_usage ? "],\"usage\":null}\n\n" : "]}\n\n");
}

void resp_sse_chat_role(SBuf *b, const RespMeta *m, int index, bool null_content) {
    sbuf_puts(b, "data: ");
    head(b, m, true);
    sbuf_printf(b,
                ",\"choices\":[{\"index\":%d,\"delta\":{\"role\":\"assistant\",\"content\":%s},\"logprobs\":null,"
                "\"finish_reason\":null}",
                index, null_content ? "null" : "\"\"");
    chunk_tail(b, m);
}

void resp_sse_delta(SBuf *b, const RespMeta *m, const RespChoice *c) {
    sbuf_puts(b, "data: ");
    head(b, m, true);
    if (m->kind == OAI_CHAT) {
        sbuf_printf(b, ",\"choices\":[{\"index\":%d,\"delta\":{\"%s\":", c->index,
                    c->reasoning_delta ? "reasoning_content" : "content");
        json_str(b, c->text ? c->text : "", c->text_len);
        sbuf_puts(b, "},\"logprobs\":");
        chat_logprobs(b, m, c);
        sbuf_puts(b, ",\"finish_reason\":null}");
    } else {
        sbuf_printf(b, ",\"choices\":[{\"index\":%d,\"text\":", c->index);
        json_str(b, c->text ? c->text : "", c->text_len);
        sbuf_puts(b, ",\"logprobs\":");
        completion_logprobs(b, m, c);
        sbuf_puts(b, ",\"finish_reason\":");
        json_cstr(b, c->finish_reason);
        if (c->finish_reason) stop_reason(b, c);
        sbuf_put(b, "}", 1);
    }
    chunk_tail(b, m);
}

void resp_sse_tool_delta(SBuf *b, const RespMeta *m, int index, int call, const RespToolCall *tc, const char *args,
                         size_t args_len) {
    sbuf_puts(b, "data: ");
    head(b, m, true);
    sbuf_printf(b, ",\"choices\":[{\"index\":%d,\"delta\":{\"tool_calls\":[{\"index\":%d,", index, call);
    if (tc) {
        sbuf_puts(b, "\"id\":");
        json_cstr(b, tc->id);
        sbuf_puts(b, ",\"type\":\"function\",\"function\":{\"name\":");
        json_cstr(b, tc->name);
        sbuf_puts(b, ",\"arguments\":");
    } else {
        sbuf_puts(b, "\"function\":{\"arguments\":");
    }
    json_str(b, args ? args : "", args_len);
    sbuf_puts(b, "}}]},\"logprobs\":null,\"finish_reason\":null}");
    chunk_tail(b, m);
}

void resp_sse_finish(SBuf *b, const RespMeta *m, const RespChoice *c) {
    sbuf_puts(b, "data: ");
    head(b, m, true);
    if (m->kind == OAI_CHAT) sbuf_printf(b, ",\"choices\":[{\"index\":%d,\"delta\":{},\"logprobs\":null,\"finish_reason\":", c->index);
    else sbuf_printf(b, ",\"choices\":[{\"index\":%d,\"text\":\"\",\"logprobs\":null,\"finish_reason\":", c->index);
    json_cstr(b, c->finish_reason);
    stop_reason(b, c);
    sbuf_put(b, "}", 1);
    chunk_tail(b, m);
}

void resp_sse_usage(SBuf *b, const RespMeta *m, const RespUsage *u) {
    sbuf_puts(b, "data: ");
    head(b, m, true);
    sbuf_puts(b, ",\"choices\":[],\"usage\":");
    usage(b, u);
    sbuf_puts(b, "}\n\n");
}

void resp_sse_error(SBuf *b, const char *message, const char *type, const char *code) {
    sbuf_puts(b, "data: {\"error\":{\"message\":");
    json_cstr(b, message);
    sbuf_puts(b, ",\"type\":");
    json_cstr(b, type ? type : "server_error");
    sbuf_puts(b, ",\"param\":null,\"code\":");
    json_cstr(b, code);
    sbuf_puts(b, "}}\n\n");
}

void resp_sse_done(SBuf *b) { sbuf_puts(b, "data: [DONE]\n\n"); }

void resp_sse_keepalive(SBuf *b) { sbuf_puts(b, ": keep-alive\n\n"); }
