// bench_gpu_ops.c: the memory-bound fused ops against the measured copy bandwidth, and the
// matmul path (bf16 conversion + cuBLAS) against the tensor cores' rate.
//
//  add_rmsnorm: residual += delta, out = rmsnorm(residual) · w; per element 2 reads and 2 writes
//    of f32 (the weight row is negligible). dim 4096.
//  rope_kv_write: Llama-3-8B shapes (32 heads, 8 KV heads, head_dim 128): q and k read and
//    written, v read, k and v written to the cache in bf16.
//  matmul: out = x · Wᵀ for 4096 x 4096 bf16 weights; TFLOP/s including the conversion of x.
//  sample: device sampling of rows of a 128k vocabulary (Llama 3's), greedy / top-p 0.9 /
//    top-k 50 + top-p: latency per call (one thread block per row).
// Inputs rotate over enough copies to leave L2 (50 MB on an H100) where they are small.
// Medians of CUDA-event timings after warm-up. Prints a table, then SUMMARY lines.
#include "bench/gpu/gpu_bench.h"

#define ROT_BYTES ((size_t)256 << 20)

typedef struct {
    KStream *s;
    int n, dim, n_rot;
    float *res, *delta, *out, *w; // n_rot copies of each [n, dim]
} NormCtx;

static void norm_run(void *ctx, int rep) {
    NormCtx *c = ctx;
    size_t off = (size_t)(rep % c->n_rot) * c->n * c->dim;
    k_add_rmsnorm_cuda(c->out + off, c->res + off, c->delta + off, c->w, c->n, c->dim, 1e-5f, c->s);
}

typedef struct {
    KStream *s;
    int n, n_rot, n_heads;
    float *q, *k, *v; // n_rot copies
    Batch b;
    KVLayer cache;
} RopeCtx;

static void rope_run(void *ctx, int rep) {
    RopeCtx *c = ctx;
    size_t r = (size_t)(rep % c->n_rot);
    int hd = c->cache.head_dim, nkv = c->cache.n_kv_heads;
    k_rope_kv_write_cuda(c->q + r * c->n * c->n_heads * hd, c->k + r * c->n * nkv * hd, c->v + r * c->n * nkv * hd,
                         &c->b, &c->cache, c->n_heads, hd, 500000.0f, NULL, ROPE_NEOX, c->s);
}

typedef struct {
    KStream *s;
    KDevMatrix w;
    float *x, *out;
    int n;
} MatmulCtx;

static void matmul_run(void *ctx, int rep) {
    MatmulCtx *c = ctx;
    (void)rep;
    k_matmul_cuda(c->out, c->x, &c->w, c->n, c->s);
}

typedef struct {
    KStream *s;
    int n, vocab;
    float *logits, *work; // the row set, and the copy each call samples (in place)
    KSampleRow *rows;
    KSampleOut *out;
} SampleCtx;

static void sample_run(void *ctx, int rep) {
    SampleCtx *c = ctx;
    (void)rep;
    kdev_memcpy_d2d(c->work, c->logits, (size_t)c->n * c->vocab * sizeof(float), c->s);
    k_sample_cuda(c->out, c->work, c->n, c->vocab, c->rows, NULL, NULL, c->s);
}

static int rotations(double bytes) {
    return (int)MIN(64.0, MAX(1.0, ceil((double)ROT_BYTES / bytes)));
}

