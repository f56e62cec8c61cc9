// filters.c: jinja2's filters (filters.py) with their argument names and defaults,
// plus HF's tojson. Filters that return generators in jinja2 (map, select*, reject*, unique,
// items, batch, slice) return LK_GEN lists: always true, no length, one pass.
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/template/template_impl.h"

typedef Value (*FilterFn)(Render *r, Value in, const Args *a, const char *name);

static Str *soft_str(Render *r, Value v) { return v.type == V_UNDEF ? rt_str(r, "", 0) : v_to_str(r, v); }

static Value keep_markup(Value in, Str *s) {
    Value v = v_str(s);
    v.sub = in.type == V_STR ? in.sub : 0;
    return v;
}

static int64_t arg_int(Render *r, Value v, const char *what) {
    if (v.type == V_INT) return v.i;
    if (v.type == V_BOOL) return v.b;
    if (v.type == V_UNDEF) fail_undefined(r, v);
    v_refuse_big(r, v, v, what);
    rt_error(r, "%s: '%s' object cannot be interpreted as an integer", what, v_typename(v));
}

static Value gen_of(List *l) {
    l->kind = LK_GEN;
    return v_list(l);
}

// len(v) as Python has it.
static int64_t length_of(Render *r, Value v) {
    switch (v.type) {
    case V_UNDEF: return 0;
    case V_STR: return (int64_t)v.s->ncp;
    case V_DICT: return (int64_t)v.d->n;
    case V_LIST:
        if (v.l->kind != LK_GEN && v.l->kind != LK_REVITER) return (int64_t)v.l->n;
        break;
    default: break;
    }
    rt_error(r, "object of type '%s' has no len()", v_typename(v));
}

// ---- attribute getters (make_attrgetter): "a.b.0" walks items, digits as ints

static Value attr_path(Render *r, Value item, Value attribute, Value dflt) {
    if (attribute.type != V_STR) {
        item = getitem_value(r, item, attribute);
    } else {
        const char *p = attribute.s->s;
        for (;;) {
            const char *dot = strchr(p, '.');
            size_t n = dot ? (size_t)(dot - p) : strlen(p);
            Str *part = rt_str(r, p, n);
            int64_t idx;
            bool digits = n > 0 && strspn(part->s, "0123456789") == n;
            Value key = digits && str_parse_int(part->s, n, 10, &idx) ? v_int(idx) : v_str(part);
            item = getitem_value(r, item, key);
            if (dflt.type != V_NONE && item.type == V_UNDEF) item = dflt;
            if (!dot) break;
            p = dot + 1;
        }
    }
    return item;
}

static Value lower_if_str(Render *r, Value v, bool case_sensitive) {
    if (case_sensitive || v.type != V_STR) return v;
    return v_str(str_case(r, v.s, 1));
}

// sort(attribute="a,b") compares lists of the attributes
static Value sort_key(Render *r, Value item, Value attribute, bool case_sensitive) {
    if (attribute.type == V_NONE) return lower_if_str(r, item, case_sensitive);
    if (attribute.type != V_STR || !strchr(attribute.s->s, ','))
        return lower_if_str(r, attr_path(r, item, attribute, v_none()), case_sensitive);
    List *parts = str_split(r, attribute.s, v_str(rt_str(r, ",", 1)).s, -1, false);
    List *key = rt_list(r, parts->n, LK_LIST);
    for (size_t i = 0; i < parts->n; i++)
        key->v[key->n++] = lower_if_str(r, attr_path(r, item, parts->v[i], v_none()), case_sensitive);
    return v_list(key);
}

// Stable merge sort of items by keys (Python's sorted: stable, reverse keeps equal order).
static void merge_sort(Render *r, Value *items, Value *keys, size_t n, bool reverse, Value *tmp_i, Value *tmp_k) {
    if (n < 2) return;
    size_t h = n / 2;
    merge_sort(r, items, keys, h, reverse, tmp_i, tmp_k);
    merge_sort(r, items + h, keys + h, n - h, reverse, tmp_i, tmp_k);
    size_t a = 0, b = h, o = 0;
    while (a < h && b < n) {
        int c = reverse ? v_cmp(r, keys[a], keys[b]) : v_cmp(r, keys[b], keys[a]); // take b only when strictly first
        if (c < 0)
            tmp_i[o] = items[b], tmp_k[o++] = keys[b++];
        else
            tmp_i[o] = items[a], tmp_k[o++] = keys[a++];
    }
    while (a < h) tmp_i[o] = items[a], tmp_k[o++] = keys[a++];
    while (b < n) tmp_i[o] = items[b], tmp_k[o++] = keys[b++];
    vcopy(items, tmp_i, n);
    vcopy(keys, tmp_k, n);
}

