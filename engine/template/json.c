// json.c: request JSON (cJSON) -> template values with each number as Python's json.loads
// makes it, and Python's json.dumps for the `tojson` filter (HF's: ensure_ascii=False,
// separators ', ' / ': ', or ',' / ': ' once indented, keys in insertion order unless
// sort_keys).
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/template/template_impl.h"

// An object with many keys: find duplicate keys through a hash table so a hostile request
// cannot make the conversion quadratic. Python's json keeps the first position, last value.
static Value json_object(Render *r, const cJSON *j, size_t n) {
    Dict *d = rt_dict(r, n);
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    uint32_t *slot = rt_alloc(r, cap * sizeof(uint32_t)); // entry index + 1, 0 = empty
    for (const cJSON *c = j->child; c; c = c->next) {
        const char *key = c->string ? c->string : "";
        size_t kl = strlen(key);
        Value val = json_to_value(r, c);
        size_t h = (size_t)hash_fnv1a(key, kl) & (cap - 1);
        for (;; h = (h + 1) & (cap - 1)) {
            uint32_t e = slot[h];
            if (!e) {
                d->k[d->n] = v_str(rt_str(r, key, kl));
                d->v[d->n] = val;
                slot[h] = (uint32_t)++d->n;
                break;
            }
            Str *k = d->k[e - 1].s;
            if (k->len == kl && memcmp(k->s, key, kl) == 0) {
                d->v[e - 1] = val;
                break;
            }
        }
    }
    return v_dict(d);
}

Value json_to_value(Render *r, const cJSON *j) {
    if (!j || cJSON_IsNull(j)) return v_none();
    if (cJSON_IsTrue(j)) return v_bool(true);
    if (cJSON_IsFalse(j)) return v_bool(false);
    if (cJSON_IsNumber(j)) {
        const char *lit = j->valuestring; // the source text, where tmpl_json_parse kept it
        if (lit && !strpbrk(lit, ".eE")) return v_int_text(r, lit, strlen(lit));
        double d = j->valuedouble;
        if (lit) return v_float(d);
        // no source text: a short integer literal (or a number made in C); whole means int
        if (d == floor(d) && fabs(d) < 9.2e18) return v_int((int64_t)d);
        return v_float(d);
    }
    if (cJSON_IsString(j)) return rt_cstr(r, j->valuestring ? j->valuestring : "");
    size_t n = 0;
    for (const cJSON *c = j->child; c; c = c->next) n++;
    if (cJSON_IsArray(j)) {
        List *l = rt_list(r, n, LK_LIST);
        for (const cJSON *c = j->child; c; c = c->next) l->v[l->n++] = json_to_value(r, c);
        return v_list(l);
    }
    if (cJSON_IsObject(j)) return json_object(r, j, n);
    rt_error(r, "unsupported JSON value");
}

// ---- json.dumps

typedef struct {
    bool ensure_ascii, sort_keys;
    const char *indent; // NULL: no newlines
    const char *item_sep, *key_sep;
} Dumps;

