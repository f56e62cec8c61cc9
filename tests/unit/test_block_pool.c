// test_block_pool.c: the KV block pool alone: XXH64 known answers, block-hash chaining, refcounts,
// free list, prefix-cache lookup and collision handling, LRU eviction order, and a seeded
// randomized run against a naive model of the pool with the invariant check after every op.
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "scheduler/block_pool.h"
#include "tests/unit/test.h"

// ---- XXH64 known answers, computed with libxxhash 0.8.1 (Debian's libxxhash0) through ctypes.
static void test_xxh64_known_answers(void) {
    uint8_t seq64[64];
    for (int i = 0; i < 64; i++) seq64[i] = (uint8_t)i;
    struct { const void *data; size_t len; uint64_t seed, want; } cases[] = {
        {"", 0, 0, 0xef46db3751d8e999ULL},
        {"a", 1, 0, 0xd24ec4f1a98c6e5bULL},
        {"abc", 3, 0, 0x44bc2cf5ad770999ULL},
        {"sluice prefix cache", 19, 0, 0x8be43dc41c4ce4a1ULL},
        {seq64, 64, 0x736c756963652121ULL, 0x32941fc3cdb0f298ULL},
        {"0123456789abcdef0123456789abcdef!", 33, 12345, 0x6542508015c15f85ULL},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        uint64_t got = blockpool_xxh64(cases[i].data, cases[i].len, cases[i].seed);
        EXPECT(got == cases[i].want, "case %zu: %016llx != %016llx", i, (unsigned long long)got,
               (unsigned long long)cases[i].want);
    }
}

static void test_block_hash_chaining(void) {
    int32_t a[16], b[16];
    for (int i = 0; i < 16; i++) a[i] = b[i] = 1000 + i;
    uint64_t h = blockpool_hash_block(BLOCKPOOL_HASH_ROOT, a, 16, 0);
    EXPECT(h == blockpool_hash_block(BLOCKPOOL_HASH_ROOT, b, 16, 0), "same input, same hash");
    b[15]++;
    EXPECT(h != blockpool_hash_block(BLOCKPOOL_HASH_ROOT, b, 16, 0), "one token differs");
    EXPECT(h != blockpool_hash_block(h, a, 16, 0), "a different parent differs");
    EXPECT(h != blockpool_hash_block(BLOCKPOOL_HASH_ROOT, a, 16, 1), "an adapter differs");
    EXPECT(blockpool_hash_block(BLOCKPOOL_HASH_ROOT, a, 16, 1) !=
               blockpool_hash_block(BLOCKPOOL_HASH_ROOT, a, 16, 2), "adapters differ from each other");
}

static void test_init_errors(void) {
    BlockPool p;
    char err[ERR_MAX] = "";
    EXPECT_EQ_INT(blockpool_init(&p, 0, 16, err), SL_ERR);
    EXPECT(strstr(err, "blocks") != NULL, "%s", err);
    EXPECT_EQ_INT(blockpool_init(&p, 8, 0, err), SL_ERR);
    EXPECT(strstr(err, "block size") != NULL, "%s", err);
    blockpool_free(&p); // a zeroed struct
}

static void test_alloc_release_refcount(void) {
    BlockPool p;
    char err[ERR_MAX];
    ASSERT(blockpool_init(&p, 4, 16, err) == SL_OK);
    int32_t ids[4];
    for (int i = 0; i < 4; i++) {
        ids[i] = blockpool_alloc(&p);
        EXPECT_EQ_INT(ids[i], i); // handed out in order on a fresh pool
        EXPECT_EQ_INT(p.refcount[ids[i]], 1);
    }
    EXPECT_EQ_INT(blockpool_alloc(&p), -1);
    EXPECT_EQ_INT(blockpool_num_available(&p), 0);
    EXPECT_NEAR(blockpool_usage(&p), 1.0, 1e-12);
    blockpool_ref(&p, ids[2]);
    EXPECT_EQ_INT(p.refcount[ids[2]], 2);
    blockpool_release(&p, ids[2]);
    EXPECT_EQ_INT(blockpool_num_available(&p), 0); // still held once
    blockpool_release(&p, ids[2]);
    EXPECT_EQ_INT(blockpool_num_free(&p), 1);
    EXPECT_EQ_INT(blockpool_alloc(&p), ids[2]); // the free list is LIFO
    for (int i = 0; i < 4; i++) blockpool_release(&p, ids[i]);
    EXPECT_EQ_INT(blockpool_num_free(&p), 4);
    EXPECT_EQ_INT(blockpool_check(&p, NULL, err), SL_OK);
    blockpool_free(&p);
}

