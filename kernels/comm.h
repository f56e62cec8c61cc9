// comm.h: the tensor-parallel communicator (DESIGN.md §6). Every rank of a group holds its own
// Comm handle and calls the collectives in the same order; a collective returns on a rank once
// that rank's output is complete. Two implementations behind one table of functions:
//
//   CPU threads (kernels/cpu/comm.c): each rank is a thread of this process; buffers are host
//       memory; reductions add the ranks' values in rank order 0, 1, ..., N-1, so every rank
//       gets bitwise the same result whatever the timing.
//   NCCL (kernels/cuda/comm.cu): one thread per local GPU, buffers are device memory on
//       that rank's stream; ncclCommInitAll within a node, ncclCommInitRank across nodes with
//       the unique id shared over a TCP rendezvous.
//
// Buffers are float32 (the activations the model all-reduces); broadcast moves raw bytes.
// all_gather may run in place: in = out + rank * n.
#pragma once

#include <stddef.h>

typedef struct Comm Comm;
typedef struct CommGroupCpu CommGroupCpu;

typedef struct {
    void (*all_reduce_sum)(Comm *c, float *buf, size_t n);            // in place: buf = Σ ranks' buf
    void (*all_gather)(Comm *c, const float *in, float *out, size_t n); // out = [rank 0's n | rank 1's n | ...]
    void (*broadcast)(Comm *c, void *buf, size_t bytes, int root);     // every rank's buf = root's
    void (*barrier)(Comm *c);
} CommOps;

struct Comm {
    const CommOps *ops;
    int rank, size;
    void *impl; // the implementation's per-rank state
};

static inline void comm_all_reduce_sum(Comm *c, float *buf, size_t n) { c->ops->all_reduce_sum(c, buf, n); }
static inline void comm_all_gather(Comm *c, const float *in, float *out, size_t n) { c->ops->all_gather(c, in, out, n); }
static inline void comm_broadcast(Comm *c, void *buf, size_t bytes, int root) { c->ops->broadcast(c, buf, bytes, root); }
static inline void comm_barrier(Comm *c) { c->ops->barrier(c); }

// ---- CPU threads (kernels/cpu/comm.c)
// A group of `size` ranks in this process: out[r] is rank r's handle, to be used by exactly one
// thread at a time. Waiting ranks spin briefly, then sleep (a core shared with other ranks
// must not be burnt by a waiter). max_floats bounds the n of any collective (the group's
// shared buffers are allocated here, never in a collective).
CommGroupCpu *comm_cpu_group_create(int size, size_t max_floats, Comm **out);
void comm_cpu_group_destroy(CommGroupCpu *g); // after every rank stopped using its handle
// (The group holds max_floats + 2 * size * min(max_floats, 8192) floats. A collective of up to
// 8192 floats costs one barrier, a larger one two; broadcast is not bounded by max_floats.)
