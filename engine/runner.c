// runner.c: the KV caches, Batch building and the forward call, on the CPU ranks or the GPU.
// See runner.h.
#include "engine/runner.h"

#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "config/config.h" // fmt_bytes
#include "engine/sampling/sampler.h" // sampler_argmax: the draft's proposals are greedy tokens

static inline int cdiv(int a, int b) { return (a + b - 1) / b; }
static void runner_draft_mirror(Runner *r, const SchedOutput *out);

// What both backends share: the batch arrays and the logits rows (logits_rows of them).
static void runner_init_common(Runner *r, int vocab, const RunnerConfig *cfg, int logits_rows) {
    CHECK(cfg->block_size > 0 && cfg->max_num_seqs > 0 && cfg->max_model_len > 0 && cfg->max_num_batched_tokens > 0);
    r->cfg = *cfg;
    r->vocab = vocab;
    batch_buf_init(&r->bb, cfg->max_num_batched_tokens, cfg->max_num_seqs, cdiv(cfg->max_model_len, cfg->block_size));
    r->entry_logits_row = xmalloc((size_t)cfg->max_num_seqs * sizeof(int));
    r->entry_prompt_row = xmalloc((size_t)cfg->max_num_seqs * sizeof(int));
    r->logits_cap = logits_rows;
    // a large aligned allocation is fresh anonymous memory: rows beyond the sampled ones cost
    // address space until prompt logprobs write them
    r->logits = xmalloc_aligned((size_t)r->logits_cap * vocab * sizeof(float));
}

int runner_init_cpu(Runner *r, Model *models, int tp_size, Model *draft, const RunnerConfig *cfg, char *err) {
    memset(r, 0, sizeof(*r));
    CHECK(tp_size >= 1 && cfg->threads_per_rank >= 1);
    const ModelConfig *c = &models[0].cfg;
    for (int i = 0; i < tp_size; i++)
        CHECK(cfg->max_num_batched_tokens <= models[i].max_tokens, "rank %d was loaded for %d rows, the runner wants %d",
              i, models[i].max_tokens, cfg->max_num_batched_tokens);
    // A block is every rank's share: the ranks' KV heads add up to the model's.
    size_t block_bytes = 0;
    for (int i = 0; i < tp_size; i++)
        block_bytes += kv_cache_block_bytes(c->n_layers, models[i].n_kv_heads, c->head_dim, cfg->block_size,
                                            cfg->kv_dtype);
    if (draft) {
        CHECK(draft->tp_size == 1 && cfg->max_num_batched_tokens <= draft->max_tokens);
        block_bytes += kv_cache_block_bytes(draft->cfg.n_layers, draft->cfg.n_kv_heads, draft->cfg.head_dim,
                                            cfg->block_size, cfg->kv_dtype);
    }
    size_t mem = cfg->kv_cache_memory ? cfg->kv_cache_memory : kv_cache_default_memory();
    int num_blocks = kv_cache_blocks_in(mem, block_bytes, cfg->block_size);
    if (num_blocks < 1) {
        char a[32], b[32];
        return seterr(err, "--kv-cache-memory: %s holds no KV block (one block of %d tokens takes %s)",
                      fmt_bytes(mem, a, sizeof a), cfg->block_size, fmt_bytes(block_bytes, b, sizeof b));
    }
    // CPU: a logits row per batched token, for prompt logprobs (every row of a chunk)
    runner_init_common(r, c->vocab, cfg, MAX(cfg->max_num_seqs, cfg->max_num_batched_tokens));
    r->cfg.kv_cache_memory = mem;
    r->models = models;
    r->tp_size = tp_size;
    r->num_blocks = num_blocks;
    r->block_bytes = block_bytes;
    r->kv = xcalloc((size_t)tp_size, sizeof(KVCache));
    for (int i = 0; i < tp_size; i++) {
        kv_cache_init(&r->kv[i], c->n_layers, models[i].n_kv_heads, c->head_dim, cfg->block_size, cfg->kv_dtype,
                             num_blocks);
        r->kv_bytes += r->kv[i].bytes;
    }
    if (draft) {
        const ModelConfig *d = &draft->cfg;
        r->draft = draft;
        kv_cache_init(&r->draft_kv, d->n_layers, d->n_kv_heads, d->head_dim, cfg->block_size, cfg->kv_dtype,
                      num_blocks);
        r->kv_bytes += r->draft_kv.bytes;
        batch_buf_init(&r->draft_bb, cfg->max_num_batched_tokens, cfg->max_num_seqs,
                       cdiv(cfg->max_model_len, cfg->block_size));
        r->draft_logits = xmalloc_aligned((size_t)cfg->max_num_seqs * d->vocab * sizeof(float));
    }
    tp_start(&r->tp, models, r->kv, tp_size, cfg->threads_per_rank);
    return SL_OK;
}

