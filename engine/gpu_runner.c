// gpu_runner.c: the model on one CUDA device (--device cuda, issue 7). See gpu_runner.h.
//
// The forward mirrors model_forward (engine/model/llama.c) op for op, through the launchers of
// kernels/cuda/cuda_ops.h, on one stream. The weights are bound by model_load_shard (the same
// names, shapes and variants the CPU backend checks), uploaded once as bf16 matrices and f32
// vectors, and the host views are dropped.
//
// A step is cut at the attention calls into n_layers + 1 segments:
//   segment 0        embedding, layer 0 up to RoPE + KV write
//   segment l        layer l-1 from the output projection on, layer l up to RoPE + KV write
//   segment n_layers the last layer's output projection and MLP, final norm, LM head
// Attention runs between them with the step's plan (kattn_plan_build: its launch geometry
// follows the context lengths, so it cannot be frozen in a graph). Every segment's launches
// depend only on the row count, so for decode-only steps each segment is a CUDA graph captured
// at start-up for each size of the ladder (gpu_graph_ladder); a step of n rows replays the graphs
// of the smallest size >= n with the rows padded (gpu_batch_pad). Eager steps (prefill, mixed,
// --enforce-eager) call the same segment code directly, so graphs and eager run the same ops.
//
// Without CUDA (CUDA=0, or no nvcc) only the host arithmetic below is compiled, and
// gpu_runner_available() says why the device cannot be used.
#include "engine/gpu_runner.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

static inline int cdiv(int a, int b) { return (a + b - 1) / b; }
static inline size_t zdiv_up(size_t a, size_t b) { return (a + b - 1) / b; }

// ----------------------------------------------------------------------------
// the graph ladder and padding

int gpu_graph_ladder(int max_num_seqs, int *sizes, int cap) {
    CHECK(max_num_seqs >= 1 && cap >= 1, "max_num_seqs %d, cap %d", max_num_seqs, cap);
    int n = 0;
    for (int s = 1; s < max_num_seqs && n < cap - 1; s = s < 8 ? 2 * s : s + 8) sizes[n++] = s;
    sizes[n++] = max_num_seqs;
    return n;
}

int gpu_graph_pick(const int *sizes, int n, int rows) {
    for (int i = 0; i < n; i++)
        if (sizes[i] >= rows) return i;
    return -1;
}

bool gpu_batch_is_decode(const Batch *b) {
    if (b->n_seqs < 1 || b->n_tokens != b->n_seqs) return false;
    for (int s = 0; s < b->n_seqs; s++)
        if (b->query_start[s] != s || b->query_start[s + 1] != s + 1) return false;
    return true;
}

void gpu_batch_pad(const Batch *b, int rows, int *token_ids, int *positions, int *slot_mapping, int *logits_rows) {
    int T = b->n_tokens;
    CHECK(rows >= T && b->n_sample >= 0 && b->n_sample <= T, "%d rows padded to %d, %d sampled", T, rows, b->n_sample);
    memcpy(token_ids, b->token_ids, sizeof(int) * T);
    memcpy(positions, b->positions, sizeof(int) * T);
    memcpy(slot_mapping, b->slot_mapping, sizeof(int) * T);
    for (int t = T; t < rows; t++) token_ids[t] = 0, positions[t] = 0, slot_mapping[t] = -1;
    memcpy(logits_rows, b->logits_rows, sizeof(int) * b->n_sample);
    for (int i = b->n_sample; i < rows; i++) logits_rows[i] = 0;
}

// ----------------------------------------------------------------------------
// the memory plan

#define GPU_PLAN_SLACK ((size_t)1 << 20)

static const char *gib(size_t bytes, char *buf, size_t cap) {
    if (bytes >= ((size_t)1 << 30)) snprintf(buf, cap, "%.2f GiB", (double)bytes / (1 << 30));
    else snprintf(buf, cap, "%.1f MiB", (double)bytes / (1 << 20));
    return buf;
}

