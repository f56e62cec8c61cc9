// tool_pythonic.c: one pythonic tool call, f(a=1, b='x', c=[True, None]), read into a name and
// its keyword arguments as a JSON object (Llama 3.2 / Llama 4's format, vLLM's "pythonic").
//
// Only literals are accepted (strings, numbers, True/False/None, lists, tuples, dicts), as vLLM's
// ast.literal_eval-based parser; anything else (a variable, an expression) makes the call
// malformed. A text that ends inside the call asks for more (0), so the caller can wait.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/tool_parse.h"

enum { NEED = 0, OK = 1, BAD = -1 };
#define MAX_DEPTH 64

typedef struct {
    const char *t;
    size_t n, i;
} Cur;

static void ws(Cur *c) {
    while (c->i < c->n && (c->t[c->i] == ' ' || c->t[c->i] == '\n' || c->t[c->i] == '\t' || c->t[c->i] == '\r'))
        c->i++;
}

static bool ident_start(char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_'; }
static bool ident_char(char ch) { return ident_start(ch) || (ch >= '0' && ch <= '9'); }

// An identifier at c->i (dots allowed inside a function name: module.f).
static int ident(Cur *c, bool dots, size_t *start, size_t *end) {
    ws(c);
    if (c->i == c->n) return NEED;
    if (!ident_start(c->t[c->i])) return BAD;
    *start = c->i;
    while (c->i < c->n && (ident_char(c->t[c->i]) || (dots && c->t[c->i] == '.'))) c->i++;
    if (c->i == c->n) return NEED; // the name may go on
    *end = c->i;
    return OK;
}

static int py_string(Cur *c, SBuf *out) {
    char q = c->t[c->i++];
    SBuf s = {0};
    int r = NEED;
    while (c->i < c->n) {
        char ch = c->t[c->i++];
        if (ch == q) {
            r = OK;
            break;
        }
        if (ch == '\n') {
            r = BAD;
            break;
        }
        if (ch != '\\') {
            sbuf_put(&s, &ch, 1);
            continue;
        }
        if (c->i == c->n) break;
        char e = c->t[c->i++];
        const char *rep = e == 'n' ? "\n" : e == 't' ? "\t" : e == 'r' ? "\r" : NULL;
        if (rep) sbuf_puts(&s, rep);
        else if (e == '\\' || e == '\'' || e == '"') sbuf_put(&s, &e, 1);
        else {
            r = BAD; // \x, \u and friends: rare in calls, and wrong guesses are worse than text
            break;
        }
    }
    if (r == OK) json_str(out, s.data ? s.data : "", s.len);
    sbuf_free(&s);
    return r;
}

static int py_number(Cur *c, SBuf *out) {
    size_t s = c->i;
    while (c->i < c->n && strchr("0123456789+-.eE_", c->t[c->i])) c->i++;
    if (c->i == c->n) return NEED; // more digits may come
    char buf[64];
    size_t k = 0;
    for (size_t j = s; j < c->i && k + 1 < sizeof buf; j++)
        if (c->t[j] != '_') buf[k++] = c->t[j];
    buf[k] = 0;
    char *end;
    double v = strtod(buf, &end);
    if (k == 0 || *end || k + 1 >= sizeof buf) return BAD;
    bool integer = strspn(buf + (buf[0] == '-' || buf[0] == '+'), "0123456789") == strlen(buf + (buf[0] == '-' || buf[0] == '+'));
    if (integer) { // as written (no float rounding of big ints); JSON has no leading '+' or zeros
        const char *d = buf + (buf[0] == '+');
        if (d[0] == '-') sbuf_put(out, "-", 1), d++;
        while (d[0] == '0' && d[1]) d++;
        sbuf_puts(out, d);
        return OK;
    }
    for (int prec = 1; prec <= 17; prec++) { // the shortest text that reads back as v
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    sbuf_puts(out, buf);
    if (!strpbrk(buf, ".en")) sbuf_puts(out, ".0"); // 1.0 stays a float
    return OK;
}

static int py_value(Cur *c, SBuf *out, int depth);

// [a, b], (a, b) or {k: v}: items up to the closing bracket, a trailing comma allowed.
static int py_container(Cur *c, SBuf *out, int depth) {
    char open = c->t[c->i++], close = open == '[' ? ']' : open == '(' ? ')' : '}';
    bool dict = open == '{';
    sbuf_put(out, dict ? "{" : "[", 1);
    for (int k = 0;; k++) {
        ws(c);
        if (c->i == c->n) return NEED;
        if (c->t[c->i] == close) {
            c->i++;
            sbuf_put(out, dict ? "}" : "]", 1);
            return OK;
        }
        if (k > 0) sbuf_puts(out, ", ");
        int r;
        if (dict) {
            if (c->t[c->i] != '\'' && c->t[c->i] != '"') return BAD; // JSON keys are strings
            if ((r = py_string(c, out)) != OK) return r;
            ws(c);
            if (c->i == c->n) return NEED;
            if (c->t[c->i++] != ':') return BAD;
            sbuf_puts(out, ": ");
        }
        if ((r = py_value(c, out, depth + 1)) != OK) return r;
        ws(c);
        if (c->i == c->n) return NEED;
        if (c->t[c->i] == ',') c->i++;
        else if (c->t[c->i] != close) return BAD;
    }
}

static int py_value(Cur *c, SBuf *out, int depth) {
    if (depth > MAX_DEPTH) return BAD;
    ws(c);
    if (c->i == c->n) return NEED;
    char ch = c->t[c->i];
    if (ch == '\'' || ch == '"') return py_string(c, out);
    if (ch == '[' || ch == '(' || ch == '{') return py_container(c, out, depth);
    if ((ch >= '0' && ch <= '9') || ch == '-' || ch == '+' || ch == '.') return py_number(c, out);
    size_t s, e;
    int r = ident(c, false, &s, &e);
    if (r != OK) return r;
    static const char *const PY[] = {"True", "False", "None"}, *const JS[] = {"true", "false", "null"};
    for (int k = 0; k < 3; k++)
        if (e - s == strlen(PY[k]) && !memcmp(c->t + s, PY[k], e - s)) {
            sbuf_puts(out, JS[k]);
            return OK;
        }
    return BAD;
}

int tool_pythonic_call(const char *text, size_t n, size_t *pos, SBuf *name, SBuf *args) {
    Cur c = {text, n, *pos};
    size_t s, e;
    int r = ident(&c, true, &s, &e);
    if (r != OK) return r;
    ws(&c);
    if (c.i == n) return NEED;
    if (text[c.i++] != '(') return BAD;
    sbuf_reset(args);
    sbuf_put(args, "{", 1);
    for (int k = 0;; k++) {
        ws(&c);
        if (c.i == n) return NEED;
        if (text[c.i] == ')') {
            c.i++;
            break;
        }
        size_t ks, ke;
        if ((r = ident(&c, false, &ks, &ke)) != OK) return r;
        ws(&c);
        if (c.i == n) return NEED;
        if (text[c.i++] != '=') return BAD;
        if (k > 0) sbuf_puts(args, ", ");
        json_str(args, text + ks, ke - ks);
        sbuf_puts(args, ": ");
        if ((r = py_value(&c, args, 0)) != OK) return r;
        ws(&c);
        if (c.i == n) return NEED;
        if (text[c.i] == ',') c.i++;
        else if (text[c.i] != ')') return BAD;
    }
    sbuf_put(args, "}", 1);
    sbuf_reset(name);
    sbuf_put(name, text + s, e - s);
    *pos = c.i;
    return OK;
}
