// test_gpu_plan.c: the GPU runner's host-side arithmetic, which runs without a GPU: the CUDA
// graph ladder and the choice of a graph for a step, the padding of a decode batch, and the
// memory plan (what the KV cache gets, and that every suggestion in a "does not fit" message
// really fits when taken). The device side is tests/gpu/test_gpu_engine.c.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "engine/gpu_runner.h"
#include "tests/unit/test.h"

#define GIB ((size_t)1 << 30)
#define MIB ((size_t)1 << 20)

// ---- ladder

static void test_ladder(void) {
    static const struct {
        int max_num_seqs, cap, n;
        int sizes[8];
    } cases[] = {
        {1, GPU_LADDER_MAX, 1, {1}},
        {2, GPU_LADDER_MAX, 2, {1, 2}},
        {3, GPU_LADDER_MAX, 3, {1, 2, 3}},
        {8, GPU_LADDER_MAX, 4, {1, 2, 4, 8}},
        {20, GPU_LADDER_MAX, 6, {1, 2, 4, 8, 16, 20}},
        {24, GPU_LADDER_MAX, 6, {1, 2, 4, 8, 16, 24}},
        {256, 4, 4, {1, 2, 4, 256}}, // truncated, the largest kept
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        int sizes[GPU_LADDER_MAX];
        int n = gpu_graph_ladder(cases[i].max_num_seqs, sizes, cases[i].cap);
        EXPECT_EQ_INT(n, cases[i].n);
        for (int j = 0; j < n && j < cases[i].n; j++) EXPECT_EQ_INT(sizes[j], cases[i].sizes[j]);
    }
    // vLLM's shape for any size: 1, 2, 4, 8, then steps of 8, the maximum last
    for (int max = 1; max <= 600; max++) {
        int sizes[GPU_LADDER_MAX];
        int n = gpu_graph_ladder(max, sizes, GPU_LADDER_MAX);
        ASSERT(n >= 1 && sizes[n - 1] == max, "max %d: last %d", max, sizes[n - 1]);
        for (int j = 1; j < n; j++) {
            EXPECT(sizes[j] > sizes[j - 1], "max %d: %d after %d", max, sizes[j], sizes[j - 1]);
            EXPECT(sizes[j] - sizes[j - 1] <= 8, "max %d: gap %d -> %d", max, sizes[j - 1], sizes[j]);
            if (j < n - 1 && sizes[j] <= 8) EXPECT_EQ_INT(sizes[j], 2 * sizes[j - 1]);
            else if (j < n - 1) EXPECT_EQ_INT(sizes[j] % 8, 0);
        }
        EXPECT_EQ_INT(n, max <= 8 ? (max == 1 ? 1 : max == 2 ? 2 : max <= 4 ? 3 : 4) : 3 + (max + 7) / 8);
    }
}

static void test_pick(void) {
    int sizes[GPU_LADDER_MAX];
    int n = gpu_graph_ladder(256, sizes, GPU_LADDER_MAX);
    for (int rows = 1; rows <= 256; rows++) {
        int i = gpu_graph_pick(sizes, n, rows);
        ASSERT(i >= 0, "rows %d", rows);
        EXPECT(sizes[i] >= rows && (i == 0 || sizes[i - 1] < rows), "rows %d -> size %d", rows, sizes[i]);
    }
    EXPECT_EQ_INT(gpu_graph_pick(sizes, n, 257), -1);
    EXPECT_EQ_INT(sizes[gpu_graph_pick(sizes, n, 3)], 4);
    EXPECT_EQ_INT(sizes[gpu_graph_pick(sizes, n, 17)], 24);
    EXPECT_EQ_INT(gpu_graph_pick(sizes, 0, 1), -1); // enforce_eager: no ladder
}

// ---- decode batches and padding

typedef struct {
    int tok[8], pos[8], slot[8], qs[9], ctx[8], bt[8], lrows[8];
} BatchArrays;

static Batch batch_of(BatchArrays *a, int n_tokens, int n_seqs, int n_sample) {
    return (Batch){.n_tokens = n_tokens, .n_seqs = n_seqs, .token_ids = a->tok, .positions = a->pos,
                   .slot_mapping = a->slot, .query_start = a->qs, .context_lens = a->ctx, .block_tables = a->bt,
                   .max_blocks_per_seq = 1, .logits_rows = a->lrows, .n_sample = n_sample};
}