int gpu_plan_make(GpuPlan *p, const GpuPlanInput *in, char *err) {
    memset(p, 0, sizeof *p);
    CHECK(in->block_size > 0 && in->block_bytes > 0 && in->max_model_len > 0 && in->max_num_seqs > 0 &&
          in->max_num_batched_tokens > 0 && in->utilization > 0 && in->utilization <= 1);
    char a[32], b[32], c[32], d[32];
    p->budget = (size_t)(in->utilization * (double)in->total);
    if (in->in_use + in->weight_bytes > p->budget)
        return seterr(err, "the weights (%s) do not fit on the device: --gpu-memory-utilization %.2f of %s is %s, "
                      "and %s is already in use; raise --gpu-memory-utilization or free the device",
                      gib(in->weight_bytes, a, sizeof a), in->utilization, gib(in->total, b, sizeof b),
                      gib(p->budget, c, sizeof c), gib(in->in_use, d, sizeof d));
    size_t left = p->budget - in->in_use - in->weight_bytes;
    size_t rest = in->act_bytes + in->io_bytes + in->workspace_bytes + in->graph_bytes;
    size_t kv = left > rest ? left - rest : 0;
    size_t blocks = kv / in->block_bytes;
    if (blocks > INT_MAX) blocks = INT_MAX;
    size_t seq_blocks = (size_t)cdiv(in->max_model_len, in->block_size);
    if (blocks < seq_blocks) {
        // What would make room for one whole sequence: a shorter --max-model-len, or fewer rows
        // of activations, or fewer sequences' step arrays and logits (with a MiB to spare for
        // the arena's rounding, which the per-row sizes leave out).
        size_t deficit = seq_blocks * in->block_bytes + rest - left + GPU_PLAN_SLACK;
        char hint[ERR_MAX] = "", part[128];
        if (blocks >= 1) {
            snprintf(part, sizeof part, "--max-model-len %zu", blocks * in->block_size);
            strcat(hint, part);
        }
        if (in->act_row_bytes > 0) {
            long rows = (long)in->max_num_batched_tokens - (long)zdiv_up(deficit, in->act_row_bytes);
            if (rows >= in->max_num_seqs && rows >= 1) {
                snprintf(part, sizeof part, "%s--max-num-batched-tokens %ld", hint[0] ? ", or " : "", rows);
                strcat(hint, part);
            }
        }
        if (in->io_seq_bytes > 0) {
            long seqs = (long)in->max_num_seqs - (long)zdiv_up(deficit, in->io_seq_bytes);
            if (seqs >= 1) {
                snprintf(part, sizeof part, "%s--max-num-seqs %ld", hint[0] ? ", or " : "", seqs);
                strcat(hint, part);
            }
        }
        return seterr(err, "the KV cache gets %s (%zu blocks of %d tokens) after the weights (%s) and the rest (%s): "
                      "one sequence of max_model_len %d tokens needs %zu blocks; try %s%sa higher --gpu-memory-utilization "
                      "(now %.2f)",
                      gib(blocks * in->block_bytes, a, sizeof a), blocks, in->block_size,
                      gib(in->weight_bytes, b, sizeof b), gib(rest, c, sizeof c), in->max_model_len, seq_blocks, hint,
                      hint[0] ? ", or " : "", in->utilization);
    }
    p->num_blocks = (int)blocks;
    p->kv_bytes = blocks * in->block_bytes;
    return SL_OK;
}

void gpu_plan_log(const GpuPlanInput *in, const GpuPlan *p, const char *device) {
    char b[8][32];
    size_t used = in->in_use + in->weight_bytes + in->act_bytes + in->io_bytes + in->workspace_bytes +
                  in->graph_bytes + p->kv_bytes;
    long tokens = (long)p->num_blocks * in->block_size;
    log_info("GPU memory plan on %s: %s, --gpu-memory-utilization %.2f -> %s", device, gib(in->total, b[0], 32),
             in->utilization, gib(p->budget, b[1], 32));
    log_info("  in use before  %12s  (CUDA context, other processes)", gib(in->in_use, b[0], 32));
    log_info("  weights        %12s  (bf16 matrices, f32 vectors)", gib(in->weight_bytes, b[0], 32));
    log_info("  activations    %12s  (%d rows per step)", gib(in->act_bytes, b[0], 32), in->max_num_batched_tokens);
    log_info("  step I/O       %12s  (batch arrays, logits of %d rows)", gib(in->io_bytes, b[0], 32), in->max_num_seqs);
    log_info("  workspace      %12s  (cuBLAS, matmul staging, attention work lists)", gib(in->workspace_bytes, b[0], 32));
    log_info("  CUDA graphs    %12s  (reserved)", gib(in->graph_bytes, b[0], 32));
    log_info("  KV cache       %12s  (%d blocks of %d tokens, %s each, bf16; %ld tokens = %.1f x max_model_len %d)",
             gib(p->kv_bytes, b[0], 32), p->num_blocks, in->block_size, gib(in->block_bytes, b[1], 32), tokens,
             (double)tokens / in->max_model_len, in->max_model_len);
    log_info("  unplanned      %12s  (of the budget)", gib(p->budget > used ? p->budget - used : 0, b[0], 32));
}

