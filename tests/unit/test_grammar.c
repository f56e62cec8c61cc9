// test_grammar.c: the XGrammar wrapper (engine/sampling/grammar.h) on the default model's
// vocabulary, and structured output through the engine (engine/structured.c).
//
// Wrapper: for each kind, a table of texts that must be accepted token by token (every token
// allowed by the mask filled before it, then a stop token allowed and accepted at the end) and
// texts that must be refused at some token; the mask against a token-by-token accept check on
// every token of the vocabulary at a few states; rollback; mask_apply; compile errors as
// one-line messages. Engine: constrained requests give output the grammar accepts, n > 1
// included; a bad grammar fails the request (asynchronously, then at submit from the cache);
// a request aborted while its grammar compiles; the compile timeout; the same tokens alone and
// beside unconstrained requests; the stats.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "engine/model/gguf.h"
#include "engine/sampling/grammar.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/unit/engine_open.h"
#include "tests/unit/test.h"

static GGUF g_model;
static Tokenizer *g_tok;
static GrammarVocab *g_vocab;
static int g_n;       // vocab size
static uint32_t *g_mask;

static bool setup(void) {
    char err[ERR_MAX];
    if (gguf_open(&g_model, TEST_MODEL_PATH, err) != SL_OK || tok_load(&g_tok, &g_model, err) != SL_OK) {
        TEST_FAIL_("default model: %s", err);
        return false;
    }
    g_n = tok_vocab_size(g_tok);
    if (grammar_vocab_from_tokenizer(&g_vocab, g_tok, g_n, 1, err) != SL_OK) {
        TEST_FAIL_("vocab: %s", err);
        return false;
    }
    g_mask = xmalloc(sizeof(uint32_t) * (size_t)grammar_mask_words(g_n));
    return true;
}

static bool bit(const uint32_t *mask, int id) { return mask[id >> 5] >> (id & 31) & 1u; }

// Feeds text's tokens through a fresh matcher of g. Returns the index of the first token the
// grammar refuses (mask bit clear, and accept says no), or -1 when all are accepted and then the
// end is allowed (a stop token in the mask, accepted, matcher terminated).
static int walk(const Grammar *g, const char *text, bool *ended) {
    int *ids = NULL, cap = 0;
    int n = tok_encode(g_tok, text, strlen(text), false, false, &ids, &cap);
    GrammarMatcher *m = grammar_matcher_new(g);
    int bad = -1;
    for (int i = 0; i < n && bad < 0; i++) {
        bool restricted = grammar_matcher_fill(m, g_mask);
        bool allowed = !restricted || bit(g_mask, ids[i]);
        bool accepted = grammar_matcher_accept(m, ids[i]);
        EXPECT(allowed == accepted, "token %d (%d) of '%s': mask says %d, accept says %d", i, ids[i], text, allowed,
               accepted);
        if (!accepted) bad = i;
    }
    *ended = false;
    if (bad < 0) {
        grammar_matcher_fill(m, g_mask);
        int eos = tok_eos(g_tok);
        *ended = bit(g_mask, eos) && grammar_matcher_accept(m, eos) && grammar_matcher_terminated(m);
    }
    grammar_matcher_free(m);
    free(ids);
    return bad;
}

static Grammar *compile(GrammarKind kind, const char *text) {
    char err[ERR_MAX];
    Grammar *g = NULL;
    if (grammar_compile(g_vocab, kind, text, text ? strlen(text) : 0, &g, err) != SL_OK)
        TEST_FAIL_("compile %s '%s': %s", grammar_kind_name(kind), text ? text : "", err);
    return g;
}

// ---- the wrapper

static const struct {
    GrammarKind kind;
    const char *grammar;
    const char *good[4];
    const char *bad[4];
} CASES[] = {
    {GRAMMAR_JSON_SCHEMA,
     "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":\"integer\"}},"
     "\"required\":[\"name\",\"age\"],\"additionalProperties\":false}",
     {"{\"name\": \"Bob\", \"age\": 30}", "{\"name\": \"Ann \\\"A\\\"\", \"age\": -2}"},
     {"{\"name\": 5", "{\"age\": 30, \"name\": \"x\", \"x\"", "[1]"}},
    {GRAMMAR_JSON_SCHEMA, "{\"type\":\"array\",\"items\":{\"enum\":[\"a\",\"b\"]},\"minItems\":1,\"maxItems\":2}",
     {"[\"a\"]", "[\"b\", \"a\"]"},
     {"[]", "[\"c\"]", "[\"a\", \"a\", \"a\"]"}},
    {GRAMMAR_JSON_OBJECT, NULL, {"{\"k\": [1, 2, {\"x\": null}]}", "{}"}, {"[1]", "\"s\"", "{\"a\" 1}"}},
    {GRAMMAR_REGEX, "\\d{3}-\\d{4}", {"555-1234"}, {"55-1234", "555-12345", "abc"}},
    {GRAMMAR_REGEX, "(yes|no)!", {"yes!", "no!"}, {"maybe", "yes"}},
    {GRAMMAR_CHOICE, "[\"red\",\"green\",\"a \\\"quoted\\\" one\",\"back\\\\slash\"]",
     {"red", "green", "a \"quoted\" one", "back\\slash"},
     {"blue", "gree", "redd"}},
    {GRAMMAR_EBNF, "root ::= expr\nexpr ::= term ((\"+\" | \"-\") term)*\nterm ::= [0-9]+ | \"(\" expr \")\"",
     {"1+2", "(3-4)+15", "7"},
     {"1+", "+1", "(1"}},
};

