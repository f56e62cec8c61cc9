// block_pool.h: the KV-cache block pool: ids, reference counts, free list and prefix cache.
//
// The pool hands out block ids 0..num_blocks-1 and never sees memory (DESIGN.md §4). A block is
// in exactly one of three places:
//   free   refcount 0, not cached: on the free list, handed out first;
//   cached refcount 0, its hash in the prefix cache: on the LRU list, reusable by a prefix hit,
//          evicted (hash dropped) least recently released first when the free list is empty;
//   used   refcount >= 1: held by that many block tables.
// so free + cached + used == num_blocks at all times (blockpool_check verifies it).
//
// Prefix caching (vLLM's automatic prefix caching): a full block of token ids is keyed by a
// chained 64-bit hash of (the previous block's hash, its token ids, the adapter id). The pool
// keeps, per cached block, its token ids, parent hash and adapter, and a lookup hits only when
// all of them match, so a 64-bit collision never serves wrong KV on its own.
//
// All memory is allocated by blockpool_init; no other function allocates.
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// The parent hash of a sequence's first block.
#define BLOCKPOOL_HASH_ROOT 0x736c756963652121ULL // "sluice!!"

typedef struct {
    int num_blocks;
    int block_size;

    int32_t *refcount;     // (num_blocks,)
    uint8_t *cached;       // (num_blocks,) 1 when the block's hash is in the table
    uint64_t *hash;        // (num_blocks,) valid when cached
    uint64_t *parent_hash; // (num_blocks,) valid when cached
    int32_t *adapter;      // (num_blocks,) valid when cached
    int32_t *tokens;       // (num_blocks, block_size) token ids, valid when cached

    int32_t *free_stack;   // (num_blocks,) ids of free blocks; LIFO keeps recently used ones hot
    int num_free_stack;

    int32_t *lru_prev, *lru_next; // (num_blocks,) links of the cached refcount-0 list, -1 ends
    int lru_head, lru_tail;       // head = least recently released = next to evict
    int num_lru;

    // open addressing with linear probing: hash -> block id, backward-shift deletion
    uint64_t *table_keys;  // (table_cap,)
    int32_t *table_vals;   // (table_cap,) -1 = empty slot
    uint32_t table_mask;   // table_cap - 1, table_cap a power of two >= 2 * num_blocks
    int num_table;

    // counters for metrics (vLLM's prefix_cache_queries / _hits are in tokens)
    uint64_t query_tokens;
    uint64_t hit_tokens;
    uint64_t evictions;
} BlockPool;

int blockpool_init(BlockPool *p, int num_blocks, int block_size, char *err);
void blockpool_free(BlockPool *p); // accepts a zeroed struct

// Blocks a new allocation can get: free ones plus evictable cached ones.
static inline int blockpool_num_available(const BlockPool *p) {
    return p->num_free_stack + p->num_lru;
}
static inline int blockpool_num_free(const BlockPool *p) { return p->num_free_stack; }
static inline int blockpool_num_cached_idle(const BlockPool *p) { return p->num_lru; }
// Fraction of blocks held by sequences (vLLM's kv_cache_usage: idle cached blocks count free).
double blockpool_usage(const BlockPool *p);

// Hands out a block with refcount 1, evicting the least recently released cached block when the
// free list is empty. Returns -1 when every block is in use.
int32_t blockpool_alloc(BlockPool *p);
// One more holder of a block: a child sharing its parent's blocks, or a prefix hit on a cached
// block (which leaves the LRU list while held).
void blockpool_ref(BlockPool *p, int32_t id);
// One holder fewer. At zero a cached block goes to the LRU tail (most recently used), any other
// block to the free list.
void blockpool_release(BlockPool *p, int32_t id);

// The chained hash of one block: XXH64 of its token ids (little-endian int32) seeded by a mix of
// the parent hash and the adapter id.
uint64_t blockpool_hash_block(uint64_t parent_hash, const int32_t *tokens, int num_tokens,
                              int32_t adapter_id);
// XXH64 (Yann Collet's algorithm, our own implementation), exposed for its known-answer test.
uint64_t blockpool_xxh64(const void *data, size_t len, uint64_t seed);

// The cached block holding exactly this (hash, parent, tokens, adapter), or -1. No side effects.
int32_t blockpool_lookup(const BlockPool *p, uint64_t hash, uint64_t parent_hash,
                         const int32_t *tokens, int32_t adapter_id);
// Offers a full, computed block to the prefix cache. Returns true when the block is cached
// afterwards; false when another block already holds this hash (two sequences computed the same
// prefix at once: the first stays cached, this one is freed normally when released).
bool blockpool_promote(BlockPool *p, int32_t id, uint64_t hash, uint64_t parent_hash,
                       const int32_t *tokens, int32_t adapter_id);
// Drops every idle cached block (e.g. an admin cache reset); held blocks stay cached.
void blockpool_reset_cache(BlockPool *p);

// Verifies the free/cached/used partition, the LRU links and the hash table. With `expected`
// (num_blocks refcounts recomputed by the caller from all block tables), also that every
// refcount matches. Returns SL_OK, or SL_ERR with the first broken invariant in err.
int blockpool_check(const BlockPool *p, const int32_t *expected_refcount, char *err);
