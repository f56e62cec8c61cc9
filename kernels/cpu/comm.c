// comm.c: the CPU communicator (kernels/comm.h): the ranks of a group are threads of this
// process, and a collective is shared memory and one or two barriers.
//
// Every collective has the same skeleton. Small ones (n up to COMM_SLOT_FLOATS) copy their input
// into the rank's slot of the group, meet at ONE barrier, and read what they need from the
// others' slots. The slots alternate between two sets by collective parity: a rank that left
// collective k and starts k+1 writes the other set, and it cannot start k+2 (and overwrite k's
// set) before every rank arrived at k+1's barrier, which each does only after finishing its
// reads of k. Large ones publish a pointer to their buffer instead (no copy), meet, work on the
// others' buffers directly, and meet again before returning, so that no rank changes its buffer
// while another still reads it. The decode step's all-reduces are small: one barrier each.
//
// All-reduce adds the ranks' values in rank order, ((x0 + x1) + x2) + ..., for every element
// and on both paths (the large one splits the elements among the ranks and each rank sums its
// share into the group's buffer), so every rank gets bitwise the same result, whatever the
// timing, and bitwise a serial loop's.
//
// The barrier is a counter and a generation word: the last rank to arrive resets the counter
// and bumps the generation; the others spin on the generation for a short while, then sleep on
// it in the kernel (futex), so a rank waiting on a core shared with the ranks it waits for gives
// the core up. A waker only enters the kernel when someone sleeps.
#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kernels/comm.h"
#include "kernels/cpu/cpu.h"

#define COMM_MAX_RANKS 64
#define COMM_SLOT_FLOATS 8192 // per rank and parity: 32 KiB; larger collectives take pointers
#define COMM_SPIN 1000        // polls of the generation before sleeping, when every thread has a core
#define COMM_SPIN_SHARED 32   // ... when the ranks' threads outnumber the cores
#define COMM_LINE 64

typedef struct {
    _Alignas(COMM_LINE) const void *ptr; // the large path's published buffer
} CommPtr;

typedef struct CommRankCpu CommRankCpu;

struct CommGroupCpu {
    int size, cpus;
    size_t max_floats, slot_floats;
    _Alignas(COMM_LINE) atomic_uint arrived; // ranks at the current barrier
    _Alignas(COMM_LINE) atomic_uint gen;     // barrier generation: the futex word
    atomic_int sleepers;                     // ranks in (or entering) futex wait
    CommPtr *ptrs;  // [size]
    float *slots;   // [2][size][slot_floats]
    float *red;     // [max_floats] the large all-reduce's result
    Comm *comms;        // [size] the handles
    CommRankCpu *ranks; // [size] their state
};

struct CommRankCpu {
    CommGroupCpu *g;
    unsigned seq; // collectives with a barrier this rank made: their parity picks the slot set
};

// ---- barrier

