// tests.c: jinja2's tests (tests.py), what `x is name(args)` and select/reject call,
// with Python's semantics (`is sequence` holds for str and dict; `is sameas` is identity).
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "engine/template/template_impl.h"

static Str *soft_str(Render *r, Value v) { return v.type == V_UNDEF ? rt_str(r, "", 0) : v_to_str(r, v); }

typedef bool (*TestFn)(Render *r, Value in, const Args *a, const char *name);

#define TEST(fn) static bool fn(Render *r, Value in, const Args *a, const char *name)

static Value one_arg(Render *r, const Args *a, const char *name) {
    static const char *const n[] = {"other"};
    Value p[1];
    args_bind(r, name, a, 1, n, 1, p);
    return p[0];
}

static void no_args(Render *r, const Args *a, const char *name) { args_bind(r, name, a, 0, NULL, 0, NULL); }

TEST(t_defined) {
    no_args(r, a, name);
    return in.type != V_UNDEF;
}
TEST(t_undefined) {
    no_args(r, a, name);
    return in.type == V_UNDEF;
}
TEST(t_none) {
    no_args(r, a, name);
    return in.type == V_NONE;
}
TEST(t_boolean) {
    no_args(r, a, name);
    return in.type == V_BOOL;
}
TEST(t_true) {
    no_args(r, a, name);
    return in.type == V_BOOL && in.b;
}
TEST(t_false) {
    no_args(r, a, name);
    return in.type == V_BOOL && !in.b;
}
TEST(t_integer) {
    no_args(r, a, name);
    return in.type == V_INT || in.type == V_BIGINT;
}
TEST(t_float) {
    no_args(r, a, name);
    return in.type == V_FLOAT;
}
TEST(t_number) {
    no_args(r, a, name);
    return v_is_numeric(in);
}
TEST(t_string) {
    no_args(r, a, name);
    return in.type == V_STR;
}
TEST(t_mapping) {
    no_args(r, a, name);
    return in.type == V_DICT;
}
TEST(t_escaped) {
    no_args(r, a, name);
    return in.type == V_STR && in.sub;
}
TEST(t_callable) {
    no_args(r, a, name);
    return in.type == V_FUNC || in.type == V_LOOP || in.type == V_UNDEF;
}

TEST(t_sequence) { // has len() and []
    no_args(r, a, name);
    return in.type == V_STR || in.type == V_DICT || in.type == V_UNDEF || (in.type == V_LIST && in.l->kind <= LK_TUPLE);
}

TEST(t_iterable) {
    no_args(r, a, name);
    return in.type == V_STR || in.type == V_DICT || in.type == V_UNDEF || in.type == V_LIST || in.type == V_LOOP;
}

static Value mod2(Render *r, Value in, Value by) {
    if (in.type == V_UNDEF) fail_undefined(r, in);
    if (v_is_numeric(in) && v_is_numeric(by)) v_refuse_big(r, in, by, "%");
    if (!v_is_number(in) || !v_is_number(by))
        rt_error(r, "unsupported operand type(s) for %%: '%s' and '%s'", v_typename(in), v_typename(by));
    if (v_num(by) == 0) rt_error(r, "integer division or modulo by zero");
    if (in.type != V_FLOAT && by.type != V_FLOAT) {
        int64_t x = in.type == V_BOOL ? in.b : in.i, y = by.type == V_BOOL ? by.b : by.i;
        int64_t m = y == -1 ? 0 : x % y;
        if (m && ((m < 0) != (y < 0))) m += y;
        return v_int(m);
    }
    double m = fmod(v_num(in), v_num(by));
    if (m && ((m < 0) != (v_num(by) < 0))) m += v_num(by);
    return v_float(m);
}

TEST(t_odd) {
    no_args(r, a, name);
    return v_eq(r, mod2(r, in, v_int(2)), v_int(1));
}
TEST(t_even) {
    no_args(r, a, name);
    return v_eq(r, mod2(r, in, v_int(2)), v_int(0));
}
TEST(t_divisibleby) {
    static const char *const n[] = {"num"};
    Value p[1];
    args_bind(r, name, a, 1, n, 1, p);
    return v_eq(r, mod2(r, in, p[0]), v_int(0));
}

TEST(t_lower) {
    no_args(r, a, name);
    Value fn = getattr_value(r, v_str(soft_str(r, in)), "islower");
    Args none = {0};
    return call_value(r, fn, &none).b;
}
TEST(t_upper) {
    no_args(r, a, name);
    Value fn = getattr_value(r, v_str(soft_str(r, in)), "isupper");
    Args none = {0};
    return call_value(r, fn, &none).b;
}

