// comm.cu: the NCCL communicator behind comm_nccl.h (the twin of kernels/cpu/comm.c):
// kernels/comm.h's CommOps on device buffers, one handle per rank, each with its own stream
// (or the rank's KStream once bound).
//
// Within a node ncclCommInitAll makes every rank's communicator in one call. Across nodes, node
// 0 makes an ncclUniqueId and a small TCP rendezvous (below) hands it to the other nodes; then
// each node creates its ranks' communicators with ncclCommInitRank inside one NCCL group (a
// thread that initialises several ranks must, or the first call waits for the others forever).
//
// The rendezvous protocol, both directions with 32-bit words in network order:
//   node k > 0 -> node 0   hello: magic, version, nnodes, node_rank, local_gpus, blob bytes
//   node 0 -> node k       reply: magic, status (0 ok, 1 refused), length, then length bytes:
//                          the id (ok) or a one-line reason (refused)
// Node 0 answers once every node has said hello, so a missing node shows up as a timeout on
// both sides, with the address and the count of nodes that did come. A connection that sends
// no valid hello within RV_HELLO_S (a port scanner, a stray client) is dropped, not fatal; a
// node that disagrees on nnodes or local_gpus, or repeats a node_rank, fails the rendezvous.
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <nccl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kernels/cuda/comm_nccl.h"
#include "kernels/cuda/kcuda.cuh"

#define NCCL_CHECK(call)                                                                         \
    do {                                                                                         \
        ncclResult_t r_ = (call);                                                                \
        if (r_ != ncclSuccess) DIE("NCCL: %s: %s", #call, ncclGetErrorString(r_));               \
    } while (0)

struct CommNcclRank {
    int device;
    ncclComm_t nccl;
    cudaStream_t own;    // created with the handle
    cudaStream_t stream; // where collectives go: own, or the bound KStream's
    float *scratch;      // one float on the device: the barrier's all-reduce
};

struct CommNcclGroup {
    int n_local;
    Comm *comms;          // [n_local]
    CommNcclRank *ranks;  // [n_local]
};

static CommNcclRank *rank_of(const Comm *c) {
    return (CommNcclRank *)c->impl;
}

// ---- the collectives (on the rank's stream; the calling thread's device is the rank's)

static void nccl_all_reduce_sum(Comm *c, float *buf, size_t n) {
    if (n == 0) return;
    CommNcclRank *r = rank_of(c);
    NCCL_CHECK(ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, r->nccl, r->stream));
}

static void nccl_all_gather(Comm *c, const float *in, float *out, size_t n) {
    if (n == 0) return;
    CommNcclRank *r = rank_of(c);
    NCCL_CHECK(ncclAllGather(in, out, n, ncclFloat, r->nccl, r->stream));
}

static void nccl_broadcast(Comm *c, void *buf, size_t bytes, int root) {
    CHECK(root >= 0 && root < c->size, "broadcast from rank %d of %d", root, c->size);
    if (bytes == 0) return;
    CommNcclRank *r = rank_of(c);
    NCCL_CHECK(ncclBroadcast(buf, buf, bytes, ncclUint8, root, r->nccl, r->stream));
}

// NCCL has no barrier: an all-reduce of one float completes on a rank only once every rank has
// queued it, and the host then waits for it.
static void nccl_barrier(Comm *c) {
    CommNcclRank *r = rank_of(c);
    NCCL_CHECK(ncclAllReduce(r->scratch, r->scratch, 1, ncclFloat, ncclSum, r->nccl, r->stream));
    CUDA_CHECK(cudaStreamSynchronize(r->stream));
}

static const CommOps COMM_NCCL_OPS = {
    nccl_all_reduce_sum,
    nccl_all_gather,
    nccl_broadcast,
    nccl_barrier,
};

extern "C" void comm_nccl_use_device(Comm *c) {
    CUDA_CHECK(cudaSetDevice(rank_of(c)->device));
}

extern "C" int comm_nccl_device(const Comm *c) {
    return rank_of(c)->device;
}

extern "C" void comm_nccl_set_stream(Comm *c, KStream *s) {
    CommNcclRank *r = rank_of(c);
    r->stream = s ? kstream_of(s) : r->own;
}

