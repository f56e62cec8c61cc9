// comm_nccl.h: the NCCL communicator (kernels/comm.h's CommOps on device buffers), seen from C:
// no CUDA or NCCL type here, so engine/ includes it without their headers (DESIGN.md §2).
//
// One process drives all of its node's GPUs, one thread per rank (DESIGN.md §6). Local rank i
// of a node uses device i. Each rank's handle has its own CUDA stream, and its collectives are
// queued there, asynchronous to the host like every CUDA op: their output is complete for work
// queued after them on that stream, and for the host after comm_nccl_sync (or a sync of the
// bound KStream). Bind the rank's compute stream with comm_nccl_set_stream so the collectives
// run in order with the model's kernels (and can be captured in its CUDA graphs) without any
// cross-stream waits. comm_barrier also waits on the host for the rank's stream: it is never
// captured in a graph.
//
// all_reduce_sum, all_gather (in may be out + rank * n: in place) and broadcast are NCCL's;
// NCCL's sum order is its own (ring or tree), so unlike the CPU group a result is the same on
// every rank but not bitwise a serial sum's.
//
// A NCCL failure inside a collective is a broken environment: it aborts with the cause (DIE).
// Set-up failures (too few GPUs, an unreachable master, mismatched nodes) return NULL and a
// one-line message in err (ERR_MAX bytes).
#pragma once

#include <stddef.h>

#include "kernels/comm.h"
#include "kernels/cuda/cuda_ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct CommNcclGroup CommNcclGroup;

// Within one node: n_gpus ranks on devices 0 .. n_gpus-1 through ncclCommInitAll. out[r] is rank
// r's handle, for the thread that drives device r. NULL + err when fewer GPUs are visible.
CommNcclGroup *comm_nccl_group_create(int n_gpus, Comm **out, char *err);

// Across nodes: this node's local_gpus ranks of a world of nnodes * local_gpus, ranks
// node_rank * local_gpus + i on local devices i (every node has the same local_gpus). Node 0
// makes the NCCL unique id and hands it out over TCP: it listens on master_addr:master_port
// (an address of node 0) until the other nnodes - 1 nodes have connected; they connect (retrying
// while node 0 is not up yet). Each side gives up after timeout_s seconds with a message naming
// the address and what was missing. Then every node runs ncclCommInitRank for its ranks.
CommNcclGroup *comm_nccl_create_rank(int nnodes, int node_rank, const char *master_addr, int master_port,
                                     int local_gpus, double timeout_s, Comm **out, char *err);

// After every rank stopped using its handle: waits for the ranks' streams, frees everything.
void comm_nccl_group_destroy(CommNcclGroup *g); // accepts NULL

// Makes the rank's device the calling thread's current CUDA device: each rank thread calls it
// first, before it creates its KStream or allocates anything.
void comm_nccl_use_device(Comm *c);
int comm_nccl_device(const Comm *c);
// Queues the rank's collectives on s (NULL: back to the handle's own stream). s must belong to
// the rank's device.
void comm_nccl_set_stream(Comm *c, KStream *s);
// Waits until the rank's queued collectives (and everything before them on its stream) are done.
void comm_nccl_sync(Comm *c);

// The rendezvous alone (comm_nccl_create_rank's first step; tests): node 0 sends its blob of
// bytes to each other node, which receives it into blob. The nodes also check that they agree on
// nnodes and local_gpus, and that each node_rank joins once. SL_OK, or SL_ERR + err.
int comm_nccl_rendezvous(int nnodes, int node_rank, const char *master_addr, int master_port, int local_gpus,
                         double timeout_s, void *blob, size_t bytes, char *err);

#ifdef __cplusplus
}
#endif
