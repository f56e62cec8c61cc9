// eval.c: runs the Node tree. Expressions follow Python's operators on Python
// values; statements follow jinja2's scoping, which is what templates depend on:
//  - `set` writes the innermost scope; `if` opens none, so a set inside an if is seen after
//    it, but each for-loop iteration, macro call, with, filter and set block opens one, so a
//    set inside a loop is gone at the next iteration (hence `namespace()`);
//  - names resolve outward through the scopes, then the render's variables, then globals;
//  - a macro sees the scope it was defined in as it is when the macro is called.
#define _GNU_SOURCE
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "engine/template/template_impl.h"

// ---- errors and budgets

void rt_fail(Render *r, int code, const char *fmt, ...) {
    char msg[ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (code == TMPL_ERR_RAISED || !r->at)
        seterr(r->err, "%s", msg);
    else
        seterr(r->err, "line %d, column %d: %s", r->at->line, r->at->col, msg);
    r->err_code = code;
    longjmp(r->jb, 1);
}

void rt_step(Render *r, long units) {
    r->steps += units;
    if (r->steps > r->lim.max_steps)
        rt_fail(r, TMPL_ERR_LIMIT, "the template did more than %ld steps of work", r->lim.max_steps);
}

void *rt_alloc(Render *r, size_t n) {
    rt_step(r, (long)(n / 64));
    void *p = arena_alloc(&r->arena, n);
    if (!p) rt_fail(r, TMPL_ERR_LIMIT, "the template used more than %zu bytes of memory", r->lim.max_memory);
    return p;
}

// ---- scopes

static Scope *scope_new(Render *r, Scope *parent) {
    Scope *s = rt_alloc(r, sizeof(Scope));
    s->parent = parent;
    return s;
}

static Value *scope_find(Scope *s, const char *name) {
    for (; s; s = s->parent)
        for (int i = s->n - 1; i >= 0; i--)
            if (!strcmp(s->names[i], name)) return &s->vals[i];
    return NULL;
}

static void scope_set(Render *r, Scope *s, const char *name, Value v) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->names[i], name)) {
            s->vals[i] = v;
            return;
        }
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 4;
        const char **nn = rt_alloc(r, (size_t)cap * sizeof(char *));
        Value *nv = rt_alloc(r, (size_t)cap * sizeof(Value));
        if (s->n) {
            memcpy(nn, s->names, (size_t)s->n * sizeof(char *));
            vcopy(nv, s->vals, (size_t)s->n);
        }
        s->names = nn;
        s->vals = nv;
        s->cap = cap;
    }
    s->names[s->n] = name;
    s->vals[s->n++] = v;
}

static Value lookup(Scope *s, const char *name) {
    Value *v = scope_find(s, name);
    if (v) return *v;
    bool found;
    Value g = global_lookup(name, &found);
    return found ? g : v_undef(name, V_UNDEF);
}

// ---- arithmetic

static int64_t int_of(Value v) { return v.type == V_BOOL ? (int64_t)v.b : v.i; }

static void need_defined(Render *r, Value a, Value b) {
    if (a.type == V_UNDEF) fail_undefined(r, a);
    if (b.type == V_UNDEF) fail_undefined(r, b);
}

static Value list_concat(Render *r, const List *a, const List *b) {
    List *l = rt_list(r, a->n + b->n, a->kind);
    vcopy(l->v, a->v, a->n);
    vcopy(l->v + a->n, b->v, b->n);
    l->n = a->n + b->n;
    return v_list(l);
}

