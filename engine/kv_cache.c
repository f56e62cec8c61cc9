// kv_cache.c: see kv_cache.h.
#include "engine/kv_cache.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"

static size_t kv_elem_bytes(KVType t) { return t == KV_F32 ? 4 : 2; }

size_t kv_cache_block_bytes(int n_layers, int n_kv_heads, int head_dim, int block_size, KVType dtype) {
    // K and V, every layer
    return (size_t)2 * n_layers * block_size * n_kv_heads * head_dim * kv_elem_bytes(dtype);
}

int kv_cache_blocks_in(size_t mem_bytes, size_t per_block, int block_size) {
    size_t n = mem_bytes / per_block;
    size_t cap = ((size_t)1 << 30) / (size_t)block_size; // slots fit an int
    return (int)MIN(n, cap);
}

size_t kv_cache_default_memory(void) {
    size_t cap = (size_t)2 << 30;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    size_t ram = pages > 0 && page > 0 ? (size_t)pages * (size_t)page : 0;
    size_t limit = cgroup_memory_limit("/sys/fs/cgroup"); // a container's share, when it has one
    if (limit > 0 && (ram == 0 || limit < ram)) ram = limit;
    if (ram > 0) cap = MIN(cap, ram / 4);
    return cap;
}

void kv_cache_init(KVCache *kv, int n_layers, int n_kv_heads, int head_dim, int block_size, KVType dtype,
                   int num_blocks) {
    memset(kv, 0, sizeof *kv);
    CHECK(n_layers > 0 && n_kv_heads > 0 && head_dim > 0 && block_size > 0 && num_blocks > 0);
    kv->n_layers = n_layers;
    kv->num_blocks = num_blocks;
    kv->block_size = block_size;
    kv->n_kv_heads = n_kv_heads;
    kv->head_dim = head_dim;
    kv->dtype = dtype;
    kv->bytes = (size_t)num_blocks * kv_cache_block_bytes(n_layers, n_kv_heads, head_dim, block_size, dtype);
    // Large aligned allocations come from fresh anonymous pages: nothing is resident until a
    // slot is written, so a generous --kv-cache-memory costs address space, not RAM.
    kv->slab = xmalloc_aligned(kv->bytes);
    size_t half = kv->bytes / n_layers / 2; // one layer's K (or V)
    kv->layers = xcalloc(n_layers, sizeof(KVLayer));
    for (int l = 0; l < n_layers; l++) {
        KVLayer *L = &kv->layers[l];
        L->k = (char *)kv->slab + (size_t)(2 * l) * half;
        L->v = (char *)kv->slab + (size_t)(2 * l + 1) * half;
        L->num_blocks = num_blocks;
        L->block_size = block_size;
        L->n_kv_heads = n_kv_heads;
        L->head_dim = head_dim;
        L->dtype = dtype;
    }
}

void kv_cache_copy_block(KVCache *kv, int src, int dst) {
    CHECK(src >= 0 && src < kv->num_blocks && dst >= 0 && dst < kv->num_blocks && src != dst, "%d -> %d of %d", src,
          dst, kv->num_blocks);
    size_t n = kv->bytes / kv->n_layers / 2 / (size_t)kv->num_blocks; // one block of one layer's K (or V)
    for (int l = 0; l < kv->n_layers; l++) {
        KVLayer *L = &kv->layers[l];
        memcpy((char *)L->k + (size_t)dst * n, (char *)L->k + (size_t)src * n, n);
        memcpy((char *)L->v + (size_t)dst * n, (char *)L->v + (size_t)src * n, n);
    }
}

void kv_cache_free(KVCache *kv) {
    free(kv->slab);
    free(kv->layers);
    memset(kv, 0, sizeof *kv);
}

// ----------------------------------------------------------------------------
// batch building

void batch_buf_init(BatchBuf *bb, int max_tokens, int max_seqs, int max_blocks_per_seq) {
    memset(bb, 0, sizeof *bb);
    CHECK(max_tokens > 0 && max_seqs > 0 && max_blocks_per_seq > 0);
    bb->max_tokens = max_tokens;
    bb->max_seqs = max_seqs;
    bb->max_blocks_per_seq = max_blocks_per_seq;
    bb->token_ids = xcalloc(max_tokens, sizeof(int));
    bb->positions = xcalloc(max_tokens, sizeof(int));
    bb->slot_mapping = xcalloc(max_tokens, sizeof(int));
    bb->logits_rows = xcalloc(max_tokens, sizeof(int));
    bb->query_start = xcalloc(max_seqs + 1, sizeof(int));
    bb->context_lens = xcalloc(max_seqs, sizeof(int));
    bb->block_tables = xcalloc((size_t)max_seqs * max_blocks_per_seq, sizeof(int));
    batch_buf_clear(bb);
}

void batch_buf_free(BatchBuf *bb) {
    free(bb->token_ids);
    free(bb->positions);
    free(bb->slot_mapping);
    free(bb->logits_rows);
    free(bb->query_start);
    free(bb->context_lens);
    free(bb->block_tables);
    memset(bb, 0, sizeof *bb);
}

void batch_buf_clear(BatchBuf *bb) {
    bb->b = (Batch){
        .n_tokens = 0,
        .n_seqs = 0,
        .token_ids = bb->token_ids,
        .positions = bb->positions,
        .slot_mapping = bb->slot_mapping,
        .query_start = bb->query_start,
        .context_lens = bb->context_lens,
        .block_tables = bb->block_tables,
        .max_blocks_per_seq = bb->max_blocks_per_seq,
        .logits_rows = bb->logits_rows,
        .n_sample = 0,
    };
    bb->query_start[0] = 0;
}

int batch_buf_add(BatchBuf *bb, const int *block_table, int n_blocks, int block_size, int pos0, const int *tokens,
                  int n, int n_logits) {
    Batch *b = &bb->b;
    CHECK(n > 0 && n_logits >= 0 && n_logits <= n);
    CHECK(b->n_tokens + n <= bb->max_tokens, "%d + %d rows > %d", b->n_tokens, n, bb->max_tokens);
    CHECK(b->n_seqs < bb->max_seqs);
    int ctx = pos0 + n;
    int need = (ctx + block_size - 1) / block_size;
    CHECK(need <= n_blocks && need <= bb->max_blocks_per_seq, "%d positions, %d blocks held", ctx, n_blocks);
    int row0 = b->n_tokens, seq = b->n_seqs;
    for (int i = 0; i < n; i++) {
        int p = pos0 + i;
        bb->token_ids[row0 + i] = tokens[i];
        bb->positions[row0 + i] = p;
        bb->slot_mapping[row0 + i] = block_table[p / block_size] * block_size + p % block_size;
    }
    for (int i = n - n_logits; i < n; i++) bb->logits_rows[b->n_sample++] = row0 + i;
    int *table = bb->block_tables + (size_t)seq * bb->max_blocks_per_seq;
    memcpy(table, block_table, sizeof(int) * need);
    for (int i = need; i < bb->max_blocks_per_seq; i++) table[i] = -1;
    bb->context_lens[seq] = ctx;
    b->n_tokens += n;
    b->n_seqs++;
    bb->query_start[b->n_seqs] = b->n_tokens;
    return row0;
}
