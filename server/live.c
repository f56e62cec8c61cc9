// live.c: the watcher thread over every generation request in flight.
//
// libmicrohttpd neither notices a dead peer nor runs timeouts while a connection is suspended
// (and 0.9.75's epoll misses a peer's close until the timeout), so every 100 ms this thread:
//  - polls each suspended connection's socket (at most twice a second per connection): an error
//    or hang-up means the client is gone, so the request is aborted (its KV blocks are freed
//    before the engine's next step) and the connection resumed to be closed. A FIN alone is
//    not enough: a client that only shut down its writing side (shutdown(SHUT_WR), legal
//    HTTP/1.1) still waits for the reply, and looks the same as one that closed. So a FIN gets a
//    probe: a stream its keep-alive comment, a plain request an interim "100 Continue" (which
//    HTTP/1.1 clients skip). A closed socket answers data with a reset, seen at the next poll;
//    a half-closed one takes it and gets its reply. (An HTTP/1.0 client may not be sent a 1xx:
//    its FIN still counts as gone.)
//  - resumes an idle stream every --keepalive-interval seconds for a ": keep-alive" comment,
//    which also finds clients that vanished without a FIN;
//  - sweeps the connections for requests past their arrival deadlines (conn.c);
//  - takes the last outputs of orphans (requests MHD is done with) and frees each once the
//    engine has finished it. Only this thread frees a GenReq, so the pointers it collects under
//    Server.mu stay valid while it works on them without the lock.
#define _GNU_SOURCE // POLLRDHUP
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server/server_impl.h"

#define LIVE_TICK_S 0.1
#define LIVE_PEEK_S 0.5

void live_add(Server *s, GenReq *g) {
    pthread_mutex_lock(&s->mu);
    g->prev = NULL;
    g->next = s->live;
    if (s->live) s->live->prev = g;
    s->live = g;
    s->n_live++;
    pthread_mutex_unlock(&s->mu);
}

static void live_unlink(Server *s, GenReq *g) {
    pthread_mutex_lock(&s->mu);
    if (g->prev) g->prev->next = g->next;
    else s->live = g->next;
    if (g->next) g->next->prev = g->prev;
    s->n_live--;
    pthread_mutex_unlock(&s->mu);
}

int live_count(Server *s) {
    pthread_mutex_lock(&s->mu);
    int n = s->n_live;
    pthread_mutex_unlock(&s->mu);
    return n;
}

// The live requests, as an array the caller frees (s->mu must not be held).
static GenReq **live_snapshot(Server *s, int *n) {
    pthread_mutex_lock(&s->mu);
    GenReq **v = xmalloc(sizeof(GenReq *) * (size_t)MAX(s->n_live, 1));
    int k = 0;
    for (GenReq *g = s->live; g; g = g->next) v[k++] = g;
    pthread_mutex_unlock(&s->mu);
    *n = k;
    return v;
}

typedef enum { PEER_ALIVE, PEER_FIN, PEER_GONE } PeerState;

// A suspended connection's peer: gone after a reset or error (the socket has hung up), FIN when
// it has sent all it will send (closed, or only half-closed), else alive (bytes waiting, a
// pipelined request, count as alive).
static PeerState peer_state(int fd) {
    if (fd < 0) return PEER_ALIVE;
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return PEER_ALIVE;
    if (p.revents & (POLLERR | POLLHUP | POLLNVAL)) return PEER_GONE;
    return p.revents & POLLRDHUP ? PEER_FIN : PEER_ALIVE;
}

// After the peer's FIN (g->mu held, connection suspended, so MHD is not writing): data that a
// closed socket answers with a reset. False when the peer cannot be probed or the send failed:
// it is gone.
static bool peer_probe(GenReq *g) {
    g->peer_probed = true;
    if (g->req.stream) { // its next keep-alive comment, now
        g->keepalive_due = true;
        return true;
    }
    static const char CONTINUE[] = "HTTP/1.1 100 Continue\r\n\r\n";
    return g->interim_ok && send(g->fd, CONTINUE, sizeof CONTINUE - 1, MSG_NOSIGNAL | MSG_DONTWAIT) ==
                                (ssize_t)(sizeof CONTINUE - 1);
}