static Value repeat(Render *r, Value seq, int64_t times) {
    if (times < 0) times = 0;
    // an empty sequence stays empty however many times it repeats (and the loops below would
    // spin that many times for nothing)
    if (seq.type == V_STR ? seq.s->len == 0 : seq.l->n == 0) times = 0;
    if (seq.type == V_STR) {
        if (seq.s->len && (uint64_t)times > r->lim.max_memory / seq.s->len)
            rt_fail(r, TMPL_ERR_LIMIT, "the template used more than %zu bytes of memory", r->lim.max_memory);
        SBuf b = {0};
        for (int64_t i = 0; i < times; i++) sb_put(r, &b, seq.s->s, seq.s->len);
        Value v = v_str(sb_str(r, &b));
        v.sub = seq.sub;
        return v;
    }
    if (seq.l->n && (uint64_t)times > r->lim.max_memory / (seq.l->n * sizeof(Value)))
        rt_fail(r, TMPL_ERR_LIMIT, "the template used more than %zu bytes of memory", r->lim.max_memory);
    List *l = rt_list(r, seq.l->n * (size_t)times, seq.l->kind);
    for (int64_t i = 0; i < times; i++) {
        vcopy(l->v + l->n, seq.l->v, seq.l->n);
        l->n += seq.l->n;
    }
    return v_list(l);
}

static void float_divmod(double vx, double wx, double *floordiv, double *mod) {
    double m = fmod(vx, wx), div = (vx - m) / wx;
    if (m) {
        if ((wx < 0) != (m < 0)) {
            m += wx;
            div -= 1.0;
        }
    } else {
        m = copysign(0.0, wx);
    }
    double fd;
    if (div) {
        fd = floor(div);
        if (div - fd > 0.5) fd += 1.0;
    } else {
        fd = copysign(0.0, vx / wx);
    }
    *floordiv = fd;
    *mod = m;
}

static const char *op_text[] = {"+", "-", "*", "/", "//", "%", "**"};