static void futex_wait(atomic_uint *w, unsigned val) {
    syscall(SYS_futex, (unsigned *)w, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}
static void futex_wake_all(atomic_uint *w) {
    syscall(SYS_futex, (unsigned *)w, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

// Returns once every rank of g has called it (for this generation). Everything a rank wrote
// before arriving is visible to every rank after leaving (the RMWs on arrived and gen are
// sequentially consistent).
static void group_barrier(CommGroupCpu *g) {
    // Read before arriving: gen cannot move until this rank arrives, so this is the current one.
    unsigned gen = atomic_load(&g->gen);
    if (atomic_fetch_add(&g->arrived, 1) == (unsigned)g->size - 1) {
        atomic_store(&g->arrived, 0); // before the release below: the next barrier starts at 0
        atomic_fetch_add(&g->gen, 1);
        // A waiter increments sleepers before its last look at gen, and this load comes after the
        // bump (both seq_cst): either it sees the waiter, or the waiter sees the new gen.
        if (atomic_load(&g->sleepers) > 0) futex_wake_all(&g->gen);
        return;
    }
    // k_threads(): the waiting rank's own team size; every rank's team is assumed the same.
    int spin = g->size * k_threads() <= g->cpus ? COMM_SPIN : COMM_SPIN_SHARED;
    for (int i = 0; i < spin; i++) {
        if (atomic_load_explicit(&g->gen, memory_order_acquire) != gen) return;
        cpu_relax();
    }
    atomic_fetch_add(&g->sleepers, 1);
    while (atomic_load(&g->gen) == gen) futex_wait(&g->gen, gen); // returns at once if gen moved
    atomic_fetch_sub(&g->sleepers, 1);
}

// ---- helpers

static inline CommGroupCpu *group_of(Comm *c) {
    return ((CommRankCpu *)c->impl)->g;
}
// Counts a collective that meets at a barrier; returns its slot parity.
static inline unsigned seq_next(Comm *c) {
    return ((CommRankCpu *)c->impl)->seq++ & 1;
}
static inline float *slot_at(const CommGroupCpu *g, unsigned parity, int rank) {
    return g->slots + ((size_t)parity * g->size + rank) * g->slot_floats;
}

// dst[i] = ((src[0][i] + src[1][i]) + ...) over the size ranks, i in [lo, hi).
static void sum_ranks(float *dst, const float *const *src, int size, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++) dst[i] = src[0][i];
    for (int q = 1; q < size; q++) {
        const float *s = src[q];
        for (size_t i = lo; i < hi; i++) dst[i] += s[i];
    }
}

// The share [*lo, *hi) of n elements that rank takes, split on 16-float (cache line) bounds.
static void share_of(size_t n, int rank, int size, size_t *lo, size_t *hi) {
    size_t lines = (n + 15) / 16, per = lines / size, extra = lines % size;
    size_t a = rank * per + MIN((size_t)rank, extra), b = a + per + ((size_t)rank < extra);
    *lo = MIN(n, a * 16), *hi = MIN(n, b * 16);
}

// ---- the collectives

static void cpu_all_reduce_sum(Comm *c, float *buf, size_t n) {
    CommGroupCpu *g = group_of(c);
    CHECK(n <= g->max_floats, "all_reduce of %zu floats, group sized for %zu", n, g->max_floats);
    int size = g->size;
    if (size == 1 || n == 0) return;
    const float *src[COMM_MAX_RANKS];
    unsigned par = seq_next(c);
    if (n <= g->slot_floats) {
        memcpy(slot_at(g, par, c->rank), buf, n * sizeof(float));
        group_barrier(g);
        for (int q = 0; q < size; q++) src[q] = slot_at(g, par, q);
        sum_ranks(buf, src, size, 0, n);
        return;
    }
    g->ptrs[c->rank].ptr = buf;
    group_barrier(g);
    for (int q = 0; q < size; q++) src[q] = g->ptrs[q].ptr;
    size_t lo, hi;
    share_of(n, c->rank, size, &lo, &hi);
    sum_ranks(g->red, src, size, lo, hi);
    group_barrier(g); // every share summed; no one reads buf any more
    memcpy(buf, g->red, n * sizeof(float));
    // g->red is next written after the next large collective's first barrier, which every rank
    // reaches only after this copy.
}

static void cpu_all_gather(Comm *c, const float *in, float *out, size_t n) {
    CommGroupCpu *g = group_of(c);
    CHECK(n <= g->max_floats, "all_gather of %zu floats, group sized for %zu", n, g->max_floats);
    int size = g->size;
    if (n == 0) return;
    if (size == 1) {
        if (out != in) memmove(out, in, n * sizeof(float));
        return;
    }
    unsigned par = seq_next(c);
    if (n <= g->slot_floats) {
        memcpy(slot_at(g, par, c->rank), in, n * sizeof(float));
        group_barrier(g);
        for (int q = 0; q < size; q++) memcpy(out + (size_t)q * n, slot_at(g, par, q), n * sizeof(float));
        return;
    }
    g->ptrs[c->rank].ptr = in;
    group_barrier(g);
    for (int q = 0; q < size; q++) {
        const float *src = g->ptrs[q].ptr;
        float *dst = out + (size_t)q * n;
        if (src != dst) memcpy(dst, src, n * sizeof(float)); // in may be out + rank * n
    }
    group_barrier(g); // no rank changes its input while another still copies it
}

static void cpu_broadcast(Comm *c, void *buf, size_t bytes, int root) {
    CommGroupCpu *g = group_of(c);
    CHECK(root >= 0 && root < g->size, "broadcast from rank %d of %d", root, g->size);
    if (g->size == 1 || bytes == 0) return;
    unsigned par = seq_next(c);
    if (bytes <= g->slot_floats * sizeof(float)) {
        if (c->rank == root) memcpy(slot_at(g, par, root), buf, bytes);
        group_barrier(g);
        if (c->rank != root) memcpy(buf, slot_at(g, par, root), bytes);
        return;
    }
    if (c->rank == root) g->ptrs[root].ptr = buf;
    group_barrier(g);
    if (c->rank != root) memcpy(buf, g->ptrs[root].ptr, bytes);
    group_barrier(g);
}

static void cpu_barrier(Comm *c) {
    CommGroupCpu *g = group_of(c);
    if (g->size == 1) return;
    seq_next(c);
    group_barrier(g);
}

static const CommOps COMM_CPU_OPS = {
    .all_reduce_sum = cpu_all_reduce_sum,
    .all_gather = cpu_all_gather,
    .broadcast = cpu_broadcast,
    .barrier = cpu_barrier,
};

// ---- create / destroy

CommGroupCpu *comm_cpu_group_create(int size, size_t max_floats, Comm **out) {
    CHECK(size >= 1 && size <= COMM_MAX_RANKS, "a group of %d ranks", size);
    CommGroupCpu *g = xcalloc(1, sizeof(CommGroupCpu));
    g->size = size;
    g->max_floats = max_floats;
    g->slot_floats = MIN(max_floats, (size_t)COMM_SLOT_FLOATS);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    g->cpus = cpus > 0 ? (int)cpus : 1;
    atomic_init(&g->arrived, 0);
    atomic_init(&g->gen, 0);
    atomic_init(&g->sleepers, 0);
    g->ptrs = xmalloc_aligned((size_t)size * sizeof(CommPtr));
    memset(g->ptrs, 0, (size_t)size * sizeof(CommPtr));
    g->slots = xmalloc_aligned(MAX((size_t)2 * size * g->slot_floats, (size_t)1) * sizeof(float));
    g->red = xmalloc_aligned(MAX(max_floats, (size_t)1) * sizeof(float));
    g->comms = xcalloc(size, sizeof(Comm));
    g->ranks = xcalloc(size, sizeof(CommRankCpu));
    for (int r = 0; r < size; r++) {
        g->ranks[r] = (CommRankCpu){g, 0};
        g->comms[r] = (Comm){&COMM_CPU_OPS, r, size, &g->ranks[r]};
        out[r] = &g->comms[r];
    }
    return g;
}

void comm_cpu_group_destroy(CommGroupCpu *g) {
    if (!g) return;
    free(g->comms);
    free(g->ranks);
    free(g->ptrs);
    free(g->slots);
    free(g->red);
    free(g);
}
