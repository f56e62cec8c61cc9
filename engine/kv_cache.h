// kv_cache.h: the KV-cache slab and the flattened step that addresses it (DESIGN.md §4).
//
// KVCache is one allocation carved into layers, each layer into K and V, each into num_blocks
// blocks of block_size token slots (slot = block * block_size + offset). It is memory only:
// which sequence holds which block is the block pool's business (scheduler/block_pool.h), and
// the pool's block ids are the cache's block indices. With tensor parallelism every rank has a
// cache with the same num_blocks, each holding only its own KV heads.
//
// BatchBuf flattens one or more sequences' new tokens, with their block tables, into the Batch
// arrays model_forward reads.
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "kernels/kernels.h"

typedef struct {
    void *slab;       // the one allocation
    size_t bytes;
    KVLayer *layers;  // [n_layers] views into slab
    int n_layers, num_blocks, block_size, n_kv_heads, head_dim;
    KVType dtype;
} KVCache;

// Bytes one block takes across all layers (K and V).
size_t kv_cache_block_bytes(int n_layers, int n_kv_heads, int head_dim, int block_size, KVType dtype);
// The most blocks of per_block bytes that mem_bytes holds, capped so that every slot id fits an int.
int kv_cache_blocks_in(size_t mem_bytes, size_t per_block, int block_size);
// The CPU cache's size when --kv-cache-memory is 0: min(2 GiB, a quarter of physical memory or of
// the cgroup's memory.max when that is smaller). Enough for tens of thousands of tokens of a
// small model, and the slab's pages are only touched as blocks fill.
size_t kv_cache_default_memory(void);
// num_blocks blocks (> 0). The slab is not touched here: pages become resident as the cache fills.
void kv_cache_init(KVCache *kv, int n_layers, int n_kv_heads, int head_dim, int block_size, KVType dtype,
                   int num_blocks);
void kv_cache_free(KVCache *kv); // accepts a zeroed struct
// Copies block src to block dst in every layer, K and V (copy-on-write of a partial block).
void kv_cache_copy_block(KVCache *kv, int src, int dst);

// ---- building a Batch
typedef struct {
    Batch b;  // what model_forward reads; its pointers point at the arrays below
    int *token_ids, *positions, *slot_mapping; // [max_tokens]
    int *query_start;                          // [max_seqs + 1]
    int *context_lens;                         // [max_seqs]
    int *block_tables;                         // [max_seqs * max_blocks_per_seq]
    int *logits_rows;                          // [max_tokens]
    int max_tokens, max_seqs, max_blocks_per_seq;
} BatchBuf;

void batch_buf_init(BatchBuf *bb, int max_tokens, int max_seqs, int max_blocks_per_seq);
void batch_buf_free(BatchBuf *bb);
void batch_buf_clear(BatchBuf *bb);
// Appends a sequence's n new tokens at positions pos0..pos0+n-1; block_table[0..n_blocks) are
// its blocks (block i holds positions [i * block_size, (i + 1) * block_size)) and must cover
// them. The last n_logits of these rows are added to logits_rows. Returns the batch row of the
// first.
int batch_buf_add(BatchBuf *bb, const int *block_table, int n_blocks, int block_size, int pos0, const int *tokens,
                  int n, int n_logits);