bool gpu_runner_supports(const ModelConfig *c, char *why) {
    bool windowed = false;
    for (int l = 0; l < c->n_layers; l++) windowed |= model_layer_window(c, l) > 0;
    const char *lack = c->gemma                               ? "post-norms, GeGLU, soft-capping, sliding windows"
                       : c->fused_qkv || c->fused_gate_up     ? "fused QKV and gate-up matrices"
                       : c->longrope || c->rope_dim != c->head_dim ? "partial rotary and LongRoPE"
                       : windowed                             ? "sliding-window attention"
                                                              : NULL;
    if (!lack) return true;
    if (why) seterr(why, "the GPU runner does not implement %s's forward (%s) yet", c->arch, lack);
    return false;
}

#ifndef SLUICE_CUDA
// ----------------------------------------------------------------------------
// a build without CUDA: the runner is never available

#define GPU_NO_CUDA "this build has no CUDA support (built with CUDA=0 or without nvcc)"

bool gpu_runner_available(char *why) {
    if (why) seterr(why, GPU_NO_CUDA);
    return false;
}

int gpu_runner_create(GpuRunner **out, const WeightSource *src, const GpuRunnerConfig *cfg, char *err) {
    (void)src, (void)cfg;
    *out = NULL;
    return seterr(err, GPU_NO_CUDA);
}

void gpu_runner_destroy(GpuRunner *g) {
    CHECK(g == NULL, "no GPU runner exists in a build without CUDA");
}

const GpuRunnerStats *gpu_runner_stats(const GpuRunner *g) {
    (void)g;
    DIE("no GPU runner exists in a build without CUDA");
}

void gpu_runner_copy_block(GpuRunner *g, int src, int dst) {
    (void)g, (void)src, (void)dst;
    DIE("no GPU runner exists in a build without CUDA");
}

void gpu_runner_forward(GpuRunner *g, const Batch *b, float *logits) {
    (void)g, (void)b, (void)logits;
    DIE("no GPU runner exists in a build without CUDA");
}

#else // SLUICE_CUDA
// ----------------------------------------------------------------------------
// the runner on the device

#include "engine/model/model.h"
#include "kernels/cuda/cuda_engine.h"
#include "kernels/cuda/cuda_ops.h"

// Graph pools: what the driver takes per instantiated graph, reserved ahead of the KV cache
// (the measured amount is logged after capture).
#define GPU_GRAPH_RESERVE_BASE ((size_t)64 << 20)
#define GPU_GRAPH_RESERVE_EACH ((size_t)256 << 10)
// The upload staging lives in the activations' memory, which is at least this big.
#define GPU_STAGING_MIN ((size_t)32 << 20)

typedef struct {
    KDevMatrix wq, wk, wv, wo, w_gate, w_up, w_down;
    float *attn_norm, *ffn_norm;
    float *bq, *bk, *bv;     // Qwen2, else NULL
    float *q_norm, *k_norm;  // Qwen3, else NULL
} GpuLayer;

// The step's int arrays, in this order in one pinned host buffer and its device mirror.
enum { IO_TOK, IO_POS, IO_SLOT, IO_LROWS, IO_QSTART, IO_CTX, IO_BT, IO_N };

struct GpuRunner {
    GpuRunnerConfig cfg;
    ModelConfig mc;
    int q_dim, kv_dim, max_rows, max_blocks, n_segs;
    KStream *s;
    KAttnPlan *plan;
    KArena *arena;
    // weights
    KDevMatrix tok_embd, output;
    GpuLayer *layers;
    float *output_norm;
    float *freq_factors; // device (rope_dim / 2): llama3 RoPE scaling, or NULL
    // activations (device), model_forward's RunState
    float *x, *xb, *q, *k, *v, *att, *delta, *gate, *up;
    // step I/O
    int *h_io, *d_io[IO_N], *hp[IO_N];
    size_t io_cap[IO_N];
    float *d_logits, *h_logits;
    KVLayer *kv;
    // decode graphs: graphs[i * n_segs + seg] for ladder size i, captured with the Batch gb[i]
    // (kept: an emulator of the launches may read the arguments when it replays them)
    int ladder[GPU_LADDER_MAX], n_ladder;
    KGraph **graphs;
    Batch *gb;
    GpuRunnerStats st;
};

bool gpu_runner_available(char *why) {
    if (kcuda_available()) return true;
    if (why) seterr(why, "no CUDA device: %s", kcuda_unavailable_reason());
    return false;
}

const GpuRunnerStats *gpu_runner_stats(const GpuRunner *g) {
    return &g->st;
}

// ---- the forward's segments (see the top of the file)

