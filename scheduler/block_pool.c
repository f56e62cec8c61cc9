// block_pool.c: block ids, refcounts, free list, LRU of idle cached blocks, prefix-cache table.
#include "scheduler/block_pool.h"

#include <stdlib.h>
#include <string.h>

#include "common/common.h"

// ----------------------------------------------------------------------------
// XXH64: a fast 64-bit hash with good avalanche, written from the published algorithm.

#define XXH_P1 0x9E3779B185EBCA87ULL
#define XXH_P2 0xC2B2AE3D27D4EB4FULL
#define XXH_P3 0x165667B19E3779F9ULL
#define XXH_P4 0x85EBCA77C2B2AE63ULL
#define XXH_P5 0x27D4EB2F165667C5ULL

static inline uint64_t xxh_rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t xxh_read64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t xxh_read32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

static inline uint64_t xxh_round(uint64_t acc, uint64_t input) {
    acc += input * XXH_P2;
    acc = xxh_rotl(acc, 31);
    return acc * XXH_P1;
}

static inline uint64_t xxh_merge(uint64_t acc, uint64_t val) {
    acc ^= xxh_round(0, val);
    return acc * XXH_P1 + XXH_P4;
}

// The algorithm reads little-endian words; every target sluice builds for is little-endian.
uint64_t blockpool_xxh64(const void *data, size_t len, uint64_t seed) {
    const uint8_t *p = data, *end = p + len;
    uint64_t h;
    if (len >= 32) {
        uint64_t v1 = seed + XXH_P1 + XXH_P2, v2 = seed + XXH_P2, v3 = seed, v4 = seed - XXH_P1;
        const uint8_t *limit = end - 32;
        do {
            v1 = xxh_round(v1, xxh_read64(p));
            v2 = xxh_round(v2, xxh_read64(p + 8));
            v3 = xxh_round(v3, xxh_read64(p + 16));
            v4 = xxh_round(v4, xxh_read64(p + 24));
            p += 32;
        } while (p <= limit);
        h = xxh_rotl(v1, 1) + xxh_rotl(v2, 7) + xxh_rotl(v3, 12) + xxh_rotl(v4, 18);
        h = xxh_merge(h, v1);
        h = xxh_merge(h, v2);
        h = xxh_merge(h, v3);
        h = xxh_merge(h, v4);
    } else {
        h = seed + XXH_P5;
    }
    h += (uint64_t)len;
    for (; p + 8 <= end; p += 8) {
        h ^= xxh_round(0, xxh_read64(p));
        h = xxh_rotl(h, 27) * XXH_P1 + XXH_P4;
    }
    if (p + 4 <= end) {
        h ^= (uint64_t)xxh_read32(p) * XXH_P1;
        h = xxh_rotl(h, 23) * XXH_P2 + XXH_P3;
        p += 4;
    }
    for (; p < end; p++) {
        h ^= (uint64_t)(*p) * XXH_P5;
        h = xxh_rotl(h, 11) * XXH_P1;
    }
    h ^= h >> 33;
    h *= XXH_P2;
    h ^= h >> 29;
    h *= XXH_P3;
    h ^= h >> 32;
    return h;
}

uint64_t blockpool_hash_block(uint64_t parent_hash, const int32_t *tokens, int num_tokens,
                              int32_t adapter_id) {
    // The seed folds the adapter into the parent hash with a multiply so adapters 1 and 2 over
    // the same parent do not differ in one bit only.
    uint64_t seed = parent_hash ^ ((uint64_t)(uint32_t)adapter_id * XXH_P3);
    return blockpool_xxh64(tokens, (size_t)num_tokens * sizeof(int32_t), seed);
}

// ----------------------------------------------------------------------------
// hash table: open addressing, linear probing, backward-shift deletion (no tombstones)

static inline uint32_t table_slot(const BlockPool *p, uint64_t key) {
    // the keys are already well mixed; the low bits serve as the bucket
    return (uint32_t)key & p->table_mask;
}

static int32_t table_get(const BlockPool *p, uint64_t key) {
    for (uint32_t i = table_slot(p, key);; i = (i + 1) & p->table_mask) {
        if (p->table_vals[i] < 0) return -1;
        if (p->table_keys[i] == key) return p->table_vals[i];
    }
}

static void table_put(BlockPool *p, uint64_t key, int32_t val) {
    uint32_t i = table_slot(p, key);
    while (p->table_vals[i] >= 0) {
        CHECK(p->table_keys[i] != key, "duplicate prefix-cache key");
        i = (i + 1) & p->table_mask;
    }
    p->table_keys[i] = key;
    p->table_vals[i] = val;
    p->num_table++;
}

