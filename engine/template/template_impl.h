// template_impl.h: what the chat-template files share (private to engine/template/).
//
//   lex.c               source -> tokens (whitespace control, trim/lstrip_blocks)
//   parse.c             tokens -> expression nodes (jinja2's parser, rule for rule)
//   stmt.c              tokens -> statement nodes, and the checks after parsing
//   value.c             arena, values, Python str()/repr(), equality and order
//   text.c              UTF-8 and Unicode helpers, Python float repr, str methods
//   format.c            `fmt % args` and fmt.format(...)
//   json.c              cJSON -> values, json.dumps for the tojson filter, JSON text that
//                       keeps number literals (tmpl_json_parse / tmpl_json_print)
//   eval.c              statements and expressions, scopes, loops, macros
//   filters.c           filters
//   tests.c             tests (`is ...`)
//   call.c              globals, methods of str/dict/list, argument binding
//   template.c          public API
//
// Values live in a per-render arena and are never freed one by one, so they can share
// freely (a slice of messages points at the same message dicts) and an error anywhere can
// longjmp back to tmpl_render without leaking.
#pragma once

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "engine/template/template.h"

// ---- arena: chunks of bump-allocated memory freed all at once
typedef struct ArenaChunk ArenaChunk;
typedef struct {
    ArenaChunk *head;
    size_t used;  // bytes handed out so far
    size_t limit; // arena_alloc returns NULL beyond this (0 = none)
} Arena;

void *arena_alloc(Arena *a, size_t n); // zeroed, 16-byte aligned; NULL only past the limit
void arena_free(Arena *a);

// ---- values
// V_BIGINT is a Python int beyond int64 (from request JSON): its canonical decimal text in
// .s, printed and compared exactly; arithmetic on it is a render error, never a rounded value.
typedef enum { V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_DICT, V_NS, V_FUNC, V_LOOP, V_BIGINT } VType;

// What kind of Python object a V_LIST stands for: they differ in repr, len(), truthiness
// and indexing (a generator is always true and has no len, a dict view cannot be indexed).
typedef enum { LK_LIST, LK_TUPLE, LK_GEN, LK_ITEMS, LK_KEYS, LK_VALUES, LK_REVITER } ListKind;

typedef struct {
    size_t len; // bytes, without the terminating NUL
    size_t ncp; // code points
    char s[];   // UTF-8, NUL-terminated
} Str;

#define UNDEF_HINT 0xFF

typedef struct List List;
typedef struct Dict Dict;
typedef struct Func Func;
typedef struct Loop Loop;

typedef struct {
    uint8_t type;
    uint8_t sub; // V_STR: 1 = Markup. V_UNDEF: the VType of the object that lacked the
                 // attribute `undef` (never V_FUNC: naming a function needs the function), V_UNDEF
                 // when the variable `undef` was missing, or UNDEF_HINT when `undef` is the whole
                 // message (jinja2's hints)
    union {
        bool b;
        int64_t i;
        double f;
        Str *s; // V_STR, V_BIGINT
        List *l;
        Dict *d; // V_DICT and V_NS
        Func *fn;
        Loop *loop;
        const char *undef; // V_UNDEF: the missing name, for the error when it is used
    };
} Value;

struct List {
    size_t n, cap;
    Value *v;
    uint8_t kind; // ListKind
    bool spent;   // a generator already iterated once is empty afterwards
};

struct Dict {
    size_t n, cap;
    Value *k, *v; // insertion order, as Python dicts
};

// ---- AST
typedef enum {
    // expressions
    N_CONST,
    N_NAME,
    N_GETATTR,
    N_GETITEM,
    N_SLICE,
    N_CALL,
    N_FILTER,
    N_TEST,
    N_NOT,
    N_NEG,
    N_POS,
    N_BINOP,
    N_CONCAT,
    N_COMPARE,
    N_AND,
    N_OR,
    N_COND,
    N_LIST,
    N_TUPLE,
    N_DICT,
    N_NSREF,
    // statements
    N_DATA,
    N_OUTPUT,
    N_IF,
    N_FOR,
    N_SET,
    N_SETBLOCK,
    N_MACRO,
    N_CALLBLOCK,
    N_FILTERBLOCK,
    N_WITH,
    N_BREAK,
    N_CONTINUE,
    N_SCOPE
} NodeKind;

typedef enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW } BinOp;
typedef enum { CMP_EQ, CMP_NE, CMP_LT, CMP_LE, CMP_GT, CMP_GE, CMP_IN, CMP_NOTIN } CmpOp;

typedef struct Node Node;
typedef struct {
    Node **v;
    int n;
} NodeList;