// One projection of the attention input, as engine/model/llama.c's attn_project: out = xb · wᵀ
// (+ bias), then (Qwen3) RMSNorm over each head; tmp holds the un-normed projection.
static void attn_project(GpuRunner *g, float *out, float *tmp, const KDevMatrix *w, const float *bias,
                         const float *head_norm, int T) {
    const ModelConfig *c = &g->mc;
    float *y = head_norm ? tmp : out;
    k_matmul_cuda(y, g->xb, w, T, g->s);
    if (bias) k_add_bias_cuda(y, bias, T, (int)w->rows, g->s);
    if (head_norm) k_rmsnorm_cuda(out, y, head_norm, T * (int)(w->rows / c->head_dim), c->head_dim, c->norm_eps, g->s);
}

static void seg_pre_attention(GpuRunner *g, const Batch *db, int l) {
    const ModelConfig *c = &g->mc;
    const GpuLayer *L = &g->layers[l];
    int T = db->n_tokens;
    if (l == 0) k_rmsnorm_cuda(g->xb, g->x, L->attn_norm, T, c->dim, c->norm_eps, g->s);
    else k_add_rmsnorm_cuda(g->xb, g->x, g->delta, L->attn_norm, T, c->dim, c->norm_eps, g->s);
    // att is free until attention: the norms' scratch
    attn_project(g, g->q, g->att, &L->wq, L->bq, L->q_norm, T);
    attn_project(g, g->k, g->att, &L->wk, L->bk, L->k_norm, T);
    attn_project(g, g->v, g->att, &L->wv, L->bv, NULL, T);
    k_rope_kv_write_cuda(g->q, g->k, g->v, db, &g->kv[l], c->n_heads, c->rope_dim, c->rope_base, g->freq_factors,
                         c->rope_layout, g->s);
}

static void seg_post_attention(GpuRunner *g, int l, int T) {
    const ModelConfig *c = &g->mc;
    const GpuLayer *L = &g->layers[l];
    KStream *s = g->s;
    k_matmul_cuda(g->delta, g->att, &L->wo, T, s);
    k_add_rmsnorm_cuda(g->xb, g->x, g->delta, L->ffn_norm, T, c->dim, c->norm_eps, s);
    k_matmul_cuda(g->gate, g->xb, &L->w_gate, T, s);
    k_matmul_cuda(g->up, g->xb, &L->w_up, T, s);
    k_silu_mul_cuda(g->gate, g->gate, g->up, T, c->ffn_dim, s);
    k_matmul_cuda(g->delta, g->gate, &L->w_down, T, s);
}

// Segment seg over db's rows (device arrays); the LM head on db->n_sample rows.
static void seg_run(GpuRunner *g, const Batch *db, int seg) {
    const ModelConfig *c = &g->mc;
    int T = db->n_tokens;
    if (seg == 0) k_embed_cuda(g->x, &g->tok_embd, db->token_ids, T, g->s);
    else seg_post_attention(g, seg - 1, T);
    if (seg < c->n_layers) {
        seg_pre_attention(g, db, seg);
    } else if (db->n_sample > 0) {
        k_add_rmsnorm_cuda(g->xb, g->x, g->delta, g->output_norm, T, c->dim, c->norm_eps, g->s);
        k_matmul_rows_cuda(g->d_logits, g->xb, db->logits_rows, db->n_sample, &g->output, g->s);
    }
}

// The Batch the ops read: counts from the host, arrays on the device.
static Batch device_batch(const GpuRunner *g, int rows, int n_seqs, int max_blocks_per_seq, int n_sample) {
    return (Batch){.n_tokens = rows, .n_seqs = n_seqs, .token_ids = g->d_io[IO_TOK], .positions = g->d_io[IO_POS],
                   .slot_mapping = g->d_io[IO_SLOT], .query_start = g->d_io[IO_QSTART],
                   .context_lens = g->d_io[IO_CTX], .block_tables = g->d_io[IO_BT],
                   .max_blocks_per_seq = max_blocks_per_seq, .logits_rows = g->d_io[IO_LROWS], .n_sample = n_sample};
}

// Host arrays [IO_TOK..IO_LROWS) of n ints each, and the rest as given, up on the stream.
static void io_upload(GpuRunner *g, const int *n) {
    for (int i = 0; i < IO_N; i++) {
        CHECK((size_t)n[i] <= g->io_cap[i], "step array %d: %d ints, room for %zu", i, n[i], g->io_cap[i]);
        kdev_memcpy_h2d(g->d_io[i], g->hp[i], sizeof(int) * n[i], g->s);
    }
}