static void table_del(BlockPool *p, uint64_t key) {
    uint32_t i = table_slot(p, key);
    while (p->table_vals[i] >= 0 && p->table_keys[i] != key) i = (i + 1) & p->table_mask;
    CHECK(p->table_vals[i] >= 0, "prefix-cache key missing");
    // Shift later entries of the probe run back into the hole when their home slot allows it.
    uint32_t hole = i;
    for (uint32_t j = (i + 1) & p->table_mask; p->table_vals[j] >= 0; j = (j + 1) & p->table_mask) {
        uint32_t home = table_slot(p, p->table_keys[j]);
        // j may move into hole unless its home lies cyclically in (hole, j]
        bool home_in_range = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!home_in_range) {
            p->table_keys[hole] = p->table_keys[j];
            p->table_vals[hole] = p->table_vals[j];
            hole = j;
        }
    }
    p->table_vals[hole] = -1;
    p->num_table--;
}

// ----------------------------------------------------------------------------
// LRU list of idle cached blocks

static void lru_push_tail(BlockPool *p, int32_t id) {
    p->lru_prev[id] = p->lru_tail;
    p->lru_next[id] = -1;
    if (p->lru_tail >= 0) p->lru_next[p->lru_tail] = id; else p->lru_head = id;
    p->lru_tail = id;
    p->num_lru++;
}

static void lru_remove(BlockPool *p, int32_t id) {
    int32_t a = p->lru_prev[id], b = p->lru_next[id];
    if (a >= 0) p->lru_next[a] = b; else p->lru_head = b;
    if (b >= 0) p->lru_prev[b] = a; else p->lru_tail = a;
    p->lru_prev[id] = p->lru_next[id] = -1;
    p->num_lru--;
}

// ----------------------------------------------------------------------------
// pool

int blockpool_init(BlockPool *p, int num_blocks, int block_size, char *err) {
    memset(p, 0, sizeof(*p));
    if (num_blocks < 1) return seterr(err, "KV cache has %d blocks; it needs at least 1", num_blocks);
    if (block_size < 1 || block_size > 1024)
        return seterr(err, "block size %d is out of range [1, 1024]", block_size);
    if (num_blocks > (1 << 29)) return seterr(err, "KV cache has too many blocks (%d)", num_blocks);
    p->num_blocks = num_blocks;
    p->block_size = block_size;
    size_t n = (size_t)num_blocks;
    p->refcount = xcalloc(n, sizeof(int32_t));
    p->cached = xcalloc(n, 1);
    p->hash = xcalloc(n, sizeof(uint64_t));
    p->parent_hash = xcalloc(n, sizeof(uint64_t));
    p->adapter = xcalloc(n, sizeof(int32_t));
    p->tokens = xcalloc(n * (size_t)block_size, sizeof(int32_t));
    p->free_stack = xmalloc(n * sizeof(int32_t));
    p->lru_prev = xmalloc(n * sizeof(int32_t));
    p->lru_next = xmalloc(n * sizeof(int32_t));
    // Push in reverse so the first allocations hand out 0, 1, 2, ... (easier to read in logs).
    for (int i = 0; i < num_blocks; i++) {
        p->free_stack[i] = num_blocks - 1 - i;
        p->lru_prev[i] = p->lru_next[i] = -1;
    }
    p->num_free_stack = num_blocks;
    p->lru_head = p->lru_tail = -1;
    uint32_t cap = 16;
    while (cap < 2u * (uint32_t)num_blocks) cap <<= 1;
    p->table_mask = cap - 1;
    p->table_keys = xcalloc(cap, sizeof(uint64_t));
    p->table_vals = xmalloc((size_t)cap * sizeof(int32_t));
    for (uint32_t i = 0; i < cap; i++) p->table_vals[i] = -1;
    return SL_OK;
}

void blockpool_free(BlockPool *p) {
    free(p->refcount);
    free(p->cached);
    free(p->hash);
    free(p->parent_hash);
    free(p->adapter);
    free(p->tokens);
    free(p->free_stack);
    free(p->lru_prev);
    free(p->lru_next);
    free(p->table_keys);
    free(p->table_vals);
    memset(p, 0, sizeof(*p));
}

double blockpool_usage(const BlockPool *p) {
    if (p->num_blocks == 0) return 0.0;
    return 1.0 - (double)blockpool_num_available(p) / (double)p->num_blocks;
}

static void block_uncache(BlockPool *p, int32_t id) {
    table_del(p, p->hash[id]);
    p->cached[id] = 0;
}

int32_t blockpool_alloc(BlockPool *p) {
    int32_t id;
    if (p->num_free_stack > 0) {
        id = p->free_stack[--p->num_free_stack];
    } else if (p->lru_head >= 0) {
        id = p->lru_head;
        lru_remove(p, id);
        block_uncache(p, id);
        p->evictions++;
    } else {
        return -1;
    }
    CHECK(p->refcount[id] == 0 && !p->cached[id]);
    p->refcount[id] = 1;
    return id;
}

