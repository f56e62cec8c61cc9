// tool_parse.c: the tool-call machine (see tool_parse.h).
//
// Every step decides only on text that is there: a literal that the text ends inside of waits
// for more (or, final, counts as a mismatch), so the result never depends on where the output was
// cut into deltas. Parsing restarts from `pos` on each feed; outputs are short and a call's
// arguments are scanned once, so this stays linear in practice.
#define _GNU_SOURCE // memmem
#include <stdlib.h>
#include <string.h>

#include "server/tool_parse.h"

const char *const TOOL_PARSER_NAMES = "hermes, llama3_json, mistral, pythonic";

ToolFormat tool_format_from_name(const char *name) {
    static const struct {
        const char *name;
        ToolFormat fmt;
    } T[] = {{"hermes", TOOL_FMT_HERMES}, {"llama3_json", TOOL_FMT_LLAMA3_JSON}, {"mistral", TOOL_FMT_MISTRAL},
             {"pythonic", TOOL_FMT_PYTHONIC}};
    for (size_t i = 0; name && i < ARRAY_LEN(T); i++)
        if (!strcmp(name, T[i].name)) return T[i].fmt;
    return TOOL_FMT_NONE;
}

typedef enum {
    ST_START = 0,    // the output's first bytes (formats whose calls must come first)
    ST_CONTENT,      // text, watching for a call marker (hermes, mistral)
    ST_CONTENT_ONLY, // text to the end
    ST_LEAD,         // whitespace after calls, dropped; then `after`
    ST_HEADER,       // {"name": "f", "arguments": ...
    ST_MISTRAL_MARK, // after [TOOL_CALLS]: "[" (a JSON list) or a bare name
    ST_MISTRAL_NAME, // f[ARGS]{...}
    ST_LLAMA_START,  // [<|python_tag|>] {"name": ...
    ST_ARGS,         // inside the arguments value
    ST_AFTER_HERMES, // "}" and whatever else up to </tool_call>
    ST_AFTER_ARRAY,  // "}" then "," or "]"
    ST_AFTER_LLAMA,  // "}" then ";" or the end
    ST_PY_CALL,      // f(k=v, ...)
    ST_PY_AFTER,     // "," or "]"
    ST_PY_END,       // an optional <|python_end|>
    ST_RAW,          // a named tool_choice: everything is arguments
    ST_DONE,         // the rest is dropped (parallel_tool_calls false)
} ParseState;

#define HERMES_OPEN "<tool_call>"
#define HERMES_CLOSE "</tool_call>"
#define MISTRAL_MARK "[TOOL_CALLS]"

enum { NEED = 0, OK = 1, BAD = -1 };

static bool is_ws(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }
static bool is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

static void skip_ws(const ToolParser *p, size_t *i) {
    while (*i < p->text.len && is_ws(p->text.data[*i])) (*i)++;
}

// Whitespace, then one of the literals opts[0..n): OK (*i past it, *which its index), NEED when
// the text ends inside a prefix of one, BAD otherwise.
static int lit_any(const ToolParser *p, size_t *i, const char *const *opts, int n, int *which) {
    size_t j = *i;
    skip_ws(p, &j);
    size_t have = p->text.len - j;
    bool partial = false;
    for (int k = 0; k < n; k++) {
        size_t l = strlen(opts[k]);
        if (have >= l && !memcmp(p->text.data + j, opts[k], l)) {
            *i = j + l;
            if (which) *which = k;
            return OK;
        }
        partial |= have < l && !memcmp(p->text.data + j, opts[k], have);
    }
    return partial ? NEED : BAD;
}

static int lit(const ToolParser *p, size_t *i, const char *s) { return lit_any(p, i, &s, 1, NULL); }

// The longest end of text[from..len) that is a proper prefix of s (a marker still arriving).
static size_t partial_suffix(const ToolParser *p, size_t from, const char *s) {
    size_t l = strlen(s), n = p->text.len - from;
    for (size_t k = MIN(l - 1, n); k > 0; k--)
        if (!memcmp(p->text.data + p->text.len - k, s, k)) return k;
    return 0;
}

static ToolCallOut *add_call(ToolParser *p, const char *name, size_t n) {
    if (p->n_calls == p->cap_calls) {
        p->cap_calls = MAX(4, 2 * p->cap_calls);
        p->calls = xrealloc(p->calls, sizeof(ToolCallOut) * (size_t)p->cap_calls);
    }
    ToolCallOut *c = &p->calls[p->n_calls++];
    memset(c, 0, sizeof *c);
    c->name = xstrndup(name, n);
    return c;
}

