// bench_kernels.c: k_matmul on the default model's shapes (SmolLM2-135M: Q4_1 projections, the
// Q8_0 tied LM head) at 1 and 512 token rows, and k_attention with F16 vs F32 KV caches (one
// layer's, in cache) and with 30 layers' F16 caches from memory (1 and 5 rows at a 1,900-token
// context: a decode step and a verification step of speculative decoding); the median of several
// runs. Random weights: speed does not depend on the values.
//
//   gcc -std=gnu11 -O2 -march=native -fopenmp -I. common/common.c kernels/cpu/*.c
//       bench/bench_kernels.c -o build/bench_kernels -lm   (one line)
//   nice build/bench_kernels [threads] [act]
//
// "act" runs only the comparison of 16- and 8-bit activations (--cpu-activations; for Q5_0, Q5_1,
// IQ4_NL and the K-quants int16 means matmul.c's dequantized float path): each shape at
// 1 and 64 token rows, int16 and every 8-bit path this CPU has timed in turn within each
// repetition (interleaved, so load on a shared machine hits them alike), medians and minima.
// With 1 thread it times the thread's CPU time (CLOCK_THREAD_CPUTIME_ID: the time it actually
// ran, so a busy machine's preemptions do not count; its cache interference still does).
//
// The last lines estimate whole-model matmul time per token (30 layers + LM head for decode,
// 30 layers for a 512-token prefill), the bulk of a forward pass.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench.h"
#include "common/common.h"
#include "kernels/kernels.h"

#define BENCH_REPS 9

static uint64_t bench_rng = 88172645463325252ull;
static uint8_t rand_byte(void) {
    bench_rng ^= bench_rng << 13, bench_rng ^= bench_rng >> 7, bench_rng ^= bench_rng << 17;
    return (uint8_t)bench_rng;
}


// Random blocks with small fp16 scales in each block's scale fields (the first 2 bytes, Q4_1's
// min after them; the K-quants' d / dmin where their layouts keep them).
static void *bench_weights(QType t, int rows, int cols) {
    size_t bytes = (size_t)rows * qtype_row_size(t, cols), bb = qtype_block_bytes(t);
    uint8_t *w = xmalloc_aligned(bytes);
    for (size_t i = 0; i < bytes; i++) w[i] = rand_byte();
    int od = t == QTYPE_Q2_K ? 80 : t == QTYPE_Q3_K ? 108 : t == QTYPE_Q6_K ? 208 : 0;
    int om = t == QTYPE_Q4_1 || t == QTYPE_Q5_1 || t == QTYPE_Q4_K || t == QTYPE_Q5_K ? 2 : t == QTYPE_Q2_K ? 82 : -1;
    for (size_t i = 0; i < bytes; i += bb) {
        uint16_t d = f32_to_fp16(0.01f), m = f32_to_fp16(-0.05f);
        memcpy(w + i + od, &d, 2);
        if (om >= 0) memcpy(w + i + om, &m, 2);
    }
    return w;
}

typedef struct {
    const char *name;
    QType type;
    int rows, cols, per_layer; // per_layer: how many of these a layer runs (0: once per token)
} Shape;

static const Shape shapes[] = {
    {"wq/wo 576x576", QTYPE_Q4_1, 576, 576, 2},
    {"wk/wv 192x576", QTYPE_Q4_1, 192, 576, 2},
    {"gate/up 1536x576", QTYPE_Q4_1, 1536, 576, 2},
    {"down 576x1536", QTYPE_Q4_1, 576, 1536, 1},
    {"lm_head 49152x576", QTYPE_Q8_0, 49152, 576, 0},
};

// Median seconds of one k_matmul call (*best: the fastest).
static double time_matmul(float *out, const float *x, const QMatrix *w, int n, double *best) {
    double t[BENCH_REPS];
    k_matmul(out, x, w, n); // warm up
    for (int r = 0; r < BENCH_REPS; r++) {
        double t0 = time_now_s();
        k_matmul(out, x, w, n);
        t[r] = time_now_s() - t0;
    }
    qsort(t, BENCH_REPS, sizeof(double), bench_cmp_double);
    *best = t[0];
    return t[BENCH_REPS / 2];
}

