// stmt.c: the statements of the template language ({% set %}, {% for %}, {% if %},
// {% macro %}, {% call %}, {% filter %}, {% with %}, loop controls, HF's {% generation %}),
// the body loop that gathers text and {{ }} into output nodes, and the check of filter and
// test names jinja2 does at compile time. Expressions are in parse.c.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/template/template_impl.h"

static NodeList subparse(Parser *P, const char *const *end_tokens);

static NodeList parse_statements(Parser *P, const char *const *end_tokens, bool drop_needle) {
    skip_op(P, ":");
    expect_type(P, T_BLOCK_END, "end of statement block");
    NodeList body = subparse(P, end_tokens);
    if (cur(P)->type == T_EOF) {
        char want[128] = "";
        for (const char *const *e = end_tokens; *e; e++) {
            size_t l = strlen(want);
            snprintf(want + l, sizeof want - l, "%s'%s'", l ? " or " : "", *e);
        }
        p_fail(P, cur(P), "unexpected end of template: looking for %s to close '%s'", want,
               P->ntags ? P->tags[P->ntags - 1] : "?");
    }
    if (drop_needle) next(P);
    return body;
}

static void parse_signature(Parser *P, Node *n) {
    expect_op(P, "(");
    NodeVec defs = {0};
    const char *names[256];
    int count = 0;
    while (!is_op(cur(P), ")")) {
        if (count) expect_op(P, ",");
        const Token *t = cur(P);
        Node *arg = parse_assign_target(P, true, NULL, false);
        if (count == (int)ARRAY_LEN(names)) p_fail(P, t, "too many parameters");
        if (skip_op(P, "="))
            vec_push(&defs, parse_expression(P, true));
        else if (defs.n)
            p_fail(P, t, "non-default argument follows default argument");
        names[count++] = arg->name;
    }
    expect_op(P, ")");
    n->kwv = vec_done(P, &defs); // defaults belong to the last kwv.n parameters
    n->kwn = arena_alloc(P->a, (size_t)(count + 1) * sizeof(char *));
    memcpy(n->kwn, names, (size_t)count * sizeof(char *));
    n->nparams = count;
}

// Whether `name` is read anywhere below n (jinja2 checks caller / varargs / kwargs so).
static bool uses_name(const Node *n, const char *name) {
    if (!n) return false;
    if (n->kind == N_NAME && !strcmp(n->name, name)) return true;
    if (uses_name(n->a, name) || uses_name(n->b, name) || uses_name(n->c, name) || uses_name(n->dynargs, name) ||
        uses_name(n->dynkw, name))
        return true;
    const NodeList *ls[] = {&n->list, &n->kwv};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < ls[k]->n; i++)
            if (uses_name(ls[k]->v[i], name)) return true;
    for (int i = 0; i < n->list2.n; i++)
        if (uses_name(n->list2.v[i], name)) return true;
    return false;
}

static void mark_specials(Node *n) {
    bool found = false;
    for (int i = 0; i < n->list.n && !found; i++) found = uses_name(n->list.v[i], "caller");
    n->flag = found;
    found = false;
    for (int i = 0; i < n->list.n && !found; i++) found = uses_name(n->list.v[i], "varargs");
    n->varargs = found;
    found = false;
    for (int i = 0; i < n->list.n && !found; i++) found = uses_name(n->list.v[i], "kwargs");
    n->kwargs = found;
}

