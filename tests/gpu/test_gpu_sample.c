// test_gpu_sample.c: the device sampler (kernels/cuda/sample.cu) against its twin,
// engine/sampling/sampler.c. Without a GPU: SKIP, never pass.
//
// Two kinds of check, by what the two implementations promise to share:
//  - SAME: greedy, and temperature / min-p without top-k or top-p, walk the vocabulary in id
//    order on both sides, so the same u must give the same token, row by row.
//  - DIST: with top-k or top-p the twin walks its survivors in heap or histogram order, so only
//    the distribution is shared. The row is repeated N times with stratified u = (i + ½) / N;
//    an inverse-CDF draw in any fixed order then picks survivor j between N·pⱼ − 1 and N·pⱼ + 1
//    times, and never a token outside the twin's survivor set (sampler_filter).
// Always: the processed logits (bias, penalties) left in place match the twin's, and logprobs
// (top ids exactly, values to 1e-4) match whenever they are asked for.
#include "engine/sampling/sampler.h"
#include "tests/gpu/gpu_test.h"

_Static_assert(KSAMPLE_MAX_LOGPROBS == SAMPLER_MAX_LOGPROBS, "logprob limits differ");
_Static_assert(KSAMPLE_TEMP_EPS == SAMPLER_TEMP_EPS, "greedy thresholds differ");

typedef enum { SAME, DIST } SampleCheck;

typedef struct {
    const char *name;
    int vocab, n_rows;
    float temperature, top_p, min_p;
    int top_k;
    float presence, frequency, repetition;
    int n_bias;
    int logprobs;
    bool processed; // logprobs after bias and penalties
    bool ties;      // logits on a coarse grid: ties at every cut
    SampleCheck check;
} SampleCase;

static const SampleCase CASES_TABLE[] = {
    {"greedy", 49152, 5, 0, 1, 0, -1, 0, 0, 1, 0, -1, false, false, SAME},
    {"greedy + bias + penalties, raw logprobs", 1000, 4, 0, 1, 0, -1, 0.6f, 0.4f, 1.3f, 3, 5, false, false, SAME},
    {"greedy with ties", 3000, 4, 0, 1, 0, -1, 0, 0, 1, 0, 2, false, true, SAME},
    {"temperature, processed logprobs", 50257, 6, 0.8f, 1, 0, -1, 0, 0, 1, 0, 20, true, false, SAME},
    {"min-p", 1000, 6, 1, 1, 0.05f, -1, 0, 0, 1, 0, -1, false, false, SAME},
    {"temperature, vocab 2", 2, 8, 1.5f, 1, 0, -1, 0, 0, 1, 0, 1, false, false, SAME},
    {"top-k 1", 5000, 64, 1, 1, 0, 1, 0, 0, 1, 0, -1, false, false, DIST},
    {"top-k 50 with ties", 3001, 1024, 1, 1, 0, 50, 0, 0, 1, 0, 4, false, true, DIST},
    {"top-p 0.9", 600, 1024, 0.7f, 0.9f, 0, -1, 0, 0, 1, 0, -1, false, false, DIST},
    {"top-p 0.5 + min-p, ties", 777, 1024, 1, 0.5f, 0.01f, -1, 0, 0, 1, 0, -1, false, true, DIST},
    {"all filters + penalties + bias", 8000, 1024, 1.3f, 0.8f, 0.02f, 40, 0.5f, 0.3f, 1.2f, 4, 3, false, false, DIST},
    {"tiny vocab, top-k 3", 7, 256, 1, 1, 0, 3, 0, 0, 1, 0, 20, true, false, DIST},
};