extern "C" void comm_nccl_sync(Comm *c) {
    CUDA_CHECK(cudaStreamSynchronize(rank_of(c)->stream));
}

// ---- groups

// The group's handles and streams around communicators already made (nccl[i] on device i).
static CommNcclGroup *group_wrap(int n_local, const ncclComm_t *nccl, int first_rank, int world, Comm **out) {
    CommNcclGroup *g = (CommNcclGroup *)xcalloc(1, sizeof(CommNcclGroup));
    g->n_local = n_local;
    g->comms = (Comm *)xcalloc(n_local, sizeof(Comm));
    g->ranks = (CommNcclRank *)xcalloc(n_local, sizeof(CommNcclRank));
    int prev = 0;
    CUDA_CHECK(cudaGetDevice(&prev));
    for (int i = 0; i < n_local; i++) {
        CommNcclRank *r = &g->ranks[i];
        r->device = i;
        r->nccl = nccl[i];
        CUDA_CHECK(cudaSetDevice(i));
        // Blocking, like the KStreams: synchronous copies on the default stream are ordered with it.
        CUDA_CHECK(cudaStreamCreate(&r->own));
        r->stream = r->own;
        CUDA_CHECK(cudaMalloc(&r->scratch, sizeof(float)));
        CUDA_CHECK(cudaMemset(r->scratch, 0, sizeof(float)));
        g->comms[i].ops = &COMM_NCCL_OPS;
        g->comms[i].rank = first_rank + i;
        g->comms[i].size = world;
        g->comms[i].impl = r;
        out[i] = &g->comms[i];
    }
    CUDA_CHECK(cudaSetDevice(prev));
    return g;
}

// SL_OK when n_local GPUs are visible, else SL_ERR with a message for the user.
static int gpus_check(int n_local, char *err) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return seterr(err, "NCCL: no CUDA device: %s", cudaGetErrorString(e));
    }
    if (n_local < 1 || n_local > n)
        return seterr(err, "NCCL: %d GPUs per node asked for, %d visible", n_local, n);
    return SL_OK;
}

extern "C" CommNcclGroup *comm_nccl_group_create(int n_gpus, Comm **out, char *err) {
    if (gpus_check(n_gpus, err) != SL_OK) return NULL;
    ncclComm_t *nccl = (ncclComm_t *)xcalloc(n_gpus, sizeof(ncclComm_t));
    ncclResult_t res = ncclCommInitAll(nccl, n_gpus, NULL);
    if (res != ncclSuccess) {
        seterr(err, "NCCL: ncclCommInitAll over %d GPUs: %s", n_gpus, ncclGetErrorString(res));
        free(nccl);
        return NULL;
    }
    CommNcclGroup *g = group_wrap(n_gpus, nccl, 0, n_gpus, out);
    free(nccl);
    return g;
}

extern "C" void comm_nccl_group_destroy(CommNcclGroup *g) {
    if (!g) return;
    int prev = 0;
    CUDA_CHECK(cudaGetDevice(&prev));
    for (int i = 0; i < g->n_local; i++) {
        CommNcclRank *r = &g->ranks[i];
        CUDA_CHECK(cudaSetDevice(r->device));
        CUDA_CHECK(cudaStreamSynchronize(r->stream));
        CUDA_CHECK(cudaStreamSynchronize(r->own));
        NCCL_CHECK(ncclCommDestroy(r->nccl));
        CUDA_CHECK(cudaFree(r->scratch));
        CUDA_CHECK(cudaStreamDestroy(r->own));
    }
    CUDA_CHECK(cudaSetDevice(prev));
    free(g->ranks);
    free(g->comms);
    free(g);
}

// ---- the TCP rendezvous

#define RV_MAGIC 0x534c5256u // "SLRV"
#define RV_VERSION 1u
#define RV_HELLO_WORDS 6
#define RV_HELLO_S 5.0       // a connection must say hello within this
#define RV_RETRY_S 0.2       // between connection attempts to a node 0 that is not up yet
#define RV_MAX_BYTES 65536
#define RV_MAX_NODES 1024