static Node *parse_statement(Parser *P) {
    const Token *t = cur(P);
    if (t->type != T_NAME) p_fail(P, t, "tag name expected");
    const char *tag = t->p;
    if (P->ntags == PARSE_MAX_DEPTH) p_fail(P, t, "statements nested too deeply");
    P->tags[P->ntags++] = tag;
    enter(P, t);
    Node *n = NULL;
    static const char *const end_set[] = {"endset", NULL}, *const end_for[] = {"endfor", "else", NULL},
                             *const end_for2[] = {"endfor", NULL}, *const end_if[] = {"elif", "else", "endif", NULL},
                             *const end_if2[] = {"endif", NULL}, *const end_macro[] = {"endmacro", NULL},
                             *const end_call[] = {"endcall", NULL}, *const end_filter[] = {"endfilter", NULL},
                             *const end_with[] = {"endwith", NULL}, *const end_gen[] = {"endgeneration", NULL},
                             *const end_block[] = {"endblock", NULL}, *const for_end[] = {"in", NULL},
                             *const for_iter_end[] = {"recursive", NULL};
    if (!strcmp(tag, "set")) {
        next(P);
        n = node_new(P, N_SET, t);
        n->a = parse_assign_target(P, false, NULL, true);
        if (skip_op(P, "=")) {
            n->b = parse_tuple(P, false, true, NULL, false);
        } else {
            n->kind = N_SETBLOCK;
            n->b = parse_filter(P, NULL, false);
            n->list = parse_statements(P, end_set, true);
        }
    } else if (!strcmp(tag, "for")) {
        next(P);
        n = node_new(P, N_FOR, t);
        n->a = parse_assign_target(P, false, for_end, false);
        expect_name(P, "in");
        n->b = parse_tuple(P, false, false, for_iter_end, false);
        if (skip_name(P, "if")) n->c = parse_expression(P, true);
        n->flag = skip_name(P, "recursive");
        P->loop_depth++;
        n->list = parse_statements(P, end_for, false);
        P->loop_depth--;
        if (!strcmp(next(P)->p, "else")) n->list2 = parse_statements(P, end_for2, true);
    } else if (!strcmp(tag, "if")) {
        next(P);
        n = node_new(P, N_IF, t);
        Node *node = n;
        for (;;) {
            node->a = parse_tuple(P, false, false, NULL, false);
            node->list = parse_statements(P, end_if, false);
            const Token *k = next(P);
            if (is_name(k, "elif")) {
                Node *e = node_new(P, N_IF, cur(P));
                NodeVec one = {0};
                vec_push(&one, e);
                node->list2 = vec_done(P, &one);
                node = e;
                continue;
            }
            if (is_name(k, "else")) node->list2 = parse_statements(P, end_if2, true);
            break;
        }
    } else if (!strcmp(tag, "macro") || !strcmp(tag, "call")) {
        bool is_macro = !strcmp(tag, "macro");
        next(P);
        n = node_new(P, is_macro ? N_MACRO : N_CALLBLOCK, t);
        if (is_macro) {
            n->name = parse_assign_target(P, true, NULL, false)->name;
            parse_signature(P, n);
        } else {
            n->name = "caller";
            if (is_op(cur(P), "(")) parse_signature(P, n);
            n->a = parse_expression(P, true);
            if (n->a->kind != N_CALL) p_fail(P, t, "expected call");
        }
        int saved = P->loop_depth;
        P->loop_depth = 0;
        n->list = parse_statements(P, is_macro ? end_macro : end_call, true);
        P->loop_depth = saved;
        mark_specials(n);
    } else if (!strcmp(tag, "filter")) {
        next(P);
        n = node_new(P, N_FILTERBLOCK, t);
        n->b = parse_filter(P, NULL, true);
        n->list = parse_statements(P, end_filter, true);
    } else if (!strcmp(tag, "with")) {
        next(P);
        n = node_new(P, N_WITH, t);
        NodeVec targets = {0}, values = {0};
        while (cur(P)->type != T_BLOCK_END) {
            if (targets.n) expect_op(P, ",");
            vec_push(&targets, parse_assign_target(P, false, NULL, false));
            expect_op(P, "=");
            vec_push(&values, parse_expression(P, true));
        }
        n->list2 = vec_done(P, &targets);
        n->kwv = vec_done(P, &values);
        n->list = parse_statements(P, end_with, true);
    } else if (!strcmp(tag, "print")) {
        next(P);
        n = node_new(P, N_OUTPUT, t);
        NodeVec items = {0};
        while (cur(P)->type != T_BLOCK_END) {
            if (items.n) expect_op(P, ",");
            vec_push(&items, parse_expression(P, true));
        }
        n->list = vec_done(P, &items);
    } else if (!strcmp(tag, "break") || !strcmp(tag, "continue")) {
        if (!P->loop_depth) p_fail(P, t, "'%s' outside a loop", tag);
        next(P);
        n = node_new(P, !strcmp(tag, "break") ? N_BREAK : N_CONTINUE, t);
    } else if (!strcmp(tag, "generation") || !strcmp(tag, "block")) {
        // generation: HF's AssistantTracker marks assistant text; it renders its body.
        // block: without template inheritance a block renders in place.
        bool gen = !strcmp(tag, "generation");
        next(P);
        if (!gen) {
            expect_type(P, T_NAME, "name");
            skip_name(P, "scoped");
            skip_name(P, "required");
        }
        n = node_new(P, N_SCOPE, t);
        n->list = parse_statements(P, gen ? end_gen : end_block, true);
        if (!gen && cur(P)->type == T_NAME) next(P);
    } else if (!strcmp(tag, "include") || !strcmp(tag, "import") || !strcmp(tag, "from") || !strcmp(tag, "extends")) {
        p_fail(P, t, "'%s' is not supported: a chat template is one file", tag);
    } else if (P->ntags > 1) { // a misplaced end tag, most likely
        p_fail(P, t, "encountered unknown tag '%s'; the innermost block that needs to be closed is '%s'", tag,
               P->tags[P->ntags - 2]);
    } else {
        p_fail(P, t, "encountered unknown tag '%s'", tag);
    }
    P->ntags--;
    P->depth--;
    return n;
}

