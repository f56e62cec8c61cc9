// test_comm.c: the CPU communicator (kernels/cpu/comm.c) and the per-thread kernel state that
// tensor parallelism on the CPU relies on.
//
// Collectives: groups of 1 to 4 rank threads run hundreds of collectives back to back (all-reduce,
// all-gather, broadcast, barrier, in a rotating order), with n from 1 past the small/large
// switch to a large odd size; every rank checks its result bitwise against a serial computation
// of the same values (the all-reduce in rank order), then overwrites its buffers at once, so a
// rank that still read another's buffer after the collective returned would see wrong values.
// Now and then one rank sleeps before a collective so the others go to sleep in the barrier: a
// lost wake-up hangs, and the watchdog (alarm) turns the hang into a failure.
//
// Kernels: three threads, each with its own k_init (different thread counts and scratch sizes),
// run k_matmul (quantized and float weights) and k_attention at the same time, over and over,
// and must get bitwise what one thread alone gets. With one shared scratch they overwrite each
// other's quantized activations and attention accumulators.
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"
#include "kernels/comm.h"
#include "kernels/kernels.h"
#include "tests/unit/test.h"

#define WATCHDOG_S 300

static void watchdog(int sig) {
    (void)sig;
    static const char msg[] = "FAIL: test_comm timed out (a rank never woke up?)\n";
    ssize_t w = write(2, msg, sizeof(msg) - 1);
    (void)w;
    _exit(1);
}

// ---- values that make the order of additions visible: mixed signs and magnitudes 2^-12..2^12

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float value_of(int round, int rank, size_t i) {
    uint64_t h = mix64(((uint64_t)round << 40) ^ ((uint64_t)rank << 32) ^ i ^ 0x5bd1e995ull);
    float m = (float)(h >> 40) / (float)(1 << 24) - 0.5f; // [-0.5, 0.5)
    int e = (int)((h >> 8) % 25) - 12;
    return ldexpf(m == 0.0f ? 0.25f : m, e);
}

// ---- the collective script every rank runs

typedef enum { OP_REDUCE, OP_GATHER, OP_BCAST, OP_BARRIER, OP_COUNT } Op;

static const size_t SMALL_NS[] = {1, 2, 3, 15, 16, 17, 576, 1000, 4097, 8191, 8192};
static const size_t LARGE_NS[] = {8193, 9000, 100003};
#define MAX_N 100003
#define ROUNDS 600

static size_t n_of_round(int round) {
    if (round % 10 == 9) return LARGE_NS[(round / 10) % ARRAY_LEN(LARGE_NS)]; // meets every op
    return SMALL_NS[(size_t)round % ARRAY_LEN(SMALL_NS)];
}

typedef struct {
    Comm *comm;
    int rounds;
    long bad;          // mismatching values over all rounds
    long first_bad_round;
    float *buf, *out, *ref;
} RankJob;

static void note_bad(RankJob *j, int round, long n_bad) {
    if (n_bad && j->bad == 0) j->first_bad_round = round;
    j->bad += n_bad;
}