void runner_init_gpu(Runner *r, GpuRunner *g, int vocab, const ModelConfig *mc, const RunnerConfig *cfg) {
    memset(r, 0, sizeof(*r));
    runner_init_common(r, vocab, cfg, cfg->max_num_seqs);
    const GpuRunnerStats *st = gpu_runner_stats(g);
    r->gpu = g;
    r->tp_size = 1;
    r->num_blocks = st->num_blocks;
    r->kv_bytes = st->kv_bytes;
    r->block_bytes = kv_cache_block_bytes(mc->n_layers, mc->n_kv_heads, mc->head_dim, cfg->block_size, KV_BF16);
}

void runner_free(Runner *r) {
    tp_stop(&r->tp);
    if (r->kv)
        for (int i = 0; i < r->tp_size; i++) kv_cache_free(&r->kv[i]);
    free(r->kv);
    kv_cache_free(&r->draft_kv);
    batch_buf_free(&r->draft_bb);
    free(r->draft_logits);
    batch_buf_free(&r->bb);
    free(r->entry_logits_row);
    free(r->entry_prompt_row);
    free(r->logits);
    memset(r, 0, sizeof(*r));
}

void runner_thread_init(const Runner *r) {
    if (r->gpu) return;
    if (!r->draft) {
        tp_kernels_init(&r->tp, 0);
        return;
    }
    // the draft runs here too: scratch for the wider of rank 0's and the draft's matmul inputs
    const Model *m = &r->models[0];
    k_init(r->cfg.threads_per_rank, m->max_tokens, MAX(model_max_cols(m), model_max_cols(r->draft)));
}

void runner_thread_done(const Runner *r) {
    if (!r->gpu) k_free();
}