static void bench_attention(int n_threads, KVType dt, int n_ctx, int n_rows, int layers) {
    const int n_heads = 9, nkv = 3, hd = 64, bs = 16, nblocks = (n_ctx + bs - 1) / bs;
    size_t es = dt == KV_F16 ? 2 : 4, n = (size_t)nblocks * bs * nkv * hd;
    KVLayer c = {xmalloc_aligned(n * es), xmalloc_aligned(n * es), nblocks, bs, nkv, hd, dt}, cl[30];
    CHECK(layers >= 1 && layers <= 30);
    for (size_t i = 0; i < n; i++) {
        float a = (rand_byte() - 128) / 64.0f;
        if (dt == KV_F16) ((uint16_t *)c.k)[i] = ((uint16_t *)c.v)[i] = f32_to_fp16(a);
        else ((float *)c.k)[i] = ((float *)c.v)[i] = a;
    }
    cl[0] = c;
    for (int l = 1; l < layers; l++) { // distinct copies: the layers' caches do not fit in cache together
        cl[l] = c, cl[l].k = xmalloc_aligned(n * es), cl[l].v = xmalloc_aligned(n * es);
        memcpy(cl[l].k, c.k, n * es), memcpy(cl[l].v, c.v, n * es);
    }
    int *pos = xmalloc(sizeof(int) * n_rows), *bt = xmalloc(sizeof(int) * nblocks), qs[2] = {0, n_rows};
    for (int i = 0; i < n_rows; i++) pos[i] = n_ctx - n_rows + i;
    for (int i = 0; i < nblocks; i++) bt[i] = i;
    Batch b = {.n_tokens = n_rows, .n_seqs = 1, .positions = pos, .query_start = qs, .context_lens = &n_ctx,
               .block_tables = bt, .max_blocks_per_seq = nblocks};
    float *q = xmalloc(sizeof(float) * n_rows * n_heads * hd), *out = xmalloc(sizeof(float) * n_rows * n_heads * hd);
    for (int i = 0; i < n_rows * n_heads * hd; i++) q[i] = (rand_byte() - 128) / 128.0f;
    double t[BENCH_REPS];
    k_attention(out, q, &c, &b, n_heads, &(AttnOpt){.scale = 0.125f});
    for (int r = 0; r < BENCH_REPS; r++) {
        double t0 = time_now_s();
        // one layer's cache in cache (compute), or 30 layers' from memory (a real step's decode)
        for (int l = 0; l < layers; l++) k_attention(out, q, &cl[l], &b, n_heads, &(AttnOpt){.scale = 0.125f});
        t[r] = time_now_s() - t0;
    }
    qsort(t, BENCH_REPS, sizeof(double), bench_cmp_double);
    if (layers == 1)
        printf("attention %s ctx %4d rows %3d  %8.3f ms/layer (min %.3f)  x30 layers: %.2f ms\n",
               dt == KV_F16 ? "F16" : "F32", n_ctx, n_rows, t[BENCH_REPS / 2] * 1e3, t[0] * 1e3,
               t[BENCH_REPS / 2] * 30e3);
    else
        printf("attention %s ctx %4d rows %3d  30 layers from memory: %.2f ms (min %.2f)\n",
               dt == KV_F16 ? "F16" : "F32", n_ctx, n_rows, t[BENCH_REPS / 2] * 1e3, t[0] * 1e3);
    (void)n_threads;
    for (int l = 1; l < layers; l++) free(cl[l].k), free(cl[l].v);
    free(c.k), free(c.v), free(pos), free(bt), free(q), free(out);
}