// One struct for every node kind; which fields mean what is listed per kind in
// parse.c. Nodes are immutable once tmpl_parse returns.
struct Node {
    uint8_t kind, op;
    bool flag;    // N_FOR: recursive; N_MACRO/N_CALLBLOCK: the body uses `caller`
    bool soft;    // N_FILTER/N_TEST: an unknown name is an error at render, not at parse
    bool varargs; // N_MACRO/N_CALLBLOCK: the body uses `varargs`
    bool kwargs;  // N_MACRO/N_CALLBLOCK: the body uses `kwargs`
    int line, col;
    Node *a, *b, *c;
    NodeList list, list2;
    NodeList kwv;     // keyword argument values ...
    const char **kwn; // ... and their names
    Node *dynargs, *dynkw;
    const char *name, *name2;
    int fid;     // N_FILTER/N_TEST: index in the table, -1 when unknown
    int nparams; // N_MACRO/N_CALLBLOCK: parameters, named in kwn; defaults in kwv
    Value val;
    uint8_t *ops; // N_COMPARE: one CmpOp per operand in list
};

struct ChatTemplate {
    Arena arena; // every Node and constant
    NodeList body;
};

// ---- lexer (lex.c)
typedef enum {
    T_EOF,
    T_DATA,
    T_VAR_BEGIN,
    T_VAR_END,
    T_BLOCK_BEGIN,
    T_BLOCK_END,
    T_NAME,
    T_STRING,
    T_INT,
    T_FLOAT,
    T_OP
} TokType;

typedef struct {
    uint8_t type;
    char op[3]; // T_OP: the operator text
    int line, col;
    const char *p; // T_NAME: the name (arena, NUL-terminated)
    Str *s;        // T_DATA, T_STRING: the text
    int64_t i;
    double f;
} Token;

typedef struct {
    Token *v;
    int n, cap;
} TokenList;

int tmpl_lex(Arena *a, const char *src, size_t len, TokenList *out, char *err);

// ---- parser (parse.c: expressions, stmt.c: statements)
#define PARSE_MAX_DEPTH 200

typedef struct {
    const Token *t;
    int i, n;
    Arena *a;
    char *err;
    jmp_buf jb;
    const char *tags[PARSE_MAX_DEPTH]; // open statements, for "unexpected end" messages
    int ntags;
    int depth;      // expression / statement nesting
    int loop_depth; // enclosing for loops in this macro, for break / continue
} Parser;

typedef struct {
    Node **v;
    int n, cap;
} NodeVec;

static inline const Token *cur(Parser *P) { return &P->t[P->i]; }
static inline const Token *look(Parser *P) { return &P->t[P->i + 1 < P->n ? P->i + 1 : P->n - 1]; }
static inline const Token *next(Parser *P) {
    const Token *t = cur(P);
    if (t->type != T_EOF) P->i++;
    return t;
}
static inline bool is_op(const Token *t, const char *op) { return t->type == T_OP && strcmp(t->op, op) == 0; }
static inline bool is_name(const Token *t, const char *name) { return t->type == T_NAME && strcmp(t->p, name) == 0; }
static inline bool skip_op(Parser *P, const char *op) { return is_op(cur(P), op) ? (next(P), true) : false; }
static inline bool skip_name(Parser *P, const char *name) { return is_name(cur(P), name) ? (next(P), true) : false; }

__attribute__((noreturn, format(printf, 3, 4))) void p_fail(Parser *P, const Token *at, const char *fmt, ...);
const char *describe(const Token *t);
const Token *expect_type(Parser *P, int type, const char *what);
void expect_op(Parser *P, const char *op);
const Token *expect_name(Parser *P, const char *name);
Node *node_new(Parser *P, int kind, const Token *at);
void vec_push_(Parser *P, NodeVec *v, Node *n); // grows in the arena: a parse error leaks nothing
#define vec_push(v, node) vec_push_(P, (v), (node))
NodeList vec_done(Parser *P, NodeVec *v);
void enter(Parser *P, const Token *at); // one nesting level deeper; fails past PARSE_MAX_DEPTH
Node *parse_expression(Parser *P, bool with_condexpr);
Node *parse_tuple(Parser *P, bool simplified, bool with_condexpr, const char *const *extra_end, bool explicit_parens);
Node *parse_assign_target(Parser *P, bool name_only, const char *const *extra_end, bool with_namespace);
Node *parse_filter(Parser *P, Node *node, bool start_inline);
int tmpl_parse_tokens(ChatTemplate *t, const TokenList *toks, char *err);

// ---- render state (eval.c)
typedef struct Scope Scope;
struct Scope {
    Scope *parent;
    int n, cap;
    const char **names;
    Value *vals;
};

typedef struct {
    char *p;
    size_t n, cap;
} SBuf;

