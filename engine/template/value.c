// value.c: the arena, values and the Python semantics they must copy exactly:
// str() and repr() (what `{{ x }}` prints), truthiness, ==, ordering and iteration.
#define _GNU_SOURCE
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/template/template_impl.h"

// ---- arena

#define ARENA_CHUNK 65536
#define ARENA_BIG 16384 // larger requests get a chunk of their own

struct ArenaChunk {
    ArenaChunk *next;
    size_t size, used;
    _Alignas(16) char data[];
};

void *arena_alloc(Arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    if (a->limit && a->used + n > a->limit) return NULL;
    a->used += n;
    ArenaChunk *c = a->head;
    if (c && c->size - c->used >= n) {
        void *p = c->data + c->used;
        c->used += n;
        return p;
    }
    size_t size = n > ARENA_BIG ? n : ARENA_CHUNK;
    ArenaChunk *nc = xcalloc(1, sizeof(ArenaChunk) + size);
    nc->size = size;
    nc->used = n;
    if (c && n > ARENA_BIG) { // keep bump-allocating from the current chunk
        nc->next = c->next;
        c->next = nc;
    } else {
        nc->next = c;
        a->head = nc;
    }
    return nc->data;
}

void arena_free(Arena *a) {
    for (ArenaChunk *c = a->head, *nx; c; c = nx) {
        nx = c->next;
        free(c);
    }
    a->head = NULL;
    a->used = 0;
}

// ---- strings, lists, dicts

// Code points as utf8_next steps over them (an invalid byte, a stray continuation byte too,
// stands for itself), so that ncp and every walk over the bytes agree.
static size_t count_cp(const char *s, size_t len) {
    size_t n = 0, i = 0;
    while (i < len && (unsigned char)s[i] < 0x80) i++;
    for (n = i; i < len; n++) utf8_next(s, len, &i);
    return n;
}

Str *str_new(Arena *a, const char *s, size_t len) {
    Str *r = arena_alloc(a, sizeof(Str) + len + 1);
    if (!r) return NULL;
    if (len) memcpy(r->s, s, len);
    r->s[len] = 0;
    r->len = len;
    r->ncp = count_cp(s, len);
    return r;
}

Str *rt_str(Render *r, const char *s, size_t len) {
    rt_step(r, (long)(len / 64));
    Str *x = str_new(&r->arena, s, len);
    if (!x) rt_fail(r, TMPL_ERR_LIMIT, "the template used more than %zu bytes of memory", r->lim.max_memory);
    return x;
}

Value rt_cstr(Render *r, const char *s) { return v_str(rt_str(r, s, strlen(s))); }

List *rt_list(Render *r, size_t cap, uint8_t kind) {
    List *l = rt_alloc(r, sizeof(List));
    l->kind = kind;
    l->cap = cap ? cap : 1; // never a NULL array, so `l->v + l->n` is always defined
    l->v = rt_alloc(r, l->cap * sizeof(Value));
    return l;
}

void rt_list_push(Render *r, List *l, Value v) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 4;
        Value *nv = rt_alloc(r, cap * sizeof(Value));
        if (l->n) vcopy(nv, l->v, l->n);
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = v;
}

Dict *rt_dict(Render *r, size_t cap) {
    Dict *d = rt_alloc(r, sizeof(Dict));
    d->cap = cap;
    if (cap) {
        d->k = rt_alloc(r, cap * sizeof(Value));
        d->v = rt_alloc(r, cap * sizeof(Value));
    }
    return d;
}

Value *dict_find_str(const Dict *d, const char *key) {
    size_t kl = strlen(key);
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i].type == V_STR && d->k[i].s->len == kl && memcmp(d->k[i].s->s, key, kl) == 0) return &d->v[i];
    return NULL;
}

Value *dict_find(Render *r, const Dict *d, Value key) {
    if (key.type == V_STR) {
        for (size_t i = 0; i < d->n; i++)
            if (d->k[i].type == V_STR && d->k[i].s->len == key.s->len &&
                memcmp(d->k[i].s->s, key.s->s, key.s->len) == 0)
                return &d->v[i];
        return NULL;
    }
    for (size_t i = 0; i < d->n; i++)
        if (v_eq(r, d->k[i], key)) return &d->v[i];
    return NULL;
}