void runner_log_plan(const Runner *r, int max_model_len) {
    char w[32], o[32], a[32], l[32], kv[32], blk[32];
    size_t logits_bytes = (size_t)r->cfg.max_num_seqs * r->vocab * sizeof(float);
    long tokens = (long)r->num_blocks * r->cfg.block_size;
    log_info("memory plan:");
    if (r->gpu) {
        const GpuRunnerStats *st = gpu_runner_stats(r->gpu);
        char ws[32], gr[32];
        log_info("  (the device's own plan is logged above)");
        log_info("  weights      %12s  (on the device)", fmt_bytes(st->weight_bytes, w, sizeof w));
        log_info("  activations  %12s  (%d rows per step)", fmt_bytes(st->act_bytes, a, sizeof a),
                 r->cfg.max_num_batched_tokens);
        log_info("  workspace    %12s", fmt_bytes(st->workspace_bytes, ws, sizeof ws));
        log_info("  CUDA graphs  %12s  (%d decode batch sizes)", fmt_bytes(st->graph_bytes, gr, sizeof gr),
                 st->n_graphs);
        log_info("  host logits  %12s  (%d rows of %d)", fmt_bytes(logits_bytes, l, sizeof l), r->cfg.max_num_seqs,
                 r->vocab);
        log_info("  KV cache     %12s  (%d blocks of %d tokens, %s each, bf16; %ld tokens = %.1f x max_model_len %d)",
                 fmt_bytes(r->kv_bytes, kv, sizeof kv), r->num_blocks, r->cfg.block_size,
                 fmt_bytes(r->block_bytes, blk, sizeof blk), tokens, (double)tokens / max_model_len, max_model_len);
        return;
    }
    size_t weights = 0, owned = 0, act = 0;
    for (int i = 0; i < r->tp_size; i++) {
        weights += r->models[i].weight_bytes;
        owned += r->models[i].owned_bytes;
        act += r->models[i].s.bytes;
    }
    const char *per = r->tp_size > 1 ? ", all ranks" : "";
    log_info("  weights      %12s  (%s of them copied or converted at load%s)", fmt_bytes(weights, w, sizeof w),
             fmt_bytes(owned, o, sizeof o), per);
    log_info("  activations  %12s  (%d rows per step%s)", fmt_bytes(act, a, sizeof a), r->models[0].max_tokens, per);
    log_info("  logits       %12s  (%d rows of %d; up to %d rows, untouched until prompt logprobs use them)",
             fmt_bytes(logits_bytes, l, sizeof l), r->cfg.max_num_seqs, r->vocab, r->logits_cap);
    log_info("  KV cache     %12s  (%d blocks of %d tokens, %s each%s, %s; %ld tokens = %.1f x max_model_len %d)",
             fmt_bytes(r->kv_bytes, kv, sizeof kv), r->num_blocks, r->cfg.block_size,
             fmt_bytes(r->block_bytes, blk, sizeof blk), per, r->cfg.kv_dtype == KV_F16 ? "f16" : "f32", tokens,
             (double)tokens / max_model_len, max_model_len);
    if (r->draft) {
        const Model *d = r->draft;
        char dw[32], da[32], dkv[32];
        log_info("  draft model  %12s  weights, %s activations, KV cache %s (its share of each block above; "
                 "%d layers, %d KV heads of dim %d)", fmt_bytes(d->weight_bytes, dw, sizeof dw),
                 fmt_bytes(d->s.bytes, da, sizeof da), fmt_bytes(r->draft_kv.bytes, dkv, sizeof dkv),
                 d->cfg.n_layers, d->cfg.n_kv_heads, d->cfg.head_dim);
    }
    for (int i = 0; r->tp_size > 1 && i < r->tp_size; i++) {
        const Model *m = &r->models[i];
        char rw[32], rkv[32];
        log_info("  rank %-2d      weights %s, KV cache %s (%d of %d KV heads, %d of %d query heads, vocabulary rows "
                 "%d..%d)", i, fmt_bytes(m->weight_bytes, rw, sizeof rw), fmt_bytes(r->kv[i].bytes, rkv, sizeof rkv),
                 m->n_kv_heads, m->cfg.n_kv_heads, m->n_heads, m->cfg.n_heads, m->vocab_lo,
                 m->vocab_lo + m->vocab_n - 1);
    }
}

bool runner_has_prompt_rows(const Runner *r) {
    return !r->gpu && r->logits_cap >= MAX(r->cfg.max_num_seqs, r->cfg.max_num_batched_tokens);
}