void gpu_runner_forward(GpuRunner *g, const Batch *b, float *logits) {
    const ModelConfig *c = &g->mc;
    int T = b->n_tokens;
    CHECK(T > 0 && T <= g->cfg.max_num_batched_tokens, "%d rows, room for %d", T, g->cfg.max_num_batched_tokens);
    CHECK(b->n_seqs >= 1 && b->n_seqs <= g->cfg.max_num_seqs && b->n_sample >= 0 && b->n_sample <= b->n_seqs,
          "%d sequences (room for %d), %d sampled", b->n_seqs, g->cfg.max_num_seqs, b->n_sample);
    int gi = g->graphs && gpu_batch_is_decode(b) ? gpu_graph_pick(g->ladder, g->n_ladder, T) : -1;
    int rows = gi >= 0 ? g->ladder[gi] : T;

    // the step's arrays up (pinned host mirrors: the copies are asynchronous)
    gpu_batch_pad(b, rows, g->hp[IO_TOK], g->hp[IO_POS], g->hp[IO_SLOT], g->hp[IO_LROWS]);
    int nbt = b->n_seqs * b->max_blocks_per_seq;
    memcpy(g->hp[IO_QSTART], b->query_start, sizeof(int) * (b->n_seqs + 1));
    memcpy(g->hp[IO_CTX], b->context_lens, sizeof(int) * b->n_seqs);
    memcpy(g->hp[IO_BT], b->block_tables, sizeof(int) * nbt);
    int n[IO_N] = {rows, rows, rows, rows, b->n_seqs + 1, b->n_seqs, nbt};
    io_upload(g, n);
    kattn_plan_build(g->plan, b, c->n_kv_heads, 0, g->s); // (windowed models stay on the CPU)

    // segments and attention: the LM head takes every padded row in a graph, the sampled ones eagerly
    Batch db = device_batch(g, rows, b->n_seqs, b->max_blocks_per_seq, gi >= 0 ? rows : b->n_sample);
    Batch da = db;
    da.n_tokens = T; // attention reads the real rows only
    const AttnOpt att = {.scale = 1.0f / sqrtf((float)c->head_dim)};
    for (int seg = 0; seg < g->n_segs; seg++) {
        if (gi >= 0) kgraph_launch(g->graphs[gi * g->n_segs + seg], g->s);
        else seg_run(g, &db, seg);
        if (seg < c->n_layers) k_attention_cuda(g->att, g->q, &g->kv[seg], &da, g->plan, c->n_heads, &att, g->s);
    }

    // the sampled rows' logits down
    size_t nl = (size_t)b->n_sample * c->vocab;
    if (nl) kdev_memcpy_d2h(g->h_logits, g->d_logits, nl * sizeof(float), g->s);
    kstream_sync(g->s);
    if (nl) memcpy(logits, g->h_logits, nl * sizeof(float));
}

void gpu_runner_copy_block(GpuRunner *g, int src, int dst) {
    int nb = g->st.num_blocks;
    CHECK(src >= 0 && src < nb && dst >= 0 && dst < nb && src != dst, "copy %d -> %d of %d blocks", src, dst, nb);
    size_t n = (size_t)g->cfg.block_size * g->kv_dim * sizeof(uint16_t);
    for (int l = 0; l < g->mc.n_layers; l++) {
        KVLayer *L = &g->kv[l];
        kdev_memcpy_d2d((char *)L->k + (size_t)dst * n, (char *)L->k + (size_t)src * n, n, g->s);
        kdev_memcpy_d2d((char *)L->v + (size_t)dst * n, (char *)L->v + (size_t)src * n, n, g->s);
    }
}

// ---- start-up

// Every tensor's place in the arena, in the order taken (sizes first, then pointers).
static size_t mat_bytes(const QMatrix *w) { return karena_round((size_t)w->rows * w->cols * sizeof(uint16_t)); }
static size_t vec_bytes(const float *p, int64_t n) { return p ? karena_round((size_t)n * sizeof(float)) : 0; }

static size_t weights_bytes(const Model *m) {
    const ModelConfig *c = &m->cfg;
    size_t t = mat_bytes(&m->w.tok_embd) + vec_bytes(m->w.output_norm, c->dim) +
               vec_bytes(m->w.rope_freq_factors, c->rope_dim / 2);
    if (!c->tied_embeddings) t += mat_bytes(&m->w.output);
    for (int l = 0; l < c->n_layers; l++) {
        const LayerWeights *L = &m->w.layers[l];
        t += mat_bytes(&L->wq) + mat_bytes(&L->wk) + mat_bytes(&L->wv) + mat_bytes(&L->wo) + mat_bytes(&L->w_gate) +
             mat_bytes(&L->w_up) + mat_bytes(&L->w_down);
        t += vec_bytes(L->attn_norm, c->dim) + vec_bytes(L->ffn_norm, c->dim);
        t += vec_bytes(L->bq, m->n_heads * c->head_dim) + 2 * vec_bytes(L->bk, m->n_kv_heads * c->head_dim);
        t += vec_bytes(L->q_norm, c->head_dim) + vec_bytes(L->k_norm, c->head_dim);
    }
    return t;
}