static Value binop(Render *r, int op, Value a, Value b) {
    need_defined(r, a, b);
    if (v_is_numeric(a) && v_is_numeric(b)) v_refuse_big(r, a, b, op_text[op]);
    bool num = v_is_number(a) && v_is_number(b);
    bool ints = num && a.type != V_FLOAT && b.type != V_FLOAT;
    int64_t x = ints ? int_of(a) : 0, y = ints ? int_of(b) : 0, z;
    switch (op) {
    case OP_ADD:
        if (ints) {
            if (__builtin_add_overflow(x, y, &z)) break;
            return v_int(z);
        }
        if (num) return v_float(v_num(a) + v_num(b));
        if (a.type == V_STR && b.type == V_STR) {
            Str *sa = a.s, *sb = b.s;
            // Markup + str escapes the str (markupsafe's __add__ / __radd__)
            if (a.sub && !b.sub) sb = str_html_escape(r, sb);
            if (b.sub && !a.sub) sa = str_html_escape(r, sa);
            SBuf buf = {0};
            sb_put(r, &buf, sa->s, sa->len);
            sb_put(r, &buf, sb->s, sb->len);
            Value v = v_str(sb_str(r, &buf));
            v.sub = a.sub | b.sub;
            return v;
        }
        if (a.type == V_LIST && b.type == V_LIST && a.l->kind == b.l->kind &&
            (a.l->kind == LK_LIST || a.l->kind == LK_TUPLE))
            return list_concat(r, a.l, b.l);
        break;
    case OP_SUB:
        if (ints) {
            if (__builtin_sub_overflow(x, y, &z)) break;
            return v_int(z);
        }
        if (num) return v_float(v_num(a) - v_num(b));
        break;
    case OP_MUL:
        if (ints) {
            if (__builtin_mul_overflow(x, y, &z)) break;
            return v_int(z);
        }
        if (num) return v_float(v_num(a) * v_num(b));
        if ((a.type == V_STR || (a.type == V_LIST && a.l->kind <= LK_TUPLE)) && (b.type == V_INT || b.type == V_BOOL))
            return repeat(r, a, int_of(b));
        if ((b.type == V_STR || (b.type == V_LIST && b.l->kind <= LK_TUPLE)) && (a.type == V_INT || a.type == V_BOOL))
            return repeat(r, b, int_of(a));
        break;
    case OP_DIV:
        if (num) {
            if (v_num(b) == 0) rt_error(r, ints ? "division by zero" : "float division by zero");
            return v_float(v_num(a) / v_num(b));
        }
        break;
    case OP_FLOORDIV:
    case OP_MOD:
        if (ints) {
            if (y == 0) rt_error(r, "integer division or modulo by zero");
            if (x == INT64_MIN && y == -1) break;
            int64_t q = x / y, m = x % y;
            if (m && ((m < 0) != (y < 0))) {
                m += y;
                q -= 1;
            }
            return v_int(op == OP_MOD ? m : q);
        }
        if (num) {
            if (v_num(b) == 0) rt_error(r, op == OP_MOD ? "float modulo" : "float floor division by zero");
            double fd, m;
            float_divmod(v_num(a), v_num(b), &fd, &m);
            return v_float(op == OP_MOD ? m : fd);
        }
        if (op == OP_MOD && a.type == V_STR) {
            Value v = v_str(str_percent_format(r, a.s, b));
            v.sub = a.sub;
            return v;
        }
        break;
    case OP_POW:
        if (ints && y >= 0) {
            int64_t acc = 1, base = x;
            bool over = false;
            for (int64_t e = y; e > 0 && !over; e >>= 1) {
                if (e & 1) over |= __builtin_mul_overflow(acc, base, &acc);
                if (e > 1) over |= __builtin_mul_overflow(base, base, &base);
            }
            if (over) break;
            return v_int(acc);
        }
        if (num) {
            double fa = v_num(a), fb = v_num(b);
            if (fa == 0 && fb < 0) rt_error(r, "0.0 cannot be raised to a negative power");
            if (fa < 0 && fb != floor(fb)) rt_error(r, "a negative number to a fractional power is complex");
            return v_float(pow(fa, fb));
        }
        break;
    }
    if (ints) rt_error(r, "integer overflow in '%s' (sluice integers are 64-bit)", op_text[op]);
    if (op == OP_ADD && (a.type == V_STR || (a.type == V_LIST && a.l->kind <= LK_TUPLE)))
        rt_error(r, "can only concatenate %s (not \"%s\") to %s", v_typename(a), v_typename(b), v_typename(a));
    rt_error(r, "unsupported operand type(s) for %s: '%s' and '%s'", op_text[op], v_typename(a), v_typename(b));
}

// `item in container`
static bool contains(Render *r, Value container, Value item) {
    switch (container.type) {
    case V_STR:
        if (item.type != V_STR) rt_error(r, "'in <string>' requires string as left operand, not %s", v_typename(item));
        return item.s->len == 0 || memmem(container.s->s, container.s->len, item.s->s, item.s->len) != NULL;
    case V_DICT:
        if (item.type == V_LIST && item.l->kind != LK_TUPLE) rt_error(r, "unhashable type: 'list'");
        if (item.type == V_DICT) rt_error(r, "unhashable type: 'dict'");
        rt_step(r, (long)(container.d->n / 16));
        return dict_find(r, container.d, item) != NULL;
    case V_LIST:
    case V_UNDEF: {
        List *l = v_items(r, container);
        for (size_t i = 0; i < l->n; i++)
            if (v_eq(r, l->v[i], item)) return true;
        return false;
    }
    default: rt_error(r, "argument of type '%s' is not iterable", v_typename(container));
    }
}

static bool compare(Render *r, int op, Value a, Value b) {
    switch (op) {
    case CMP_EQ: return v_eq(r, a, b);
    case CMP_NE: return !v_eq(r, a, b);
    case CMP_IN: return contains(r, b, a);
    case CMP_NOTIN: return !contains(r, b, a);
    default: break;
    }
    int c = v_is_numeric(a) && v_is_numeric(b) ? v_num_cmp(a, b) : v_cmp(r, a, b); // 2: NaN, unordered
    return op == CMP_LT ? c == -1 : op == CMP_LE ? (c == -1 || c == 0) : op == CMP_GT ? c == 1 : (c == 1 || c == 0);
}