static void dump_string(Render *r, SBuf *b, const char *s, size_t len, bool ensure_ascii) {
    sb_putc(r, b, '"');
    size_t run = 0;
    for (size_t i = 0; i < len;) {
        size_t at = i;
        uint32_t c = utf8_next(s, len, &i);
        char esc[16];
        esc[0] = 0;
        switch (c) {
        case '"': strcpy(esc, "\\\""); break;
        case '\\': strcpy(esc, "\\\\"); break;
        case '\n': strcpy(esc, "\\n"); break;
        case '\r': strcpy(esc, "\\r"); break;
        case '\t': strcpy(esc, "\\t"); break;
        case '\b': strcpy(esc, "\\b"); break;
        case '\f': strcpy(esc, "\\f"); break;
        default:
            if (c < 0x20)
                snprintf(esc, sizeof esc, "\\u%04x", c);
            else if (ensure_ascii && c >= 0x80) {
                if (c < 0x10000)
                    snprintf(esc, sizeof esc, "\\u%04x", c);
                else {
                    uint32_t v = c - 0x10000;
                    snprintf(esc, sizeof esc, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
                }
            }
        }
        if (esc[0]) {
            sb_put(r, b, s + run, at - run);
            sb_puts(r, b, esc);
            run = i;
        }
    }
    sb_put(r, b, s + run, len - run);
    sb_putc(r, b, '"');
}

static void dump_float(Render *r, SBuf *b, double f) {
    if (isnan(f))
        sb_puts(r, b, "NaN");
    else if (isinf(f))
        sb_puts(r, b, f < 0 ? "-Infinity" : "Infinity");
    else {
        char buf[40];
        fmt_float(buf, sizeof buf, f);
        sb_puts(r, b, buf);
    }
}

static void newline_indent(Render *r, SBuf *b, const Dumps *o, int level) {
    sb_putc(r, b, '\n');
    for (int i = 0; i < level; i++) sb_puts(r, b, o->indent);
}

// A dict key as json.dumps writes it: strings as they are, numbers, bools and None spelled.
static Str *dump_key(Render *r, Value k) {
    char buf[40];
    switch (k.type) {
    case V_STR: return k.s;
    case V_INT: snprintf(buf, sizeof buf, "%lld", (long long)k.i); break;
    case V_BIGINT: return k.s;
    case V_FLOAT:
        if (isnan(k.f))
            strcpy(buf, "NaN");
        else if (isinf(k.f))
            strcpy(buf, k.f < 0 ? "-Infinity" : "Infinity");
        else
            fmt_float(buf, sizeof buf, k.f);
        break;
    case V_BOOL: strcpy(buf, k.b ? "true" : "false"); break;
    case V_NONE: strcpy(buf, "null"); break;
    default: rt_error(r, "keys must be str, int, float, bool or None, not %s", v_typename(k));
    }
    return rt_str(r, buf, strlen(buf));
}

static void dump_value(Render *r, SBuf *b, Value v, const Dumps *o, int level) {
    if (level > 1000) rt_fail(r, TMPL_ERR_LIMIT, "value nested too deeply for tojson");
    switch (v.type) {
    case V_NONE: sb_puts(r, b, "null"); return;
    case V_BOOL: sb_puts(r, b, v.b ? "true" : "false"); return;
    case V_INT: sb_printf(r, b, "%lld", (long long)v.i); return;
    case V_BIGINT: sb_put(r, b, v.s->s, v.s->len); return;
    case V_FLOAT: dump_float(r, b, v.f); return;
    case V_STR: dump_string(r, b, v.s->s, v.s->len, o->ensure_ascii); return;
    case V_LIST:
        if (v.l->kind == LK_LIST || v.l->kind == LK_TUPLE) {
            if (v.l->n == 0) {
                sb_puts(r, b, "[]");
                return;
            }
            sb_putc(r, b, '[');
            for (size_t i = 0; i < v.l->n; i++) {
                if (i) sb_puts(r, b, o->item_sep);
                if (o->indent) newline_indent(r, b, o, level + 1);
                dump_value(r, b, v.l->v[i], o, level + 1);
            }
            if (o->indent) newline_indent(r, b, o, level);
            sb_putc(r, b, ']');
            return;
        }
        break;
    case V_DICT: {
        const Dict *d = v.d;
        if (d->n == 0) {
            sb_puts(r, b, "{}");
            return;
        }
        size_t *order = rt_alloc(r, d->n * sizeof(size_t));
        for (size_t i = 0; i < d->n; i++) order[i] = i;
        if (o->sort_keys) // insertion sort: stable, and dicts in templates are small
            for (size_t i = 1; i < d->n; i++)
                for (size_t k = i; k > 0 && v_cmp(r, d->k[order[k]], d->k[order[k - 1]]) < 0; k--) {
                    size_t t = order[k];
                    order[k] = order[k - 1];
                    order[k - 1] = t;
                }
        sb_putc(r, b, '{');
        for (size_t i = 0; i < d->n; i++) {
            if (i) sb_puts(r, b, o->item_sep);
            if (o->indent) newline_indent(r, b, o, level + 1);
            Str *k = dump_key(r, d->k[order[i]]);
            dump_string(r, b, k->s, k->len, o->ensure_ascii);
            sb_puts(r, b, o->key_sep);
            dump_value(r, b, d->v[order[i]], o, level + 1);
        }
        if (o->indent) newline_indent(r, b, o, level);
        sb_putc(r, b, '}');
        return;
    }
    default: break;
    }
    rt_error(r, "Object of type %s is not JSON serializable", v_typename(v));
}

Str *json_dumps(Render *r, Value v, bool ensure_ascii, const char *indent, const char *item_sep, const char *key_sep,
                bool sort_keys) {
    Dumps o = {.ensure_ascii = ensure_ascii,
               .sort_keys = sort_keys,
               .indent = indent,
               .item_sep = item_sep ? item_sep
                           : indent ? ","
                                    : ", ",
               .key_sep = key_sep ? key_sep : ": "};
    SBuf b = {0};
    dump_value(r, &b, v, &o, 0);
    return sb_str(r, &b);
}

// ---- request JSON text that keeps its numbers
//
// cJSON stores every number as a double, so "1.0" and "1" or a 30-digit integer and its
// rounding cannot be told apart afterwards. cJSON keeps arrays and members in document order,
// so the number tokens of the text, in order, are the number nodes of a pre-order walk; the
// literal goes into the node's valuestring, which cJSON leaves unused for numbers but copies
// (cJSON_Duplicate) and frees (cJSON_Delete) all the same.

typedef struct {
    const char **at;
    size_t *len;
    size_t n, cap;
} Literals;

// The number tokens of text[0, n): outside strings only numbers hold '-' or digits, and in a
// text cJSON parsed each token is the whole run of number characters (a number followed by
// more of them is a parse error).
static void scan_numbers(const char *text, size_t n, Literals *out) {
    for (size_t i = 0; i < n;) {
        char c = text[i];
        if (c == '"') {
            for (i++; i < n && text[i] != '"'; i++)
                if (text[i] == '\\') i++;
            i++;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t k = i;
            while (k < n && text[k] && strchr("0123456789+-eE.", text[k])) k++;
            if (out->n == out->cap) {
                out->cap = out->cap ? 2 * out->cap : 64;
                out->at = xrealloc(out->at, out->cap * sizeof *out->at);
                out->len = xrealloc(out->len, out->cap * sizeof *out->len);
            }
            out->at[out->n] = text + i;
            out->len[out->n++] = k - i;
            i = k;
        } else
            i++;
    }
}

static size_t count_numbers(const cJSON *j) {
    size_t n = cJSON_IsNumber(j) ? 1 : 0;
    for (const cJSON *c = j->child; c; c = c->next) n += count_numbers(c);
    return n;
}

// Only literals the double cannot stand for: a fraction or exponent (a float even when
// whole), or an integer of 16 digits or more; short integers need no copy, which keeps a long
// array of token ids cheap.
static void attach_literals(cJSON *j, const Literals *lit, size_t *next) {
    if (cJSON_IsNumber(j)) {
        const char *s = lit->at[*next];
        size_t len = lit->len[(*next)++];
        if (len >= 16 || memchr(s, '.', len) || memchr(s, 'e', len) || memchr(s, 'E', len)) {
            cJSON_free(j->valuestring);
            j->valuestring = cJSON_malloc(len + 1);
            CHECK(j->valuestring, "out of memory");
            memcpy(j->valuestring, s, len);
            j->valuestring[len] = 0;
        }
    }
    for (cJSON *c = j->child; c; c = c->next) attach_literals(c, lit, next);
}

cJSON *tmpl_json_parse(const char *text, size_t len, const char **end, bool require_null_terminated) {
    const char *stop = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &stop, require_null_terminated);
    if (end) *end = stop;
    if (!root) return NULL;
    Literals lit = {0};
    scan_numbers(text, (size_t)(stop - text), &lit);
    size_t next = 0;
    if (lit.n == count_numbers(root)) attach_literals(root, &lit, &next); // else keep the doubles
    free(lit.at);
    free(lit.len);
    return root;
}

// Numbers with a literal become raw nodes of a copy, which cJSON prints verbatim.
static void literals_to_raw(cJSON *j) {
    if (cJSON_IsNumber(j) && j->valuestring) j->type = cJSON_Raw | (j->type & ~0xFF);
    for (cJSON *c = j->child; c; c = c->next) literals_to_raw(c);
}

char *tmpl_json_print(const cJSON *j) {
    cJSON *copy = cJSON_Duplicate(j, true);
    CHECK(copy, "cJSON_Duplicate ran out of memory");
    literals_to_raw(copy);
    char *s = cJSON_PrintUnformatted(copy);
    CHECK(s, "cJSON_PrintUnformatted ran out of memory");
    cJSON_Delete(copy);
    return s;
}
