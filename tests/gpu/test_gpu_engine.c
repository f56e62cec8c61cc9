// test_gpu_engine.c: the whole forward on the GPU (engine/gpu_runner.c) against the CPU backend
// (model_forward), on the golden prompts (tests/data/golden/exact.txt): all 12 prefilled in one
// step, then N_DECODE_MAX (24) decode steps of 12 rows (a CUDA graph of 16, so 4 padding rows), both
// backends fed the CPU's greedy tokens (teacher forcing) so every step compares the same inputs:
//  - every sampled row's logits within LOGIT_TOL relative (‖gpu − cpu‖ / ‖cpu‖), and within
//    LOGIT_MEAN_TOL in the mean over rows: bf16 weights, bf16 activations into the matmuls and a
//    bf16 K/V cache against the CPU's exact weights and f32 cache. Measured with every kernel
//    emulated on the CPU (tests/gpu/emu: the same bf16 x bf16 -> f32 arithmetic as cuBLAS), on
//    3 prompts x 7 steps: default model mean 9.4e-3, max 3.7e-2 (30 layers); tiny dummy 7.0e-3,
//    7.8e-3 (4 layers);
//  - the GPU's greedy token equals the CPU's wherever the CPU's top-1/top-2 margin is at least
//    TIE_MARGIN, and in at least MIN_EQUAL_FRAC of the prompts at every step (then the free-running
//    greedy continuations are identical, since the inputs are);
//  - with CUDA graphs and with --enforce-eager, the same greedy tokens;
//  - batch invariance: prompt 0 decoded alone (graph of size 1) gives the greedy tokens it gets
//    within the batch;
//  - copy-on-write block copies (gpu_runner_copy_block) carry the cache bit for bit;
//  - a memory plan that cannot fit is refused with a suggested --max-model-len.
// Models: the default GGUF (Q4_1/Q8_0 dequantized to bf16), and dummy-weight configs from
// config/models (Llama with GQA, Qwen2 with QKV biases) when present. Without a device: SKIP.
// GPU_TEST_QUICK=1: 3 prompts (a graph of 4, one padding row), 6 decode steps, the tiny dummy
// model only unless GPU_TEST_MODELS names others ("default tiny qwen2.5"): for a run where
// every kernel is emulated on the CPU.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "engine/gpu_runner.h"
#include "engine/kv_cache.h"
#include "engine/model/model.h"
#include "engine/model/weights.h"
#include "tests/unit/test.h"

#define N_DECODE_MAX 24
#define MAX_PROMPTS 16
#define BLOCK 16
#define MAX_LEN 512
#define LOGIT_TOL 6e-2
#define LOGIT_MEAN_TOL 2e-2
#define TIE_MARGIN 0.25f
#define MIN_EQUAL_FRAC 0.8

typedef struct {
    int n;
    int *ids;
} Prompt;

static Prompt prompts[MAX_PROMPTS];
static int n_prompts;
static int n_decode = N_DECODE_MAX;
static bool quick;

static void prompts_load(void) {
    char err[ERR_MAX];
    char *text = file_read_all(TEST_DATA_DIR "/golden/exact.txt", NULL, err);
    CHECK(text, "%s", err);
    int max_prompts = quick ? 3 : MAX_PROMPTS;
    for (char *line = strtok(text, "\n"); line && n_prompts < max_prompts; line = strtok(NULL, "\n")) {
        if (strncmp(line, "tokens ", 7) != 0) continue;
        Prompt *p = &prompts[n_prompts++];
        p->ids = xmalloc(sizeof(int) * MAX_LEN);
        char *s = line + 7, *end;
        for (long v; p->n < MAX_LEN - N_DECODE_MAX - 1 && (v = strtol(s, &end, 10), end != s); s = end) p->ids[p->n++] = (int)v;
    }
    free(text);
}

// ---- one backend over a set of sequences with fixed blocks: sequence i owns blocks
// [i * SEQ_BLOCKS, (i + 1) * SEQ_BLOCKS)
#define SEQ_BLOCKS (MAX_LEN / BLOCK)

typedef struct {
    Model *m;   // CPU, or
    GpuRunner *g;
    KVCache kv; // CPU's
} Backend;