static void sleep_us(long us) {
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

static void *rank_main(void *arg) {
    RankJob *j = arg;
    Comm *c = j->comm;
    int size = c->size, rank = c->rank;
    for (int round = 0; round < j->rounds; round++) {
        size_t n = n_of_round(round);
        Op op = (Op)((round / 3) % OP_COUNT); // runs of three of a kind, so each follows itself too
        if (round % 23 == 7 && rank == round % size) sleep_us(200 + 50 * rank); // the others sleep
        long bad = 0;
        switch (op) {
        case OP_REDUCE:
            for (size_t i = 0; i < n; i++) j->buf[i] = value_of(round, rank, i);
            comm_all_reduce_sum(c, j->buf, n);
            for (size_t i = 0; i < n; i++) {
                float s = value_of(round, 0, i);
                for (int q = 1; q < size; q++) s += value_of(round, q, i);
                bad += memcmp(&s, &j->buf[i], sizeof(float)) != 0;
            }
            break;
        case OP_GATHER: {
            bool in_place = round % 2 == 1; // in = out + rank * n
            float *in = in_place ? j->out + (size_t)rank * n : j->buf;
            for (size_t i = 0; i < n; i++) in[i] = value_of(round, rank, i);
            comm_all_gather(c, in, j->out, n);
            for (int q = 0; q < size; q++)
                for (size_t i = 0; i < n; i++) {
                    float want = value_of(round, q, i);
                    bad += memcmp(&want, &j->out[(size_t)q * n + i], sizeof(float)) != 0;
                }
            break;
        }
        case OP_BCAST: {
            int root = round % size;
            size_t bytes = round % 2 ? n * sizeof(float) : n * sizeof(float) - 1; // odd byte counts too
            for (size_t i = 0; i < n; i++) j->buf[i] = value_of(round, rank, i);
            comm_broadcast(c, j->buf, bytes, root);
            for (size_t i = 0; i < n; i++) j->ref[i] = value_of(round, root, i);
            bad += memcmp(j->buf, j->ref, bytes) != 0;
            if (bytes < n * sizeof(float)) { // the byte past the end stays this rank's own
                float own = value_of(round, rank, n - 1);
                bad += memcmp((char *)&j->buf[n - 1] + 3, (char *)&own + 3, 1) != 0;
            }
            break;
        }
        default: comm_barrier(c); break;
        }
        note_bad(j, round, bad);
        // Scribble over everything at once: a rank still reading our buffers would see it.
        memset(j->buf, 0xff, n * sizeof(float));
        memset(j->out, 0xff, (size_t)size * n * sizeof(float));
    }
    return NULL;
}

// Runs the script on a group of size ranks; returns the wrong values seen (0) and says where.
static long run_group(int size, int rounds, char *where, size_t where_len) {
    Comm *comms[4];
    CommGroupCpu *g = comm_cpu_group_create(size, MAX_N, comms);
    pthread_t th[4];
    RankJob jobs[4];
    long bad = 0;
    for (int r = 0; r < size; r++) {
        if (comms[r]->rank != r || comms[r]->size != size) bad++;
        jobs[r] = (RankJob){.comm = comms[r], .rounds = rounds};
        jobs[r].buf = xmalloc(MAX_N * sizeof(float));
        jobs[r].ref = xmalloc(MAX_N * sizeof(float));
        jobs[r].out = xmalloc((size_t)size * MAX_N * sizeof(float));
        CHECK(pthread_create(&th[r], NULL, rank_main, &jobs[r]) == 0, "pthread_create");
    }
    for (int r = 0; r < size; r++) pthread_join(th[r], NULL);
    snprintf(where, where_len, "(none)");
    for (int r = 0; r < size; r++) {
        if (jobs[r].bad && bad == 0)
            snprintf(where, where_len, "rank %d of %d, first in round %ld", r, size, jobs[r].first_bad_round);
        bad += jobs[r].bad;
        free(jobs[r].buf), free(jobs[r].ref), free(jobs[r].out);
    }
    comm_cpu_group_destroy(g);
    return bad;
}

static void test_collectives(void) {
    for (int size = 1; size <= 4; size++) {
        char where[96];
        long bad = run_group(size, ROUNDS, where, sizeof where);
        EXPECT(bad == 0, "%d ranks: %ld wrong values (%s)", size, bad, where);
    }
}

// Two groups at once (as two engines would have): they must not share state.
typedef struct {
    int size;
    long bad;
    char where[96];
} GroupArg;
static void *group_main(void *arg) {
    GroupArg *a = arg;
    a->bad = run_group(a->size, ROUNDS / 3, a->where, sizeof a->where);
    return NULL;
}
static void test_two_groups(void) {
    pthread_t ta, tb;
    GroupArg a = {.size = 2}, b = {.size = 3};
    CHECK(pthread_create(&ta, NULL, group_main, &a) == 0, "pthread_create");
    CHECK(pthread_create(&tb, NULL, group_main, &b) == 0, "pthread_create");
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    EXPECT(a.bad == 0, "group of 2: %ld wrong values (%s)", a.bad, a.where);
    EXPECT(b.bad == 0, "group of 3: %ld wrong values (%s)", b.bad, b.where);
}

// Collectives with n = 0 (and bytes = 0) are no-ops that keep the ranks in step.
typedef struct {
    Comm *c;
    int bad;
} EmptyJob;
static void *empty_main(void *arg) {
    EmptyJob *j = arg;
    Comm *c = j->c;
    float x = (float)c->rank, out[4];
    for (int i = 0; i < 50; i++) {
        comm_all_reduce_sum(c, &x, 0);
        comm_all_gather(c, &x, out, 0);
        comm_broadcast(c, &x, 0, 0);
        comm_all_reduce_sum(c, &x, 1);
        j->bad += x != 0.0f + 1.0f + 2.0f;
        x = (float)c->rank;
    }
    comm_all_gather(c, &x, out, 1);
    for (int q = 0; q < c->size; q++) j->bad += out[q] != (float)q;
    return NULL;
}
static void test_empty_collectives(void) {
    Comm *comms[3];
    CommGroupCpu *g = comm_cpu_group_create(3, 16, comms);
    pthread_t th[3];
    EmptyJob jobs[3];
    for (int r = 0; r < 3; r++) {
        jobs[r] = (EmptyJob){comms[r], 0};
        CHECK(pthread_create(&th[r], NULL, empty_main, &jobs[r]) == 0, "pthread_create");
    }
    for (int r = 0; r < 3; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < 3; r++) EXPECT(jobs[r].bad == 0, "rank %d: %d wrong results", r, jobs[r].bad);
    comm_cpu_group_destroy(g);
}

// ---- kernels on three threads at once, each with its own k_init

static uint64_t krng;
static float krand(float lo, float hi) {
    krng = mix64(krng + 0x9e3779b97f4a7c15ull);
    float u = (float)((krng >> 40) + 0.5) / (float)(1 << 24);
    return lo + (hi - lo) * u;
}

// Random blocks with sane fp16 scales (the first 2 or 4 bytes of each block).
static void *make_qweights(QType t, int rows, int cols) {
    size_t bytes = (size_t)rows * qtype_row_size(t, cols), bb = qtype_block_bytes(t);
    uint8_t *w = xmalloc(bytes);
    if (t == QTYPE_F32) {
        for (size_t i = 0; i < bytes / 4; i++) ((float *)w)[i] = krand(-1, 1);
        return w;
    }
    if (t == QTYPE_F16) {
        for (size_t i = 0; i < bytes / 2; i++) {
            uint16_t h = f32_to_fp16(krand(-1, 1));
            memcpy(w + 2 * i, &h, 2);
        }
        return w;
    }
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)mix64(krng++);
    for (size_t b = 0; b < bytes / bb; b++) {
        uint16_t d = f32_to_fp16(krand(0.001f, 0.05f)), m = f32_to_fp16(krand(-0.3f, 0.3f));
        memcpy(w + b * bb, &d, 2);
        if (t == QTYPE_Q4_1) memcpy(w + b * bb + 2, &m, 2);
    }
    return w;
}