static SamplingParams case_params(const SampleCase *c, int32_t *bias_ids, float *bias_vals) {
    SamplingParams p = sampling_params_default();
    p.temperature = c->temperature, p.top_p = c->top_p, p.min_p = c->min_p, p.top_k = c->top_k;
    p.presence_penalty = c->presence, p.frequency_penalty = c->frequency, p.repetition_penalty = c->repetition;
    p.n_logit_bias = c->n_bias, p.logit_bias_ids = bias_ids, p.logit_bias_vals = bias_vals;
    p.logprobs = c->logprobs;
    p.logprobs_mode = c->processed ? SAMPLER_LOGPROBS_PROCESSED : SAMPLER_LOGPROBS_RAW;
    p.seed = 42, p.has_seed = true;
    return p;
}

static double log_sum_exp(const float *x, int n) {
    double mx = -INFINITY, z = 0;
    for (int i = 0; i < n; i++) mx = fmax(mx, x[i]);
    for (int i = 0; i < n; i++) z += exp((double)x[i] - mx);
    return mx + log(z);
}

static void check_logprobs(const SampleCase *c, int r, const KSampleOut *g, const SampleLogprobs *want,
                           const float *raw, const float *processed) {
    EXPECT_EQ_INT(g->n_top, want->n_top);
    for (int i = 0; i < want->n_top && i < g->n_top; i++) {
        EXPECT(g->top_ids[i] == want->top_ids[i], "%s row %d: top %d is %d, twin %d", c->name, r, i, g->top_ids[i],
               want->top_ids[i]);
        EXPECT_NEAR(g->top_logprobs[i], want->top_logprobs[i], 1e-4);
    }
    const float *src = c->processed ? processed : raw;
    double lp = (double)src[g->token] - log_sum_exp(src, c->vocab);
    EXPECT(fabs(g->logprob - lp) <= 1e-4, "%s row %d: logprob %g, want %g", c->name, r, g->logprob, lp);
}