static void up_matrix(GpuRunner *g, KUpload *u, KDevMatrix *d, const QMatrix *w) {
    d->rows = w->rows, d->cols = w->cols;
    d->data = karena_take(g->arena, (size_t)w->rows * w->cols * sizeof(uint16_t));
    kupload_matrix(u, d->data, w);
}

static float *up_vector(GpuRunner *g, KUpload *u, const float *p, int64_t n) {
    if (!p) return NULL;
    float *d = karena_take(g->arena, (size_t)n * sizeof(float));
    kupload_f32(u, d, p, (size_t)n);
    return d;
}

static void weights_upload(GpuRunner *g, const Model *m, KUpload *u) {
    const ModelConfig *c = &m->cfg;
    int qd = m->n_heads * c->head_dim, kd = m->n_kv_heads * c->head_dim;
    up_matrix(g, u, &g->tok_embd, &m->w.tok_embd);
    if (c->tied_embeddings) g->output = g->tok_embd;
    else up_matrix(g, u, &g->output, &m->w.output);
    g->output_norm = up_vector(g, u, m->w.output_norm, c->dim);
    g->freq_factors = up_vector(g, u, m->w.rope_freq_factors, c->rope_dim / 2);
    g->layers = xcalloc(c->n_layers, sizeof(GpuLayer));
    for (int l = 0; l < c->n_layers; l++) {
        const LayerWeights *L = &m->w.layers[l];
        GpuLayer *G = &g->layers[l];
        up_matrix(g, u, &G->wq, &L->wq);
        up_matrix(g, u, &G->wk, &L->wk);
        up_matrix(g, u, &G->wv, &L->wv);
        up_matrix(g, u, &G->wo, &L->wo);
        up_matrix(g, u, &G->w_gate, &L->w_gate);
        up_matrix(g, u, &G->w_up, &L->w_up);
        up_matrix(g, u, &G->w_down, &L->w_down);
        G->attn_norm = up_vector(g, u, L->attn_norm, c->dim);
        G->ffn_norm = up_vector(g, u, L->ffn_norm, c->dim);
        G->bq = up_vector(g, u, L->bq, qd);
        G->bk = up_vector(g, u, L->bk, kd);
        G->bv = up_vector(g, u, L->bv, kd);
        G->q_norm = up_vector(g, u, L->q_norm, c->head_dim);
        G->k_norm = up_vector(g, u, L->k_norm, c->head_dim);
    }
}

// The activation buffers (model.h's RunState) and their widths in floats per row, in the order
// they are taken from the arena.
static int act_fields(GpuRunner *g, float ***fields, int *widths) {
    const ModelConfig *c = &g->mc;
    float **f[] = {&g->x, &g->xb, &g->q, &g->k, &g->v, &g->att, &g->delta, &g->gate, &g->up};
    int w[] = {c->dim, c->dim, g->q_dim, g->kv_dim, g->kv_dim, g->q_dim, c->dim, c->ffn_dim, c->ffn_dim};
    for (size_t i = 0; i < ARRAY_LEN(w); i++) fields[i] = f[i], widths[i] = w[i];
    return (int)ARRAY_LEN(w);
}

static size_t act_bytes(GpuRunner *g, int rows) {
    float **f[16];
    int w[16], n = act_fields(g, f, w);
    size_t t = 0;
    for (int i = 0; i < n; i++) t += karena_round((size_t)rows * w[i] * sizeof(float));
    return t;
}

static size_t io_bytes(const GpuRunner *g, int n_seqs) {
    int r = g->max_rows;
    size_t ints = karena_round(sizeof(int) * r) * 4 + karena_round(sizeof(int) * (n_seqs + 1)) +
                  karena_round(sizeof(int) * n_seqs) + karena_round(sizeof(int) * (size_t)n_seqs * g->max_blocks);
    return ints + karena_round((size_t)n_seqs * g->mc.vocab * sizeof(float));
}