typedef struct Render {
    Arena arena;
    TmplLimits lim;
    jmp_buf jb;
    int err_code; // TMPL_ERR_*
    char *err;
    SBuf *out; // where output goes now (a macro call captures into its own)
    SBuf *top; // the template's output, bounded by lim.max_output
    long steps;
    int depth;
    int ctl;        // CTL_* after break/continue, until the loop takes it
    const Node *at; // the node being evaluated, for error positions
} Render;

enum { CTL_NONE, CTL_BREAK, CTL_CONTINUE };

// Errors during a render: format, then longjmp to tmpl_render.
__attribute__((noreturn, format(printf, 3, 4))) void rt_fail(Render *r, int code, const char *fmt, ...);
#define rt_error(r, ...) rt_fail((r), TMPL_ERR_RENDER, __VA_ARGS__)
void *rt_alloc(Render *r, size_t n); // zeroed; fails the render past lim.max_memory
void rt_step(Render *r, long units); // fails the render past lim.max_steps

// ---- values (value.c)
static inline Value v_undef(const char *name, uint8_t owner) {
    Value v = {.type = V_UNDEF, .sub = owner};
    v.undef = name;
    return v;
}
static inline Value v_none(void) { return (Value){.type = V_NONE}; }
static inline Value v_bool(bool b) {
    Value v = {.type = V_BOOL};
    v.b = b;
    return v;
}
static inline Value v_int(int64_t i) {
    Value v = {.type = V_INT};
    v.i = i;
    return v;
}
static inline Value v_float(double f) {
    Value v = {.type = V_FLOAT};
    v.f = f;
    return v;
}
static inline Value v_str(Str *s) {
    Value v = {.type = V_STR};
    v.s = s;
    return v;
}
static inline Value v_list(List *l) {
    Value v = {.type = V_LIST};
    v.l = l;
    return v;
}
static inline Value v_dict(Dict *d) {
    Value v = {.type = V_DICT};
    v.d = d;
    return v;
}

// Copies n values; n may be 0 with NULL pointers (an empty list has no array).
static inline void vcopy(Value *dst, const Value *src, size_t n) {
    if (n) memcpy(dst, src, n * sizeof(Value));
}

Str *str_new(Arena *a, const char *s, size_t len); // NULL only past the arena's limit
Str *rt_str(Render *r, const char *s, size_t len);
Value rt_cstr(Render *r, const char *s);
List *rt_list(Render *r, size_t cap, uint8_t kind);
void rt_list_push(Render *r, List *l, Value v);
Dict *rt_dict(Render *r, size_t cap);
Value *dict_find(Render *r, const Dict *d, Value key); // NULL when absent
Value *dict_find_str(const Dict *d, const char *key);
void rt_dict_set(Render *r, Dict *d, Value key, Value val);

void sb_put(Render *r, SBuf *b, const char *s, size_t n);
void sb_putc(Render *r, SBuf *b, char c);
void sb_puts(Render *r, SBuf *b, const char *s);
__attribute__((format(printf, 3, 4))) void sb_printf(Render *r, SBuf *b, const char *fmt, ...);
Str *sb_str(Render *r, SBuf *b); // the buffer's text as a Str

const char *v_typename(Value v); // Python's name: 'str', 'dict', 'NoneType', ...
bool v_truthy(Render *r, Value v);
void v_write_str(Render *r, SBuf *b, Value v);  // Python str(v)
void v_write_repr(Render *r, SBuf *b, Value v); // Python repr(v)
Str *v_to_str(Render *r, Value v);              // str(v), no copy for strings
bool v_eq(Render *r, Value a, Value b);         // Python ==
int v_num_cmp(Value a, Value b);                // numerics: -1, 0, 1, or 2 when unordered (NaN)
int v_cmp(Render *r, Value a, Value b);         // Python <, or a TypeError
bool v_is_number(Value v);                      // int, float or bool: what v_num reads exactly
bool v_is_numeric(Value v);                     // those or a V_BIGINT: what compares as a number
double v_num(Value v);
Value v_int_text(Render *r, const char *s, size_t len); // "[+-]?[0-9]+" -> V_INT, or V_BIGINT beyond 64 bits
// Fails the render when v (or w) is a V_BIGINT, for the operation `what` that would need
// more than 64 bits; a template error is better than a rounded number.
void v_refuse_big(Render *r, Value v, Value w, const char *what);
Value v_iterable(Render *r, Value v);                              // the V_LIST to iterate v by, or a TypeError
List *v_items(Render *r, Value v);                                 // iterate: list of elements (marks generators spent)
__attribute__((noreturn)) void fail_undefined(Render *r, Value u); // the UndefinedError for using u