static void put_content(ToolParser *p, size_t from, size_t to) {
    if (to > from) sbuf_put(&p->content, p->text.data + from, to - from);
}

// A call that is not one after all: its text (marker included) is content.
static void malformed(ToolParser *p) {
    put_content(p, p->mark, p->resume);
    p->pos = p->resume;
    p->state = p->fmt == TOOL_FMT_HERMES || p->fmt == TOOL_FMT_MISTRAL ? ST_CONTENT : ST_CONTENT_ONLY;
}

// A new call element starts at i (no marker of its own: malformed means text from here).
static void element_at(ToolParser *p, size_t i, int state) {
    p->pos = p->mark = p->resume = i;
    p->state = state;
}

// Whitespace, then the arguments' "{": the call text[name..name_end) opens, p->pos at the "{".
static int open_call(ToolParser *p, size_t i, size_t name, size_t name_end) {
    skip_ws(p, &i);
    if (i == p->text.len) return NEED;
    if (p->text.data[i] != '{') return BAD;
    add_call(p, p->text.data + name, name_end - name);
    p->pos = i;
    return OK;
}

// {"name": "f", "arguments"|"parameters": {   -> the call, p->pos at the arguments' "{"
static int json_header(ToolParser *p) {
    static const char *const KEYS[] = {"\"arguments\"", "\"parameters\""};
    size_t i = p->pos;
    int r;
    if ((r = lit(p, &i, "{")) != OK || (r = lit(p, &i, "\"name\"")) != OK || (r = lit(p, &i, ":")) != OK ||
        (r = lit(p, &i, "\"")) != OK)
        return r;
    size_t name = i;
    while (i < p->text.len && is_name_char(p->text.data[i])) i++;
    if (i == p->text.len) return NEED;
    if (p->text.data[i] != '"' || i == name || i - name > 64) return BAD;
    size_t name_end = i++;
    if ((r = lit(p, &i, ",")) != OK || (r = lit_any(p, &i, KEYS, 2, NULL)) != OK || (r = lit(p, &i, ":")) != OK)
        return r;
    return open_call(p, i, name, name_end);
}

// f[ARGS]{ or f[CALL_ID]xyz[ARGS]{ (mistral's newer tokenizers)
static int mistral_name(ToolParser *p) {
    size_t i = p->pos, name = i;
    while (i < p->text.len && is_name_char(p->text.data[i])) i++;
    if (i == p->text.len) return NEED;
    size_t name_end = i;
    if (i == name || i - name > 64) return BAD;
    int r;
    static const char *const TAGS[] = {"[ARGS]", "[CALL_ID]"};
    int which = 0;
    if ((r = lit_any(p, &i, TAGS, 2, &which)) != OK) return r;
    if (which == 1) { // the call id the model wrote: ours replaces it
        while (i < p->text.len && is_name_char(p->text.data[i])) i++;
        if ((r = lit(p, &i, "[ARGS]")) != OK) return r;
    }
    return open_call(p, i, name, name_end);
}

// Scans the open call's arguments value from p->pos; true once it closed.
static bool scan_args(ToolParser *p) {
    ToolCallOut *c = &p->calls[p->n_calls - 1];
    size_t i = p->pos;
    bool closed = false;
    for (; i < p->text.len && !closed; i++) {
        char ch = p->text.data[i];
        if (p->in_str) {
            if (p->esc) p->esc = false;
            else if (ch == '\\') p->esc = true;
            else if (ch == '"') p->in_str = false;
        } else if (ch == '"') {
            p->in_str = true;
        } else if (ch == '{' || ch == '[') {
            p->depth++;
        } else if (ch == '}' || ch == ']') {
            closed = --p->depth == 0;
        }
    }
    sbuf_put(&c->args, p->text.data + p->pos, i - p->pos);
    p->pos = i;
    return closed;
}

// After a complete call: the next state, or done when only one call is wanted.
static void call_done(ToolParser *p, size_t i, int next) {
    p->pos = i;
    p->state = p->single ? ST_DONE : next;
}

static void lead_to(ToolParser *p, int next) {
    p->state = ST_LEAD;
    p->after = next;
}