static void carve(GpuRunner *g, int num_blocks) {
    const ModelConfig *c = &g->mc;
    float **f[16];
    int w[16], n = act_fields(g, f, w);
    for (int i = 0; i < n; i++)
        *f[i] = karena_take(g->arena, (size_t)g->max_rows * w[i] * sizeof(float));
    // the upload's staging continues past the activations when they are smaller than it
    size_t act = act_bytes(g, g->max_rows);
    if (act < GPU_STAGING_MIN) karena_take(g->arena, GPU_STAGING_MIN - act);
    int seqs = g->cfg.max_num_seqs;
    size_t cap[IO_N] = {g->max_rows, g->max_rows, g->max_rows, g->max_rows, seqs + 1, seqs,
                        (size_t)seqs * g->max_blocks};
    size_t host = 0;
    for (int i = 0; i < IO_N; i++) {
        g->io_cap[i] = cap[i];
        g->d_io[i] = karena_take(g->arena, sizeof(int) * cap[i]);
        host += cap[i];
    }
    g->h_io = kdev_malloc_host(sizeof(int) * host);
    size_t off = 0;
    for (int i = 0; i < IO_N; off += cap[i], i++) g->hp[i] = g->h_io + off;
    g->d_logits = karena_take(g->arena, (size_t)seqs * c->vocab * sizeof(float));
    g->h_logits = kdev_malloc_host((size_t)seqs * c->vocab * sizeof(float));
    g->kv = xcalloc(c->n_layers, sizeof(KVLayer));
    size_t layer = (size_t)num_blocks * g->cfg.block_size * g->kv_dim * sizeof(uint16_t);
    for (int l = 0; l < c->n_layers; l++)
        g->kv[l] = (KVLayer){.k = karena_take(g->arena, layer), .v = karena_take(g->arena, layer),
                             .num_blocks = num_blocks, .block_size = g->cfg.block_size,
                             .n_kv_heads = c->n_kv_heads, .head_dim = c->head_dim, .dtype = KCUDA_KV_BF16};
}

// One graph per segment per ladder size, each first run once eagerly (cuBLAS picks and loads
// its kernels outside the capture). The inputs are padding rows: token 0, no KV writes.
static void graphs_capture(GpuRunner *g) {
    int top = g->ladder[g->n_ladder - 1];
    for (int t = 0; t < top; t++) g->hp[IO_TOK][t] = 0, g->hp[IO_POS][t] = 0, g->hp[IO_SLOT][t] = -1, g->hp[IO_LROWS][t] = t;
    int n[IO_N] = {top, top, top, top, 0, 0, 0};
    io_upload(g, n);
    g->graphs = xcalloc((size_t)g->n_ladder * g->n_segs, sizeof(KGraph *));
    g->gb = xcalloc(g->n_ladder, sizeof(Batch));
    for (int i = 0; i < g->n_ladder; i++) {
        int B = g->ladder[i];
        Batch *db = &g->gb[i];
        *db = device_batch(g, B, B, g->max_blocks, B);
        for (int seg = 0; seg < g->n_segs; seg++) seg_run(g, db, seg);
        kstream_sync(g->s);
        for (int seg = 0; seg < g->n_segs; seg++) {
            kgraph_capture_begin(g->s);
            seg_run(g, db, seg);
            g->graphs[i * g->n_segs + seg] = kgraph_capture_end(g->s);
        }
    }
    kstream_sync(g->s);
}

static void runner_free_all(GpuRunner *g) {
    if (g->graphs)
        for (int i = 0; i < g->n_ladder * g->n_segs; i++) kgraph_free(g->graphs[i]);
    free(g->graphs);
    free(g->gb);
    kattn_plan_free(g->plan);
    kstream_free(g->s);
    karena_free(g->arena);
    kdev_free_host(g->h_io);
    kdev_free_host(g->h_logits);
    free(g->layers);
    free(g->kv);
    free(g);
}

void gpu_runner_destroy(GpuRunner *g) {
    if (g) runner_free_all(g);
}

