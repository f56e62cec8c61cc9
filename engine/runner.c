// runner.c: the KV slab, copy-on-write copies, Batch building and the forward call. See runner.h.
#include "engine/runner.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "config/config.h" // fmt_bytes

static inline int cdiv(int a, int b) { return (a + b - 1) / b; }

size_t runner_default_kv_memory(void) {
    size_t cap = (size_t)2 << 30;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) cap = MIN(cap, (size_t)pages * (size_t)page / 4);
    return cap;
}

int runner_init(Runner *r, Model *m, const RunnerConfig *cfg, char *err) {
    memset(r, 0, sizeof(*r));
    CHECK(cfg->block_size > 0 && cfg->max_num_seqs > 0 && cfg->max_model_len > 0);
    CHECK(cfg->max_num_batched_tokens > 0 && cfg->max_num_batched_tokens <= m->max_tokens,
          "the model was loaded for %d rows, the runner wants %d", m->max_tokens, cfg->max_num_batched_tokens);
    const ModelConfig *c = &m->cfg;
    size_t mem = cfg->kv_cache_memory ? cfg->kv_cache_memory : runner_default_kv_memory();
    if (kv_cache_init(&r->kv, c->n_layers, c->n_kv_heads, c->head_dim, cfg->block_size, cfg->kv_dtype, mem, err) !=
        SL_OK)
        return SL_ERR;
    r->model = m;
    r->cfg = *cfg;
    r->cfg.kv_cache_memory = mem;
    r->vocab = c->vocab;
    r->block_bytes = kv_cache_block_bytes(c->n_layers, c->n_kv_heads, c->head_dim, cfg->block_size, cfg->kv_dtype);
    r->layer_block_bytes = r->block_bytes / (2 * (size_t)c->n_layers);
    batch_buf_init(&r->bb, cfg->max_num_batched_tokens, cfg->max_num_seqs, cdiv(cfg->max_model_len, cfg->block_size));
    r->entry_logits_row = xmalloc((size_t)cfg->max_num_seqs * sizeof(int));
    r->logits = xmalloc_aligned((size_t)cfg->max_num_seqs * c->vocab * sizeof(float));
    return SL_OK;
}

void runner_free(Runner *r) {
    kv_cache_free(&r->kv);
    batch_buf_free(&r->bb);
    free(r->entry_logits_row);
    free(r->logits);
    memset(r, 0, sizeof(*r));
}

void runner_log_plan(const Runner *r, int max_model_len) {
    const Model *m = r->model;
    char w[32], a[32], l[32], kv[32], blk[32];
    size_t logits_bytes = (size_t)r->cfg.max_num_seqs * r->vocab * sizeof(float);
    long tokens = (long)r->kv.num_blocks * r->cfg.block_size;
    log_info("memory plan:");
    log_info("  weights      %12s  (mapped from the file)", fmt_bytes(m->weight_bytes, w, sizeof w));
    log_info("  activations  %12s  (%d rows per step)", fmt_bytes(m->s.bytes, a, sizeof a), m->max_tokens);
    log_info("  logits       %12s  (%d rows of %d)", fmt_bytes(logits_bytes, l, sizeof l), r->cfg.max_num_seqs, r->vocab);
    log_info("  KV cache     %12s  (%d blocks of %d tokens, %s each, %s; %ld tokens = %.1f x max_model_len %d)",
             fmt_bytes(r->kv.bytes, kv, sizeof kv), r->kv.num_blocks, r->cfg.block_size,
             fmt_bytes(r->block_bytes, blk, sizeof blk), r->cfg.kv_dtype == KV_F16 ? "f16" : "f32", tokens,
             (double)tokens / max_model_len, max_model_len);
}

void runner_copy_block(Runner *r, int32_t src, int32_t dst) {
    CHECK(src >= 0 && src < r->kv.num_blocks && dst >= 0 && dst < r->kv.num_blocks && src != dst);
    size_t n = r->layer_block_bytes;
    for (int l = 0; l < r->kv.n_layers; l++) {
        KVLayer *L = &r->kv.layers[l];
        memcpy((char *)L->k + (size_t)dst * n, (char *)L->k + (size_t)src * n, n);
        memcpy((char *)L->v + (size_t)dst * n, (char *)L->v + (size_t)src * n, n);
    }
}

void runner_step(Runner *r, const SchedOutput *out) {
    // copy-on-write first: the forward below writes into the copies
    for (int i = 0; i < out->num_copies; i++) runner_copy_block(r, out->copies[i].src, out->copies[i].dst);

    BatchBuf *bb = &r->bb;
    batch_buf_clear(bb);
    int n_sample = 0;
    for (int e = 0; e < out->num_entries; e++) {
        const SchedEntry *en = &out->entries[e];
        const Sequence *seq = en->seq;
        // a view of the sequence's block table in the shape batch_buf_add reads
        KVSeq view = {.blocks = seq->block_table, .n_blocks = seq->num_blocks, .cap = seq->max_blocks};
        int samples = en->num_samples > 0;
        batch_buf_add(bb, &view, r->cfg.block_size, en->start_pos, seq->tokens + en->start_pos,
                      en->num_new_tokens, samples);
        r->entry_logits_row[e] = samples ? n_sample++ : -1;
    }
    CHECK(bb->b.n_tokens == out->num_tokens && bb->b.n_sample == n_sample);
    if (bb->b.n_tokens > 0) model_forward(r->model, &r->kv, &bb->b, r->logits);
}
