// json.c: request JSON (cJSON) -> template values, and Python's json.dumps for the
// `tojson` filter (HF's: ensure_ascii=False, separators ', ' / ': ', or ',' / ': ' once
// indented, keys in insertion order unless sort_keys).
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/template/template_impl.h"

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

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
        size_t h = (size_t)hash_bytes(key, kl) & (cap - 1);
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
        double d = j->valuedouble;
        // cJSON keeps no "1" vs "1.0": whole numbers become ints, as JSON from clients means
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