static List *sorted(Render *r, List *items, Value *keys, bool reverse) {
    size_t n = items->n;
    List *out = rt_list(r, n, LK_LIST);
    vcopy(out->v, items->v, n);
    out->n = n;
    Value *ti = rt_alloc(r, (n + 1) * sizeof(Value)), *tk = rt_alloc(r, (n + 1) * sizeof(Value));
    rt_step(r, (long)n * 4);
    merge_sort(r, out->v, keys, n, reverse, ti, tk);
    return out;
}

// ---- filters

#define FILTER(fn) static Value fn(Render *r, Value in, const Args *a, const char *name)

FILTER(f_trim) {
    static const char *const n[] = {"chars"};
    Value p[1] = {v_none()};
    args_bind(r, name, a, 1, n, 0, p);
    return keep_markup(in, str_strip(r, soft_str(r, in), p[0].type == V_NONE ? NULL : soft_str(r, p[0]), 3));
}

static Value case_filter(Render *r, Value in, const Args *a, const char *name, int mode) {
    args_bind(r, name, a, 0, NULL, 0, NULL);
    return keep_markup(in, str_case(r, soft_str(r, in), mode));
}
FILTER(f_upper) { return case_filter(r, in, a, name, 0); }
FILTER(f_lower) { return case_filter(r, in, a, name, 1); }
FILTER(f_capitalize) { return case_filter(r, in, a, name, 2); }
FILTER(f_title) { return case_filter(r, in, a, name, 3); }

FILTER(f_length) {
    args_bind(r, name, a, 0, NULL, 0, NULL);
    return v_int(length_of(r, in));
}

FILTER(f_tojson) {
    static const char *const n[] = {"ensure_ascii", "indent", "separators", "sort_keys"};
    Value p[4] = {v_bool(false), v_none(), v_none(), v_bool(false)};
    args_bind(r, name, a, 4, n, 0, p);
    const char *indent = NULL, *item_sep = NULL, *key_sep = NULL;
    if (p[1].type == V_STR)
        indent = p[1].s->s;
    else if (p[1].type != V_NONE) {
        int64_t w = arg_int(r, p[1], "tojson indent");
        if (w > 1000) rt_error(r, "tojson indent too large");
        char *sp = rt_alloc(r, (size_t)(w > 0 ? w : 0) + 1);
        for (int64_t i = 0; i < w; i++) sp[i] = ' ';
        indent = sp;
    }
    if (p[2].type != V_NONE) {
        List *seps = v_items(r, p[2]);
        if (seps->n != 2 || seps->v[0].type != V_STR || seps->v[1].type != V_STR)
            rt_error(r, "tojson separators must be a pair of strings");
        item_sep = seps->v[0].s->s;
        key_sep = seps->v[1].s->s;
    }
    return v_str(json_dumps(r, in, v_truthy(r, p[0]), indent, item_sep, key_sep, v_truthy(r, p[3])));
}

FILTER(f_items) {
    args_bind(r, name, a, 0, NULL, 0, NULL);
    if (in.type == V_UNDEF) return gen_of(rt_list(r, 0, LK_LIST));
    if (in.type != V_DICT) rt_error(r, "Can only get item pairs from a mapping.");
    List *l = rt_list(r, in.d->n, LK_GEN);
    for (size_t i = 0; i < in.d->n; i++) {
        List *pair = rt_list(r, 2, LK_TUPLE);
        pair->v[0] = in.d->k[i];
        pair->v[1] = in.d->v[i];
        pair->n = 2;
        l->v[l->n++] = v_list(pair);
    }
    return v_list(l);
}

