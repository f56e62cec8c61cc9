// call.c: everything callable or reachable with `.` and `[]`: the globals (range,
// dict, namespace, raise_exception, strftime_now), the methods of str, dict and list that
// templates call, the loop object, and jinja2's sandboxed getattr / getitem rules:
//  - x.name tries the attribute first (so `d.items` is the method even when d has an
//    "items" key), then the item; x[key] tries the item first, then the attribute;
//  - a missing one is an undefined value, not an error (the error comes when it is used);
//  - methods that mutate a list or dict are refused (ImmutableSandboxedEnvironment).
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "engine/template/template_impl.h"

void args_bind(Render *r, const char *what, const Args *a, int n, const char *const *names, int nreq, Value *out) {
    bool set[16] = {false};
    CHECK(n <= 16);
    if (a->npos > n) rt_error(r, "%s() takes at most %d argument%s (%d given)", what, n, n == 1 ? "" : "s", a->npos);
    for (int i = 0; i < a->npos; i++) out[i] = a->pos[i], set[i] = true;
    for (int k = 0; k < a->nkw; k++) {
        int i = 0;
        while (i < n && strcmp(names[i], a->kwn[k])) i++;
        if (i == n) rt_error(r, "%s() got an unexpected keyword argument '%s'", what, a->kwn[k]);
        if (set[i]) rt_error(r, "%s() got multiple values for argument '%s'", what, names[i]);
        out[i] = a->kwv[k];
        set[i] = true;
    }
    for (int i = 0; i < nreq; i++)
        if (!set[i]) rt_error(r, "%s() missing required argument '%s'", what, names[i]);
}

static Value func_value(Render *r, int kind, int id, Value self, const char *name) {
    Func *f = rt_alloc(r, sizeof(Func));
    f->kind = (uint8_t)kind;
    f->id = id;
    f->self = self;
    f->name = name;
    Value v = {.type = V_FUNC};
    v.fn = f;
    return v;
}

// ---- globals

enum { G_RANGE, G_DICT, G_NAMESPACE, G_RAISE, G_STRFTIME, G_COUNT };
static const char *const global_names[G_COUNT] = {"range", "dict", "namespace", "raise_exception", "strftime_now"};
// Shared by every render and never written: a Func value is only read.
static Func global_funcs[G_COUNT] = {
    {.kind = FN_BUILTIN, .id = G_RANGE, .name = "range"},
    {.kind = FN_BUILTIN, .id = G_DICT, .name = "dict"},
    {.kind = FN_BUILTIN, .id = G_NAMESPACE, .name = "namespace"},
    {.kind = FN_BUILTIN, .id = G_RAISE, .name = "raise_exception"},
    {.kind = FN_BUILTIN, .id = G_STRFTIME, .name = "strftime_now"},
};

Value global_lookup(const char *name, bool *found) {
    for (int i = 0; i < G_COUNT; i++)
        if (!strcmp(name, global_names[i])) {
            Value v = {.type = V_FUNC};
            v.fn = &global_funcs[i];
            *found = true;
            return v;
        }
    *found = false;
    return v_none();
}

// dict(...) and namespace(...): a mapping or pairs, then keyword arguments.
static Dict *dict_from_args(Render *r, const char *what, const Args *a) {
    Dict *d = rt_dict(r, 0);
    if (a->npos > 1) rt_error(r, "%s expected at most 1 argument, got %d", what, a->npos);
    if (a->npos == 1) {
        Value src = a->pos[0];
        if (src.type == V_DICT || src.type == V_NS) {
            for (size_t i = 0; i < src.d->n; i++) rt_dict_set(r, d, src.d->k[i], src.d->v[i]);
        } else {
            List *items = v_items(r, src);
            for (size_t i = 0; i < items->n; i++) {
                List *pair = v_items(r, items->v[i]);
                if (pair->n != 2)
                    rt_error(r, "dictionary update sequence element #%zu has length %zu; 2 is required", i, pair->n);
                rt_dict_set(r, d, pair->v[0], pair->v[1]);
            }
        }
    }
    for (int k = 0; k < a->nkw; k++) rt_dict_set(r, d, rt_cstr(r, a->kwn[k]), a->kwv[k]);
    return d;
}