// ST_START and ST_LLAMA_START: the formats whose calls open the output.
static int start(ToolParser *p) {
    size_t i = p->pos;
    int r = OK;
    if (p->fmt == TOOL_FMT_LLAMA3_JSON) {
        skip_ws(p, &i);
        if (i < p->text.len && p->text.data[i] == '<') r = lit(p, &i, "<|python_tag|>");
        if (r == OK) {
            skip_ws(p, &i);
            r = i == p->text.len ? NEED : p->text.data[i] == '{' ? OK : BAD;
        }
        if (r == OK) p->state = ST_HEADER, p->after = ST_AFTER_LLAMA;
    } else if (p->fmt == TOOL_FMT_PYTHONIC) {
        skip_ws(p, &i);
        if (i < p->text.len && p->text.data[i] == '<') r = lit(p, &i, "<|python_start|>");
        if (r == OK) r = lit(p, &i, "[");
        if (r == OK) p->state = ST_PY_CALL;
    } else { // json_array
        r = lit(p, &i, "[");
        if (r == OK) p->state = ST_HEADER, p->after = ST_AFTER_ARRAY;
    }
    if (r == OK) p->pos = i;
    return r;
}

static int pythonic(ToolParser *p) {
    SBuf name = {0}, args = {0};
    size_t i = p->pos;
    int r = tool_pythonic_call(p->text.data, p->text.len, &i, &name, &args);
    if (r == OK) {
        ToolCallOut *c = add_call(p, name.data, name.len);
        c->args = args;
        args = (SBuf){0};
        call_done(p, i, ST_PY_AFTER);
    }
    sbuf_free(&name);
    sbuf_free(&args);
    return r;
}