static void sample_case_run(const SampleCase *c) {
    const int V = c->vocab, N = c->n_rows;
    int32_t bias_ids[8];
    float bias_vals[8];
    for (int i = 0; i < c->n_bias; i++) {
        bias_ids[i] = i == c->n_bias - 1 && i > 0 ? bias_ids[0] : gt_int(V); // the last repeats the first
        bias_vals[i] = gt_float(-5, 5);
    }
    SamplingParams p = case_params(c, bias_ids, bias_vals);
    char err[ERR_MAX];
    ASSERT(sampling_params_validate(&p, V, err) == SL_OK, "%s", err);
    int32_t prompt[25], outputs[12];
    for (int i = 0; i < 25; i++) prompt[i] = gt_int(V);
    for (int i = 0; i < 12; i++) outputs[i] = i % 3 ? gt_int(V) : prompt[i]; // some in both
    SamplerState st;
    sampler_state_init(&st, &p, V, prompt, 25, 12);
    for (int i = 0; i < 12; i++) sampler_state_accept(&st, outputs[i]);
    SamplerScratch sc;
    sampler_scratch_init(&sc, V);

    // Rows: distinct logits (SAME) or one row N times (DIST), each with its own copy of the
    // bias and penalty entries (the kernel writes their `orig`).
    size_t n = (size_t)N * V;
    float *raw = xmalloc(n * sizeof(float));
    for (int r = 0; r < N; r++) {
        float *x = raw + (size_t)r * V;
        if (r > 0 && c->check == DIST) {
            memcpy(x, raw, V * sizeof(float));
            continue;
        }
        gt_fill(x, V, -6, 6);
        if (c->ties)
            for (int i = 0; i < V; i++) x[i] = roundf(x[i] * 2) / 2 + (x[i] > 0 ? 0.25f : -0.25f); // never 0
    }
    int n_pen = st.track_output ? st.n_entries : 0;
    KSampleRow *rows = xcalloc(N, sizeof(KSampleRow));
    KSampleBias *bias = xcalloc((size_t)N * c->n_bias + 1, sizeof(KSampleBias));
    KSamplePenalty *pen = xcalloc((size_t)N * n_pen + 1, sizeof(KSamplePenalty));
    double *u = xmalloc(N * sizeof(double));
    SamplerRng ahead = st.rng; // draws the u's the twin's sampler_sample calls will draw (SAME)
    for (int r = 0; r < N; r++) {
        u[r] = c->check == DIST ? (r + 0.5) / N : sampler_rng_uniform(&ahead);
        rows[r] = (KSampleRow){p.temperature, p.top_p, p.min_p, p.top_k, p.presence_penalty, p.frequency_penalty,
                               p.repetition_penalty, p.logprobs, c->processed, r * c->n_bias, c->n_bias, r * n_pen,
                               n_pen, u[r]};
        for (int i = 0; i < c->n_bias; i++) bias[r * c->n_bias + i] = (KSampleBias){bias_ids[i], bias_vals[i], NAN};
        for (int i = 0; i < n_pen; i++)
            pen[(size_t)r * n_pen + i] = (KSamplePenalty){st.entries[i].token, st.entries[i].count, NAN};
    }

    float *d_logits = gt_upload(raw, n * sizeof(float));
    KSampleRow *d_rows = gt_upload(rows, N * sizeof(KSampleRow));
    KSampleBias *d_bias = gt_upload(bias, ((size_t)N * c->n_bias + 1) * sizeof(KSampleBias));
    KSamplePenalty *d_pen = gt_upload(pen, ((size_t)N * n_pen + 1) * sizeof(KSamplePenalty));
    KSampleOut *d_out = gt_dev(N * sizeof(KSampleOut));
    k_sample_cuda(d_out, d_logits, N, V, d_rows, d_bias, d_pen, gt_stream);
    KSampleOut *got = gt_download(d_out, N * sizeof(KSampleOut));
    float *g_logits = gt_download(d_logits, n * sizeof(float));

    // The twin, row by row (SAME), or its survivor set once (DIST).
    float *processed = xmalloc(n * sizeof(float));
    memcpy(processed, raw, n * sizeof(float));
    SampleLogprobs lp;
    int rows_twin = c->check == SAME ? N : 1;
    for (int r = 0; r < rows_twin; r++) {
        float *x = processed + (size_t)r * V;
        int32_t tok = sampler_sample(&p, &st, x, V, &sc, &lp); // leaves x processed
        if (c->check == SAME) EXPECT(got[r].token == tok, "%s row %d: token %d, twin %d", c->name, r, got[r].token, tok);
        if (c->logprobs >= 0) check_logprobs(c, r, &got[r], &lp, raw + (size_t)r * V, x);
    }
    for (int r = rows_twin; r < N; r++) memcpy(processed + (size_t)r * V, processed, V * sizeof(float));
    EXPECT_REL(g_logits, processed, n, 1e-6, "logits after bias and penalties");

    if (c->check == DIST) {
        int n_surv = sampler_filter(&p, processed, V, &sc);
        double z = 0;
        for (int i = 0; i < n_surv; i++) z += sc.cand[i].val;
        int *count = xcalloc(V, sizeof(int));
        int outside = 0;
        for (int r = 0; r < N; r++) {
            if (got[r].token < 0 || got[r].token >= V) {
                outside++;
                continue;
            }
            count[got[r].token]++;
        }
        double worst = 0;
        int worst_id = -1;
        for (int i = 0; i < n_surv; i++) {
            int id = sc.cand[i].id;
            double dev = fabs(count[id] - N * sc.cand[i].val / z);
            if (dev > worst) worst = dev, worst_id = id;
            count[id] = 0; // what is left afterwards was drawn outside the survivors
        }
        for (int i = 0; i < V; i++) outside += count[i];
        EXPECT(outside == 0, "%s: %d draws outside the twin's %d survivors", c->name, outside, n_surv);
        EXPECT(worst <= 1.01, "%s: token %d drawn %.2f times off N·p (%d survivors)", c->name, worst_id, worst, n_surv);
        free(count);
    }
    kdev_free(d_logits), kdev_free(d_rows), kdev_free(d_bias), kdev_free(d_pen), kdev_free(d_out);
    free(got), free(g_logits), free(processed), free(raw), free(rows), free(bias), free(pen), free(u);
    sampler_scratch_free(&sc);
    sampler_state_free(&st);
}