#define KT_TOKENS 53 // crosses the quantized matmul's 48-row token chunk
#define KT_COLS 576
#define KT_ROWS 200
#define KT_HEADS 9
#define KT_KV 3
#define KT_HD 64
#define KT_BLOCK 16
#define KT_BLOCKS 8

typedef struct {
    QMatrix w[4];
    float *x;
    float *q;
    KVLayer cache;
    Batch b;
    int pos[KT_TOKENS], qs[2], ctx[1], bt[KT_BLOCKS];
    float *want_mm[4], *want_att;
} KernelFixture;

static void kernels_run(const KernelFixture *f, float *mm[4], float *att) {
    for (int i = 0; i < 4; i++) k_matmul(mm[i], f->x, &f->w[i], KT_TOKENS);
    k_attention(att, f->q, &f->cache, &f->b, KT_HEADS, &(AttnOpt){.scale = 0.125f});
}

typedef struct {
    const KernelFixture *f;
    int threads, max_tokens, max_cols, iters;
    long bad;
} KernelJob;

static void *kernel_main(void *arg) {
    KernelJob *j = arg;
    const KernelFixture *f = j->f;
    k_init(j->threads, j->max_tokens, j->max_cols);
    float *mm[4], *att = xmalloc(sizeof(float) * KT_TOKENS * KT_HEADS * KT_HD);
    for (int i = 0; i < 4; i++) mm[i] = xmalloc(sizeof(float) * KT_TOKENS * KT_ROWS);
    for (int it = 0; it < j->iters; it++) {
        kernels_run(f, mm, att);
        for (int i = 0; i < 4; i++) j->bad += memcmp(mm[i], f->want_mm[i], sizeof(float) * KT_TOKENS * KT_ROWS) != 0;
        j->bad += memcmp(att, f->want_att, sizeof(float) * KT_TOKENS * KT_HEADS * KT_HD) != 0;
    }
    for (int i = 0; i < 4; i++) free(mm[i]);
    free(att);
    k_free();
    return NULL;
}

