// test_gpu_comm.c: the NCCL communicator (kernels/cuda/comm.cu).
//
// The TCP rendezvous that ships the NCCL unique id between nodes needs no GPU: its cases run
// everywhere, with the nodes as threads on 127.0.0.1 (the id, the nodes joining before node 0
// is up, a missing node, a node that disagrees on the world, a node rank given twice, an
// unresolvable master). The collectives need devices: TP=1 always (the handle on its own stream
// and bound to a KStream), TP=2 when two GPUs are visible, each rank a thread on its own device,
// against the values computed here on the host. Without a device those cases SKIP.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/common.h"
#include "kernels/comm.h"
#include "kernels/cuda/comm_nccl.h"
#include "kernels/cuda/cuda_ops.h"
#include "tests/unit/test.h"

// ---- rendezvous (no GPU)

#define RV_NODES 3
#define RV_BLOB 128 // an ncclUniqueId's size

static int rv_port(void) { // spread over runs so a port in TIME_WAIT is rarely hit twice
    static int next;
    if (!next) next = 20000 + (int)(getpid() % 20000);
    return next++;
}

typedef struct {
    int nnodes, node_rank, local_gpus, port;
    double timeout_s;
    uint8_t blob[RV_BLOB];
    int rc;
    char err[ERR_MAX];
    double start_delay_s;
} RvNode;

static void *rv_main(void *arg) {
    RvNode *n = arg;
    if (n->start_delay_s > 0) usleep((useconds_t)(n->start_delay_s * 1e6));
    n->rc = comm_nccl_rendezvous(n->nnodes, n->node_rank, "127.0.0.1", n->port, n->local_gpus, n->timeout_s, n->blob,
                                 RV_BLOB, n->err);
    return NULL;
}

// Runs the nodes as threads; node 0's blob is the id to hand out.
static void rv_run(RvNode *nodes, int n) {
    pthread_t th[8];
    for (int i = 0; i < n; i++) CHECK(pthread_create(&th[i], NULL, rv_main, &nodes[i]) == 0, "pthread_create");
    for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
}

static RvNode rv_node_make(int nnodes, int rank, int port, double timeout_s, double delay_s) {
    RvNode n;
    memset(&n, 0, sizeof n);
    n.nnodes = nnodes, n.node_rank = rank, n.local_gpus = 2, n.port = port;
    n.timeout_s = timeout_s, n.start_delay_s = delay_s;
    for (int i = 0; i < RV_BLOB; i++) n.blob[i] = rank == 0 ? (uint8_t)(i * 7 + 3) : 0;
    return n;
}

static void test_rendezvous_ok(void) {
    int port = rv_port();
    RvNode nodes[RV_NODES];
    // Nodes 1 and 2 start first and must retry until node 0 listens.
    for (int k = 0; k < RV_NODES; k++) nodes[k] = rv_node_make(RV_NODES, k, port, 20, k == 0 ? 0.5 : 0);
    rv_run(nodes, RV_NODES);
    for (int k = 0; k < RV_NODES; k++) {
        EXPECT(nodes[k].rc == SL_OK, "node %d: %s", k, nodes[k].err);
        EXPECT(memcmp(nodes[k].blob, nodes[0].blob, RV_BLOB) == 0, "node %d got another id", k);
    }
    // A second rendezvous on the same port right after (SO_REUSEADDR).
    for (int k = 0; k < 2; k++) nodes[k] = rv_node_make(2, k, port, 20, 0);
    rv_run(nodes, 2);
    EXPECT(nodes[0].rc == SL_OK && nodes[1].rc == SL_OK, "again: %s / %s", nodes[0].err, nodes[1].err);
    EXPECT(memcmp(nodes[1].blob, nodes[0].blob, RV_BLOB) == 0, "again: node 1 got another id");
    // One node: nothing to exchange.
    RvNode solo = rv_node_make(1, 0, port, 1, 0);
    rv_run(&solo, 1);
    EXPECT(solo.rc == SL_OK, "a single node: %s", solo.err);
}

