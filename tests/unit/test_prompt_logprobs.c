// test_prompt_logprobs.c: prompt logprobs (EngineParams.prompt_logprobs, vLLM's prompt_logprobs)
// through engine.h on the real default model (CPU).
//
// The reference is teacher forcing against sluice's own decode: a golden prompt (tests/data/golden/
// exact.txt) runs greedily with raw logprobs; then prompt + that continuation is submitted as a
// prompt with prompt_logprobs, and the logprob of continuation token j at its prompt position must
// equal (within LP_TOL) the logprob the sampler reported when it generated token j. The exact
// float64 reference checks the top-1 of those prompt rows: while our greedy run follows the exact
// one, each row's best token is the exact greedy token wherever the exact top-1/top-2 margin is
// above EXACT_TIE_MARGIN (test_model.c's bound: closer logits may swap within our error).
// exact.txt's top lines cover decode steps only (no prompt positions), hence this route. The
// exact model's top-5 logits at those steps also check the values: a log-softmax differs from
// the logits by one constant per row, so logprob(a) - logprob(b) must equal logit(a) - logit(b)
// within test_model.c's tolerances for our logits against the exact ones.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "engine/engine.h"
#include "tests/unit/engine_open.h"
#include "tests/unit/test.h"

// An argument runs only the tests whose names contain it.
#define RUN(fn) \
    if (argc < 2 || strstr(#fn, argv[1])) TEST_RUN(fn);

#define LP_TOL 1e-3f
#define EXACT_TIE_MARGIN 0.2f     // test_model.c: 2 * EXACT_LOGIT_MAX_TOL
#define EXACT_LOGIT_MEAN_TOL 0.01  // test_model.c's bounds on our logits against the exact model's
#define EXACT_LOGIT_MAX_TOL 0.1
#define N_PROMPTS 4           // golden prompts used (of 12): enough, and fast on 2 cores
#define CONT 12               // greedy continuation tokens teacher-forced
#define TOPK 5

typedef struct {
    int n_tokens;
    int32_t tokens[64];
    int32_t greedy[64];
    float margin[64]; // exact top-1 minus top-2 logit at each greedy step
    int32_t top_id[64][5]; // the exact model's top-5 ids and logits at each greedy step
    float top_logit[64][5];
} Exact;

static Exact ex[N_PROMPTS];
static int n_ex;

// The first N_PROMPTS prompts of exact.txt: their tokens, greedy ids and top-2 margins.
static bool exact_load(void) {
    FILE *f = fopen(TEST_DATA_DIR "/golden/exact.txt", "r");
    if (!f) return false;
    static char line[16384];
    int cur = -1;
    while (fgets(line, sizeof line, f)) {
        char *p = line;
        int n, step, off;
        if (sscanf(p, "prompt %d chat %*d n_tokens %d", &cur, &n) == 2) {
            if (cur >= N_PROMPTS) break;
            if (n > 64) goto bad;
            ex[cur].n_tokens = n;
            n_ex = cur + 1;
        } else if (cur >= 0 && !strncmp(p, "tokens ", 7)) {
            p += 7;
            for (int i = 0; i < ex[cur].n_tokens; i++, p += off)
                if (sscanf(p, "%d%n", &ex[cur].tokens[i], &off) != 1) goto bad;
        } else if (cur >= 0 && !strncmp(p, "greedy ", 7)) {
            p += 7;
            if (sscanf(p, "%d%n", &n, &off) != 1 || n < CONT) goto bad;
            p += off;
            for (int i = 0; i < 64 && i < n; i++, p += off)
                if (sscanf(p, "%d%n", &ex[cur].greedy[i], &off) != 1) goto bad;
        } else if (cur >= 0 && sscanf(p, "top %d%n", &step, &off) == 1 && step >= 0 && step < 64) {
            p += off;
            for (int k = 0; k < 5; k++, p += off)
                if (sscanf(p, "%d %f%n", &ex[cur].top_id[step][k], &ex[cur].top_logit[step][k], &off) != 2) goto bad;
            ex[cur].margin[step] = ex[cur].top_logit[step][0] - ex[cur].top_logit[step][1];
        }
    }
    fclose(f);
    return n_ex == N_PROMPTS;
bad:
    fclose(f);
    return false;
}

// Runs one request to its end; copies the generated tokens and logprobs (up to cap) and the prompt
// logprobs (n_prompt entries, when asked); returns the number of generated tokens, -1 on error.
static int run(Engine *e, const int32_t *prompt, int n_prompt, const EngineParams *p, int32_t *out,
               SampleLogprobs *lp, int cap, SampleLogprobs *plp, int *cached) {
    char err[ERR_MAX];
    EngineRequest *r;
    if (engine_submit(e, prompt, n_prompt, p, NULL, NULL, &r, err) != SL_OK) {
        TEST_FAIL_("engine_submit: %s", err);
        return -1;
    }
    int n = 0, n_plp_takes = 0;
    EngineOutput o;
    for (double t0 = time_now_s(); time_now_s() - t0 < 600;) {
        engine_request_wait(r, 5.0);
        engine_request_take(r, &o);
        if (o.prompt_logprobs) {
            n_plp_takes++;
            if (plp) memcpy(plp, o.prompt_logprobs, (size_t)n_prompt * sizeof(SampleLogprobs));
            EXPECT(n == 0, "prompt logprobs after %d tokens", n); // with the first token, not later
        }
        const EngineChoice *c = &o.choices[0];
        for (int i = 0; i < c->n_tokens && n < cap; i++, n++) {
            out[n] = c->tokens[i];
            if (lp && c->logprobs) lp[n] = c->logprobs[i];
        }
        if (o.finished) break;
    }
    EXPECT(o.finished, "request did not finish");
    EXPECT_EQ_INT(n_plp_takes, p->prompt_logprobs >= 0 ? 1 : 0);
    if (cached) *cached = o.cached_tokens;
    engine_request_release(r);
    return n;
}

static void greedy_params(EngineParams *p, int max_tokens) {
    engine_params_defaults(p);
    p->sampling.temperature = 0;
    p->sampling.logprobs = TOPK;
    p->sampling.logprobs_mode = SAMPLER_LOGPROBS_RAW;
    p->max_tokens = max_tokens;
    p->ignore_eos = true;
}

static SampleLogprobs plp_ref[N_PROMPTS][64 + CONT];
static int32_t forced[N_PROMPTS][64 + CONT];
static int n_forced[N_PROMPTS];

// Teacher forcing against the engine's own greedy decode, and top-1 against the exact model.
static void test_teacher_forcing(void) {
    ASSERT(exact_load(), "cannot read " TEST_DATA_DIR "/golden/exact.txt");
    EngineConfig c = cfg_make(512, 4, false, 32 << 20);
    Engine *e = engine_open(&c);
    ASSERT(e);
    int checked_top1 = 0, n_diff = 0;
    double sum_diff = 0, max_diff = 0;
    for (int pi = 0; pi < N_PROMPTS; pi++) {
        const Exact *x = &ex[pi];
        int32_t gen[CONT];
        SampleLogprobs lp[CONT];
        EngineParams p;
        greedy_params(&p, CONT);
        ASSERT(run(e, x->tokens, x->n_tokens, &p, gen, lp, CONT, NULL, NULL) == CONT);

        int n = x->n_tokens + CONT;
        memcpy(forced[pi], x->tokens, sizeof(int32_t) * x->n_tokens);
        memcpy(forced[pi] + x->n_tokens, gen, sizeof(int32_t) * CONT);
        n_forced[pi] = n;
        greedy_params(&p, 1);
        p.sampling.logprobs = -1;
        p.prompt_logprobs = TOPK;
        int32_t one;
        SampleLogprobs *plp = plp_ref[pi];
        ASSERT(run(e, forced[pi], n, &p, &one, NULL, 1, plp, NULL) == 1);

        EXPECT(plp[0].n_top == -1 && plp[0].token == forced[pi][0], "prompt %d: position 0 has a logprob", pi);
        for (int i = 1; i < n; i++) {
            EXPECT(plp[i].token == forced[pi][i] && plp[i].n_top == TOPK, "prompt %d pos %d", pi, i);
            EXPECT(plp[i].logprob <= 0 && plp[i].top_logprobs[0] >= plp[i].logprob, "prompt %d pos %d: %g", pi, i,
                   plp[i].logprob);
        }
        bool follows = true; // our greedy run still equals the exact one
        for (int j = 0; j < CONT; j++) {
            const SampleLogprobs *q = &plp[x->n_tokens + j];
            EXPECT(fabsf(q->logprob - lp[j].logprob) <= LP_TOL, "prompt %d token %d: prompt logprob %g, sampled %g",
                   pi, j, q->logprob, lp[j].logprob);
            EXPECT(q->top_ids[0] == gen[j], "prompt %d token %d: prompt row's best %d, greedy chose %d", pi, j,
                   q->top_ids[0], gen[j]);
            for (int k = 0; k < TOPK; k++)
                EXPECT(q->top_ids[k] == lp[j].top_ids[k] && fabsf(q->top_logprobs[k] - lp[j].top_logprobs[k]) <= LP_TOL,
                       "prompt %d token %d top %d", pi, j, k);
            follows = follows && gen[j] == x->greedy[j];
            // values against the exact model: differences to its top-1, for its top-5 ids that
            // are among ours (near ties may swap the fifth)
            for (int k = 1; follows && k < 5; k++)
                for (int m = 0; m < TOPK; m++) {
                    if (q->top_ids[m] != x->top_id[j][k] || q->top_ids[0] != x->top_id[j][0]) continue;
                    double d = fabs((double)(q->top_logprobs[m] - q->top_logprobs[0]) -
                                    (double)(x->top_logit[j][k] - x->top_logit[j][0]));
                    sum_diff += d, n_diff++, max_diff = MAX(max_diff, d);
                }
            if (follows && x->margin[j] >= EXACT_TIE_MARGIN) {
                EXPECT(q->top_ids[0] == x->greedy[j], "prompt %d token %d: best %d, exact %d (margin %g)", pi, j,
                       q->top_ids[0], x->greedy[j], x->margin[j]);
                checked_top1++;
            }
        }
    }
    EXPECT(checked_top1 >= N_PROMPTS * CONT / 2, "only %d rows checked against the exact model", checked_top1);
    fprintf(stderr, "     %d prompt rows checked against the exact model's greedy token\n", checked_top1);
    EXPECT(n_diff >= N_PROMPTS * CONT, "only %d logprob differences compared with the exact model", n_diff);
    EXPECT(n_diff > 0 && sum_diff / n_diff <= EXACT_LOGIT_MEAN_TOL && max_diff <= EXACT_LOGIT_MAX_TOL,
           "logprob differences vs the exact logits: mean %g max %g over %d", n_diff ? sum_diff / n_diff : 0.0, max_diff,
           n_diff);
    fprintf(stderr, "     logprob(top k) - logprob(top 1) vs the exact logits: mean %.4f max %.4f over %d\n",
            n_diff ? sum_diff / n_diff : 0.0, max_diff, n_diff);
    engine_destroy(e);
}

// A small token budget (prompts in several chunks, several requests per step), the prefix cache
// on (twice the same prompt: the second must still compute every row) and one at a time give the
// same prompt logprobs, bit for bit: each row's logits depend on its own sequence only.
static void test_chunked_and_cached(void) {
    ASSERT(n_forced[0] > 0, "needs test_teacher_forcing's references");
    EngineConfig c = cfg_make(8, 4, true, 32 << 20);
    Engine *e = engine_open(&c);
    ASSERT(e);
    for (int round = 0; round < 2; round++)
        for (int pi = 0; pi < N_PROMPTS; pi++) {
            EngineParams p;
            greedy_params(&p, 1);
            p.sampling.logprobs = -1;
            p.prompt_logprobs = TOPK;
            int32_t one;
            SampleLogprobs plp[64 + CONT];
            int cached = -1;
            ASSERT(run(e, forced[pi], n_forced[pi], &p, &one, NULL, 1, plp, &cached) == 1);
            EXPECT_EQ_INT(cached, 0);
            for (int i = 1; i < n_forced[pi]; i++) {
                EXPECT(plp[i].logprob == plp_ref[pi][i].logprob, "round %d prompt %d pos %d: %g vs %g", round, pi, i,
                       plp[i].logprob, plp_ref[pi][i].logprob);
                EXPECT(!memcmp(plp[i].top_ids, plp_ref[pi][i].top_ids, sizeof(int32_t) * TOPK), "pos %d", i);
            }
        }
    // a request without prompt logprobs still takes the cached blocks those left behind
    EngineParams p;
    greedy_params(&p, 1);
    int32_t one;
    int cached = -1;
    run(e, forced[0], n_forced[0], &p, &one, NULL, 1, NULL, &cached);
    EXPECT(cached > 0, "no prefix hit for a plain request (cached %d)", cached);
    engine_destroy(e);
}

// Several requests with prompt logprobs in flight at once, mixed with plain ones, chunked.
static void test_together(void) {
    ASSERT(n_forced[0] > 0, "needs test_teacher_forcing's references");
    EngineConfig c = cfg_make(24, 8, true, 32 << 20);
    Engine *e = engine_open(&c);
    ASSERT(e);
    EngineRequest *rs[2 * N_PROMPTS];
    char err[ERR_MAX];
    for (int i = 0; i < 2 * N_PROMPTS; i++) {
        EngineParams p;
        greedy_params(&p, 4);
        p.prompt_logprobs = i % 2 ? -1 : TOPK;
        int pi = i / 2;
        ASSERT(engine_submit(e, forced[pi], n_forced[pi], &p, NULL, NULL, &rs[i], err) == SL_OK, "%s", err);
    }
    for (int i = 0; i < 2 * N_PROMPTS; i++) {
        int pi = i / 2, got = 0;
        EngineOutput o;
        for (double t0 = time_now_s(); time_now_s() - t0 < 600;) {
            engine_request_wait(rs[i], 5.0);
            engine_request_take(rs[i], &o);
            if (o.prompt_logprobs) {
                got++;
                for (int k = 1; k < n_forced[pi]; k++)
                    EXPECT(o.prompt_logprobs[k].logprob == plp_ref[pi][k].logprob, "request %d pos %d", i, k);
            }
            if (o.finished) break;
        }
        EXPECT_EQ_INT(got, i % 2 ? 0 : 1);
        engine_request_release(rs[i]);
    }
    engine_destroy(e);
}

static void test_errors(void) {
    EngineConfig c = cfg_make(64, 4, true, 16 << 20);
    Engine *e = engine_open(&c);
    ASSERT(e);
    int32_t prompt[3] = {504, 3575, 282};
    int bad[] = {-2, SAMPLER_MAX_LOGPROBS + 1};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        EngineParams p;
        engine_params_defaults(&p);
        p.prompt_logprobs = bad[i];
        char err[ERR_MAX] = "";
        EngineRequest *r = NULL;
        EXPECT_EQ_INT(engine_submit(e, prompt, 3, &p, NULL, NULL, &r, err), SL_ERR);
        EXPECT(strstr(err, "prompt_logprobs") != NULL, "%s", err);
    }
    // a one-token prompt: only the null entry, delivered with the first token
    EngineParams p;
    greedy_params(&p, 2);
    p.prompt_logprobs = 0;
    int32_t out[2];
    SampleLogprobs plp[1];
    EXPECT_EQ_INT(run(e, prompt, 1, &p, out, NULL, 2, plp, NULL), 2);
    EXPECT(plp[0].n_top == -1 && plp[0].token == prompt[0], "n_top %d", plp[0].n_top);
    engine_destroy(e);
}

int main(int argc, char **argv) {
    log_level = LOG_WARN;
    RUN(test_teacher_forcing);
    RUN(test_chunked_and_cached);
    RUN(test_together);
    RUN(test_errors);
    return test_summary();
}