int main(void) {
    BENCH_SKIP_WITHOUT_GPU();
    static const int all_tokens[] = {1, 64, 512, 4096, 16384}, quick_tokens[] = {1, 64};
    const int *tokens = bench_quick ? quick_tokens : all_tokens;
    int n_tok = bench_quick ? ARRAY_LEN(quick_tokens) : ARRAY_LEN(all_tokens);
    const int mm = bench_quick ? 256 : 4096; // the matmul's size
    KStream *s = kstream_create(mm, mm);
    double copy_bw = bench_copy_bandwidth(s);
    printf("device-to-device copy: %.0f GB/s (read + write)\n", copy_bw / 1e9);

    printf("\nadd_rmsnorm, dim 4096\n%7s %10s %9s %8s\n", "tokens", "time us", "GB/s", "of copy");
    for (int ti = 0; ti < n_tok; ti++) {
        int n = tokens[ti], dim = 4096;
        double bytes = 4.0 * n * dim * 4;
        NormCtx c = {s, n, dim, rotations(bytes), NULL, NULL, NULL, NULL};
        size_t all = (size_t)c.n_rot * n * dim;
        c.res = bench_dev_random(all, -2, 2, 11), c.delta = bench_dev_random(all, -1, 1, 12);
        c.out = kdev_malloc(all * sizeof(float)), c.w = bench_dev_random(dim, 0.5f, 1.5f, 13);
        float ms = bench_median_ms(norm_run, &c, s, 3, 30);
        double bw = bytes / (ms * 1e-3);
        printf("%7d %10.1f %9.0f %7.1f%%\n", n, ms * 1e3, bw / 1e9, 100 * bw / copy_bw);
        if (n == 16384) printf("SUMMARY | add_rmsnorm 16384x4096 | %.0f GB/s | %.0f%% of copy\n", bw / 1e9, 100 * bw / copy_bw);
        kdev_free(c.res), kdev_free(c.delta), kdev_free(c.out), kdev_free(c.w);
    }

    printf("\nrope_kv_write, 32 heads / 8 KV heads of 128\n%7s %10s %9s %8s\n", "tokens", "time us", "GB/s", "of copy");
    for (int ti = 0; ti < n_tok; ti++) {
        int n = tokens[ti], H = 32, KV = 8, hd = 128, bs = 16;
        double bytes = (double)n * (H * hd * 4 * 2 + KV * hd * 4 * 2 + KV * hd * 4 + 2 * KV * hd * 2);
        RopeCtx c = {s, n, rotations(bytes), H, NULL, NULL, NULL, {0}, {0}};
        c.q = bench_dev_random((size_t)c.n_rot * n * H * hd, -1, 1, 21);
        c.k = bench_dev_random((size_t)c.n_rot * n * KV * hd, -1, 1, 22);
        c.v = bench_dev_random((size_t)c.n_rot * n * KV * hd, -1, 1, 23);
        int *pos = xmalloc(n * sizeof(int));
        for (int i = 0; i < n; i++) pos[i] = 1000 + i;
        int *d_pos = kdev_malloc(n * sizeof(int));
        kdev_memcpy_h2d(d_pos, pos, n * sizeof(int), NULL);
        c.b = (Batch){.n_tokens = n, .positions = d_pos, .slot_mapping = d_pos}; // slot = position
        int blocks = (1000 + n) / bs + 1;
        size_t cache_n = (size_t)blocks * bs * KV * hd;
        c.cache = (KVLayer){kdev_malloc(cache_n * 2), kdev_malloc(cache_n * 2), blocks, bs, KV, hd, KCUDA_KV_BF16};
        float ms = bench_median_ms(rope_run, &c, s, 3, 30);
        double bw = bytes / (ms * 1e-3);
        printf("%7d %10.1f %9.0f %7.1f%%\n", n, ms * 1e3, bw / 1e9, 100 * bw / copy_bw);
        if (n == 16384) printf("SUMMARY | rope_kv_write 16384 tokens | %.0f GB/s | %.0f%% of copy\n", bw / 1e9, 100 * bw / copy_bw);
        kdev_free(c.q), kdev_free(c.k), kdev_free(c.v), kdev_free(d_pos);
        kdev_free(c.cache.k), kdev_free(c.cache.v);
        free(pos);
    }

    printf("\nmatmul %d x %d bf16 weights (x converted to bf16, cuBLAS, fp32 out)\n%7s %10s %9s\n", mm, mm,
           "tokens", "time us", "TFLOP/s");
    MatmulCtx m = {s, {mm, mm, NULL}, NULL, NULL, 0};
    m.w.data = kdev_malloc((size_t)mm * mm * 2);
    bench_fill_bf16(m.w.data, (size_t)mm * mm, s);
    m.x = bench_dev_random((size_t)mm * mm, -1, 1, 31);
    m.out = kdev_malloc((size_t)mm * mm * sizeof(float));
    for (int ti = 0; ti <= n_tok; ti++) {
        m.n = ti < n_tok ? tokens[ti] : mm; // and the square product last
        if (m.n > mm || (ti < n_tok && m.n == mm)) continue;
        float ms = bench_median_ms(matmul_run, &m, s, 3, 30);
        double tf = 2.0 * m.n * (double)mm * mm / (ms * 1e-3) / 1e12;
        printf("%7d %10.1f %9.1f\n", m.n, ms * 1e3, tf);
        if (m.n == mm) printf("SUMMARY | matmul %d^3 via k_matmul_cuda | %.1f TFLOP/s |\n", mm, tf);
    }
    kdev_free(m.w.data), kdev_free(m.x), kdev_free(m.out);

    // Sampling: the time includes re-copying the logits (the op works in place), reported
    // separately so it can be subtracted.
    static const int all_rows[] = {1, 64, 256}, quick_rows[] = {1, 4};
    const int *rows = bench_quick ? quick_rows : all_rows;
    int n_rows = bench_quick ? ARRAY_LEN(quick_rows) : ARRAY_LEN(all_rows), vocab = bench_quick ? 5000 : 128256;
    static const struct {
        const char *name;
        float temperature, top_p;
        int top_k;
    } modes[] = {{"greedy", 0, 1, -1}, {"top-p 0.9", 0.8f, 0.9f, -1}, {"top-k 50 + top-p 0.9", 0.8f, 0.9f, 50}};
    printf("\nsample, vocab %d (time includes copying the logits back in: see the copy column)\n", vocab);
    printf("%6s %22s %10s %10s\n", "rows", "mode", "time us", "copy us");
    for (int ri = 0; ri < n_rows; ri++)
        for (size_t mi = 0; mi < ARRAY_LEN(modes); mi++) {
            SampleCtx c = {s, rows[ri], vocab, NULL, NULL, NULL, NULL};
            size_t n = (size_t)c.n * vocab;
            c.logits = bench_dev_random(n, -8, 8, 41), c.work = kdev_malloc(n * sizeof(float));
            KSampleRow *h = xcalloc(c.n, sizeof(KSampleRow));
            for (int r = 0; r < c.n; r++)
                h[r] = (KSampleRow){.temperature = modes[mi].temperature, .top_p = modes[mi].top_p,
                                    .top_k = modes[mi].top_k, .repetition_penalty = 1, .logprobs = -1,
                                    .u = (r + 0.5) / c.n};
            c.rows = kdev_malloc(c.n * sizeof(KSampleRow));
            kdev_memcpy_h2d(c.rows, h, c.n * sizeof(KSampleRow), NULL);
            c.out = kdev_malloc(c.n * sizeof(KSampleOut));
            float ms = bench_median_ms(sample_run, &c, s, 3, 30);
            CopyCtx cc = {c.logits, c.work, n * sizeof(float), s};
            float copy_ms = bench_median_ms(bench_copy_run, &cc, s, 3, 30);
            printf("%6d %22s %10.1f %10.1f\n", c.n, modes[mi].name, ms * 1e3, copy_ms * 1e3);
            if (c.n == rows[n_rows - 1] && mi == 2)
                printf("SUMMARY | sample %d rows x %d, top-k + top-p | %.0f us | (of which copy %.0f us)\n", c.n, vocab,
                       ms * 1e3, copy_ms * 1e3);
            kdev_free(c.logits), kdev_free(c.work), kdev_free(c.rows), kdev_free(c.out);
            free(h);
        }
    kstream_free(s);
    return 0;
}