// ---- subscripts

void slice_adjust(Render *r, int64_t len, bool has_start, int64_t start, bool has_stop, int64_t stop, int64_t step,
                  int64_t *first, int64_t *count) {
    if (step == 0) rt_error(r, "slice step cannot be zero");
    if (!has_start)
        start = step < 0 ? len - 1 : 0;
    else if (start < 0) {
        start += len;
        if (start < 0) start = step < 0 ? -1 : 0;
    } else if (start >= len)
        start = step < 0 ? len - 1 : len;
    if (!has_stop)
        stop = step < 0 ? -1 : len;
    else if (stop < 0) {
        stop += len;
        if (stop < 0) stop = step < 0 ? -1 : 0;
    } else if (stop >= len)
        stop = step < 0 ? len - 1 : len;
    int64_t n = 0;
    if (step < 0) {
        if (stop < start) n = (start - stop - 1) / (-step) + 1;
    } else if (start < stop)
        n = (stop - start - 1) / step + 1;
    *first = start;
    *count = n;
}

// obj[a:b:c]: jinja2 slices with Python's own [] (not its forgiving getitem), so a bad bound
// or an object that cannot be sliced is an error.
static Value eval_slice(Render *r, Value obj, const Node *sl, Scope *s) {
    if (obj.type == V_UNDEF) fail_undefined(r, obj);
    const Node *parts[3] = {sl->a, sl->b, sl->c};
    bool has[3] = {false, false, false};
    int64_t idx[3] = {0, 0, 1};
    bool bad = false;
    for (int k = 0; k < 3; k++) {
        if (!parts[k]) continue;
        Value v = eval_expr(r, parts[k], s);
        if (v.type == V_NONE) continue;
        if (v.type == V_INT || v.type == V_BOOL) {
            has[k] = true;
            idx[k] = int_of(v);
        } else
            bad = true;
    }
    r->at = sl;
    bool sliceable = obj.type == V_STR || (obj.type == V_LIST && obj.l->kind <= LK_TUPLE);
    if (!sliceable) rt_error(r, "'%s' object is not subscriptable with a slice", v_typename(obj));
    if (bad) rt_error(r, "slice indices must be integers or None or have an __index__ method");
    if (has[2] && idx[2] == 0) rt_error(r, "slice step cannot be zero");
    int64_t len = obj.type == V_STR ? (int64_t)obj.s->ncp : (int64_t)obj.l->n, first, count;
    slice_adjust(r, len, has[0], idx[0], has[1], idx[1], idx[2], &first, &count);
    if (obj.type == V_STR) {
        Value v = v_str(str_slice(r, obj.s, first, count, idx[2]));
        v.sub = obj.sub;
        return v;
    }
    List *l = rt_list(r, (size_t)count, obj.l->kind);
    for (int64_t i = 0, j = first; i < count; i++, j += idx[2]) l->v[l->n++] = obj.l->v[j];
    return v_list(l);
}

// ---- calls

