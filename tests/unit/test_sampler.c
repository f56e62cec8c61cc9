// test_sampler.c: the sampler against a naive reference that sorts the whole vocabulary in
// double (vLLM's semantics): the exact survivor set of min-p / top-k / top-p on random, peaked,
// tied and -inf logits at several vocab sizes; the drawn distribution by a chi-square bound;
// greedy ties; each penalty's and logit bias's arithmetic; per-request seeds that give the same
// tokens however requests interleave; logprobs against a double log-softmax; parameter
// validation. Ends with a speed print (not asserted) at vocab 49152.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "engine/sampling/sampler.h"
#include "tests/unit/test.h"

// ---- helpers

// The test's own generator for inputs (kept apart from the one under test).
static uint64_t trng_state = 0x1234567;
static uint64_t trng_next(void) { // splitmix64
    uint64_t z = (trng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double trng_unif(void) { return (double)(trng_next() >> 11) / 9007199254740992.0; }
static double trng_gauss(void) {
    double u = trng_unif(), v = trng_unif();
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}

typedef enum { GEN_GAUSS, GEN_PEAKED, GEN_TIES, GEN_NEG_INF } LogitGen;

static void gen_logits(float *x, int n, LogitGen g) {
    for (int i = 0; i < n; i++) {
        double v = trng_gauss();
        switch (g) {
        case GEN_GAUSS: x[i] = (float)(2.0 * v); break;
        case GEN_PEAKED: x[i] = (float)(3.0 * v + (trng_unif() < 0.002 ? 12.0 : 0.0)); break;
        case GEN_TIES: x[i] = (float)(0.5 * floor(2.0 * v)); break; // many equal values
        case GEN_NEG_INF: x[i] = trng_unif() < 0.3 ? -INFINITY : (float)(2.0 * v); break;
        }
    }
    if (g == GEN_NEG_INF) x[n / 2] = 1.0f; // at least one finite
}

typedef struct {
    double val;
    int id;
} RefCand;

static int ref_cmp(const void *a, const void *b) { // best first, ties to the lower id
    const RefCand *x = a, *y = b;
    if (x->val != y->val) return x->val > y->val ? -1 : 1;
    return x->id - y->id;
}

// The reference survivors: sort everything, then min-p, top-k, top-p in vLLM's order, in double.
// Writes normalised probabilities into prob[id] (0 for the dropped) and returns the count.
static int ref_filter(const SamplingParams *p, const float *logits, int V, double *prob) {
    RefCand *c = malloc((size_t)V * sizeof(RefCand));
    for (int i = 0; i < V; i++) c[i] = (RefCand){logits[i], i};
    qsort(c, (size_t)V, sizeof(RefCand), ref_cmp);
    double max = c[0].val;
    int n = 0;
    for (int i = 0; i < V; i++) {
        double e = exp((c[i].val - max) / p->temperature);
        if (e >= p->min_p && e > 0) c[n++] = (RefCand){e, c[i].id};
    }
    if (p->top_k > 0 && p->top_k < n) n = p->top_k;
    double z = 0;
    for (int i = 0; i < n; i++) z += c[i].val;
    if (p->top_p < 1.0f) {
        double acc = 0;
        for (int i = 0; i < n; i++) {
            acc += c[i].val;
            if (acc >= p->top_p * z) { n = i + 1; break; }
        }
        z = 0;
        for (int i = 0; i < n; i++) z += c[i].val;
    }
    for (int i = 0; i < V; i++) prob[i] = 0;
    for (int i = 0; i < n; i++) prob[c[i].id] = c[i].val / z;
    free(c);
    return n;
}

static SamplingParams params_tk(float t, int top_k, float top_p, float min_p) {
    SamplingParams p = sampling_params_default();
    p.temperature = t;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    return p;
}

// ---- validation

static void test_validate(void) {
    char err[ERR_MAX];
    SamplingParams d = sampling_params_default();
    EXPECT_EQ_INT(sampling_params_validate(&d, 100, err), SL_OK);
    int32_t ids[2] = {3, 99};
    float vals_ok[2] = {-100, 100}, vals_bad[2] = {5, 100.5f}, vals_nan[2] = {NAN, 0};
    int32_t ids_bad[2] = {3, 100}, ids_neg[2] = {-1, 3};
    struct { const char *field; int which; double v; int ok; const char *want; } cases[] = {
        {"temperature", 0, 0.0, 1, NULL},       {"temperature", 0, 2.0, 1, NULL},
        {"temperature", 0, -0.01, 0, "'temperature'"},
        {"temperature", 0, 2.01, 0, "between 0 and 2"},
        {"temperature", 0, NAN, 0, "'temperature'"},
        {"top_p", 1, 1.0, 1, NULL},             {"top_p", 1, 1e-6, 1, NULL},
        {"top_p", 1, 0.0, 0, "'top_p'"},        {"top_p", 1, 1.01, 0, "'top_p'"},
        {"top_p", 1, NAN, 0, "'top_p'"},
        {"min_p", 2, 0.0, 1, NULL},             {"min_p", 2, 1.0, 1, NULL},
        {"min_p", 2, -0.1, 0, "'min_p'"},       {"min_p", 2, 1.5, 0, "'min_p'"},
        {"top_k", 3, -1, 1, NULL},              {"top_k", 3, 0, 1, NULL},
        {"top_k", 3, 1, 1, NULL},               {"top_k", 3, 1000000, 1, NULL},
        {"top_k", 3, -2, 0, "'top_k'"},
        {"presence", 4, 2.0, 1, NULL},          {"presence", 4, -2.0, 1, NULL},
        {"presence", 4, 2.5, 0, "'presence_penalty'"},
        {"presence", 4, NAN, 0, "'presence_penalty'"},
        {"frequency", 5, -2.0, 1, NULL},        {"frequency", 5, -2.1, 0, "'frequency_penalty'"},
        {"repetition", 6, 1.0, 1, NULL},        {"repetition", 6, 0.01, 1, NULL},
        {"repetition", 6, 0.0, 0, "'repetition_penalty'"},
        {"repetition", 6, -1.0, 0, "'repetition_penalty'"},
        {"repetition", 6, INFINITY, 0, "'repetition_penalty'"},
        {"logprobs", 7, -1, 1, NULL},           {"logprobs", 7, 0, 1, NULL},
        {"logprobs", 7, 20, 1, NULL},           {"logprobs", 7, 21, 0, "between 0 and 20"},
        {"logprobs", 7, -2, 0, "'top_logprobs'"},
        {"bias ok", 8, 0, 1, NULL},             {"bias id", 9, 0, 0, "outside the vocabulary"},
        {"bias neg id", 10, 0, 0, "token id -1"}, {"bias val", 11, 0, 0, "between -100 and 100"},
        {"bias nan", 12, 0, 0, "'logit_bias'"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        SamplingParams p = sampling_params_default();
        float v = (float)cases[i].v;
        switch (cases[i].which) {
        case 0: p.temperature = v; break;
        case 1: p.top_p = v; break;
        case 2: p.min_p = v; break;
        case 3: p.top_k = (int)cases[i].v; break;
        case 4: p.presence_penalty = v; break;
        case 5: p.frequency_penalty = v; break;
        case 6: p.repetition_penalty = v; break;
        case 7: p.logprobs = (int)cases[i].v; break;
        default:
            p.n_logit_bias = 2;
            p.logit_bias_ids = cases[i].which == 9 ? ids_bad : cases[i].which == 10 ? ids_neg : ids;
            p.logit_bias_vals = cases[i].which == 11   ? vals_bad
                                : cases[i].which == 12 ? vals_nan
                                                       : vals_ok;
        }
        err[0] = 0;
        int rc = sampling_params_validate(&p, 100, err);
        EXPECT_EQ_INT(rc, cases[i].ok ? SL_OK : SL_ERR);
        if (!cases[i].ok)
            EXPECT(strstr(err, cases[i].want) != NULL, "case %zu (%s): \"%s\" lacks \"%s\"", i,
                   cases[i].field, err, cases[i].want);
    }
}

// ---- generator

static void test_rng(void) {
    // splitmix64's first output from seed 0 is the published 0xe220a8397b1dcdaf; the xoshiro256**
    // outputs were computed by a separate Python transcription of the reference algorithm.
    SamplerRng r;
    sampler_rng_seed(&r, 0);
    EXPECT(r.s[0] == 0xe220a8397b1dcdafull, "%llx", (unsigned long long)r.s[0]);
    struct { uint64_t seed, want[3]; } kat[] = {
        {0, {0x99ec5f36cb75f2b4ull, 0xbf6e1f784956452aull, 0x1a5f849d4933e6e0ull}},
        {42, {0x15780b2e0c2ec716ull, 0x6104d9866d113a7eull, 0xae17533239e499a1ull}},
        {0xdeadbeefcafebabeull,
         {0x2299b3421aa78b66ull, 0x9af6550483e02887ull, 0xda059cb5eec5c979ull}},
    };
    for (size_t i = 0; i < ARRAY_LEN(kat); i++) {
        sampler_rng_seed(&r, kat[i].seed);
        for (int j = 0; j < 3; j++) {
            uint64_t got = sampler_rng_next(&r);
            EXPECT(got == kat[i].want[j], "seed %zu draw %d: %llx", i, j, (unsigned long long)got);
        }
    }
    sampler_rng_seed(&r, 7);
    double lo = 1, hi = 0, mean = 0;
    for (int i = 0; i < 100000; i++) {
        double u = sampler_rng_uniform(&r);
        lo = fmin(lo, u);
        hi = fmax(hi, u);
        mean += u / 100000;
    }
    EXPECT(lo >= 0 && hi < 1 && lo < 1e-3 && hi > 1 - 1e-3, "%g %g", lo, hi);
    EXPECT_NEAR(mean, 0.5, 0.005);
    uint64_t a = sampler_seed_fresh(), b = sampler_seed_fresh(), c = sampler_seed_fresh();
    EXPECT(a != b && b != c && a != c, "fresh seeds repeat");
}

// ---- greedy

static void test_greedy_ties(void) {
    struct { int n; float v[6]; int want; } cases[] = {
        {4, {1, 3, 3, 2}, 1},    {2, {-5, -5}, 0},          {1, {0}, 0},
        {5, {-1, -2, -3, -4, -0.5f}, 4}, {3, {-INFINITY, -INFINITY, -7}, 2},
    };
    SamplerScratch sc;
    sampler_scratch_init(&sc, 3000);
    SamplingParams p = params_tk(0.0f, 5, 0.5f, 0.3f); // filters never touch greedy
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        SamplerState st;
        sampler_state_init(&st, &p, cases[i].n, NULL, 0, 0);
        EXPECT_EQ_INT(sampler_sample(&p, &st, cases[i].v, cases[i].n, &sc, NULL), cases[i].want);
        sampler_state_free(&st);
    }
    // ties across blocks, at block edges and at the end, and below SAMPLER_TEMP_EPS
    struct { int a, b; } spots[] = {{300, 700}, {255, 256}, {256, 2999}, {0, 2999}, {2999, 2999}};
    float *x = malloc(3000 * sizeof(float));
    for (size_t i = 0; i < ARRAY_LEN(spots); i++) {
        for (int j = 0; j < 3000; j++) x[j] = (float)(j % 17) * 0.1f;
        x[spots[i].a] = x[spots[i].b] = 5.0f;
        p.temperature = i % 2 ? 0.0f : 0.5e-5f;
        SamplerState st;
        sampler_state_init(&st, &p, 3000, NULL, 0, 0);
        EXPECT_EQ_INT(sampler_sample(&p, &st, x, 3000, &sc, NULL), spots[i].a);
        sampler_state_free(&st);
    }
    free(x);
    sampler_scratch_free(&sc);
}

static void test_greedy_random(void) {
    int V = 49152;
    float *x = malloc((size_t)V * sizeof(float));
    SamplerScratch sc;
    sampler_scratch_init(&sc, V);
    SamplingParams p = params_tk(0.0f, -1, 1.0f, 0.0f);
    SamplerState st;
    sampler_state_init(&st, &p, V, NULL, 0, 0);
    for (int rep = 0; rep < 20; rep++) {
        gen_logits(x, V, (LogitGen)(rep % 4));
        int want = 0;
        for (int i = 1; i < V; i++)
            if (x[i] > x[want]) want = i;
        EXPECT_EQ_INT(sampler_sample(&p, &st, x, V, &sc, NULL), want);
    }
    sampler_state_free(&st);
    sampler_scratch_free(&sc);
    free(x);
}

// ---- survivor sets against the reference

static int cand_by_id(const void *a, const void *b) {
    return ((const SamplerCand *)a)->id - ((const SamplerCand *)b)->id;
}

static void test_filter_sets(void) {
    int vocabs[] = {7, 300, 5000, 49152};
    LogitGen gens[] = {GEN_GAUSS, GEN_PEAKED, GEN_TIES, GEN_NEG_INF};
    struct { float t; int k; float top_p, min_p; } ps[] = {
        {1.0f, -1, 0.9013f, 0.0f}, {0.7f, 40, 1.0f, 0.0f},   {1.3f, 40, 0.8017f, 0.0f},
        {1.0f, -1, 1.0f, 0.05f},   {1.0f, 10, 0.5013f, 0.1f}, {1.0f, -1, 0.9991f, 0.0f},
        {2.0f, -1, 0.9503f, 0.01f}, {0.5f, 0, 1.0f, 0.0f},   {1.0f, 1, 1.0f, 0.0f},
        {1.0f, 1000000, 0.7003f, 0.0f}, {1.0f, -1, 0.3011f, 0.0f}, {1.0f, -1, 1.0f, 1.0f},
        {0.25f, 3, 1.0f, 0.0f},    {1.0f, 2000, 0.9497f, 0.002f}, {1.0f, 5, 1.0f, 1.0f},
    };
    SamplerScratch sc;
    sampler_scratch_init(&sc, 49152);
    float *x = malloc(49152 * sizeof(float));
    double *ref = malloc(49152 * sizeof(double));
    int checked = 0;
    for (size_t vi = 0; vi < ARRAY_LEN(vocabs); vi++) {
        int V = vocabs[vi];
        for (size_t gi = 0; gi < ARRAY_LEN(gens); gi++) {
            gen_logits(x, V, gens[gi]);
            for (size_t pi = 0; pi < ARRAY_LEN(ps); pi++) {
                SamplingParams p = params_tk(ps[pi].t, ps[pi].k, ps[pi].top_p, ps[pi].min_p);
                int nref = ref_filter(&p, x, V, ref);
                int n = sampler_filter(&p, x, V, &sc);
                qsort(sc.cand, (size_t)n, sizeof(SamplerCand), cand_by_id);
                bool same = n == nref;
                double z = 0;
                for (int i = 0; i < n; i++) z += sc.cand[i].val;
                for (int i = 0; i < n && same; i++) {
                    int id = sc.cand[i].id;
                    if (ref[id] == 0 || fabs(sc.cand[i].val / z - ref[id]) > 1e-5 * ref[id] + 1e-9)
                        same = false;
                }
                EXPECT(same, "V=%d gen=%zu params=%zu: %d kept vs reference %d", V, gi, pi, n,
                       nref);
                if (p.top_k > 0 && p.top_k < V && p.top_p == 1.0f && p.min_p == 0.0f) {
                    int finite = 0;
                    for (int i = 0; i < V; i++) finite += isfinite(x[i]);
                    EXPECT_EQ_INT(n, MIN(p.top_k, finite)); // exactly k, ties or not
                }
                checked++;
            }
        }
    }
    EXPECT_EQ_INT(checked, 4 * 4 * (int)ARRAY_LEN(ps));
    // all equal: top-k keeps the k lowest ids although the scan visits a block lane by lane
    for (int i = 0; i < 4096; i++) x[i] = 0.25f;
    SamplingParams p = params_tk(1.0f, 3, 1.0f, 0.0f);
    int n = sampler_filter(&p, x, 4096, &sc);
    qsort(sc.cand, (size_t)n, sizeof(SamplerCand), cand_by_id);
    EXPECT(n == 3 && sc.cand[0].id == 0 && sc.cand[1].id == 1 && sc.cand[2].id == 2,
           "uniform top-3: %d kept, first %d", n, n ? sc.cand[0].id : -1);
    p = params_tk(1.0f, -1, 0.0011f, 0.0f); // 5 of 4096 equal tokens reach 0.0011
    n = sampler_filter(&p, x, 4096, &sc);
    qsort(sc.cand, (size_t)n, sizeof(SamplerCand), cand_by_id);
    EXPECT(n == 5 && sc.cand[0].id == 0 && sc.cand[4].id == 4, "uniform top-p: %d kept", n);
    free(x);
    free(ref);
    sampler_scratch_free(&sc);
}

// ---- the drawn distribution: chi-square over cells expecting >= 5, nothing outside the set

static void check_distribution(const SamplingParams *p, const float *x, int V, int draws,
                               uint64_t seed, const char *what) {
    double *ref = malloc((size_t)V * sizeof(double));
    long *obs = calloc((size_t)V, sizeof(long));
    float *row = malloc((size_t)V * sizeof(float));
    ref_filter(p, x, V, ref);
    SamplerScratch sc;
    sampler_scratch_init(&sc, V);
    SamplingParams q = *p;
    q.seed = seed;
    q.has_seed = true;
    SamplerState st;
    sampler_state_init(&st, &q, V, NULL, 0, 0);
    long outside = 0;
    for (int d = 0; d < draws; d++) {
        memcpy(row, x, (size_t)V * sizeof(float));
        int t = sampler_sample(&q, &st, row, V, &sc, NULL);
        obs[t]++;
        outside += ref[t] == 0;
    }
    double chi = 0, rest_e = 0;
    long rest_o = 0;
    int cells = 0;
    for (int i = 0; i < V; i++) {
        double e = ref[i] * draws;
        if (e >= 5) {
            chi += (obs[i] - e) * (obs[i] - e) / e;
            cells++;
        } else {
            rest_e += e;
            rest_o += obs[i];
        }
    }
    if (rest_e >= 5) {
        chi += (rest_o - rest_e) * (rest_o - rest_e) / rest_e;
        cells++;
    }
    int dof = MAX(cells - 1, 1);
    double bound = dof + 6.0 * sqrt(2.0 * dof) + 10; // far in the tail for any dof
    EXPECT_EQ_INT(outside, 0);
    EXPECT(chi < bound, "%s: chi2 %.1f over %d dof (bound %.1f)", what, chi, dof, bound);
    sampler_state_free(&st);
    sampler_scratch_free(&sc);
    free(ref);
    free(obs);
    free(row);
}

static void test_distributions(void) {
    float small[8] = {1.0f, 0.5f, 2.0f, -1.0f, 1.5f, 0.0f, 1.9f, -3.0f};
    struct { float t; int k; float top_p, min_p; const char *what; } ps[] = {
        {1.0f, -1, 1.0f, 0.0f, "T=1"},          {0.5f, -1, 1.0f, 0.0f, "T=0.5"},
        {1.7f, -1, 1.0f, 0.0f, "T=1.7"},        {1.0f, 3, 1.0f, 0.0f, "top_k=3"},
        {1.0f, -1, 0.7f, 0.0f, "top_p=0.7"},    {1.0f, -1, 1.0f, 0.3f, "min_p=0.3"},
        {0.8f, 5, 0.9f, 0.05f, "all filters"},
    };
    for (size_t i = 0; i < ARRAY_LEN(ps); i++) {
        SamplingParams p = params_tk(ps[i].t, ps[i].k, ps[i].top_p, ps[i].min_p);
        check_distribution(&p, small, 8, 100000, 1000 + i, ps[i].what);
    }
    // a wider vocab, with mass spread over many blocks (the block-skipping draw and the top-p
    // histogram)
    int V = 3000;
    float *x = malloc((size_t)V * sizeof(float));
    for (int i = 0; i < V; i++) x[i] = (float)(0.6 * trng_gauss());
    SamplingParams p = params_tk(1.0f, -1, 1.0f, 0.0f);
    check_distribution(&p, x, V, 200000, 77, "V=3000 T=1");
    p = params_tk(1.0f, -1, 0.6f, 0.0f);
    check_distribution(&p, x, V, 200000, 78, "V=3000 top_p=0.6");
    p = params_tk(1.2f, 300, 1.0f, 0.0f);
    check_distribution(&p, x, V, 200000, 79, "V=3000 top_k=300");
    free(x);
}

// ---- penalties and bias

static void test_penalties_exact(void) {
    const float base[8] = {2.0f, -1.0f, 0.5f, 3.0f, -2.0f, 0.0f, 1.0f, 4.0f};
    const int32_t prompt[3] = {0, 1, 5};
    const int32_t output[4] = {2, 2, 3, 1}; // counts: 1 -> 1, 2 -> 2, 3 -> 1
    struct { float rep, freq, pres; float want[8]; } cases[] = {
        {2.0f, 0, 0, {2.0f / 2, -1.0f * 2, 0.5f / 2, 3.0f / 2, -2.0f, 0.0f * 2, 1.0f, 4.0f}},
        {0.5f, 0, 0,
         {2.0f / 0.5f, -1.0f * 0.5f, 0.5f / 0.5f, 3.0f / 0.5f, -2.0f, 0.0f, 1.0f, 4.0f}},
        {1.0f, 0.5f, 0,
         {2.0f, -1.0f - 0.5f, 0.5f - 0.5f * 2, 3.0f - 0.5f, -2.0f, 0.0f, 1.0f, 4.0f}},
        {1.0f, 0, 0.3f, {2.0f, -1.0f - 0.3f, 0.5f - 0.3f, 3.0f - 0.3f, -2.0f, 0.0f, 1.0f, 4.0f}},
        {1.0f, -0.4f, -0.2f, {2.0f, -1.0f + 0.4f + 0.2f, 0.5f + 0.8f + 0.2f, 3.0f + 0.4f + 0.2f,
                              -2.0f, 0.0f, 1.0f, 4.0f}},
        {1.5f, 0.2f, 0.1f, {2.0f / 1.5f, -1.0f * 1.5f - 0.2f - 0.1f, 0.5f / 1.5f - 0.4f - 0.1f,
                            3.0f / 1.5f - 0.2f - 0.1f, -2.0f, 0.0f, 1.0f, 4.0f}},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        SamplingParams p = sampling_params_default();
        p.repetition_penalty = cases[i].rep;
        p.frequency_penalty = cases[i].freq;
        p.presence_penalty = cases[i].pres;
        SamplerState st;
        sampler_state_init(&st, &p, 8, prompt, 3, 4);
        for (int j = 0; j < 4; j++) sampler_state_accept(&st, output[j]);
        EXPECT_EQ_INT(st.n_output, 4);
        EXPECT_EQ_INT(sampler_state_count(&st, 2), 2);
        EXPECT_EQ_INT(sampler_state_count(&st, 0), 0); // prompt-only
        float x[8];
        memcpy(x, base, sizeof(x));
        sampler_apply_penalties(&p, &st, x);
        for (int j = 0; j < 8; j++)
            EXPECT(fabsf(x[j] - cases[i].want[j]) <= 1e-6f, "case %zu token %d: %g != %g", i, j,
                   (double)x[j], (double)cases[i].want[j]);
        sampler_state_free(&st);
    }
    // through the whole pipeline: a frequency penalty moves greedy off a repeated token
    SamplingParams p = params_tk(0.0f, -1, 1.0f, 0.0f);
    p.frequency_penalty = 1.0f;
    SamplerState st;
    SamplerScratch sc;
    sampler_scratch_init(&sc, 8);
    sampler_state_init(&st, &p, 8, prompt, 3, 0);
    int seq[4];
    for (int s = 0; s < 4; s++) {
        float x[8];
        memcpy(x, base, sizeof(x));
        seq[s] = sampler_sample(&p, &st, x, 8, &sc, NULL);
        sampler_state_accept(&st, seq[s]);
    }
    // 4.0 -> 3.0 (7 once), then 7 (3.0 ties 3 at 3.0, lower id wins: 3), ...
    EXPECT(seq[0] == 7 && seq[1] == 3 && seq[2] == 7 && seq[3] == 0, "%d %d %d %d", seq[0],
           seq[1], seq[2], seq[3]);
    sampler_state_free(&st);
    sampler_scratch_free(&sc);
}

static void test_counts_growth(void) {
    int V = 20000;
    int32_t *prompt = malloc(3000 * sizeof(int32_t));
    int *dense = calloc((size_t)V, sizeof(int));
    char *inp = calloc((size_t)V, 1);
    for (int i = 0; i < 3000; i++) {
        prompt[i] = (int32_t)(trng_next() % 5000);
        inp[prompt[i]] = 1;
    }
    SamplingParams p = sampling_params_default();
    p.repetition_penalty = 1.3f;
    SamplerState st;
    sampler_state_init(&st, &p, V, prompt, 3000, 0); // no hint: the tables grow
    for (int i = 0; i < 12000; i++) {
        int32_t t = (int32_t)(trng_next() % (i < 6000 ? 300 : (uint64_t)V));
        dense[t]++;
        sampler_state_accept(&st, t);
    }
    int bad = 0, distinct = 0;
    for (int t = 0; t < V; t++) {
        bad += sampler_state_count(&st, t) != dense[t];
        distinct += dense[t] > 0 || inp[t];
    }
    EXPECT_EQ_INT(bad, 0);
    EXPECT_EQ_INT(st.n_entries, distinct);
    int flags_ok = 1;
    for (int i = 0; i < st.n_entries; i++)
        flags_ok &= st.entries[i].in_prompt == inp[st.entries[i].token] &&
                    st.entries[i].count == dense[st.entries[i].token];
    EXPECT(flags_ok, "entry flags or counts differ");
    sampler_state_free(&st);
    // with the max_output hint, accepting never reallocates (no malloc in the step loop)
    sampler_state_init(&st, &p, V, prompt, 3000, 2000);
    SamplerTokenCount *entries = st.entries;
    int32_t *slots = st.slots;
    for (int i = 0; i < 2000; i++) sampler_state_accept(&st, (int32_t)(10000 + i)); // all new
    EXPECT(st.entries == entries && st.slots == slots, "accept reallocated within the hint");
    EXPECT_EQ_INT(sampler_state_count(&st, 11999), 1);
    sampler_state_free(&st);
    // no penalty: nothing tracked, nothing allocated
    SamplingParams q = sampling_params_default();
    sampler_state_init(&st, &q, V, prompt, 3000, 100);
    sampler_state_accept(&st, 5);
    EXPECT(st.entries == NULL && st.slots == NULL && sampler_state_count(&st, 5) == 0, "tracked");
    sampler_state_free(&st);
    free(prompt);
    free(dense);
    free(inp);
}

static void test_logit_bias(void) {
    float x[6] = {1.0f, 2.0f, 0.5f, 2.0f, -1.0f, 0.0f};
    int32_t ids[3] = {2, 4, 2};
    float vals[3] = {1.0f, -0.5f, 0.75f}; // a repeated id adds up
    SamplingParams p = params_tk(0.0f, -1, 1.0f, 0.0f);
    p.n_logit_bias = 3;
    p.logit_bias_ids = ids;
    p.logit_bias_vals = vals;
    sampler_apply_logit_bias(&p, x, 6);
    float want[6] = {1.0f, 2.0f, 0.5f + 1.0f + 0.75f, 2.0f, -1.5f, 0.0f};
    for (int i = 0; i < 6; i++) EXPECT(x[i] == want[i], "token %d: %g", i, (double)x[i]);
    float y[6] = {1.0f, 2.0f, 0.5f, 2.0f, -1.0f, 0.0f};
    SamplerScratch sc;
    sampler_scratch_init(&sc, 1000);
    SamplerState st;
    sampler_state_init(&st, &p, 6, NULL, 0, 0);
    EXPECT_EQ_INT(sampler_sample(&p, &st, y, 6, &sc, NULL), 2); // 2.25 beats 2.0
    sampler_state_free(&st);

    // -100 bans: the five most likely never come out, at T=1 and under top-k
    int V = 1000;
    float *base = malloc((size_t)V * sizeof(float)), *row = malloc((size_t)V * sizeof(float));
    for (int i = 0; i < V; i++) base[i] = (float)(2.0 * trng_gauss());
    int32_t ban[5];
    float ban_v[5];
    for (int b = 0; b < 5; b++) {
        int best = -1;
        for (int i = 0; i < V; i++) {
            bool taken = false;
            for (int c = 0; c < b; c++) taken |= ban[c] == i;
            if (!taken && (best < 0 || base[i] > base[best])) best = i;
        }
        ban[b] = best;
        ban_v[b] = -100.0f;
    }
    for (int variant = 0; variant < 2; variant++) {
        SamplingParams q = params_tk(1.0f, variant ? 20 : -1, 1.0f, 0.0f);
        q.n_logit_bias = 5;
        q.logit_bias_ids = ban;
        q.logit_bias_vals = ban_v;
        q.seed = 5;
        q.has_seed = true;
        sampler_state_init(&st, &q, V, NULL, 0, 0);
        int hits = 0;
        for (int d = 0; d < 20000; d++) {
            memcpy(row, base, (size_t)V * sizeof(float));
            int t = sampler_sample(&q, &st, row, V, &sc, NULL);
            for (int b = 0; b < 5; b++) hits += t == ban[b];
        }
        EXPECT_EQ_INT(hits, 0);
        sampler_state_free(&st);
    }
    free(base);
    free(row);
    sampler_scratch_free(&sc);
}

// ---- seeds and batch independence

// A stand-in for the model: the next logits depend on the request's previous token and step.
static void fake_model(float *x, int V, int32_t prev, int step) {
    uint64_t save = trng_state;
    trng_state = (uint64_t)prev * 1000003u + (uint64_t)step * 7919u + 11;
    for (int i = 0; i < V; i++) x[i] = (float)(1.5 * trng_gauss());
    trng_state = save;
}

typedef struct {
    SamplingParams p;
    SamplerState st;
    int32_t prev, seq[64];
    int n;
} FakeReq;

static void fake_req_init(FakeReq *r, SamplingParams p, int V) {
    static const int32_t prompt[5] = {3, 1, 4, 1, 5};
    r->p = p;
    sampler_state_init(&r->st, &p, V, prompt, 5, 64);
    r->prev = 5;
    r->n = 0;
}

static void fake_req_step(FakeReq *r, float *x, int V, SamplerScratch *sc) {
    fake_model(x, V, r->prev, r->n);
    SampleLogprobs lp;
    int32_t t = sampler_sample(&r->p, &r->st, x, V, sc, &lp);
    sampler_state_accept(&r->st, t);
    r->prev = r->seq[r->n++] = t;
}

static void test_seed_batch_independence(void) {
    int V = 2000;
    float *x = malloc((size_t)V * sizeof(float));
    SamplerScratch sc, sc2;
    sampler_scratch_init(&sc, V);
    sampler_scratch_init(&sc2, V);
    static const int32_t bias_ids[2] = {10, 20};
    static const float bias_vals[2] = {3.0f, -2.0f};
    SamplingParams pa = params_tk(0.9f, 50, 0.95f, 0.0f);
    pa.presence_penalty = 0.5f;
    pa.repetition_penalty = 1.1f;
    pa.n_logit_bias = 2;
    pa.logit_bias_ids = bias_ids;
    pa.logit_bias_vals = bias_vals;
    pa.seed = 42;
    pa.has_seed = true;
    pa.logprobs = 3;
    SamplingParams pb = params_tk(1.2f, -1, 0.9f, 0.02f);
    pb.frequency_penalty = 0.3f;
    pb.seed = 7;
    pb.has_seed = true;
    SamplingParams pc = params_tk(0.0f, -1, 1.0f, 0.0f); // greedy and unseeded
    SamplingParams pd = params_tk(1.0f, -1, 1.0f, 0.0f); // plain, unseeded

    FakeReq a, b;
    fake_req_init(&a, pa, V);
    fake_req_init(&b, pb, V);
    for (int s = 0; s < 64; s++) fake_req_step(&a, x, V, &sc);
    for (int s = 0; s < 64; s++) fake_req_step(&b, x, V, &sc);
    int32_t alone_a[64], alone_b[64];
    memcpy(alone_a, a.seq, sizeof(alone_a));
    memcpy(alone_b, b.seq, sizeof(alone_b));
    sampler_state_free(&a.st);
    sampler_state_free(&b.st);

    for (int trial = 0; trial < 3; trial++) {
        FakeReq r[4];
        fake_req_init(&r[0], pa, V);
        fake_req_init(&r[1], pb, V);
        fake_req_init(&r[2], pc, V);
        fake_req_init(&r[3], pd, V);
        for (int s = 0; s < 80; s++) {
            int order[4] = {0, 1, 2, 3};
            for (int i = 3; i > 0; i--) { // a different batch order every step
                int j = (int)(trng_next() % (uint64_t)(i + 1)), t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
            for (int i = 0; i < 4; i++) {
                FakeReq *q = &r[order[i]];
                bool active = q->n < 64 && !(order[i] == 1 && s < 10 + trial) && // b joins late
                              !(order[i] == 2 && s > 30);                      // c leaves early
                if (active) fake_req_step(q, x, V, (s + i) % 2 ? &sc : &sc2);
            }
        }
        EXPECT(r[0].n == 64 && memcmp(r[0].seq, alone_a, sizeof(alone_a)) == 0,
               "trial %d: request a changed with the batch", trial);
        EXPECT(r[1].n == 64 && memcmp(r[1].seq, alone_b, sizeof(alone_b)) == 0,
               "trial %d: request b changed with the batch", trial);
        for (int i = 0; i < 4; i++) sampler_state_free(&r[i].st);
    }
    // a different seed gives a different sequence; unseeded requests get different seeds
    SamplingParams pe = pa;
    pe.seed = 43;
    FakeReq e;
    fake_req_init(&e, pe, V);
    for (int s = 0; s < 64; s++) fake_req_step(&e, x, V, &sc);
    EXPECT(memcmp(e.seq, alone_a, sizeof(alone_a)) != 0, "seed 43 repeated seed 42");
    sampler_state_free(&e.st);
    SamplerState u1, u2;
    sampler_state_init(&u1, &pd, V, NULL, 0, 0);
    sampler_state_init(&u2, &pd, V, NULL, 0, 0);
    EXPECT(u1.seed != u2.seed, "unseeded requests share a seed");
    sampler_state_free(&u1);
    sampler_state_free(&u2);
    free(x);
    sampler_scratch_free(&sc);
    sampler_scratch_free(&sc2);
}

// Every call advances the generator exactly once, whatever path it takes.
static void test_one_draw_per_token(void) {
    int V = 1000;
    float *x = malloc((size_t)V * sizeof(float));
    SamplerScratch sc;
    sampler_scratch_init(&sc, V);
    struct { float t; int k; float top_p, min_p; int logprobs; } ps[] = {
        {0.0f, -1, 1.0f, 0.0f, -1}, {0.0f, -1, 1.0f, 0.0f, 5}, {1.0f, -1, 1.0f, 0.0f, -1},
        {1.0f, 40, 1.0f, 0.0f, 2},  {1.0f, -1, 0.9f, 0.0f, 0}, {1.0f, -1, 1.0f, 0.2f, -1},
    };
    for (size_t i = 0; i < ARRAY_LEN(ps); i++) {
        SamplingParams p = params_tk(ps[i].t, ps[i].k, ps[i].top_p, ps[i].min_p);
        p.logprobs = ps[i].logprobs;
        p.seed = 99;
        p.has_seed = true;
        SamplerState st;
        sampler_state_init(&st, &p, V, NULL, 0, 0);
        SamplerRng ref;
        sampler_rng_seed(&ref, 99);
        SampleLogprobs lp;
        for (int s = 0; s < 7; s++) {
            gen_logits(x, V, GEN_GAUSS);
            sampler_sample(&p, &st, x, V, &sc, &lp);
            sampler_rng_next(&ref);
        }
        EXPECT(memcmp(&ref, &st.rng, sizeof(ref)) == 0, "params %zu: generator drifted", i);
        sampler_state_free(&st);
    }
    free(x);
    sampler_scratch_free(&sc);
}

// ---- logprobs

static void ref_log_softmax(const float *x, int V, double *out) {
    double m = -INFINITY, s = 0;
    for (int i = 0; i < V; i++) m = fmax(m, x[i]);
    for (int i = 0; i < V; i++) s += exp(x[i] - m);
    for (int i = 0; i < V; i++) out[i] = x[i] - m - log(s);
}

static void check_logprobs(const SampleLogprobs *lp, const double *ref, int V, int n_top,
                           const char *what) {
    EXPECT_EQ_INT(lp->n_top, MIN(n_top, V));
    EXPECT_NEAR(lp->logprob, ref[lp->token], 1e-5);
    RefCand *c = malloc((size_t)V * sizeof(RefCand));
    for (int i = 0; i < V; i++) c[i] = (RefCand){ref[i], i};
    qsort(c, (size_t)V, sizeof(RefCand), ref_cmp);
    for (int i = 0; i < lp->n_top; i++) {
        EXPECT(lp->top_ids[i] == c[i].id, "%s: rank %d is %d, want %d", what, i,
               (int)lp->top_ids[i], c[i].id);
        bool both_ninf = isinf(lp->top_logprobs[i]) && isinf(c[i].val);
        EXPECT(both_ninf || fabs(lp->top_logprobs[i] - c[i].val) <= 1e-5, "%s: rank %d: %g vs %g",
               what, i, (double)lp->top_logprobs[i], c[i].val);
        if (i > 0) EXPECT(lp->top_logprobs[i] <= lp->top_logprobs[i - 1], "%s: order", what);
    }
    free(c);
}

static void test_logprobs(void) {
    int V = 49152;
    float *x = malloc((size_t)V * sizeof(float)), *orig = malloc((size_t)V * sizeof(float));
    double *ref = malloc((size_t)V * sizeof(double));
    SamplerScratch sc;
    sampler_scratch_init(&sc, V);
    SampleLogprobs lp;
    // a small vocab fully covered by the top list: the probabilities sum to one
    {
        float s[12] = {0.3f, -1.0f, 2.0f, 2.0f, 0.1f, -5.0f,
                       7.0f, 0.0f, 0.3f, -INFINITY, 1.0f, 3.0f};
        SamplingParams p = params_tk(0.8f, -1, 1.0f, 0.0f);
        p.logprobs = 20;
        SamplerState st;
        sampler_state_init(&st, &p, 12, NULL, 0, 0);
        float row[12];
        memcpy(row, s, sizeof(s));
        sampler_sample(&p, &st, row, 12, &sc, &lp);
        double sum = 0;
        for (int i = 0; i < lp.n_top; i++) sum += exp(lp.top_logprobs[i]);
        EXPECT_EQ_INT(lp.n_top, 12);
        EXPECT_NEAR(sum, 1.0, 1e-6);
        EXPECT(lp.top_ids[0] == 6 && lp.top_ids[1] == 11 && lp.top_ids[2] == 2 &&
                   lp.top_ids[3] == 3 && lp.top_ids[5] == 0 && lp.top_ids[6] == 8 &&
                   lp.top_ids[11] == 9,
               "tie order");
        EXPECT(isinf(lp.top_logprobs[11]) && lp.top_logprobs[11] < 0, "-inf logit");
        ref_log_softmax(s, 12, ref); // T does not enter logprobs
        check_logprobs(&lp, ref, 12, 20, "small");
        sampler_state_free(&st);
    }
    // the big vocab, every generator, both modes, with bias and penalties in play
    static const int32_t bias_ids[3] = {17, 40000, 123};
    static const float bias_vals[3] = {8.0f, -100.0f, 2.5f};
    static const int32_t prompt[4] = {5, 6, 7, 17};
    for (int g = 0; g < 4; g++) {
        for (int mode = 0; mode < 2; mode++) {
            gen_logits(orig, V, (LogitGen)g);
            SamplingParams p = params_tk(g == 2 ? 0.0f : 0.7f, g == 1 ? 40 : -1, 0.95f, 0.0f);
            p.logprobs = 5 + 5 * g;
            p.logprobs_mode = mode ? SAMPLER_LOGPROBS_PROCESSED : SAMPLER_LOGPROBS_RAW;
            p.n_logit_bias = 3;
            p.logit_bias_ids = bias_ids;
            p.logit_bias_vals = bias_vals;
            p.repetition_penalty = 1.2f;
            p.presence_penalty = 0.4f;
            SamplerState st;
            sampler_state_init(&st, &p, V, prompt, 4, 8);
            sampler_state_accept(&st, 6);
            memcpy(x, orig, (size_t)V * sizeof(float));
            int32_t t = sampler_sample(&p, &st, x, V, &sc, &lp);
            EXPECT_EQ_INT(lp.token, t);
            // x now holds the biased and penalised logits: the PROCESSED source
            ref_log_softmax(mode ? x : orig, V, ref);
            char what[64];
            snprintf(what, sizeof(what), "gen %d mode %d", g, mode);
            check_logprobs(&lp, ref, V, p.logprobs, what);
            sampler_state_free(&st);
        }
    }
    // all equal over whole blocks: the alternatives are the lowest ids
    {
        for (int i = 0; i < 1024; i++) x[i] = -1.5f;
        SamplingParams p = params_tk(0.0f, -1, 1.0f, 0.0f);
        p.logprobs = 4;
        SamplerState st;
        sampler_state_init(&st, &p, 1024, NULL, 0, 0);
        EXPECT_EQ_INT(sampler_sample(&p, &st, x, 1024, &sc, &lp), 0);
        for (int i = 0; i < 4; i++) {
            EXPECT_EQ_INT(lp.top_ids[i], i);
            EXPECT_NEAR(lp.top_logprobs[i], -log(1024.0), 1e-5);
        }
        sampler_state_free(&st);
    }
    // logprobs 0: the chosen token only; -1 or no output: nothing written
    {
        gen_logits(x, V, GEN_GAUSS);
        SamplingParams p = params_tk(1.0f, -1, 1.0f, 0.0f);
        p.logprobs = 0;
        SamplerState st;
        sampler_state_init(&st, &p, V, NULL, 0, 0);
        ref_log_softmax(x, V, ref);
        int32_t t = sampler_sample(&p, &st, x, V, &sc, &lp);
        EXPECT_EQ_INT(lp.n_top, 0);
        EXPECT_EQ_INT(lp.token, t);
        EXPECT_NEAR(lp.logprob, ref[t], 1e-5);
        p.logprobs = -1;
        memset(&lp, 0x5a, sizeof(lp));
        sampler_sample(&p, &st, x, V, &sc, &lp);
        EXPECT(lp.n_top == 0x5a5a5a5a, "logprobs -1 wrote the output");
        p.logprobs = 3;
        sampler_sample(&p, &st, x, V, &sc, NULL);
        sampler_state_free(&st);
    }
    free(x);
    free(orig);
    free(ref);
    sampler_scratch_free(&sc);
}

// ---- speed (printed, never asserted)

static void bench_speed(void) {
    int V = 49152;
    float *x = malloc((size_t)V * sizeof(float)), *row = malloc((size_t)V * sizeof(float));
    gen_logits(x, V, GEN_PEAKED);
    for (int i = 0; i < V; i++) x[i] += 4.0f; // LM-like: a few far above a wide body
    SamplerScratch sc;
    sampler_scratch_init(&sc, V);
    struct { const char *what; float t; int k; float top_p, min_p, pres; int logprobs; } ps[] = {
        {"greedy", 0.0f, -1, 1.0f, 0.0f, 0.0f, -1},
        {"greedy + logprobs 5", 0.0f, -1, 1.0f, 0.0f, 0.0f, 5},
        {"T=1 (full vocab)", 1.0f, -1, 1.0f, 0.0f, 0.0f, -1},
        {"top_k=40", 1.0f, 40, 1.0f, 0.0f, 0.0f, -1},
        {"top_k=40 top_p=0.9", 1.0f, 40, 0.9f, 0.0f, 0.0f, -1},
        {"top_p=0.9", 1.0f, -1, 0.9f, 0.0f, 0.0f, -1},
        {"min_p=0.05", 1.0f, -1, 1.0f, 0.05f, 0.0f, -1},
        {"top_p=0.9 + presence (500 seen)", 1.0f, -1, 0.9f, 0.0f, 0.5f, -1},
    };
    for (size_t i = 0; i < ARRAY_LEN(ps); i++) {
        SamplingParams p = params_tk(ps[i].t, ps[i].k, ps[i].top_p, ps[i].min_p);
        p.presence_penalty = ps[i].pres;
        p.logprobs = ps[i].logprobs;
        p.seed = 1;
        p.has_seed = true;
        SamplerState st;
        sampler_state_init(&st, &p, V, NULL, 0, 500);
        for (int j = 0; j < 500 && ps[i].pres != 0; j++) sampler_state_accept(&st, j * 97 % V);
        SampleLogprobs lp;
        int iters = 300;
        double t_copy = 0, t0;
        long sink = 0;
        for (int it = 0; it < iters; it++) {
            t0 = time_now_s();
            memcpy(row, x, (size_t)V * sizeof(float));
            t_copy += time_now_s() - t0;
        }
        t0 = time_now_s();
        for (int it = 0; it < iters; it++) {
            memcpy(row, x, (size_t)V * sizeof(float));
            sink += sampler_sample(&p, &st, row, V, &sc, &lp);
        }
        double ns = ((time_now_s() - t0) - t_copy) / iters * 1e9;
        printf("  speed V=%d %-34s %8.0f ns/call (token sum %ld)\n", V, ps[i].what, ns, sink);
        sampler_state_free(&st);
    }
    free(x);
    free(row);
    sampler_scratch_free(&sc);
}

int main(void) {
    TEST_RUN(test_validate);
    TEST_RUN(test_rng);
    TEST_RUN(test_greedy_ties);
    TEST_RUN(test_greedy_random);
    TEST_RUN(test_filter_sets);
    TEST_RUN(test_distributions);
    TEST_RUN(test_penalties_exact);
    TEST_RUN(test_counts_growth);
    TEST_RUN(test_logit_bias);
    TEST_RUN(test_seed_batch_independence);
    TEST_RUN(test_one_draw_per_token);
    TEST_RUN(test_logprobs);
    bench_speed();
    return test_summary();
}