static void test_decode_and_pad(void) {
    BatchArrays a = {.tok = {11, 12, 13}, .pos = {5, 9, 2}, .slot = {37, 41, 66}, .qs = {0, 1, 2, 3},
                     .ctx = {6, 10, 3}, .bt = {2, 2, 4}, .lrows = {0, 1, 2}};
    Batch b = batch_of(&a, 3, 3, 3);
    EXPECT(gpu_batch_is_decode(&b));
    // a sequence with two rows (prefill or a chunk) is not a decode step
    BatchArrays p = a;
    p.qs[1] = 2, p.qs[2] = 3;
    Batch bp = batch_of(&p, 3, 2, 2);
    EXPECT(!gpu_batch_is_decode(&bp));
    Batch be = batch_of(&a, 3, 0, 0);
    EXPECT(!gpu_batch_is_decode(&be));

    int tok[8], pos[8], slot[8], lrows[8];
    memset(tok, 0x55, sizeof tok), memset(pos, 0x55, sizeof pos), memset(slot, 0x55, sizeof slot);
    memset(lrows, 0x55, sizeof lrows);
    Batch bs = batch_of(&a, 3, 3, 2); // only two rows sample
    a.lrows[0] = 2, a.lrows[1] = 0;
    gpu_batch_pad(&bs, 8, tok, pos, slot, lrows);
    for (int t = 0; t < 3; t++) {
        EXPECT_EQ_INT(tok[t], a.tok[t]);
        EXPECT_EQ_INT(pos[t], a.pos[t]);
        EXPECT_EQ_INT(slot[t], a.slot[t]);
    }
    for (int t = 3; t < 8; t++) {
        EXPECT_EQ_INT(tok[t], 0);
        EXPECT_EQ_INT(pos[t], 0);
        EXPECT_EQ_INT(slot[t], -1); // padding rows write no K/V
    }
    EXPECT_EQ_INT(lrows[0], 2);
    EXPECT_EQ_INT(lrows[1], 0);
    for (int i = 2; i < 8; i++) EXPECT_EQ_INT(lrows[i], 0);
}

// ---- memory plan

// Llama-3.1-8B's shape: 32 layers, 8 KV heads of 128, bf16 cache, 16-token blocks.
static GpuPlanInput plan_8b(size_t total, int max_model_len) {
    size_t block_bytes = 2 * (size_t)32 * 16 * 8 * 128 * 2;
    return (GpuPlanInput){.total = total, .in_use = 600 * MIB, .utilization = 0.9,
                          .weight_bytes = (size_t)16060 * MIB, .act_bytes = 8192 * (size_t)59392 * 4,
                          .act_row_bytes = (size_t)59392 * 4, .io_bytes = 256 * ((size_t)128256 * 4 + 8192 * 4),
                          .io_seq_bytes = (size_t)128256 * 4 + 8192 * 4, .workspace_bytes = 100 * MIB,
                          .graph_bytes = 64 * MIB + 35 * 33 * (256 << 10), .block_bytes = block_bytes,
                          .block_size = 16, .max_model_len = max_model_len, .max_num_seqs = 256,
                          .max_num_batched_tokens = 8192};
}

static size_t plan_fixed(const GpuPlanInput *in) {
    return in->in_use + in->weight_bytes + in->act_bytes + in->io_bytes + in->workspace_bytes + in->graph_bytes;
}

// The plan gives the KV cache every whole block left of the budget, and no more.
static void expect_plan_maximal(const GpuPlanInput *in, const GpuPlan *p) {
    EXPECT_EQ_INT(p->budget, (size_t)(in->utilization * (double)in->total));
    EXPECT_EQ_INT(p->kv_bytes, (size_t)p->num_blocks * in->block_bytes);
    EXPECT(plan_fixed(in) + p->kv_bytes <= p->budget, "plan over budget");
    EXPECT(plan_fixed(in) + p->kv_bytes + in->block_bytes > p->budget, "a whole block left unused");
    EXPECT(p->num_blocks >= (in->max_model_len + in->block_size - 1) / in->block_size);
}

static void test_plan_fits(void) {
    char err[ERR_MAX] = "";
    GpuPlan p;
    GpuPlanInput in = plan_8b((size_t)80 * GIB, 131072);
    ASSERT(gpu_plan_make(&p, &in, err) == SL_OK, "%s", err);
    expect_plan_maximal(&in, &p);
    EXPECT(p.num_blocks > 20000 && p.num_blocks < 30000, "%d blocks", p.num_blocks); // ~48 GiB of 2 MiB blocks
    gpu_plan_log(&in, &p, "test device");
    // the same at a higher utilization: more blocks, still maximal
    GpuPlanInput hi = in;
    hi.utilization = 0.95;
    GpuPlan q;
    ASSERT(gpu_plan_make(&q, &hi, err) == SL_OK, "%s", err);
    expect_plan_maximal(&hi, &q);
    EXPECT(q.num_blocks > p.num_blocks);
}

static void test_plan_weights_do_not_fit(void) {
    char err[ERR_MAX] = "";
    GpuPlan p;
    GpuPlanInput in = plan_8b((size_t)16 * GIB, 8192);
    EXPECT(gpu_plan_make(&p, &in, err) == SL_ERR);
    EXPECT(strstr(err, "weights") && strstr(err, "do not fit") && strstr(err, "--gpu-memory-utilization 0.90"),
           "%s", err);
    EXPECT(strchr(err, '\n') == NULL, "one line: %s", err);
}

// The number after flag in err, or -1 when the flag is not there.
static long suggested(const char *err, const char *flag) {
    const char *s = strstr(err, flag);
    return s ? strtol(s + strlen(flag), NULL, 10) : -1;
}