FILTER(f_join) {
    static const char *const n[] = {"d", "attribute"};
    Value p[2] = {v_str(rt_str(r, "", 0)), v_none()};
    args_bind(r, name, a, 2, n, 0, p);
    List *items = v_items(r, in);
    Str *sep = soft_str(r, p[0]);
    SBuf b = {0};
    for (size_t i = 0; i < items->n; i++) {
        if (i) sb_put(r, &b, sep->s, sep->len);
        Value v = p[1].type == V_NONE ? items->v[i] : attr_path(r, items->v[i], p[1], v_none());
        v_write_str(r, &b, v);
    }
    return v_str(sb_str(r, &b));
}

FILTER(f_default) {
    static const char *const n[] = {"default_value", "boolean"};
    Value p[2] = {v_str(rt_str(r, "", 0)), v_bool(false)};
    args_bind(r, name, a, 2, n, 0, p);
    if (in.type == V_UNDEF || (v_truthy(r, p[1]) && !v_truthy(r, in))) return p[0];
    return in;
}

FILTER(f_replace) {
    static const char *const n[] = {"old", "new", "count"};
    Value p[3] = {v_none(), v_none(), v_none()};
    args_bind(r, name, a, 3, n, 2, p);
    int64_t count = p[2].type == V_NONE ? -1 : arg_int(r, p[2], "replace count");
    return v_str(str_replace(r, soft_str(r, in), soft_str(r, p[0]), soft_str(r, p[1]), count));
}

FILTER(f_first) {
    args_bind(r, name, a, 0, NULL, 0, NULL);
    List *items = v_items(r, in);
    return items->n ? items->v[0] : v_undef("No first item, sequence was empty.", UNDEF_HINT);
}

FILTER(f_last) {
    args_bind(r, name, a, 0, NULL, 0, NULL);
    if (in.type == V_LIST && (in.l->kind == LK_GEN || in.l->kind == LK_REVITER))
        rt_error(r, "'%s' object is not reversible", v_typename(in));
    List *items = v_items(r, in);
    return items->n ? items->v[items->n - 1] : v_undef("No last item, sequence was empty.", UNDEF_HINT);
}

FILTER(f_string) {
    args_bind(r, name, a, 0, NULL, 0, NULL);
    return keep_markup(in, soft_str(r, in));
}

// A decimal integer too long for int64 ("[+-]?[0-9]+" between ASCII spaces), or false.
static bool long_decimal(Render *r, Str *s, Value *out) {
    size_t a = 0, b = s->len;
    while (a < b && strchr(" \t\n\r\f\v", s->s[a])) a++;
    while (b > a && strchr(" \t\n\r\f\v", s->s[b - 1])) b--;
    size_t d = a < b && (s->s[a] == '-' || s->s[a] == '+') ? a + 1 : a;
    if (d == b) return false;
    for (size_t i = d; i < b; i++)
        if (s->s[i] < '0' || s->s[i] > '9') return false;
    *out = v_int_text(r, s->s + a, b - a);
    return true;
}

FILTER(f_int) {
    static const char *const n[] = {"default", "base"};
    Value p[2] = {v_int(0), v_int(10)};
    args_bind(r, name, a, 2, n, 0, p);
    int64_t i;
    double f;
    switch (in.type) {
    case V_UNDEF: fail_undefined(r, in);
    case V_INT:
    case V_BIGINT: return in;
    case V_BOOL: return v_int(in.b);
    case V_FLOAT:
        if (isnan(in.f)) return p[0];
        if (fabs(in.f) >= 9.2e18) rt_error(r, "cannot convert float infinity or too large a float to integer");
        return v_int((int64_t)in.f);
    case V_STR:
        if (str_parse_int(in.s->s, in.s->len, (int)arg_int(r, p[1], "int base"), &i)) return v_int(i);
        Value big;
        if (arg_int(r, p[1], "int base") == 10 && long_decimal(r, in.s, &big)) return big; // Python's int is exact
        if (str_parse_float(in.s->s, in.s->len, &f) && !isnan(f)) {
            if (fabs(f) >= 9.2e18) rt_error(r, "cannot convert float infinity or too large a float to integer");
            return v_int((int64_t)f);
        }
        return p[0];
    default: return p[0];
    }
}