static void fill_tokens(int32_t *t, int n, int base) {
    for (int i = 0; i < n; i++) t[i] = base + i;
}

static void test_promote_lookup_collision(void) {
    BlockPool p;
    char err[ERR_MAX];
    ASSERT(blockpool_init(&p, 4, 4, err) == SL_OK);
    int32_t t[4], other[4];
    fill_tokens(t, 4, 10);
    fill_tokens(other, 4, 20);
    uint64_t h = blockpool_hash_block(BLOCKPOOL_HASH_ROOT, t, 4, 0);
    int32_t id = blockpool_alloc(&p);
    EXPECT_EQ_INT(blockpool_lookup(&p, h, BLOCKPOOL_HASH_ROOT, t, 0), -1);
    EXPECT(blockpool_promote(&p, id, h, BLOCKPOOL_HASH_ROOT, t, 0));
    EXPECT_EQ_INT(blockpool_lookup(&p, h, BLOCKPOOL_HASH_ROOT, t, 0), id);
    // A forged collision: same 64-bit key, other tokens, parent or adapter. Never a hit.
    EXPECT_EQ_INT(blockpool_lookup(&p, h, BLOCKPOOL_HASH_ROOT, other, 0), -1);
    EXPECT_EQ_INT(blockpool_lookup(&p, h, 42, t, 0), -1);
    EXPECT_EQ_INT(blockpool_lookup(&p, h, BLOCKPOOL_HASH_ROOT, t, 7), -1);
    // A second block with the same content is not cached: the first keeps the key.
    int32_t id2 = blockpool_alloc(&p);
    EXPECT(!blockpool_promote(&p, id2, h, BLOCKPOOL_HASH_ROOT, t, 0));
    EXPECT(blockpool_promote(&p, id, h, BLOCKPOOL_HASH_ROOT, t, 0), "re-promoting is a no-op");
    blockpool_release(&p, id2);
    EXPECT_EQ_INT(blockpool_num_free(&p), 3); // uncached: straight to the free list
    blockpool_release(&p, id);
    EXPECT_EQ_INT(blockpool_num_cached_idle(&p), 1); // cached: kept for reuse
    EXPECT_EQ_INT(blockpool_num_available(&p), 4);
    EXPECT_EQ_INT(blockpool_lookup(&p, h, BLOCKPOOL_HASH_ROOT, t, 0), id);
    // a hit takes it back out of the LRU
    blockpool_ref(&p, id);
    EXPECT_EQ_INT(blockpool_num_cached_idle(&p), 0);
    EXPECT_EQ_INT(p.refcount[id], 1);
    blockpool_release(&p, id);
    EXPECT_EQ_INT(blockpool_check(&p, NULL, err), SL_OK);
    blockpool_reset_cache(&p);
    EXPECT_EQ_INT(blockpool_lookup(&p, h, BLOCKPOOL_HASH_ROOT, t, 0), -1);
    EXPECT_EQ_INT(blockpool_num_free(&p), 4);
    EXPECT_EQ_INT(blockpool_check(&p, NULL, err), SL_OK);
    blockpool_free(&p);
}

// Cached blocks are evicted least recently released first, only once the free list is empty;
// touching one (a prefix hit) moves it to the back.
static void test_lru_eviction_order(void) {
    BlockPool p;
    char err[ERR_MAX];
    ASSERT(blockpool_init(&p, 6, 2, err) == SL_OK);
    int32_t ids[6], tok[6][2];
    uint64_t h[6];
    for (int i = 0; i < 6; i++) {
        ids[i] = blockpool_alloc(&p);
        fill_tokens(tok[i], 2, 100 * i);
        h[i] = blockpool_hash_block(BLOCKPOOL_HASH_ROOT, tok[i], 2, 0);
        if (i < 4) EXPECT(blockpool_promote(&p, ids[i], h[i], BLOCKPOOL_HASH_ROOT, tok[i], 0));
    }
    // release order 2, 0, 3, 1 (cached) and 4, 5 (plain)
    int order[] = {2, 0, 3, 1, 4, 5};
    for (int i = 0; i < 6; i++) blockpool_release(&p, ids[order[i]]);
    // touch block 2: ref + release moves it behind 1
    blockpool_ref(&p, ids[2]);
    blockpool_release(&p, ids[2]);
    EXPECT_EQ_INT(blockpool_check(&p, NULL, err), SL_OK);
    // the two plain blocks go first, then evictions in LRU order 0, 3, 1, 2
    int want[] = {ids[5], ids[4], ids[0], ids[3], ids[1], ids[2]};
    for (int i = 0; i < 6; i++) {
        int32_t got = blockpool_alloc(&p);
        EXPECT_EQ_INT(got, want[i]);
        EXPECT_EQ_INT(p.evictions, i < 2 ? 0 : i - 1);
    }
    for (int i = 0; i < 4; i++)
        EXPECT_EQ_INT(blockpool_lookup(&p, h[i], BLOCKPOOL_HASH_ROOT, tok[i], 0), -1);
    EXPECT_EQ_INT(p.num_table, 0);
    EXPECT_EQ_INT(blockpool_alloc(&p), -1);
    blockpool_free(&p);
}