static void test_rendezvous_errors(void) {
    RvNode nodes[RV_NODES];
    // Node 2 of 3 never comes: both others give up, with the count and the address.
    int port = rv_port();
    nodes[0] = rv_node_make(3, 0, port, 1.5, 0);
    nodes[1] = rv_node_make(3, 1, port, 0.5, 0); // gives up first, while still waiting for the id
    rv_run(nodes, 2);
    EXPECT(nodes[0].rc == SL_ERR && strstr(nodes[0].err, "1 of the 2 other nodes joined 127.0.0.1:"),
           "node 0: %s", nodes[0].err);
    EXPECT(nodes[1].rc == SL_ERR && strstr(nodes[1].err, "are all 3 nodes started"), "node 1: %s", nodes[1].err);

    // No node 0 at all.
    nodes[0] = rv_node_make(2, 1, rv_port(), 0.6, 0);
    rv_run(nodes, 1);
    EXPECT(nodes[0].rc == SL_ERR && strstr(nodes[0].err, "could not reach node 0 at 127.0.0.1:"), "%s", nodes[0].err);

    // A node that counts another world.
    port = rv_port();
    nodes[0] = rv_node_make(2, 0, port, 5, 0);
    nodes[1] = rv_node_make(3, 1, port, 5, 0.1);
    rv_run(nodes, 2);
    EXPECT(nodes[0].rc == SL_ERR && strstr(nodes[0].err, "nnodes 3"), "node 0: %s", nodes[0].err);
    EXPECT(nodes[1].rc == SL_ERR && strstr(nodes[1].err, "refused node 1"), "node 1: %s", nodes[1].err);

    // The same node rank twice.
    port = rv_port();
    nodes[0] = rv_node_make(3, 0, port, 5, 0);
    nodes[1] = rv_node_make(3, 1, port, 5, 0.1);
    nodes[2] = rv_node_make(3, 1, port, 5, 0.3);
    rv_run(nodes, 3);
    EXPECT(nodes[0].rc == SL_ERR && strstr(nodes[0].err, "joined twice"), "node 0: %s", nodes[0].err);
    EXPECT(nodes[1].rc == SL_ERR && nodes[2].rc == SL_ERR, "the nodes were not told: %s / %s", nodes[1].err,
           nodes[2].err);

    // Bad arguments and an address that does not resolve.
    char err[ERR_MAX];
    uint8_t blob[RV_BLOB];
    EXPECT(comm_nccl_rendezvous(2, 2, "127.0.0.1", 1234, 1, 1, blob, RV_BLOB, err) == SL_ERR, "node rank 2 of 2");
    EXPECT(comm_nccl_rendezvous(2, 1, "127.0.0.1", 70000, 1, 1, blob, RV_BLOB, err) == SL_ERR, "port 70000");
    EXPECT(comm_nccl_rendezvous(2, 1, "no-such-host.invalid", 1234, 1, 1, blob, RV_BLOB, err) == SL_ERR &&
               strstr(err, "cannot resolve"), "%s", err);
}

// ---- collectives on devices

static float value_of(int round, int rank, size_t i) {
    return (float)((int)((i * 2654435761u + (size_t)round * 97 + (size_t)rank * 131) % 2001) - 1000) / 64.0f;
}

typedef struct {
    Comm *comm;
    bool bind_stream; // collectives on a KStream instead of the handle's own stream
    long bad;
} RankJob;

#define ROUNDS 40
static const size_t NS[] = {1, 7, 1000, 4097, 100003, 1 << 20};

