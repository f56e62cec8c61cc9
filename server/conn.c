// conn.c: each TCP connection's bookkeeping beside libmicrohttpd: the request on it, the
// deadlines for receiving a request, and the connections kept for probes.
//
// libmicrohttpd's --timeout is an idle timeout: every byte received restarts it, so a client
// that sends one header byte a second holds its connection for ever, and --max-connections of
// them lock everyone out. So the watcher thread (live.c) sweeps the connections a few times a
// second: one whose request head has not all arrived --request-header-timeout seconds after
// its first byte, or whose body has not arrived --request-body-timeout seconds after its head,
// has its socket shut down, and libmicrohttpd closes it as it closes any dead peer. A new
// connection's first byte is taken to be its accept (it is there to send a request); a kept-alive
// one is idle (and --timeout's) until TCP_INFO's count of received bytes moves.
//
// And HTTP_PROBE_RESERVE connections beyond --max-connections are accepted for the open probe
// routes only (health, readiness, version, metrics; anything else gets 503) with a short head
// deadline, so an orchestrator's probes get through while the limit is taken.
#include <netinet/in.h>
#include <linux/tcp.h> // struct tcp_info with tcpi_bytes_received (glibc's lacks it)
#include <stdlib.h>
#include <sys/socket.h>

#include "server/server_impl.h"

#define CONN_SWEEP_S 0.25
#define PROBE_HEAD_S 2.0 // a probe sends its few header bytes at once

void conn_opened(Server *s, struct MHD_Connection *c, void **socket_context) {
    ConnSlot *slot = xcalloc(1, sizeof *slot);
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    slot->fd = ci ? ci->connect_fd : -1;
    slot->phase = CONN_HEAD;
    slot->t_phase = time_now_s();
    pthread_mutex_lock(&s->conn_mu);
    slot->reserve = ++s->n_conns > s->opt.max_connections;
    slot->next = s->conns;
    if (s->conns) s->conns->prev = slot;
    s->conns = slot;
    pthread_mutex_unlock(&s->conn_mu);
    *socket_context = slot;
}

// libmicrohttpd calls this before it closes the socket, so the sweep never shuts down an fd
// that has been closed and reused meanwhile.
void conn_closed(Server *s, void **socket_context) {
    ConnSlot *slot = *socket_context;
    if (!slot) return;
    pthread_mutex_lock(&s->conn_mu);
    if (slot->prev) slot->prev->next = slot->next;
    else s->conns = slot->next;
    if (slot->next) slot->next->prev = slot->prev;
    s->n_conns--;
    pthread_mutex_unlock(&s->conn_mu);
    free(slot);
    *socket_context = NULL;
}

static uint64_t bytes_received(int fd) {
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) return 0;
    return ti.tcpi_bytes_received;
}

void conn_phase(Server *s, ConnSlot *slot, ConnPhase phase) {
    if (!slot) return;
    uint64_t rx = phase == CONN_IDLE ? bytes_received(slot->fd) : 0;
    pthread_mutex_lock(&s->conn_mu);
    slot->phase = phase;
    slot->t_phase = time_now_s();
    slot->rx_idle = rx;
    pthread_mutex_unlock(&s->conn_mu);
}

void conn_sweep(Server *s, double now) {
    if (now - s->t_sweep < CONN_SWEEP_S) return;
    s->t_sweep = now;
    double head = s->opt.request_header_timeout, body = s->opt.request_body_timeout;
    int cut = 0;
    pthread_mutex_lock(&s->conn_mu);
    for (ConnSlot *c = s->conns; c; c = c->next) {
        if (c->phase == CONN_IDLE && bytes_received(c->fd) != c->rx_idle) { // the next request began
            c->phase = CONN_HEAD;
            c->t_phase = now;
        }
        double limit = c->phase == CONN_HEAD ? (c->reserve ? MIN(head, PROBE_HEAD_S) : head)
                       : c->phase == CONN_BODY ? body
                                               : -1;
        if (limit < 0 || now - c->t_phase <= limit || c->cut) continue;
        c->cut = true; // once: libmicrohttpd sees the shut-down socket and closes the connection
        shutdown(c->fd, SHUT_RDWR);
        cut++;
    }
    pthread_mutex_unlock(&s->conn_mu);
    if (cut) log_debug("closed %d connections whose request did not arrive in time", cut);
}

bool conn_reserved(const ConnSlot *slot) { return slot && slot->reserve; }
