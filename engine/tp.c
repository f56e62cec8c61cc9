// tp.c: the rank threads and the per-step handoff of CPU tensor parallelism. See tp.h.
//
// The handoff is a mutex and two condition variables: a step costs each rank one wake-up
// (tens of microseconds), against a forward of milliseconds. Within the step the ranks meet in
// the communicator's collectives, which spin briefly and then sleep (kernels/cpu/comm.c).
#include "engine/tp.h"

#include <stdlib.h>
#include <string.h>

#include "common/common.h"

void tp_kernels_init(const TpGroup *g, int rank) {
    CHECK(rank >= 0 && rank < g->size);
    const Model *m = &g->models[rank];
    k_init(g->threads_per_rank, m->max_tokens, model_max_cols(m));
}

static void rank_run(TpGroup *g, int rank, const SchedBlockCopy *copies, int n_copies, const Batch *b,
                     float *logits) {
    // copy-on-write first: the forward below writes into the copies
    for (int i = 0; i < n_copies; i++) kv_cache_copy_block(&g->kv[rank], copies[i].src, copies[i].dst);
    if (b->n_tokens > 0) model_forward(&g->models[rank], g->kv[rank].layers, b, logits);
}

static void *rank_main(void *arg) {
    TpRank *me = arg;
    TpGroup *g = me->g;
    tp_kernels_init(g, me->rank);
    pthread_mutex_lock(&g->mu);
    g->n_ready++;
    pthread_cond_broadcast(&g->done);
    uint64_t seen = 0;
    for (;;) {
        while (!g->stop && g->step == seen) pthread_cond_wait(&g->go, &g->mu);
        if (g->stop) break;
        seen = g->step;
        const Batch *b = g->b;
        const SchedBlockCopy *copies = g->copies;
        int n_copies = g->n_copies;
        pthread_mutex_unlock(&g->mu);
        rank_run(g, me->rank, copies, n_copies, b, NULL);
        pthread_mutex_lock(&g->mu);
        if (++g->n_done == g->size - 1) pthread_cond_signal(&g->done);
    }
    pthread_mutex_unlock(&g->mu);
    k_free();
    return NULL;
}

void tp_start(TpGroup *g, Model *models, KVCache *kv, int size, int threads_per_rank) {
    memset(g, 0, sizeof *g);
    CHECK(size >= 1 && threads_per_rank >= 1);
    g->size = size;
    g->models = models;
    g->kv = kv;
    g->threads_per_rank = threads_per_rank;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->go, NULL);
    pthread_cond_init(&g->done, NULL);
    g->threads = xcalloc((size_t)size, sizeof(pthread_t));
    g->ranks = xcalloc((size_t)size, sizeof(TpRank));
    for (int r = 1; r < size; r++) {
        g->ranks[r] = (TpRank){.g = g, .rank = r};
        int rc = pthread_create(&g->threads[r], NULL, rank_main, &g->ranks[r]);
        CHECK(rc == 0, "cannot start tensor-parallel rank thread %d (error %d)", r, rc);
        g->n_started++;
    }
    pthread_mutex_lock(&g->mu);
    while (g->n_ready < size - 1) pthread_cond_wait(&g->done, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

void tp_stop(TpGroup *g) {
    if (!g->threads) return;
    pthread_mutex_lock(&g->mu);
    g->stop = true;
    pthread_cond_broadcast(&g->go);
    pthread_mutex_unlock(&g->mu);
    for (int r = 1; r <= g->n_started; r++) pthread_join(g->threads[r], NULL);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->go);
    pthread_cond_destroy(&g->done);
    free(g->threads);
    free(g->ranks);
    memset(g, 0, sizeof *g);
}

void tp_step(TpGroup *g, const SchedBlockCopy *copies, int n_copies, const Batch *b, float *logits) {
    if (g->size > 1) {
        pthread_mutex_lock(&g->mu);
        g->b = b;
        g->copies = copies;
        g->n_copies = n_copies;
        g->n_done = 0;
        g->step++;
        pthread_cond_broadcast(&g->go);
        pthread_mutex_unlock(&g->mu);
    }
    rank_run(g, 0, copies, n_copies, b, logits);
    if (g->size > 1) { // the Batch and the copies list are the caller's again only when all are done
        pthread_mutex_lock(&g->mu);
        while (g->n_done < g->size - 1) pthread_cond_wait(&g->done, &g->mu);
        pthread_mutex_unlock(&g->mu);
    }
}