// The checker must catch what it claims to: a refcount not matching the holders.
static void test_check_catches_mismatch(void) {
    BlockPool p;
    char err[ERR_MAX] = "";
    ASSERT(blockpool_init(&p, 3, 4, err) == SL_OK);
    int32_t expected[3] = {0, 0, 0};
    int32_t id = blockpool_alloc(&p);
    EXPECT_EQ_INT(blockpool_check(&p, expected, err), SL_ERR);
    EXPECT(strstr(err, "refcount") != NULL, "%s", err);
    expected[id] = 1;
    EXPECT_EQ_INT(blockpool_check(&p, expected, err), SL_OK);
    blockpool_free(&p);
}

// ---- randomized run against a naive model: refcounts by hand, hashes drawn from a few low-bit
// buckets so linear-probing runs collide and deletions shift entries.
static uint64_t rng_state;
static uint64_t rng_next(void) { // splitmix64
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void test_randomized_against_model(void) {
    enum { NB = 24, BS = 2, NKEYS = 40, STEPS = 20000 };
    BlockPool p;
    char err[ERR_MAX];
    ASSERT(blockpool_init(&p, NB, BS, err) == SL_OK);
    uint64_t keys[NKEYS];
    int32_t toks[NKEYS][BS];
    for (int k = 0; k < NKEYS; k++) {
        keys[k] = (rng_next() << 6) | (uint64_t)(k % 3); // only 3 home buckets
        toks[k][0] = k;
        toks[k][1] = -k;
    }
    int32_t model_ref[NB] = {0};
    int key_of[NB]; // key index a block is cached under, -1 if none
    for (int i = 0; i < NB; i++) key_of[i] = -1;
    int failures = 0;
    rng_state = 12345;
    for (int step = 0; step < STEPS && failures == 0; step++) {
        int op = (int)(rng_next() % 4);
        int32_t id = (int32_t)(rng_next() % NB);
        int k = (int)(rng_next() % NKEYS);
        if (op == 0) { // allocate
            int32_t got = blockpool_alloc(&p);
            int avail = 0;
            for (int i = 0; i < NB; i++) avail += model_ref[i] == 0;
            if (got < 0) { failures += avail != 0; continue; }
            failures += model_ref[got] != 0;
            key_of[got] = -1; // evicted if it was cached
            model_ref[got] = 1;
        } else if (op == 1 && model_ref[id] > 0) { // release
            blockpool_release(&p, id);
            model_ref[id]--;
        } else if (op == 2) { // lookup, and take a hit
            int32_t got = blockpool_lookup(&p, keys[k], 0, toks[k], 0);
            int want = -1;
            for (int i = 0; i < NB; i++) if (key_of[i] == k) want = i;
            failures += got != want;
            if (got >= 0) { blockpool_ref(&p, got); model_ref[got]++; }
        } else if (op == 3 && model_ref[id] > 0) { // promote
            bool taken = false;
            for (int i = 0; i < NB; i++) taken |= key_of[i] == k && i != id;
            bool ok = blockpool_promote(&p, id, keys[k], 0, toks[k], 0);
            if (key_of[id] >= 0) failures += !ok; // already cached under its own key
            else if (taken) failures += ok;
            else { failures += !ok; key_of[id] = k; }
        }
        if (blockpool_check(&p, model_ref, err) != SL_OK) {
            TEST_FAIL_("step %d: %s", step, err);
            failures++;
        }
    }
    EXPECT_EQ_INT(failures, 0);
    for (int i = 0; i < NB; i++) while (model_ref[i]-- > 0) blockpool_release(&p, i);
    EXPECT_EQ_INT(blockpool_num_available(&p), NB);
    EXPECT_EQ_INT(blockpool_check(&p, NULL, err), SL_OK);
    blockpool_free(&p);
}

int main(void) {
    TEST_RUN(test_xxh64_known_answers);
    TEST_RUN(test_block_hash_chaining);
    TEST_RUN(test_init_errors);
    TEST_RUN(test_alloc_release_refcount);
    TEST_RUN(test_promote_lookup_collision);
    TEST_RUN(test_lru_eviction_order);
    TEST_RUN(test_check_catches_mismatch);
    TEST_RUN(test_randomized_against_model);
    return test_summary();
}