FILTER(f_float) {
    static const char *const n[] = {"default"};
    Value p[1] = {v_float(0.0)};
    args_bind(r, name, a, 1, n, 0, p);
    double f;
    if (in.type == V_UNDEF) fail_undefined(r, in);
    if (in.type == V_FLOAT) return in;
    if (in.type == V_INT || in.type == V_BOOL) return v_float(v_num(in));
    if (in.type == V_BIGINT) { // correctly rounded, as Python's float(int)
        f = strtod(in.s->s, NULL);
        if (isinf(f)) rt_error(r, "int too large to convert to float");
        return v_float(f);
    }
    if (in.type == V_STR && str_parse_float(in.s->s, in.s->len, &f)) return v_float(f);
    return p[0];
}

FILTER(f_safe) {
    args_bind(r, name, a, 0, NULL, 0, NULL);
    Value v = v_str(soft_str(r, in));
    v.sub = 1;
    return v;
}

FILTER(f_escape) {
    args_bind(r, name, a, 0, NULL, 0, NULL);
    if (in.type == V_STR && in.sub && strcmp(name, "forceescape")) return in;
    Value v = v_str(str_html_escape(r, soft_str(r, in)));
    v.sub = 1;
    return v;
}

FILTER(f_indent) {
    static const char *const n[] = {"width", "first", "blank"};
    Value p[3] = {v_int(4), v_bool(false), v_bool(false)};
    args_bind(r, name, a, 3, n, 0, p);
    if (in.type == V_UNDEF) fail_undefined(r, in);
    if (in.type != V_STR) rt_error(r, "unsupported operand type(s) for +=: '%s' and 'str'", v_typename(in));
    Str *ind;
    if (p[0].type == V_STR)
        ind = p[0].s;
    else {
        int64_t w = arg_int(r, p[0], "indent width");
        if (w > 1000) rt_error(r, "indent width too large");
        char sp[1001];
        memset(sp, ' ', (size_t)(w > 0 ? w : 0));
        ind = rt_str(r, sp, (size_t)(w > 0 ? w : 0));
    }
    SBuf t = {0};
    sb_put(r, &t, in.s->s, in.s->len);
    sb_putc(r, &t, '\n'); // jinja2's quirk for splitlines: a trailing newline adds no line
    List *lines = str_splitlines(r, sb_str(r, &t), false);
    SBuf b = {0};
    bool blank = v_truthy(r, p[2]);
    if (v_truthy(r, p[1])) sb_put(r, &b, ind->s, ind->len);
    for (size_t i = 0; i < lines->n; i++) {
        Str *line = lines->v[i].s;
        if (i) {
            sb_putc(r, &b, '\n');
            if (blank || line->len) sb_put(r, &b, ind->s, ind->len);
        }
        sb_put(r, &b, line->s, line->len);
    }
    return keep_markup(in, sb_str(r, &b));
}

// select / reject / selectattr / rejectattr: which items pass `test(item.attr, *args)`
static Value select_filter(Render *r, Value in, const Args *a, const char *name, bool attr, bool keep) {
    List *out = rt_list(r, 0, LK_GEN);
    if (!v_truthy(r, in)) return v_list(out);
    int off = attr ? 1 : 0;
    if (attr && a->npos < 1) rt_error(r, "Missing parameter for attribute name");
    int tid = -1;
    const char *tname = NULL;
    if (a->npos > off) {
        if (a->pos[off].type != V_STR) rt_error(r, "%s: the test name must be a string", name);
        tname = a->pos[off].s->s;
        tid = test_find(tname);
        if (tid < 0) rt_error(r, "No test named '%s'.", tname);
    }
    Args targs = {.pos = a->pos + off + 1,
                  .npos = a->npos > off + 1 ? a->npos - off - 1 : 0,
                  .kwn = a->kwn,
                  .kwv = a->kwv,
                  .nkw = a->nkw};
    List *items = v_items(r, in);
    for (size_t i = 0; i < items->n; i++) {
        Value v = attr ? attr_path(r, items->v[i], a->pos[0], v_none()) : items->v[i];
        bool pass = tname ? test_apply(r, tid, tname, v, &targs) : v_truthy(r, v);
        if (pass == keep) rt_list_push(r, out, items->v[i]);
    }
    return v_list(out);
}
FILTER(f_select) { return select_filter(r, in, a, name, false, true); }
FILTER(f_reject) { return select_filter(r, in, a, name, false, false); }
FILTER(f_selectattr) { return select_filter(r, in, a, name, true, true); }
FILTER(f_rejectattr) { return select_filter(r, in, a, name, true, false); }