static void *rank_main(void *arg) {
    RankJob *j = arg;
    Comm *c = j->comm;
    comm_nccl_use_device(c);
    KStream *ks = NULL;
    if (j->bind_stream) {
        ks = kstream_create(1, 1);
        comm_nccl_set_stream(c, ks);
    }
    size_t max_n = NS[ARRAY_LEN(NS) - 1];
    float *h = xmalloc(sizeof(float) * max_n * c->size), *want = xmalloc(sizeof(float) * max_n * c->size);
    float *d_buf = kdev_malloc(sizeof(float) * max_n), *d_out = kdev_malloc(sizeof(float) * max_n * c->size);
    for (int round = 0; round < ROUNDS; round++) {
        size_t n = NS[(size_t)round % ARRAY_LEN(NS)];
        int op = round % 4;
        for (size_t i = 0; i < n; i++) h[i] = value_of(round, c->rank, i);
        kdev_memcpy_h2d(d_buf, h, n * sizeof(float), NULL);
        if (op == 0) { // all-reduce: the values are multiples of 1/64 far from rounding: any order is exact
            comm_all_reduce_sum(c, d_buf, n);
            for (size_t i = 0; i < n; i++) {
                want[i] = 0;
                for (int q = 0; q < c->size; q++) want[i] += value_of(round, q, i);
            }
        } else if (op == 1) {
            comm_all_gather(c, d_buf, d_out, n);
            for (int q = 0; q < c->size; q++)
                for (size_t i = 0; i < n; i++) want[(size_t)q * n + i] = value_of(round, q, i);
        } else if (op == 2) {
            int root = round % c->size;
            comm_broadcast(c, d_buf, n * sizeof(float), root);
            for (size_t i = 0; i < n; i++) want[i] = value_of(round, root, i);
        } else {
            comm_barrier(c);
            for (size_t i = 0; i < n; i++) want[i] = h[i];
        }
        comm_nccl_sync(c);
        size_t got_n = op == 1 ? n * c->size : n;
        kdev_memcpy_d2h(h, op == 1 ? d_out : d_buf, got_n * sizeof(float), NULL);
        j->bad += memcmp(h, want, got_n * sizeof(float)) != 0;
    }
    kdev_free(d_buf), kdev_free(d_out);
    free(h), free(want);
    if (ks) {
        comm_nccl_set_stream(c, NULL);
        kstream_free(ks);
    }
    return NULL;
}

static void run_tp(int size, bool bind_stream) {
    char err[ERR_MAX];
    Comm *comms[8];
    CommNcclGroup *g = comm_nccl_group_create(size, comms, err);
    if (!g) {
        if (size > 1) {
            printf("SKIP: TP=%d: %s\n", size, err);
            return;
        }
        EXPECT(g != NULL, "TP=1: %s", err);
        return;
    }
    RankJob jobs[8];
    pthread_t th[8];
    for (int r = 0; r < size; r++) {
        EXPECT_EQ_INT(comms[r]->rank, r);
        EXPECT_EQ_INT(comms[r]->size, size);
        EXPECT_EQ_INT(comm_nccl_device(comms[r]), r);
        jobs[r] = (RankJob){comms[r], bind_stream, 0};
        CHECK(pthread_create(&th[r], NULL, rank_main, &jobs[r]) == 0, "pthread_create");
    }
    for (int r = 0; r < size; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < size; r++)
        EXPECT(jobs[r].bad == 0, "TP=%d rank %d%s: %ld of %d collectives wrong", size, r,
               bind_stream ? " (on a KStream)" : "", jobs[r].bad, ROUNDS);
    comm_nccl_group_destroy(g);
}

static void test_tp1(void) {
    run_tp(1, false);
    run_tp(1, true);
}

static void test_tp2(void) {
    run_tp(2, false);
    run_tp(2, true);
}

static void test_too_many_gpus(void) {
    char err[ERR_MAX];
    Comm *comms[1];
    EXPECT(comm_nccl_group_create(1024, comms, err) == NULL && strstr(err, "visible"), "%s", err);
}

#define GPU_COUNT_(fn) +1
#define GPU_RUN_(fn) TEST_RUN(fn);
#define GPU_CASES(X)                                                                           \
    X(test_tp1)                                                                                \
    X(test_tp2)                                                                                \
    X(test_too_many_gpus)

int main(void) {
    TEST_RUN(test_rendezvous_ok);
    TEST_RUN(test_rendezvous_errors);
    if (!kcuda_available()) {
        printf("SKIP: no CUDA device (%s)\n", kcuda_unavailable_reason());
        printf("%d passed, %d failed, %d skipped\n", test_passed_, test_failed_, 0 GPU_CASES(GPU_COUNT_));
        return test_failed_ ? 1 : 0;
    }
    printf("device: %s, %d multiprocessors\n", kcuda_device_name(), kcuda_sm_count());
    GPU_CASES(GPU_RUN_)
    return test_summary();
}