static void test_accept_and_refuse(void) {
    for (size_t c = 0; c < ARRAY_LEN(CASES); c++) {
        Grammar *g = compile(CASES[c].kind, CASES[c].grammar);
        if (!g) continue;
        EXPECT(grammar_memory_bytes(g) > 0);
        for (int i = 0; i < 4 && CASES[c].good[i]; i++) {
            bool ended;
            int bad = walk(g, CASES[c].good[i], &ended);
            EXPECT(bad < 0, "case %zu: '%s' refused at token %d", c, CASES[c].good[i], bad);
            EXPECT(ended, "case %zu: '%s' cannot end", c, CASES[c].good[i]);
        }
        for (int i = 0; i < 4 && CASES[c].bad[i]; i++) {
            bool ended;
            int bad = walk(g, CASES[c].bad[i], &ended);
            EXPECT(bad >= 0 || !ended, "case %zu: '%s' accepted", c, CASES[c].bad[i]);
        }
        grammar_free(g);
    }
}

// The mask is exactly the set of tokens accept takes, checked over the whole vocabulary at the
// start and after a prefix (a fork per token: rollback undoes each accept).
static void test_mask_is_accept(void) {
    Grammar *g = compile(GRAMMAR_JSON_SCHEMA, "{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"number\"}},"
                                              "\"required\":[\"n\"]}");
    ASSERT(g);
    GrammarMatcher *m = grammar_matcher_new(g);
    for (int state = 0; state < 2; state++) {
        if (state == 1) { // after '{"n": ' : a number must follow
            int *ids = NULL, cap = 0;
            int n = tok_encode(g_tok, "{\"n\": ", 6, false, false, &ids, &cap);
            for (int i = 0; i < n; i++) EXPECT(grammar_matcher_accept(m, ids[i]));
            free(ids);
        }
        EXPECT(grammar_matcher_fill(m, g_mask));
        int allowed = 0, mismatches = 0;
        for (int id = 0; id < g_n; id++) {
            bool ok = grammar_matcher_accept(m, id);
            if (ok) grammar_matcher_rollback(m, 1);
            mismatches += ok != bit(g_mask, id);
            allowed += ok;
        }
        EXPECT_EQ_INT(mismatches, 0);
        EXPECT(allowed > 0 && allowed < g_n / 2, "state %d: %d tokens allowed", state, allowed);
    }
    grammar_matcher_free(m);
    grammar_free(g);
}

static void test_mask_apply(void) {
    int n = 100, words = grammar_mask_words(n);
    EXPECT_EQ_INT(words, 4);
    uint32_t mask[4] = {0x1u, 0xffffffffu, 0x80000000u, 0x0u};
    float logits[100];
    for (int i = 0; i < n; i++) logits[i] = (float)i;
    grammar_mask_apply(mask, logits, n);
    for (int i = 0; i < n; i++) {
        bool keep = i == 0 || (i >= 32 && i < 64) || i == 95;
        EXPECT(keep ? logits[i] == (float)i : isinf(logits[i]) && logits[i] < 0, "id %d: %g", i, logits[i]);
    }
}