FILTER(f_map) {
    (void)name;
    List *out = rt_list(r, 0, LK_GEN);
    if (!v_truthy(r, in)) return v_list(out);
    List *items = v_items(r, in);
    if (a->npos == 0) {
        Value attribute = v_none(), dflt = v_none();
        bool have = false;
        for (int k = 0; k < a->nkw; k++) {
            if (!strcmp(a->kwn[k], "attribute"))
                attribute = a->kwv[k], have = true;
            else if (!strcmp(a->kwn[k], "default"))
                dflt = a->kwv[k];
            else
                rt_error(r, "Unexpected keyword argument '%s'", a->kwn[k]);
        }
        if (!have) rt_error(r, "map requires a filter argument");
        for (size_t i = 0; i < items->n; i++) rt_list_push(r, out, attr_path(r, items->v[i], attribute, dflt));
        return v_list(out);
    }
    if (a->pos[0].type != V_STR) rt_error(r, "map: the filter name must be a string");
    const char *fname = a->pos[0].s->s;
    int fid = filter_find(fname);
    if (fid < 0) rt_error(r, "No filter named '%s'.", fname);
    Args fargs = {.pos = a->pos + 1, .npos = a->npos - 1, .kwn = a->kwn, .kwv = a->kwv, .nkw = a->nkw};
    for (size_t i = 0; i < items->n; i++) rt_list_push(r, out, filter_apply(r, fid, fname, items->v[i], &fargs));
    return v_list(out);
}

FILTER(f_list) {
    args_bind(r, name, a, 0, NULL, 0, NULL);
    List *items = v_items(r, in);
    List *l = rt_list(r, items->n, LK_LIST);
    vcopy(l->v, items->v, items->n);
    l->n = items->n;
    return v_list(l);
}

FILTER(f_unique) {
    static const char *const n[] = {"case_sensitive", "attribute"};
    Value p[2] = {v_bool(false), v_none()};
    args_bind(r, name, a, 2, n, 0, p);
    bool cs = v_truthy(r, p[0]);
    List *items = v_items(r, in), *out = rt_list(r, 0, LK_GEN), *seen = rt_list(r, 0, LK_LIST);
    for (size_t i = 0; i < items->n; i++) {
        Value key = lower_if_str(r, p[1].type == V_NONE ? items->v[i] : attr_path(r, items->v[i], p[1], v_none()), cs);
        if (key.type == V_DICT || (key.type == V_LIST && key.l->kind != LK_TUPLE))
            rt_error(r, "unhashable type: '%s'", v_typename(key));
        bool dup = false;
        rt_step(r, (long)seen->n / 16);
        for (size_t k = 0; k < seen->n && !dup; k++) dup = v_eq(r, seen->v[k], key);
        if (dup) continue;
        rt_list_push(r, seen, key);
        rt_list_push(r, out, items->v[i]);
    }
    return v_list(out);
}

FILTER(f_round) {
    static const char *const n[] = {"precision", "method"};
    Value p[2] = {v_int(0), rt_cstr(r, "common")};
    args_bind(r, name, a, 2, n, 0, p);
    const char *method = p[1].type == V_STR ? p[1].s->s : "";
    if (strcmp(method, "common") && strcmp(method, "ceil") && strcmp(method, "floor"))
        rt_error(r, "method must be common, ceil or floor");
    int64_t prec = arg_int(r, p[0], "round precision");
    if (in.type == V_UNDEF) fail_undefined(r, in);
    if (in.type == V_BIGINT && !strcmp(method, "common") && prec >= 0) return in; // round(int, n) is the int
    v_refuse_big(r, in, in, "round");
    if (!v_is_number(in)) rt_error(r, "type %s doesn't define __round__ method", v_typename(in));
    double x = v_num(in), scale = pow(10.0, (double)prec);
    if (!strcmp(method, "common")) {
        if (in.type != V_FLOAT) { // round(int, n) stays an int
            if (prec >= 0) return v_int(in.type == V_BOOL ? in.b : in.i);
            double y = nearbyint(x / pow(10.0, (double)-prec)) * pow(10.0, (double)-prec);
            return v_int((int64_t)y);
        }
        if (!isfinite(x)) return in;
        if (prec == 0) return v_float(nearbyint(x));
        if (prec > 0 && prec < 300) { // printf rounds the exact binary value, half to even: Python's rule
            char buf[400];
            snprintf(buf, sizeof buf, "%.*f", (int)prec, x);
            return v_float(strtod(buf, NULL));
        }
        return v_float(prec > 0 ? x : nearbyint(x / pow(10.0, (double)-prec)) * pow(10.0, (double)-prec));
    }
    double y = !strcmp(method, "ceil") ? ceil(x * scale) : floor(x * scale);
    return v_float(y / scale);
}