static void eval_args(Render *r, const Node *n, Scope *s, Args *a, int extra_kw) {
    List *star = NULL;
    Dict *stars = NULL;
    if (n->dynargs) {
        Value v = eval_expr(r, n->dynargs, s);
        star = v_items(r, v);
    }
    if (n->dynkw) {
        Value v = eval_expr(r, n->dynkw, s);
        if (v.type != V_DICT) rt_error(r, "argument after ** must be a mapping, not %s", v_typename(v));
        stars = v.d;
    }
    int npos = n->list.n + (star ? (int)star->n : 0), nkw = n->kwv.n + (stars ? (int)stars->n : 0) + extra_kw;
    a->pos = rt_alloc(r, (size_t)(npos + 1) * sizeof(Value));
    a->kwv = rt_alloc(r, (size_t)(nkw + 1) * sizeof(Value));
    a->kwn = rt_alloc(r, (size_t)(nkw + 1) * sizeof(char *));
    a->npos = a->nkw = 0;
    for (int i = 0; i < n->list.n; i++) a->pos[a->npos++] = eval_expr(r, n->list.v[i], s);
    for (size_t i = 0; star && i < star->n; i++) a->pos[a->npos++] = star->v[i];
    for (int i = 0; i < n->kwv.n; i++) {
        a->kwn[a->nkw] = n->kwn[i];
        a->kwv[a->nkw++] = eval_expr(r, n->kwv.v[i], s);
    }
    for (size_t i = 0; stars && i < stars->n; i++) {
        if (stars->k[i].type != V_STR) rt_error(r, "keywords must be strings");
        a->kwn[a->nkw] = stars->k[i].s->s;
        a->kwv[a->nkw++] = stars->v[i];
    }
}

// A filter node applied to its input (block_input when the node has none: filter blocks).
static Value eval_filter(Render *r, const Node *n, Scope *s, Value block_input) {
    Value in =
        n->a ? (n->a->kind == N_FILTER ? eval_filter(r, n->a, s, block_input) : eval_expr(r, n->a, s)) : block_input;
    Args a;
    eval_args(r, n, s, &a, 0);
    r->at = n;
    return filter_apply(r, n->fid, n->name, in, &a);
}

// ---- assignment

static void assign(Render *r, const Node *target, Value v, Scope *s) {
    if (target->kind == N_NAME) {
        scope_set(r, s, target->name, v);
        return;
    }
    if (target->kind == N_NSREF) {
        Value *ns = scope_find(s, target->name);
        if (!ns || ns->type != V_NS) rt_error(r, "cannot assign attribute on non-namespace object");
        rt_dict_set(r, ns->d, rt_cstr(r, target->name2), v);
        return;
    }
    List *items = v_items(r, v); // tuple unpacking
    if ((int)items->n != target->list.n)
        rt_error(r, "%s values to unpack (expected %d, got %zu)",
                 (int)items->n > target->list.n ? "too many" : "not enough", target->list.n, items->n);
    for (int i = 0; i < target->list.n; i++) assign(r, target->list.v[i], items->v[i], s);
}

// ---- expressions

static bool tuple_has_slice(const Node *t) {
    for (int i = 0; i < t->list.n; i++)
        if (t->list.v[i]->kind == N_SLICE) return true;
    return false;
}