static void test_compile_errors(void) {
    const struct {
        GrammarKind kind;
        const char *text, *needle;
    } bad[] = {
        {GRAMMAR_JSON_SCHEMA, "{\"type\": 12}", "Type"},
        {GRAMMAR_JSON_SCHEMA, "not json", ""},
        {GRAMMAR_REGEX, "(", "parenthesis"},
        {GRAMMAR_EBNF, "root ::= \"a\" | undefined_rule", "undefined_rule"},
        {GRAMMAR_CHOICE, "[]", "empty"},
        {GRAMMAR_CHOICE, "[1, 2]", "list of strings"},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        char err[ERR_MAX] = "";
        Grammar *g = NULL;
        EXPECT_EQ_INT(grammar_compile(g_vocab, bad[i].kind, bad[i].text, strlen(bad[i].text), &g, err), SL_ERR);
        EXPECT(g == NULL);
        EXPECT(err[0] && !strchr(err, '\n') && !strstr(err, ".cc:"), "one line without a source path: %s", err);
        EXPECT(strstr(err, bad[i].needle), "'%s': %s", bad[i].text, err);
    }
}

// ---- through the engine

typedef struct {
    char text[2048];
    int n_tokens;
    int32_t tokens[256];
    EngineFinish finish[4];
    int error;
    char msg[ERR_MAX];
} Out;

static int run(Engine *e, const char *prompt, const EngineParams *p, Out *o, int n_out) {
    int *ids = NULL, cap = 0;
    int n = tok_encode(g_tok, prompt, strlen(prompt), false, true, &ids, &cap);
    char err[ERR_MAX];
    EngineRequest *r = NULL;
    int rc = engine_submit(e, (const int32_t *)ids, n, p, NULL, NULL, &r, err);
    free(ids);
    memset(o, 0, sizeof(Out) * (size_t)n_out);
    if (rc != SL_OK) {
        snprintf(o->msg, sizeof o->msg, "%s", err);
        return rc;
    }
    EngineOutput out;
    for (;;) {
        engine_request_wait(r, 5.0);
        bool any = engine_request_take(r, &out);
        for (int k = 0; any && k < out.n_choices && k < n_out; k++) {
            const EngineChoice *c = &out.choices[k];
            Out *ok = &o[c->index];
            strncat(ok->text, c->text, sizeof ok->text - strlen(ok->text) - 1);
            for (int t = 0; t < c->n_tokens && ok->n_tokens < 256; t++) ok->tokens[ok->n_tokens++] = c->tokens[t];
            ok->finish[0] = c->finish;
        }
        if (out.finished) break;
    }
    const char *msg = NULL;
    o->error = out.error;
    int st = engine_request_status(r, &msg);
    if (msg) snprintf(o->msg, sizeof o->msg, "%s", msg);
    EXPECT(out.error == 0 || st == out.error);
    engine_request_release(r);
    return SL_OK;
}

static EngineParams params(GrammarKind kind, const char *text, int max_tokens) {
    EngineParams p;
    engine_params_defaults(&p);
    p.sampling.temperature = 0;
    p.max_tokens = max_tokens;
    p.grammar_kind = kind;
    p.grammar = text;
    p.grammar_len = text ? strlen(text) : 0;
    return p;
}

static bool accepted(GrammarKind kind, const char *grammar, const char *text) {
    Grammar *g = compile(kind, grammar);
    if (!g) return false;
    bool ended;
    int bad = walk(g, text, &ended);
    grammar_free(g);
    return bad < 0 && ended;
}