TEST(t_sameas) { // Python's `is`: singletons, small cached ints, the same object
    Value o = one_arg(r, a, name);
    if (in.type != o.type) return false;
    switch (in.type) {
    case V_NONE: return true;
    case V_BOOL: return in.b == o.b;
    case V_INT: return in.i == o.i && in.i >= -5 && in.i <= 256;
    case V_STR: return in.s == o.s;
    case V_LIST: return in.l == o.l;
    case V_DICT:
    case V_NS: return in.d == o.d;
    case V_FUNC: return in.fn == o.fn;
    case V_LOOP: return in.loop == o.loop;
    default: return false;
    }
}

static bool cmp_test(Render *r, Value in, const Args *a, const char *name, int op) {
    Value o = one_arg(r, a, name);
    if (op == CMP_EQ) return v_eq(r, in, o);
    if (op == CMP_NE) return !v_eq(r, in, o);
    int c = v_is_numeric(in) && v_is_numeric(o) ? v_num_cmp(in, o) : v_cmp(r, in, o);
    return op == CMP_LT ? c == -1 : op == CMP_LE ? (c == -1 || c == 0) : op == CMP_GT ? c == 1 : (c == 1 || c == 0);
}
TEST(t_eq) { return cmp_test(r, in, a, name, CMP_EQ); }
TEST(t_ne) { return cmp_test(r, in, a, name, CMP_NE); }
TEST(t_lt) { return cmp_test(r, in, a, name, CMP_LT); }
TEST(t_le) { return cmp_test(r, in, a, name, CMP_LE); }
TEST(t_gt) { return cmp_test(r, in, a, name, CMP_GT); }
TEST(t_ge) { return cmp_test(r, in, a, name, CMP_GE); }

TEST(t_in) {
    static const char *const n[] = {"seq"};
    Value p[1];
    args_bind(r, name, a, 1, n, 1, p);
    Value seq = p[0];
    if (seq.type == V_STR) {
        if (in.type != V_STR) rt_error(r, "'in <string>' requires string as left operand, not %s", v_typename(in));
        return in.s->len == 0 || memmem(seq.s->s, seq.s->len, in.s->s, in.s->len) != NULL;
    }
    if (seq.type == V_DICT) return dict_find(r, seq.d, in) != NULL;
    if (seq.type != V_LIST && seq.type != V_UNDEF)
        rt_error(r, "argument of type '%s' is not iterable", v_typename(seq));
    List *items = v_items(r, seq);
    for (size_t i = 0; i < items->n; i++)
        if (v_eq(r, items->v[i], in)) return true;
    return false;
}

TEST(t_filter) {
    no_args(r, a, name);
    return in.type == V_STR && filter_find(in.s->s) >= 0;
}
TEST(t_test) {
    no_args(r, a, name);
    return in.type == V_STR && test_find(in.s->s) >= 0;
}

typedef struct {
    const char *name;
    TestFn fn;
} TestDef;

static const TestDef tests[] = {
    {"defined", t_defined},
    {"undefined", t_undefined},
    {"none", t_none},
    {"boolean", t_boolean},
    {"true", t_true},
    {"false", t_false},
    {"integer", t_integer},
    {"float", t_float},
    {"number", t_number},
    {"string", t_string},
    {"mapping", t_mapping},
    {"sequence", t_sequence},
    {"iterable", t_iterable},
    {"callable", t_callable},
    {"sameas", t_sameas},
    {"escaped", t_escaped},
    {"in", t_in},
    {"odd", t_odd},
    {"even", t_even},
    {"divisibleby", t_divisibleby},
    {"lower", t_lower},
    {"upper", t_upper},
    {"filter", t_filter},
    {"test", t_test},
    {"==", t_eq},
    {"eq", t_eq},
    {"equalto", t_eq},
    {"!=", t_ne},
    {"ne", t_ne},
    {"<", t_lt},
    {"lt", t_lt},
    {"lessthan", t_lt},
    {"<=", t_le},
    {"le", t_le},
    {">", t_gt},
    {"gt", t_gt},
    {"greaterthan", t_gt},
    {">=", t_ge},
    {"ge", t_ge},
};

int test_find(const char *name) {
    for (size_t i = 0; i < ARRAY_LEN(tests); i++)
        if (!strcmp(tests[i].name, name)) return (int)i;
    return -1;
}

bool test_apply(Render *r, int tid, const char *name, Value in, const Args *a) {
    if (tid < 0) rt_error(r, "No test named '%s'.", name);
    rt_step(r, 1);
    return tests[tid].fn(r, in, a, name);
}