static void test_sample(void) {
    for (size_t ci = 0; ci < ARRAY_LEN(CASES_TABLE); ci++) {
        gt_seed(900 + ci);
        sample_case_run(&CASES_TABLE[ci]);
    }
}

// A seeded request gives the same tokens on both backends when the draws are id-ordered:
// several steps of one request, accepting each token, with penalties that change every step.
static void test_sample_seeded_stream(void) {
    gt_seed(950);
    const int V = 2000, steps = 16;
    SamplingParams p = sampling_params_default();
    p.temperature = 0.9f, p.min_p = 0.01f, p.frequency_penalty = 0.7f, p.seed = 7, p.has_seed = true;
    int32_t prompt[8];
    for (int i = 0; i < 8; i++) prompt[i] = gt_int(V);
    SamplerState cpu, gpu;
    sampler_state_init(&cpu, &p, V, prompt, 8, steps);
    sampler_state_init(&gpu, &p, V, prompt, 8, steps); // the runner's host-side state for the GPU path
    SamplerScratch sc;
    sampler_scratch_init(&sc, V);
    float *x = xmalloc(V * sizeof(float)), *xc = xmalloc(V * sizeof(float));
    float *d_x = kdev_malloc(V * sizeof(float));
    KSampleRow *d_row = kdev_malloc(sizeof(KSampleRow));
    KSamplePenalty *pen = xmalloc((steps + 1) * sizeof(KSamplePenalty));
    KSamplePenalty *d_pen = kdev_malloc((steps + 1) * sizeof(KSamplePenalty));
    KSampleOut *d_out = gt_dev(sizeof(KSampleOut));
    for (int s = 0; s < steps; s++) {
        gt_fill(x, V, -3, 3);
        memcpy(xc, x, V * sizeof(float));
        int32_t want = sampler_sample(&p, &cpu, xc, V, &sc, NULL);
        int n_pen = gpu.n_entries;
        for (int i = 0; i < n_pen; i++) pen[i] = (KSamplePenalty){gpu.entries[i].token, gpu.entries[i].count, NAN};
        KSampleRow row = {p.temperature, p.top_p, p.min_p, p.top_k, p.presence_penalty, p.frequency_penalty,
                          p.repetition_penalty, -1, 0, 0, 0, 0, n_pen, sampler_rng_uniform(&gpu.rng)};
        kdev_memcpy_h2d(d_x, x, V * sizeof(float), NULL);
        kdev_memcpy_h2d(d_row, &row, sizeof(row), NULL);
        kdev_memcpy_h2d(d_pen, pen, (n_pen + 1) * sizeof(KSamplePenalty), NULL);
        k_sample_cuda(d_out, d_x, 1, V, d_row, NULL, d_pen, gt_stream);
        KSampleOut *got = gt_download(d_out, sizeof(KSampleOut));
        EXPECT(got->token == want, "step %d: token %d, twin %d", s, got->token, want);
        sampler_state_accept(&cpu, want);
        sampler_state_accept(&gpu, got->token >= 0 && got->token < V ? got->token : 0);
        free(got);
    }
    kdev_free(d_x), kdev_free(d_row), kdev_free(d_pen), kdev_free(d_out);
    free(x), free(xc), free(pen);
    sampler_scratch_free(&sc);
    sampler_state_free(&cpu), sampler_state_free(&gpu);
}

#define CASES(X)                                                                               \
    X(test_sample)                                                                             \
    X(test_sample_seeded_stream)

GT_MAIN(CASES, 64, 64)