static void test_kernels_per_thread(void) {
    krng = 42;
    KernelFixture f;
    static const QType types[4] = {QTYPE_Q4_1, QTYPE_Q8_0, QTYPE_F32, QTYPE_F16};
    void *wd[4];
    for (int i = 0; i < 4; i++) {
        wd[i] = make_qweights(types[i], KT_ROWS, KT_COLS);
        f.w[i] = (QMatrix){types[i], KT_ROWS, KT_COLS, wd[i], NULL};
    }
    f.x = xmalloc(sizeof(float) * KT_TOKENS * KT_COLS);
    for (int i = 0; i < KT_TOKENS * KT_COLS; i++) f.x[i] = krand(-2, 2);
    // One sequence: a 60-token cached prefix and this step's rows, blocks in reverse order.
    size_t cache_n = (size_t)KT_BLOCKS * KT_BLOCK * KT_KV * KT_HD;
    f.cache = (KVLayer){xmalloc(cache_n * 2), xmalloc(cache_n * 2), KT_BLOCKS, KT_BLOCK, KT_KV, KT_HD, KV_F16};
    for (size_t i = 0; i < cache_n; i++) {
        ((uint16_t *)f.cache.k)[i] = f32_to_fp16(krand(-1.5f, 1.5f));
        ((uint16_t *)f.cache.v)[i] = f32_to_fp16(krand(-1.5f, 1.5f));
    }
    for (int i = 0; i < KT_BLOCKS; i++) f.bt[i] = KT_BLOCKS - 1 - i;
    for (int t = 0; t < KT_TOKENS; t++) f.pos[t] = 60 + t;
    f.qs[0] = 0, f.qs[1] = KT_TOKENS, f.ctx[0] = 60 + KT_TOKENS;
    f.b = (Batch){.n_tokens = KT_TOKENS, .n_seqs = 1, .positions = f.pos, .query_start = f.qs,
                  .context_lens = f.ctx, .block_tables = f.bt, .max_blocks_per_seq = KT_BLOCKS};
    f.q = xmalloc(sizeof(float) * KT_TOKENS * KT_HEADS * KT_HD);
    for (int i = 0; i < KT_TOKENS * KT_HEADS * KT_HD; i++) f.q[i] = krand(-2, 2);

    // The reference: this thread alone.
    k_init(1, KT_TOKENS, KT_COLS);
    for (int i = 0; i < 4; i++) f.want_mm[i] = xmalloc(sizeof(float) * KT_TOKENS * KT_ROWS);
    f.want_att = xmalloc(sizeof(float) * KT_TOKENS * KT_HEADS * KT_HD);
    kernels_run(&f, f.want_mm, f.want_att);
    k_free();

    // Three threads with their own contexts, of different sizes and team sizes.
    KernelJob jobs[3] = {
        {&f, 1, KT_TOKENS, KT_COLS, 30, 0},
        {&f, 2, 2 * KT_TOKENS, 3 * KT_COLS, 30, 0},
        {&f, 1, KT_TOKENS + 7, KT_COLS + 64, 30, 0},
    };
    pthread_t th[3];
    for (int r = 0; r < 3; r++) CHECK(pthread_create(&th[r], NULL, kernel_main, &jobs[r]) == 0, "pthread_create");
    for (int r = 0; r < 3; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < 3; r++)
        EXPECT(jobs[r].bad == 0, "thread %d (%d OpenMP threads): %ld results differ from one thread alone", r,
               jobs[r].threads, jobs[r].bad);
    // The main thread's context is its own: a thread that never called k_init has none.
    EXPECT_EQ_INT(k_threads(), 1);

    for (int i = 0; i < 4; i++) free(wd[i]), free(f.want_mm[i]);
    free(f.want_att), free(f.x), free(f.q), free(f.cache.k), free(f.cache.v);
}

// k_init on one thread leaves another thread's context alone.
static void *threads_probe(void *arg) {
    int *out = arg;
    out[0] = k_threads(); // none yet: 1
    k_init(3, 4, 64);
    out[1] = k_threads();
    k_free();
    out[2] = k_threads();
    return NULL;
}
static void test_k_init_is_per_thread(void) {
    k_init(2, 8, 64);
    int seen[3];
    pthread_t t;
    CHECK(pthread_create(&t, NULL, threads_probe, seen) == 0, "pthread_create");
    pthread_join(t, NULL);
    EXPECT_EQ_INT(seen[0], 1);
    EXPECT_EQ_INT(seen[1], 3);
    EXPECT_EQ_INT(seen[2], 1);
    EXPECT_EQ_INT(k_threads(), 2);
    k_free();
    EXPECT_EQ_INT(k_threads(), 1);
}

int main(void) {
    signal(SIGALRM, watchdog);
    alarm(WATCHDOG_S);
    TEST_RUN(test_collectives);
    TEST_RUN(test_two_groups);
    TEST_RUN(test_empty_collectives);
    TEST_RUN(test_k_init_is_per_thread);
    TEST_RUN(test_kernels_per_thread);
    return test_summary();
}