// One step from p->state; false when it has to wait for more text.
static bool step(ToolParser *p, bool final) {
    size_t i = p->pos, len = p->text.len;
    const char *t = p->text.data;
    int r = OK, which = 0;
    switch ((ParseState)p->state) {
    case ST_START:
    case ST_LLAMA_START:
        r = start(p);
        break;
    case ST_CONTENT: {
        const char *m = p->fmt == TOOL_FMT_HERMES ? HERMES_OPEN : MISTRAL_MARK;
        size_t ml = strlen(m);
        const char *hit = memmem(t + i, len - i, m, ml);
        if (hit) {
            size_t k = (size_t)(hit - t), w = k;
            while (w > i && is_ws(t[w - 1])) w--;
            put_content(p, i, w);
            p->mark = w;
            p->pos = p->resume = k + ml;
            p->state = p->fmt == TOOL_FMT_HERMES ? ST_HEADER : ST_MISTRAL_MARK;
            p->after = ST_AFTER_HERMES;
            return true;
        }
        size_t e = final ? len : len - partial_suffix(p, i, m);
        if (!final || p->n_calls > 0) // whitespace may go before a call (or trail the last one): held
            while (e > i && is_ws(t[e - 1])) e--;
        put_content(p, i, e);
        p->pos = final ? len : e;
        return false;
    }
    case ST_CONTENT_ONLY:
        put_content(p, i, len);
        p->pos = len;
        return false;
    case ST_LEAD:
        skip_ws(p, &i);
        p->pos = i;
        if (i == len) return false;
        p->state = p->after;
        return true;
    case ST_HEADER:
        r = json_header(p);
        if (r == OK) p->state = ST_ARGS, p->depth = 0, p->in_str = p->esc = false;
        break;
    case ST_MISTRAL_MARK:
        skip_ws(p, &i);
        if (i == len) {
            r = NEED;
        } else if (t[i] == '[') {
            element_at(p, i + 1, ST_HEADER);
            p->after = ST_AFTER_ARRAY;
        } else {
            p->pos = i;
            p->state = ST_MISTRAL_NAME;
        }
        break;
    case ST_MISTRAL_NAME:
        r = mistral_name(p);
        if (r == OK) p->state = ST_ARGS, p->after = ST_LEAD, p->depth = 0, p->in_str = p->esc = false;
        break;
    case ST_ARGS:
        if (!scan_args(p)) {
            if (final) p->pos = len; // cut off (length): the arguments so far, as OpenAI sends them
            return false;
        }
        if (p->after == ST_LEAD) { // mistral's bare form: the next [TOOL_CALLS] or text
            call_done(p, p->pos, ST_LEAD);
            p->after = ST_CONTENT;
        } else {
            call_done(p, p->pos, p->after);
        }
        return true;
    case ST_AFTER_HERMES: {
        const char *hit = memmem(t + i, len - i, HERMES_CLOSE, strlen(HERMES_CLOSE));
        const char *next = memmem(t + i, len - i, HERMES_OPEN, strlen(HERMES_OPEN));
        if (next && (!hit || next < hit)) { // the model opened the next call without closing this one
            p->pos = (size_t)(next - t);
            p->state = ST_CONTENT;
            return true;
        }
        if (!hit) {
            if (final) p->pos = len; // an unclosed last call: what followed its arguments is dropped
            return false;
        }
        lead_to(p, ST_CONTENT);
        p->pos = (size_t)(hit - t) + strlen(HERMES_CLOSE);
        return true;
    }
    case ST_AFTER_ARRAY: {
        static const char *const NEXT[] = {",", "]"};
        if ((r = lit(p, &i, "}")) == OK && (r = lit_any(p, &i, NEXT, 2, &which)) == OK) {
            if (which == 0) element_at(p, i, ST_HEADER);
            else if (p->fmt == TOOL_FMT_JSON_ARRAY) p->pos = i, p->state = ST_DONE;
            else p->pos = i, lead_to(p, ST_CONTENT);
            return true;
        }
        if (r == BAD) element_at(p, i, ST_CONTENT_ONLY);
        break;
    }
    case ST_AFTER_LLAMA:
        if ((r = lit(p, &i, "}")) != OK) break;
        if ((r = lit(p, &i, ";")) == OK) {
            element_at(p, i, ST_LLAMA_START);
            return true;
        }
        if (r == BAD) { // what follows the last call is text
            p->pos = i;
            lead_to(p, ST_CONTENT_ONLY);
            return true;
        }
        break;
    case ST_PY_CALL:
        r = pythonic(p);
        break;
    case ST_PY_AFTER: {
        static const char *const NEXT[] = {",", "]"};
        r = lit_any(p, &i, NEXT, 2, &which);
        if (r == OK && which == 0) element_at(p, i, ST_PY_CALL);
        if (r == OK && which == 1) p->pos = i, p->state = ST_PY_END;
        if (r == BAD) element_at(p, i, ST_CONTENT_ONLY);
        break;
    }
    case ST_PY_END:
        skip_ws(p, &i);
        r = i < len && t[i] == '<' ? lit(p, &i, "<|python_end|>") : i == len ? NEED : OK;
        if (r == NEED) return false; // final: nothing but whitespace (or half an end tag) followed
        p->pos = i; // past the end tag, or at the text that follows the list
        lead_to(p, ST_CONTENT_ONLY);
        return true;
    case ST_RAW:
        sbuf_put(&p->calls[0].args, t + i, len - i);
        p->pos = len;
        return false;
    case ST_DONE:
        p->pos = len;
        return false;
    }
    if (r == BAD || (r == NEED && final)) {
        if (p->state == ST_AFTER_LLAMA || p->state == ST_AFTER_ARRAY) { // after a complete call: done
            p->pos = len;
            return false;
        }
        malformed(p);
        return true;
    }
    return r == OK;
}

void tool_parser_init(ToolParser *p, ToolFormat fmt, bool single, const char *named) {
    memset(p, 0, sizeof *p);
    p->fmt = fmt;
    p->single = single;
    p->state = fmt == TOOL_FMT_HERMES || fmt == TOOL_FMT_MISTRAL ? ST_CONTENT : fmt == TOOL_FMT_ARGS ? ST_RAW : ST_START;
    if (fmt == TOOL_FMT_ARGS) add_call(p, named, strlen(named));
}

void tool_parser_free(ToolParser *p) {
    sbuf_free(&p->text);
    sbuf_free(&p->content);
    for (int i = 0; i < p->n_calls; i++) {
        free(p->calls[i].name);
        sbuf_free(&p->calls[i].args);
    }
    free(p->calls);
    memset(p, 0, sizeof *p);
}

void tool_parser_feed(ToolParser *p, const char *s, size_t n, bool final) {
    sbuf_put(&p->text, s, n);
    while (step(p, final)) {}
}

bool tool_parser_args_done(const ToolParser *p) { return p->state != ST_ARGS && p->state != ST_RAW; }