Value eval_expr(Render *r, const Node *n, Scope *s) {
    r->at = n;
    switch (n->kind) {
    case N_CONST: return n->val;
    case N_NAME: return lookup(s, n->name);
    case N_GETATTR: {
        Value obj = eval_expr(r, n->a, s);
        r->at = n;
        return getattr_value(r, obj, n->name);
    }
    case N_GETITEM: {
        Value obj = eval_expr(r, n->a, s);
        if (n->b->kind == N_SLICE) return eval_slice(r, obj, n->b, s);
        if (n->b->kind == N_TUPLE && tuple_has_slice(n->b)) {
            // x[a:b, c]: jinja2 looks up a tuple holding a slice object, which no list, string or
            // dict has (its getitem then gives Undefined); a slice is no value of its own here
            r->at = n;
            if (obj.type == V_UNDEF) fail_undefined(r, obj);
            char msg[96];
            snprintf(msg, sizeof msg, "'%s object' has no element with a slice in a tuple", v_typename(obj));
            return v_undef(rt_str(r, msg, strlen(msg))->s, UNDEF_HINT);
        }
        Value key = eval_expr(r, n->b, s);
        r->at = n;
        return getitem_value(r, obj, key);
    }
    case N_CALL: {
        Value callee = eval_expr(r, n->a, s);
        Args a;
        eval_args(r, n, s, &a, 0);
        r->at = n;
        return call_value(r, callee, &a);
    }
    case N_FILTER: return eval_filter(r, n, s, v_undef(NULL, V_UNDEF));
    case N_TEST: {
        Value in = eval_expr(r, n->a, s);
        Args a;
        eval_args(r, n, s, &a, 0);
        r->at = n;
        return v_bool(test_apply(r, n->fid, n->name, in, &a));
    }
    case N_NOT: return v_bool(!v_truthy(r, eval_expr(r, n->a, s)));
    case N_NEG:
    case N_POS: {
        Value v = eval_expr(r, n->a, s);
        r->at = n;
        if (v.type == V_UNDEF) fail_undefined(r, v);
        if (n->kind == N_POS && v_is_numeric(v)) return v.type == V_BOOL ? v_int(v.b) : v;
        if (v.type == V_FLOAT) return v_float(-v.f);
        if ((v.type == V_INT || v.type == V_BOOL) && int_of(v) != INT64_MIN) return v_int(-int_of(v));
        if (v.type == V_INT || v.type == V_BIGINT) { // exact: flip the sign of the digits
            Str *t = v_to_str(r, v);
            if (t->s[0] == '-') return v_int_text(r, t->s + 1, t->len - 1);
            SBuf b = {0};
            sb_putc(r, &b, '-');
            sb_put(r, &b, t->s, t->len);
            Str *neg = sb_str(r, &b);
            return v_int_text(r, neg->s, neg->len);
        }
        rt_error(r, "bad operand type for unary %s: '%s'", n->kind == N_NEG ? "-" : "+", v_typename(v));
    }
    case N_BINOP: {
        Value a = eval_expr(r, n->a, s), b = eval_expr(r, n->b, s);
        r->at = n;
        return binop(r, n->op, a, b);
    }
    case N_CONCAT: {
        SBuf b = {0};
        for (int i = 0; i < n->list.n; i++) v_write_str(r, &b, eval_expr(r, n->list.v[i], s));
        return v_str(sb_str(r, &b));
    }
    case N_COMPARE: {
        Value left = eval_expr(r, n->a, s);
        for (int i = 0; i < n->list.n; i++) {
            Value right = eval_expr(r, n->list.v[i], s);
            r->at = n;
            if (!compare(r, n->ops[i], left, right)) return v_bool(false);
            left = right;
        }
        return v_bool(true);
    }
    case N_AND: {
        Value a = eval_expr(r, n->a, s);
        return v_truthy(r, a) ? eval_expr(r, n->b, s) : a;
    }
    case N_OR: {
        Value a = eval_expr(r, n->a, s);
        return v_truthy(r, a) ? a : eval_expr(r, n->b, s);
    }
    case N_COND:
        if (v_truthy(r, eval_expr(r, n->b, s))) return eval_expr(r, n->a, s);
        return n->c
                   ? eval_expr(r, n->c, s)
                   : v_undef("the inline if-expression evaluated to false and no else section was defined", UNDEF_HINT);
    case N_LIST:
    case N_TUPLE: {
        List *l = rt_list(r, (size_t)n->list.n, n->kind == N_LIST ? LK_LIST : LK_TUPLE);
        for (int i = 0; i < n->list.n; i++) l->v[l->n++] = eval_expr(r, n->list.v[i], s);
        return v_list(l);
    }
    case N_DICT: {
        Dict *d = rt_dict(r, (size_t)n->list.n);
        for (int i = 0; i < n->list.n; i++) {
            Value k = eval_expr(r, n->list.v[i], s), v = eval_expr(r, n->list2.v[i], s);
            r->at = n;
            rt_dict_set(r, d, k, v);
        }
        return v_dict(d);
    }
    default: DIE("template: node kind %d is not an expression", n->kind);
    }
}

// ---- statements

static Str *capture(Render *r, const NodeList *body, Scope *s) {
    SBuf *saved = r->out, buf = {0};
    r->out = &buf;
    exec_body(r, body, s);
    r->out = saved;
    return sb_str(r, &buf);
}