static void test_engine(void) {
    EngineConfig c = cfg_make(64, 8, true, 0);
    Engine *e = engine_open(&c);
    ASSERT(e);
    const char *schema = "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":12},"
                         "\"population\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":100000000}},\"required\":[\"city\",\"population\"],"
                         "\"additionalProperties\":false}";
    const char *prompt = "<|im_start|>user\nA city as JSON<|im_end|>\n<|im_start|>assistant\n";
    Out o[3], alone[1];
    EngineParams p = params(GRAMMAR_JSON_SCHEMA, schema, 60);
    EXPECT_EQ_INT(run(e, prompt, &p, alone, 1), SL_OK);
    EXPECT_EQ_INT(alone[0].finish[0], ENGINE_FINISH_STOP);
    EXPECT(accepted(GRAMMAR_JSON_SCHEMA, schema, alone[0].text), "not in the grammar: %s", alone[0].text);

    // n = 3 sampled: one matcher per choice, each output valid
    p.n = 3;
    p.sampling.temperature = 1;
    p.sampling.seed = 7;
    p.sampling.has_seed = true;
    EXPECT_EQ_INT(run(e, prompt, &p, o, 3), SL_OK);
    for (int k = 0; k < 3; k++)
        EXPECT(o[k].finish[0] == ENGINE_FINISH_LENGTH || accepted(GRAMMAR_JSON_SCHEMA, schema, o[k].text),
               "choice %d: %s", k, o[k].text);

    // regex and choice
    p = params(GRAMMAR_REGEX, "[a-z]{2,5}-[0-9]{2}", 20);
    EXPECT_EQ_INT(run(e, "Code:", &p, o, 1), SL_OK);
    EXPECT(accepted(GRAMMAR_REGEX, "[a-z]{2,5}-[0-9]{2}", o[0].text), "%s", o[0].text);
    p = params(GRAMMAR_CHOICE, "[\"alpha\",\"beta\"]", 20);
    EXPECT_EQ_INT(run(e, "Pick:", &p, o, 1), SL_OK);
    EXPECT(!strcmp(o[0].text, "alpha") || !strcmp(o[0].text, "beta"), "%s", o[0].text);

    // ignore_eos: the grammar's end still ends the choice
    p = params(GRAMMAR_CHOICE, "[\"yes\"]", 20);
    p.ignore_eos = true;
    EXPECT_EQ_INT(run(e, "Ok?", &p, o, 1), SL_OK);
    EXPECT_STR_EQ(o[0].text, "yes");
    EXPECT_EQ_INT(o[0].finish[0], ENGINE_FINISH_STOP);

    // the same tokens alone and beside unconstrained requests (greedy)
    EngineRequest *others[4];
    int *ids = NULL, cap = 0;
    int n = tok_encode(g_tok, "Once upon a time", 16, false, true, &ids, &cap);
    for (int i = 0; i < 4; i++) {
        EngineParams q;
        engine_params_defaults(&q);
        q.max_tokens = 40 + i;
        char err[ERR_MAX];
        EXPECT(engine_submit(e, (const int32_t *)ids, n, &q, NULL, NULL, &others[i], err) == SL_OK);
    }
    p = params(GRAMMAR_JSON_SCHEMA, schema, 60);
    EXPECT_EQ_INT(run(e, prompt, &p, o, 1), SL_OK);
    EXPECT_EQ_INT(o[0].n_tokens, alone[0].n_tokens);
    EXPECT(!memcmp(o[0].tokens, alone[0].tokens, sizeof(int32_t) * (size_t)alone[0].n_tokens), "tokens differ");
    for (int i = 0; i < 4; i++) engine_request_release(others[i]);
    free(ids);

    // a bad schema: the request ends with the error; the second time submit refuses it at once
    p = params(GRAMMAR_JSON_SCHEMA, "{\"type\": 12}", 10);
    EXPECT_EQ_INT(run(e, "x", &p, o, 1), SL_OK);
    EXPECT_EQ_INT(o[0].error, ENGINE_ERR_GRAMMAR);
    EXPECT(o[0].msg[0]);
    EXPECT_EQ_INT(run(e, "x", &p, o, 1), ENGINE_ERR_GRAMMAR);

    EngineStats st;
    engine_stats(e, &st);
    EXPECT_EQ_INT(st.grammar_queries, 8);
    EXPECT(st.grammar_cache_hits >= 3, "%llu hits", (unsigned long long)st.grammar_cache_hits);
    EXPECT_EQ_INT(st.num_constrained, 0);
    EXPECT_EQ_INT(st.num_grammar_compiling, 0);
    engine_destroy(e);
}

// A compile slower than the timeout ends the request with ENGINE_ERR_GRAMMAR_TIMEOUT, and an
// abort while the grammar compiles ends it at once.
static void test_engine_timeout_abort(void) {
    EngineConfig c = cfg_make(64, 4, true, 0);
    c.structured_output_compile_timeout = 0.001;
    Engine *e = engine_open(&c);
    ASSERT(e);
    // 200 properties: well over a millisecond to compile
    size_t cap_s = 1 << 16, len = 0;
    char *s = xmalloc(cap_s);
    len += (size_t)snprintf(s, cap_s, "{\"type\":\"object\",\"properties\":{");
    for (int i = 0; i < 200; i++)
        len += (size_t)snprintf(s + len, cap_s - len, "%s\"field_%d\":{\"type\":\"string\",\"pattern\":\"^[a-z]{%d}$\"}",
                                i ? "," : "", i, 1 + i % 7);
    len += (size_t)snprintf(s + len, cap_s - len, "}}");
    Out o[1];
    EngineParams p = params(GRAMMAR_JSON_SCHEMA, s, 10);
    EXPECT_EQ_INT(run(e, "x", &p, o, 1), SL_OK);
    EXPECT_EQ_INT(o[0].error, ENGINE_ERR_GRAMMAR_TIMEOUT);
    EXPECT(strstr(o[0].msg, "--structured-output-compile-timeout"), "%s", o[0].msg);

    // abort while parked: a fresh grammar, aborted right after submit
    snprintf(s + len, cap_s - len, " ");
    p = params(GRAMMAR_JSON_SCHEMA, s, 10);
    int *ids = NULL, cap = 0;
    int n = tok_encode(g_tok, "x", 1, false, true, &ids, &cap);
    char err[ERR_MAX];
    EngineRequest *r = NULL;
    EXPECT(engine_submit(e, (const int32_t *)ids, n, &p, NULL, NULL, &r, err) == SL_OK);
    engine_abort(e, engine_request_id(r));
    EngineOutput out;
    while (!(engine_request_take(r, &out) && out.finished)) engine_request_wait(r, 1.0);
    EXPECT_EQ_INT(out.choices[0].finish, ENGINE_FINISH_ABORT);
    EXPECT(engine_request_status(r, NULL) == ENGINE_ERR_STOPPED || out.error == ENGINE_ERR_GRAMMAR_TIMEOUT);
    engine_request_release(r);
    free(ids);
    free(s);
    engine_destroy(e); // the compile still running finishes first
}