static NodeList subparse(Parser *P, const char *const *end_tokens) {
    NodeVec body = {0}, data = {0};
    const Token *data_at = NULL;
    for (;;) {
        const Token *t = cur(P);
        if (t->type == T_EOF) break;
        if (t->type == T_DATA) {
            if (!data.n) data_at = t;
            Node *d = node_new(P, N_DATA, t);
            d->val = v_str(t->s);
            vec_push(&data, d);
            next(P);
        } else if (t->type == T_VAR_BEGIN) {
            if (!data.n) data_at = t;
            next(P);
            vec_push(&data, parse_tuple(P, false, true, NULL, false));
            expect_type(P, T_VAR_END, "end of print statement");
        } else if (t->type == T_BLOCK_BEGIN) {
            if (data.n) {
                Node *o = node_new(P, N_OUTPUT, data_at);
                o->list = vec_done(P, &data);
                vec_push(&body, o);
            }
            next(P);
            bool at_end = false;
            for (const char *const *e = end_tokens; e && *e; e++)
                if (is_name(cur(P), *e)) at_end = true;
            if (at_end) break;
            vec_push(&body, parse_statement(P));
            expect_type(P, T_BLOCK_END, "end of statement block");
        } else {
            p_fail(P, t, "unexpected '%s'", describe(t));
        }
    }
    if (data.n) {
        Node *o = node_new(P, N_OUTPUT, data_at);
        o->list = vec_done(P, &data);
        vec_push(&body, o);
    }
    return vec_done(P, &body);
}

// Unknown filters and tests fail the parse, except where jinja2 defers the check to the
// render: inside an if statement or an inline if (its "soft" frames), and not across a
// for / macro / call / filter / with / set block, which open inner frames.
static void check_names(Parser *P, Node *n, bool soft) {
    if (!n) return;
    if ((n->kind == N_FILTER || n->kind == N_TEST) && n->fid < 0) {
        if (!soft) {
            Token at = {.line = n->line, .col = n->col};
            p_fail(P, &at, "no %s named '%s'", n->kind == N_FILTER ? "filter" : "test", n->name);
        }
        n->soft = true;
    }
    bool inner = soft;
    switch (n->kind) {
    case N_IF:
    case N_COND: inner = true; break;
    case N_FOR:
        check_names(P, n->b, soft);
        soft = inner = false;
        break;
    case N_MACRO:
    case N_CALLBLOCK:
    case N_FILTERBLOCK:
    case N_WITH:
    case N_SETBLOCK: inner = false; break;
    default: break;
    }
    check_names(P, n->a, inner);
    if (n->kind != N_FOR) check_names(P, n->b, inner);
    check_names(P, n->c, inner);
    check_names(P, n->dynargs, inner);
    check_names(P, n->dynkw, inner);
    const NodeList *ls[] = {&n->list, &n->list2, &n->kwv};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < ls[k]->n; i++) check_names(P, ls[k]->v[i], inner);
}

int tmpl_parse_tokens(ChatTemplate *t, const TokenList *toks, char *err) {
    Parser P = {.t = toks->v, .n = toks->n, .a = &t->arena, .err = err};
    if (setjmp(P.jb)) return SL_ERR;
    NodeList body = subparse(&P, NULL);
    if (cur(&P)->type != T_EOF) p_fail(&P, cur(&P), "unexpected '%s'", describe(cur(&P)));
    for (int i = 0; i < body.n; i++) check_names(&P, body.v[i], false);
    t->body = body;
    return SL_OK;
}