static void run_for(Render *r, const Node *n, Scope *s, List *items, int depth0) {
    if (n->c) { // `for x in xs if cond`: the loop sees only the items that pass
        List *kept = rt_list(r, 0, LK_LIST);
        for (size_t i = 0; i < items->n; i++) {
            Scope *t = scope_new(r, s);
            assign(r, n->a, items->v[i], t);
            if (v_truthy(r, eval_expr(r, n->c, t))) rt_list_push(r, kept, items->v[i]);
        }
        items = kept;
    }
    if (items->n == 0) {
        exec_body(r, &n->list2, scope_new(r, s));
        return;
    }
    Loop *lp = rt_alloc(r, sizeof(Loop));
    lp->items = items;
    lp->depth0 = depth0;
    lp->node = n;
    lp->scope = s;
    Value lv = {.type = V_LOOP};
    lv.loop = lp;
    for (size_t i = 0; i < items->n; i++) {
        rt_step(r, 1);
        lp->index0 = (int64_t)i;
        Scope *it = scope_new(r, s);
        r->at = n;
        assign(r, n->a, items->v[i], it);
        scope_set(r, it, "loop", lv);
        exec_body(r, &n->list, it);
        if (r->ctl == CTL_BREAK) {
            r->ctl = CTL_NONE;
            break;
        }
        r->ctl = CTL_NONE;
    }
}

Value loop_recurse(Render *r, Loop *lp, Value iterable) {
    if (!lp->node->flag) rt_error(r, "the loop must have the 'recursive' marker to be called recursively");
    if (++r->depth > r->lim.max_depth)
        rt_fail(r, TMPL_ERR_LIMIT, "recursive loop deeper than %d levels", r->lim.max_depth);
    SBuf *saved = r->out, buf = {0};
    r->out = &buf;
    run_for(r, lp->node, lp->scope, v_items(r, iterable), lp->depth0 + 1);
    r->out = saved;
    r->depth--;
    return v_str(sb_str(r, &buf));
}

Value macro_call(Render *r, Func *fn, const Args *a) {
    const Node *m = fn->node;
    if (++r->depth > r->lim.max_depth)
        rt_fail(r, TMPL_ERR_LIMIT, "macro calls nested deeper than %d levels", r->lim.max_depth);
    rt_step(r, 1);
    Scope *s = scope_new(r, fn->closure);
    int np = m->nparams, first_default = np - m->kwv.n;
    bool *used = rt_alloc(r, (size_t)(a->nkw + 1));
    for (int i = 0; i < np; i++) {
        const char *p = m->kwn[i];
        Value v;
        bool have = false;
        if (i < a->npos) {
            v = a->pos[i];
            have = true;
        } else
            for (int k = 0; k < a->nkw; k++)
                if (!used[k] && !strcmp(a->kwn[k], p)) {
                    v = a->kwv[k];
                    used[k] = have = true;
                    break;
                }
        if (!have) {
            if (i >= first_default)
                v = eval_expr(r, m->kwv.v[i - first_default], s);
            else
                v = v_undef(p, V_UNDEF);
        }
        scope_set(r, s, p, v);
    }
    if (m->flag) { // the body uses caller
        Value c = v_undef("caller", V_UNDEF);
        for (int k = 0; k < a->nkw; k++)
            if (!used[k] && !strcmp(a->kwn[k], "caller")) {
                c = a->kwv[k];
                used[k] = true;
            }
        scope_set(r, s, "caller", c);
    }
    Dict *kw = m->kwargs ? rt_dict(r, 0) : NULL;
    for (int k = 0; k < a->nkw; k++) {
        if (used[k]) continue;
        if (!kw) rt_error(r, "macro '%s' takes no keyword argument '%s'", fn->name, a->kwn[k]);
        rt_dict_set(r, kw, rt_cstr(r, a->kwn[k]), a->kwv[k]);
    }
    if (kw) scope_set(r, s, "kwargs", v_dict(kw));
    if (a->npos > np && !m->varargs) rt_error(r, "macro '%s' takes not more than %d argument(s)", fn->name, np);
    if (m->varargs) {
        List *va = rt_list(r, a->npos > np ? (size_t)(a->npos - np) : 0, LK_TUPLE);
        for (int i = np; i < a->npos; i++) va->v[va->n++] = a->pos[i];
        scope_set(r, s, "varargs", v_list(va));
    }
    Str *out = capture(r, &m->list, s);
    r->depth--;
    return v_str(out);
}