static void backend_step(Backend *be, const Batch *b, float *logits) {
    if (be->g) gpu_runner_forward(be->g, b, logits);
    else model_forward(be->m, be->kv.layers, b, logits);
}

typedef struct {
    int tokens[MAX_PROMPTS][MAX_LEN];
    int len[MAX_PROMPTS];
} Seqs;

static int argmax(const float *x, int n, float *margin) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    float second = -INFINITY;
    for (int i = 0; i < n; i++)
        if (i != best && x[i] > second) second = x[i];
    if (margin) *margin = x[best] - second;
    return best;
}

static double rel_err(const float *a, const float *ref, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        double d = (double)a[i] - ref[i];
        num += d * d, den += (double)ref[i] * ref[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

// Runs step `step` (0: the prompts' prefill; then one decode row each) of sequences `which`
// on both backends, compares, and appends the CPU's greedy token to each sequence.
typedef struct {
    double max_err, sum_err;
    int rows, disagree, disagree_at_tie;
    bool prompt_equal[MAX_PROMPTS];
    int gpu_tokens[MAX_PROMPTS][N_DECODE_MAX + 1];
} Compare;

static void run_step(Backend *cpu, Backend *gpu, Seqs *s, const int *which, int n_which, int step, int vocab,
                     Compare *cmp) {
    BatchBuf bb;
    batch_buf_init(&bb, MAX_PROMPTS * MAX_LEN, MAX_PROMPTS, SEQ_BLOCKS);
    int blocks[MAX_PROMPTS][SEQ_BLOCKS];
    for (int w = 0; w < n_which; w++) {
        int p = which[w];
        for (int i = 0; i < SEQ_BLOCKS; i++) blocks[p][i] = p * SEQ_BLOCKS + i;
        int pos0 = step == 0 ? 0 : s->len[p] - 1, n = step == 0 ? s->len[p] : 1;
        batch_buf_add(&bb, blocks[p], SEQ_BLOCKS, BLOCK, pos0, s->tokens[p] + pos0, n, 1);
    }
    float *lc = xmalloc(sizeof(float) * n_which * vocab), *lg = xmalloc(sizeof(float) * n_which * vocab);
    backend_step(cpu, &bb.b, lc);
    backend_step(gpu, &bb.b, lg);
    for (int w = 0; w < n_which; w++) {
        int p = which[w];
        float margin;
        int tc = argmax(lc + (size_t)w * vocab, vocab, &margin), tg = argmax(lg + (size_t)w * vocab, vocab, NULL);
        double e = rel_err(lg + (size_t)w * vocab, lc + (size_t)w * vocab, vocab);
        cmp->max_err = fmax(cmp->max_err, e), cmp->sum_err += e, cmp->rows++;
        EXPECT(e <= LOGIT_TOL, "prompt %d step %d: logits relative error %.3g", p, step, e);
        if (tg != tc) {
            cmp->disagree++, cmp->prompt_equal[p] = false;
            if (margin < TIE_MARGIN) cmp->disagree_at_tie++;
            else EXPECT(false, "prompt %d step %d: GPU %d, CPU %d with a margin of %.3f", p, step, tg, tc, margin);
        }
        cmp->gpu_tokens[p][step] = tg;
        s->tokens[p][s->len[p]++] = tc;
    }
    free(lc), free(lg);
    batch_buf_free(&bb);
}

// ---- one model

typedef struct {
    const char *name, *path;
    LoadFormat fmt;
} ModelCase;

static GpuRunner *gpu_create(const WeightSource *src, bool eager, int max_model_len, char *err) {
    GpuRunnerConfig cfg = {.max_num_batched_tokens = MAX_PROMPTS * MAX_LEN, .max_num_seqs = MAX_PROMPTS,
                           .max_model_len = max_model_len, .block_size = BLOCK, .gpu_memory_utilization = 0.5,
                           .enforce_eager = eager};
    GpuRunner *g = NULL;
    gpu_runner_create(&g, src, &cfg, err);
    return g;
}

// Prefill + n_decode steps of `which` on both backends; returns the comparison.
static Seqs seqs; // the sequences of the last run_sequences

static void run_sequences(Backend *cpu, Backend *gpu, const int *which, int n_which, int vocab, Compare *cmp) {
    memset(cmp, 0, sizeof *cmp);
    for (int w = 0; w < n_which; w++) {
        int p = which[w];
        memcpy(seqs.tokens[p], prompts[p].ids, sizeof(int) * prompts[p].n);
        seqs.len[p] = prompts[p].n;
        cmp->prompt_equal[p] = true;
    }
    for (int step = 0; step <= n_decode; step++) run_step(cpu, gpu, &seqs, which, n_which, step, vocab, cmp);
}

// Copy-on-write: prompt 0's cached blocks copied to the last sequence's blocks; its next decode
// step through the copies gives bitwise the logits it gives through the originals.
static void check_copy_block(GpuRunner *g, int vocab) {
    int p = 0, q = MAX_PROMPTS - 1, pos = seqs.len[p] - 1; // positions 0..pos-1 are cached
    for (int i = 0; i < (pos + BLOCK - 1) / BLOCK; i++) gpu_runner_copy_block(g, p * SEQ_BLOCKS + i, q * SEQ_BLOCKS + i);
    float *out[2];
    for (int pass = 0; pass < 2; pass++) {
        BatchBuf bb;
        batch_buf_init(&bb, 1, 1, SEQ_BLOCKS);
        int blocks[SEQ_BLOCKS];
        for (int i = 0; i < SEQ_BLOCKS; i++) blocks[i] = (pass ? p : q) * SEQ_BLOCKS + i;
        batch_buf_add(&bb, blocks, SEQ_BLOCKS, BLOCK, pos, &seqs.tokens[p][pos], 1, 1);
        out[pass] = xmalloc(sizeof(float) * vocab);
        gpu_runner_forward(g, &bb.b, out[pass]);
        batch_buf_free(&bb);
    }
    EXPECT(memcmp(out[0], out[1], sizeof(float) * vocab) == 0, "logits through the copied blocks differ");
    free(out[0]), free(out[1]);
}

static void test_model(const ModelCase *mc) {
    char err[ERR_MAX];
    WeightSource src;
    ASSERT(wsrc_open(&src, mc->path, mc->fmt, err) == SL_OK, "%s", err);
    Model m;
    ASSERT(model_load_shard(&m, &src, MAX_PROMPTS * MAX_LEN, 0, 1, NULL, err) == SL_OK, "%s", err);
    const ModelConfig *c = &m.cfg;
    k_init((int)MAX(1, MIN(16, sysconf(_SC_NPROCESSORS_ONLN))), MAX_PROMPTS * MAX_LEN, model_max_cols(&m));
    Backend cpu = {.m = &m};
    kv_cache_init(&cpu.kv, c->n_layers, c->n_kv_heads, c->head_dim, BLOCK, KV_F32, MAX_PROMPTS * SEQ_BLOCKS);
    int all[MAX_PROMPTS];
    for (int p = 0; p < n_prompts; p++) all[p] = p;

    static Compare cmp[2];
    for (int eager = 0; eager < 2; eager++) {
        Backend gpu = {.g = gpu_create(&src, eager, MAX_LEN, err)};
        if (!gpu.g) {
            EXPECT(false, "%s: %s", mc->name, err);
            continue;
        }
        const GpuRunnerStats *st = gpu_runner_stats(gpu.g);
        EXPECT(st->num_blocks >= MAX_PROMPTS * SEQ_BLOCKS, "%d blocks", st->num_blocks);
        EXPECT_EQ_INT(st->n_graphs, eager ? 0 : 5); // 1, 2, 4, 8, 16
        double t0 = time_now_s();
        run_sequences(&cpu, &gpu, all, n_prompts, c->vocab, &cmp[eager]);
        double dt = time_now_s() - t0;
        int equal = 0;
        for (int p = 0; p < n_prompts; p++) equal += cmp[eager].prompt_equal[p];
        printf("%-22s %-6s logits rel. error mean %.2e max %.2e; greedy equal %d/%d prompts, %d tie flips, "
               "%d other; start-up %.2f + %.2f + %.2f s; %.2f s both backends\n",
               mc->name, eager ? "eager" : "graphs", cmp[eager].sum_err / cmp[eager].rows, cmp[eager].max_err, equal,
               n_prompts, cmp[eager].disagree_at_tie, cmp[eager].disagree - cmp[eager].disagree_at_tie,
               st->load_s, st->alloc_s, st->graph_s, dt);
        printf("SUMMARY | %s %s vs CPU | greedy equal %d/%d, logits max rel. err %.1e | start-up %.2f s\n", mc->name,
               eager ? "eager" : "graphs", equal, n_prompts, cmp[eager].max_err, st->load_s + st->alloc_s + st->graph_s);
        EXPECT(equal >= MIN_EQUAL_FRAC * n_prompts, "%s: greedy equal in %d of %d prompts", mc->name, equal, n_prompts);
        EXPECT(cmp[eager].sum_err / cmp[eager].rows <= LOGIT_MEAN_TOL, "%s: mean logits error %.3g", mc->name,
               cmp[eager].sum_err / cmp[eager].rows);

        if (!eager) {
            // batch invariance: prompt 0 alone, a graph of size 1
            static Compare alone;
            int one[1] = {0};
            run_sequences(&cpu, &gpu, one, 1, c->vocab, &alone);
            for (int step = 0; step <= n_decode; step++)
                EXPECT_EQ_INT(alone.gpu_tokens[0][step], cmp[0].gpu_tokens[0][step]);
            check_copy_block(gpu.g, c->vocab);
        }
        gpu_runner_destroy(gpu.g);
    }
    for (int p = 0; p < n_prompts; p++)
        for (int step = 0; step <= n_decode; step++)
            EXPECT(cmp[0].gpu_tokens[p][step] == cmp[1].gpu_tokens[p][step], "prompt %d step %d: graphs %d, eager %d",
                   p, step, cmp[0].gpu_tokens[p][step], cmp[1].gpu_tokens[p][step]);

    // a plan that cannot fit: a context of 16M tokens
    GpuRunner *g = gpu_create(&src, true, 1 << 24, err);
    EXPECT(g == NULL && strstr(err, "--max-model-len"), "expected a refusal, got: %s", g ? "a runner" : err);
    gpu_runner_destroy(g);

    kv_cache_free(&cpu.kv);
    k_free();
    model_free(&m);
    wsrc_close(&src);
}

static const ModelCase cases[] = {
    {"default (Q4_1 GGUF)", TEST_MODEL_PATH, LOAD_GGUF},
    {"tiny-8h4kv (dummy)", TEST_DATA_DIR "/../../config/models/tiny-8h4kv", LOAD_DUMMY},
    {"qwen2.5-0.5b (dummy)", TEST_DATA_DIR "/../../config/models/qwen2.5-0.5b", LOAD_DUMMY},
};

static const ModelCase *current;
static void test_current(void) { test_model(current); }

// GPU_TEST_MODELS: words naming the cases to run (default: all; with GPU_TEST_QUICK, "tiny").
// A case not selected, or whose model is not there, is skipped: not run, not counted.
static bool case_selected(const ModelCase *mc) {
    const char *only = getenv("GPU_TEST_MODELS") ? getenv("GPU_TEST_MODELS") : quick ? "tiny" : NULL;
    char first[32];
    snprintf(first, sizeof first, "%s", mc->name);
    first[strcspn(first, " -")] = 0;
    if (only && !strstr(only, first)) {
        printf("SKIP %s: not in GPU_TEST_MODELS\n", mc->name);
        return false;
    }
    if (access(mc->path, R_OK) != 0) {
        printf("SKIP %s: %s is missing\n", mc->name, mc->path);
        return false;
    }
    return true;
}

int main(void) {
    char why[ERR_MAX];
    if (!gpu_runner_available(why)) {
        printf("SKIP: %s\n", why);
        printf("0 passed, 0 failed, %d skipped\n", (int)ARRAY_LEN(cases));
        return 0;
    }
    quick = getenv("GPU_TEST_QUICK") && atoi(getenv("GPU_TEST_QUICK")) > 0;
    if (quick) n_decode = 6;
    prompts_load();
    CHECK(n_prompts > 0 && n_prompts <= MAX_PROMPTS, "%d golden prompts", n_prompts);
    int skipped = 0;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        current = &cases[i];
        if (!case_selected(current)) {
            skipped++;
            continue;
        }
        TEST_RUN(test_current);
    }
    printf("%d model cases skipped\n", skipped);
    for (int p = 0; p < n_prompts; p++) free(prompts[p].ids);
    return test_summary();
}