// Reads or writes exactly len bytes on fd before deadline. 0, or an errno (ETIMEDOUT; EPIPE for
// a connection the peer closed).
static int rv_io(int fd, void *buf, size_t len, bool wr, double deadline) {
    char *p = (char *)buf;
    while (len > 0) {
        double left = deadline - time_now_s();
        if (left <= 0) return ETIMEDOUT;
        struct pollfd pfd;
        pfd.fd = fd;
        pfd.events = wr ? POLLOUT : POLLIN;
        pfd.revents = 0;
        int pr = poll(&pfd, 1, (int)(left * 1000) + 1);
        if (pr < 0 && errno != EINTR) return errno;
        if (pr <= 0) continue;
        ssize_t k = wr ? send(fd, p, len, MSG_NOSIGNAL) : recv(fd, p, len, 0);
        if (k < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
            return errno;
        }
        if (k == 0) return EPIPE;
        p += k, len -= (size_t)k;
    }
    return 0;
}

static int rv_words(int fd, uint32_t *w, int n, bool wr, double deadline) {
    uint32_t net[RV_HELLO_WORDS];
    if (wr)
        for (int i = 0; i < n; i++) net[i] = htonl(w[i]);
    int e = rv_io(fd, net, n * sizeof(uint32_t), wr, deadline);
    if (!wr && e == 0)
        for (int i = 0; i < n; i++) w[i] = ntohl(net[i]);
    return e;
}

static const char *rv_why(int e) {
    return e == ETIMEDOUT ? "timed out" : e == EPIPE ? "connection closed" : strerror(e);
}

static void rv_sleep(double s) {
    struct timespec ts;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    nanosleep(&ts, NULL);
}

// Node 0's refusal of a peer (best effort: the peer may be gone).
static void rv_refuse(int fd, const char *why) {
    uint32_t head[3] = {RV_MAGIC, 1, (uint32_t)strlen(why)};
    double deadline = time_now_s() + 1.0;
    if (rv_words(fd, head, 3, true, deadline) == 0) rv_io(fd, (void *)why, strlen(why), true, deadline);
}

static int rv_resolve(const char *addr, int port, struct addrinfo **ai, char *err) {
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int e = getaddrinfo(addr, service, &hints, ai);
    if (e != 0) return seterr(err, "rendezvous: cannot resolve master address %s: %s", addr, gai_strerror(e));
    return SL_OK;
}