FILTER(f_abs) {
    args_bind(r, name, a, 0, NULL, 0, NULL);
    if (in.type == V_FLOAT) return v_float(fabs(in.f));
    if (in.type == V_INT && in.i != INT64_MIN) return v_int(in.i < 0 ? -in.i : in.i);
    if (in.type == V_BOOL) return v_int(in.b);
    if (in.type == V_INT || in.type == V_BIGINT) { // INT64_MIN and beyond: drop the sign of the digits
        Str *t = v_to_str(r, in);
        return t->s[0] == '-' ? v_int_text(r, t->s + 1, t->len - 1) : in;
    }
    if (in.type == V_UNDEF) fail_undefined(r, in);
    rt_error(r, "bad operand type for abs(): '%s'", v_typename(in));
}

FILTER(f_attr) {
    static const char *const n[] = {"name"};
    Value p[1];
    args_bind(r, name, a, 1, n, 1, p);
    Str *attr = soft_str(r, p[0]);
    if (in.type == V_DICT) { // attributes only: a dict's methods, never its keys
        Value m = getattr_value(r, in, attr->s);
        return m.type == V_FUNC ? m : v_undef(attr->s, V_DICT);
    }
    return getattr_value(r, in, attr->s);
}

FILTER(f_center) {
    static const char *const n[] = {"width"};
    Value p[1] = {v_int(80)};
    args_bind(r, name, a, 1, n, 0, p);
    Args m = {.pos = p, .npos = 1};
    Value fn = getattr_value(r, v_str(soft_str(r, in)), "center");
    return call_value(r, fn, &m);
}

FILTER(f_dictsort) {
    static const char *const n[] = {"case_sensitive", "by", "reverse"};
    Value p[3] = {v_bool(false), rt_cstr(r, "key"), v_bool(false)};
    args_bind(r, name, a, 3, n, 0, p);
    if (in.type != V_DICT) rt_error(r, "dictsort: '%s' object has no attribute 'items'", v_typename(in));
    int pos = p[1].type == V_STR && !strcmp(p[1].s->s, "key")     ? 0
              : p[1].type == V_STR && !strcmp(p[1].s->s, "value") ? 1
                                                                  : -1;
    if (pos < 0) rt_error(r, "You can only sort by either \"key\" or \"value\"");
    List *pairs = rt_list(r, in.d->n, LK_LIST);
    Value *keys = rt_alloc(r, (in.d->n + 1) * sizeof(Value));
    for (size_t i = 0; i < in.d->n; i++) {
        List *pair = rt_list(r, 2, LK_TUPLE);
        pair->v[0] = in.d->k[i];
        pair->v[1] = in.d->v[i];
        pair->n = 2;
        pairs->v[pairs->n++] = v_list(pair);
        keys[i] = lower_if_str(r, pos ? in.d->v[i] : in.d->k[i], v_truthy(r, p[0]));
    }
    return v_list(sorted(r, pairs, keys, v_truthy(r, p[2])));
}

FILTER(f_sort) {
    static const char *const n[] = {"reverse", "case_sensitive", "attribute"};
    Value p[3] = {v_bool(false), v_bool(false), v_none()};
    args_bind(r, name, a, 3, n, 0, p);
    List *items = v_items(r, in);
    Value *keys = rt_alloc(r, (items->n + 1) * sizeof(Value));
    for (size_t i = 0; i < items->n; i++) keys[i] = sort_key(r, items->v[i], p[2], v_truthy(r, p[1]));
    return v_list(sorted(r, items, keys, v_truthy(r, p[0])));
}