// Returns true when g was freed.
static bool live_visit(Server *s, GenReq *g, double now) {
    bool dead = false;
    pthread_mutex_lock(&g->mu);
    bool orphan = g->conn == NULL;
    if (!orphan && g->suspended) {
        if (now - g->t_last_peek >= LIVE_PEEK_S) {
            g->t_last_peek = now;
            PeerState st = peer_state(g->fd);
            dead = st == PEER_GONE || (st == PEER_FIN && !g->peer_probed && !peer_probe(g));
        }
        if (dead) g->client_gone = true;
        else if (g->req.stream && now - g->t_last_send >= s->opt.keepalive) g->keepalive_due = true;
        if (dead || g->keepalive_due) {
            g->suspended = false;
            MHD_resume_connection(g->conn);
        }
    }
    pthread_mutex_unlock(&g->mu);
    if (dead) {
        log_debug("request %s: client went away, aborting", g->meta.id);
        gen_abort(g);
    }
    if (!orphan) return false;
    gen_pump(g, false);
    if (!g->all_finished) return false;
    live_unlink(s, g);
    gen_free(g);
    return true;
}

static void *live_main(void *arg) {
    Server *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->live_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)(LIVE_TICK_S * 1e9);
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&s->live_cond, &s->mu, &ts);
        if (s->live_stop) break;
        pthread_mutex_unlock(&s->mu);
        int n;
        GenReq **v = live_snapshot(s, &n);
        double now = time_now_s();
        for (int i = 0; i < n; i++) live_visit(s, v[i], now);
        free(v);
        conn_sweep(s, now);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

void live_start(Server *s) {
    s->live_stop = false;
    CHECK(pthread_create(&s->live_thread, NULL, live_main, s) == 0, "cannot start the watcher thread");
}

void live_stop(Server *s) {
    if (!s->live_thread) return;
    pthread_mutex_lock(&s->mu);
    s->live_stop = true;
    pthread_cond_signal(&s->live_cond);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->live_thread, NULL);
    s->live_thread = 0;
    // MHD has stopped, so every request left is an orphan: free each once the engine has
    // finished it. One the engine never finishes is left allocated (the engine may still call
    // its notify) rather than freed under the engine's feet.
    live_abort_all(s);
    double t0 = time_now_s();
    while (live_count(s) > 0 && time_now_s() - t0 < 10.0) {
        int n;
        GenReq **v = live_snapshot(s, &n);
        for (int i = 0; i < n; i++) live_visit(s, v[i], time_now_s());
        free(v);
        if (live_count(s) > 0) usleep(10000);
    }
    if (live_count(s) > 0) log_warn("shutdown: %d requests did not finish in the engine; leaving them", live_count(s));
}

int live_abort_all(Server *s) {
    // Server.mu keeps the watcher from freeing a request meanwhile; taking GenReq.mu and the
    // engine's lock inside it is safe, since no thread takes Server.mu while holding either.
    pthread_mutex_lock(&s->mu);
    int n = 0;
    for (GenReq *g = s->live; g; g = g->next, n++) {
        pthread_mutex_lock(&g->mu);
        g->shutdown = true;
        pthread_mutex_unlock(&g->mu);
        gen_abort(g);
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}

void live_release_suspended(Server *s) {
    int n;
    // under the server lock the watcher cannot free anything meanwhile
    pthread_mutex_lock(&s->mu);
    n = 0;
    for (GenReq *g = s->live; g; g = g->next) {
        pthread_mutex_lock(&g->mu);
        if (g->suspended) {
            g->client_gone = true;
            g->suspended = false;
            MHD_resume_connection(g->conn);
            n++;
        }
        pthread_mutex_unlock(&g->mu);
    }
    pthread_mutex_unlock(&s->mu);
    if (n) log_warn("shutdown: closing %d connections still waiting", n);
}