// Eight constrained requests in a pool of 9 blocks: each needs a second block at its 17th token,
// so the scheduler preempts and recomputes; the matchers keep their state through it, and every
// output equals the one made alone, and is in the grammar.
static void test_engine_preemption(void) {
    const char *re = "[a-z]+( [a-z]+)*";
    EngineConfig c = cfg_make(512, 8, false, 16 << 20);
    c.max_model_len = 128;
    Engine *e = engine_open(&c);
    ASSERT(e);
    size_t block_bytes = engine_info(e)->kv_cache_bytes / (size_t)engine_info(e)->num_blocks;
    static const char *prompts[8] = {"The river starts in the hills above the old town where",
                                     "By the time it reaches the mill it is wide enough and",
                                     "The miller kept records of every flood for many years",
                                     "Reading them today you can see the climate change as",
                                     "In the early years the floods came in April but later",
                                     "The sluice gates were rebuilt three times by engineers",
                                     "Visitors walk along the wall and look for the red marks",
                                     "Children like to stand next to the highest one and say"};
    Out want[8], got[8];
    EngineParams p[8];
    for (int i = 0; i < 8; i++) {
        p[i] = params(GRAMMAR_REGEX, re, 8);
        p[i].ignore_eos = true;
        p[i].sampling.temperature = i % 2 ? 0.8f : 0.0f;
        p[i].sampling.seed = 5 + (uint64_t)i;
        p[i].sampling.has_seed = true;
        EXPECT_EQ_INT(run(e, prompts[i], &p[i], &want[i], 1), SL_OK);
    }
    engine_destroy(e);

    c.kv_cache_memory = 9 * block_bytes;
    e = engine_open(&c);
    ASSERT(e);
    EngineRequest *r[8];
    for (int i = 0; i < 8; i++) {
        int *ids = NULL, cap = 0;
        int n = tok_encode(g_tok, prompts[i], strlen(prompts[i]), false, true, &ids, &cap);
        EXPECT(n <= 16 && n + 8 > 16, "prompt %d: %d tokens", i, n);
        char err[ERR_MAX];
        EXPECT(engine_submit(e, (const int32_t *)ids, n, &p[i], NULL, NULL, &r[i], err) == SL_OK, "%s", err);
        free(ids);
    }
    for (int i = 0; i < 8; i++) {
        memset(&got[i], 0, sizeof got[i]);
        EngineOutput out;
        do {
            engine_request_wait(r[i], 5.0);
            engine_request_take(r[i], &out);
            strncat(got[i].text, out.choices[0].text, sizeof got[i].text - strlen(got[i].text) - 1);
        } while (!out.finished);
        engine_request_release(r[i]);
        EXPECT_STR_EQ(got[i].text, want[i].text);
        EXPECT(accepted(GRAMMAR_REGEX, re, got[i].text) || want[i].finish[0] == ENGINE_FINISH_LENGTH, "%s",
               got[i].text);
    }
    EngineStats st;
    engine_stats(e, &st);
    EXPECT(st.num_preemptions >= 2, "%llu preemptions", (unsigned long long)st.num_preemptions);
    engine_destroy(e);
}

int main(void) {
    if (!setup()) return test_summary();
    TEST_RUN(test_accept_and_refuse);
    TEST_RUN(test_mask_is_accept);
    TEST_RUN(test_mask_apply);
    TEST_RUN(test_compile_errors);
    TEST_RUN(test_engine);
    TEST_RUN(test_engine_preemption);
    TEST_RUN(test_engine_timeout_abort);
    grammar_vocab_free(g_vocab);
    tok_free(g_tok);
    gguf_close(&g_model);
    free(g_mask);
    return test_summary();
}
