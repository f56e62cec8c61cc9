// kv_cache.h: the KV-cache slab and the flattened step that addresses it (DESIGN.md §4).
//
// KVCache is one allocation carved into layers, each layer into K and V, each into num_blocks
// blocks of block_size token slots (slot = block * block_size + offset). Block ids come from a
// simple free stack here; the paged scheduler's block pool (refcounts, prefix cache) replaces
// it in a later issue and then only the memory part stays.
//
// KVSeq is one sequence's list of blocks; BatchBuf flattens one or more sequences' new tokens
// into the Batch arrays model_forward reads.
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
    int *free_ids;    // stack of free block ids
    int n_free;
} KVCache;

// Bytes one block takes across all layers (K and V).
size_t kv_cache_block_bytes(int n_layers, int n_kv_heads, int head_dim, int block_size, KVType dtype);
// Allocates as many whole blocks as fit in mem_bytes. SL_ERR when not even one fits. The slab
// is not touched here: pages become resident as the cache fills.
int kv_cache_init(KVCache *kv, int n_layers, int n_kv_heads, int head_dim, int block_size,
                  KVType dtype, size_t mem_bytes, char *err);
// Exactly num_blocks blocks (tensor parallelism: every rank's cache has the same block ids, each
// with only its own KV heads).
void kv_cache_init_blocks(KVCache *kv, int n_layers, int n_kv_heads, int head_dim, int block_size, KVType dtype,
                          int num_blocks);
// The most blocks of per_block bytes that mem_bytes holds, capped so that every slot id fits an int.
int kv_cache_blocks_in(size_t mem_bytes, size_t per_block, int block_size);
void kv_cache_free(KVCache *kv);
// Copies block src to block dst in every layer, K and V (copy-on-write of a partial block).
void kv_cache_copy_block(KVCache *kv, int src, int dst);
int kv_cache_block_alloc(KVCache *kv); // a free block id, or -1 when none is left
void kv_cache_block_release(KVCache *kv, int id);

// ---- one sequence's blocks
typedef struct {
    int *blocks;   // block ids, blocks[i] holds positions [i * block_size, (i + 1) * block_size)
    int n_blocks, cap;
} KVSeq;

// Makes sure positions [0, n_positions) have blocks; SL_ERR when the cache runs out (the
// blocks already held stay held).
int kv_seq_reserve(KVSeq *s, KVCache *kv, int n_positions, char *err);
// Gives every block back and frees the list.
void kv_seq_release(KVSeq *s, KVCache *kv);

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
// Appends a sequence's n new tokens at positions pos0..pos0+n-1 (its blocks must cover them);
// the last n_logits of these rows are added to logits_rows. Returns the batch row of the first.
int batch_buf_add(BatchBuf *bb, const KVSeq *s, int block_size, int pos0, const int *tokens, int n,
                  int n_logits);