void rt_dict_set(Render *r, Dict *d, Value key, Value val) {
    if (key.type == V_LIST && key.l->kind != LK_TUPLE) rt_error(r, "unhashable type: 'list'");
    if (key.type == V_DICT) rt_error(r, "unhashable type: 'dict'");
    Value *have = dict_find(r, d, key);
    if (have) {
        *have = val;
        return;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? 2 * d->cap : 4;
        Value *nk = rt_alloc(r, cap * sizeof(Value)), *nv = rt_alloc(r, cap * sizeof(Value));
        if (d->n) {
            vcopy(nk, d->k, d->n);
            vcopy(nv, d->v, d->n);
        }
        d->k = nk;
        d->v = nv;
        d->cap = cap;
    }
    d->k[d->n] = key;
    d->v[d->n++] = val;
}

// ---- string buffers

void sb_put(Render *r, SBuf *b, const char *s, size_t n) {
    if (b == r->top && b->n + n > r->lim.max_output)
        rt_fail(r, TMPL_ERR_LIMIT, "the rendered prompt is longer than %zu bytes", r->lim.max_output);
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = rt_alloc(r, cap);
        if (b->n) memcpy(p, b->p, b->n);
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void sb_putc(Render *r, SBuf *b, char c) { sb_put(r, b, &c, 1); }
void sb_puts(Render *r, SBuf *b, const char *s) { sb_put(r, b, s, strlen(s)); }

void sb_printf(Render *r, SBuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    sb_put(r, b, tmp, (size_t)MIN(n, (int)sizeof tmp - 1));
}

Str *sb_str(Render *r, SBuf *b) { return rt_str(r, b->p ? b->p : "", b->n); }

// ---- type names, truthiness

const char *v_typename(Value v) {
    switch (v.type) {
    case V_UNDEF: return "Undefined";
    case V_NONE: return "NoneType";
    case V_BOOL: return "bool";
    case V_INT:
    case V_BIGINT: return "int";
    case V_FLOAT: return "float";
    case V_STR: return v.sub ? "Markup" : "str";
    case V_LIST:
        switch (v.l->kind) {
        case LK_TUPLE: return "tuple";
        case LK_GEN: return "generator";
        case LK_ITEMS: return "dict_items";
        case LK_KEYS: return "dict_keys";
        case LK_VALUES: return "dict_values";
        case LK_REVITER: return "list_reverseiterator";
        default: return "list";
        }
    case V_DICT: return "dict";
    case V_NS: return "Namespace";
    case V_FUNC: return v.fn->kind == FN_MACRO ? "Macro" : "function";
    case V_LOOP: return "LoopContext";
    }
    return "object";
}

bool v_truthy(Render *r, Value v) {
    (void)r;
    switch (v.type) {
    case V_UNDEF:
    case V_NONE: return false;
    case V_BOOL: return v.b;
    case V_INT: return v.i != 0;
    case V_FLOAT: return v.f != 0.0;
    case V_STR: return v.s->len > 0;
    case V_LIST: return (v.l->kind == LK_GEN || v.l->kind == LK_REVITER) ? true : v.l->n > 0;
    case V_DICT: return v.d->n > 0;
    default: return true;
    }
}

void fail_undefined(Render *r, Value u) {
    if (u.sub == UNDEF_HINT) rt_error(r, "%s", u.undef);
    if (u.sub == V_UNDEF || !u.undef) rt_error(r, "'%s' is undefined", u.undef ? u.undef : "value");
    Value owner = {.type = u.sub};
    if (u.sub == V_NONE) rt_error(r, "'None' has no attribute '%s'", u.undef);
    if (u.sub == V_LIST) rt_error(r, "'list object' has no attribute '%s'", u.undef);
    rt_error(r, "'%s object' has no attribute '%s'", v_typename(owner), u.undef);
}

// ---- str() and repr()

static void write_str_repr(Render *r, SBuf *b, const Str *s) {
    bool has_sq = memchr(s->s, '\'', s->len) != NULL, has_dq = memchr(s->s, '"', s->len) != NULL;
    char q = (has_sq && !has_dq) ? '"' : '\'';
    sb_putc(r, b, q);
    size_t i = 0, run = 0;
    while (i < s->len) {
        size_t at = i;
        uint32_t c = utf8_next(s->s, s->len, &i);
        char esc[16];
        esc[0] = 0;
        if (c == (uint32_t)q || c == '\\')
            snprintf(esc, sizeof esc, "\\%c", (char)c);
        else if (c == '\t')
            strcpy(esc, "\\t");
        else if (c == '\n')
            strcpy(esc, "\\n");
        else if (c == '\r')
            strcpy(esc, "\\r");
        else if (c < 0x20 || c == 0x7F)
            snprintf(esc, sizeof esc, "\\x%02x", c);
        else if (c >= 0x80 && !uc_isprintable(c)) {
            if (c <= 0xFF)
                snprintf(esc, sizeof esc, "\\x%02x", c);
            else if (c <= 0xFFFF)
                snprintf(esc, sizeof esc, "\\u%04x", c);
            else
                snprintf(esc, sizeof esc, "\\U%08x", c);
        }
        if (esc[0]) {
            sb_put(r, b, s->s + run, at - run);
            sb_puts(r, b, esc);
            run = i;
        }
    }
    sb_put(r, b, s->s + run, s->len - run);
    sb_putc(r, b, q);
}

static void write_seq(Render *r, SBuf *b, const List *l, const char *open, const char *close) {
    sb_puts(r, b, open);
    for (size_t i = 0; i < l->n; i++) {
        if (i) sb_puts(r, b, ", ");
        v_write_repr(r, b, l->v[i]);
    }
    if (l->kind == LK_TUPLE && l->n == 1) sb_putc(r, b, ',');
    sb_puts(r, b, close);
}

static void write_dict(Render *r, SBuf *b, const Dict *d) {
    sb_putc(r, b, '{');
    for (size_t i = 0; i < d->n; i++) {
        if (i) sb_puts(r, b, ", ");
        v_write_repr(r, b, d->k[i]);
        sb_puts(r, b, ": ");
        v_write_repr(r, b, d->v[i]);
    }
    sb_putc(r, b, '}');
}

// Printing and comparing recurse into nested values; a template can nest lists without
// bound, so the recursion is bounded to keep the C stack safe.
static void nest_enter(Render *r) {
    if (++r->depth > r->lim.max_depth + 1000) rt_fail(r, TMPL_ERR_LIMIT, "value nested too deeply");
}

void v_write_repr(Render *r, SBuf *b, Value v) {
    nest_enter(r);
    switch (v.type) {
    case V_UNDEF: sb_puts(r, b, "Undefined"); break;
    case V_STR:
        if (v.sub) sb_puts(r, b, "Markup(");
        write_str_repr(r, b, v.s);
        if (v.sub) sb_putc(r, b, ')');
        break;
    case V_LIST:
        switch (v.l->kind) {
        case LK_LIST: write_seq(r, b, v.l, "[", "]"); break;
        case LK_TUPLE: write_seq(r, b, v.l, "(", ")"); break;
        case LK_ITEMS: write_seq(r, b, v.l, "dict_items([", "])"); break;
        case LK_KEYS: write_seq(r, b, v.l, "dict_keys([", "])"); break;
        case LK_VALUES: write_seq(r, b, v.l, "dict_values([", "])"); break;
        default: sb_printf(r, b, "<%s object>", v_typename(v)); break;
        }
        break;
    case V_DICT: write_dict(r, b, v.d); break;
    case V_NS:
        sb_puts(r, b, "<Namespace ");
        write_dict(r, b, v.d);
        sb_putc(r, b, '>');
        break;
    case V_FUNC:
        if (v.fn->kind == FN_MACRO)
            sb_printf(r, b, "<Macro '%s'>", v.fn->name);
        else if (v.fn->kind == FN_METHOD)
            sb_printf(r, b, "<built-in method %s of %s object>", v.fn->name, v_typename(v.fn->self));
        else
            sb_printf(r, b, "<function %s>", v.fn->name ? v.fn->name : "?");
        break;
    case V_LOOP: sb_printf(r, b, "<LoopContext %" PRId64 "/%zu>", v.loop->index0 + 1, v.loop->items->n); break;
    default: v_write_str(r, b, v); break;
    }
    r->depth--;
}

void v_write_str(Render *r, SBuf *b, Value v) {
    char buf[40];
    switch (v.type) {
    case V_UNDEF: return;
    case V_NONE: sb_puts(r, b, "None"); return;
    case V_BOOL: sb_puts(r, b, v.b ? "True" : "False"); return;
    case V_INT:
        snprintf(buf, sizeof buf, "%" PRId64, v.i);
        sb_puts(r, b, buf);
        return;
    case V_FLOAT:
        fmt_float(buf, sizeof buf, v.f);
        sb_puts(r, b, buf);
        return;
    case V_STR:
    case V_BIGINT: sb_put(r, b, v.s->s, v.s->len); return;
    default: v_write_repr(r, b, v); return;
    }
}

Str *v_to_str(Render *r, Value v) {
    if (v.type == V_STR) return v.s;
    SBuf b = {0};
    v_write_str(r, &b, v);
    return sb_str(r, &b);
}

// ---- numbers, equality, order

bool v_is_number(Value v) { return v.type == V_INT || v.type == V_FLOAT || v.type == V_BOOL; }

bool v_is_numeric(Value v) { return v_is_number(v) || v.type == V_BIGINT; }

double v_num(Value v) { return v.type == V_FLOAT ? v.f : v.type == V_INT ? (double)v.i : (double)v.b; }

static int64_t as_int(Value v) { return v.type == V_BOOL ? (int64_t)v.b : v.i; }

Value v_int_text(Render *r, const char *s, size_t len) {
    bool neg = len && s[0] == '-';
    if (len && (s[0] == '-' || s[0] == '+')) s++, len--;
    while (len > 1 && s[0] == '0') s++, len--;
    if (len < 19 || (len == 19 && memcmp(s, neg ? "9223372036854775808" : "9223372036854775807", 19) <= 0)) {
        uint64_t u = 0;
        for (size_t i = 0; i < len; i++) u = u * 10 + (uint64_t)(s[i] - '0');
        return v_int(neg ? (int64_t)(0 - u) : (int64_t)u);
    }
    SBuf b = {0};
    if (neg) sb_putc(r, &b, '-');
    sb_put(r, &b, s, len);
    Value v = {.type = V_BIGINT};
    v.s = sb_str(r, &b);
    return v;
}

void v_refuse_big(Render *r, Value v, Value w, const char *what) {
    Value big = v.type == V_BIGINT ? v : w;
    if (big.type == V_BIGINT)
        rt_error(r, "%s: the integer %s does not fit in 64 bits (sluice integers are 64-bit)", what, big.s->s);
}

// Canonical decimal integers ("0" or "-?[1-9][0-9]*"), by value.
static int dec_cmp(const char *a, const char *b) {
    bool na = *a == '-', nb = *b == '-';
    if (na != nb) return na ? -1 : 1;
    size_t la = strlen(a), lb = strlen(b);
    int c = la != lb ? (la < lb ? -1 : 1) : memcmp(a, b, la);
    c = c < 0 ? -1 : c > 0;
    return na ? -c : c;
}

// A V_BIGINT against any numeric b, exactly (as v_num_cmp). A V_BIGINT lies beyond int64, so
// against an int, or a float nearer zero than 2^63, its sign decides; a float beyond that is
// whole and prints exactly with %.0f.
static int big_cmp(Value a, Value b) {
    int sign = a.s->s[0] == '-' ? -1 : 1;
    if (b.type == V_BIGINT) return dec_cmp(a.s->s, b.s->s);
    if (b.type != V_FLOAT || fabs(b.f) < 9223372036854775808.0) return sign;
    if (isnan(b.f)) return 2;
    if (isinf(b.f)) return b.f > 0 ? -1 : 1;
    char buf[400];
    snprintf(buf, sizeof buf, "%.0f", b.f);
    return dec_cmp(a.s->s, buf);
}

// Exact comparison of numbers as Python does it (an int and a float compare by value,
// not after rounding the int): -1, 0, 1, or 2 when a NaN makes them unordered.
int v_num_cmp(Value a, Value b) {
    if (a.type == V_BIGINT) return big_cmp(a, b);
    if (b.type == V_BIGINT) {
        int c = big_cmp(b, a);
        return c == 2 ? 2 : -c;
    }
    if (a.type != V_FLOAT && b.type != V_FLOAT) {
        int64_t x = as_int(a), y = as_int(b);
        return x < y ? -1 : x > y;
    }
    if (a.type == V_FLOAT && b.type == V_FLOAT) {
        if (isnan(a.f) || isnan(b.f)) return 2;
        return a.f < b.f ? -1 : a.f > b.f;
    }
    bool flip = a.type != V_FLOAT;
    double f = flip ? b.f : a.f;
    int64_t i = flip ? as_int(a) : as_int(b);
    int c;
    if (isnan(f)) return 2;
    if (f >= 9223372036854775808.0)
        c = 1;
    else if (f < -9223372036854775808.0)
        c = -1;
    else {
        double fl = floor(f);
        int64_t fi = (int64_t)fl;
        if (fi != i)
            c = fi < i ? -1 : 1;
        else
            c = f > fl ? 1 : 0;
    }
    return flip ? -c : c;
}

bool v_eq(Render *r, Value a, Value b) {
    if (v_is_numeric(a) && v_is_numeric(b)) return v_num_cmp(a, b) == 0;
    if (a.type != b.type) return false;
    switch (a.type) {
    case V_UNDEF:
    case V_NONE: return true;
    case V_STR: return a.s->len == b.s->len && memcmp(a.s->s, b.s->s, a.s->len) == 0;
    case V_LIST: {
        if (a.l == b.l) return true;
        uint8_t ka = a.l->kind, kb = b.l->kind;
        if (ka == LK_GEN || ka == LK_REVITER || kb == LK_GEN || kb == LK_REVITER) return false;
        if (ka != kb || a.l->n != b.l->n) return false;
        nest_enter(r);
        bool same = true;
        for (size_t i = 0; i < a.l->n && same; i++) same = v_eq(r, a.l->v[i], b.l->v[i]);
        r->depth--;
        return same;
    }
    case V_DICT: {
        if (a.d == b.d) return true;
        if (a.d->n != b.d->n) return false;
        nest_enter(r);
        bool same = true;
        for (size_t i = 0; i < a.d->n && same; i++) {
            Value *o = dict_find(r, b.d, a.d->k[i]);
            same = o && v_eq(r, a.d->v[i], *o);
        }
        r->depth--;
        return same;
    }
    case V_NS: return a.d == b.d;
    case V_FUNC: return a.fn == b.fn;
    case V_LOOP: return a.loop == b.loop;
    }
    return false;
}

int v_cmp(Render *r, Value a, Value b) {
    if (a.type == V_UNDEF) fail_undefined(r, a);
    if (b.type == V_UNDEF) fail_undefined(r, b);
    if (v_is_numeric(a) && v_is_numeric(b)) {
        int c = v_num_cmp(a, b);
        return c == 2 ? 0 : c; // NaN: neither smaller nor larger
    }
    if (a.type == V_STR && b.type == V_STR) { // UTF-8 byte order is code point order
        size_t n = MIN(a.s->len, b.s->len);
        int c = memcmp(a.s->s, b.s->s, n);
        if (c) return c < 0 ? -1 : 1;
        return a.s->len < b.s->len ? -1 : a.s->len > b.s->len;
    }
    if (a.type == V_LIST && b.type == V_LIST && a.l->kind == b.l->kind &&
        (a.l->kind == LK_LIST || a.l->kind == LK_TUPLE)) {
        size_t n = MIN(a.l->n, b.l->n);
        int c = 0;
        nest_enter(r);
        for (size_t i = 0; i < n && !c; i++)
            if (!v_eq(r, a.l->v[i], b.l->v[i])) c = v_cmp(r, a.l->v[i], b.l->v[i]);
        r->depth--;
        if (c) return c;
        return a.l->n < b.l->n ? -1 : a.l->n > b.l->n;
    }
    rt_error(r, "'<' not supported between instances of '%s' and '%s'", v_typename(a), v_typename(b));
}

// ---- iteration

List *v_items(Render *r, Value v) {
    switch (v.type) {
    case V_UNDEF: return rt_list(r, 0, LK_LIST);
    case V_LIST:
        if (v.l->kind == LK_GEN || v.l->kind == LK_REVITER) {
            if (v.l->spent) return rt_list(r, 0, LK_LIST);
            v.l->spent = true; // an iterator runs once
        }
        rt_step(r, (long)v.l->n);
        return v.l;
    case V_DICT: {
        List *l = rt_list(r, v.d->n, LK_LIST);
        vcopy(l->v, v.d->k, v.d->n);
        l->n = v.d->n;
        rt_step(r, (long)l->n);
        return l;
    }
    case V_STR: {
        List *l = rt_list(r, v.s->ncp, LK_LIST);
        for (size_t i = 0; i < v.s->len;) {
            size_t at = i;
            utf8_next(v.s->s, v.s->len, &i);
            l->v[l->n++] = v_str(rt_str(r, v.s->s + at, i - at));
        }
        return l;
    }
    default: rt_error(r, "'%s' object is not iterable", v_typename(v));
    }
}

Value v_iterable(Render *r, Value v) { return v_list(v_items(r, v)); }