// ---- text (text.c)
uint32_t utf8_next(const char *s, size_t len, size_t *i);
int utf8_put(char *out, uint32_t cp);
size_t utf8_offset(const Str *s, int64_t cp_index); // byte offset of the code point
bool uc_isspace(uint32_t c);                        // Python str.isspace
bool uc_isprintable(uint32_t c);                    // Python str.isprintable, approximately outside ASCII
uint32_t uc_upper(uint32_t c);
uint32_t uc_lower(uint32_t c);
bool uc_isalpha(uint32_t c);
bool uc_isdigit(uint32_t c);
int fmt_float(char *buf, size_t cap, double f);           // Python repr(float)
Str *str_strip(Render *r, Str *s, Str *chars, int which); // 1 left, 2 right, 3 both
Str *str_case(Render *r, Str *s, int mode);               // 0 upper, 1 lower, 2 capitalize, 3 title filter, 4 str.title
Str *str_replace(Render *r, Str *s, Str *old, Str *rep, int64_t count);
// s[start::step] for count code points (indices already adjusted, see slice_adjust)
Str *str_slice(Render *r, Str *s, int64_t start, int64_t count, int64_t step);
// Python's slice.indices: start and element count of seq[start:stop:step] for a sequence of
// len elements; has_* false where the bound was omitted.
void slice_adjust(Render *r, int64_t len, bool has_start, int64_t start, bool has_stop, int64_t stop, int64_t step,
                  int64_t *first, int64_t *count);
List *str_split(Render *r, Str *s, Str *sep, int64_t maxsplit, bool from_right);
List *str_splitlines(Render *r, Str *s, bool keepends);
int64_t str_find(Str *s, Str *sub, bool from_right); // code point index or -1
bool str_parse_int(const char *s, size_t len, int base, int64_t *out);
bool str_parse_float(const char *s, size_t len, double *out);
Str *str_percent_format(Render *r, Str *fmt, Value args); // fmt % args
Str *str_format_method(Render *r, Str *fmt, const Value *pos, int npos, const char **kwn, const Value *kwv,
                       int nkw); // fmt.format(...)
Str *str_html_escape(Render *r, Str *s);

// ---- JSON (json.c)
Value json_to_value(Render *r, const cJSON *j);
// json.dumps(v, ensure_ascii, indent, separators, sort_keys); indent NULL = none,
// item_sep/key_sep NULL = Python's defaults for the indent.
Str *json_dumps(Render *r, Value v, bool ensure_ascii, const char *indent, const char *item_sep, const char *key_sep,
                bool sort_keys);

// ---- calls, filters, tests (call.c, filters.c)
typedef struct {
    Value *pos;
    int npos;
    const char **kwn;
    Value *kwv;
    int nkw;
} Args;

struct Func {
    uint8_t kind;     // FN_*
    int id;           // FN_BUILTIN: which global; FN_METHOD: which method
    Value self;       // FN_METHOD: the object; FN_LOOP*: the loop
    const Node *node; // FN_MACRO: the N_MACRO or N_CALLBLOCK
    Scope *closure;   // FN_MACRO: where it was defined
    const char *name;
    Func *caller; // FN_MACRO from a call block: the `caller` it is given
};
enum { FN_MACRO, FN_BUILTIN, FN_METHOD, FN_UNSAFE, FN_LOOP_CALL, FN_LOOP_CYCLE, FN_LOOP_CHANGED };

struct Loop {
    List *items;
    int64_t index0;
    int depth0;
    const Node *node; // the N_FOR, for recursive calls
    Scope *scope;     // where the for statement runs
    bool has_changed;
    Value last_changed;
};

// Binds args to a Python-style signature of n parameters named names[]: out[i] gets the
// argument for parameter i and keeps what the caller put there (its default) when there is
// none. The first nreq parameters are required. Fails the render on a missing, unknown or
// duplicate argument, or too many.
void args_bind(Render *r, const char *what, const Args *a, int n, const char *const *names, int nreq, Value *out);
Value call_value(Render *r, Value callee, const Args *a);
Value getattr_value(Render *r, Value obj, const char *name);
Value getitem_value(Render *r, Value obj, Value key);
Value global_lookup(const char *name, bool *found);

int filter_find(const char *name); // -1 when unknown
int test_find(const char *name);
Value filter_apply(Render *r, int fid, const char *name, Value in, const Args *a);
bool test_apply(Render *r, int tid, const char *name, Value in, const Args *a);

// ---- evaluator (eval.c)
Value eval_expr(Render *r, const Node *n, Scope *s);
void exec_body(Render *r, const NodeList *body, Scope *s);
Value macro_call(Render *r, Func *fn, const Args *a);
Value loop_recurse(Render *r, Loop *lp, Value iterable);