// 24 GiB: the weights fit, a 131072-token sequence's cache does not. Every suggestion in the
// message, taken alone, must make the plan succeed; a max_model_len one higher must not.
static void test_plan_suggestions(void) {
    char err[ERR_MAX] = "";
    GpuPlan p;
    GpuPlanInput in = plan_8b((size_t)24 * GIB, 131072);
    ASSERT(gpu_plan_make(&p, &in, err) == SL_ERR);
    EXPECT(strchr(err, '\n') == NULL, "one line: %s", err);
    long len = suggested(err, "--max-model-len "), rows = suggested(err, "--max-num-batched-tokens ");
    long seqs = suggested(err, "--max-num-seqs ");
    EXPECT(len > 0, "no --max-model-len in: %s", err);
    if (len > 0) {
        GpuPlanInput a = in;
        a.max_model_len = (int)len;
        EXPECT(gpu_plan_make(&p, &a, err) == SL_OK, "--max-model-len %ld: %s", len, err);
        a.max_model_len = (int)len + in.block_size;
        EXPECT(gpu_plan_make(&p, &a, err) == SL_ERR, "--max-model-len %ld + a block fits too", len);
    }
    // 13 GiB short: the activations (1.8 GiB) or the sequences' arrays cannot make room
    EXPECT_EQ_INT(rows, -1);
    EXPECT_EQ_INT(seqs, -1);

    // A little short because of the activations: fewer rows make room.
    in = plan_8b((size_t)24 * GIB, 8192);
    in.act_bytes += (size_t)4 * GIB;
    in.act_row_bytes = in.act_bytes / in.max_num_batched_tokens;
    ASSERT(gpu_plan_make(&p, &in, err) == SL_ERR, "expected a shortfall");
    rows = suggested(err, "--max-num-batched-tokens ");
    EXPECT(rows >= in.max_num_seqs && rows < in.max_num_batched_tokens, "rows %ld in: %s", rows, err);
    if (rows > 0) {
        GpuPlanInput a = in;
        a.act_bytes = in.act_row_bytes * rows;
        a.max_num_batched_tokens = (int)rows;
        EXPECT(gpu_plan_make(&p, &a, err) == SL_OK, "--max-num-batched-tokens %ld: %s", rows, err);
    }

    // ... and because of the sequences' logits (a huge vocabulary): fewer sequences make room.
    in = plan_8b((size_t)24 * GIB, 8192);
    in.io_seq_bytes = 16 * MIB;
    in.io_bytes = in.io_seq_bytes * in.max_num_seqs;
    ASSERT(gpu_plan_make(&p, &in, err) == SL_ERR, "expected a shortfall");
    seqs = suggested(err, "--max-num-seqs ");
    EXPECT(seqs >= 1 && seqs < in.max_num_seqs, "seqs %ld in: %s", seqs, err);
    if (seqs > 0) {
        GpuPlanInput a = in;
        a.io_bytes = in.io_seq_bytes * seqs;
        a.max_num_seqs = (int)seqs;
        EXPECT(gpu_plan_make(&p, &a, err) == SL_OK, "--max-num-seqs %ld: %s", seqs, err);
    }
}

// Nothing left for the cache at all: no --max-model-len to offer.
static void test_plan_no_room(void) {
    char err[ERR_MAX] = "";
    GpuPlan p;
    GpuPlanInput in = plan_8b((size_t)20 * GIB, 4096);
    ASSERT(gpu_plan_make(&p, &in, err) == SL_ERR);
    EXPECT(strstr(err, "0 blocks") && suggested(err, "--max-model-len ") == -1, "%s", err);
    EXPECT(strstr(err, "--gpu-memory-utilization"), "%s", err);
}

// The default model (SmolLM2-135M) fits anywhere with its whole context many times over.
static void test_plan_small_model(void) {
    char err[ERR_MAX] = "";
    GpuPlan p;
    size_t block = 2 * (size_t)30 * 16 * 3 * 64 * 2;
    GpuPlanInput in = {.total = (size_t)80 * GIB, .in_use = 500 * MIB, .utilization = 0.5,
                       .weight_bytes = 270 * MIB, .act_bytes = 32 * MIB, .act_row_bytes = 7488 * 4,
                       .io_bytes = 64 * (49152 * 4 + 512 * 4), .io_seq_bytes = 49152 * 4 + 512 * 4,
                       .workspace_bytes = 60 * MIB, .graph_bytes = 0, .block_bytes = block, .block_size = 16,
                       .max_model_len = 8192, .max_num_seqs = 64, .max_num_batched_tokens = 2048};
    ASSERT(gpu_plan_make(&p, &in, err) == SL_OK, "%s", err);
    expect_plan_maximal(&in, &p);
    EXPECT((long)p.num_blocks * 16 > 100L * 8192, "%d blocks", p.num_blocks);
}

int main(void) {
    TEST_RUN(test_ladder);
    TEST_RUN(test_pick);
    TEST_RUN(test_decode_and_pad);
    TEST_RUN(test_plan_fits);
    TEST_RUN(test_plan_weights_do_not_fit);
    TEST_RUN(test_plan_suggestions);
    TEST_RUN(test_plan_no_room);
    TEST_RUN(test_plan_small_model);
    return test_summary();
}