static void exec_stmt(Render *r, const Node *n, Scope *s) {
    r->at = n;
    switch (n->kind) {
    case N_OUTPUT:
        for (int i = 0; i < n->list.n; i++) {
            const Node *c = n->list.v[i];
            if (c->kind == N_DATA)
                sb_put(r, r->out, c->val.s->s, c->val.s->len);
            else {
                Value v = eval_expr(r, c, s);
                r->at = c;
                v_write_str(r, r->out, v);
            }
        }
        return;
    case N_IF:
        if (v_truthy(r, eval_expr(r, n->a, s)))
            exec_body(r, &n->list, s);
        else
            exec_body(r, &n->list2, s);
        return;
    case N_FOR: {
        Value it = eval_expr(r, n->b, s);
        r->at = n;
        run_for(r, n, s, v_items(r, it), 0);
        return;
    }
    case N_SET: {
        Value v = eval_expr(r, n->b, s);
        r->at = n;
        assign(r, n->a, v, s);
        return;
    }
    case N_SETBLOCK: {
        Value v = v_str(capture(r, &n->list, scope_new(r, s)));
        if (n->b) v = eval_filter(r, n->b, s, v);
        assign(r, n->a, v, s);
        return;
    }
    case N_MACRO: {
        Func *fn = rt_alloc(r, sizeof(Func));
        fn->kind = FN_MACRO;
        fn->node = n;
        fn->closure = s;
        fn->name = n->name;
        Value v = {.type = V_FUNC};
        v.fn = fn;
        scope_set(r, s, n->name, v);
        return;
    }
    case N_CALLBLOCK: {
        Func *caller = rt_alloc(r, sizeof(Func));
        caller->kind = FN_MACRO;
        caller->node = n;
        caller->closure = s;
        caller->name = "caller";
        const Node *call = n->a;
        Value callee = eval_expr(r, call->a, s);
        Args a;
        eval_args(r, call, s, &a, 1);
        a.kwn[a.nkw] = "caller";
        a.kwv[a.nkw] = (Value){.type = V_FUNC};
        a.kwv[a.nkw++].fn = caller;
        r->at = n;
        v_write_str(r, r->out, call_value(r, callee, &a));
        return;
    }
    case N_FILTERBLOCK: {
        Value v = v_str(capture(r, &n->list, scope_new(r, s)));
        v_write_str(r, r->out, eval_filter(r, n->b, s, v));
        return;
    }
    case N_WITH: {
        Scope *w = scope_new(r, s);
        for (int i = 0; i < n->list2.n; i++) assign(r, n->list2.v[i], eval_expr(r, n->kwv.v[i], s), w);
        exec_body(r, &n->list, w);
        return;
    }
    case N_BREAK: r->ctl = CTL_BREAK; return;
    case N_CONTINUE: r->ctl = CTL_CONTINUE; return;
    case N_SCOPE: exec_body(r, &n->list, s); return;
    default: DIE("template: node kind %d is not a statement", n->kind);
    }
}

void exec_body(Render *r, const NodeList *body, Scope *s) {
    for (int i = 0; i < body->n; i++) {
        exec_stmt(r, body->v[i], s);
        if (r->ctl != CTL_NONE) return;
    }
}