// Every matmul of one decode step over 30 layers of distinct weights plus the LM head (~96 MB,
// three times the L3 cache): the weights stream from memory as they do in real decode.
static void bench_decode_from_memory(float *out, const float *x) {
    enum { LAYERS = 30 };
    QMatrix ws[LAYERS * 7 + 1];
    int n = 0;
    for (int l = 0; l < LAYERS; l++)
        for (size_t i = 0; i < ARRAY_LEN(shapes); i++)
            for (int k = 0; k < shapes[i].per_layer; k++) {
                const Shape *s = &shapes[i];
                ws[n++] = (QMatrix){s->type, s->rows, s->cols, bench_weights(s->type, s->rows, s->cols), NULL};
            }
    const Shape *head = &shapes[ARRAY_LEN(shapes) - 1];
    ws[n++] = (QMatrix){head->type, head->rows, head->cols, bench_weights(head->type, head->rows, head->cols), NULL};
    double t[BENCH_REPS];
    for (int r = 0; r < BENCH_REPS; r++) {
        double t0 = time_now_s();
        for (int i = 0; i < n; i++) k_matmul(out, x, &ws[i], 1);
        t[r] = time_now_s() - t0;
    }
    qsort(t, BENCH_REPS, sizeof(double), bench_cmp_double);
    double bytes = 0;
    for (int i = 0; i < n; i++) bytes += (double)ws[i].rows * qtype_row_size(ws[i].type, ws[i].cols);
    printf("model matmuls, decode, weights from memory (%.0f MB): %.2f ms/token (min %.2f), %.1f GB/s\n",
           bytes / 1e6, t[BENCH_REPS / 2] * 1e3, t[0] * 1e3, bytes / t[BENCH_REPS / 2] * 1e-9);
    for (int i = 0; i < n; i++) free((void *)ws[i].data);
}

#define ACT_REPS 15

static double thread_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}
#define ACT_MAX 6 // int16 + at most 5 int8 paths

static void bench_activations(int n_threads, float *out, const float *x) {
    double (*clock)(void) = n_threads == 1 ? thread_cpu_s : time_now_s;
    static const Shape act_shapes[] = {
        {"wq/wo 576x576", QTYPE_Q4_1, 576, 576, 2},   {"gate/up 1536x576", QTYPE_Q4_1, 1536, 576, 2},
        {"down 576x1536", QTYPE_Q4_1, 576, 1536, 1},  {"Q4_0 1536x576", QTYPE_Q4_0, 1536, 576, 1},
        {"Q8_0 1536x576", QTYPE_Q8_0, 1536, 576, 1},  {"Q5_0 1536x576", QTYPE_Q5_0, 1536, 576, 1},
        {"Q5_1 1536x576", QTYPE_Q5_1, 1536, 576, 1},  {"IQ4_NL 1536x576", QTYPE_IQ4_NL, 1536, 576, 1},
        {"Q4_K 576x1536", QTYPE_Q4_K, 576, 1536, 1},
        {"Q5_K 576x1536", QTYPE_Q5_K, 576, 1536, 1},  {"Q6_K 576x1536", QTYPE_Q6_K, 576, 1536, 1},
        {"Q3_K 576x1536", QTYPE_Q3_K, 576, 1536, 1},  {"Q2_K 576x1536", QTYPE_Q2_K, 576, 1536, 1},
    };
    const char *best = k_int8_path(), *names[ACT_MAX] = {"int16"};
    int n_var = 1;
    for (int i = 0; k_int8_path_name(i) && n_var < ACT_MAX; i++)
        if (k_int8_path_set(k_int8_path_name(i))) names[n_var++] = k_int8_path_name(i);
    printf("activations: int16 vs int8 paths (picked for this CPU: %s), %d thread(s), %s, GFLOP/s median/best of %d "
           "interleaved runs\n", best, n_threads, n_threads == 1 ? "thread CPU time" : "wall time", ACT_REPS);
    for (size_t i = 0; i < ARRAY_LEN(act_shapes); i++) {
        const Shape *s = &act_shapes[i];
        QMatrix w = {s->type, s->rows, s->cols, bench_weights(s->type, s->rows, s->cols), NULL}, wp = w;
        void *pack = NULL; // "amx" reads the weights repacked, as the model loader leaves them
        k_set_activations(K_ACT_INT8);
        if (k_int8_path_set("amx") && k_pack_bytes(&wp)) k_pack(&wp, pack = xmalloc_aligned(k_pack_bytes(&wp)));
        static const int ns[] = {1, 64};
        for (int k = 0; k < 2; k++) {
            double t[ACT_MAX][ACT_REPS];
            for (int r = -1; r < ACT_REPS; r++) // r = -1: warm-up
                for (int v = 0; v < n_var; v++) {
                    k_set_activations(v ? K_ACT_INT8 : K_ACT_INT16);
                    if (v) k_int8_path_set(names[v]);
                    double t0 = clock();
                    k_matmul(out, x, strcmp(names[v], "amx") ? &w : &wp, ns[k]);
                    if (r >= 0) t[v][r] = clock() - t0;
                }
            printf("%-18s %s n=%2d ", s->name, qtype_name(s->type), ns[k]);
            double base = 0;
            for (int v = 0; v < n_var; v++) {
                qsort(t[v], ACT_REPS, sizeof(double), bench_cmp_double);
                double sec = t[v][ACT_REPS / 2], flop = 2.0 * s->rows * s->cols * ns[k];
                if (v == 0) base = sec;
                printf(" %s %5.1f/%5.1f", names[v], flop / sec * 1e-9, flop / t[v][0] * 1e-9);
                if (v) printf(" (%.2fx)", base / sec);
            }
            printf("\n");
        }
        free((void *)w.data), free(pack);
    }
    k_set_activations(K_ACT_INT16);
    k_int8_path_set(best);
}