void blockpool_ref(BlockPool *p, int32_t id) {
    CHECK(id >= 0 && id < p->num_blocks);
    if (p->refcount[id] == 0) {
        CHECK(p->cached[id], "reference to free block %d", id);
        lru_remove(p, id);
    }
    p->refcount[id]++;
}

void blockpool_release(BlockPool *p, int32_t id) {
    CHECK(id >= 0 && id < p->num_blocks);
    CHECK(p->refcount[id] > 0, "double release of block %d", id);
    if (--p->refcount[id] > 0) return;
    if (p->cached[id]) lru_push_tail(p, id);
    else p->free_stack[p->num_free_stack++] = id;
}

int32_t blockpool_lookup(const BlockPool *p, uint64_t hash, uint64_t parent_hash,
                         const int32_t *tokens, int32_t adapter_id) {
    int32_t id = table_get(p, hash);
    if (id < 0) return -1;
    if (p->parent_hash[id] != parent_hash || p->adapter[id] != adapter_id) return -1;
    if (memcmp(p->tokens + (size_t)id * p->block_size, tokens,
               (size_t)p->block_size * sizeof(int32_t)) != 0)
        return -1;
    return id;
}

bool blockpool_promote(BlockPool *p, int32_t id, uint64_t hash, uint64_t parent_hash,
                       const int32_t *tokens, int32_t adapter_id) {
    CHECK(id >= 0 && id < p->num_blocks && p->refcount[id] > 0);
    if (p->cached[id]) return true; // a prefix hit, or shared with a forked sibling
    if (table_get(p, hash) >= 0) return false;
    p->cached[id] = 1;
    p->hash[id] = hash;
    p->parent_hash[id] = parent_hash;
    p->adapter[id] = adapter_id;
    memcpy(p->tokens + (size_t)id * p->block_size, tokens, (size_t)p->block_size * sizeof(int32_t));
    table_put(p, hash, id);
    return true;
}

void blockpool_reset_cache(BlockPool *p) {
    while (p->lru_head >= 0) {
        int32_t id = p->lru_head;
        lru_remove(p, id);
        block_uncache(p, id);
        p->free_stack[p->num_free_stack++] = id;
    }
}

int blockpool_check(const BlockPool *p, const int32_t *expected_refcount, char *err) {
    int n = p->num_blocks, rc = SL_OK;
    uint8_t *seen = xcalloc((size_t)n, 1); // 1 free, 2 lru
    for (int i = 0; i < p->num_free_stack && rc == SL_OK; i++) {
        int32_t id = p->free_stack[i];
        if (id < 0 || id >= n || seen[id])
            rc = seterr(err, "free list entry %d: bad or repeated block %d", i, id);
        else if (p->refcount[id] != 0 || p->cached[id])
            rc = seterr(err, "free block %d has refcount %d cached %d", id, p->refcount[id], p->cached[id]);
        else seen[id] = 1;
    }
    int count = 0, prev = -1;
    for (int32_t id = p->lru_head; id >= 0 && rc == SL_OK; id = p->lru_next[id]) {
        if (seen[id]) rc = seterr(err, "LRU block %d seen twice", id);
        else if (p->lru_prev[id] != prev) rc = seterr(err, "LRU block %d has a bad prev link", id);
        else if (p->refcount[id] != 0 || !p->cached[id])
            rc = seterr(err, "LRU block %d has refcount %d cached %d", id, p->refcount[id], p->cached[id]);
        seen[id] = 2;
        prev = id;
        if (++count > n) rc = seterr(err, "LRU list has a cycle");
    }
    if (rc == SL_OK && (count != p->num_lru || prev != p->lru_tail))
        rc = seterr(err, "LRU list has %d blocks, counter says %d", count, p->num_lru);
    int used = 0, cached = 0;
    for (int id = 0; id < n && rc == SL_OK; id++) {
        if (p->refcount[id] < 0) rc = seterr(err, "block %d has refcount %d", id, p->refcount[id]);
        else if (p->refcount[id] > 0) used++;
        else if (!seen[id]) rc = seterr(err, "block %d has refcount 0 but is neither free nor idle", id);
        if (rc == SL_OK && expected_refcount && expected_refcount[id] != p->refcount[id])
            rc = seterr(err, "block %d has refcount %d but %d block tables hold it", id,
                        p->refcount[id], expected_refcount[id]);
        if (rc == SL_OK && p->cached[id]) {
            cached++;
            if (table_get(p, p->hash[id]) != id)
                rc = seterr(err, "cached block %d is not in the hash table", id);
        }
    }
    if (rc == SL_OK && p->num_free_stack + p->num_lru + used != n)
        rc = seterr(err, "free %d + idle cached %d + used %d != %d blocks", p->num_free_stack,
                    p->num_lru, used, n);
    if (rc == SL_OK && cached != p->num_table)
        rc = seterr(err, "%d cached blocks but %d hash-table entries", cached, p->num_table);
    free(seen);
    return rc;
}