static int rv_master(int nnodes, int local_gpus, const char *addr, int port, double timeout_s, const void *blob,
                     size_t bytes, char *err) {
    struct addrinfo *ai;
    if (rv_resolve(addr, port, &ai, err) != SL_OK) return SL_ERR;
    int lfd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(lfd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(lfd, nnodes) != 0) {
        int e = errno;
        if (lfd >= 0) close(lfd);
        freeaddrinfo(ai);
        return seterr(err, "rendezvous: node 0 cannot listen on %s:%d: %s (the master address must be one of node 0's)",
                      addr, port, strerror(e));
    }
    freeaddrinfo(ai);
    int *peer = (int *)xmalloc(nnodes * sizeof(int)); // peer[k]: node k's connection
    for (int k = 0; k < nnodes; k++) peer[k] = -1;
    int joined = 0, rc = SL_OK;
    double deadline = time_now_s() + timeout_s;
    while (joined < nnodes - 1 && rc == SL_OK) {
        double left = deadline - time_now_s();
        if (left <= 0) {
            rc = seterr(err, "rendezvous: %d of the %d other nodes joined %s:%d within %g s", joined, nnodes - 1, addr,
                        port, timeout_s);
            break;
        }
        struct pollfd pfd;
        pfd.fd = lfd;
        pfd.events = POLLIN;
        pfd.revents = 0;
        if (poll(&pfd, 1, (int)(left * 1000) + 1) <= 0) continue;
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) continue;
        uint32_t h[RV_HELLO_WORDS];
        int e = rv_words(fd, h, RV_HELLO_WORDS, false, MIN(deadline, time_now_s() + RV_HELLO_S));
        if (e != 0 || h[0] != RV_MAGIC) {
            log_warn("rendezvous: dropped a connection to %s:%d without a valid hello (%s)", addr, port,
                     e ? rv_why(e) : "bad magic");
            close(fd);
            continue;
        }
        char why[ERR_MAX] = "";
        int k = (int)h[3];
        if (h[1] != RV_VERSION)
            snprintf(why, sizeof why, "protocol version %u, node 0 speaks %u", h[1], RV_VERSION);
        else if ((int)h[2] != nnodes || (int)h[4] != local_gpus || h[5] != bytes)
            snprintf(why, sizeof why, "node %u has nnodes %u and %u GPUs per node, node 0 has nnodes %d and %d", h[3],
                     h[2], h[4], nnodes, local_gpus);
        else if (k < 1 || k >= nnodes)
            snprintf(why, sizeof why, "node rank %u outside 1..%d", h[3], nnodes - 1);
        else if (peer[k] >= 0)
            snprintf(why, sizeof why, "node rank %d joined twice", k);
        if (why[0]) {
            rv_refuse(fd, why);
            close(fd);
            rc = seterr(err, "rendezvous: %s", why);
            break;
        }
        peer[k] = fd;
        joined++;
    }
    // Everyone is here (or the rendezvous failed): answer each node that joined.
    for (int k = 1; k < nnodes; k++) {
        if (peer[k] < 0) continue;
        if (rc == SL_OK) {
            uint32_t head[3] = {RV_MAGIC, 0, (uint32_t)bytes};
            double d = time_now_s() + RV_HELLO_S;
            int e = rv_words(peer[k], head, 3, true, d);
            if (e == 0) e = rv_io(peer[k], (void *)blob, bytes, true, d);
            if (e != 0) rc = seterr(err, "rendezvous: sending the id to node %d: %s", k, rv_why(e));
        } else {
            rv_refuse(peer[k], "the rendezvous failed on node 0");
        }
        close(peer[k]);
    }
    free(peer);
    close(lfd);
    return rc;
}

// One attempt to connect before deadline: the socket, or -1 with *e set.
static int rv_connect(const struct addrinfo *ai, double deadline, int *e) {
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        *e = errno;
        return -1;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) return fd;
    if (errno != EINPROGRESS) {
        *e = errno;
        close(fd);
        return -1;
    }
    struct pollfd pfd;
    pfd.fd = fd;
    pfd.events = POLLOUT;
    pfd.revents = 0;
    double left = deadline - time_now_s();
    int pr = left > 0 ? poll(&pfd, 1, (int)(left * 1000) + 1) : 0;
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (pr <= 0) soerr = ETIMEDOUT;
    else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) soerr = errno;
    if (soerr != 0) {
        *e = soerr;
        close(fd);
        return -1;
    }
    return fd;
}

static int rv_node(int nnodes, int node_rank, int local_gpus, const char *addr, int port, double timeout_s,
                   void *blob, size_t bytes, char *err) {
    struct addrinfo *ai;
    if (rv_resolve(addr, port, &ai, err) != SL_OK) return SL_ERR;
    double deadline = time_now_s() + timeout_s;
    int fd = -1, e = ETIMEDOUT;
    while (fd < 0 && time_now_s() < deadline) {
        fd = rv_connect(ai, deadline, &e);
        if (fd < 0) rv_sleep(MIN(RV_RETRY_S, MAX(0.0, deadline - time_now_s())));
    }
    freeaddrinfo(ai);
    if (fd < 0)
        return seterr(err, "rendezvous: node %d could not reach node 0 at %s:%d within %g s: %s", node_rank, addr, port,
                      timeout_s, rv_why(e));
    uint32_t h[RV_HELLO_WORDS] = {RV_MAGIC, RV_VERSION, (uint32_t)nnodes, (uint32_t)node_rank, (uint32_t)local_gpus,
                                  (uint32_t)bytes};
    uint32_t head[3] = {0, 0, 0};
    e = rv_words(fd, h, RV_HELLO_WORDS, true, deadline);
    if (e == 0) e = rv_words(fd, head, 3, false, deadline); // node 0 answers once all nodes are in
    if (e != 0) {
        close(fd);
        return seterr(err, "rendezvous: node %d got no id from node 0 at %s:%d within %g s (%s; are all %d nodes "
                      "started?)", node_rank, addr, port, timeout_s, rv_why(e), nnodes);
    }
    int rc = SL_OK;
    if (head[0] != RV_MAGIC || head[2] > RV_MAX_BYTES) {
        rc = seterr(err, "rendezvous: %s:%d is not a sluice node 0", addr, port);
    } else if (head[1] != 0) {
        char why[ERR_MAX];
        size_t n = MIN((size_t)head[2], sizeof why - 1);
        why[0] = '\0';
        if (rv_io(fd, why, n, false, deadline) == 0) why[n] = '\0';
        rc = seterr(err, "rendezvous: node 0 at %s:%d refused node %d: %s", addr, port, node_rank, why);
    } else if (head[2] != bytes) {
        rc = seterr(err, "rendezvous: node 0 sent %u bytes, %zu expected", head[2], bytes);
    } else if ((e = rv_io(fd, blob, bytes, false, deadline)) != 0) {
        rc = seterr(err, "rendezvous: receiving the id from %s:%d: %s", addr, port, rv_why(e));
    }
    close(fd);
    return rc;
}