void runner_step(Runner *r, const SchedOutput *out, const int *prompt_rows) {
    BatchBuf *bb = &r->bb;
    batch_buf_clear(bb);
    int n_sample = 0;
    for (int e = 0; e < out->num_entries; e++) {
        const SchedEntry *en = &out->entries[e];
        const Sequence *seq = en->seq;
        int samples = en->num_samples > 0, n = en->num_new_tokens;
        int want = prompt_rows ? prompt_rows[e] : 0;
        CHECK(want >= 0 && want <= n);
        // batch_buf_add takes the chunk's last rows: for prompt rows take them all, so the
        // sampling row (the last) and the prompt rows (the first `want`) share one range
        // a speculative decode: a row for its last token and one for each proposal
        int n_logits = want > 0 ? n : samples ? 1 + en->num_spec : 0;
        CHECK(en->num_spec == 0 || want == 0);
        batch_buf_add(bb, seq->block_table, seq->num_blocks, r->cfg.block_size, en->start_pos,
                      seq->tokens + en->start_pos, n, n_logits);
        r->entry_prompt_row[e] = want > 0 ? n_sample : -1;
        r->entry_logits_row[e] = samples ? n_sample + n_logits - 1 : -1;
        n_sample += n_logits;
    }
    CHECK(bb->b.n_tokens == out->num_tokens && bb->b.n_sample == n_sample);
    CHECK(n_sample <= r->logits_cap, "%d logits rows, room for %d", n_sample, r->logits_cap);
    if (r->gpu) {
        // copy-on-write first: the forward writes into the copies
        for (int i = 0; i < out->num_copies; i++) gpu_runner_copy_block(r->gpu, out->copies[i].src, out->copies[i].dst);
        if (bb->b.n_tokens > 0) gpu_runner_forward(r->gpu, &bb->b, r->logits);
        return;
    }
    tp_step(&r->tp, out->copies, out->num_copies, &bb->b, r->logits);
    if (r->draft) runner_draft_mirror(r, out);
}

void runner_draft(Runner *r, const SchedOutput *out, int n_vocab) {
    CHECK(r->draft && !r->draft_done && n_vocab <= r->draft->cfg.vocab);
    for (int i = 0; i < out->num_copies; i++) kv_cache_copy_block(&r->draft_kv, out->copies[i].src, out->copies[i].dst);
    int kmax = 0;
    for (int e = 0; e < out->num_entries; e++) kmax = MAX(kmax, out->entries[e].num_spec);
    BatchBuf *bb = &r->draft_bb;
    for (int j = 0; j < kmax; j++) {
        // one row per sequence still proposing: the token at start_pos + j predicts proposal j
        batch_buf_clear(bb);
        for (int e = 0; e < out->num_entries; e++) {
            const SchedEntry *en = &out->entries[e];
            if (en->num_spec <= j) continue;
            const Sequence *seq = en->seq;
            int pos = en->start_pos + j;
            batch_buf_add(bb, seq->block_table, seq->num_blocks, r->cfg.block_size, pos, seq->tokens + pos, 1, 1);
        }
        model_forward(r->draft, r->draft_kv.layers, &bb->b, r->draft_logits);
        for (int e = 0, row = 0; e < out->num_entries; e++) {
            const SchedEntry *en = &out->entries[e];
            if (en->num_spec <= j) continue;
            const float *l = r->draft_logits + (size_t)row++ * r->draft->cfg.vocab;
            en->seq->tokens[en->start_pos + j + 1] = sampler_argmax(l, n_vocab);
        }
    }
    r->draft_done = true;
}

// After the target's forward: the draft computes the KV of every row the target did that it has
// not: a speculative entry's last proposal (runner_draft fed the others), every row of the rest.
static void runner_draft_mirror(Runner *r, const SchedOutput *out) {
    CHECK(r->draft_done, "runner_step with a draft model needs runner_draft first");
    r->draft_done = false;
    BatchBuf *bb = &r->draft_bb;
    batch_buf_clear(bb);
    for (int e = 0; e < out->num_entries; e++) {
        const SchedEntry *en = &out->entries[e];
        const Sequence *seq = en->seq;
        int pos = en->num_spec > 0 ? en->start_pos + en->num_spec : en->start_pos;
        int n = en->start_pos + en->num_new_tokens - pos;
        batch_buf_add(bb, seq->block_table, seq->num_blocks, r->cfg.block_size, pos, seq->tokens + pos, n, 0);
    }
    if (bb->b.n_tokens > 0) model_forward(r->draft, r->draft_kv.layers, &bb->b, NULL);
}
