// work.c: the worker threads that do a request body's CPU work (JSON parse, chat template,
// tokenizer) off libmicrohttpd's event threads.
//
// That work grows with the body (up to --max-body-size), and an event thread busy with it
// serves none of its other connections: four large bodies on four threads made /health wait
// for all of them. So the access handler, once the body is complete, suspends the connection
// and queues it here; a worker runs the route's work (work_run in http.c) and resumes the
// connection, and the handler, called again, sends the reply or submits to the engine. What
// the event threads still do per request is bounded: headers, copying the body, queueing.
//
// The workers run at a lower priority (nice +10, per thread on Linux) than the event threads
// and the engine thread: a burst of large bodies then slows other bodies' preparation, not the
// probes nor the tokens of running requests.
//
// Shutdown (work_stop, before libmicrohttpd stops): the workers finish the work in hand; what
// is still queued is marked cancelled (answered 503) and resumed, so that no connection is left
// suspended when libmicrohttpd stops.
#define _GNU_SOURCE // gettid
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include "server/server_impl.h"

static void *work_main(void *arg) {
    Server *s = arg;
    int nice_now = getpriority(PRIO_PROCESS, (id_t)gettid());
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), MIN(nice_now + 10, 19)) != 0) log_debug("worker thread: nice not raised");
    pthread_mutex_lock(&s->work_mu);
    for (;;) {
        while (!s->work_head && !s->work_stop) pthread_cond_wait(&s->work_cond, &s->work_mu);
        HttpConn *hc = s->work_head;
        if (!hc) break; // stopping, nothing queued
        s->work_head = hc->work_next;
        if (!s->work_head) s->work_tail = NULL;
        bool cancel = s->work_stop;
        pthread_mutex_unlock(&s->work_mu);
        if (cancel) hc->work_cancelled = true;
        else work_run(s, hc);
        hc->worked = true;
        // the last touch of hc here: once resumed, the connection is its event thread's again
        MHD_resume_connection(hc->work_conn);
        pthread_mutex_lock(&s->work_mu);
    }
    pthread_mutex_unlock(&s->work_mu);
    return NULL;
}

void work_start(Server *s, int n) {
    s->work_threads = xcalloc((size_t)n, sizeof(pthread_t));
    for (int i = 0; i < n; i++)
        CHECK(pthread_create(&s->work_threads[i], NULL, work_main, s) == 0, "cannot start a worker thread");
    s->n_work = n;
}

void work_stop(Server *s) {
    if (!s->work_threads) return;
    pthread_mutex_lock(&s->work_mu);
    s->work_stop = true;
    pthread_cond_broadcast(&s->work_cond);
    pthread_mutex_unlock(&s->work_mu);
    for (int i = 0; i < s->n_work; i++) pthread_join(s->work_threads[i], NULL);
    free(s->work_threads);
    s->work_threads = NULL;
}

bool work_submit(Server *s, HttpConn *hc, struct MHD_Connection *c) {
    hc->work_conn = c;
    hc->work_next = NULL;
    pthread_mutex_lock(&s->work_mu);
    bool ok = !s->work_stop;
    if (ok) {
        // suspended before a worker can see it: a worker resumes only what is suspended
        MHD_suspend_connection(c);
        if (s->work_tail) s->work_tail->work_next = hc;
        else s->work_head = hc;
        s->work_tail = hc;
        pthread_cond_signal(&s->work_cond);
    }
    pthread_mutex_unlock(&s->work_mu);
    return ok;
}