int main(int argc, char **argv) {
    int n_threads = argc > 1 ? atoi(argv[1]) : 2;
    const int max_tokens = 512;
    k_init(n_threads, max_tokens, 1536);
    float *x = xmalloc_aligned(sizeof(float) * max_tokens * 1536);
    float *out = xmalloc_aligned(sizeof(float) * (size_t)max_tokens * 49152);
    for (int i = 0; i < max_tokens * 1536; i++) x[i] = (rand_byte() - 128) / 64.0f;
    if (argc > 2 && !strcmp(argv[2], "act")) {
        bench_activations(n_threads, out, x);
        free(x), free(out);
        k_free();
        return 0;
    }
    printf("k_matmul, %d threads, median of %d\n", n_threads, BENCH_REPS);
    double decode_s = 0, prefill_s = 0;
    for (size_t i = 0; i < ARRAY_LEN(shapes); i++) {
        const Shape *s = &shapes[i];
        QMatrix w = {s->type, s->rows, s->cols, bench_weights(s->type, s->rows, s->cols), NULL};
        double wbytes = (double)s->rows * qtype_row_size(s->type, s->cols);
        static const int ns[] = {1, 512};
        for (int k = 0; k < 2; k++) {
            int n = ns[k];
            if (s->per_layer == 0 && n > 1) n = 16; // the LM head only sees the sampled rows
            double best, sec = time_matmul(out, x, &w, n, &best);
            double flops = 2.0 * s->rows * s->cols * n;
            printf("%-18s %s n=%3d  %8.1f us (min %8.1f)  %7.1f GFLOP/s  %6.1f GB/s (weights)\n", s->name,
                   qtype_name(s->type), n, sec * 1e6, best * 1e6, flops / sec * 1e-9, wbytes / sec * 1e-9);
            if (n == 1) decode_s += sec * (s->per_layer ? 30 * s->per_layer : 1);
            else if (s->per_layer) prefill_s += sec * 30 * s->per_layer;
        }
        free((void *)w.data);
    }
    printf("model matmuls, decode, weights in cache: %.2f ms/token (%.0f tok/s bound)\n", decode_s * 1e3,
           1.0 / decode_s);
    printf("model matmuls, prefill 512: %.1f ms (%.0f tok/s bound)\n", prefill_s * 1e3, 512 / prefill_s);
    bench_decode_from_memory(out, x);
    for (int dt = 0; dt < 2; dt++) {
        KVType t = dt ? KV_F32 : KV_F16;
        bench_attention(n_threads, t, 512, 1, 1);
        bench_attention(n_threads, t, 2048, 1, 1);
        bench_attention(n_threads, t, 512, 512, 1);
    }
    // decode and a verification step of 4 proposals at the speculative bench's rewrite context
    bench_attention(n_threads, KV_F16, 1900, 1, 30);
    bench_attention(n_threads, KV_F16, 1900, 5, 30);
    free(x), free(out);
    k_free();
    return 0;
}