int gpu_runner_create(GpuRunner **out, const WeightSource *src, const GpuRunnerConfig *cfg, char *err) {
    *out = NULL;
    char why[ERR_MAX];
    if (!gpu_runner_available(why) || !gpu_runner_supports(&src->cfg, why)) return seterr(err, "%s", why);
    CHECK(cfg->max_num_batched_tokens > 0 && cfg->max_num_seqs > 0 && cfg->max_model_len > 0 && cfg->block_size > 0);
    double t0 = time_now_s();

    // Bind through the CPU model's loader: the same checks of names, shapes and variants. The
    // source outlives the binding (model_load_shard does not change it; it takes no const).
    Model m;
    if (model_load_shard(&m, (WeightSource *)src, 1, 0, 1, NULL, err) != SL_OK) return SL_ERR;
    double t_bind = time_now_s();
    const ModelConfig *c = &m.cfg;
    if (c->head_dim != 64 && c->head_dim != 128) {
        model_free(&m);
        return seterr(err, "the CUDA attention supports head_dim 64 and 128; this model's is %d (use --device cpu)",
                      c->head_dim);
    }
    GpuRunner *g = xcalloc(1, sizeof(GpuRunner));
    g->cfg = *cfg;
    g->mc = *c;
    g->q_dim = c->n_heads * c->head_dim, g->kv_dim = c->n_kv_heads * c->head_dim;
    g->max_rows = MAX(cfg->max_num_batched_tokens, cfg->max_num_seqs);
    g->max_blocks = cdiv(cfg->max_model_len, cfg->block_size);
    g->n_segs = c->n_layers + 1;
    g->n_ladder = cfg->enforce_eager ? 0 : gpu_graph_ladder(cfg->max_num_seqs, g->ladder, GPU_LADDER_MAX);

    // the fixed parts, measured: the stream (cuBLAS workspace, matmul staging), attention lists
    size_t free0, free1, total;
    kcuda_mem_info(&free0, &total);
    g->s = kstream_create(g->max_rows, MAX(MAX(c->dim, c->ffn_dim), g->q_dim));
    g->plan = kattn_plan_create(g->max_rows, c->n_heads, c->head_dim);
    kcuda_mem_info(&free1, &total);
    size_t act = act_bytes(g, g->max_rows);
    GpuPlanInput in = {
        .total = total, .in_use = total - free0, .utilization = cfg->gpu_memory_utilization,
        .weight_bytes = weights_bytes(&m), .act_bytes = MAX(act, GPU_STAGING_MIN),
        .act_row_bytes = act / g->max_rows, .io_bytes = io_bytes(g, cfg->max_num_seqs),
        .io_seq_bytes = io_bytes(g, 2) - io_bytes(g, 1), .workspace_bytes = free0 > free1 ? free0 - free1 : 0,
        .graph_bytes = g->n_ladder ? GPU_GRAPH_RESERVE_BASE + (size_t)g->n_ladder * g->n_segs * GPU_GRAPH_RESERVE_EACH : 0,
        .block_bytes = 2 * (size_t)c->n_layers * cfg->block_size * g->kv_dim * sizeof(uint16_t),
        .block_size = cfg->block_size, .max_model_len = cfg->max_model_len, .max_num_seqs = cfg->max_num_seqs,
        .max_num_batched_tokens = cfg->max_num_batched_tokens,
    };
    GpuPlan plan;
    if (gpu_plan_make(&plan, &in, err) != SL_OK) goto fail;
    // + the rounding of the KV cache's 2 * n_layers pieces
    size_t arena = in.act_bytes + in.io_bytes + in.weight_bytes + plan.kv_bytes +
                   (2 * (size_t)c->n_layers + 1) * KARENA_ALIGN;
    if (!(g->arena = karena_create(arena))) {
        char a[32];
        seterr(err, "cudaMalloc of the %s arena failed (memory taken since it was measured?); lower "
               "--gpu-memory-utilization (now %.2f)", gib(arena, a, sizeof a), cfg->gpu_memory_utilization);
        goto fail;
    }
    // activations first: until the weights are up they are the upload's staging
    carve(g, plan.num_blocks);
    size_t staging = MAX(act, GPU_STAGING_MIN);
    double t1 = time_now_s();

    KUpload *u = kupload_create(g->x, staging, g->s);
    weights_upload(g, &m, u);
    kupload_finish(u);
    model_free(&m);
    // Zeroed once: no kernel ever reads uninitialized memory (padding rows, unwritten slots).
    kdev_memset(g->x, 0, staging, g->s);
    for (int l = 0; l < c->n_layers; l++) {
        size_t layer = (size_t)plan.num_blocks * cfg->block_size * g->kv_dim * sizeof(uint16_t);
        kdev_memset(g->kv[l].k, 0, layer, g->s);
        kdev_memset(g->kv[l].v, 0, layer, g->s);
    }
    kstream_sync(g->s);
    double t2 = time_now_s();

    size_t free2, free3;
    kcuda_mem_info(&free2, &total);
    if (g->n_ladder) graphs_capture(g);
    kcuda_mem_info(&free3, &total);
    double t3 = time_now_s();

    g->st = (GpuRunnerStats){.load_s = (t_bind - t0) + (t2 - t1), .alloc_s = t1 - t_bind, .graph_s = t3 - t2,
                             .weight_bytes = in.weight_bytes, .act_bytes = in.act_bytes,
                             .workspace_bytes = in.workspace_bytes, .graph_bytes = free2 > free3 ? free2 - free3 : 0,
                             .kv_bytes = plan.kv_bytes, .num_blocks = plan.num_blocks, .n_graphs = g->n_ladder};
    gpu_plan_log(&in, &plan, kcuda_device_name());
    char a[32];
    log_info("GPU start-up: weights up %.2f s, plan + allocation %.2f s, %d x %d graphs %.2f s (%s)", g->st.load_s,
             g->st.alloc_s, g->n_ladder, g->n_segs, g->st.graph_s, gib(g->st.graph_bytes, a, sizeof a));
    *out = g;
    return SL_OK;
fail:
    model_free(&m);
    runner_free_all(g);
    return SL_ERR;
}

#endif // SLUICE_CUDA
