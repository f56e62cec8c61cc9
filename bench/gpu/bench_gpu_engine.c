// bench_gpu_engine.c: the GPU runner's decode step on a model shape, CUDA graphs against eager
// launches: time per step at batch 1 (the TPOT floor a server adds its own overhead to) and at
// 16, 64 and 256 sequences (output tokens per second of the forward alone), every sequence at a
// context of CONTEXT tokens. The K/V contents do not change the work, so the cache is not
// prefilled: each sequence owns its blocks and decodes at positions CONTEXT, CONTEXT + 1, ...
//
//   bench_gpu_engine [MODEL [FORMAT]]   default: config/models/llama-3.1-8b with dummy weights
//
// Prints one "SUMMARY | ..." line per measurement for scripts/gpu-check.sh. Without a device:
// SKIP.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "engine/gpu_runner.h"
#include "engine/model/weights.h"

#define CONTEXT 1000
#define BLOCK 16
#define STEPS 32

static double time_steps(GpuRunner *g, int n_seqs, int max_blocks, int vocab, float *logits) {
    int *tok = xcalloc(n_seqs, sizeof(int)), *pos = xmalloc(sizeof(int) * n_seqs), *slot = xmalloc(sizeof(int) * n_seqs);
    int *qs = xmalloc(sizeof(int) * (n_seqs + 1)), *ctx = xmalloc(sizeof(int) * n_seqs);
    int *bt = xmalloc(sizeof(int) * n_seqs * max_blocks), *rows = xmalloc(sizeof(int) * n_seqs);
    for (int s = 0; s < n_seqs; s++) {
        qs[s] = s, rows[s] = s, tok[s] = (s * 7919) % vocab;
        for (int i = 0; i < max_blocks; i++) bt[s * max_blocks + i] = s * max_blocks + i;
    }
    qs[n_seqs] = n_seqs;
    Batch b = {.n_tokens = n_seqs, .n_seqs = n_seqs, .token_ids = tok, .positions = pos, .slot_mapping = slot,
               .query_start = qs, .context_lens = ctx, .block_tables = bt, .max_blocks_per_seq = max_blocks,
               .logits_rows = rows, .n_sample = n_seqs};
    double t0 = 0;
    for (int step = -3; step < STEPS; step++) { // 3 warm-up steps
        if (step == 0) t0 = time_now_s();
        for (int s = 0; s < n_seqs; s++) {
            int p = CONTEXT + step + 3;
            pos[s] = p, ctx[s] = p + 1, slot[s] = bt[s * max_blocks + p / BLOCK] * BLOCK + p % BLOCK;
        }
        gpu_runner_forward(g, &b, logits);
    }
    double dt = (time_now_s() - t0) / STEPS;
    free(tok), free(pos), free(slot), free(qs), free(ctx), free(bt), free(rows);
    return dt;
}

int main(int argc, char **argv) {
    char err[ERR_MAX];
    if (!gpu_runner_available(err)) {
        printf("SKIP: %s\n", err);
        return 0;
    }
    const char *path = argc > 1 ? argv[1] : "config/models/llama-3.1-8b";
    int fmt = argc > 2 ? load_format_parse(argv[2]) : LOAD_DUMMY;
    CHECK(fmt >= 0, "unknown load format %s", argv[2]);
    static const int batches[] = {1, 16, 64, 256};
    int max_seqs = batches[ARRAY_LEN(batches) - 1], max_len = CONTEXT + STEPS + 64;
    int max_blocks = (max_len + BLOCK - 1) / BLOCK;

    double t0 = time_now_s();
    WeightSource src;
    if (wsrc_open(&src, path, (LoadFormat)fmt, err) != SL_OK) DIE("%s", err);
    double t_open = time_now_s() - t0;
    int vocab = src.cfg.vocab;
    float *logits = xmalloc(sizeof(float) * (size_t)max_seqs * vocab);
    for (int eager = 0; eager < 2; eager++) {
        GpuRunnerConfig cfg = {.max_num_batched_tokens = 2048, .max_num_seqs = max_seqs, .max_model_len = max_len,
                               .block_size = BLOCK, .gpu_memory_utilization = 0.9, .enforce_eager = eager};
        GpuRunner *g;
        if (gpu_runner_create(&g, &src, &cfg, err) != SL_OK) DIE("%s", err);
        const GpuRunnerStats *st = gpu_runner_stats(g);
        CHECK(st->num_blocks >= max_seqs * max_blocks, "%d blocks, the benchmark needs %d", st->num_blocks,
              max_seqs * max_blocks);
        const char *mode = eager ? "eager" : "graphs";
        printf("SUMMARY | %s start-up (%s) | source %.2f s, weights up %.2f s, allocation %.2f s, graphs %.2f s (%d "
               "sizes) |\n",
               path, mode, t_open, st->load_s, st->alloc_s, st->graph_s, st->n_graphs);
        for (size_t i = 0; i < ARRAY_LEN(batches); i++) {
            double dt = time_steps(g, batches[i], max_blocks, vocab, logits);
            printf("SUMMARY | decode step, %s, batch %d, context %d | %.3f ms | %.0f tok/s\n", mode, batches[i],
                   CONTEXT, dt * 1e3, batches[i] / dt);
            fflush(stdout);
        }
        gpu_runner_destroy(g);
    }
    free(logits);
    wsrc_close(&src);
    return 0;
}