static int64_t need_int(Render *r, Value v, const char *what) {
    if (v.type == V_INT) return v.i;
    if (v.type == V_BOOL) return v.b;
    if (v.type == V_UNDEF) fail_undefined(r, v);
    v_refuse_big(r, v, v, what);
    rt_error(r, "%s: '%s' object cannot be interpreted as an integer", what, v_typename(v));
}

static Value builtin_call(Render *r, int id, const Args *a) {
    switch (id) {
    case G_RANGE: {
        if (a->nkw) rt_error(r, "range() takes no keyword arguments");
        if (a->npos < 1 || a->npos > 3) rt_error(r, "range expected 1 to 3 arguments, got %d", a->npos);
        int64_t start = 0, stop, step = 1;
        if (a->npos == 1)
            stop = need_int(r, a->pos[0], "range");
        else
            start = need_int(r, a->pos[0], "range"), stop = need_int(r, a->pos[1], "range");
        if (a->npos == 3) step = need_int(r, a->pos[2], "range");
        if (step == 0) rt_error(r, "range() arg 3 must not be zero");
        __int128 span = step > 0 ? (__int128)stop - start : (__int128)start - stop;
        __int128 count = span > 0 ? (span - 1) / (step > 0 ? step : -(__int128)step) + 1 : 0;
        if (count > 100000) rt_error(r, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
        List *l = rt_list(r, (size_t)count, LK_LIST);
        for (int64_t i = 0; i < (int64_t)count; i++) l->v[l->n++] = v_int(start + i * step);
        return v_list(l);
    }
    case G_DICT: return v_dict(dict_from_args(r, "dict", a));
    case G_NAMESPACE: {
        Value v = v_dict(dict_from_args(r, "namespace", a));
        v.type = V_NS;
        return v;
    }
    case G_RAISE: {
        static const char *const names[] = {"message"};
        Value msg = v_undef(NULL, V_UNDEF);
        args_bind(r, "raise_exception", a, 1, names, 1, &msg);
        rt_fail(r, TMPL_ERR_RAISED, "%s", v_to_str(r, msg)->s);
    }
    case G_STRFTIME: {
        static const char *const names[] = {"format"};
        Value fmt = v_undef(NULL, V_UNDEF);
        args_bind(r, "strftime_now", a, 1, names, 1, &fmt);
        if (fmt.type != V_STR) rt_error(r, "strftime() argument 1 must be str, not %s", v_typename(fmt));
        time_t now = r->lim.now ? (time_t)r->lim.now : time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        char buf[512];
        size_t n = fmt.s->len ? strftime(buf, sizeof buf, fmt.s->s, &tm) : 0;
        if (fmt.s->len && n == 0) rt_error(r, "strftime_now: the format gives no text or too much");
        return v_str(rt_str(r, buf, n));
    }
    }
    DIE("template: unknown builtin %d", id);
}

// ---- methods

typedef enum {
    M_STRIP,
    M_LSTRIP,
    M_RSTRIP,
    M_SPLIT,
    M_RSPLIT,
    M_SPLITLINES,
    M_STARTSWITH,
    M_ENDSWITH,
    M_UPPER,
    M_LOWER,
    M_TITLE,
    M_CAPITALIZE,
    M_CASEFOLD,
    M_REPLACE,
    M_FIND,
    M_RFIND,
    M_INDEX,
    M_RINDEX,
    M_COUNT,
    M_JOIN,
    M_FORMAT,
    M_ISDIGIT,
    M_ISALPHA,
    M_ISALNUM,
    M_ISSPACE,
    M_ISLOWER,
    M_ISUPPER,
    M_ZFILL,
    M_CENTER,
    M_LJUST,
    M_RJUST,
    M_REMOVEPREFIX,
    M_REMOVESUFFIX,
    M_PARTITION,
    M_RPARTITION,
    M_GET,
    M_ITEMS,
    M_KEYS,
    M_VALUES,
    M_COPY,
    M_LCOUNT,
    M_LINDEX,
    M_UNSAFE
} MethodId;

typedef struct {
    uint8_t owner; // V_STR, V_DICT or V_LIST
    const char *name;
    MethodId id;
} MethodDef;

static const MethodDef methods[] = {
    {V_STR, "strip", M_STRIP},
    {V_STR, "lstrip", M_LSTRIP},
    {V_STR, "rstrip", M_RSTRIP},
    {V_STR, "split", M_SPLIT},
    {V_STR, "rsplit", M_RSPLIT},
    {V_STR, "splitlines", M_SPLITLINES},
    {V_STR, "startswith", M_STARTSWITH},
    {V_STR, "endswith", M_ENDSWITH},
    {V_STR, "upper", M_UPPER},
    {V_STR, "lower", M_LOWER},
    {V_STR, "title", M_TITLE},
    {V_STR, "capitalize", M_CAPITALIZE},
    {V_STR, "casefold", M_CASEFOLD},
    {V_STR, "replace", M_REPLACE},
    {V_STR, "find", M_FIND},
    {V_STR, "rfind", M_RFIND},
    {V_STR, "index", M_INDEX},
    {V_STR, "rindex", M_RINDEX},
    {V_STR, "count", M_COUNT},
    {V_STR, "join", M_JOIN},
    {V_STR, "format", M_FORMAT},
    {V_STR, "isdigit", M_ISDIGIT},
    {V_STR, "isalpha", M_ISALPHA},
    {V_STR, "isalnum", M_ISALNUM},
    {V_STR, "isspace", M_ISSPACE},
    {V_STR, "islower", M_ISLOWER},
    {V_STR, "isupper", M_ISUPPER},
    {V_STR, "zfill", M_ZFILL},
    {V_STR, "center", M_CENTER},
    {V_STR, "ljust", M_LJUST},
    {V_STR, "rjust", M_RJUST},
    {V_STR, "removeprefix", M_REMOVEPREFIX},
    {V_STR, "removesuffix", M_REMOVESUFFIX},
    {V_STR, "partition", M_PARTITION},
    {V_STR, "rpartition", M_RPARTITION},
    {V_DICT, "get", M_GET},
    {V_DICT, "items", M_ITEMS},
    {V_DICT, "keys", M_KEYS},
    {V_DICT, "values", M_VALUES},
    {V_DICT, "copy", M_COPY},
    {V_DICT, "pop", M_UNSAFE},
    {V_DICT, "popitem", M_UNSAFE},
    {V_DICT, "setdefault", M_UNSAFE},
    {V_DICT, "update", M_UNSAFE},
    {V_DICT, "clear", M_UNSAFE},
    {V_DICT, "fromkeys", M_UNSAFE},
    {V_LIST, "count", M_LCOUNT},
    {V_LIST, "index", M_LINDEX},
    {V_LIST, "copy", M_COPY},
    {V_LIST, "append", M_UNSAFE},
    {V_LIST, "extend", M_UNSAFE},
    {V_LIST, "insert", M_UNSAFE},
    {V_LIST, "pop", M_UNSAFE},
    {V_LIST, "remove", M_UNSAFE},
    {V_LIST, "reverse", M_UNSAFE},
    {V_LIST, "sort", M_UNSAFE},
    {V_LIST, "clear", M_UNSAFE},
};

static const MethodDef *method_find(Value obj, const char *name) {
    uint8_t owner = obj.type;
    if (owner == V_LIST && obj.l->kind != LK_LIST && obj.l->kind != LK_TUPLE) return NULL;
    for (size_t i = 0; i < ARRAY_LEN(methods); i++)
        if (methods[i].owner == owner && !strcmp(methods[i].name, name)) {
            // tuples have count and index only
            if (owner == V_LIST && obj.l->kind == LK_TUPLE && methods[i].id != M_LCOUNT && methods[i].id != M_LINDEX)
                return NULL;
            return &methods[i];
        }
    return NULL;
}

static Str *need_str(Render *r, Value v, const char *what) {
    if (v.type == V_STR) return v.s;
    if (v.type == V_UNDEF) fail_undefined(r, v);
    rt_error(r, "%s: must be str, not %s", what, v_typename(v));
}

static Value str_pred(Render *r, Str *s, int id) {
    bool any = false, all = s->len > 0, cased = false;
    for (size_t i = 0; i < s->len;) {
        uint32_t c = utf8_next(s->s, s->len, &i);
        bool ok;
        switch (id) {
        case M_ISDIGIT: ok = uc_isdigit(c); break;
        case M_ISALPHA: ok = uc_isalpha(c); break;
        case M_ISALNUM: ok = uc_isalpha(c) || uc_isdigit(c); break;
        case M_ISSPACE: ok = uc_isspace(c); break;
        case M_ISLOWER:
            ok = uc_lower(c) == c;
            cased |= uc_lower(c) != c || uc_upper(c) != c;
            break;
        default:
            ok = uc_upper(c) == c;
            cased |= uc_lower(c) != c || uc_upper(c) != c;
            break;
        }
        any |= ok;
        all &= ok;
    }
    (void)r;
    if (id == M_ISLOWER || id == M_ISUPPER) return v_bool(all && cased);
    return v_bool(all && any);
}

static Value pad(Render *r, Str *s, int64_t width, Str *fill, int how) { // how: 0 center, 1 ljust, 2 rjust
    if (fill && fill->ncp != 1) rt_error(r, "The fill character must be exactly one character long");
    if (width <= (int64_t)s->ncp) return v_str(s);
    if (width > 1000000) rt_error(r, "padding width too large");
    int64_t total = width - (int64_t)s->ncp;
    int64_t left = how == 1 ? 0 : how == 2 ? total : total / 2 + (total & width & 1);
    SBuf b = {0};
    const char *f = fill ? fill->s : " ";
    size_t fl = fill ? fill->len : 1;
    for (int64_t i = 0; i < left; i++) sb_put(r, &b, f, fl);
    sb_put(r, &b, s->s, s->len);
    for (int64_t i = left; i < total; i++) sb_put(r, &b, f, fl);
    return v_str(sb_str(r, &b));
}

static bool affix_match(Render *r, Str *s, Value affix, bool end) {
    if (affix.type == V_LIST && affix.l->kind == LK_TUPLE) {
        for (size_t i = 0; i < affix.l->n; i++)
            if (affix_match(r, s, affix.l->v[i], end)) return true;
        return false;
    }
    Str *x = need_str(r, affix, end ? "endswith first arg" : "startswith first arg");
    if (x->len > s->len) return false;
    return memcmp(end ? s->s + s->len - x->len : s->s, x->s, x->len) == 0;
}

static Value str_method(Render *r, Str *s, int id, const char *name, const Args *a) {
    Value p[3] = {v_none(), v_none(), v_none()};
    static const char *const n_chars[] = {"chars"}, *const n_split[] = {"sep", "maxsplit"},
                             *const n_keep[] = {"keepends"}, *const n_affix[] = {"prefix", "start", "end"},
                             *const n_repl[] = {"old", "new", "count"}, *const n_sub[] = {"sub", "start", "end"},
                             *const n_iter[] = {"iterable"}, *const n_width[] = {"width", "fillchar"},
                             *const n_sep[] = {"sep"};
    switch (id) {
    case M_STRIP:
    case M_LSTRIP:
    case M_RSTRIP:
        args_bind(r, name, a, 1, n_chars, 0, p);
        return v_str(str_strip(r, s, p[0].type == V_NONE ? NULL : need_str(r, p[0], name),
                               id == M_STRIP    ? 3
                               : id == M_LSTRIP ? 1
                                                : 2));
    case M_SPLIT:
    case M_RSPLIT:
        p[1] = v_int(-1);
        args_bind(r, name, a, 2, n_split, 0, p);
        return v_list(str_split(r, s, p[0].type == V_NONE ? NULL : need_str(r, p[0], name), need_int(r, p[1], name),
                                id == M_RSPLIT));
    case M_SPLITLINES:
        p[0] = v_bool(false);
        args_bind(r, name, a, 1, n_keep, 0, p);
        return v_list(str_splitlines(r, s, v_truthy(r, p[0])));
    case M_STARTSWITH:
    case M_ENDSWITH: {
        args_bind(r, name, a, 3, n_affix, 1, p);
        Str *t = s;
        if (p[1].type != V_NONE || p[2].type != V_NONE) {
            int64_t first, count;
            slice_adjust(r, (int64_t)s->ncp, p[1].type != V_NONE, p[1].type != V_NONE ? need_int(r, p[1], name) : 0,
                         p[2].type != V_NONE, p[2].type != V_NONE ? need_int(r, p[2], name) : 0, 1, &first, &count);
            t = str_slice(r, s, first, count, 1);
        }
        return v_bool(affix_match(r, t, p[0], id == M_ENDSWITH));
    }
    case M_UPPER:
    case M_LOWER:
    case M_TITLE:
    case M_CAPITALIZE:
    case M_CASEFOLD:
        args_bind(r, name, a, 0, NULL, 0, p);
        return v_str(str_case(r, s, id == M_UPPER ? 0 : id == M_TITLE ? 4 : id == M_CAPITALIZE ? 2 : 1));
    case M_REPLACE:
        p[2] = v_int(-1);
        args_bind(r, name, a, 3, n_repl, 2, p);
        return v_str(str_replace(r, s, need_str(r, p[0], name), need_str(r, p[1], name), need_int(r, p[2], name)));
    case M_FIND:
    case M_RFIND:
    case M_INDEX:
    case M_RINDEX:
    case M_COUNT: {
        args_bind(r, name, a, 3, n_sub, 1, p);
        Str *sub = need_str(r, p[0], name), *t = s;
        int64_t first = 0, count = (int64_t)s->ncp;
        if (p[1].type != V_NONE || p[2].type != V_NONE) {
            slice_adjust(r, (int64_t)s->ncp, p[1].type != V_NONE, p[1].type != V_NONE ? need_int(r, p[1], name) : 0,
                         p[2].type != V_NONE, p[2].type != V_NONE ? need_int(r, p[2], name) : 0, 1, &first, &count);
            t = str_slice(r, s, first, count, 1);
        }
        if (id == M_COUNT) {
            if (sub->len == 0) return v_int((int64_t)t->ncp + 1);
            int64_t n = 0;
            for (const char *q = t->s; (q = memmem(q, t->len - (size_t)(q - t->s), sub->s, sub->len)); q += sub->len)
                n++;
            return v_int(n);
        }
        int64_t at = str_find(t, sub, id == M_RFIND || id == M_RINDEX);
        if (at < 0 && (id == M_INDEX || id == M_RINDEX)) rt_error(r, "substring not found");
        return v_int(at < 0 ? -1 : at + first);
    }
    case M_JOIN: {
        args_bind(r, name, a, 1, n_iter, 1, p);
        List *items = v_items(r, p[0]);
        SBuf b = {0};
        for (size_t i = 0; i < items->n; i++) {
            if (items->v[i].type != V_STR)
                rt_error(r, "sequence item %zu: expected str instance, %s found", i, v_typename(items->v[i]));
            if (i) sb_put(r, &b, s->s, s->len);
            sb_put(r, &b, items->v[i].s->s, items->v[i].s->len);
        }
        return v_str(sb_str(r, &b));
    }
    case M_FORMAT: return v_str(str_format_method(r, s, a->pos, a->npos, a->kwn, a->kwv, a->nkw));
    case M_ISDIGIT:
    case M_ISALPHA:
    case M_ISALNUM:
    case M_ISSPACE:
    case M_ISLOWER:
    case M_ISUPPER: args_bind(r, name, a, 0, NULL, 0, p); return str_pred(r, s, id);
    case M_ZFILL: {
        args_bind(r, name, a, 1, n_width, 1, p);
        int64_t w = need_int(r, p[0], name);
        if (w <= (int64_t)s->ncp) return v_str(s);
        if (w > 1000000) rt_error(r, "zfill width too large");
        SBuf b = {0};
        size_t sign = s->len && (s->s[0] == '+' || s->s[0] == '-');
        sb_put(r, &b, s->s, sign);
        for (int64_t i = 0; i < w - (int64_t)s->ncp; i++) sb_putc(r, &b, '0');
        sb_put(r, &b, s->s + sign, s->len - sign);
        return v_str(sb_str(r, &b));
    }
    case M_CENTER:
    case M_LJUST:
    case M_RJUST:
        args_bind(r, name, a, 2, n_width, 1, p);
        return pad(r, s, need_int(r, p[0], name), p[1].type == V_NONE ? NULL : need_str(r, p[1], name),
                   id == M_CENTER  ? 0
                   : id == M_LJUST ? 1
                                   : 2);
    case M_REMOVEPREFIX:
    case M_REMOVESUFFIX: {
        args_bind(r, name, a, 1, n_affix, 1, p);
        Str *x = need_str(r, p[0], name);
        if (!x->len || !affix_match(r, s, p[0], id == M_REMOVESUFFIX)) return v_str(s);
        return v_str(rt_str(r, id == M_REMOVEPREFIX ? s->s + x->len : s->s, s->len - x->len));
    }
    case M_PARTITION:
    case M_RPARTITION: {
        args_bind(r, name, a, 1, n_sep, 1, p);
        Str *sep = need_str(r, p[0], name);
        if (!sep->len) rt_error(r, "empty separator");
        int64_t at = str_find(s, sep, id == M_RPARTITION);
        List *l = rt_list(r, 3, LK_TUPLE);
        Value empty = v_str(rt_str(r, "", 0));
        if (at < 0) {
            Value parts[3] = {v_str(s), empty, empty};
            if (id == M_RPARTITION) parts[0] = empty, parts[2] = v_str(s);
            memcpy(l->v, parts, sizeof parts);
        } else {
            size_t off = utf8_offset(s, at);
            l->v[0] = v_str(rt_str(r, s->s, off));
            l->v[1] = v_str(sep);
            l->v[2] = v_str(rt_str(r, s->s + off + sep->len, s->len - off - sep->len));
        }
        l->n = 3;
        return v_list(l);
    }
    }
    DIE("template: str method %d", id);
}

static Value method_call(Render *r, Func *fn, const Args *a) {
    Value self = fn->self;
    Value p[2] = {v_none(), v_none()};
    static const char *const n_get[] = {"key", "default"}, *const n_x[] = {"value"};
    switch (fn->id) {
    case M_GET: {
        args_bind(r, "get", a, 2, n_get, 1, p);
        Value *hit = dict_find(r, self.d, p[0]);
        return hit ? *hit : p[1];
    }
    case M_ITEMS:
    case M_KEYS:
    case M_VALUES: {
        args_bind(r, fn->name, a, 0, NULL, 0, p);
        const Dict *d = self.d;
        List *l = rt_list(r, d->n, fn->id == M_ITEMS ? LK_ITEMS : fn->id == M_KEYS ? LK_KEYS : LK_VALUES);
        for (size_t i = 0; i < d->n; i++) {
            if (fn->id == M_ITEMS) {
                List *pair = rt_list(r, 2, LK_TUPLE);
                pair->v[0] = d->k[i];
                pair->v[1] = d->v[i];
                pair->n = 2;
                l->v[i] = v_list(pair);
            } else {
                l->v[i] = fn->id == M_KEYS ? d->k[i] : d->v[i];
            }
        }
        l->n = d->n;
        return v_list(l);
    }
    case M_COPY:
        args_bind(r, "copy", a, 0, NULL, 0, p);
        if (self.type == V_DICT) {
            Dict *d = rt_dict(r, self.d->n);
            for (size_t i = 0; i < self.d->n; i++) rt_dict_set(r, d, self.d->k[i], self.d->v[i]);
            return v_dict(d);
        } else {
            List *l = rt_list(r, self.l->n, LK_LIST);
            vcopy(l->v, self.l->v, self.l->n);
            l->n = self.l->n;
            return v_list(l);
        }
    case M_LCOUNT:
    case M_LINDEX: {
        args_bind(r, fn->name, a, 1, n_x, 1, p);
        int64_t n = 0;
        for (size_t i = 0; i < self.l->n; i++)
            if (v_eq(r, self.l->v[i], p[0])) {
                if (fn->id == M_LINDEX) return v_int((int64_t)i);
                n++;
            }
        if (fn->id == M_LINDEX) rt_error(r, "value is not in list");
        return v_int(n);
    }
    default: return str_method(r, self.s, fn->id, fn->name, a);
    }
}

// ---- the loop object

static Value loop_attr(Render *r, Loop *lp, const char *name) {
    int64_t len = (int64_t)lp->items->n, i = lp->index0;
    Value self = {.type = V_LOOP};
    self.loop = lp;
    if (!strcmp(name, "index")) return v_int(i + 1);
    if (!strcmp(name, "index0")) return v_int(i);
    if (!strcmp(name, "revindex")) return v_int(len - i);
    if (!strcmp(name, "revindex0")) return v_int(len - i - 1);
    if (!strcmp(name, "first")) return v_bool(i == 0);
    if (!strcmp(name, "last")) return v_bool(i == len - 1);
    if (!strcmp(name, "length")) return v_int(len);
    if (!strcmp(name, "depth")) return v_int(lp->depth0 + 1);
    if (!strcmp(name, "depth0")) return v_int(lp->depth0);
    if (!strcmp(name, "previtem"))
        return i > 0 ? lp->items->v[i - 1] : v_undef("there is no previous item", UNDEF_HINT);
    if (!strcmp(name, "nextitem"))
        return i + 1 < len ? lp->items->v[i + 1] : v_undef("there is no next item", UNDEF_HINT);
    if (!strcmp(name, "cycle")) return func_value(r, FN_LOOP_CYCLE, 0, self, "cycle");
    if (!strcmp(name, "changed")) return func_value(r, FN_LOOP_CHANGED, 0, self, "changed");
    return v_undef(name, V_LOOP);
}

// ---- access

// An attribute a function lacks. An Undefined keeps only its owner's type, not the owner, and a
// function's name in jinja2's message depends on its kind: the Undefined carries the whole message.
static Value func_no_attr(Render *r, const Func *fn, const char *name) {
    const char *what = fn->kind == FN_MACRO                               ? "jinja2.runtime.Macro"
                       : fn->kind == FN_METHOD || fn->kind == FN_UNSAFE   ? "builtin_function_or_method"
                       : fn->kind != FN_BUILTIN                           ? "method"
                       : fn->id == G_NAMESPACE || fn->id == G_DICT        ? "type"
                                                                          : "function";
    char msg[ERR_MAX];
    snprintf(msg, sizeof msg, "'%s object' has no attribute '%s'", what, name);
    return v_undef(rt_str(r, msg, strlen(msg))->s, UNDEF_HINT);
}

Value getattr_value(Render *r, Value obj, const char *name) {
    switch (obj.type) {
    case V_UNDEF: fail_undefined(r, obj);
    case V_LOOP: return loop_attr(r, obj.loop, name);
    case V_NS: {
        Value *hit = dict_find_str(obj.d, name);
        return hit ? *hit : v_undef(name, V_NS);
    }
    case V_STR:
    case V_DICT:
    case V_LIST: {
        const MethodDef *m = method_find(obj, name);
        if (m) return func_value(r, m->id == M_UNSAFE ? FN_UNSAFE : FN_METHOD, m->id, obj, m->name);
        if (obj.type == V_DICT) {
            rt_step(r, (long)(obj.d->n / 32));
            Value *hit = dict_find_str(obj.d, name);
            if (hit) return *hit;
        }
        return v_undef(name, obj.type);
    }
    case V_FUNC: return func_no_attr(r, obj.fn, name);
    default: return v_undef(name, obj.type);
    }
}

Value getitem_value(Render *r, Value obj, Value key) {
    if (obj.type == V_UNDEF) fail_undefined(r, obj);
    bool int_key = key.type == V_INT || key.type == V_BOOL;
    if (obj.type == V_DICT) {
        bool hashable = !(key.type == V_DICT || (key.type == V_LIST && key.l->kind != LK_TUPLE));
        if (hashable) {
            rt_step(r, (long)(obj.d->n / 32));
            Value *hit = dict_find(r, obj.d, key);
            if (hit) return *hit;
        }
    } else if (int_key && ((obj.type == V_LIST && obj.l->kind <= LK_TUPLE) || obj.type == V_STR)) {
        int64_t i = key.type == V_BOOL ? key.b : key.i;
        int64_t n = obj.type == V_STR ? (int64_t)obj.s->ncp : (int64_t)obj.l->n;
        if (i < 0) i += n;
        if (i >= 0 && i < n) {
            if (obj.type == V_LIST) return obj.l->v[i];
            size_t b = utf8_offset(obj.s, i), e = b;
            utf8_next(obj.s->s, obj.s->len, &e);
            return v_str(rt_str(r, obj.s->s + b, e - b));
        }
        char msg[96];
        snprintf(msg, sizeof msg, "%s object has no element %lld", obj.type == V_STR ? "str" : v_typename(obj),
                 (long long)(key.type == V_BOOL ? key.b : key.i));
        return v_undef(rt_str(r, msg, strlen(msg))->s, UNDEF_HINT);
    }
    if (key.type == V_STR) return getattr_value(r, obj, key.s->s);
    return v_undef(NULL, obj.type);
}

Value call_value(Render *r, Value callee, const Args *a) {
    if (callee.type == V_UNDEF) fail_undefined(r, callee);
    if (callee.type == V_LOOP) {
        if (a->npos != 1 || a->nkw) rt_error(r, "loop() takes exactly one argument");
        return loop_recurse(r, callee.loop, a->pos[0]);
    }
    if (callee.type != V_FUNC) rt_error(r, "'%s' object is not callable", v_typename(callee));
    Func *fn = callee.fn;
    switch (fn->kind) {
    case FN_MACRO: return macro_call(r, fn, a);
    case FN_BUILTIN: return builtin_call(r, fn->id, a);
    case FN_METHOD: return method_call(r, fn, a);
    case FN_UNSAFE: rt_error(r, "access to attribute '%s' of '%s' object is unsafe.", fn->name, v_typename(fn->self));
    case FN_LOOP_CYCLE:
        if (a->npos == 0) rt_error(r, "no items for cycling given");
        return a->pos[fn->self.loop->index0 % a->npos];
    case FN_LOOP_CHANGED: {
        Loop *lp = fn->self.loop;
        List *now = rt_list(r, (size_t)a->npos, LK_TUPLE);
        vcopy(now->v, a->pos, (size_t)a->npos);
        now->n = (size_t)a->npos;
        if (lp->has_changed && v_eq(r, lp->last_changed, v_list(now))) return v_bool(false);
        lp->has_changed = true;
        lp->last_changed = v_list(now);
        return v_bool(true);
    }
    }
    DIE("template: unknown function kind %d", fn->kind);
}