static Value min_max(Render *r, Value in, const Args *a, const char *name, bool want_max) {
    static const char *const n[] = {"case_sensitive", "attribute"};
    Value p[2] = {v_bool(false), v_none()};
    args_bind(r, name, a, 2, n, 0, p);
    List *items = v_items(r, in);
    if (!items->n) return v_undef("No aggregated item, sequence was empty.", UNDEF_HINT);
    size_t best = 0;
    Value bk = sort_key(r, items->v[0], p[1], v_truthy(r, p[0]));
    for (size_t i = 1; i < items->n; i++) {
        Value k = sort_key(r, items->v[i], p[1], v_truthy(r, p[0]));
        int c = v_cmp(r, k, bk);
        if (want_max ? c > 0 : c < 0) best = i, bk = k;
    }
    return items->v[best];
}
FILTER(f_min) { return min_max(r, in, a, name, false); }
FILTER(f_max) { return min_max(r, in, a, name, true); }

FILTER(f_sum) {
    static const char *const n[] = {"attribute", "start"};
    Value p[2] = {v_none(), v_int(0)};
    args_bind(r, name, a, 2, n, 0, p);
    List *items = v_items(r, in);
    Value acc = p[1];
    for (size_t i = 0; i < items->n; i++) {
        Value v = p[0].type == V_NONE ? items->v[i] : attr_path(r, items->v[i], p[0], v_none());
        if (acc.type == V_STR) rt_error(r, "sum() can't sum strings [use ''.join(seq) instead]");
        if (v.type == V_UNDEF) fail_undefined(r, v);
        if (v_is_numeric(acc) && v_is_numeric(v)) v_refuse_big(r, acc, v, "sum");
        if (v_is_number(acc) && v_is_number(v)) {
            if (acc.type == V_FLOAT || v.type == V_FLOAT)
                acc = v_float(v_num(acc) + v_num(v));
            else {
                int64_t x = acc.type == V_BOOL ? acc.b : acc.i, y = v.type == V_BOOL ? v.b : v.i, z;
                if (__builtin_add_overflow(x, y, &z))
                    rt_error(r, "integer overflow in sum (sluice integers are 64-bit)");
                acc = v_int(z);
            }
        } else {
            rt_error(r, "unsupported operand type(s) for +: '%s' and '%s'", v_typename(acc), v_typename(v));
        }
    }
    return acc;
}

FILTER(f_reverse) {
    args_bind(r, name, a, 0, NULL, 0, NULL);
    if (in.type == V_STR) {
        int64_t first, count;
        slice_adjust(r, (int64_t)in.s->ncp, false, 0, false, 0, -1, &first, &count);
        return keep_markup(in, str_slice(r, in.s, first, count, -1));
    }
    // reversed() of a sequence or dict is an iterator; anything else is listed, then reversed
    bool reversible = (in.type == V_LIST && in.l->kind != LK_GEN && in.l->kind != LK_REVITER) || in.type == V_DICT;
    List *items = v_items(r, in), *l = rt_list(r, items->n, reversible ? LK_REVITER : LK_LIST);
    for (size_t i = items->n; i-- > 0;) l->v[l->n++] = items->v[i];
    return v_list(l);
}

FILTER(f_format) {
    if (a->npos && a->nkw) rt_error(r, "can't handle positional and keyword arguments at the same time");
    Value args;
    if (a->nkw) {
        Dict *d = rt_dict(r, (size_t)a->nkw);
        for (int k = 0; k < a->nkw; k++) rt_dict_set(r, d, rt_cstr(r, a->kwn[k]), a->kwv[k]);
        args = v_dict(d);
    } else {
        List *t = rt_list(r, (size_t)a->npos, LK_TUPLE);
        vcopy(t->v, a->pos, (size_t)a->npos);
        t->n = (size_t)a->npos;
        args = v_list(t);
    }
    (void)name;
    return keep_markup(in, str_percent_format(r, soft_str(r, in), args));
}

