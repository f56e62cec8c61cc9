// parse.c: tokens -> Node tree, a transcription of jinja2's parser.py so that
// precedence and the accepted syntax are the same (filters bind tighter than any operator:
// `'a' + x | trim` is `'a' + (x | trim)`).
//
// Node fields by kind:
//   CONST val | NAME name | GETATTR a.name | GETITEM a[b] | SLICE a:b:c (each may be NULL)
//   CALL a(list, kwn=kwv, *dynargs, **dynkw) | FILTER a|name(args) (a NULL in filter blocks)
//   TEST a is name(args) | NOT/NEG/POS a | BINOP a op b | CONCAT list | COMPARE a ops list
//   AND/OR a b | COND a if b else c | LIST/TUPLE list | DICT list: list2 | NSREF name.name2
//   DATA val | OUTPUT list | IF a: list else list2 (elif = an IF alone in list2)
//   FOR a in b if c: list else list2, flag = recursive | SET a = b | SETBLOCK a | b: list
//   MACRO name(kwn = kwv defaults): list | CALLBLOCK a(call) (kwn = kwv): list
//   FILTERBLOCK b: list | WITH list2 = kwv: list | BREAK | CONTINUE | SCOPE list
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/template/template_impl.h"

void p_fail(Parser *P, const Token *at, const char *fmt, ...) {
    char msg[ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    seterr(P->err, "line %d, column %d: %s", at->line, at->col, msg);
    longjmp(P->jb, 1);
}

const char *describe(const Token *t) {
    switch (t->type) {
    case T_EOF: return "end of template";
    case T_DATA: return "template data / text";
    case T_VAR_BEGIN: return "begin of print statement";
    case T_VAR_END: return "end of print statement";
    case T_BLOCK_BEGIN: return "begin of statement block";
    case T_BLOCK_END: return "end of statement block";
    case T_NAME: return t->p;
    case T_STRING: return "string";
    case T_INT: return "integer";
    case T_FLOAT: return "float";
    default: return t->op;
    }
}

const Token *expect_type(Parser *P, int type, const char *what) {
    const Token *t = cur(P);
    if (t->type != type) {
        if (t->type == T_EOF) p_fail(P, t, "unexpected end of template, expected '%s'", what);
        p_fail(P, t, "expected token '%s', got '%s'", what, describe(t));
    }
    return next(P);
}
void expect_op(Parser *P, const char *op) {
    if (!is_op(cur(P), op)) expect_type(P, -1, op);
    next(P);
}
const Token *expect_name(Parser *P, const char *name) {
    if (!is_name(cur(P), name)) expect_type(P, -1, name);
    return next(P);
}

Node *node_new(Parser *P, int kind, const Token *at) {
    Node *n = arena_alloc(P->a, sizeof(Node));
    n->kind = (uint8_t)kind;
    n->line = at->line;
    n->col = at->col;
    n->fid = -1;
    return n;
}

// Growing arrays live in the arena too (a grown copy leaves the old one behind, at most
// doubling the space), so a parse error can longjmp out without leaking.
void vec_push_(Parser *P, NodeVec *v, Node *n) {
    if (v->n == v->cap) {
        int cap = v->cap ? 2 * v->cap : 8;
        Node **nv = arena_alloc(P->a, (size_t)cap * sizeof(Node *));
        if (v->n) memcpy(nv, v->v, (size_t)v->n * sizeof(Node *));
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = n;
}

NodeList vec_done(Parser *P, NodeVec *v) {
    (void)P;
    NodeList l = {.v = v->v, .n = v->n};
    *v = (NodeVec){0};
    return l;
}

void enter(Parser *P, const Token *at) {
    if (++P->depth > PARSE_MAX_DEPTH)
        p_fail(P, at, "template nested too deeply (more than %d levels)", PARSE_MAX_DEPTH);
}

static Node *parse_primary(Parser *P);
static Node *parse_postfix(Parser *P, Node *node);

// ---- expressions

static void parse_call_args(Parser *P, Node *n) {
    const Token *open = cur(P);
    expect_op(P, "(");
    NodeVec args = {0}, kwv = {0};
    const char *names[256];
    int nkw = 0;
    bool require_comma = false;
    while (!is_op(cur(P), ")")) {
        if (require_comma) {
            expect_op(P, ",");
            if (is_op(cur(P), ")")) break;
        }
        if (is_op(cur(P), "*")) {
            if (n->dynargs || n->dynkw) p_fail(P, open, "invalid syntax for function call expression");
            next(P);
            n->dynargs = parse_expression(P, true);
        } else if (is_op(cur(P), "**")) {
            if (n->dynkw) p_fail(P, open, "invalid syntax for function call expression");
            next(P);
            n->dynkw = parse_expression(P, true);
        } else if (cur(P)->type == T_NAME && is_op(look(P), "=")) {
            if (n->dynkw) p_fail(P, open, "invalid syntax for function call expression");
            if (nkw == (int)ARRAY_LEN(names)) p_fail(P, open, "too many keyword arguments");
            names[nkw++] = next(P)->p;
            next(P);
            vec_push(&kwv, parse_expression(P, true));
        } else {
            if (n->dynargs || n->dynkw || nkw) p_fail(P, open, "invalid syntax for function call expression");
            vec_push(&args, parse_expression(P, true));
        }
        require_comma = true;
    }
    expect_op(P, ")");
    n->list = vec_done(P, &args);
    n->kwv = vec_done(P, &kwv);
    if (nkw) {
        n->kwn = arena_alloc(P->a, (size_t)nkw * sizeof(char *));
        memcpy(n->kwn, names, (size_t)nkw * sizeof(char *));
    }
}

static Node *parse_call(Parser *P, Node *callee) {
    Node *n = node_new(P, N_CALL, cur(P));
    n->a = callee;
    parse_call_args(P, n);
    return n;
}

// A dotted name after `|` or `is`.
static const char *parse_dotted_name(Parser *P) {
    const Token *t = expect_type(P, T_NAME, "name");
    if (!is_op(cur(P), ".")) return t->p;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", t->p);
    while (skip_op(P, ".")) {
        size_t l = strlen(buf);
        snprintf(buf + l, sizeof buf - l, ".%s", expect_type(P, T_NAME, "name")->p);
    }
    return str_new(P->a, buf, strlen(buf))->s;
}

Node *parse_filter(Parser *P, Node *node, bool start_inline) {
    while (is_op(cur(P), "|") || start_inline) {
        if (!start_inline) next(P);
        const Token *t = cur(P);
        Node *f = node_new(P, N_FILTER, t);
        f->name = parse_dotted_name(P);
        f->fid = filter_find(f->name);
        f->a = node;
        if (is_op(cur(P), "(")) parse_call_args(P, f);
        node = f;
        start_inline = false;
    }
    return node;
}

static Node *parse_test(Parser *P, Node *node) {
    const Token *is = next(P);
    bool negated = skip_name(P, "not");
    Node *t = node_new(P, N_TEST, is);
    t->name = parse_dotted_name(P);
    t->fid = test_find(t->name);
    t->a = node;
    const Token *c = cur(P);
    if (is_op(c, "(")) {
        parse_call_args(P, t);
    } else if ((c->type == T_NAME || c->type == T_STRING || c->type == T_INT || c->type == T_FLOAT || is_op(c, "[") ||
                is_op(c, "{")) &&
               !is_name(c, "else") && !is_name(c, "or") && !is_name(c, "and")) {
        if (is_name(c, "is")) p_fail(P, c, "you cannot chain multiple tests with is");
        NodeVec args = {0};
        vec_push(&args, parse_postfix(P, parse_primary(P)));
        t->list = vec_done(P, &args);
    }
    if (!negated) return t;
    Node *n = node_new(P, N_NOT, is);
    n->a = t;
    return n;
}

static Node *parse_filter_expr(Parser *P, Node *node) {
    for (;;) {
        if (is_op(cur(P), "|"))
            node = parse_filter(P, node, false);
        else if (is_name(cur(P), "is"))
            node = parse_test(P, node);
        else if (is_op(cur(P), "("))
            node = parse_call(P, node);
        else
            return node;
    }
}

// One entry of a subscript: an expression or a slice start:stop:step.
static Node *parse_subscribed(Parser *P) {
    const Token *at = cur(P);
    Node *start = NULL;
    if (!is_op(cur(P), ":")) {
        start = parse_expression(P, true);
        if (!is_op(cur(P), ":")) return start;
    }
    next(P); // the first colon
    Node *s = node_new(P, N_SLICE, at);
    s->a = start;
    if (!is_op(cur(P), ":") && !is_op(cur(P), "]") && !is_op(cur(P), ",")) s->b = parse_expression(P, true);
    if (skip_op(P, ":") && !is_op(cur(P), "]") && !is_op(cur(P), ",")) s->c = parse_expression(P, true);
    return s;
}

static Node *parse_subscript(Parser *P, Node *node) {
    const Token *t = next(P);
    if (is_op(t, ".")) {
        const Token *attr = next(P);
        if (attr->type == T_NAME) {
            Node *g = node_new(P, N_GETATTR, t);
            g->a = node;
            g->name = attr->p;
            return g;
        }
        if (attr->type != T_INT) p_fail(P, attr, "expected name or number");
        Node *g = node_new(P, N_GETITEM, t), *k = node_new(P, N_CONST, attr);
        k->val = v_int(attr->i);
        g->a = node;
        g->b = k;
        return g;
    }
    NodeVec args = {0};
    while (!is_op(cur(P), "]")) {
        if (args.n) expect_op(P, ",");
        vec_push(&args, parse_subscribed(P));
    }
    expect_op(P, "]");
    Node *g = node_new(P, N_GETITEM, t);
    g->a = node;
    if (args.n == 1) {
        g->b = args.v[0];
    } else {
        g->b = node_new(P, N_TUPLE, t);
        g->b->list = vec_done(P, &args);
    }
    return g;
}

static Node *parse_postfix(Parser *P, Node *node) {
    for (;;) {
        if (is_op(cur(P), ".") || is_op(cur(P), "["))
            node = parse_subscript(P, node);
        else if (is_op(cur(P), "("))
            node = parse_call(P, node);
        else
            return node;
    }
}

static Node *parse_list(Parser *P) {
    Node *n = node_new(P, N_LIST, cur(P));
    expect_op(P, "[");
    NodeVec items = {0};
    while (!is_op(cur(P), "]")) {
        if (items.n) expect_op(P, ",");
        if (is_op(cur(P), "]")) break;
        vec_push(&items, parse_expression(P, true));
    }
    expect_op(P, "]");
    n->list = vec_done(P, &items);
    return n;
}

static Node *parse_dict(Parser *P) {
    Node *n = node_new(P, N_DICT, cur(P));
    expect_op(P, "{");
    NodeVec keys = {0}, vals = {0};
    while (!is_op(cur(P), "}")) {
        if (keys.n) expect_op(P, ",");
        if (is_op(cur(P), "}")) break;
        vec_push(&keys, parse_expression(P, true));
        expect_op(P, ":");
        vec_push(&vals, parse_expression(P, true));
    }
    expect_op(P, "}");
    n->list = vec_done(P, &keys);
    n->list2 = vec_done(P, &vals);
    return n;
}

static Node *parse_primary(Parser *P) {
    const Token *t = cur(P);
    enter(P, t);
    Node *n;
    if (t->type == T_NAME) {
        next(P);
        n = node_new(P, N_CONST, t);
        if (!strcmp(t->p, "true") || !strcmp(t->p, "True"))
            n->val = v_bool(true);
        else if (!strcmp(t->p, "false") || !strcmp(t->p, "False"))
            n->val = v_bool(false);
        else if (!strcmp(t->p, "none") || !strcmp(t->p, "None"))
            n->val = v_none();
        else {
            n->kind = N_NAME;
            n->name = t->p;
        }
    } else if (t->type == T_STRING) {
        next(P);
        n = node_new(P, N_CONST, t);
        if (cur(P)->type != T_STRING) {
            n->val = v_str(t->s);
        } else { // adjacent literals concatenate
            size_t total = t->s->len;
            for (int j = P->i; P->t[j].type == T_STRING; j++) total += P->t[j].s->len;
            char *buf = xmalloc(total + 1);
            size_t o = 0;
            memcpy(buf, t->s->s, t->s->len);
            o = t->s->len;
            while (cur(P)->type == T_STRING) {
                const Token *s = next(P);
                memcpy(buf + o, s->s->s, s->s->len);
                o += s->s->len;
            }
            n->val = v_str(str_new(P->a, buf, o));
            free(buf);
        }
    } else if (t->type == T_INT || t->type == T_FLOAT) {
        next(P);
        n = node_new(P, N_CONST, t);
        n->val = t->type == T_INT ? v_int(t->i) : v_float(t->f);
    } else if (is_op(t, "(")) {
        next(P);
        n = parse_tuple(P, false, true, NULL, true);
        expect_op(P, ")");
    } else if (is_op(t, "[")) {
        n = parse_list(P);
    } else if (is_op(t, "{")) {
        n = parse_dict(P);
    } else {
        if (t->type == T_EOF) p_fail(P, t, "unexpected end of template");
        p_fail(P, t, "unexpected '%s'", describe(t));
    }
    P->depth--;
    return n;
}

static Node *parse_unary(Parser *P, bool with_filter) {
    const Token *t = cur(P);
    enter(P, t);
    Node *n;
    if (is_op(t, "-") || is_op(t, "+")) {
        next(P);
        n = node_new(P, is_op(t, "-") ? N_NEG : N_POS, t);
        n->a = parse_unary(P, false);
    } else {
        n = parse_primary(P);
    }
    n = parse_postfix(P, n);
    if (with_filter) n = parse_filter_expr(P, n);
    P->depth--;
    return n;
}

static Node *binop(Parser *P, const Token *at, int op, Node *l, Node *r) {
    Node *n = node_new(P, N_BINOP, at);
    n->op = (uint8_t)op;
    n->a = l;
    n->b = r;
    return n;
}

static Node *parse_pow(Parser *P) {
    Node *l = parse_unary(P, true);
    while (is_op(cur(P), "**")) {
        const Token *t = next(P);
        l = binop(P, t, OP_POW, l, parse_unary(P, true));
    }
    return l;
}

static Node *parse_math2(Parser *P) {
    Node *l = parse_pow(P);
    for (;;) {
        const Token *t = cur(P);
        int op = is_op(t, "*")    ? OP_MUL
                 : is_op(t, "/")  ? OP_DIV
                 : is_op(t, "//") ? OP_FLOORDIV
                 : is_op(t, "%")  ? OP_MOD
                                  : -1;
        if (op < 0) return l;
        next(P);
        l = binop(P, t, op, l, parse_pow(P));
    }
}

static Node *parse_concat(Parser *P) {
    const Token *at = cur(P);
    Node *first = parse_math2(P);
    if (!is_op(cur(P), "~")) return first;
    NodeVec args = {0};
    vec_push(&args, first);
    while (skip_op(P, "~")) vec_push(&args, parse_math2(P));
    Node *n = node_new(P, N_CONCAT, at);
    n->list = vec_done(P, &args);
    return n;
}

static Node *parse_math1(Parser *P) {
    Node *l = parse_concat(P);
    for (;;) {
        const Token *t = cur(P);
        int op = is_op(t, "+") ? OP_ADD : is_op(t, "-") ? OP_SUB : -1;
        if (op < 0) return l;
        next(P);
        l = binop(P, t, op, l, parse_concat(P));
    }
}

static Node *parse_compare(Parser *P) {
    const Token *at = cur(P);
    Node *expr = parse_math1(P);
    NodeVec operands = {0};
    uint8_t ops[64];
    for (;;) {
        const Token *t = cur(P);
        int op = is_op(t, "==")   ? CMP_EQ
                 : is_op(t, "!=") ? CMP_NE
                 : is_op(t, "<")  ? CMP_LT
                 : is_op(t, "<=") ? CMP_LE
                 : is_op(t, ">")  ? CMP_GT
                 : is_op(t, ">=") ? CMP_GE
                                  : -1;
        if (op >= 0)
            next(P);
        else if (is_name(t, "in")) {
            next(P);
            op = CMP_IN;
        } else if (is_name(t, "not") && is_name(look(P), "in")) {
            next(P);
            next(P);
            op = CMP_NOTIN;
        } else
            break;
        if (operands.n == (int)sizeof ops) p_fail(P, t, "comparison chain too long");
        ops[operands.n] = (uint8_t)op;
        vec_push(&operands, parse_math1(P));
    }
    if (!operands.n) return expr;
    Node *n = node_new(P, N_COMPARE, at);
    n->a = expr;
    n->ops = arena_alloc(P->a, (size_t)operands.n);
    memcpy(n->ops, ops, (size_t)operands.n);
    n->list = vec_done(P, &operands);
    return n;
}

static Node *parse_not(Parser *P) {
    if (is_name(cur(P), "not")) {
        const Token *t = next(P);
        enter(P, t);
        Node *n = node_new(P, N_NOT, t);
        n->a = parse_not(P);
        P->depth--;
        return n;
    }
    return parse_compare(P);
}

static Node *parse_and(Parser *P) {
    Node *l = parse_not(P);
    while (is_name(cur(P), "and")) {
        Node *n = node_new(P, N_AND, next(P));
        n->a = l;
        n->b = parse_not(P);
        l = n;
    }
    return l;
}

static Node *parse_or(Parser *P) {
    Node *l = parse_and(P);
    while (is_name(cur(P), "or")) {
        Node *n = node_new(P, N_OR, next(P));
        n->a = l;
        n->b = parse_and(P);
        l = n;
    }
    return l;
}

static Node *parse_condexpr(Parser *P) {
    const Token *at = cur(P);
    enter(P, at);
    Node *e1 = parse_or(P);
    while (skip_name(P, "if")) {
        Node *n = node_new(P, N_COND, at);
        n->a = e1;
        n->b = parse_or(P);
        if (skip_name(P, "else")) n->c = parse_condexpr(P);
        e1 = n;
        at = cur(P);
    }
    P->depth--;
    return e1;
}

Node *parse_expression(Parser *P, bool with_condexpr) { return with_condexpr ? parse_condexpr(P) : parse_or(P); }

static bool is_tuple_end(Parser *P, const char *const *extra_end) {
    const Token *t = cur(P);
    if (t->type == T_VAR_END || t->type == T_BLOCK_END || is_op(t, ")")) return true;
    for (; extra_end && *extra_end; extra_end++)
        if (is_name(t, *extra_end)) return true;
    return false;
}

Node *parse_tuple(Parser *P, bool simplified, bool with_condexpr, const char *const *extra_end, bool explicit_parens) {
    const Token *at = cur(P);
    NodeVec args = {0};
    bool is_tuple = false;
    for (;;) {
        if (args.n) expect_op(P, ",");
        if (is_tuple_end(P, extra_end)) break;
        vec_push(&args, simplified ? parse_primary(P) : parse_expression(P, with_condexpr));
        if (is_op(cur(P), ","))
            is_tuple = true;
        else
            break;
    }
    if (!is_tuple && args.n) return args.v[0];
    if (!is_tuple && !explicit_parens) { p_fail(P, cur(P), "expected an expression, got '%s'", describe(cur(P))); }
    Node *n = node_new(P, N_TUPLE, at);
    n->list = vec_done(P, &args);
    return n;
}

static bool can_assign(const Node *n) {
    if (n->kind == N_NAME) return true;
    if (n->kind != N_TUPLE) return n->kind == N_NSREF;
    for (int i = 0; i < n->list.n; i++)
        if (!can_assign(n->list.v[i])) return false;
    return true;
}

Node *parse_assign_target(Parser *P, bool name_only, const char *const *extra_end, bool with_namespace) {
    const Token *at = cur(P);
    Node *target;
    if (with_namespace && is_op(look(P), ".")) {
        const Token *ns = expect_type(P, T_NAME, "name");
        next(P);
        target = node_new(P, N_NSREF, ns);
        target->name = ns->p;
        target->name2 = expect_type(P, T_NAME, "name")->p;
    } else if (name_only) {
        const Token *t = expect_type(P, T_NAME, "name");
        target = node_new(P, N_NAME, t);
        target->name = t->p;
    } else {
        target = parse_tuple(P, true, true, extra_end, false);
    }
    if (!can_assign(target)) p_fail(P, at, "can't assign to this expression");
    if (target->kind == N_NAME &&
        (!strcmp(target->name, "true") || !strcmp(target->name, "false") || !strcmp(target->name, "none")))
        p_fail(P, at, "can't assign to '%s'", target->name);
    return target;
}