extern "C" int comm_nccl_rendezvous(int nnodes, int node_rank, const char *master_addr, int master_port,
                                    int local_gpus, double timeout_s, void *blob, size_t bytes, char *err) {
    if (nnodes < 1 || nnodes > RV_MAX_NODES || node_rank < 0 || node_rank >= nnodes)
        return seterr(err, "rendezvous: node rank %d of %d nodes", node_rank, nnodes);
    if (master_port < 1 || master_port > 65535) return seterr(err, "rendezvous: master port %d", master_port);
    if (bytes > RV_MAX_BYTES || timeout_s <= 0)
        return seterr(err, "rendezvous: %zu bytes, timeout %g s", bytes, timeout_s);
    if (nnodes == 1) return SL_OK;
    if (node_rank == 0)
        return rv_master(nnodes, local_gpus, master_addr, master_port, timeout_s, blob, bytes, err);
    return rv_node(nnodes, node_rank, local_gpus, master_addr, master_port, timeout_s, blob, bytes, err);
}

extern "C" CommNcclGroup *comm_nccl_create_rank(int nnodes, int node_rank, const char *master_addr, int master_port,
                                                int local_gpus, double timeout_s, Comm **out, char *err) {
    if (gpus_check(local_gpus, err) != SL_OK) return NULL;
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (node_rank == 0) {
        ncclResult_t res = ncclGetUniqueId(&id);
        if (res != ncclSuccess) {
            seterr(err, "NCCL: ncclGetUniqueId: %s", ncclGetErrorString(res));
            return NULL;
        }
    }
    if (comm_nccl_rendezvous(nnodes, node_rank, master_addr, master_port, local_gpus, timeout_s, &id, sizeof id,
                             err) != SL_OK)
        return NULL;
    int world = nnodes * local_gpus, first = node_rank * local_gpus, prev = 0;
    ncclComm_t *nccl = (ncclComm_t *)xcalloc(local_gpus, sizeof(ncclComm_t));
    CUDA_CHECK(cudaGetDevice(&prev));
    ncclResult_t res = ncclGroupStart();
    for (int i = 0; i < local_gpus && res == ncclSuccess; i++) {
        CUDA_CHECK(cudaSetDevice(i));
        res = ncclCommInitRank(&nccl[i], world, id, first + i);
    }
    ncclResult_t end = ncclGroupEnd();
    CUDA_CHECK(cudaSetDevice(prev));
    if (res == ncclSuccess) res = end;
    if (res != ncclSuccess) {
        seterr(err, "NCCL: ncclCommInitRank for ranks %d..%d of %d: %s", first, first + local_gpus - 1, world,
               ncclGetErrorString(res));
        free(nccl);
        return NULL;
    }
    CommNcclGroup *g = group_wrap(local_gpus, nccl, first, world, out);
    free(nccl);
    return g;
}