// batch(n, fill_with): lists of n items; slice(n, fill_with): n lists of about equal size
static Value batch_or_slice(Render *r, Value in, const Args *a, const char *name, bool batch) {
    static const char *const nb[] = {"linecount", "fill_with"}, *const ns[] = {"slices", "fill_with"};
    Value p[2] = {v_none(), v_none()};
    args_bind(r, name, a, 2, batch ? nb : ns, 1, p);
    int64_t n = arg_int(r, p[0], name);
    List *items = v_items(r, in), *out = rt_list(r, 0, LK_GEN);
    if (batch) {
        if (n <= 0) rt_error(r, "batch size must be positive");
        for (size_t i = 0; i < items->n; i += (size_t)n) {
            List *b = rt_list(r, (size_t)n, LK_LIST);
            for (size_t k = i; k < items->n && k < i + (size_t)n; k++) b->v[b->n++] = items->v[k];
            while (p[1].type != V_NONE && b->n < (size_t)n) b->v[b->n++] = p[1];
            rt_list_push(r, out, v_list(b));
        }
        return v_list(out);
    }
    if (n <= 0) rt_error(r, "integer division or modulo by zero");
    int64_t len = (int64_t)items->n, per = len / n, extra = len % n, offset = 0;
    for (int64_t k = 0; k < n; k++) {
        int64_t start = offset + k * per;
        if (k < extra) offset++;
        int64_t end = offset + (k + 1) * per;
        List *b = rt_list(r, (size_t)(end - start + 1), LK_LIST);
        for (int64_t j = start; j < end; j++) b->v[b->n++] = items->v[j];
        if (p[1].type != V_NONE && k >= extra) b->v[b->n++] = p[1];
        rt_list_push(r, out, v_list(b));
    }
    return v_list(out);
}
FILTER(f_batch) { return batch_or_slice(r, in, a, name, true); }
FILTER(f_slice) { return batch_or_slice(r, in, a, name, false); }

FILTER(f_wordcount) {
    args_bind(r, name, a, 0, NULL, 0, NULL);
    Str *s = soft_str(r, in);
    int64_t words = 0;
    bool inword = false;
    for (size_t i = 0; i < s->len;) {
        uint32_t c = utf8_next(s->s, s->len, &i);
        bool w = uc_isalpha(c) || uc_isdigit(c) || c == '_';
        words += w && !inword;
        inword = w;
    }
    return v_int(words);
}

typedef struct {
    const char *name;
    FilterFn fn;
} FilterDef;

static const FilterDef filters[] = {
    {"abs", f_abs},           {"attr", f_attr},
    {"batch", f_batch},       {"capitalize", f_capitalize},
    {"center", f_center},     {"count", f_length},
    {"d", f_default},         {"default", f_default},
    {"dictsort", f_dictsort}, {"e", f_escape},
    {"escape", f_escape},     {"first", f_first},
    {"float", f_float},       {"forceescape", f_escape},
    {"format", f_format},     {"indent", f_indent},
    {"int", f_int},           {"items", f_items},
    {"join", f_join},         {"last", f_last},
    {"length", f_length},     {"list", f_list},
    {"lower", f_lower},       {"map", f_map},
    {"max", f_max},           {"min", f_min},
    {"reject", f_reject},     {"rejectattr", f_rejectattr},
    {"replace", f_replace},   {"reverse", f_reverse},
    {"round", f_round},       {"safe", f_safe},
    {"select", f_select},     {"selectattr", f_selectattr},
    {"slice", f_slice},       {"sort", f_sort},
    {"string", f_string},     {"sum", f_sum},
    {"title", f_title},       {"tojson", f_tojson},
    {"trim", f_trim},         {"unique", f_unique},
    {"upper", f_upper},       {"wordcount", f_wordcount},
};

int filter_find(const char *name) {
    for (size_t i = 0; i < ARRAY_LEN(filters); i++)
        if (!strcmp(filters[i].name, name)) return (int)i;
    return -1;
}

Value filter_apply(Render *r, int fid, const char *name, Value in, const Args *a) {
    if (fid < 0) rt_error(r, "No filter named '%s'.", name);
    rt_step(r, 1);
    return filters[fid].fn(r, in, a, name);
}
